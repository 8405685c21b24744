"""Every az command the scripts can issue, parsed by the real Azure CLI (azure-cli from PyPI, in its own
venv: `make az-cli`), signed out, with an empty config dir: a valid command gets as far as "Please run
'az login'"; none may fail on an unknown flag, a missing required argument or a bad @file."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.deploy.documented import az_commands
from tests.deploy.fake_az import ME
from tests.deploy.fake_azure import APP_ARGS, DEPLOY_ARGS, FakeAzure
from tests.deploy.test_register_app import client_certificate_pem, sign_in_with_a_certificate
from tools.azure_cli import EXPLAINED

AZ = Path(os.environ.get("PORTAL_SSO_AZ", Path.home() / ".cache/portal-sso/azure-cli-2.91.0/bin/az"))
PARSE_ERRORS = ("unrecognized arguments", "the following arguments are required", "is misspelled",
                "No such file", "expected one argument", "invalid choice", "not recognized")


def every_command(tmp_path: Path) -> list[list[str]]:
    """The az commands of every path through both scripts: a fresh deploy, a what-if and a second
    deploy, one moving the app to another Python, one to another storage account, a deploy signed in as a
    service principal, the registration, adopting an owned one, moving to a new one (--new-registration),
    assignment (again, past Graph's first page), two rotations, directory sync and its token's rotation."""
    azure = FakeAzure(tmp_path / "main")
    for script, args in (("deploy", DEPLOY_ARGS), ("deploy", [*DEPLOY_ARGS, "--what-if"]), ("deploy", DEPLOY_ARGS),
                         ("deploy", [*DEPLOY_ARGS, "--python", "3.13"]),
                         ("deploy", [*DEPLOY_ARGS, "--storage-account", "contosodata", "--repoint"]),
                         ("register-app", APP_ARGS),
                         ("register-app", [*APP_ARGS, "assign", "--user", "a@contoso.test", "--group", "G",
                                           "--kind", "agent"]),
                         ("register-app", [*APP_ARGS, "rotate-secret"]),
                         ("register-app", [*APP_ARGS, "provisioning"]),
                         ("register-app", [*APP_ARGS, "rotate-token"]),
                         ("register-app", [*APP_ARGS, "rotate-token", "--retire-old"])):
        assert azure.run(script, *args).code == 0, (script, args)
    state = azure.state  # the older secret superseded long ago: the rotation deletes it
    for version in state["secrets"]["contoso-sso-kv/oidc-client-secret"]:
        version["attributes"]["created"] = "2020-01-01T00:00:00+00:00"
    state["roles"].append(["contoso-sso-principal", "Key Vault Secrets User", state["vaults"]["contoso-sso-kv"]["id"],
                           "old-vault-wide"])  # what an earlier deploy granted: the next one revokes it
    # an earlier deploy's looser settings: the next deploy tightens each one
    state["sites"]["contoso-sso"]["httpsOnly"] = False
    state["vaults"]["contoso-sso-kv"]["properties"]["enablePurgeProtection"] = None
    state["storage"]["contososso" + "stor"]["allowSharedKeyAccess"] = True
    for resource in state["resources"].values():
        resource["properties"].pop("DisableLocalAuth", None)
    state["apps"]["owned-app-id"] = {"appId": "owned-app-id", "displayName": "x", "owners": [ME["id"]],
                                     "web": {"redirectUris": ["https://evil.example/cb"]}, "credentials": [],
                                     "publicClient": {"redirectUris": ["http://localhost:1234"]}}
    sp = f"sp-{state['sites']['contoso-sso']['settings']['OIDC_CLIENT_ID']}"
    state["assignments"][sp][:0] = [{"id": f"other-{i}", "principalId": f"person-{i}", "resourceId": sp,
                                     "appRoleId": "role"} for i in range(100)]  # Graph lists the rest on page 2
    azure.state = state
    assert azure.run("register-app", *APP_ARGS, "assign", "--user", "a@contoso.test", "--kind", "agent").code == 0
    assert azure.run("register-app", *APP_ARGS, "rotate-secret").code == 0
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    assert azure.run("register-app", *APP_ARGS, "--app-id", "owned-app-id").code == 0
    assert azure.run("register-app", *APP_ARGS, "--new-registration").code == 0
    sign_in_with_a_certificate(azure, as_certificate=True)  # the move gives the new one the Key Vault certificate
    assert azure.run("register-app", *APP_ARGS, "--new-registration").code == 0
    ci = FakeAzure(tmp_path / "ci")
    ci.state = {"signed_in_as": {"type": "servicePrincipal", "name": "ci-app-id", "id": "ci-object-id"},
                "sps": {"ci-app-id": {"id": "ci-object-id"}}}
    assert ci.run("deploy", *DEPLOY_ARGS).code == 0
    unique = {tuple(call["argv"]): call["argv"] for call in azure.all_calls + ci.all_calls}
    return list(unique.values())


@pytest.mark.timeout(600)  # a few hundred real az parses, each ~1 s of CPU: past 120 s on a loaded machine
def test_every_command_the_scripts_issue_is_valid_for_the_real_az_cli(tmp_path):
    commands = every_command(tmp_path)
    issued = [" ".join(c) for c in commands]
    for phrase in ("functionapp create", "applicationTemplates/8adf8e6e-67b2-4cf2-a259-e3dc5476c621/instantiate",
                   "ad app update --id owned-app-id --sign-in-audience AzureADMyOrg", "ad app owner list",
                   "ad app credential reset", "ad app credential delete", "role assignment create",
                   "role assignment delete", "keyvault secret set", "keyvault secret set-attributes",
                   "rest --method POST", "rest --method PUT", "synchronization/jobs", "oauth2PermissionGrants",
                   "config-zip", "functionapp config set", "functionapp update", "resource update",
                   "functionapp runtime config set --name contoso-sso", "keyvault update",
                   "functionapp deployment config set --name contoso-sso",
                   "ad sp show --id ci-app-id", "publicClient.redirectUris=[]",
                   "--add tags WindowsAzureActiveDirectoryIntegratedApp", "appRoleAssignedTo?$skiptoken=",
                   "--keyvault contoso-sso-kv --cert oidc-client-certificate --append", "credential list --id",
                   "keyvault certificate show"):
        assert any(phrase in command for command in issued), f"no path issued {phrase!r}"
    bad = refused_by_real_az(commands, tmp_path)
    assert not bad, f"commands the real az refuses (of {len(commands)}): {bad}"


def test_a_certificate_a_plain_key_vault_secret_holds_is_given_to_entra_by_a_command_the_real_az_takes(tmp_path):
    """The other path of a move with OIDC_CLIENT_CERTIFICATE_NAME: the name is a plain secret, not a Key Vault
    certificate, so its public certificate goes to `--cert @file`, which az parses as it reads the command (the
    scripts' file is gone by the time every_command's are parsed, so this one is checked with a real one)."""
    pem, _ = client_certificate_pem()
    public = tmp_path / "public.pem"
    public.write_text(pem[pem.index("-----BEGIN CERTIFICATE-----"):])
    commands = [["ad", "app", "credential", "reset", "--id", "x", "--cert", f"@{public}", "--append"],
                ["keyvault", "secret", "show", "--vault-name", "v", "--name", "n", "--query",
                 "{value: value, contentType: contentType}"]]
    bad = refused_by_real_az(commands, tmp_path)
    assert not bad, f"commands the real az refuses: {bad}"
    # and a file that holds no certificate is refused, so the check above can fail
    public.write_text("x")
    assert refused_by_real_az(commands[:1], tmp_path)


def test_every_az_command_the_docs_show_is_valid_for_the_real_az_cli(tmp_path):
    """README's by-hand directory sync once left out the role assignment and SCIM_TOKEN_NAME (so sync stayed
    off); the commands that do it are checked like the scripts' own."""
    commands = az_commands()
    shown = [" ".join(c) for c in commands]
    for phrase in ("keyvault secret set", "role assignment create", "secrets/scim-token",
                   "SCIM_TOKEN_NAME=scim-token", "functionapp identity show"):
        assert any(phrase in command for command in shown), f"the docs show no az command with {phrase!r}"
    bad = refused_by_real_az(commands, tmp_path)
    assert not bad, f"documented commands the real az refuses: {bad}"


def test_the_check_refuses_what_the_real_az_refuses_and_passes_what_it_takes(tmp_path):
    """All commands parse in one az process (az_parse_driver.py): each one's own answer, good or bad, must still
    be told apart, in any order."""
    good = ["ad", "app", "show", "--id", "x"]
    commands = [good, ["functionapp", "config", "set", "--name", "a", "-g", "b", "--no-such-flag", "1"], good,
                ["keyvault", "secret", "set", "--vault-name", "v"], good]
    refused = refused_by_real_az(commands, tmp_path)
    assert [command.split()[0] for command, _ in refused] == ["functionapp", "keyvault"], refused


def refused_by_real_az(commands: list[list[str]], tmp_path: Path) -> list[tuple[str, list[str]]]:
    """Each command parsed by the real az, signed out: the ones it refuses, with its last line."""
    assert AZ.exists(), f"the real Azure CLI is installed by `make az-cli` (expected at {AZ})"
    placeholder = tmp_path / "exists.json"
    placeholder.write_text("[]")  # JSON: an @file az parses as such (--app-roles) must read
    config = tmp_path / "az-config"
    config.mkdir(exist_ok=True)

    # the scripts' temporary files (--file, --src, a --body or --app-roles @file) are gone by now: an existing
    # stand-in
    commands = [[str(placeholder) if i and argv[i - 1] in ("--file", "--src")
                 else f"@{placeholder}" if a.startswith("@") and not Path(a[1:]).exists() else a
                 for i, a in enumerate(argv)] for argv in commands]
    python = AZ.parent / "python"  # the venv's, which has azure.cli
    assert python.exists(), f"the real Azure CLI's venv has no {python}"
    done = subprocess.run([str(python), str(Path(__file__).with_name("az_parse_driver.py"))],
                          input=json.dumps(commands), capture_output=True, text=True, timeout=500,
                          env={**os.environ, "AZURE_CONFIG_DIR": str(config), "AZURE_CORE_COLLECT_TELEMETRY": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    errors = [result["stderr"] for result in json.loads(done.stdout)]
    return [(" ".join(argv), err.strip().splitlines()[-1:]) for argv, err in zip(commands, errors, strict=True)
            if any(e in err for e in PARSE_ERRORS) or "Please run 'az login'" not in err]


def test_every_az_command_a_failure_explanation_gives_is_valid_for_the_real_az_cli(tmp_path):
    """What EXPLAINED tells an admin to run (`az keyvault recover --name <vault>`, ...) runs as written (but
    `az login` and `az account set`, which signed out do not stop at "Please run 'az login'")."""
    commands = [argv for _, advice in EXPLAINED for command in re.findall(r"`(az [^`]+)`", advice)
                if (argv := shlex.split(re.sub(r"<[^>]+>", "X", command))[1:])[0] not in ("login", "account")]
    assert any(c[:2] == ["keyvault", "recover"] for c in commands), commands
    bad = refused_by_real_az(commands, tmp_path)
    assert not bad, f"explained commands the real az refuses: {bad}"
