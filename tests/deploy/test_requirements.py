"""What the remote build installs: `pip download` of requirements.txt, binary wheels only, for the Linux
platform Azure builds on, for each Python the deploy script offers (3.11, 3.12 default, 3.13). Each runs
under that Python itself (pyenv's), because pip evaluates environment markers (the azure-functions pin
differs for 3.13) against the interpreter that runs it."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.deploy import PYTHON_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def interpreter(version: str) -> Path:
    found = sorted(PYENV.glob(f"{version}.*/bin/python"))
    assert found, f"Python {version} is missing under {PYENV} (pyenv install {version})"
    return found[-1]


def test_requirements_install_from_wheels_on_every_offered_python(tmp_path):
    def download(version: str) -> tuple[str, subprocess.CompletedProcess]:
        return version, subprocess.run(
            [str(interpreter(version)), "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--python-version", version,
             "-r", str(ROOT / "requirements.txt"), "-d", str(tmp_path / version)],
            capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(len(PYTHON_VERSIONS)) as pool:
        results = dict(pool.map(download, PYTHON_VERSIONS))
    failed = {v: r.stderr.strip().splitlines()[-3:] for v, r in results.items() if r.returncode != 0}
    assert not failed, f"the remote build would fail on: {failed}"
    for version in PYTHON_VERSIONS:
        wheels = {p.name.split("-")[0].lower() for p in (tmp_path / version).glob("*.whl")}
        assert {"azure_functions", "msal", "cryptography", "azure_monitor_opentelemetry",
                "scim2_server", "scim2_models", "pydantic_core"} <= wheels, (version, wheels)
    expected = {"3.11": "1.26.0", "3.12": "1.26.0", "3.13": "2.3.0"}
    for version, pin in expected.items():
        assert list((tmp_path / version).glob(f"azure_functions-{pin}-*.whl")), f"Python {version} gets {pin}"
