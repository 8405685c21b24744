"""How fast `tools.accounts import` writes: generates a CSV of N accounts, imports it into Azurite (a
fresh one, started here, unless --existing: then the storage the settings name, as the accounts CLI
reads them), prints elapsed time and rows/s.

    .venv/bin/python -m tools.bench_import [--rows 10000] [--workers 16] [--existing]

Not a test: a measurement. Azurite is one Node process on this machine, so the figure says more about
our client (requests in flight, batching) than about Azure, where each partition is served apart.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import tempfile
import time
from pathlib import Path

from tools import accounts


def write_csv(path: Path, rows: int) -> None:
    """`rows` accounts; every tenth person has both a user and an agent account (one partition, two
    rows: written in one transaction)."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(accounts.COLUMNS)
        n = person = 0
        while n < rows:
            email = f"person{person:06d}@bench.contoso.test"
            writer.writerow((email, "user", f"U-{person:06d}", f"Person {person}", "true"))
            n += 1
            if person % 10 == 0 and n < rows:
                writer.writerow((email, "agent", f"A-{person:06d}", f"Person {person}", "yes"))
                n += 1
            person += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_import")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=accounts.WORKERS)
    parser.add_argument("--existing", action="store_true",
                        help="import into the storage of TABLES_CONNECTION_STRING (environment or local.settings.json)"
                             " instead of a fresh Azurite")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp, contextlib.ExitStack() as stack:
        csv_path = Path(tmp) / "accounts.csv"
        write_csv(csv_path, args.rows)
        environ = None  # the CLI's own: the process environment, then local.settings.json
        if not args.existing:
            from tools.stack import start_azurite

            azurite = start_azurite(workdir=Path(tmp))
            stack.callback(azurite.stop)
            environ = {"TABLES_CONNECTION_STRING": azurite.connection_string}
        started = time.perf_counter()
        code = accounts.main(["import", str(csv_path), "--workers", str(args.workers)], environ=environ)
        elapsed = time.perf_counter() - started
    if code != 0:
        print(f"import failed with exit code {code}", file=sys.stderr)
        return code
    print(f"bench_import: {args.rows} rows, {args.workers} workers: {elapsed:.2f} s, {args.rows / elapsed:,.0f} rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
