"""The IdP's requests.Session (shared/transport.py IdpSession), against real loopback sockets: every
request gets the timeouts unless it names its own (MSAL passes none), and the proxies and CA bundle
are read once, when the session is made, not from the environment on every call."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from shared.errors import DependencyUnavailable
from shared.provider import discover
from shared.transport import IDP_ANSWER_LIMIT, AnswerTooLarge, IdpSession
from tests.support.raw_answer import gzip_bomb, trickled


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append(self.requestline)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    """A loopback HTTP server that answers 200 and records each request line: as a proxy it sees the
    absolute URL ("GET http://idp.invalid/x HTTP/1.1"), as the server itself the path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung token endpoint)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(iter(lambda: listener.accept()[0], None)), daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in held:
        conn.close()


def test_a_request_without_a_timeout_gets_the_read_timeout(silent_port):
    session = IdpSession(read_timeout=0.5, environ={})
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        session.post(f"http://127.0.0.1:{silent_port}/token", data={"code": "x"})  # as MSAL calls it: no timeout
    assert time.monotonic() - started < 2, "the session's read timeout applied, not none"


def test_a_request_naming_its_own_timeout_keeps_it(silent_port):
    session = IdpSession(read_timeout=30, environ={})
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        session.get(f"http://127.0.0.1:{silent_port}/jwks", timeout=(1, 0.3))
    assert time.monotonic() - started < 2


def test_proxies_are_read_once_from_the_given_environment_and_no_proxy_is_honoured(recorder, monkeypatch):
    proxy = f"http://127.0.0.1:{recorder.server_port}"
    environ = {"HTTP_PROXY": "http://127.0.0.1:9/", "http_proxy": proxy, "NO_PROXY": "localhost",
               "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}
    session = IdpSession(read_timeout=5, environ=environ)
    assert session.verify == "/etc/ssl/certs/ca-certificates.crt" and session.trust_env is False
    environ["http_proxy"] = "http://127.0.0.1:9/"  # later changes are not seen: read once
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")  # nor is the process environment (trust_env off)
    assert session.get("http://idp.invalid/.well-known/openid-configuration").text == "ok"
    assert recorder.seen == ["GET http://idp.invalid/.well-known/openid-configuration HTTP/1.1"], \
        "the request went through the proxy (lower-case http_proxy wins, as in requests)"
    assert session.get(f"http://localhost:{recorder.server_port}/direct").text == "ok"
    assert recorder.seen[-1] == "GET /direct HTTP/1.1", "a NO_PROXY host is reached directly"


def test_no_proxy_in_the_environment_means_direct_connections(recorder, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    session = IdpSession(read_timeout=5, environ={})
    assert session.get(f"http://127.0.0.1:{recorder.server_port}/x").text == "ok"
    assert recorder.seen == ["GET /x HTTP/1.1"]


@pytest.mark.parametrize("close", [False, True], ids=["kept-alive", "connection-close"])
def test_an_answer_trickled_after_its_headers_is_cut_at_the_timeouts_not_read_for_as_long_as_it_lasts(close):
    """Headers at once, then a byte every 0.2 s: each read of the socket came within the read timeout,
    so a per-read timeout never fired and a GET with read timeout 2 s answered 200 after 12 s. The
    whole call is bounded now, by its connect and read timeouts together (0.5 + 0.5 s here)."""
    with trickled(b'{"keys": []}' + b" " * 28, every=0.2, close=close) as peer:  # 40 bytes: 8 s
        session = IdpSession(read_timeout=0.5, environ={})
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            session.get(f"{peer.url}/jwks")
        assert time.monotonic() - started < 1.5, "cut at the call's timeouts, not when the peer was done"
    with trickled(b'{"keys": []}', every=0.05, piece=3) as peer:  # 4 pieces: 0.2 s, within the 1 s
        assert IdpSession(read_timeout=0.5, environ={}).get(f"{peer.url}/jwks").json() == {"keys": []}, \
            "an answer read in several pieces within the timeouts is whole"


def test_an_answer_that_decodes_past_a_megabyte_is_refused_without_being_held():
    """The session asks for gzip (requests' Accept-Encoding); a 305 KB gzip body from discovery or the
    JWKS endpoint was decoded whole, 314 MB held. No IdP answer of ours comes near a megabyte
    (discovery ~2 KB, keys ~10 KB, a token answer a few KB)."""
    with gzip_bomb(64 * 2**20) as peer:  # 64 MB of JSON text in ~64 KB
        tracemalloc.start()
        try:
            with pytest.raises(AnswerTooLarge) as caught:
                IdpSession(read_timeout=5, environ={}).get(f"{peer.url}/discovery/keys")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert isinstance(caught.value, requests.RequestException), "what every IdP caller maps to a 503"
    assert peak < 8 * 2**20, f"read up to the cap, never the whole: peak {peak // 2**20} MB"
    with gzip_bomb(IDP_ANSWER_LIMIT - 1024) as peer:
        assert len(IdpSession(read_timeout=5, environ={}).get(f"{peer.url}/keys").content) < IDP_ANSWER_LIMIT


def test_discovery_answering_a_bomb_is_the_idps_outage_a_503():
    with gzip_bomb(64 * 2**20) as peer:
        with pytest.raises(DependencyUnavailable) as caught:
            discover(f"{peer.url}/.well-known/openid-configuration", peer.url, IdpSession(5, environ={}),
                     multi_tenant=False)
    assert caught.value.reason == "idp_unavailable" and "AnswerTooLarge" in caught.value.detail, caught.value


def test_through_a_proxy_an_answer_is_bounded_as_a_direct_one_is():
    """HTTP(S)_PROXY set: a request with proxies took requests' own path, which read the body whole: a
    64 MB gzip bomb was held (128 MB traced) and a trickled body answered 200 after 7.5 s with a 1 s read
    timeout. The local peer is the proxy here (it answers the absolute-form request itself)."""
    with gzip_bomb(64 * 2**20) as proxy:
        tracemalloc.start()
        try:
            with pytest.raises(AnswerTooLarge):
                IdpSession(read_timeout=5, environ={"HTTP_PROXY": proxy.url}).get("http://idp.example/keys")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * 2**20, f"read up to the cap, never the whole: peak {peak // 2**20} MB"
    with trickled(b'{"keys": []}' + b" " * 28, every=0.2) as proxy:
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            IdpSession(read_timeout=0.5, environ={"HTTP_PROXY": proxy.url}).get("http://idp.example/jwks")
        assert time.monotonic() - started < 1.5, "cut at the call's timeouts, not when the peer was done"
    with trickled(b'{"keys": []}', every=0.05, piece=3) as proxy:
        answer = IdpSession(read_timeout=0.5, environ={"HTTP_PROXY": proxy.url}).get("http://idp.example/jwks")
        assert answer.json() == {"keys": []}, "a whole answer through the proxy reads as it did"


class _Redirector(BaseHTTPRequestHandler):
    """Answers every POST with a 307 to another host, and records what reached it (the body included)."""

    def do_POST(self):
        self.server.seen.append((self.requestline, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
        self.send_response(307)
        self.send_header("Location", "http://elsewhere.example/steal")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_through_a_proxy_a_redirect_reaches_the_caller_as_it_does_on_the_direct_path():
    """With HTTP(S)_PROXY set every IdP call took requests' own path, which follows redirects (its
    default): a token POST answered by a 307 went again, client secret and code in its body, to the host
    the Location named. The direct path sends with redirect=False; the proxied one now does the same."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        # as a proxy the server sees the absolute URL, as the server itself the path
        for environ, target, line in (({"HTTP_PROXY": url}, "http://login.example/t/token", "POST http://login.example/t/token"),
                                      ({}, f"{url}/t/token", "POST /t/token")):
            server.seen.clear()
            answer = IdpSession(2, environ=environ).post(target, data={"client_secret": "S3CRET", "code": "abc"})
            assert answer.status_code == 307 and answer.headers["Location"] == "http://elsewhere.example/steal"
            assert [seen for seen, _ in server.seen] == [f"{line} HTTP/1.1"], "sent once, to where it was meant"
    finally:
        server.shutdown()
        server.server_close()
