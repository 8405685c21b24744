"""Running the az CLI for scripts/deploy and scripts/register-app: every command printed before it
runs, JSON answers parsed, "not found" told apart from failures, and a failure explained in one
sentence that says what to do, with what was already changed, so nothing is left half-made without
saying so.

Three modes. A real run reads and writes. `--what-if` reads the current state (signed in) and runs
no write: each write is listed as what it would create, change or remove. `--dry-run` runs nothing
at all, not even a read (no sign-in needed): the plan for an empty subscription."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

from shared.config import secret_name_problem

NOT_FOUND = ("ResourceNotFound", "ResourceGroupNotFound", "could not be found", "was not found", "does not exist",
             "NotFound", "SecretNotFound", "Request_ResourceNotFound")
# Key Vault's 403 for a secret (RBAC: ForbiddenByRbac; access policies: "does not have secrets get permission").
# Right after a role assignment it usually means the role has not taken effect yet (up to a few minutes).
ROLE_PENDING = ("ForbiddenByRbac", "Caller is not authorized to perform action", "does not have secrets")
KEY_VAULT_REFUSED = ("Key Vault refused you the secret: this needs Key Vault Secrets Officer on the vault (deploy "
                     "grants it to whoever runs it; or ask an Owner of the vault). A role granted in the last few "
                     "minutes may not have taken effect yet: wait a few minutes and run this again.")
ROLE_WAIT_SECONDS, ROLE_POLL_SECONDS = 300, 15  # how long a step waits for a role granted in the same run
# Azure does not say whose: it may be one of the admin's own resources, in another resource group or subscription.
NAME_IN_USE = ("That name is already in use in Azure (it may be yours, in another resource group or subscription): "
               "choose another")
EXPLAINED = (
    ("Please run 'az login'", "You are not signed in to Azure: run `az login` (and `az account set --subscription "
                              "<id>` if you have several), then run this again."),
    ("AuthorizationFailed", "Your Azure account lacks a permission this step needs (see the command above): "
                            "ask for Owner, or Contributor plus User Access Administrator, on the resource group."),
    ("Authorization_RequestDenied", "Your account may not manage app registrations in this tenant: ask an admin for "
                                    "the Application Administrator role (or to allow users to register apps)."),
    ("Insufficient privileges", "Your account may not manage app registrations in this tenant: ask an admin for "
                                "the Application Administrator role."),
    ("AlreadyTaken", f"{NAME_IN_USE} (--app, or the resource's own name option)."),
    # a vault deleted (with its resource group, say) keeps its name for 90 days under purge protection
    ("in deleted state", "A Key Vault of this name was deleted, and purge protection keeps it (and its name) for 90 "
                         "days: recover it with `az keyvault recover --name <vault>` (it returns to the resource "
                         "group it was in), then run this again; or name a new vault with --key-vault."),
    ("VaultAlreadyExists", "That Key Vault name is in use (vault names are global): taken by someone else, or a "
                           "vault deleted in the last 90 days (`az keyvault list-deleted` lists yours: `az keyvault "
                           "recover --name <vault>`, then run this again); else name another with --key-vault."),
    *((marker, KEY_VAULT_REFUSED) for marker in ROLE_PENDING),
    ("already exists", f"{NAME_IN_USE}."),
    ("is not available", f"{NAME_IN_USE}."),
)
# App settings whose values never appear in what is printed (a connection string carries a key).
HIDDEN_SETTINGS = ("APPLICATIONINSIGHTS_CONNECTION_STRING", "AzureWebJobsStorage")
VERBS = ("create", "change", "remove")
T = TypeVar("T")


class AzError(Exception):
    """A step failed; the message says what to do (`stderr`: what az said, never printed whole; `rerun`:
    how to run the command again to carry on, when a plain rerun would not)."""

    def __init__(self, message: str, stderr: str = "", *, rerun: str | None = None):
        super().__init__(message)
        self.stderr, self.rerun = stderr, rerun


def says(text: str, markers) -> bool:
    """Whether az's message holds one of `markers` (in any case)."""
    return any(marker.lower() in text.lower() for marker in markers)


def host_label(url: str | None) -> str | None:
    """The first label of a URL's host: a vault's name in KEY_VAULT_URL, an account's in TABLES_ENDPOINT."""
    return (urlsplit(url).hostname or "").split(".", 1)[0] or None if url else None


def explain(stderr: str) -> str:
    for marker, advice in EXPLAINED:
        if marker.lower() in stderr.lower():
            return advice
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "az failed without a message"


def printable(argv: list[str]) -> str:
    """The command as printed: values of the HIDDEN_SETTINGS replaced by `<hidden>`."""
    hidden = re.compile(rf"^({'|'.join(HIDDEN_SETTINGS)})=.+", re.S)
    return "az " + shlex.join([hidden.sub(r"\1=<hidden>", a) for a in argv])


class Az:
    """`read`, `show` and `write` through the az CLI. `changes` lists (verb, what) for each write this
    run made (or, in a what-if or dry run, would make), in order."""

    def __init__(self, *, dry_run: bool = False, what_if: bool = False, az: str | None = None, out=print,
                 sleep: Callable[[float], None] = time.sleep):
        self.dry_run, self.what_if = dry_run, what_if and not dry_run
        self.az = az or shutil.which("az") or ""
        self.out, self.sleep = out, sleep
        self.changes: list[tuple[str, str]] = []

    @property
    def writes(self) -> bool:
        """Whether writes run (a real run), so what they create can be read back."""
        return not (self.dry_run or self.what_if)

    def check_ready(self) -> dict:
        """az is installed and signed in: returns `az account show` (subscription, tenant, user)."""
        if self.dry_run:
            return {"id": "<subscription>", "tenantId": "<tenant>", "user": {"name": "<you>", "type": "user"}}
        if not self.az:
            raise AzError("The Azure CLI (az) is not installed or not on PATH: install it "
                          "(https://learn.microsoft.com/cli/azure/install-azure-cli), run `az login`, then run this "
                          "again.")
        return self.read("account", "show")

    def signed_in(self, account: dict) -> tuple[str, str]:
        """(object id, principal type) of who is signed in: a person (`az login`) or a service principal
        (CI: `az login --service-principal`, whose `user.name` is its application id)."""
        user = account.get("user") or {}
        if user.get("type") == "servicePrincipal":
            return self.read("ad", "sp", "show", "--id", user.get("name", ""), "--query", "id") \
                or "<your object id>", "ServicePrincipal"
        return self.read("ad", "signed-in-user", "show", "--query", "id") or "<your object id>", "User"

    def _az(self, args: tuple[str, ...], quiet: bool) -> Any:
        argv = [*args, "--only-show-errors", "-o", "json"]
        result = subprocess.run([self.az, *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                env={**os.environ, "AZURE_CORE_COLLECT_TELEMETRY": "false"})
        if result.returncode != 0:
            raise AzError(f"az {args[0]} {args[1] if len(args) > 1 else ''} failed: {explain(result.stderr)}"
                          + (" (its output is not shown: it may hold a secret)" if quiet else ""), result.stderr)
        return json.loads(result.stdout) if result.stdout.strip() else None

    def read(self, *args: str, quiet: bool = False) -> Any:
        """Runs a command that changes nothing; returns its parsed answer (None in a dry run). `quiet`:
        the answer holds a secret (it is never printed anyway; errors say so)."""
        argv = [*args, "--only-show-errors", "-o", "json"]
        if self.dry_run:
            self.out("would run: " + printable(argv))
            return None
        self.out(printable(argv))
        return self._az(args, quiet)

    def show(self, *args: str) -> Any:
        """`read`, but a "not found" answer is None (in a dry run, everything is not found)."""
        try:
            return self.read(*args)
        except AzError as err:
            if says(str(err), NOT_FOUND):
                return None
            raise

    def write(self, *args: str, change: tuple[str, str] | None, quiet: bool = False) -> Any:
        """Runs a command that creates, changes or removes something (only in a real run: otherwise it
        is printed and listed). `change` is (verb, what) for the summary; None: a bookkeeping write not
        worth listing."""
        argv = [*args, "--only-show-errors", "-o", "json"]
        if change is not None and change[0] not in VERBS:
            raise ValueError(change)
        if not self.writes:
            self.out("would run: " + printable(argv))
            if change:
                self.changes.append(change)
            return None
        self.out(printable(argv))
        answer = self._az(args, quiet)
        if change:
            self.changes.append(change)
        return answer

    def once_role_applies(self, step: Callable[[], T], role: str, *, fresh: bool) -> T:
        """step(), tried again while Key Vault still refuses it after `role` was granted in this run
        (`fresh`): a new role assignment takes up to a few minutes to take effect, so a first deploy on a
        new vault would otherwise fail here. At most ROLE_WAIT_SECONDS; a role granted before is not waited
        for (its 403 is a real one)."""
        def attempt(waited: int) -> tuple[bool, T | None]:
            try:
                return True, step()
            except AzError as err:
                if not (fresh and self.writes and says(err.stderr, ROLE_PENDING)):
                    raise
                if waited >= ROLE_WAIT_SECONDS:
                    raise AzError(f"{err} (Waited {waited} s for the role {role} granted in this run.)",
                                  err.stderr) from err
                return False, None

        return self.polled(attempt, every=ROLE_POLL_SECONDS, waiting=f"waiting for the role {role}, granted just "
                           "now, to take effect (Azure takes up to a few minutes)")

    def polled(self, attempt: Callable[[int], tuple[bool, T]], *, every: int, waiting: str) -> T:
        """attempt(seconds waited so far) until it is done, `waiting` said and `every` seconds slept between
        tries: (True, its answer) when done, (False, _) to be tried again; it gives up by raising."""
        waited = 0
        while True:
            done, answer = attempt(waited)
            if done:
                return answer
            self.out(f"{waiting}: trying again in {every} s")
            self.sleep(every)
            waited += every

    def summary(self) -> str:
        if not self.changes:
            return "Nothing to change: everything was already as it should be."
        lines = []
        for verb in VERBS:
            done = [what for v, what in self.changes if v == verb]
            if done:
                past = {"create": "Created", "change": "Changed", "remove": "Removed"}[verb]
                lines.append(f"{('Would ' + verb) if not self.writes else past}:")
                lines += [f"  - {what}" for what in done]
        if self.what_if:
            lines.append("Nothing was changed (--what-if).")
        return "\n".join(lines)


def app_settings(az: Az, app: str, rg: str) -> dict[str, str]:
    """The function app's settings, by name (empty in a dry run)."""
    return {s["name"]: s.get("value") for s in az.read("functionapp", "config", "appsettings", "list",
                                                       "--name", app, "--resource-group", rg) or []}


def site_field(site: dict | None, key: str):
    """A field of the function app as `functionapp show` gives it: for a Flex Consumption app az 2.91 answers
    its raw ARM JSON (show_functionapp), the field under `properties`; other apps, and older az, get the
    SDK's model flattened, the field at the top level."""
    properties = (site or {}).get("properties")
    return properties.get(key) if isinstance(properties, dict) and key in properties else (site or {}).get(key)


def as_the_app_reads(settings: dict[str, str], setting: str) -> str:
    """An app setting as the app reads it (shared.config's _Reader.get): stripped, "" when absent. One set
    by hand often ends in a newline or space, which the app never sees."""
    return (settings.get(setting) or "").strip()


def secret_name(settings: dict[str, str], setting: str, default: str) -> str:
    """The Key Vault secret the app reads: its `setting` (e.g. OIDC_CLIENT_SECRET_NAME), else `default`. A
    name Key Vault refuses or that looks like a token (most often the secret's value pasted in its place,
    which a read would put in the vault's URL) stops the run, unquoted."""
    name = as_the_app_reads(settings, setting) or default
    if problem := secret_name_problem(setting, name):
        raise AzError(f"The function app's setting {setting} {problem.text} {problem.fix}")
    return name


def update_app_settings(az: Az, app: str, rg: str, wanted: dict[str, str], current: dict[str, str]) -> None:
    """Sets those of `wanted` whose value differs from `current`, in one call; none: no call."""
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    if changed:
        az.write("functionapp", "config", "appsettings", "set", "--name", app, "--resource-group", rg,
                 "--settings", *(f"{k}={v}" for k, v in sorted(changed.items())),
                 change=("change", f"app settings {', '.join(sorted(changed))}"))


def delete_app_setting(az: Az, app: str, rg: str, name: str, change: tuple[str, str] | None) -> None:
    """Removes the app setting `name` (`change`: how a plan names it; None: bookkeeping, not shown)."""
    az.write("functionapp", "config", "appsettings", "delete", "--name", app, "--resource-group", rg,
             "--setting-names", name, change=change)


def grant(az: Az, principal: str, kind: str, role: str, scope: str, *, known: bool = True) -> bool:
    """`role` for `principal` on exactly `scope`, once; True when granted now (it may take minutes to take
    effect). `known`: the principal and scope exist already (else, in a what-if, there is nothing to read
    and the grant is simply planned)."""
    found = az.read("role", "assignment", "list", "--assignee", principal, "--role", role, "--scope", scope) \
        if known else None
    if found:
        return False
    az.write("role", "assignment", "create", "--assignee-object-id", principal, "--assignee-principal-type",
             kind, "--role", role, "--scope", scope, change=("create", f"role {role} on {scope_name(scope)}"))
    return True


def revoke(az: Az, principal: str, role: str, scope: str, why: str, *, known: bool = True) -> None:
    """Removes `role` for `principal` at exactly `scope`, when it is there (a grant broader than needed).
    `known=False`: a plan for a principal yet to be made by a step that grants this role, so there is
    nothing to read and the removal is simply planned."""
    found = az.read("role", "assignment", "list", "--assignee", principal, "--role", role, "--scope", scope) \
        if known else [{"id": f"<id of {role} on {scope_name(scope)}>", "scope": scope}]
    for assignment in found or []:
        if assignment.get("scope", "").lower() != scope.lower():
            continue  # inherited from above: not this grant
        az.write("role", "assignment", "delete", "--ids", assignment["id"],
                 change=("remove", f"role {role} on {scope_name(scope)} ({why})"))


def scope_name(scope: str) -> str:
    """The last two segments for a secret or container (`secrets/x`), else the resource's name."""
    parts = scope.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) > 2 and parts[-2] in ("secrets", "containers", "tables") \
        else parts[-1]


@contextmanager
def secret_file(value: str) -> Iterator[str]:
    """A file only this user can read, holding `value`, removed afterwards: how a secret reaches az
    (`--file`, `--body @file`) without appearing on a command line another user could read in `ps`."""
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
    if az.changes and az.writes:
        print(f"Already done before the failure (once fixed, {err.rerun or 'run the command again'}: it carries on "
              "from here):\n" + "\n".join(f"  - {verb} {what}" for verb, what in az.changes), file=sys.stderr)
    else:
        print("Nothing was created or changed.", file=sys.stderr)
    return 1

