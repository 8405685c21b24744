"""Running the az CLI for scripts/deploy and scripts/register-app: every command printed before it
runs (or, with --dry-run, printed and not run), JSON answers parsed, "not found" told apart from
failures, and a failure explained in one sentence that says what to do, with what was already
changed, so nothing is left half-made without saying so."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

NOT_FOUND = ("ResourceNotFound", "ResourceGroupNotFound", "could not be found", "was not found", "does not exist",
             "NotFound", "SecretNotFound", "Request_ResourceNotFound")
EXPLAINED = (
    ("Please run 'az login'", "You are not signed in to Azure: run `az login` (and `az account set --subscription "
                              "<id>` if you have several), then run this again."),
    ("AuthorizationFailed", "Your Azure account lacks a permission this step needs (see the command above): "
                            "ask for Owner, or Contributor plus User Access Administrator, on the resource group."),
    ("Authorization_RequestDenied", "Your account may not manage app registrations in this tenant: ask an admin for "
                                    "the Application Administrator role (or to allow users to register apps)."),
    ("Insufficient privileges", "Your account may not manage app registrations in this tenant: ask an admin for "
                                "the Application Administrator role."),
    ("AlreadyTaken", "That name is taken in Azure by someone else: choose another (--app, or the resource's own "
                     "name option)."),
    ("already exists", "That name is taken in Azure by someone else: choose another."),
    ("is not available", "That name is taken in Azure by someone else: choose another."),
)


class AzError(Exception):
    """A step failed; the message says what to do."""


def explain(stderr: str) -> str:
    for marker, advice in EXPLAINED:
        if marker.lower() in stderr.lower():
            return advice
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "az failed without a message"


class Az:
    """`run` and `show` the az CLI. `changes` lists what this run created or changed, in order."""

    def __init__(self, *, dry_run: bool = False, az: str | None = None, out=print):
        self.dry_run = dry_run
        self.az = az or shutil.which("az") or ""
        self.out = out
        self.changes: list[str] = []

    def check_ready(self) -> dict:
        """az is installed and signed in: returns `az account show` (subscription, tenant, user)."""
        if self.dry_run:
            return {"id": "<subscription>", "tenantId": "<tenant>", "user": {"name": "<you>"}}
        if not self.az:
            raise AzError("The Azure CLI (az) is not installed or not on PATH: install it "
                          "(https://learn.microsoft.com/cli/azure/install-azure-cli), run `az login`, then run this "
                          "again.")
        return self.run("account", "show")

    def run(self, *args: str, change: str = "", quiet: bool = False) -> Any:
        """Runs `az ARGS -o json`; returns the parsed answer (None when it printed nothing, and always in a
        dry run). `change` describes what the command creates or changes, for the summary. `quiet`
        keeps the answer out of everything printed (it holds a secret)."""
        argv = [*args, "--only-show-errors", "-o", "json"]
        self.out(("would run: " if self.dry_run else "") + "az " + shlex.join(argv))
        if self.dry_run:
            if change:
                self.changes.append(change)
            return None
        result = subprocess.run([self.az, *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                env={**os.environ, "AZURE_CORE_COLLECT_TELEMETRY": "false"})
        if result.returncode != 0:
            raise AzError(f"az {args[0]} {args[1] if len(args) > 1 else ''} failed: {explain(result.stderr)}"
                          + (" (its output is not shown: it may hold a secret)" if quiet else ""))
        if change:
            self.changes.append(change)
        return json.loads(result.stdout) if result.stdout.strip() else None

    def show(self, *args: str) -> Any:
        """`run`, but a "not found" answer is None (in a dry run, everything is not found)."""
        if self.dry_run:
            self.out("would run: az " + shlex.join([*args, "--only-show-errors", "-o", "json"]))
            return None
        try:
            return self.run(*args)
        except AzError as err:
            if any(marker.lower() in str(err).lower() for marker in NOT_FOUND):
                return None
            raise

    def summary(self) -> str:
        if not self.changes:
            return "Nothing to change: everything was already as it should be."
        verb = "Would create or change" if self.dry_run else "Created or changed"
        return f"{verb}:\n" + "\n".join(f"  - {change}" for change in self.changes)


def app_settings(az: Az, app: str, rg: str) -> dict[str, str]:
    """The function app's settings, by name (empty in a dry run)."""
    return {s["name"]: s.get("value") for s in az.run("functionapp", "config", "appsettings", "list",
                                                      "--name", app, "--resource-group", rg) or []}


def update_app_settings(az: Az, app: str, rg: str, wanted: dict[str, str], current: dict[str, str]) -> None:
    """Sets those of `wanted` whose value differs from `current`, in one call; none: no call."""
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    if changed:
        az.run("functionapp", "config", "appsettings", "set", "--name", app, "--resource-group", rg,
               "--settings", *(f"{k}={v}" for k, v in sorted(changed.items())),
               change=f"app settings {', '.join(sorted(changed))}")


@contextmanager
def secret_file(value: str) -> Iterator[str]:
    """A file only this user can read, holding `value`, removed afterwards: how a secret reaches az
    (`--file`) without appearing on a command line another user could read in `ps`."""
    handle, path = tempfile.mkstemp(prefix="portal-sso-", suffix=".secret")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w") as file:
            file.write(value)
        yield path
    finally:
        os.unlink(path)


def fail(err: AzError, az: Az) -> int:
    print(f"error: {err}", file=sys.stderr)
    if az.changes:
        print("Already done before the failure (run the command again once fixed: it carries on from "
              "here):\n" + "\n".join(f"  - {change}" for change in az.changes), file=sys.stderr)
    else:
        print("Nothing was created or changed.", file=sys.stderr)
    return 1
