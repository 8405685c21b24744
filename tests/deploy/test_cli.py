"""`portal-sso`, the operators' one command (issue 16 item 13): each subcommand reaches its tool's own
main with the rest of the command line, --help works on every level, and pyproject.toml packages what
the command imports (and not the tests). The install itself is `make setup`'s `pip install -e .`."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib

import pytest

from tools.cli import COMMANDS, ROOT, main


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


@pytest.mark.parametrize("argv", [["accounts", "--help"], ["deploy", "--help"], ["register-app", "--help"],
                                  ["register-app", "-g", "rg", "--app", "a", "provisioning", "--help"],
                                  ["register-app", "-g", "rg", "--app", "a", "assign", "--help"],
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
