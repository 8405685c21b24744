"""The functions function_app.py registers, as Azure indexes them: routes, methods, auth levels (SPEC)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# get_functions() may be called once per FunctionApp, so the index is read in a fresh interpreter.
INDEX = """
import json, function_app
out = {}
for fn in function_app.app.get_functions():
    out[fn.get_function_name()] = json.loads(fn.get_function_json())["bindings"]
print(json.dumps(out))
"""


def indexed() -> dict:
    done = subprocess.run([sys.executable, "-c", INDEX], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, f"function_app must index without any setting: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


def test_routes_auth_levels_and_the_timer_are_as_spec_says():
    functions = indexed()
    http = {name: next(b for b in bindings if b["type"] == "httpTrigger") for name, bindings in functions.items()
            if any(b["type"] == "httpTrigger" for b in bindings)}
    routes = {trigger["route"]: trigger["authLevel"].lower() for trigger in http.values()}
    assert routes == {
        "sso/{kind}/login": "anonymous", "sso/{kind}/callback": "anonymous", "sso/{kind}/logout": "anonymous",
        "sso/{kind}/signed-out": "anonymous",
        "sso/jwks.json": "anonymous", "sso/setup": "function", "health": "function",
        # Directory sync: anonymous in Azure, the bearer token checked by shared/scim/auth.py
        "scim/v2": "anonymous", "scim/v2/{*path}": "anonymous",
    }, "SPEC's route table: the operator routes need a function key, the sign-in routes none"
    timers = [b for bindings in functions.values() for b in bindings if b["type"] == "timerTrigger"]
    assert len(timers) == 1 and timers[0]["runOnStartup"] is False, "one purge timer, not run on every scale-out"


def test_no_http_trigger_names_its_methods_so_azure_routes_every_method_to_the_function():
    """With a `methods` list Azure's host adds a method constraint to the route: any method outside it
    (TRACE, PROPFIND, even one the list names by another spelling) matched no route and got the host's
    own empty 404, no page, no correlation id, no SCIM body or row. Without one, every method reaches
    the function, which answers 405 itself (functions/http.py http_route)."""
    triggers = {name: next(b for b in bindings if b["type"] == "httpTrigger") for name, bindings in indexed().items()
                if any(b["type"] == "httpTrigger" for b in bindings)}
    assert triggers and {name: t.get("methods") for name, t in triggers.items() if t.get("methods")} == {}
