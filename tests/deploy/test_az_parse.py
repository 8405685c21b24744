"""Every az command the scripts can issue, parsed by the real Azure CLI (azure-cli from PyPI, in its own
venv: `make az-cli`), signed out, with an empty config dir: a valid command gets as far as "Please run
'az login'"; none may fail on an unknown flag, a missing required argument or a bad @file."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.deploy.fake_azure import APP_ARGS, DEPLOY_ARGS, FakeAzure

AZ = Path(os.environ.get("PORTAL_SSO_AZ", Path.home() / ".cache/portal-sso/azure-cli-2.91.0/bin/az"))
PARSE_ERRORS = ("unrecognized arguments", "the following arguments are required", "is misspelled",
                "No such file", "expected one argument", "invalid choice", "not recognized")


def every_command(tmp_path: Path) -> list[list[str]]:
    """The az commands of every path through both scripts: a fresh deploy and a second one, the
    registration, assignment, two rotations."""
    azure = FakeAzure(tmp_path)
    for script, args in (("deploy", DEPLOY_ARGS), ("deploy", DEPLOY_ARGS), ("register-app", APP_ARGS),
                         ("register-app", [*APP_ARGS, "assign", "--user", "a@contoso.test", "--group", "G"]),
                         ("register-app", [*APP_ARGS, "rotate-secret"])):
        assert azure.run(script, *args).code == 0
    state = azure.state  # the older secret superseded long ago: the rotation deletes it
    for version in state["secrets"]["contoso-sso-kv/oidc-client-secret"]:
        version["attributes"]["created"] = "2020-01-01T00:00:00+00:00"
    azure.state = state
    assert azure.run("register-app", *APP_ARGS, "rotate-secret").code == 0
    unique = {tuple(call["argv"]): call["argv"] for call in azure.all_calls}
    return list(unique.values())


def test_every_command_the_scripts_issue_is_valid_for_the_real_az_cli(tmp_path):
    assert AZ.exists(), f"the real Azure CLI is installed by `make az-cli` (expected at {AZ})"
    commands = every_command(tmp_path)
    issued = [" ".join(c) for c in commands]
    for phrase in ("functionapp create", "ad app create", "ad app credential reset", "ad app credential delete",
                   "role assignment create", "keyvault secret set", "rest --method POST", "config-zip"):
        assert any(phrase in command for command in issued), f"no path issued {phrase!r}"
    placeholder = tmp_path / "exists.txt"
    placeholder.write_text("x")
    config = tmp_path / "az-config"
    config.mkdir()

    def parse(argv: list[str]) -> tuple[list[str], str]:
        argv = [str(placeholder) if i and argv[i - 1] in ("--file", "--src") else a for i, a in enumerate(argv)]
        done = subprocess.run([str(AZ), *argv], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env={**os.environ, "AZURE_CONFIG_DIR": str(config), "AZURE_CORE_COLLECT_TELEMETRY": "0"})
        return argv, done.stderr

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(parse, commands))
    bad = [(" ".join(argv), err.strip().splitlines()[-1:]) for argv, err in results
           if any(e in err for e in PARSE_ERRORS) or "Please run 'az login'" not in err]
    assert not bad, f"commands the real az refuses (of {len(commands)}): {bad}"
