"""The direction of dependencies: shared/ (the protocol core) knows nothing of the Functions host,
and function_app.py only registers blueprints, without reading a setting at import."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = sorted((ROOT / "shared").rglob("*.py"))


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_shared_modules_exist():
    assert len(SHARED) > 5, "the layering tests look at the real shared/ package"


def test_no_module_under_shared_imports_azure_functions():
    offenders = {str(p.relative_to(ROOT)): m for p in SHARED for m in imported_modules(p)
                 if m == "azure.functions" or m.startswith("azure.functions.")}
    assert not offenders, f"shared/ must not import the Functions host (azure.functions): {offenders}"


def test_no_module_under_shared_imports_the_functions_glue():
    offenders = {str(p.relative_to(ROOT)): m for p in SHARED for m in imported_modules(p)
                 if m == "functions" or m.startswith("functions.") or m == "function_app"}
    assert not offenders, f"shared/ must not depend on functions/ or function_app: {offenders}"


def test_function_app_imports_only_azure_functions_the_blueprints_and_the_worker_preparation():
    tree = ast.parse((ROOT / "function_app.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            assert [a.name for a in node.names] == ["azure.functions"], "function_app.py imports azure.functions"
        elif isinstance(node, ast.ImportFrom) and node.module == "shared.worker":
            assert [a.name for a in node.names] == ["ready"], "from shared.worker, only ready()"
        elif isinstance(node, ast.ImportFrom):
            assert node.module and node.module.startswith("functions."), \
                f"function_app.py imports only blueprints from functions/, not {node.module}"
            assert all(a.name == "bp" for a in node.names), "only the blueprint objects are imported"


def call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else "?"


def test_function_app_does_nothing_but_register_blueprints():
    tree = ast.parse((ROOT / "function_app.py").read_text())
    calls = []
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and index == 0:
            continue  # the docstring
        assert isinstance(node, ast.Import | ast.ImportFrom | ast.Assign | ast.Expr), \
            f"function_app.py line {node.lineno}: only imports, the app and registrations belong here"
        if isinstance(node, ast.Assign | ast.Expr):
            calls += [call_name(c) for c in ast.walk(node) if isinstance(c, ast.Call)]
    assert "FunctionApp" in calls, "function_app.py makes the FunctionApp"
    assert "register_functions" in calls, "function_app.py registers the blueprints"
    assert calls[-1:] == ["ready"], "function_app.py prepares the worker once, after every registration"
    unexpected = [c for c in calls if c not in ("FunctionApp", "register_functions", "ready")]
    assert not unexpected, f"function_app.py calls nothing but FunctionApp, register_functions, ready: {unexpected}"


def test_importing_function_app_with_an_empty_environment_reads_no_setting():
    # An exception at import shows in Azure only as "no functions found": settings are read on first use.
    result = subprocess.run([sys.executable, "-c", "import function_app; print(type(function_app.app).__name__)"],
                            cwd=ROOT, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"importing function_app must not fail without settings:\n{result.stderr}"
    assert result.stdout.strip() == "FunctionApp", "function_app.app is the FunctionApp"


# Directory sync (shared/scim/) sits beside the login: both use the accounts store, neither through
# the other. The setup page (diagnostics.py) asks it for data and the timer's purge (maintenance.py)
# purges its audit rows: the only modules outside it that use it.
SCIM_CALLERS = {"shared/diagnostics.py", "shared/maintenance.py"}


def test_the_login_modules_never_import_directory_sync():
    offenders = {}
    for path in SHARED:
        relative = str(path.relative_to(ROOT))
        if relative.startswith("shared/scim/") or relative in SCIM_CALLERS:
            continue
        tree = ast.parse(path.read_text(), filename=relative)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                    (node.level == 0 and (node.module or "").startswith("shared.scim"))
                    or (node.level == 1 and ((node.module or "").startswith("scim")
                                             or any(a.name == "scim" for a in node.names)))):
                offenders[relative] = node.module or "scim"
            elif isinstance(node, ast.Import) and any(a.name.startswith("shared.scim") for a in node.names):
                offenders[relative] = "shared.scim"
    assert not offenders, f"login modules must not import shared.scim: {offenders}"
    for name in ("functions/sso.py", "functions/ops.py", "functions/maintenance.py"):
        assert "shared.scim" not in (ROOT / name).read_text(), f"{name} does not reach into directory sync"
