"""The app under the real Python worker library: azure-functions-runtime, which the platform's Python 3.13
worker loads, in its own Python 3.13 venv (`make worker-venv`) with the app's requirements as Azure installs
them there (azure-functions 2.x). Driven through WorkerInit, FunctionsMetadata, FunctionLoad and an
Invocation of each HTTP route and of the timer (tests/deploy/worker_driver.py), against Azurite and the
dev IdP: every function is indexed with its route, methods, auth level and schedule, and a login start
answers 302 with the flow cookie, its table calls sending the invocation id as x-ms-client-request-id."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER_PYTHON = Path(os.environ.get("PORTAL_SSO_WORKER_PYTHON",
                                    Path.home() / ".cache/portal-sso/worker-py313/bin/python"))


def test_every_function_is_indexed_loaded_and_invoked_by_the_python_313_worker(app_env, idp, demo_accounts):
    assert WORKER_PYTHON.exists(), f"the worker's Python 3.13 venv is made by `make worker-venv` ({WORKER_PYTHON})"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}, **app_env,
           "FUNCTIONS_WORKER_RUNTIME": "python"}
    done = subprocess.run([str(WORKER_PYTHON), str(ROOT / "tests/deploy/worker_driver.py"), str(ROOT)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["python"].startswith("3.13"), out["python"]
    assert out["init"]["status"] == "Success", out["init"]
    functions = out["functions"]
    assert {name: (f["route"], f["authLevel"]) for name, f in functions.items() if f["trigger"] == "httpTrigger"} == {
        "sso_login": ("sso/{kind}/login", "ANONYMOUS"), "sso_callback": ("sso/{kind}/callback", "ANONYMOUS"),
        "sso_logout": ("sso/{kind}/logout", "ANONYMOUS"), "sso_signed_out": ("sso/{kind}/signed-out", "ANONYMOUS"),
        "sso_jwks": ("sso/jwks.json", "ANONYMOUS"),
        "sso_setup": ("sso/setup", "FUNCTION"), "health": ("health", "FUNCTION"),
        "scim_root": ("scim/v2", "ANONYMOUS"), "scim": ("scim/v2/{*path}", "ANONYMOUS")}, functions
    # no methods as the platform's worker indexes them: Azure's host then routes every method to the function
    assert [f["methods"] for f in functions.values() if f["trigger"] == "httpTrigger" and f["methods"]] == []
    assert functions["purge_expired_rows"]["trigger"] == "timerTrigger"
    assert functions["purge_expired_rows"]["schedule"] == "0 */15 * * * *"
    assert {f["loaded"] for f in functions.values()} == {"Success"}

    calls = out["invocations"]
    assert {name: c["status"] for name, c in calls.items()} == dict.fromkeys(calls, "Success"), calls
    login = calls["sso_login"]
    assert login["http_status"] == "302", login
    location = {k.lower(): v for k, v in login["headers"].items()}["location"]
    assert location.startswith(idp.issuer) and "response_mode=form_post" in location, "off to the IdP"
    # The worker turns Set-Cookie into cookie messages: the flags must survive that, SameSite=None sent.
    flow_cookies = [{**c, "name": "__Host-portal-sso-user-<state>"} for c in login["cookies"]
                    if c["name"].startswith("__Host-portal-sso-user-")]  # one cookie per login in flight
    assert flow_cookies == [{"name": "__Host-portal-sso-user-<state>", "path": "/", "secure": True, "http_only": True,
                             "same_site": "ExplicitNone"}], f"the flow cookie goes out as set: {login['cookies']}"
    # Its table calls (the flow's marker) send the invocation's id, which the worker runs it under.
    assert login["client_request_ids"] == [login["invocation_id"]], login["client_request_ids"]
    assert calls["sso_callback"]["http_status"] == "400" and "Correlation ID" in calls["sso_callback"]["body"]
    assert calls["sso_logout"]["http_status"] == "302"
    assert calls["sso_signed_out"]["http_status"] == "200" and "You are signed out" in calls["sso_signed_out"]["body"]
    assert calls["sso_jwks"]["http_status"] == "200" and '"keys"' in calls["sso_jwks"]["body"]
    assert calls["sso_setup"]["http_status"] == "200" and "Redirect URIs" in calls["sso_setup"]["body"]
    assert calls["health"]["http_status"] == "200", calls["health"]
    assert calls["scim"]["http_status"] == "404" and "scim:api:messages" in calls["scim"]["body"]
