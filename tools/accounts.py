"""Manage portal accounts in the `PortalAccounts` table.

    portal-sso accounts add EMAIL --kind user|agent --account-id ID [--name N] [--disabled] [--force]
    portal-sso accounts import FILE.csv        # header: email,kind,account_id,name,enabled (a name or
                                               # enabled left out: an existing account keeps its own)
    portal-sso accounts list [--kind user|agent]
    portal-sso accounts check                  # rows sign-in does not find as stored (key rule, moves),
                                               # account ids two mailboxes hold
    portal-sso accounts disable|enable|unlink|remove EMAIL --kind user|agent
    portal-sso accounts remove --stored-key KEY --kind user|agent   # a row `check` listed

Storage comes from the settings the app reads: TABLES_CONNECTION_STRING, or TABLES_ENDPOINT with
DefaultAzureCredential (`az login` on a workstation), from the process environment when it sets either,
else from the project's `local.settings.json` Values (the file `make run` leaves). `--endpoint` overrides
them. add and import name the Table Storage they wrote to (its endpoint, never a key or SAS). A connection
string holding a key is never taken from the command line (it would stay in shell history and be
visible to every process on the machine).

Exit codes: 0 done, 1 bad input (usage, a bad CSV file or row, no such account, a refused change,
settings missing or malformed, storage without the PortalAccounts table; `check`: rows to fix), 2 storage
unreachable, 3 storage refused our credentials.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.core.utils import parse_connection_string
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.accounts import (
    KEY_FORBIDDEN,
    KINDS,
    MOVE_ADVICE,
    AccountConflict,
    AccountRow,
    AccountStore,
    Imported,
    bound_to,
    canonical_email,
    check_account,
    entra_refusal,
    parse_enabled,
    printable,
    repoint_text,
    repoints,
    sharing_problems,
    unprintable,
)
from shared.config import storage_problems
from shared.errors import ConfigurationError, DependencyUnavailable
from shared.tables import ACCOUNTS_TABLE, SCIM_USERS_TABLE, Tables

from .arguments import whole_number

STORAGE_SETTINGS = ("TABLES_CONNECTION_STRING", "TABLES_ENDPOINT")
AZURITE_TABLES = "http://127.0.0.1:10002/devstoreaccount1"  # what UseDevelopmentStorage=true names
EXIT_OK, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_REFUSED = 0, 1, 2, 3
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # where `make run` leaves local.settings.json
COLUMNS = ("email", "kind", "account_id", "name", "enabled")
REQUIRED_COLUMNS = ("email", "kind", "account_id")
# The columns a file may leave out, and what an existing account then keeps as stored (AccountRow.kept).
KEPT_UNLESS_GIVEN = {"name": "DisplayName", "enabled": "Enabled"}
WORKERS = 16


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; here 2 means 'storage unreachable', so usage is 1."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


# ---- connection -------------------------------------------------------------------------------------


def storage_settings(args: argparse.Namespace, environ: Mapping[str, str], app_dir: Path
                     ) -> tuple[str | None, str | None]:
    """(connection string, endpoint): --connection-string or --endpoint, else the app's settings: the
    environment's when it gives either, else app_dir's local.settings.json's (the file `make run` leaves;
    neither is taken from one and the other from the other). Raises
    ConfigurationError for one the app would refuse (said by the app's rules, never quoting it)."""
    if args.connection_string:
        if _holds_secret(args.connection_string):
            raise ConfigurationError([
                "--connection-string: this connection string holds a storage key, which must not be on the command "
                "line (shell history, `ps`). Put it in TABLES_CONNECTION_STRING, in the environment or in "
                f"{app_dir / 'local.settings.json'} (Values), and leave --connection-string out."])
        _check({"TABLES_CONNECTION_STRING": args.connection_string}, "--connection-string")
        return args.connection_string, None
    if args.endpoint:
        _check({"TABLES_ENDPOINT": args.endpoint}, "--endpoint")
        return None, args.endpoint
    from tools.local_settings import load_local_settings

    env = dict(environ)
    # One choice, not two settings: the environment's when it gives either (its TABLES_ENDPOINT with the
    # file's connection string, make run's Azurite, would write there), else the file's.
    if not any(env.get(name) for name in STORAGE_SETTINGS):  # unset or empty, as load_local_settings fills
        load_local_settings(app_dir, env)
    cs = env.get("TABLES_CONNECTION_STRING", "").strip() or None
    endpoint = env.get("TABLES_ENDPOINT", "").strip() or None
    if not cs and not endpoint:
        raise ConfigurationError([f"TABLES_CONNECTION_STRING or TABLES_ENDPOINT: missing. Set one in the environment "
                                  f"or in {app_dir / 'local.settings.json'} (`make run` writes that file), or pass "
                                  "--endpoint."])
    _check({"TABLES_CONNECTION_STRING": cs or "", "TABLES_ENDPOINT": endpoint or ""})
    return cs, endpoint


def storage_named(connection_string: str | None, endpoint: str | None) -> str:
    """The Table Storage these settings reach, for the output: its table endpoint, never a key or SAS."""
    if connection_string is None:
        url = endpoint or ""
    elif connection_string.strip().lower() == "usedevelopmentstorage=true":
        url = AZURITE_TABLES
    else:  # already checked (storage_problems), so it parses
        parts = parse_connection_string(connection_string, case_sensitive_keys=False)
        table = parts.get("tableendpoint")
        scheme, suffix = parts.get("defaultendpointsprotocol", "https").lower(), parts.get("endpointsuffix")
        url = table or f"{scheme}://{parts.get('accountname')}.table.{suffix or 'core.windows.net'}"
    found = urlsplit(url if "://" in url else f"https://{url}")
    return f"Table Storage {printable(f'{found.scheme}://{found.netloc}{found.path}'.rstrip('/'))}"


def _check(settings: dict[str, str], flag: str = "") -> None:
    """Raises ConfigurationError with what the app finds wrong with these storage settings
    (storage_problems), each named by `flag` when the value came from the command line."""
    problems = storage_problems(settings)
    if problems:
        raise ConfigurationError([replace(p, setting=flag) if flag else p for p in problems])


def _holds_secret(connection_string: str) -> bool:
    parts = {part.split("=", 1)[0].strip().lower() for part in connection_string.split(";") if "=" in part}
    return bool(parts & {"accountkey", "sharedaccesssignature"})


def connect(connection_string: str | None, endpoint: str | None, workers: int = WORKERS) -> AccountStore:
    """The account store; raises DependencyUnavailable when storage does not answer. The HTTP pool
    holds `workers` connections, so a parallel import reuses them instead of opening and dropping."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=workers,
                          max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    try:
        tables = Tables.from_settings(connection_string, endpoint, _default_credential,
                                      transport=RequestsTransport(session=session, session_owner=False))
    except ValueError as exc:  # what the app's rules (storage_problems) let through but the SDK does not
        if connection_string:  # never quoted: the SDK's text could hold part of it
            raise ConfigurationError(["the storage connection string: the Tables SDK cannot use it."]) from exc
        raise ConfigurationError([f"the storage endpoint: the Tables SDK cannot use it: {printable(str(exc))} "
                                  "(for Azurite, give TABLES_CONNECTION_STRING instead)"]) from exc
    try:
        # A missing table reads as a missing row (get_entity, delete_entity's 404) or as an HTTP 404
        # (a query): asked once here, it is said as what it is.
        tables.ping(ACCOUNTS_TABLE)
    except DependencyUnavailable as err:
        if getattr(err.__cause__, "error_code", None) != "TableNotFound":
            raise
        raise ConfigurationError([f"Table Storage has no table {ACCOUNTS_TABLE}: scripts/deploy makes the app's "
                                  "tables; check that TABLES_ENDPOINT (or --endpoint) names the app's storage "
                                  "account."]) from err
    return AccountStore(tables.client(ACCOUNTS_TABLE), people=tables.client(SCIM_USERS_TABLE))


def _default_credential():
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


# ---- CSV import -------------------------------------------------------------------------------------


class CsvFileError(Exception):
    """The file itself cannot be imported (missing, unreadable, not UTF-8, not CSV, a wrong header),
    as opposed to rows in it being bad."""


def _trim(field: str) -> str:
    """ASCII spaces around a CSV field are padding; anything else (a no-break space, a tab) is kept and
    judged, so an address with invisible characters is refused rather than silently cleaned."""
    return field.strip(" ")


def read_csv(path: Path) -> tuple[list[AccountRow], list[str]]:
    """Every row of the file, checked: (rows, problems). Problems name the line ('line 3: ...'), the
    header being line 1; when there is any, no row may be written. Raises CsvFileError when the file
    as a whole is wrong."""
    shown = printable(str(path))  # a path is text too: a control character in it would drive the terminal
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError as exc:
        raise CsvFileError(f"{shown}: no such file") from exc
    except OSError as exc:
        raise CsvFileError(f"{shown}: cannot be read ({exc.strerror})") from exc
    rows: list[AccountRow] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    ids: dict[tuple[str, str], int] = {}  # (account id, kind) -> line: one account is one mailbox's
    with handle:
        # strict: a quote inside an unquoted field, or one never closed, is an error (the lenient
        # reader ran an unclosed quote on over the next rows, importing them as part of a name).
        reader = csv.reader(handle, strict=True)
        start = 1  # the line the record being read starts on: a quoted field may span lines
        try:
            header = next(reader, None)
            if header is None:
                raise CsvFileError(f"{shown}: empty; the first line must be the header {','.join(COLUMNS)}")
            names = [_trim(h).lower() for h in header]
            unknown = [n for n in names if n not in COLUMNS]
            missing = [n for n in REQUIRED_COLUMNS if n not in names]
            if unknown or missing or len(set(names)) != len(names):
                raise CsvFileError(f"{shown}: line 1, the header, must be {','.join(COLUMNS)} (name and enabled may "
                                   f"be left out); got {printable(','.join(header))}")
            kept = frozenset(stored for column, stored in KEPT_UNLESS_GIVEN.items() if column not in names)
            while True:
                line = start = reader.line_num + 1  # a row is named by its first line
                fields = next(reader, None)
                if fields is None:
                    break
                if not fields or all(not _trim(f) for f in fields):
                    continue
                if len(fields) != len(names):
                    problems.append(f"line {line}: {len(fields)} fields, the header has {len(names)}")
                    continue
                values = dict(zip(names, map(_trim, fields), strict=True))
                row_problems = check_account(values["email"], values["kind"], values["account_id"],
                                             values.get("name", ""))
                enabled = parse_enabled(values.get("enabled"))
                if enabled is None:
                    row_problems.append(f"enabled '{printable(values['enabled'])}' must be true/false/yes/no/1/0 "
                                        "or empty")
                if row_problems:
                    problems.append(f"line {line}: " + "; ".join(row_problems))
                    continue
                email = canonical_email(values["email"])
                key = (email, values["kind"])
                if key in seen:
                    problems.append(f"line {line}: duplicate of line {seen[key]} (same email and kind)")
                    continue
                if (values["account_id"], values["kind"]) in ids:
                    problems.append(f"line {line}: account id {printable(values['account_id'])} ({values['kind']}) is "
                                    f"also line {ids[(values['account_id'], values['kind'])]}'s, for another email: "
                                    "two mailboxes would share one account")
                    continue
                seen[key] = line
                ids[(values["account_id"], values["kind"])] = line
                rows.append(AccountRow(email, values["kind"], values["account_id"], values.get("name", ""),
                                       bool(enabled), line, kept))
        except UnicodeDecodeError as exc:
            raise CsvFileError(f"{shown}: not UTF-8 text") from exc
        except csv.Error as exc:
            if reader.line_num <= start:
                raise CsvFileError(f"{shown}: line {start} is not valid CSV ({exc})") from exc
            raise CsvFileError(f"{shown}: the row that starts on line {start} is not valid CSV at line "
                               f"{reader.line_num} ({exc}): a quote opened in it may not be closed") from exc
    return rows, problems


class ProgressBar:
    """A one-line bar on a terminal: `[#########.........]  4500/10000 rows  45%  2100 rows/s`.
    Drawn at most ten times a second; silent when not `shown` (not a terminal, or --no-progress)."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO, shown: bool):
        self.total, self.stream, self.shown = total, stream, shown and total > 0
        self.done = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.shown and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            filled = self.WIDTH * self.done // self.total
            rate = self.done / max(now - self._started, 1e-6)
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done:>{len(str(self.total))}}"
                              f"/{self.total} rows {100 * self.done // self.total:3d}%  {rate:,.0f} rows/s")
            self.stream.flush()

    def close(self) -> None:
        if self.shown and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


# ---- commands ---------------------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> AccountStore:
    """The account store the settings name; args.storage says which (for what add and import print)."""
    settings = storage_settings(args, args.environ, args.app_dir)
    args.storage = storage_named(*settings)
    return connect(*settings, workers=args.workers if hasattr(args, "workers") else WORKERS)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cmd_add(args: argparse.Namespace) -> int:
    email, account_id, name = _trim(args.email), _trim(args.account_id), _trim(args.name)  # as import trims
    problems = check_account(email, args.kind, account_id, name)
    if problems:
        return _fail("; ".join(problems))
    canonical = canonical_email(email)  # as stored (the store folds it itself)
    said = f"{args.kind} account {printable(account_id)} for {printable(canonical)}"
    try:
        before = _store(args).add(email, args.kind, account_id, name, enabled=not args.disabled, force=args.force)
    except AccountConflict as refused:
        return _fail(printable(str(refused)))
    except DependencyUnavailable as err:
        if err.unchecked_write:
            print(f"the {said} was written, but its check after the write (that no other email took the account id "
                  "meanwhile) did not run to its end before storage failed: once storage is back, run `accounts check` "
                  "(it lists an account id two mailboxes hold).", file=sys.stderr)
        raise
    said += " (disabled)" if args.disabled else ""
    if before is None:
        print(f"added {said} in {args.storage}")
        return EXIT_OK
    # A forced re-point is said whether or not directory sync manages the row: it changes who signs in.
    repointed = (f": it was {printable(before.account_id)}, {printable(bound_to(before))}: that person now signs in "
                 f"to {printable(account_id)} (--force)") if repoints(account_id, before) else ""
    managed = ""
    if before.provisioned:
        state = "disabled as asked" if args.disabled else "enabled" if before.enabled else \
            f"kept disabled: {_enable_advice(canonical, args.kind)}"
        managed = f"; directory sync manages it, so its name and enabled state stay Entra's ({state})"
    print(f"updated {said}{repointed}{managed} in {args.storage}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    try:
        rows, problems = read_csv(Path(args.file))
    except CsvFileError as err:
        return _fail(f"{err}; nothing was written.")
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{printable(args.file)}: {len(problems)} bad row{'s' if len(problems) != 1 else ''}; nothing was "
              "written.", file=sys.stderr)
        return EXIT_BAD_INPUT
    store = _store(args)
    stored = store.stored_accounts()
    moving = [(row, problem) for row in rows if (before := stored.get((row.key, row.kind))) is not None
              and (problem := store.move_problem(before))]
    if moving:
        return _refuse_rows(args.file, moving, "that directory sync is moving",
                            "Each line says where sign-in finds the account now.")
    shared = sharing_problems(rows, stored)  # --force does not override these
    if shared:
        return _refuse_rows(args.file, shared, "would give an account to a second mailbox")
    repointed = [(row, repoint_text(before, row.account_id)) for row in rows
                 if repoints(row.account_id, before := stored.get((row.key, row.kind)))]
    if repointed and not args.force:
        return _refuse_rows(args.file, repointed, "would sign a linked person in to another account",
                            "Use --force to do that, or unlink those accounts first.")
    entra = store.entra_records() if not args.force else {}
    taken_away = [(row, refused) for row in rows if (row.key, row.kind) not in stored
                  and (refused := entra_refusal(row, entra.get(row.key)))]
    if taken_away:
        return _refuse_rows(args.file, taken_away, "would make an account that Entra took away or does not give",
                            "Leave those lines out, change them in Entra, make them disabled (enabled false), or "
                            "use --force to make them enabled anyway (directory sync then leaves them alone).")
    shown = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = ProgressBar(len(rows), sys.stderr, shown)
    started = time.monotonic()
    try:
        result = store.import_rows(rows, progress=bar.advance, workers=args.workers, stored=stored, force=args.force)
    except DependencyUnavailable as err:
        bar.close()
        got = err.imported
        _say_unwritten(got)
        refused = f" and {len(got.refused)} not written (the lines above)" if got.refused else ""
        print(f"{_rows_were(got.written, len(rows))} written{refused} before storage failed, and the import's end "
              "check (that no other email took one of their account ids meanwhile) did not run to its end: importing "
              "is idempotent, so run the same import again, then `accounts check` (it lists an account id two "
              "mailboxes hold).", file=sys.stderr)
        raise
    bar.close()
    elapsed = time.monotonic() - started
    refused = {id(row) for row, _ in result.refused}
    written = [row for row in rows if id(row) not in refused]
    kinds = {kind: sum(1 for r in written if r.kind == kind) for kind in KINDS}
    print(f"imported {result.written} accounts ({kinds['user']} user, {kinds['agent']} agent) into {args.storage} "
          f"in {elapsed:.1f} s")
    _say_managed(written, stored)
    _say_unwritten(result)
    if result.refused:
        print(f"{_rows_were(len(result.refused), len(rows))} not written (the lines above); the other {result.written} "
              f"{'was' if result.written == 1 else 'were'} written.", file=sys.stderr)
    return EXIT_BAD_INPUT if result.refused or result.stuck else EXIT_OK


def _say_unwritten(result: Imported) -> None:
    """The import's rows refused during it, and those written that share their account (stuck), by line."""
    for row, why in result.refused:
        print(f"line {row.line}: not written (changed during the import): {printable(why)}", file=sys.stderr)
    for row, why in result.stuck:
        print(f"line {row.line}: {printable(why)}", file=sys.stderr)  # "written, but ...": it stays


def _rows_were(n: int, total: int) -> str:
    return f"{n} of {total} row{'s' if total != 1 else ''} {'was' if n == 1 else 'were'}"


def _refuse_rows(path: str, refused: list[tuple[AccountRow, str]], what: str, advice: str = "") -> int:
    """An import refused before any write: each row's line and why, then the count and what to do."""
    for row, why in refused:
        print(f"line {row.line}: {printable(why)}", file=sys.stderr)
    print(f"{printable(path)}: {len(refused)} row{'s' if len(refused) != 1 else ''} {what}; nothing was written."
          f"{' ' + advice if advice else ''}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _enable_advice(email: str, kind: str) -> str:
    return (f"Entra disabled the person (enable them in Entra), or an admin ran `disable` (then `enable "
            f"{printable(email)} --kind {kind}`)")


def _say_managed(written: list[AccountRow], stored: dict) -> None:
    """The rows that were accounts directory sync manages (as scanned): their name and enabled state
    stayed Entra's (AccountRow.entity), said rather than silently ignored; a line for each the file
    would have enabled."""
    managed = [(row, before) for row in written if (before := stored.get((row.key, row.kind))) is not None
               and before.provisioned]
    if not managed:
        return
    for row, before in managed:
        if row.enabled and not before.enabled and "Enabled" not in row.kept:
            print(f"line {row.line}: the {row.kind} account of {printable(row.email)} stays disabled: directory sync "
                  f"manages it; {_enable_advice(row.email, row.kind)}")
    print(f"{len(managed)} of these accounts {'are' if len(managed) != 1 else 'is'} managed by directory sync: their "
          "name and enabled state stay Entra's (enable, disable or rename the person in Entra); a `false` in enabled "
          "still disables")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _enabled(account) -> str:
    if account.invalid_enabled is not None:
        return f"no (stored {printable(account.invalid_enabled)}, not a boolean)"
    return "yes" if account.enabled else "no"


def cmd_list(args: argparse.Namespace) -> int:
    """Every value is printed through `printable`: names and ids come from imports and other tools, and
    a control character in one would drive the operator's terminal."""
    accounts = sorted(_store(args).list(args.kind), key=lambda a: (a.email, a.kind))
    rows = [(printable(a.email), printable(a.kind), printable(a.account_id), printable(a.display_name), _enabled(a),
             "yes" if a.linked_idp_subject else "no", "yes" if a.provisioned else "no",
             a.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if a.last_login_at else "never")
            for a in accounts]
    print(format_table(("email", "kind", "account id", "name", "enabled", "linked", "provisioned", "last login"),
                       rows))
    print(f"{len(rows)} account{'s' if len(rows) != 1 else ''}")
    odd = sum(1 for a in accounts if a.invalid_enabled is not None)
    if odd:
        print(f"{odd} account{'s' if odd != 1 else ''} with an Enabled that is not a boolean (written by another "
              "tool): counted as disabled; `enable` or `disable` stores a real boolean.")
    return EXIT_OK


UNADDRESSABLE = "no request can name this row (a request URL is UTF-8, which has no lone surrogates)"


CHECK_ADVICE = {
    "refused": "no sign-in can reach it: add the account under the address the directory has, then remove this row "
               "with --stored-key",
    "key": "no sign-in finds it: add the account under its address, then remove this row with --stored-key",
    "review": "if the directory writes the address with capitals other than A-Z, its person gets no_account: "
              "`remove --stored-key KEY --kind KIND` (this row), then `add ADDRESS --kind KIND --account-id ID` "
              "with the address as the directory writes it and this row's account id (in this order: add refuses "
              "an account id this row holds; add --name or --disabled to keep what list shows of the row)",
    "kind": "no sign-in finds it (a kind is user or agent, lower-case): add the account with its kind, then remove "
            "this row with --stored-key and --kind as this table shows them",
    "no-id": "sign-in refuses it: add it again with its --account-id, or remove it",
    "bad-id": "sign-in refuses it (it would be the session token's sub): add it again with an --account-id add "
              "takes, or remove it",
    "enabled": "run enable or disable to store a real boolean",
    "moving": "change the account where the `what` column says sign-in finds it; where it finds it at neither "
              f"address, {MOVE_ADVICE}",
    "shared": "two mailboxes hold one account (two writers at once, or an add or import stopped before its check "
              "after the write): remove it at every address but its owner's (`remove EMAIL --kind K`)",
    "unaddressable": f"{UNADDRESSABLE}: nothing can change or remove it, and no sign-in reaches it; if it is "
                     "someone's account, add it under the address the directory has",
    "entra": "an account made by hand that Entra's directory sync would not give: if no one meant it (an HR file "
             "from before directory sync imported again), `remove EMAIL --kind K`; one made on purpose (--force) "
             "may stay, and directory sync leaves it alone",
}
# `check` lists these rows, but they do not make it fail: nothing an operator does fixes them, or (entra)
# the row may be meant.
CHECK_NOTES = ("review", "unaddressable", "entra")


def cmd_check(args: argparse.Namespace) -> int:
    """The stored rows the email-key rule (shared/accounts.py email_key) does not find as they are, the
    rows login does not find because directory sync is moving them, and the account ids two mailboxes
    hold (one scan)."""
    found = sorted(_store(args).key_problems(), key=lambda f: (f[1] in CHECK_NOTES, f[0].key, f[0].kind))
    rows = [(what, printable(a.key), printable(a.kind), printable(a.account_id), printable(problem))
            for a, what, problem in found]
    if not rows:
        print("every stored row is found under its address's key")
        return EXIT_OK
    print(format_table(("problem", "stored key", "kind", "account id", "what"), rows))
    for what in sorted({f[1] for f in found}, key=list(CHECK_ADVICE).index):
        print(f"{what}: {CHECK_ADVICE[what]}")
    return EXIT_BAD_INPUT if any(f[1] not in CHECK_NOTES for f in found) else EXIT_OK


def _one_account(action: Callable[[AccountStore, str, str], bool], done: str, advice: str = ""):
    """A command on one account named by EMAIL and --kind; `advice` follows a refusal of the values."""
    def run(args: argparse.Namespace) -> int:
        email = _trim(args.email)
        problems = check_account(email, args.kind, "-")
        if problems:
            return _fail("; ".join(problems) + advice)
        try:
            if not action(_store(args), email, args.kind):
                return _fail(f"no {args.kind} account for {printable(canonical_email(email))}")
        except AccountConflict as refused:
            return _fail(printable(str(refused)))
        print(f"{done} {args.kind} account of {printable(canonical_email(email))}")
        return EXIT_OK

    return run


cmd_disable = _one_account(lambda s, email, kind: s.update(email, kind, Enabled=False), "disabled")
cmd_enable = _one_account(lambda s, email, kind: s.enable(email, kind), "enabled")
cmd_unlink = _one_account(lambda s, email, kind: s.unlink(email, kind),
                          "unlinked (the next person to sign in links it)")
_remove_by_email = _one_account(lambda s, email, kind: s.remove(email, kind), "removed",
                                " (a row another tool stored, with a key or kind no address gives, goes with "
                                "--stored-key and --kind as `check` prints them)")


def cmd_remove(args: argparse.Namespace) -> int:
    if (args.email is None) == (args.stored_key is None):
        return _fail("remove takes an EMAIL or --stored-key KEY (as `check` prints it), not both")
    if args.email is not None:
        return _remove_by_email(args)
    key = unprintable(args.stored_key)
    kind = unprintable(args.kind)
    for flag, value in (("--stored-key", key), ("--kind", kind)):
        if problem := _stored_key_problem(value):
            return _fail(f"{flag} {problem}")
    try:
        if not _store(args).remove_key(key, kind):
            return _fail(f"no {printable(kind)} row with the stored key {printable(key)}")
    except AccountConflict as refused:  # the old row of a move whose copy still names it, as by EMAIL
        return _fail(printable(str(refused)))
    print(f"removed the {printable(kind)} row with the stored key {printable(key)}")
    return EXIT_OK


def _stored_key_problem(value: str) -> str | None:
    """Why no stored row has the key (or kind) `value`, or no request can name it, before one is sent."""
    for position, c in enumerate(value, 1):
        if KEY_FORBIDDEN.match(c):
            return f"holds '{printable(c)}' (U+{ord(c):04X}) at character {position}, which Table Storage keeps in " \
                   "no key: no row has it"
        if unicodedata.category(c) == "Cs":
            return f"holds a lone surrogate (U+{ord(c):04X}) at character {position}: {UNADDRESSABLE}; see `check`"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="portal-sso accounts", description="Manage portal accounts (PortalAccounts table).")
    parser.add_argument("--connection-string", help="only one without a key (e.g. UseDevelopmentStorage=true); "
                                                    "a key goes in TABLES_CONNECTION_STRING, never on the command line")
    parser.add_argument("--endpoint", help="Table endpoint used with DefaultAzureCredential (overrides the settings)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    add = commands.add_parser("add", help="add or update one account")
    add.add_argument("email")
    add.add_argument("--kind", choices=KINDS, required=True)
    add.add_argument("--account-id", required=True)
    add.add_argument("--name", default="")
    add.add_argument("--disabled", action="store_true", help="create it disabled")
    add.add_argument("--force", action="store_true",
                     help="change the account id of an account linked to a person (that person then signs in to it); "
                          "never gives an account id another email holds")
    add.set_defaults(run=cmd_add)

    imp = commands.add_parser("import", help="add or update the accounts of a CSV file (all rows checked first)")
    imp.add_argument("file")
    imp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="draw a progress bar on stderr (default: when stderr is a terminal)")
    imp.add_argument("--workers", type=whole_number(1, 64), default=WORKERS,
                     help=f"requests in flight, 1 to 64 (default {WORKERS})")
    imp.add_argument("--force", action="store_true",
                     help="also change the account id of accounts linked to a person (that person then signs in to "
                          "it); never gives an account id another email holds")
    imp.set_defaults(run=cmd_import)

    lst = commands.add_parser("list", help="list accounts")
    lst.add_argument("--kind", choices=KINDS)
    lst.set_defaults(run=cmd_list)

    chk = commands.add_parser("check", help="list stored rows the email-key rule does not find as they are")
    chk.set_defaults(run=cmd_check)

    for name, run, text in (("disable", cmd_disable, "disable an account (its person can no longer sign in)"),
                            ("enable", cmd_enable, "enable a disabled account"),
                            ("unlink", cmd_unlink, "forget the person linked to an account"),
                            ("remove", cmd_remove, "delete an account")):
        one = commands.add_parser(name, help=text)
        one.add_argument("email", nargs="?" if name == "remove" else None)
        if name == "remove":  # a row `check` listed may have any kind another tool stored ('User')
            one.add_argument("--kind", required=True, help="user or agent; with --stored-key, the kind as stored")
            one.add_argument("--stored-key", help="the row's stored key as `check` prints it, instead of EMAIL")
        else:
            one.add_argument("--kind", choices=KINDS, required=True)
        one.set_defaults(run=run)
    return parser


def _storage_failure(err: DependencyUnavailable) -> int:
    """Storage that answered 'no' (a wrong key, a missing role) is not storage that did not answer."""
    cause = err.__cause__
    status = getattr(cause, "status_code", None)
    if isinstance(cause, ClientAuthenticationError) or (isinstance(cause, HttpResponseError) and status in (401, 403)):
        print(f"error: Table Storage refused our credentials ({printable(err.detail)}): a wrong account key in "
              "TABLES_CONNECTION_STRING (`make run` writes the right one for its Azurite into local.settings.json), "
              "or, with TABLES_ENDPOINT, an identity without the Storage Table Data Contributor role.", file=sys.stderr)
        return EXIT_REFUSED
    print(f"error: Table Storage is unreachable ({printable(err.detail)}). Check the connection string or endpoint, "
          "and that the storage account (or Azurite: `make run`) is running.", file=sys.stderr)
    return EXIT_UNAVAILABLE


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         app_dir: Path = PROJECT_ROOT) -> int:
    """`environ` (default os.environ) and `app_dir` (whose local.settings.json is read) are for tests."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (1)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    args.environ, args.app_dir = os.environ if environ is None else environ, Path(app_dir)
    try:
        return args.run(args)
    except ConfigurationError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DependencyUnavailable as err:
        return _storage_failure(err)


if __name__ == "__main__":
    sys.exit(main())
