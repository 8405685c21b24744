"""The deployment package: the files `git ls-files` lists, less what `.funcignore` excludes (read with
gitignore rules by `pathspec`, as Core Tools reads it), zipped. One function, used by scripts/deploy
and by its test, so what is tested is what ships.

    portal-sso package [--out build/app.zip]      (or .venv/bin/python -m tools.package)

By default the zip goes to build/app.zip in the repository (git-ignored), wherever it is run from.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import zipfile
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "app.zip"  # git-ignored: never a stray file in the work tree
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # every entry gets this time: the same tree gives the same zip and hash


def package_files(root: Path = ROOT) -> list[str]:
    """The repository's tracked files that deploy, sorted: untracked files (.venv, node_modules, the dev
    stack's keys in .devstack/) are never candidates, and .funcignore removes tooling and tests."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True).stdout
    names = [n for n in tracked.decode().split("\0") if n]
    ignore_file = root / ".funcignore"
    ignored = pathspec.GitIgnoreSpec.from_lines(ignore_file.read_text().splitlines() if ignore_file.exists() else [])
    return sorted(n for n in names if not ignored.match_file(n) and (root / n).is_file())


def build_package(out: Path, root: Path = ROOT) -> str:
    """Writes the zip to `out`; returns its SHA-256 (hex), which is the same for the same files."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in package_files(root):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (root / name).read_bytes())
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portal-sso package", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: build/app.zip in the repository")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    digest = build_package(args.out)
    files = package_files()
    print(f"{args.out}: {len(files)} files, {args.out.stat().st_size / 1024:.1f} KiB, sha256 {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
