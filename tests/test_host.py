"""tools.host: what `func start` does for this app, on a small FunctionApp built here (the real app through
the host is tests/integration/test_host_cli.py and every other integration test)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import azure.functions as func
import pytest
import requests

from tools import host
from tools.local_settings import load_local_settings, local_http_port
from tools.stack import free_port

REPO = Path(__file__).resolve().parents[1]


def make_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    bp = func.Blueprint()

    @bp.route(route="sso/{kind}/callback", methods=["GET", "POST"])
    def callback(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({
            "kind": req.route_params["kind"], "params": dict(req.params), "form": dict(req.form),
            "header": req.headers.get("x-demo"), "function": context.function_name,
            "invocation_id": context.invocation_id}), mimetype="application/json")

    @bp.route(route="sso/jwks.json", methods=["GET"])
    def jwks(req: func.HttpRequest) -> func.HttpResponse:
        response = func.HttpResponse("<p>héllo</p>", mimetype="text/html", headers={"Cache-Control": "no-store"})
        response.headers.add("Set-Cookie", "__Host-flow=abc; Path=/; Secure; HttpOnly")
        response.headers.add("Set-Cookie", "other=x%3Dy; Path=/")
        return response

    @bp.route(route="files/{*rest}", methods=["GET"])
    def files(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps(dict(req.route_params)), mimetype="application/json")

    @bp.route(route="boom", methods=["GET"])
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret-detail-in-exception")

    @app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
    def purge(timer: func.TimerRequest) -> None:
        raise AssertionError("timers are not run by tools.host")

    app.register_functions(bp)
    return app


@pytest.fixture
def session():
    with requests.Session() as s:
        s.trust_env = False  # no proxy, no CA bundle from the environment: 127.0.0.1 only
        yield s


@pytest.fixture
def server():
    handle = host.serve_in_thread(host.build_wsgi_app(make_app()))
    yield handle
    handle.stop()


def test_routes_params_form_headers_and_context(server, session):
    assert server.url.startswith("http://127.0.0.1:"), "plain HTTP on loopback, like func start"
    r = session.post(f"{server.url}/api/sso/agent/callback?x=1&x=2", data={"code": "a b&c"}, headers={"X-Demo": "hi"})
    assert (r.status_code, r.headers["Content-Type"]) == (200, "application/json")
    data = r.json()
    assert {k: data[k] for k in ("kind", "params", "form", "header", "function")} == {
        "kind": "agent", "params": {"x": "1,2"}, "form": {"code": "a b&c"}, "header": "hi", "function": "callback"}
    # ^ a repeated parameter as Azure's host passes it (StringValues joined with commas), not its last value
    r = session.get(f"{server.url}/api/sso/agent/callback?iss=&code=abc&a=&a=")
    assert r.json()["params"] == {"code": "abc", "a": ","}, "a parameter with no value is left out, as Azure does"
    assert len(data["invocation_id"]) == 36
    assert data["invocation_id"] != session.get(f"{server.url}/api/sso/agent/callback").json()["invocation_id"]


def test_every_header_and_every_set_cookie_arrive(server, session):
    r = session.get(f"{server.url}/api/sso/jwks.json")
    assert r.raw.headers.getlist("Set-Cookie") == ["__Host-flow=abc; Path=/; Secure; HttpOnly", "other=x%3Dy; Path=/"]
    assert (r.headers["Cache-Control"], r.headers["Content-Type"]) == ("no-store", "text/html; charset=utf-8")
    assert r.content == "<p>héllo</p>".encode()


def test_unknown_path_is_404_and_wrong_method_405_with_allow(server, session):
    for path in ("/api/nope", "/sso/jwks.json", "/api/sso/user/callback/extra", "/api//sso/jwks.json"):
        assert session.get(server.url + path, allow_redirects=False).status_code == 404, path
    r = session.delete(f"{server.url}/api/sso/jwks.json")
    assert (r.status_code, r.headers["Allow"]) == (405, "GET"), "the methods the function's trigger names"
    r = session.delete(f"{server.url}/api/sso/user/callback")
    assert (r.status_code, sorted(r.headers["Allow"].split(", "))) == (405, ["GET", "POST"])


def test_a_catch_all_takes_every_remainder_even_one_that_starts_with_a_slash(server, session):
    """`{*name}` takes the rest of the path as it is: werkzeug's path converter wants a first character
    other than `/`, so /api/scim/v2//Users got the host's 404 and never reached the SCIM service (its
    bearer check, its SCIM 404, its audit row)."""
    for rest in ("a", "a/b/", "/x", "//", "/a//b"):
        r = session.get(f"{server.url}/api/files/{rest}", allow_redirects=False)
        assert (r.status_code, r.json()) == (200, {"rest": rest}), rest
    assert session.get(f"{server.url}/api//files/a", allow_redirects=False).status_code == 404, "only the remainder"


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def guarded_app() -> func.FunctionApp:
    """The app's own way (functions/http.py): the trigger takes every method the platform knows and the
    function answers 405 to those it does not serve."""
    from functions.http import http_route

    app, bp = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS), func.Blueprint()

    @http_route(bp, "sso/setup", ["GET"], func.AuthLevel.FUNCTION)
    def setup(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return func.HttpResponse("ok")

    app.register_functions(bp)
    return app


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "DELETE"])
def test_a_method_no_trigger_takes_gets_the_apps_own_405_with_the_served_methods(method, session):
    handle = host.serve_in_thread(host.build_wsgi_app(guarded_app()))
    try:
        r = session.request(method, f"{handle.url}/api/sso/setup")
    finally:
        handle.stop()
    assert (r.status_code, r.headers["Allow"]) == (405, "GET"), "the route serves GET only"
    assert "<h1>Method not allowed</h1>" in r.text and "Correlation ID" in r.text and "Werkzeug" not in r.text
    assert r.headers["Cache-Control"] == "no-store" and "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_the_access_line_escapes_the_method_as_it_quotes_the_path(server, caplog):
    with caplog.at_level(logging.INFO, logger="tools.host"):
        raw_request(server.port, b"X\x1b[31mFAKE /api/sso/jwks.json HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    (line,) = [r.getMessage() for r in caplog.records if "/api/sso/jwks.json" in r.getMessage()]
    assert "\x1b" not in line and line.startswith('"X\\x1b[31MFAKE" /api/sso/jwks.json 405 '), repr(line)


def test_an_unknown_path_gets_the_apps_own_404_page_not_werkzeugs(server, session):
    r = session.get(f"{server.url}/api/no/such/page?code=SECRETCODE")
    assert (r.status_code, r.headers["Content-Type"]) == (404, "text/html; charset=utf-8")
    assert "<h1>Not found</h1>" in r.text and "<main>" in r.text and "Correlation ID" in r.text
    assert "Werkzeug" not in r.text and "The requested URL was not found" not in r.text
    assert "SECRETCODE" not in r.text
    assert r.headers["Cache-Control"] == "no-store" and "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_exception_is_500_without_details_and_the_log_has_no_query(server, session, caplog):
    with caplog.at_level(logging.INFO, logger="tools.host"):
        r = session.get(f"{server.url}/api/boom?code=SECRETCODE")
    assert (r.status_code, r.text) == (500, "Internal Server Error")
    logged = "\n".join(rec.getMessage() + (rec.exc_text or "") for rec in caplog.records)
    assert "secret-detail-in-exception" in logged and "Traceback" in logged
    assert "GET /api/boom 500 " in logged and "SECRETCODE" not in logged


def port_recording_app(ports: list[int]):
    """The host's WSGI app, noting the client port of each request: one port, one connection."""
    wsgi = host.build_wsgi_app(make_app())

    def recording(environ, start_response):
        ports.append(environ["REMOTE_PORT"])
        return wsgi(environ, start_response)

    return recording


def test_keep_alive_one_connection_for_several_requests(session):
    ports: list[int] = []
    handle = host.serve_in_thread(port_recording_app(ports))
    try:
        # A body the app reads, one it does not (404), then a GET: each request must start where it should.
        assert session.post(f"{handle.url}/api/sso/user/callback", data={"code": "c"}).json()["form"] == {"code": "c"}
        assert session.post(f"{handle.url}/api/nope", data="x" * 10_000).status_code == 404
        r = session.get(f"{handle.url}/api/sso/user/callback?code=q")
        assert r.json()["params"] == {"code": "q"} and "close" not in r.headers.get("Connection", "")
        assert len(ports) == 3 and len(set(ports)) == 1, f"one connection for all: {ports}"
    finally:
        handle.stop()
    with pytest.raises(requests.ConnectionError):  # stop() closes the kept-alive connection too
        session.get(f"{handle.url}/api/sso/jwks.json", timeout=5)


def test_https_with_the_test_ca_keeps_connections_alive(test_ca, session):
    ports: list[int] = []
    handle = host.serve_in_thread(port_recording_app(ports),
                                  ssl_context=(str(test_ca.server_cert), str(test_ca.server_key)))
    try:
        assert handle.url.startswith("https://127.0.0.1:")
        for _ in range(2):
            assert session.get(f"{handle.url}/api/sso/jwks.json", verify=str(test_ca.ca_cert)).status_code == 200
        assert len(ports) == 2 and len(set(ports)) == 1
        with requests.Session() as untrusting, pytest.raises(requests.exceptions.SSLError):
            untrusting.trust_env = False  # only the public CAs, not the test CA of the environment
            untrusting.get(f"{handle.url}/api/sso/jwks.json", timeout=10)
    finally:
        handle.stop()


def test_a_client_that_never_starts_tls_holds_its_own_thread_not_the_whole_host(test_ca, session, monkeypatch):
    """werkzeug wrapped the listening socket with do_handshake_on_connect=True: the handshake ran inside
    accept() on the serving thread, without a timeout, so one TCP connection that sent no ClientHello
    stopped every other client. The handshake now runs in the handler thread, under its timeout."""
    monkeypatch.setattr(host._RequestHandler, "timeout", 1)  # the handler's bound, short enough for a test
    handle = host.serve_in_thread(host.build_wsgi_app(make_app()),
                                  ssl_context=(str(test_ca.server_cert), str(test_ca.server_key)))
    try:
        with socket.create_connection(("127.0.0.1", handle.port), timeout=10) as idle:
            time.sleep(0.2)  # accepted before the next client comes
            r = session.get(f"{handle.url}/api/sso/jwks.json", verify=str(test_ca.ca_cert), timeout=3)
            assert r.status_code == 200, "another client is served beside the silent one"
            started = time.monotonic()
            assert idle.recv(100) == b"", "the silent connection is closed at the handler's timeout"
            assert time.monotonic() - started < 5
    finally:
        handle.stop()


def test_get_functions_called_once_and_the_timer_listed_not_run():
    app, calls = make_app(), []
    original = app.get_functions
    app.get_functions = lambda: calls.append(1) or original()
    lines = host.build_wsgi_app(app).describe("http://127.0.0.1:7071")
    assert len(calls) == 1
    assert "  callback: [GET,POST] http://127.0.0.1:7071/api/sso/{kind}/callback" in lines
    assert "  purge: timerTrigger (not run by tools.host)" in lines
    assert "  files: [GET] http://127.0.0.1:7071/api/files/{*rest}" in lines, "a catch-all as the app declares it"


def test_the_url_an_ipv6_host_is_served_on_has_its_brackets():
    handle = host.serve_in_thread(make_app_wsgi(), host="::1")
    try:
        assert handle.url == f"http://[::1]:{handle.port}"
    finally:
        handle.stop()


def make_app_wsgi():
    return host.build_wsgi_app(make_app())


def test_route_prefix_from_host_json(tmp_path, session):
    assert host.route_prefix(tmp_path) == "api"  # no host.json
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0"}))
    assert host.route_prefix(tmp_path) == "api"
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": "/v1/"}}}))
    assert host.route_prefix(tmp_path) == "v1"
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": ""}}}))
    assert host.route_prefix(tmp_path) == ""
    handle = host.serve_in_thread(host.build_wsgi_app(make_app(), prefix=""))
    try:
        assert session.get(f"{handle.url}/sso/jwks.json").status_code == 200
        assert session.get(f"{handle.url}/api/sso/jwks.json").status_code == 404
    finally:
        handle.stop()


def test_local_settings_fill_what_the_environment_does_not_set(tmp_path):
    (tmp_path / "local.settings.json").write_text(json.dumps({
        "IsEncrypted": False, "Host": {"LocalHttpPort": 7072},
        "Values": {"FROM_FILE": "file", "SET_IN_ENV": "file", "EMPTY_IN_ENV": "file", "NUMBER": 5, "FLAG": True}}))
    environ = {"SET_IN_ENV": "env", "EMPTY_IN_ENV": ""}
    # Core Tools (StartHostAction.UpdateEnvironmentVariables) lets the file fill a variable that is unset
    # or empty (string.IsNullOrEmpty): only a value in the environment wins over the file.
    applied = {"FROM_FILE": "file", "EMPTY_IN_ENV": "file", "NUMBER": "5", "FLAG": "true"}
    assert load_local_settings(tmp_path, environ) == applied
    assert environ == {"SET_IN_ENV": "env", **applied}
    assert local_http_port(tmp_path) == 7072
    assert load_local_settings(tmp_path / "missing", environ) == {} and local_http_port(tmp_path / "missing") is None
    named = tmp_path / "elsewhere.json"  # tools.host --settings: a file of another name
    named.write_text('{"Values": {"FROM_NAMED": "yes"}, "Host": {"LocalHttpPort": 7073}}')
    assert load_local_settings(named, {}) == {"FROM_NAMED": "yes"} and local_http_port(named) == 7073
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": True, "Values": {"A": "x"}}))
    with pytest.raises(SystemExit, match="IsEncrypted"):
        load_local_settings(tmp_path, {})


def test_local_settings_may_hold_comments_as_core_tools_allows(tmp_path):
    """Core Tools parses the file with Newtonsoft's JObject.Parse, which skips // and /* */ comments:
    a file that works with `func start` works here, and text in strings is never taken for one."""
    (tmp_path / "local.settings.json").write_text("""// made by hand
{
  "IsEncrypted": false, /* plain values */
  "Values": {
    "URL": "https://login.example/common/v2.0", // a URL holds "//"
    "GLOB": "a/*b*/c", "QUOTE": "say \\"//\\" /* not */",
    /* "OFF": "commented out", */
    "LAST": "x" /* no newline after */ },
  "Host": {"LocalHttpPort": 7073}  // end
}
""")
    environ: dict[str, str] = {}
    assert load_local_settings(tmp_path, environ) == {
        "URL": "https://login.example/common/v2.0", "GLOB": "a/*b*/c", "QUOTE": 'say "//" /* not */', "LAST": "x"}
    assert local_http_port(tmp_path) == 7073
    (tmp_path / "local.settings.json").write_text('{"Values": {"A": "x"}} /* never closed')
    with pytest.raises(SystemExit, match="not valid JSON"):
        load_local_settings(tmp_path, {})


@pytest.mark.parametrize(("section", "says"), [
    ({"LocalHttpPort": "70x1"}, "Host.LocalHttpPort"),
    ({"LocalHttpPort": 70000}, "Host.LocalHttpPort"),
    ({"LocalHttpPort": True}, "Host.LocalHttpPort"),
    ("7071", "Host"),
    ([7071], "Host"),
])
def test_a_wrong_host_section_is_a_clear_error(tmp_path, section, says):
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {}, "Host": section}))
    with pytest.raises(SystemExit, match=says):
        load_local_settings(tmp_path, {})
    with pytest.raises(SystemExit, match=says):
        local_http_port(tmp_path)


def test_a_wrong_values_section_is_named_without_quoting_what_it_holds(tmp_path):
    """The message quoted the section as JSON: a Values written as a list of NAME=value lines printed
    the storage key of its connection string to the terminal (and to a CI log)."""
    listed = ["TABLES_CONNECTION_STRING=AccountKey=S3CRET"]
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": listed}))
    with pytest.raises(SystemExit, match="Values must be an object, not an array") as refused:
        load_local_settings(tmp_path, {})
    assert "S3CRET" not in str(refused.value)


def test_a_settings_file_that_is_not_utf8_is_a_clear_error_not_a_traceback(tmp_path):
    (tmp_path / "local.settings.json").write_bytes(b'{"Values": {"NAME": "caf\xe9"}}')  # Latin-1
    with pytest.raises(SystemExit, match="not UTF-8 text"):
        load_local_settings(tmp_path, {})


def test_local_http_port_as_core_tools_reads_it(tmp_path):
    for section, port in (({"LocalHttpPort": "7074"}, 7074), ({"LocalHttpPort": 7075}, 7075), ({}, None), (None, None)):
        (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {}, "Host": section}))
        assert local_http_port(tmp_path) == port, section


def test_the_command_says_what_is_wrong_in_local_settings_without_a_traceback(tmp_path):
    (tmp_path / "function_app.py").write_text(FUNCTION_APP)
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {}, "Host": {"LocalHttpPort": "70x1"}}))
    done = subprocess.run([sys.executable, "-m", "tools.host", "--app-dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "local.settings.json: Host.LocalHttpPort" in done.stderr and "70x1" in done.stderr, done.stderr



@pytest.mark.parametrize("port", ["99999", "-1", "abc"])
def test_a_port_no_socket_can_have_is_refused_by_name(port, capsys):
    """`--port 99999` served on 34463 (the socket takes the port modulo 65536) without a word."""
    with pytest.raises(SystemExit) as stopped:
        host.main(["--port", port])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "--port" in err and "0 to 65535" in err and "Traceback" not in err, err


@pytest.mark.parametrize("name", ["missing.json", "no-such-dir"])
def test_a_settings_file_named_on_the_command_line_that_is_not_there_is_an_error_not_ignored(tmp_path, name):
    """`--settings` naming a missing file was ignored without a word: the host served without the settings
    its operator asked for. As Core Tools reads only local.settings.json, an absent default stays quiet."""
    (tmp_path / "function_app.py").write_text(FUNCTION_APP)
    process = subprocess.Popen([sys.executable, "-m", "tools.host", "--app-dir", str(tmp_path), "--port", "0",
                                "--settings", str(tmp_path / name)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.terminate()
        _, err = process.communicate(timeout=10)
        pytest.fail(f"the host started serving without the settings file: {err[-500:]}")
    assert process.returncode != 0 and "Traceback" not in err, err
    assert str(tmp_path / name) in err and "no such file" in err, err

FUNCTION_APP = """
import logging, os
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    logging.info("health called")
    return func.HttpResponse(os.environ.get("GREETING", "") + "|" + os.environ.get("FROM_ENV", ""))
"""


def test_the_command_serves_an_app_dir_on_plain_http(tmp_path, session):
    (tmp_path / "function_app.py").write_text(FUNCTION_APP)
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": "p"}}}))
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"GREETING": "hello", "FROM_ENV": "file"}}))
    env = {**os.environ, "FROM_ENV": "env", "PYTHONUNBUFFERED": "1"}
    env.pop("GREETING", None)
    process = subprocess.Popen([sys.executable, "-m", "tools.host", "--app-dir", str(tmp_path), "--port", "0"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("Serving on ")):
            lines.append(process.stdout.readline() or "(exited)")
            assert lines[-1] != "(exited)", "".join(lines)
        url = next(line for line in lines if line.startswith("  health: [GET] http://127.0.0.1:")).split()[-1]
        assert url.endswith("/p/health")
        r = session.get(url + "?code=hidden", timeout=10)  # auth level function: no key asked
        assert (r.status_code, r.text) == (200, "hello|env")
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "health called" in err and "GET /p/health 200" in err and "hidden" not in err


def start_host(app_dir: Path, settings: dict, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """`python -m tools.host` on ``app_dir`` with ``settings`` as its local.settings.json Values, up: its
    stdout lines until "Serving on"."""
    (app_dir / "function_app.py").write_text(FUNCTION_APP)
    (app_dir / "local.settings.json").write_text(json.dumps({"Values": settings}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PUBLIC_BASE_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "tools.host", "--app-dir", str(app_dir), *args],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline and not (lines and lines[-1].startswith("Serving on ")):
        lines.append(process.stdout.readline() or "(exited)")
        assert lines[-1] != "(exited)", "".join(lines)
    return process, lines


@pytest.mark.parametrize("public, tls, warned", [
    ("https://127.0.0.1:{port}", False, True),  # make run's local.settings.json, served without its certificate
    ("http://localhost:{port}", True, True),
    ("http://localhost:1", False, True),  # another port
    ("http://localhost:{port}", False, False),
    ("https://127.0.0.1:{port}", True, False),
    ("http://localhost:{port}/", False, False),
], ids=["https-named-http-served", "http-named-https-served", "other-port", "http-both", "https-both", "slash"])
def test_the_host_says_so_when_public_base_url_is_not_what_it_serves(tmp_path, test_ca, public, tls, warned):
    """README said `portal-sso host --port 7071` works as it is on the local.settings.json make run leaves; that
    file names https://127.0.0.1:7071 and the host served plain HTTP, so every login ended at an address nothing
    answered, with no word why. The redirect URIs are built from PUBLIC_BASE_URL: the host names the mismatch
    and both ways out (a proxy in front may serve that address, so it is a warning, not a refusal)."""
    port = free_port()
    public = public.format(port=port)
    tls_args = ["--cert", str(test_ca.server_cert), "--key", str(test_ca.server_key)] if tls else []
    process, lines = start_host(tmp_path, {"PUBLIC_BASE_URL": public}, "--port", str(port), *tls_args)
    process.terminate()
    output = "".join(lines) + process.communicate(timeout=10)[0]
    warning = [line for line in output.splitlines() if "PUBLIC_BASE_URL" in line]
    if not warned:
        assert not warning, output
        return
    served = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    assert len(warning) == 1, output
    assert public in warning[0] and f"serves {served}" in warning[0], warning
    assert "--cert" in warning[0] and "PUBLIC_BASE_URL=" in warning[0], "it says both ways out"


@pytest.mark.parametrize("length, status", [("\u00b2", b"400"), ("-1", b"400"), ("1e3", b"400"), (str(10**17), b"413"),
                                            ("9" * 5000, b"413")],
                         ids=["superscript-two", "negative", "float", "huge", "more-digits-than-int-takes"])
def test_a_content_length_that_is_not_a_size_to_read_gets_an_answer_not_a_dropped_connection(server, https_public,
                                                                                            length, status):
    """'\u00b2'.isdigit() is True and int() refuses it; 10**17 made read() allocate before reading: both
    dropped the connection with a traceback. Azure's front end answers 413 above 100 MB. The answer is the
    app's page with the app's headers (it was http.server's, without Strict-Transport-Security)."""
    request = (f"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\nContent-Length: {length}\r\n\r\n"
               .encode("latin-1") + b"x")
    answer = raw_request(server.port, request)  # read to the end: the server closes (where the body ends is unknown)
    assert_host_page(answer, status)  # one answer: the unread body was not taken for a next request


def test_a_body_shorter_than_its_content_length_times_out_instead_of_holding_a_thread_for_ever(monkeypatch):
    assert 0 < (host._RequestHandler.timeout or 0) <= 120, "reads wait a bounded time (socketserver's default: none)"
    monkeypatch.setattr(host._RequestHandler, "timeout", 0.5)  # the same bound, short enough for a test
    handle = host.serve_in_thread(host.build_wsgi_app(make_app()))
    try:
        with socket.create_connection(("127.0.0.1", handle.port), timeout=5) as s:
            s.sendall(b"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nshort")
            started = time.monotonic()
            assert s.recv(1000) == b"", "the server closes the connection"
            assert time.monotonic() - started < 3
    finally:
        handle.stop()


# ---- the host's own answers to requests it cannot pass to a function (found by fuzzing raw sockets) ----

@pytest.fixture
def https_public():
    """PUBLIC_BASE_URL is https://: SPEC asks Strict-Transport-Security on every answer, the host's own too."""
    from shared.runtime import Runtime, get_runtime, reset_runtime

    previous = get_runtime()
    reset_runtime(Runtime({"PUBLIC_BASE_URL": "https://sso.example.test"}))
    yield
    reset_runtime(previous)


def assert_host_page(answer: bytes, status: bytes) -> None:
    """One answer on the connection, the app's escaped error page with a correlation id, and HSTS."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == status, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:600]
    assert b"\r\nStrict-Transport-Security: max-age=31536000" in head, head
    assert b"Correlation ID" in body and b"Traceback" not in body and b"Werkzeug" not in body, body[:600]


def errors_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("host_header", [b"xn--", b"xn--zz"])
@pytest.mark.parametrize("line", [b"GET /api/sso/jwks.json", b"POST /api/sso/user/callback"])
def test_a_host_header_no_url_can_be_built_from_is_a_400_page_not_a_500(server, https_public, caplog,
                                                                         host_header, line):
    """Building the request's URL from `Host: xn--` raised UnicodeError outside the function's try: a 500
    with a traceback in the log."""
    answer = raw_request(server.port, line + b" HTTP/1.1\r\nHost: " + host_header
                         + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert_host_page(answer, b"400")
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("path", [b"/api/sso/jwks.json", b"/api/nope"])
def test_the_route_is_never_taken_from_the_host_header(server, https_public, caplog, path):
    """A label over 63 characters made werkzeug's bind_to_environ raise BadHost before any try: a 500 on
    every route. The route comes from the path alone: the same answer as with a plain Host."""
    answers = [raw_request(server.port, b"GET " + path + b" HTTP/1.1\r\nHost: " + host_header
                           + b"\r\nConnection: close\r\n\r\n")
               for host_header in (b"a" * 64 + b".example", b"a" * 5000, b"localhost")]
    assert {answer.split(b" ")[1] for answer in answers} == {b"200" if b"jwks" in path else b"404"}, answers
    assert errors_logged(caplog) == []


CHUNKED_HEAD = (b"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")


@pytest.mark.parametrize("body", [b"ZZ\r\nabc\r\n0\r\n\r\n", b"5\r\ncode=XX0\r\n\r\n", b"-5\r\ncode=\r\n0\r\n\r\n"],
                         ids=["not-hex", "no-chunk-end", "negative"])
def test_a_broken_chunked_body_is_a_400_page_not_a_500(server, https_public, caplog, body):
    assert_host_page(raw_request(server.port, CHUNKED_HEAD + body), b"400")
    assert errors_logged(caplog) == []


def chunked_callback(transfer_encoding: bytes, body: bytes) -> bytes:
    return (b"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\n" + transfer_encoding
            + b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + body)


@pytest.mark.parametrize(("transfer_encoding", "status"), [
    (b"Transfer-Encoding: gzip\r\nContent-Length: 6\r\n", b"400"),
    (b"Transfer-Encoding: chunked, gzip\r\n", b"400"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", b"400"),
    (b"Transfer-Encoding: \r\nContent-Length: 6\r\n", b"400"),
    (b"Transfer-Encoding: gzip, chunked\r\n", b"501"),
], ids=["gzip-alone", "chunked-then-gzip", "two-fields", "empty", "gzip-then-chunked"])
def test_a_transfer_encoding_whose_body_end_the_host_cannot_read_is_refused_before_the_app(
        server, https_public, caplog, transfer_encoding, status):
    """Any Transfer-Encoding counted as chunked here, and werkzeug de-chunks only when `chunked` is among
    them: `gzip` alone had its body read by Content-Length and the function ran (a SCIM POST made a
    User). RFC 9112 6.3: chunked not final is a 400, then close; a coding not understood, 501."""
    body = b"6\r\ncode=c\r\n0\r\n\r\n" if b"chunked" in transfer_encoding else b"code=c"
    answer = raw_request(server.port, chunked_callback(transfer_encoding, body))
    assert_host_page(answer, status)
    assert b'"form"' not in answer, "the function ran"
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("size_line", [b"6;name=value", b"6 ;name", b"6\t;a=\"b\"", b"00006"],
                         ids=["extension", "extension-after-space", "quoted-extension", "leading-zeros"])
def test_a_chunk_size_with_an_extension_is_read_as_its_size(server, size_line):
    """RFC 9112 7.1.1: a recipient MUST ignore chunk extensions it does not know; werkzeug refused them (400)."""
    answer = raw_request(server.port, chunked_callback(b"Transfer-Encoding: chunked\r\n",
                                                       size_line + b"\r\ncode=c\r\n0\r\n\r\n"))
    assert answer.split(b" ")[1] == b"200" and b'"form": {"code": "c"}' in answer, answer[:300]


@pytest.mark.parametrize("size_line", [b"0x6", b"+6", b" 6", b"6_", b"\xd9\xa6"],
                         ids=["0x", "plus", "leading-space", "underscore", "arabic-digit"])
def test_a_chunk_size_that_is_not_hex_digits_is_a_400(server, https_public, caplog, size_line):
    """chunk-size = 1*HEXDIG: int(line, 16) took 0x6, +6, a leading space and 6_ as sizes, where a proxy
    in front reading the RFC sees no size (a framing the two disagree on)."""
    answer = raw_request(server.port, chunked_callback(b"Transfer-Encoding: chunked\r\n",
                                                       size_line + b"\r\ncode=c\r\n0\r\n\r\n"))
    assert_host_page(answer, b"400")
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("length", [b"6 ", b"6\t", b" 6 "])
def test_a_content_length_with_whitespace_around_it_is_its_number(server, length):
    """RFC 9112 5: whitespace around a field value is not part of it; `6 ` was a 400."""
    answer = raw_request(server.port, b"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + length
                         + b"\r\n\r\ncode=c")
    assert answer.split(b" ")[1] == b"200" and b'"form": {"code": "c"}' in answer, answer[:300]


def test_a_chunked_body_is_read_up_to_the_body_limit_and_413_above(server, https_public, monkeypatch):
    """A chunked body had no limit at all (a 120 MB one was read whole, where Azure's front end answers
    413 above 100 MB); the same limit as for a Content-Length, here made small."""
    monkeypatch.setattr(host, "MAX_REQUEST_BODY", 1000)

    def chunked(body: bytes) -> bytes:
        return CHUNKED_HEAD + b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                                       for part in (body[:600], body[600:])) + b"0\r\n\r\n"

    answer = raw_request(server.port, chunked(b"code=" + b"a" * 995))
    assert answer.split(b" ")[1] == b"200" and b'"form": {"code": "' + b"a" * 995 + b'"}' in answer, answer[:300]
    assert_host_page(raw_request(server.port, chunked(b"code=" + b"a" * 996)), b"413")
    plain = b"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n" + b"a" * 1001
    assert_host_page(raw_request(server.port, plain), b"413")


SMUGGLED = b"GET /api/sso/jwks.json HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.mark.parametrize("lengths", [(5, 5 + len(SMUGGLED)), (5 + len(SMUGGLED), 5)], ids=["short-first", "long-first"])
def test_differing_content_lengths_are_a_400_and_the_end_of_the_connection(server, https_public, lengths):
    """The host framed the body by the first Content-Length, werkzeug's environ by the last: one
    connection became two requests (request smuggling). RFC 9112 6.3: 400, then close."""
    headers = b"".join(b"Content-Length: %d\r\n" % length for length in lengths)
    answer = raw_request(server.port, b"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n" + headers + b"\r\ncode=" + SMUGGLED)
    assert_host_page(answer, b"400")
    assert b"Set-Cookie" not in answer, "the smuggled request was not answered"


def test_the_same_content_length_twice_is_one_length(server):
    """RFC 9110 8.6: repeated identical values may be taken as one; both readers agree on them."""
    answer = raw_request(server.port, b"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 6\r\nContent-Length: 6\r\n\r\ncode=c")
    assert answer.split(b" ")[1] == b"200" and b'"form": {"code": "c"}' in answer, answer[:300]


def interim(sock: socket.socket, quiet: float = 0.5) -> bytes:
    """What the server sends before it has the body: read until it is quiet for a while (or closes)."""
    sock.settimeout(quiet)
    received = b""
    with suppress(TimeoutError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_100_continue_is_sent_once_and_never_before_a_refusal(server, https_public):
    """http.server's parse_request sent its own 100 Continue before run_wsgi could refuse the body: a
    413 came after an invitation to send 200 MB, and an accepted request got two 100 Continue."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 200000000\r\n\r\n")
        answer = interim(s)
    assert b"100 Continue" not in answer
    assert_host_page(answer, b"413")
    before, answer = expecting_continue(server.port, b"HTTP/1.1\r\nConnection: close")
    assert before == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"form": {"code": "c"}' in answer, answer[:300]


def expecting_continue(port: int, version_and_header: bytes) -> tuple[bytes, bytes]:
    """A callback POST asking 100-continue: what the server sends before the body, then its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /api/sso/user/callback " + version_and_header + b"\r\nHost: a\r\nExpect: 100-continue\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\n")
        before = interim(s)
        s.settimeout(5)
        s.sendall(b"code=c")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return before, answer


def test_no_100_continue_to_an_http_1_0_request(server):
    """RFC 9110 10.1.1: an HTTP/1.0 client knows no 1xx answer, so its 100-continue is ignored; the host
    sent one, which such a client reads as the answer to its request."""
    before, answer = expecting_continue(server.port, b"HTTP/1.0")
    assert before == b"", "nothing before the body"
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"form": {"code": "c"}' in answer, answer[:300]
    assert b"100 Continue" not in answer


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /api/sso/jwks.json?code=SECRETCODE x HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
    (b"GET /api/sso/jwks.json?code=SECRETCODE HTTP/2.0\r\nHost: a\r\n\r\n", b"505"),
    (b"GET /api/sso/jwks.json?code=SECRETCODE HTTP/1.x\r\nHost: a\r\n\r\n", b"400"),
    (b"GET /api/sso/jwks.json?code=SECRETCODE HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    (b"GET /api/sso/jwks.json?code=SECRETCODE" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"414"),
    # A request line of one or two words is HTTP/0.9's: its answer went as HTTP/0.9's, the bare page
    # without a status line or any header (no HSTS), and a two-word GET ran the app (a login started).
    (b"GARBAGE?code=SECRETCODE\r\n\r\n", b"400"),
    (b"POST /api/sso/user/callback?code=SECRETCODE\r\n\r\n", b"400"),
    (b"GET /api/sso/jwks.json?code=SECRETCODE\r\n\r\n", b"505"),
], ids=["request-line", "version-2", "bad-version", "header-too-long", "uri-too-long", "one-word", "two-words-post",
        "http-0.9-get"])
def test_http_servers_own_refusals_are_the_apps_page_with_its_headers(server, https_public, caplog, request_bytes,
                                                                      status):
    """A request line or header http.server cannot parse never reaches the app: its answer was http.server's
    page, without Strict-Transport-Security."""
    answer = raw_request(server.port, request_bytes)
    assert_host_page(answer, status)
    assert b"SECRETCODE" not in answer and "SECRETCODE" not in caplog.text
    lines = [r.getMessage() for r in caplog.records if r.name == "tools.host"]
    assert len([m for m in lines if "refused:" in m or "rejected" in m]) == 1, f"one log line a refusal: {lines}"


@pytest.fixture
def unreadable_public_base(request):
    from shared.runtime import Runtime, get_runtime, reset_runtime

    previous = get_runtime()
    reset_runtime(Runtime({"PUBLIC_BASE_URL": request.param}))
    yield request.param
    reset_runtime(previous)


@pytest.mark.parametrize("unreadable_public_base", ["https://portal.example.com]", "http://[localhost]:7071"],
                         indirect=True)
def test_a_public_base_url_no_url_parser_reads_is_a_settings_problem_not_a_500_on_every_route(
        function_host, unreadable_public_base, session, caplog):
    """urlsplit raises ValueError on a stray bracket: the Strict-Transport-Security rule raised it on every
    answer, the error page's own included (a bare 500, a traceback in the log). SPEC: health is 200 or
    503, and the settings check names the bad value; every page keeps its correlation id."""
    handle = host.serve_in_thread(function_host)
    try:
        health, setup = session.get(f"{handle.url}/api/health"), session.get(f"{handle.url}/api/sso/setup")
        pages = [session.get(handle.url + path, allow_redirects=False)
                 for path in ("/api/sso/user/login", "/api/sso/jwks.json", "/api/nope")]
    finally:
        handle.stop()
    assert health.status_code == 503, health.text[:500]
    assert "PUBLIC_BASE_URL" in health.text, health.text[:2000]
    assert setup.status_code == 200 and "PUBLIC_BASE_URL" in setup.text, setup.text[:500]
    for page in [health, setup, *pages]:
        assert "Strict-Transport-Security" not in page.headers, "no HSTS from a base URL that cannot be read"
    for page in pages:
        # The app's own answers (a configuration error, a 404 page), not werkzeug's bare 500.
        assert "500 Internal Server Error" not in page.text and "correlation" in page.text.lower(), (page.url,
                                                                                                   page.text)
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"


def callback_with(header_line: bytes) -> bytes:
    """A POST whose body is a whole second request, `header_line` right after Host: a header parser that
    stops there (or splits it) frames the body as the next request."""
    body = b"code=" + SMUGGLED
    return (b"POST /api/sso/user/callback HTTP/1.1\r\nHost: a\r\n" + header_line
            + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


@pytest.mark.parametrize("header_line", [b"X-Broken\r\n", b"X-Note : 1\r\n", b": 1\r\n", b"From x\r\n",
                                         b"X-Note: 1\rX-Other: 2\r\n", b"X-Note: 1\r\n 2\r\n", b"X-Note: a\x00b\r\n"],
                         ids=["no-colon", "space-before-colon", "no-name", "envelope-from", "bare-cr", "obs-fold",
                              "nul"])
def test_a_header_line_that_is_not_one_field_is_a_400_and_the_end_of_the_connection(server, https_public, caplog,
                                                                                    header_line):
    """http.client stopped at a line without a colon (MissingHeaderBodySeparatorDefect) and dropped every
    header after it, Content-Length included: the body was served as a second request. A bare CR split one
    line into two fields, which a proxy in front reads as one. RFC 9112 2.2, 5.1, 5.2: 400, then close."""
    answer = raw_request(server.port, callback_with(header_line))
    assert_host_page(answer, b"400")
    assert b"Set-Cookie" not in answer, "the smuggled request was not answered"
    assert errors_logged(caplog) == []


def test_header_lines_that_are_fields_are_served(server):
    """Bare LF line ends (RFC 9112 2.2 lets a server take them) and no space after the colon are fields."""
    answer = raw_request(server.port, b"POST /api/sso/user/callback HTTP/1.1\nHost: a\nX-Demo:hi\n"
                         b"Connection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 6\r\n\r\ncode=c")
    assert answer.split(b" ")[1] == b"200" and b'"header": "hi"' in answer, answer[:400]


@pytest.mark.parametrize("head", [b"HTTP/1.1\r\n", b"HTTP/1.1\r\nHost: a\r\nHost: a\r\n",
                                  b"HTTP/1.0\r\nHost: a\r\nHost: b\r\n",
                                  b"HTTP/1.1\r\nHost: a b\r\n", b"HTTP/1.1\r\nHost: user@a\r\n",
                                  b"HTTP/1.1\r\nHost: a/b\r\n", b"HTTP/1.1\r\nHost: a:80x\r\n",
                                  b"HTTP/1.1\r\nHost: [::1\r\n", b"HTTP/1.1\r\nHost: a%zz\r\n",
                                  b"HTTP/1.1\r\nHost: caf\xe9\r\n"],
                         ids=["missing", "twice", "twice-http-1.0", "space", "userinfo", "path", "port", "bracket",
                              "percent", "latin-1"])
def test_a_host_header_that_is_not_exactly_one_host_is_a_400(server, https_public, caplog, head):
    """RFC 9112 3.2: 400 to an HTTP/1.1 request without Host, and to any request with more than one Host
    line or a Host that is not uri-host [":" port]; they were served (the module docstring said 400)."""
    assert_host_page(raw_request(server.port, b"GET /api/sso/jwks.json " + head + b"Connection: close\r\n\r\n"), b"400")
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("head", [b"HTTP/1.0\r\n", b"HTTP/1.1\r\nHost: 127.0.0.1:7071\r\n",
                                  b"HTTP/1.1\r\nHost: [::1]:7071\r\n",
                                  b"HTTP/1.1\r\nHost: sso.example.test \r\n", b"HTTP/1.1\r\nHost: a%41-b_c~d\r\n"],
                         ids=["http-1.0-without", "ipv4-port", "ipv6-port", "trailing-space", "reg-name"])
def test_one_host_of_uri_host_and_port_is_served(server, head):
    answer = raw_request(server.port, b"GET /api/sso/jwks.json " + head + b"Connection: close\r\n\r\n")
    assert answer.split(b" ")[1] == b"200", answer[:300]


@pytest.mark.parametrize("target", [b"http://[::1/api/sso/jwks.json", b"http://user@evil:99999/api/sso/jwks.json",
                                    b"https://a%zz/api/sso/jwks.json", b"http://a:80x/api/sso/jwks.json",
                                    b"http://caf\xe9/api/sso/jwks.json"],
                         ids=["bracket", "userinfo", "percent", "port", "latin-1"])
def test_a_request_target_that_is_no_path_or_whose_authority_is_not_a_host_is_a_400(server, https_public, caplog,
                                                                                     capsys, target):
    """An absolute-form target's authority stands for Host (RFC 9112 3.2.2: werkzeug makes it HTTP_HOST),
    so it meets the Host rule: `http://user@evil:99999/...` was served 200 where the same value as Host is
    a 400. A target werkzeug's urlsplit cannot read (a stray bracket) raised ValueError in its environ:
    the connection dropped without an answer, a traceback on stderr."""
    answer = raw_request(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert_host_page(answer, b"400")
    assert errors_logged(caplog) == [] and "Traceback" not in capsys.readouterr().err


def test_an_absolute_form_target_naming_a_host_is_served(server):
    answer = raw_request(server.port, b"GET http://127.0.0.1:7071/api/sso/jwks.json HTTP/1.1\r\nHost: a\r\n"
                         b"Connection: close\r\n\r\n")
    assert answer.split(b" ")[1] == b"200", answer[:300]
