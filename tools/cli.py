"""`portal-sso`: one command for operators (installed into .venv by `make setup`, from pyproject.toml's
[project.scripts]). Each subcommand hands the rest of the command line to that tool's own `main`, so
`portal-sso deploy --help` is the deploy tool's help, and `scripts/deploy` and `scripts/register-app`
stay thin wrappers of the same code.

    portal-sso accounts add ann@contoso.com --kind user --account-id U-1001
    portal-sso deploy --resource-group rg-sso --location westeurope --app contoso-sso ... [--what-if]
    portal-sso register-app --resource-group rg-sso --app contoso-sso [assign|rotate-secret|provisioning|...]
    portal-sso host [--port 7071]
    portal-sso package
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {  # name -> (module whose main(argv) runs it, what it does)
    "accounts": ("tools.accounts", "manage portal accounts: add, import, list, check, disable, enable, unlink, "
                                   "remove"),
    "deploy": ("tools.deploy", "create or update the Azure resources and deploy the package (--what-if, --dry-run)"),
    "register-app": ("tools.register_app", "the Entra ID app registration; assign, rotate-secret, provisioning, "
                                           "rotate-token"),
    "host": ("tools.host", "serve the function app locally, like `func start` (settings from local.settings.json)"),
    "package": ("tools.package", "build the deployment package (build/app.zip)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portal-sso", description="Portal SSO's operator commands. "
                                     "`portal-sso COMMAND --help` shows each one's options.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)  # its --help is the tool's own
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the command's name is ours (argparse would claim the tool's options): the rest is the tool's.
    command = build_parser().parse_args(argv[:1]).command
    rest = argv[1:]
    if command == "host" and not any(a == "--app-dir" or a.startswith("--app-dir=") for a in rest):
        rest = ["--app-dir", str(ROOT), *rest]  # this checkout's function app, wherever it is run from
    tool = importlib.import_module(COMMANDS[command][0])
    return tool.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
