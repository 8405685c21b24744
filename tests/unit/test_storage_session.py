"""The session under the Azure SDK's table clients (shared/transport.py StorageSession), against real
loopback sockets and the real azure-core transport: a request carries exactly the SDK's headers and
body, a silent server costs the read timeout as azure-core's ServiceResponseTimeoutError, a refused
connection is a ServiceRequestError (what the SDK's retry policy and storage_errors act on)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseTimeoutError
from azure.core.rest import HttpRequest

from shared.tables import Tables
from shared.transport import READ_TIMEOUT, TIMEOUTS, StorageSession, azure_transport
from tests.support.raw_answer import trickled
from tools.host import serve_in_thread


@pytest.fixture
def echo() -> Iterator[tuple[str, list]]:
    """A loopback server (tools.host's) that answers 204 and records each request's headers and body."""
    seen: list = []

    def app(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        seen.append(({k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
                     | {"Content-Type": environ.get("CONTENT_TYPE", "")}, body))
        start_response("204 No Content", [])
        return [b""]

    server = serve_in_thread(app)
    yield server.url, seen
    server.stop()


def test_a_request_carries_the_sdks_headers_and_body_and_nothing_of_the_session(echo):
    base, seen = echo
    transport = azure_transport({})
    url = f"{base}/T(PartitionKey='p',RowKey='r')"
    response = transport.send(HttpRequest("PUT", url, headers={"x-ms-version": "2019-02-02",
                                                               "Content-Type": "application/json"},
                                          content=b'{"A": "x"}'))
    assert response.status_code == 204
    headers, body = seen[-1]
    assert body == b'{"A": "x"}'
    assert headers["X-Ms-Version"] == "2019-02-02" and headers["Content-Type"] == "application/json"
    assert "python-requests" not in headers.get("User-Agent", "") and "Cookie" not in headers


def test_the_timeouts_and_the_ca_bundle_are_the_apps(tmp_path):
    transport = azure_transport({"REQUESTS_CA_BUNDLE": str(tmp_path / "ca.pem")})
    assert (transport.connection_config.timeout, transport.connection_config.read_timeout) == \
        (TIMEOUTS["connection_timeout"], TIMEOUTS["read_timeout"])
    assert transport.connection_config.verify == str(tmp_path / "ca.pem")
    assert isinstance(transport.session, StorageSession) and transport.session.trust_env is False


def test_a_server_that_never_answers_costs_one_read_timeout():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    transport = azure_transport({})
    started = time.monotonic()
    with pytest.raises(ServiceResponseTimeoutError):
        transport.send(HttpRequest("GET", f"http://127.0.0.1:{silent.getsockname()[1]}/T()"), read_timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 2
    silent.close()
    assert READ_TIMEOUT == TIMEOUTS["read_timeout"]


def test_a_refused_connection_is_a_service_request_error():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(ServiceRequestError):
        azure_transport({}).send(HttpRequest("GET", f"http://127.0.0.1:{port}/T()"))


def test_the_app_s_table_clients_use_it():
    tables = Tables.from_settings("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
                                  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                                  "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;", None, lambda: None)
    pipeline = tables._service._client._client._pipeline
    assert isinstance(pipeline._transport.session, StorageSession)


def test_an_answer_trickled_after_its_headers_is_azure_cores_read_timeout_at_the_timeouts():
    """As for the IdP (test_idp_session.py): a per-read timeout let the tables' first making sure of,
    with its 6 s read timeout and 6 s budget, succeed after 20 s against a list of tables sent 8 bytes
    a second. azure-core maps the cut to its read timeout's error, which storage_errors makes a 503."""
    with trickled(b'{"value": []}' + b" " * 27, every=0.2, piece=2) as peer:  # 20 pieces: 4 s
        started = time.monotonic()
        with pytest.raises(ServiceResponseTimeoutError):
            azure_transport({}).send(HttpRequest("GET", f"{peer.url}/Tables"), connection_timeout=0.5,
                                     read_timeout=0.5)
        assert time.monotonic() - started < 1.5, "cut at the call's timeouts, not when the peer was done"
