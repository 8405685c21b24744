"""The deployment package: the files git tracks, less what `.funcignore` excludes (read with gitignore
rules by `pathspec`, as Core Tools reads it), zipped as they are on disk. One function, used by
scripts/deploy and by its test, so what is tested is what ships. A new file that would ship but that git
does not track refuses the build, named: left out, a module the app imports would be missing in Azure
(the worker then finds no functions); taken in unseen, a stray file (a `.env`) would go to Azure.

    portal-sso package [--out build/app.zip]      (or .venv/bin/python -m tools.package)

By default the zip goes to build/app.zip in the repository (git-ignored), wherever it is run from.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "app.zip"  # git-ignored: never a stray file in the work tree
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # every entry gets this time: the same tree gives the same zip and hash


@dataclass(frozen=True)
class Package:
    sha256: str  # hex, of the zip: the same files give the same zip and hash
    files: list[str]


class PackageError(Exception):
    """The package cannot be built; the message says why and what to do."""


CLONE = "git clone <the repository's URL>"


def git_files(root: Path, *options: str) -> set[str]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", *options], cwd=root, check=True, capture_output=True)
    except FileNotFoundError:
        raise PackageError("git is not installed (or not on PATH): the package is the files git lists, so install "
                           "git and run this again from a clone of the repository") from None
    except subprocess.CalledProcessError as failed:
        said = failed.stderr.decode(errors="replace").strip()
        if "not a git repository" in said:
            raise PackageError(f"{root} is not a git clone (a Download ZIP or `git archive` copy has no .git): the "
                               f"package is the files git lists, so run this from a clone of the repository "
                               f"(`{CLONE}`)") from None
        raise PackageError(f"`git ls-files` failed in {root}: {said.splitlines()[-1] if said else failed}") from None
    return {n for n in listed.stdout.decode().split("\0") if n}


def package_files(root: Path = ROOT) -> list[str]:
    """The files that deploy, sorted: what git tracks, less what .funcignore removes (tooling, tests).
    Raises PackageError naming any file git does not track that would ship: `git add` it or ignore it."""
    tracked = git_files(root, "--cached")
    new = git_files(root, "--others", "--exclude-standard")  # not what git ignores: .venv, .devstack/, build/
    ignore_file = root / ".funcignore"
    ignored = pathspec.GitIgnoreSpec.from_lines(ignore_file.read_text().splitlines() if ignore_file.exists() else [])

    def shipped(names: set[str]) -> list[str]:
        return sorted(n for n in names if not ignored.match_file(n) and (root / n).is_file())
    untracked = shipped(new)
    if untracked:
        raise PackageError(f"{len(untracked)} file(s) would ship that git does not track: {', '.join(untracked)}. "
                           "`git add` what the app needs (a module it imports), and delete or .gitignore the "
                           "rest, so that what ships is what is committed and tested")
    files = shipped(tracked)
    if "function_app.py" not in files:  # a copy inside another repository that ignores it, say
        raise PackageError(f"git lists no function_app.py in {root}, so the package would hold no app: run this "
                           f"from a clone of the repository (`{CLONE}`)")
    return files


def build_package(out: Path, root: Path = ROOT) -> Package:
    """Writes the zip to `out`."""
    files = package_files(root)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (root / name).read_bytes())
    return Package(hashlib.sha256(out.read_bytes()).hexdigest(), files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portal-sso package", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: build/app.zip in the repository")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        package = build_package(args.out)
    except PackageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: {len(package.files)} files, {args.out.stat().st_size / 1024:.1f} KiB, sha256 {package.sha256}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
