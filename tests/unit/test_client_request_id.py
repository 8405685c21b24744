"""Every Table Storage call sends an `x-ms-client-request-id` (shared/transport.py): while a request is
served, its correlation id, so Storage's logs (ClientRequestId) find the calls a person's error page
names; else a fresh uuid4, the same for all the attempts of one call. Seen on the wire by a loopback
server the real TableClient talks to."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from shared.tables import Tables
from shared.transport import serving
from tools.host import serve_in_thread

# Azurite's well-known development key: the SDK signs each request with it; this server does not check.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Recorder:
    """Answers each DELETE with 204, after `failures` answers of 503; keeps each request's id."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.failures = 0

    def __call__(self, environ, start_response):
        self.ids.append(environ.get("HTTP_X_MS_CLIENT_REQUEST_ID", ""))
        if self.failures:
            self.failures -= 1
            start_response("503 Service Unavailable", [("Content-Length", "0")])
        else:
            start_response("204 No Content", [])
        return [b""]


@pytest.fixture
def storage() -> Iterator[tuple[Recorder, object]]:
    recorder = Recorder()
    server = serve_in_thread(recorder)
    connection = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
                  f"TableEndpoint={server.url}/devstoreaccount1")
    tables = Tables.from_settings(connection, None, lambda: None, retry_backoff_factor=0.01)
    yield recorder, tables._service.get_table_client("Recorded")
    server.stop()


def test_a_call_made_while_a_request_is_served_sends_its_correlation_id(storage):
    recorder, table = storage
    with serving("5c7d0e4e-0b7a-4f7e-9a3b-0d1c2b3a4f5e"):
        table.delete_entity("p", "r")
        table.delete_entity("p", "s")
    assert recorder.ids == ["5c7d0e4e-0b7a-4f7e-9a3b-0d1c2b3a4f5e"] * 2


def test_outside_a_request_each_call_has_its_own_uuid4_kept_across_its_retries(storage):
    recorder, table = storage
    recorder.failures = 2
    table.delete_entity("p", "r")  # two 503s, then 204: three attempts of one call
    table.delete_entity("p", "s")
    first, retried, last, other = recorder.ids
    assert first == retried == last, f"one call's attempts share its id: {recorder.ids}"
    assert uuid.UUID(first).version == 4 and uuid.UUID(other).version == 4
    assert other != first, "each call gets a new id"


def test_the_id_is_the_requests_own_only_while_it_is_served_and_an_explicit_one_wins(storage):
    recorder, table = storage
    with serving("outer"):
        with serving("inner"):
            table.delete_entity("p", "r")
        table.delete_entity("p", "r")
        table.delete_entity("p", "r", request_id="named-by-the-caller")
    table.delete_entity("p", "r")
    assert recorder.ids[:3] == ["inner", "outer", "named-by-the-caller"]
    assert uuid.UUID(recorder.ids[3]).version == 4, "nothing of a served request outlives it"


def test_functions_glue_serves_each_invocation_under_its_correlation_id(storage):
    from functions.http import guarded
    from shared import pages

    recorder, table = storage

    def handler(cid):
        table.delete_entity("p", cid)
        return pages.Reply(200, body="ok", content_type="text/plain; charset=utf-8")

    guarded(SimpleNamespace(invocation_id="0f6a8d3c-1b2e-4c5d-8e9f-a0b1c2d3e4f5"), handler)
    assert recorder.ids == ["0f6a8d3c-1b2e-4c5d-8e9f-a0b1c2d3e4f5"]
