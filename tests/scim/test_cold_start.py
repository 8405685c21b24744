"""Directory sync does not grow every worker's start: its libraries (scim2-models, scim2-server,
pydantic, lark) load on the first SCIM request, not when function_app is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("scim2_models", "scim2_server", "pydantic", "pydantic_core", "lark", "email_validator")


def loaded_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_function_app_loads_no_scim_library():
    modules = loaded_after("import function_app")
    assert "function_app" in modules and "shared" in modules
    assert not modules & set(HEAVY), f"loaded at import: {sorted(modules & set(HEAVY))}"


def test_the_first_scim_request_loads_them():
    """The probe above can fail: here the same check sees them once a request reaches the protocol."""
    modules = loaded_after("import function_app\nfrom shared.scim.service import _State\n"
                           "_State(type('R', (), {'env': {}})()).engine()")
    assert {"scim2_models", "scim2_server", "pydantic"} <= modules
