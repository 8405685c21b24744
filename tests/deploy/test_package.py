"""The deployment package holds exactly the app (function_app.py, host.json, requirements.txt,
functions/, shared/): nothing from .venv, node_modules, .devstack (the dev CA and signing keys),
tests, tools or docs, even after `make setup` and `make run` have filled the checkout."""

from __future__ import annotations

import subprocess
import zipfile

from tools.package import DEFAULT_OUT, ROOT, build_package, main

APP = ("function_app.py", "host.json", "requirements.txt")


def test_the_package_is_the_app_and_nothing_else(tmp_path):
    stray = ROOT / ".devstack" / "package-test-stray-key.pem"  # what `make run` leaves: never shipped
    stray.parent.mkdir(exist_ok=True)
    stray.write_text("-----BEGIN PRIVATE KEY-----\nnot a real key\n")
    try:
        out = tmp_path / "app.zip"
        digest = build_package(out)
    finally:
        stray.unlink()
    names = zipfile.ZipFile(out).namelist()
    assert set(APP) <= set(names), "the entry point, host.json and the requirements ship"
    assert any(n.startswith("functions/") for n in names) and any(n.startswith("shared/") for n in names)
    strays = [n for n in names if n not in APP and not n.startswith(("functions/", "shared/"))]
    assert not strays, f"only the app ships: {strays}"
    assert not any(n.endswith((".pem", ".pyc")) or "__pycache__" in n for n in names)
    assert out.stat().st_size < 200 * 1024, f"{out.stat().st_size} bytes"
    assert build_package(tmp_path / "again.zip") == digest, "the same tree gives the same package (rerun skips it)"


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
