"""Manage portal accounts in the `PortalAccounts` table.

    .venv/bin/python -m tools.accounts add EMAIL --kind user|agent --account-id ID [--name N] [--disabled]
    .venv/bin/python -m tools.accounts import FILE.csv        # header: email,kind,account_id,name,enabled
    .venv/bin/python -m tools.accounts list [--kind user|agent]
    .venv/bin/python -m tools.accounts disable|enable|unlink|remove EMAIL --kind user|agent

Storage comes from the settings the app reads (`local.settings.json` Values in the current directory,
the process environment winning): TABLES_CONNECTION_STRING, or TABLES_ENDPOINT with
DefaultAzureCredential (`az login` on a workstation). `--connection-string` / `--endpoint` override.

Exit codes: 0 done, 1 bad input (usage, a bad CSV row, no such account, settings missing),
2 storage unreachable.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import requests
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.accounts import (
    KINDS,
    AccountRow,
    AccountStore,
    check_account,
    normalize_email,
    parse_enabled,
)
from shared.errors import ConfigurationError, DependencyUnavailable
from shared.tables import ACCOUNTS_TABLE, Tables

EXIT_OK, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2
COLUMNS = ("email", "kind", "account_id", "name", "enabled")
REQUIRED_COLUMNS = ("email", "kind", "account_id")
WORKERS = 16


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; here 2 means 'storage unreachable', so usage is 1."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


# ---- connection -------------------------------------------------------------------------------------


def storage_settings(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(connection string, endpoint): the options, else the app's settings (process env wins over
    local.settings.json, as in `func start`)."""
    if args.connection_string:
        return args.connection_string, None
    if args.endpoint:
        return None, args.endpoint
    from tools.local_settings import load_local_settings

    env = dict(os.environ)
    load_local_settings(Path("."), env)
    cs = env.get("TABLES_CONNECTION_STRING", "").strip() or None
    endpoint = env.get("TABLES_ENDPOINT", "").strip() or None
    if not cs and not endpoint:
        raise ConfigurationError(["TABLES_CONNECTION_STRING or TABLES_ENDPOINT: missing. Set one in the environment "
                                  "or local.settings.json, or pass --connection-string / --endpoint."])
    return cs, endpoint


def connect(connection_string: str | None, endpoint: str | None, workers: int = WORKERS) -> AccountStore:
    """The account store; raises DependencyUnavailable when storage does not answer. The HTTP pool
    holds `workers` connections, so a parallel import reuses them instead of opening and dropping."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=workers,
                          max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    tables = Tables.from_settings(connection_string, endpoint, _default_credential,
                                  transport=RequestsTransport(session=session, session_owner=False))
    return AccountStore(tables.client(ACCOUNTS_TABLE))


def _default_credential():
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


# ---- CSV import -------------------------------------------------------------------------------------


def read_csv(path: Path) -> tuple[list[AccountRow], list[str]]:
    """Every row of the file, checked: (rows, problems). Problems name the line ('line 3: ...'), the
    header being line 1; when there is any, no row may be written."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        return [], [f"{path}: cannot be read ({exc.strerror})"]
    rows: list[AccountRow] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                return [], [f"{path}: empty; the first line must be the header {','.join(COLUMNS)}"]
            names = [h.strip().lower() for h in header]
            unknown = [n for n in names if n not in COLUMNS]
            missing = [n for n in REQUIRED_COLUMNS if n not in names]
            if unknown or missing or len(set(names)) != len(names):
                return [], [f"line 1: the header must be {','.join(COLUMNS)} (name and enabled may be left out); "
                            f"got {','.join(header)}"]
            for fields in reader:
                line = reader.line_num
                if not fields or all(not f.strip() for f in fields):
                    continue
                if len(fields) != len(names):
                    problems.append(f"line {line}: {len(fields)} fields, the header has {len(names)}")
                    continue
                values = dict(zip(names, (f.strip() for f in fields), strict=True))
                row_problems = check_account(values["email"], values["kind"], values["account_id"])
                enabled = parse_enabled(values.get("enabled"))
                if enabled is None:
                    row_problems.append(f"enabled {values['enabled']!r} must be true/false/yes/no/1/0 or empty")
                email = normalize_email(values["email"])
                key = (email, values["kind"])
                if key in seen:
                    row_problems.append(f"duplicate of line {seen[key]} (same email and kind)")
                else:
                    seen[key] = line
                if row_problems:
                    problems.append(f"line {line}: " + "; ".join(row_problems))
                else:
                    rows.append(AccountRow(email, values["kind"], values["account_id"], values.get("name", ""),
                                           bool(enabled)))
        except UnicodeDecodeError:
            return [], [f"{path}: not UTF-8 text"]
        except csv.Error as exc:
            return [], [f"line {reader.line_num}: not valid CSV ({exc})"]
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
    return connect(*storage_settings(args), workers=args.workers if hasattr(args, "workers") else WORKERS)


def cmd_add(args: argparse.Namespace) -> int:
    problems = check_account(args.email, args.kind, args.account_id)
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    store = _store(args)
    existed = store.get(args.email, args.kind) is not None
    store.add(args.email, args.kind, args.account_id.strip(), args.name.strip(), enabled=not args.disabled)
    print(f"{'updated' if existed else 'added'} {args.kind} account {args.account_id.strip()} for "
          f"{normalize_email(args.email)}{' (disabled)' if args.disabled else ''}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    rows, problems = read_csv(Path(args.file))
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{args.file}: {len(problems)} bad row{'s' if len(problems) != 1 else ''}; nothing was written.",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    store = _store(args)
    shown = args.progress if args.progress is not None else sys.stderr.isatty()
    bar = ProgressBar(len(rows), sys.stderr, shown)
    started = time.monotonic()
    try:
        written = store.import_rows(rows, progress=bar.advance, workers=args.workers)
    except DependencyUnavailable:
        bar.close()
        print(f"{bar.done} of {len(rows)} rows were written before storage failed; importing is idempotent, "
              "so run the same import again.", file=sys.stderr)
        raise
    bar.close()
    elapsed = time.monotonic() - started
    kinds = {kind: sum(1 for r in rows if r.kind == kind) for kind in KINDS}
    print(f"imported {written} accounts ({kinds['user']} user, {kinds['agent']} agent) in {elapsed:.1f} s")
    return EXIT_OK


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    accounts = sorted(_store(args).list(args.kind), key=lambda a: (a.email, a.kind))
    rows = [(a.email, a.kind, a.account_id, a.display_name, "yes" if a.enabled else "no",
             "yes" if a.linked_idp_subject else "no", "yes" if a.provisioned else "no",
             a.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if a.last_login_at else "never")
            for a in accounts]
    print(format_table(("email", "kind", "account id", "name", "enabled", "linked", "provisioned", "last login"),
                       rows))
    print(f"{len(rows)} account{'s' if len(rows) != 1 else ''}")
    return EXIT_OK


def _one_account(action: Callable[[AccountStore, argparse.Namespace], bool], done: str):
    def run(args: argparse.Namespace) -> int:
        problems = check_account(args.email, args.kind, "-")
        if problems:
            print("error: " + "; ".join(problems), file=sys.stderr)
            return EXIT_BAD_INPUT
        if not action(_store(args), args):
            print(f"error: no {args.kind} account for {normalize_email(args.email)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"{done} {args.kind} account of {normalize_email(args.email)}")
        return EXIT_OK

    return run


cmd_disable = _one_account(lambda s, a: s.update(a.email, a.kind, Enabled=False), "disabled")
cmd_enable = _one_account(lambda s, a: s.update(a.email, a.kind, Enabled=True), "enabled")
cmd_unlink = _one_account(lambda s, a: s.unlink(a.email, a.kind), "unlinked (the next person to sign in links it)")
cmd_remove = _one_account(lambda s, a: s.remove(a.email, a.kind), "removed")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tools.accounts", description="Manage portal accounts (PortalAccounts table).")
    parser.add_argument("--connection-string", help="Table Storage connection string (overrides the settings)")
    parser.add_argument("--endpoint", help="Table endpoint used with DefaultAzureCredential (overrides the settings)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    add = commands.add_parser("add", help="add or update one account")
    add.add_argument("email")
    add.add_argument("--kind", choices=KINDS, required=True)
    add.add_argument("--account-id", required=True)
    add.add_argument("--name", default="")
    add.add_argument("--disabled", action="store_true", help="create it disabled")
    add.set_defaults(run=cmd_add)

    imp = commands.add_parser("import", help="add or update the accounts of a CSV file (all rows checked first)")
    imp.add_argument("file")
    imp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="draw a progress bar on stderr (default: when stderr is a terminal)")
    imp.add_argument("--workers", type=int, default=WORKERS, help=f"requests in flight (default {WORKERS})")
    imp.set_defaults(run=cmd_import)

    lst = commands.add_parser("list", help="list accounts")
    lst.add_argument("--kind", choices=KINDS)
    lst.set_defaults(run=cmd_list)

    for name, run, text in (("disable", cmd_disable, "disable an account (its person can no longer sign in)"),
                            ("enable", cmd_enable, "enable a disabled account"),
                            ("unlink", cmd_unlink, "forget the person linked to an account"),
                            ("remove", cmd_remove, "delete an account")):
        one = commands.add_parser(name, help=text)
        one.add_argument("email")
        one.add_argument("--kind", choices=KINDS, required=True)
        one.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (1)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        return args.run(args)
    except ConfigurationError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DependencyUnavailable as err:
        print(f"error: Table Storage is unreachable ({err.detail}). Check the connection string or endpoint, "
              "and that the storage account (or Azurite) is running.", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
