"""Parses many az commands in one process: run by the real Azure CLI's own Python (its venv, `make az-cli`),
argv lists as JSON on stdin, ``[{"code": ..., "stderr": ...}]`` as JSON on stdout.

One `az` process per command paid ~1 s of CPU each for importing azure.cli and loading its command
modules again, a few hundred times per test run; here each module loads once and a command parses in
~0.05-0.1 s. Each command still gets a new ``AzCli`` (``get_default_cli()``), as `az` does. knack's log
handlers keep the stream they first saw, so one buffer stands in for stderr all along and is emptied
before each command."""

import io
import json
import sys

from azure.cli.core import get_default_cli

answer = sys.stdout
captured = sys.stderr = sys.stdout = io.StringIO()  # what a command prints is not our JSON answer


def parse(argv: list[str]) -> dict:
    captured.seek(0)
    captured.truncate()
    try:
        code = get_default_cli().invoke(argv, out_file=io.StringIO())
    except SystemExit as exit_:  # argparse's way out of a bad command line
        code = exit_.code
    return {"code": code, "stderr": captured.getvalue()}


json.dump([parse(argv) for argv in json.load(sys.stdin)], answer)
