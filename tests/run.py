"""`make test`: the whole suite as two pytest processes side by side, tests/deploy beside the rest.

The deploy tests run the real scripts against a fake `az`, a process per call (a few thousand in all), and
share no service with the rest; the rest drives the login through Azurite, the IdP and Chromium. One
pytest for both kept one of CI's two cores idle for most of the run (the deploy half alone took ~10 of
its ~23 minutes). Here the rest streams to the terminal as usual; the deploy half's output is kept and
printed after it, and the exit status is the worse of the two. `python -m pytest` still runs everything
in one process.

    python -m tests.run [PYTEST ARGS...]   (the arguments go to both halves)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDE = "tests/deploy"


def main(argv: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", *argv]
    with tempfile.TemporaryDirectory(prefix="portal-sso-tests-") as scratch:
        log = Path(scratch) / "deploy.log"
        with log.open("w") as out:
            # Its own --basetemp: two pytest processes share pytest's numbered temp dirs otherwise, and each
            # prunes the other's old ones. No cache plugin: the rest's .pytest_cache is the one kept.
            side = subprocess.Popen([*pytest, SIDE, "--basetemp", str(Path(scratch) / "tmp"), "-p", "no:cacheprovider"],
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                rest = subprocess.run([*pytest, "--ignore", SIDE], cwd=ROOT, check=False).returncode
            finally:
                side_code = side.wait()
        print(f"\n===== {SIDE} (run beside the rest) =====", flush=True)
        sys.stdout.write(log.read_text())
    print(f"\nthe rest: exit {rest}; {SIDE}: exit {side_code}", flush=True)
    return rest or side_code


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
