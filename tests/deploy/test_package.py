"""The deployment package holds exactly the app (function_app.py, host.json, requirements.txt,
functions/, shared/): nothing from .venv, node_modules, .devstack (the dev CA and signing keys),
tests, tools or docs, even after `make setup` and `make run` have filled the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.deploy.test_worker import WORKER_PYTHON
from tools.package import DEFAULT_OUT, ROOT, PackageError, build_package, main

APP = ("function_app.py", "host.json", "requirements.txt")


def test_the_package_is_the_app_and_nothing_else(tmp_path):
    stray = ROOT / ".devstack" / "package-test-stray-key.pem"  # what `make run` leaves: never shipped
    stray.parent.mkdir(exist_ok=True)
    stray.write_text("-----BEGIN PRIVATE KEY-----\nnot a real key\n")
    try:
        out = tmp_path / "app.zip"
        digest = build_package(out).sha256
    finally:
        stray.unlink()
    names = zipfile.ZipFile(out).namelist()
    assert set(APP) <= set(names), "the entry point, host.json and the requirements ship"
    assert any(n.startswith("functions/") for n in names) and any(n.startswith("shared/") for n in names)
    strays = [n for n in names if n not in APP and not n.startswith(("functions/", "shared/"))]
    assert not strays, f"only the app ships: {strays}"
    assert not any(n.endswith((".pem", ".pyc")) or "__pycache__" in n for n in names)
    assert out.stat().st_size < 200 * 1024, f"{out.stat().st_size} bytes"
    assert build_package(tmp_path / "again.zip").sha256 == digest, \
        "the same tree gives the same package (rerun skips it)"


def test_the_package_command_writes_into_a_git_ignored_folder_not_the_work_tree(tmp_path, monkeypatch):
    """Issue 16 item 8: `tools.package` used to leave app.zip in the repository root (or wherever it ran)."""
    monkeypatch.chdir(tmp_path)
    before = DEFAULT_OUT.stat().st_mtime_ns if DEFAULT_OUT.exists() else None
    assert main([]) == 0
    assert DEFAULT_OUT.is_file() and DEFAULT_OUT.stat().st_mtime_ns != before
    assert not (tmp_path / "app.zip").exists() and not (ROOT / "app.zip").exists()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(DEFAULT_OUT)], cwd=ROOT)
    assert ignored.returncode == 0, "build/app.zip is git-ignored"
    status = subprocess.run(["git", "status", "--porcelain", "--", "build"], cwd=ROOT, capture_output=True, text=True)
    assert status.stdout == "", "and git status shows nothing new"


def clone(tmp_path: Path) -> Path:
    """A fresh clone of this repository's committed tree (the work tree of the test run is left alone)."""
    copy = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(copy)], check=True, capture_output=True)
    return copy


def test_a_new_module_the_app_imports_refuses_the_build_until_added_then_the_python_313_worker_indexes_it(
        tmp_path):
    """The hunt's case: the package took `git ls-files` (tracked files only) but their contents from disk,
    so function_app.py edited to import a module not yet committed shipped without it: the 3.13 worker
    found no functions (ImportError), after a deploy that reported success. Untracked, it is named and
    the build refused (shipped unseen, a stray .env would go to Azure); once added, it ships."""
    assert WORKER_PYTHON.exists(), f"the worker's Python 3.13 venv is made by `make worker-venv` ({WORKER_PYTHON})"
    root = clone(tmp_path)
    (root / "shared" / "helper_new.py").write_text('GREETING = "ready"\n')
    entry = root / "function_app.py"
    entry.write_text(entry.read_text().replace("from shared.worker import ready",
                                               "from shared.helper_new import GREETING  # noqa: F401\n"
                                               "from shared.worker import ready"))
    (root / "shared" / "notes.md").write_text("scratch\n")  # new, but .funcignore keeps *.md out
    (root / "shared" / "stale.pyc").write_bytes(b"\0")  # new, but git-ignored
    (root / ".env").write_text("CLIENT_SECRET=do-not-ship\n")  # a stray file nothing ignores
    with pytest.raises(PackageError) as refused:
        build_package(tmp_path / "app.zip", root)
    assert ".env, shared/helper_new.py" in str(refused.value) and "notes.md" not in str(refused.value)
    (root / ".env").unlink()
    subprocess.run(["git", "add", "shared/helper_new.py"], cwd=root, check=True)
    package = build_package(tmp_path / "app.zip", root)
    names = zipfile.ZipFile(tmp_path / "app.zip").namelist()
    assert "shared/helper_new.py" in names, "a new file the app imports ships once git tracks it"
    assert "shared/notes.md" not in names and "shared/stale.pyc" not in names, names

    unpacked = tmp_path / "site"
    zipfile.ZipFile(tmp_path / "app.zip").extractall(unpacked)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")} | {"FUNCTIONS_WORKER_RUNTIME": "python"}
    done = subprocess.run([str(WORKER_PYTHON), str(ROOT / "tests/deploy/worker_driver.py"), str(unpacked)],
                          cwd=unpacked, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["init"]["status"] == "Success", out["init"]
    assert {"sso_login", "sso_callback", "health", "purge_expired_rows", "scim"} <= set(out["functions"]), \
        f"the worker indexes the package's functions: {out['functions']}"
    (root / "shared" / "helper_new.py").write_text('GREETING = "changed"\n')
    assert build_package(tmp_path / "again.zip", root).sha256 != package.sha256, "its contents are in the hash"


def copy_without_git(tmp_path: Path, monkeypatch) -> Path:
    """What "Download ZIP" on GitHub or `git archive` gives: the repository's files (here as they are on disk,
    so the code under test is this tree's), no .git."""
    copy = tmp_path / "download"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    (copy / ".venv").symlink_to((ROOT / ".venv").resolve())  # as `make setup` would make it
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # even if the temporary folder is in a clone
    return copy


def test_packaging_a_copy_without_git_is_refused_with_what_to_do(tmp_path, monkeypatch):
    """The hunt's case: `portal-sso package` in a copy without .git died with git's CalledProcessError."""
    copy = copy_without_git(tmp_path, monkeypatch)
    done = subprocess.run([str(copy / ".venv/bin/python"), "-m", "tools.package", "--out", str(tmp_path / "a.zip")],
                          cwd=copy, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr and "not a git clone" in done.stderr and "git clone" in done.stderr, \
        done.stderr
    assert not (tmp_path / "a.zip").exists()


def test_packaging_without_git_installed_is_refused_with_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    assert main(["--out", str(tmp_path / "a.zip")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: git is not installed"), err


def test_a_copy_inside_another_repository_that_ignores_it_is_refused_not_shipped_empty(tmp_path, monkeypatch):
    copy = copy_without_git(tmp_path, monkeypatch)
    monkeypatch.delenv("GIT_CEILING_DIRECTORIES")
    subprocess.run(["git", "init", "--quiet", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("download/\n")  # a home folder under git that ignores what it holds
    done = subprocess.run([str(copy / ".venv/bin/python"), "-m", "tools.package", "--out", str(tmp_path / "a.zip")],
                          cwd=copy, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no function_app.py" in done.stderr and "Traceback" not in done.stderr, done
    assert not (tmp_path / "a.zip").exists()
