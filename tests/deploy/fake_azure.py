"""Running scripts/deploy and scripts/register-app against the fake az (tests/deploy/fake_az.py). (Not named
azure.py: worker_driver.py runs from this folder, where that name would shadow the azure package.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).with_name("fake_az.py")
DEPLOY_ARGS = ["--resource-group", "rg-sso", "--location", "westeurope", "--app", "contoso-sso",
               "--portal-user-url", "https://portal.contoso.test/sso/user",
               "--portal-agent-url", "https://portal.contoso.test/sso/agent"]
APP_ARGS = ["--resource-group", "rg-sso", "--app", "contoso-sso"]
# az verbs that change things
MUTATING = {"create", "set", "set-attributes", "update", "assign", "delete", "reset", "config-zip"}


@dataclass
class Result:
    code: int
    out: str
    err: str
    calls: list[dict]  # what the fake az recorded during this run

    @property
    def commands(self) -> list[str]:
        return [" ".join(c["argv"]) for c in self.calls]

    @property
    def mutations(self) -> list[str]:
        """The calls that create or change something: a changing verb, or `az rest` with a writing method."""
        changing = []
        for call in self.calls:
            argv = call["argv"]
            first_option = next((i for i, word in enumerate(argv) if word.startswith("-")), len(argv))
            if (first_option and argv[first_option - 1] in MUTATING) or {"POST", "PUT", "PATCH", "DELETE"} & set(argv):
                changing.append(" ".join(argv))
        return changing


class FakeAzure:
    """A directory with a fake `az` on PATH and the state it answers from."""

    def __init__(self, tmp: Path):
        self.bin, self.state_path, self.log_path = tmp / "bin", tmp / "state.json", tmp / "az-calls.jsonl"
        self.bin.mkdir(parents=True)
        az = self.bin / "az"
        # -S: no site, whose .pth files (the editable install's finder) were a third of each call's start; the fake
        # needs only the standard library (and adds site where it needs cryptography)
        az.write_text(f"#!/bin/sh\nexec {sys.executable} -S {FAKE} \"$@\"\n")
        az.chmod(0o755)
        self.all_calls: list[dict] = []

    @property
    def state(self) -> dict:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    @state.setter
    def state(self, value: dict) -> None:
        self.state_path.write_text(json.dumps(value))

    def run(self, script: str, *args: str, path_has_az: bool = True, root: Path = ROOT) -> Result:
        """`root`: the copy of the repository whose script runs (this one by default)."""
        self.log_path.write_text("")
        env = {**os.environ, "FAKE_AZ_STATE": str(self.state_path), "FAKE_AZ_LOG": str(self.log_path),
               "PATH": (f"{self.bin}:" if path_has_az else "") + "/usr/bin:/bin"}
        done = subprocess.run([str(root / "scripts" / script), *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=120)
        calls = [json.loads(line) for line in self.log_path.read_text().splitlines()]
        self.all_calls += calls
        return Result(done.returncode, done.stdout, done.stderr, calls)
