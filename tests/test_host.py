"""tools.host: the local stand-in for `func start`, tested against small FunctionApps built here."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import azure.functions as func
import pytest
import requests
import trustme

from tools import host

REPO = Path(__file__).resolve().parents[1]


def _json(data: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(data), status_code=status, mimetype="application/json")


def make_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="things/{id}", methods=["GET"])
    def get_thing(req: func.HttpRequest) -> func.HttpResponse:
        return _json(
            {
                "route": dict(req.route_params),
                "params": dict(req.params),
                "method": req.method,
                "url": req.url,
                "header": req.headers.get("x-demo"),
            }
        )

    @app.route(route="things/special", methods=["GET"])
    def special_thing(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("special")

    @app.route(route="items/{n:int}/{name?}", methods=[func.HttpMethod.GET])
    def constrained(req: func.HttpRequest) -> func.HttpResponse:
        return _json(dict(req.route_params))

    @app.route(route="echo", methods=["POST", "PUT"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        body = req.get_body()
        assert isinstance(body, bytes)
        return _json(
            {
                "body": body.decode("latin-1"),
                "form": dict(req.form),
                "content_type": req.headers.get("content-type"),
            }
        )

    @app.route(route=None, methods=["GET"])
    def unnamed_route(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("by name")

    @app.route(route="ctx", methods=["GET"])
    def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return _json(
            {
                "invocation_id": context.invocation_id,
                "function_name": context.function_name,
                "function_directory": context.function_directory,
            }
        )

    @app.route(route="cookies", methods=["GET"])
    def cookies(req: func.HttpRequest) -> func.HttpResponse:
        resp = func.HttpResponse(
            "two cookies",
            headers={
                "Set-Cookie": "__Host-flow=abc123; Path=/; Secure; HttpOnly; SameSite=None; Max-Age=600",
                "Cache-Control": "no-store",
            },
        )
        resp.headers.add("Set-Cookie", "other=x%3Dy; Path=/; HttpOnly; SameSite=Lax")
        resp.headers.add("X-Multi", "1")
        resp.headers.add("X-Multi", "2")
        return resp

    @app.route(route="boom", methods=["GET"])
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret-detail-in-exception")

    @app.route(route="redirect", methods=["GET"])
    def redirect(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(status_code=302, headers={"Location": "https://idp.example/authorize"})

    @app.route(route="async", methods=["GET"])
    async def async_fn(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("async ok")

    @app.route(route="anymethod")
    def any_method(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.method)

    @app.route(route="html", methods=["GET"])
    def html(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("<p>héllo</p>", mimetype="text/html")

    @app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
    def purge_flows(timer: func.TimerRequest) -> None:
        raise AssertionError("timers are not run by tools.host")

    bp = func.Blueprint()

    @bp.route(route="sso/{kind}/login", methods=["GET"])
    def sso_login(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(f"login {req.route_params['kind']}")

    @bp.route(route="sso/jwks.json", methods=["GET"])
    def sso_jwks(req: func.HttpRequest) -> func.HttpResponse:
        return _json({"keys": []})

    @bp.route(route="sso/{kind}/callback", methods=["GET", "POST"])
    def sso_callback(req: func.HttpRequest) -> func.HttpResponse:
        code = req.form.get("code") or req.params.get("code")
        return _json({"kind": req.route_params["kind"], "code": code})

    app.register_functions(bp)
    return app


@pytest.fixture
def session():
    s = requests.Session()
    s.trust_env = False  # no proxies, no CA bundle from the environment: we talk to 127.0.0.1 only
    yield s
    s.close()


@pytest.fixture
def server():
    wsgi = host.build_wsgi_app(make_app(), prefix="api", function_directory="/srv/app")
    handle = host.serve_in_thread(wsgi)
    yield handle
    handle.stop()


def test_route_and_query_params_reach_the_function(server, session):
    r = session.get(f"{server.url}/api/things/42?x=1&x=2&y=z%20w", headers={"X-Demo": "hi"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    data = r.json()
    assert data["route"] == {"id": "42"}
    assert data["params"] == {"x": "2", "y": "z w"}  # last value wins
    assert data["method"] == "GET"
    assert data["url"].startswith(f"{server.url}/api/things/42?")
    assert data["header"] == "hi"


def test_literal_route_wins_over_parameter(server, session):
    assert session.get(f"{server.url}/api/things/special").text == "special"
    assert session.get(f"{server.url}/api/things/other").json()["route"] == {"id": "other"}


def test_constraints_and_optional_parameters(server, session):
    assert session.get(f"{server.url}/api/items/7/bob").json() == {"n": "7", "name": "bob"}
    assert session.get(f"{server.url}/api/items/7").json() == {"n": "7"}
    assert session.get(f"{server.url}/api/items/seven").status_code == 404


def test_blueprint_routes(server, session):
    r = session.get(f"{server.url}/api/sso/agent/login")
    assert (r.status_code, r.text) == (200, "login agent")
    assert session.get(f"{server.url}/api/sso/jwks.json").json() == {"keys": []}
    r = session.post(f"{server.url}/api/sso/user/callback", data={"code": "c0de", "state": "s"})
    assert r.json() == {"kind": "user", "code": "c0de"}
    assert session.get(f"{server.url}/api/sso/user/callback?code=q").json() == {"kind": "user", "code": "q"}


def test_route_none_is_the_function_name(server, session):
    assert session.get(f"{server.url}/api/unnamed_route").text == "by name"


def test_body_and_form_post(server, session):
    raw = bytes(range(256))
    r = session.put(f"{server.url}/api/echo", data=raw, headers={"Content-Type": "application/octet-stream"})
    assert r.json()["body"].encode("latin-1") == raw

    r = session.post(f"{server.url}/api/echo", data={"code": "a b&c", "state": "xyz"})
    data = r.json()
    assert data["content_type"] == "application/x-www-form-urlencoded"
    assert data["body"] == "code=a+b%26c&state=xyz"
    assert data["form"] == {"code": "a b&c", "state": "xyz"}


def test_unknown_path_is_404(server, session):
    assert session.get(f"{server.url}/api/nope").status_code == 404
    assert session.get(f"{server.url}/things/1").status_code == 404  # the prefix is required
    assert session.get(f"{server.url}/api/sso/user/login/extra").status_code == 404


def test_wrong_method_is_405_with_allow(server, session):
    r = session.delete(f"{server.url}/api/things/1")
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET"
    r = session.get(f"{server.url}/api/echo")
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST, PUT"


def test_no_methods_means_every_method(server, session):
    assert session.delete(f"{server.url}/api/anymethod").text == "DELETE"
    assert session.patch(f"{server.url}/api/anymethod").text == "PATCH"


def test_context_is_passed(server, session):
    data = session.get(f"{server.url}/api/ctx").json()
    assert data["function_name"] == "with_context"
    assert data["function_directory"] == "/srv/app"
    assert len(data["invocation_id"]) == 36
    assert data["invocation_id"] != session.get(f"{server.url}/api/ctx").json()["invocation_id"]


def test_async_function(server, session):
    assert session.get(f"{server.url}/api/async").text == "async ok"


def test_every_header_and_every_set_cookie_arrive(server, session):
    r = session.get(f"{server.url}/api/cookies")
    assert r.status_code == 200
    cookies = r.raw.headers.getlist("Set-Cookie")
    assert cookies == [
        "__Host-flow=abc123; Path=/; Secure; HttpOnly; SameSite=None; Max-Age=600",
        "other=x%3Dy; Path=/; HttpOnly; SameSite=Lax",
    ]
    assert r.raw.headers.getlist("X-Multi") == ["1", "2"]
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_redirect_and_mimetype(server, session):
    r = session.get(f"{server.url}/api/redirect", allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"] == "https://idp.example/authorize"
    r = session.get(f"{server.url}/api/html")
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.content == "<p>héllo</p>".encode()


def test_exception_is_500_without_details(server, session, caplog):
    with caplog.at_level(logging.INFO, logger="tools.host"):
        r = session.get(f"{server.url}/api/boom")
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert "secret-detail" not in r.text and "Traceback" not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "Traceback" in logged and "secret-detail-in-exception" in logged


def test_access_log_has_no_query_string(server, session, caplog):
    with caplog.at_level(logging.INFO, logger="tools.host"):
        session.get(f"{server.url}/api/sso/user/callback?code=SECRETCODE&state=S")
    access = [rec.getMessage() for rec in caplog.records if rec.name == "tools.host"]
    assert any(line.startswith("GET /api/sso/user/callback 200 ") for line in access), access
    assert not any("SECRETCODE" in line for line in access)


def test_get_functions_called_once_and_timer_listed():
    app = make_app()
    calls = []
    original = app.get_functions

    def counting():
        calls.append(1)
        return original()

    app.get_functions = counting
    wsgi = host.build_wsgi_app(app, prefix="api")
    assert len(calls) == 1
    lines = wsgi.describe("https://127.0.0.1:7071")
    assert "  sso_login: [GET] https://127.0.0.1:7071/api/sso/{kind}/login" in lines
    assert "  sso_callback: [GET,POST] https://127.0.0.1:7071/api/sso/{kind}/callback" in lines
    assert "  timer: purge_flows (not scheduled by tools.host)" in lines
    assert "purge_flows" not in {r.function_name for r in wsgi.routes}


def _host_json(prefix: str) -> str:
    return json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": prefix}}})


def test_route_prefix_from_host_json(tmp_path):
    assert host.route_prefix(tmp_path) == "api"  # no host.json
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    assert host.route_prefix(tmp_path) == "api"
    (tmp_path / "host.json").write_text(_host_json("v1"))
    assert host.route_prefix(tmp_path) == "v1"
    (tmp_path / "host.json").write_text(_host_json(""))
    assert host.route_prefix(tmp_path) == ""


@pytest.mark.parametrize("prefix", ["", "v1/x"])
def test_other_prefixes_are_served(prefix, session):
    handle = host.serve_in_thread(host.build_wsgi_app(make_app(), prefix=prefix))
    try:
        base = f"{handle.url}/{prefix}" if prefix else handle.url
        assert session.get(f"{base}/things/5").json()["route"] == {"id": "5"}
        assert session.get(f"{base}/sso/jwks.json").status_code == 200
        assert session.get(f"{handle.url}/api/things/5").status_code == 404
    finally:
        handle.stop()


def test_local_settings_values_applied_but_process_env_wins(tmp_path):
    (tmp_path / "local.settings.json").write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {
                    "FUNCTIONS_WORKER_RUNTIME": "python",
                    "OIDC_CLIENT_ID": "from-file",
                    "EMPTY_IN_ENV": "from-file",
                    "PORT_NUMBER": 5,
                },
                "Host": {"LocalHttpPort": 7072},
            }
        )
    )
    environ = {"OIDC_CLIENT_ID": "from-env", "EMPTY_IN_ENV": ""}
    applied = host.load_local_settings(tmp_path, environ)
    assert applied == {"FUNCTIONS_WORKER_RUNTIME": "python", "PORT_NUMBER": "5"}
    assert environ == {
        "OIDC_CLIENT_ID": "from-env",
        "EMPTY_IN_ENV": "",
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "PORT_NUMBER": "5",
    }
    assert host.load_local_settings(tmp_path / "missing", environ) == {}


def test_local_settings_default_environ_is_os_environ(tmp_path, monkeypatch):
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"Values": {"TOOLS_HOST_TEST_A": "file", "TOOLS_HOST_TEST_B": "file"}})
    )
    monkeypatch.setenv("TOOLS_HOST_TEST_A", "env")
    monkeypatch.delenv("TOOLS_HOST_TEST_B", raising=False)
    try:
        assert host.load_local_settings(tmp_path) == {"TOOLS_HOST_TEST_B": "file"}
        assert os.environ["TOOLS_HOST_TEST_A"] == "env"
        assert os.environ["TOOLS_HOST_TEST_B"] == "file"
    finally:
        os.environ.pop("TOOLS_HOST_TEST_B", None)


def test_https_with_a_local_ca(tmp_path, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    wsgi = host.build_wsgi_app(make_app())
    handle = host.serve_in_thread(wsgi, ssl_context=(str(cert_file), str(key_file)))
    try:
        assert handle.url.startswith("https://127.0.0.1:")
        r = requests.get(f"{handle.url}/api/sso/user/login", verify=str(ca_file), timeout=10)
        assert (r.status_code, r.text) == (200, "login user")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{handle.url}/api/sso/user/login", verify=True, timeout=10)
    finally:
        handle.stop()


def test_help():
    out = subprocess.run(
        [sys.executable, "-m", "tools.host", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "--port" in out and "--cert" in out and "--app-dir" in out


FUNCTION_APP = """
import logging
import os

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    logging.info("health called")
    return func.HttpResponse(os.environ.get("GREETING", "") + "|" + os.environ.get("FROM_ENV", ""))


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer")
def purge_flows(timer: func.TimerRequest) -> None:
    pass
"""


def test_main_serves_an_app_dir(tmp_path, session):
    (tmp_path / "function_app.py").write_text(FUNCTION_APP)
    (tmp_path / "host.json").write_text(_host_json("p"))
    (tmp_path / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": {"GREETING": "hello", "FROM_ENV": "file"}})
    )
    env = {**os.environ, "FROM_ENV": "env", "PYTHONUNBUFFERED": "1"}
    env.pop("GREETING", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.host", "--app-dir", str(tmp_path), "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Serving on "):
                break
        out = "".join(lines)
        assert "  timer: purge_flows (not scheduled by tools.host)" in out, out
        health = next(line for line in lines if line.startswith("  health: [GET] http://127.0.0.1:"))
        url = health.split()[-1]
        assert url.endswith("/p/health")
        r = session.get(url + "?code=hidden", timeout=10)  # auth level function: no key asked
        assert (r.status_code, r.text) == (200, "hello|env")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "health called" in err
    assert "GET /p/health 200" in err
    assert "hidden" not in err
