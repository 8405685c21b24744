"""`portal-sso`, the operators' one command (issue 16 item 13): each subcommand reaches its tool's own
main with the rest of the command line, --help works on every level, and pyproject.toml packages what
the command imports (and not the tests). The install itself is `make setup`'s `pip install -e .`."""

from __future__ import annotations

import fnmatch
import html
import re
import shlex
import subprocess
import sys
import tomllib

import pytest

from shared import diagnostics, pages
from shared.errors import RoleNotAssigned
from shared.runtime import Runtime
from shared.scim.status import setup_section
from tests.deploy.documented import code_lines
from tools import deploy, register_app
from tools.arguments import FUNCTION_APP, KEY_VAULT, STORAGE_ACCOUNT, WORKSPACE
from tools.cli import COMMANDS, ROOT, main

DOCUMENTED = re.compile(r"^(?:scripts/|portal-sso )(deploy|register-app)\b(.*)")


def documented_commands() -> list[tuple[str, list[str]]]:
    """(tool, arguments) of each deploy and register-app command in a code block of README.md or docs/."""
    return [(command[1], shlex.split(command[2], comments=True))
            for command in map(DOCUMENTED.match, code_lines()) if command]


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_the_top_level_help_lists_every_command():
    done = run_cli("--help")
    assert done.returncode == 0
    for name in ("accounts", "deploy", "register-app", "host", "package"):
        assert name in done.stdout
    missing = run_cli()
    assert missing.returncode == 2 and "COMMAND" in missing.stderr, "no command: usage, not a traceback"
    unknown = run_cli("deplyo")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_the_accounts_summary_names_every_accounts_subcommand():
    """`portal-sso --help` left out `check`, which README tells operators to run after an upgrade."""
    import argparse

    from tools import accounts

    (subcommands,) = (a for a in accounts.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    summary = COMMANDS["accounts"][1]
    assert [name for name in subcommands.choices if not re.search(rf"\b{name}\b", summary)] == [], summary


@pytest.mark.parametrize("argv", [["accounts", "--help"], ["deploy", "--help"], ["register-app", "--help"],
                                  ["register-app", "-g", "rg", "--app", "myapp", "provisioning", "--help"],
                                  ["register-app", "-g", "rg", "--app", "myapp", "assign", "--help"],
                                  ["host", "--help"], ["package", "--help"]], ids=" ".join)
def test_help_on_every_level_is_the_tools_own(argv):
    done = run_cli(*argv)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "Traceback" not in done.stderr


def test_a_subcommand_gets_the_rest_of_the_command_line_with_its_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["deploy", "--resource-group", "rg", "--what-if", "--dry-run"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err, \
        "deploy's own parser saw --what-if and --dry-run"


def test_pyproject_installs_the_command_and_packages_what_it_runs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"portal-sso": "tools.cli:main"}
    setup = project["tool"]["setuptools"]
    include = setup["packages"]["find"]["include"]  # matched as setuptools' find_packages matches them
    found = {".".join(d.parent.relative_to(ROOT).parts) for d in ROOT.rglob("__init__.py")
             if ".venv" not in d.parts and "node_modules" not in d.parts}
    packages = {p for p in found if any(fnmatch.fnmatchcase(p, pattern) for pattern in include)}
    assert {"functions", "shared", "tools"} <= packages
    assert not any(p.split(".")[0] in ("tests", "devstack", "infra", "scripts") for p in packages)
    assert {module.split(".")[0] for module, _ in COMMANDS.values()} <= packages
    assert setup["py-modules"] == ["function_app"] and (ROOT / "function_app.py").is_file()
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --disable-pip-version-check --no-deps -e ." in makefile, "make setup installs it"


def test_the_scripts_stay_thin_wrappers():
    for script, module in (("deploy", "tools.deploy"), ("register-app", "tools.register_app")):
        text = (ROOT / "scripts" / script).read_text()
        assert f"-m {module} " in text and len(text.splitlines()) <= 8


def test_every_deploy_and_register_app_command_the_docs_show_runs_as_written(capsys):
    """A command copied from the README gets past its tool's argument parsing: README's directory-sync
    steps once left out --resource-group and --app, so each failed with "the following arguments are
    required"."""
    commands = documented_commands()
    assert {"provisioning", "assign"} <= {word for tool, argv in commands if tool == "register-app" for word in argv}
    assert any(tool == "deploy" for tool, _ in commands), commands
    refused = []
    for tool, argv in commands:
        try:
            {"deploy": deploy.parse_args, "register-app": register_app.parse_args}[tool](argv)
        except SystemExit:
            refused.append((tool, shlex.join(argv), capsys.readouterr().err.strip().splitlines()[-1]))
    assert refused == [], refused


DEPLOY = ["deploy", "-g", "rg", "-l", "westeurope", "--app", "myapp", "--dry-run"]
PORTALS = ["--portal-user-url", "https://portal.contoso.test/u", "--portal-agent-url", "https://portal.contoso.test/a"]
REGISTER = ["register-app", "-g", "rg", "--app", "myapp", "--dry-run"]


@pytest.mark.parametrize("argv, named", [
    # The app refuses these portal URLs at start (not https, or not a URL): a deploy made with them is broken.
    ([*DEPLOY, "--portal-user-url", "notaurl", "--portal-agent-url", "https://portal.contoso.test/a"],
     "--portal-user-url"),
    ([*DEPLOY, "--portal-user-url", "https://portal.contoso.test/u", "--portal-agent-url",
      "http://portal.contoso.test/a"], "--portal-agent-url"),
    # The redirect URIs are built from it and written to Entra and to the app's PUBLIC_BASE_URL.
    ([*REGISTER, "--public-base-url", "javascript:alert(1)"], "--public-base-url"),
    ([*REGISTER, "--public-base-url", "https://sso.contoso.test/some/path"], "--public-base-url"),
    ([*REGISTER, "--secret-days", "-5"], "--secret-days"),  # a secret that expired before it was made
    ([*REGISTER, "--secret-days", "100000"], "--secret-days"),
    ([*REGISTER, "rotate-secret", "--grace-days", "-1"], "--grace-days"),
    (["accounts", "import", "/dev/null", "--workers", "0"], "--workers"),
    # Names Azure refuses: a 61-character app, a vault that would start with a digit (derived: 1portal-kv),
    # a storage account with capitals, a vault name longer than 24: each once failed after the group existed.
    ([*DEPLOY[:6], "a" * 61, "--dry-run", *PORTALS], "--app"),
    ([*DEPLOY[:6], "contoso-", "--dry-run", *PORTALS], "--app"),
    ([*DEPLOY[:6], "1portal", "--dry-run", *PORTALS], "--key-vault"),
    ([*DEPLOY, *PORTALS, "--storage-account", "ContosoStor"], "--storage-account"),
    ([*DEPLOY, *PORTALS, "--key-vault", "k" * 25], "--key-vault"),
    ([*DEPLOY, *PORTALS, "--key-vault", "sso--kv"], "--key-vault"),
    (["deploy", "-g", "rg.", "-l", "westeurope", "--app", "myapp", "--dry-run", *PORTALS], "--resource-group"),
    (["register-app", "-g", "rg", "--app", "my_app", "--dry-run"], "--app"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_a_value_azure_or_the_app_would_refuse_later_is_refused_before_anything_runs(argv, named):
    done = run_cli(*argv)
    assert done.returncode == (1 if argv[0] == "accounts" else 2), done.stdout  # accounts: its bad-input code
    assert f"argument {named}" in done.stderr or f"give one with {named}" in done.stderr, done.stderr
    assert "would run" not in done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("base", ["https://sso.contoso.test/", "https://SSO.contoso.test:443/?", "https://sso.contoso.test#"])
def test_good_values_pass_and_a_public_base_url_is_taken_as_its_origin(base):
    done = run_cli(*REGISTER, "--public-base-url", base, "--secret-days", "730")
    assert done.returncode == 0, done.stderr
    assert "https://sso.contoso.test/api/sso/user/callback" in done.stdout
    assert run_cli(*DEPLOY, *PORTALS).returncode == 0


@pytest.mark.parametrize("app", ["c" * 60, "contoso-sso-production-westeurope-agents-and-users-portal-01",
                                 "abcdefghijklmnopqrst-uvw", "a1", "x--y"])
def test_every_name_derived_from_a_valid_app_name_is_one_azure_accepts(app):
    """A 59- or 60-character app once made a 64-65 character workspace (Azure allows 63), refused at step
    4 after the group, storage, tables and vault existed; an app whose 21st character is a hyphen made a
    vault name with two hyphens in a row."""
    args = deploy.parse_args(["-g", "rg", "-l", "westeurope", "--app", app, *PORTALS[:4]])
    derived = deploy.resource_names(args)
    for key, kind in (("storage", STORAGE_ACCOUNT), ("vault", KEY_VAULT), ("workspace", WORKSPACE)):
        assert kind.problem(derived[key]) is None, (key, derived[key])
    assert FUNCTION_APP.problem(app) is None


def test_names_that_fitted_stay_as_earlier_deploys_made_them():
    assert deploy.names("contoso-sso") == {"storage": "contosossostor", "vault": "contoso-sso-kv",
                                           "workspace": "contoso-sso-logs", "insights": "contoso-sso-insights"}


def test_every_register_app_command_the_app_shows_runs_as_written(capsys):
    """The setup page once showed `scripts/register-app assign --user UPN --kind user`, which exits 2:
    --resource-group and --app come before the subcommand. Each command the setup page, the failure
    fixes and the role_not_assigned page show parses once its placeholders are filled in."""
    shown = [html.unescape(c) for c in re.findall(r"<code>(scripts/register-app [^<]*)</code>",
                                                  pages._app_roles(False))]
    shown += re.findall(r"scripts/register-app [^,]*", diagnostics.REASON_FIXES["role_not_assigned"][0])
    shown += re.findall(r"scripts/register-app [^,]*", RoleNotAssigned(kind="agent", role="Portal.Agent").hint)
    sync_off = setup_section(Runtime({"PUBLIC_BASE_URL": "https://sso.contoso.com"}))  # no token set yet
    shown += [html.unescape(c) for c in re.findall(r"<code>(scripts/register-app [^<]*)</code>", sync_off)]
    assert len(shown) == 5 and all(" assign " in c for c in shown[:3]) and " provisioning" in shown[3], shown
    assert shown[4].endswith(" --new-registration"), "the tenant URL's row: for an app Entra does not provision"
    filled = {"RG": "rg-sso", "APP": "contoso-sso", "UPN": "ann@contoso.com", "KIND": "agent",
              "<your sign-in name>": "ann@contoso.com"}
    for command in shown:
        for placeholder, value in filled.items():
            command = re.sub(rf"(?<![\w<-]){re.escape(placeholder)}(?![\w>])", value, command)
        try:
            args = register_app.parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"{command}: {capsys.readouterr().err.strip().splitlines()[-1]}")
        assert (args.command, args.resource_group, args.app) in {("assign", "rg-sso", "contoso-sso"),
                                                                 ("provisioning", "rg-sso", "contoso-sso"),
                                                                 (None, "rg-sso", "contoso-sso")}, command
