"""What the remote build installs: `pip download` of requirements.txt, binary wheels only, for the Linux
platform Azure builds on, for each Python the deploy script offers (3.11, 3.12 default, 3.13). Each runs
under that Python itself (pyenv's), because pip evaluates environment markers (the azure-functions pin
differs for 3.13) against the interpreter that runs it."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from tools.deploy import PYTHON_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def interpreter(version: str) -> Path:
    found = sorted(PYENV.glob(f"{version}.*/bin/python"))
    assert found, f"Python {version} is missing under {PYENV} (pyenv install {version})"
    return found[-1]


def pins(version: str) -> dict[str, str]:
    """requirements.txt's pins for that Python (markers evaluated), by canonical name."""
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line := line.split("#", 1)[0].strip():
            wanted = Requirement(line)
            if wanted.marker is None or wanted.marker.evaluate({"python_version": version}):
                assert str(wanted.specifier).startswith("=="), f"not pinned: {line}"
                found[canonicalize_name(wanted.name)] = str(wanted.specifier)[2:]
    return found


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Per offered Python: the wheels the remote build would install, name -> version."""
    where = tmp_path_factory.mktemp("wheels")

    def download(version: str) -> tuple[str, subprocess.CompletedProcess]:
        return version, subprocess.run(
            [str(interpreter(version)), "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--python-version", version,
             "-r", str(ROOT / "requirements.txt"), "-d", str(where / version)],
            capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(len(PYTHON_VERSIONS)) as pool:
        results = dict(pool.map(download, PYTHON_VERSIONS))
    failed = {v: r.stderr.strip().splitlines()[-3:] for v, r in results.items() if r.returncode != 0}
    assert not failed, f"the remote build would fail on: {failed}"
    return {version: {str(name): str(wheel_version) for name, wheel_version, *_ in
                      (parse_wheel_filename(p.name) for p in (where / version).glob("*.whl"))}
            for version in PYTHON_VERSIONS}


@pytest.mark.timeout(600)
def test_requirements_install_from_wheels_on_every_offered_python(downloaded):
    for version in PYTHON_VERSIONS:
        assert {"azure-functions", "msal", "cryptography", "azure-monitor-opentelemetry",
                "scim2-server", "scim2-models", "pydantic-core"} <= set(downloaded[version]), (version, downloaded)
    expected = {"3.11": "1.26.0", "3.12": "1.26.0", "3.13": "2.3.0"}
    for version, pin in expected.items():
        assert downloaded[version]["azure-functions"] == pin, f"Python {version} gets {pin}"


@pytest.mark.timeout(600)
def test_requirements_pin_everything_the_remote_build_installs(downloaded):
    """"Pinned so a deploy is reproducible" held for 15 of the 60 distributions installed: azure-core (whose
    RetryPolicy shared/transport.py subclasses), werkzeug, cffi, certifi and ~20 opentelemetry-* floated to
    whatever PyPI had newest at each build. Now every one is pinned, and pinned alone: nothing pinned that
    the build does not install."""
    for version in PYTHON_VERSIONS:
        got, pinned = downloaded[version], pins(version)
        assert got == pinned, (f"Python {version}: unpinned {sorted(got.keys() - pinned.keys())}, pinned but not "
                               f"installed {sorted(pinned.keys() - got.keys())}, other versions "
                               f"{sorted(k for k in got.keys() & pinned.keys() if got[k] != pinned[k])}")
