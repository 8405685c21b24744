"""shared/transport.py's DirectSession (under StorageSession and IdpSession), against real loopback
servers (tools.host's, plain and HTTPS with a local CA): what goes on the wire is what requests would
have sent, a request it does not handle takes requests' own path, the CA bundle is loaded once per
session, and urllib3's errors reach the caller as requests' exceptions."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl

import pytest
import requests

import shared.transport as transport
from shared.transport import IdpSession, StorageSession
from tools.host import serve_in_thread
from tools.stack import make_ca


def _recording_app(seen: list):
    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers["Content-Type"] = environ.get("CONTENT_TYPE", "")
        headers["Content-Length"] = environ.get("CONTENT_LENGTH", "")
        seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""), headers, body))
        start_response("200 OK", [("Content-Type", "application/json"), ("Set-Cookie", "jar=1; Path=/")])
        return ['{"answer": "é"}'.encode()]
    return app


@pytest.fixture
def plain() -> Iterator[tuple[str, list]]:
    seen: list = []
    server = serve_in_thread(_recording_app(seen))
    yield server.url, seen
    server.stop()


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def https(ca) -> Iterator[tuple[str, list]]:
    seen: list = []
    server = serve_in_thread(_recording_app(seen), ssl_context=(str(ca.server_cert), str(ca.server_key)))
    yield server.url, seen
    server.stop()


def test_a_form_post_goes_on_the_wire_as_requests_would_send_it(plain):
    base, seen = plain
    direct = IdpSession(5, environ={}).post(f"{base}/token", data={"code": "a b&c", "state": "é", "skip": None},
                                            headers={"X-Client": "msal"})
    reference = requests.Session()
    reference.trust_env = False
    reference.post(f"{base}/token", data={"code": "a b&c", "state": "é", "skip": None}, headers={"X-Client": "msal"})
    (_, _, _, direct_headers, direct_body), (_, _, _, reference_headers, reference_body) = seen
    assert direct_body == reference_body and dict(parse_qsl(direct_body.decode())) == {"code": "a b&c", "state": "é"}
    for name in ("Content-Type", "Content-Length", "User-Agent", "Accept-Encoding", "Accept", "X-Client"):
        assert direct_headers[name] == reference_headers[name], name
    assert direct.status_code == 200 and direct.json() == {"answer": "é"} and direct.text == '{"answer": "é"}'
    assert direct.headers["content-type"] == "application/json" and direct.encoding == "utf-8"


def test_request_headers_replace_the_sessions_whatever_their_case_and_none_removes_one(plain):
    base, seen = plain
    IdpSession(5, environ={}).get(f"{base}/x", headers={"accept": "application/json", "User-Agent": None})
    headers = seen[-1][3]
    assert headers["Accept"] == "application/json", "one Accept header: the request's, not both"
    assert "python-requests" not in headers.get("User-Agent", ""), "a header set to None is not sent"


def test_the_storage_session_sends_the_sdks_headers_only_and_a_str_body_as_utf8(plain):
    base, seen = plain
    StorageSession({}).request("PUT", f"{base}/T", data='{"A": "é"}', headers={"x-ms-version": "2019-02-02"})
    StorageSession({}).request("DELETE", f"{base}/T", headers={"If-Match": "*"})
    (_, _, _, put_headers, put_body), (method, _, _, delete_headers, delete_body) = seen
    assert put_body == '{"A": "é"}'.encode() and put_headers["Content-Length"] == str(len(put_body))
    assert put_headers["X-Ms-Version"] == "2019-02-02" and "Accept" not in put_headers
    assert "python-requests" not in put_headers.get("User-Agent", "")
    assert method == "DELETE" and delete_body == b"" and delete_headers["Content-Length"] == "0"  # as requests


def test_a_request_it_does_not_handle_takes_requests_own_path(plain):
    base, seen = plain
    session = IdpSession(5, environ={})
    response = session.get(f"{base}/jwks", params={"p": "1 2"})
    assert response.status_code == 200 and seen[-1][2] == "p=1+2"
    assert session.cookies.get("jar") == "1", "requests' own path (its cookie jar) answered"
    session.get(f"{base}/plain")
    assert "Cookie" not in seen[-1][3], "the direct path sends no cookie jar"


def test_https_through_one_tls_context_loaded_once(https, ca, monkeypatch):
    base, _ = https
    loads = []
    real = transport.tls_context
    monkeypatch.setattr(transport, "tls_context", lambda verify: loads.append(verify) or real(verify))
    session = StorageSession({"REQUESTS_CA_BUNDLE": str(ca.bundle)})
    for _ in range(3):
        assert session.request("GET", f"{base}/x", headers={"Connection": "close"}).status_code == 200
    assert loads == [str(ca.bundle)], "three new connections, one load of the bundle"


def test_a_workers_sessions_share_the_bundles_tls_context_and_a_rewritten_bundle_is_loaded_again(https, ca,
                                                                                                 tmp_path):
    base, _ = https
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.bundle.read_bytes())
    first = transport.tls_context(str(bundle))
    assert transport.tls_context(str(bundle)) is first, "the IdP's and storage's sessions load the bundle once"
    bundle.write_bytes(ca.bundle.read_bytes() + b"\n")  # rotated in place: a new file on disk
    assert transport.tls_context(str(bundle)) is not first, "a bundle rewritten on disk is read again"
    session = StorageSession({"REQUESTS_CA_BUNDLE": str(bundle)})
    assert session.request("GET", f"{base}/x").status_code == 200, "the new context still trusts the local CA"


def test_an_untrusted_certificate_is_requests_ssl_error(https):
    base, _ = https
    with pytest.raises(requests.exceptions.SSLError):
        IdpSession(5, environ={}).get(f"{base}/x")  # certifi's bundle does not hold the local CA


def test_a_refused_connection_is_requests_connection_error():
    with pytest.raises(requests.ConnectionError) as raised:
        IdpSession(5, environ={}).get("http://127.0.0.1:9/x")
    assert not isinstance(raised.value, requests.Timeout)


def test_an_unreadable_ca_bundle_is_named_by_requests_when_a_call_is_made(plain, tmp_path):
    base, _ = plain
    session = StorageSession({"REQUESTS_CA_BUNDLE": str(tmp_path / "missing.pem")})
    assert session.request("GET", f"{base}/x").status_code == 200  # plain HTTP needs no bundle
    with pytest.raises(OSError, match=r"missing\.pem"):
        session.request("GET", "https://127.0.0.1:9/x")
