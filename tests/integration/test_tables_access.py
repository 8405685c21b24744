"""What the app asks Table Storage for, by how it reaches it. With TABLES_ENDPOINT and its identity
(Azure, after scripts/deploy) the identity holds 'Storage Table Data Contributor' on each table alone:
the account's list of tables, and creating tables, are operations on the account it may not do, so
the app asks for its tables' rows and nothing else (an account-level Query Tables there would be a 403,
and every request a 503). Azurite has no RBAC to refuse it: what is sent is what the test checks."""

from __future__ import annotations

import logging
import socket
import threading
import time
from urllib.parse import parse_qs, quote

import pytest
import urllib3.connectionpool
from azure.core.credentials import AzureNamedKeyCredential
from azure.data.tables import TableServiceClient

from shared.errors import DependencyUnavailable
from shared.tables import ACCOUNTS_TABLE, FLOWS_TABLE, LOGIN_TABLES, Tables
from shared.transport import READ_TIMEOUT
from tools.stack import azurite_connection_string, new_account_key


@pytest.fixture
def sent(monkeypatch) -> list[str]:
    """Every request's method and path that reaches urllib3, recorded, then sent."""
    paths: list[str] = []
    real = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def urlopen(pool, method, url, *args, **kwargs):
        paths.append(f"{method} {url.split('?')[0]}")
        return real(pool, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "urlopen", urlopen)
    return paths


def test_by_identity_the_app_never_lists_or_creates_tables(azurite, account_store, sent):
    service = TableServiceClient.from_connection_string(azurite.connection_string)  # Shared Key: Azurite's
    tables = Tables(service, create=False)  # as from_settings makes it for TABLES_ENDPOINT
    tables.ping()
    assert sent and all("/Tables" not in path for path in sent), sent
    assert all(f"/{ACCOUNTS_TABLE}(" in path for path in sent), sent


def test_by_connection_string_the_tables_are_made_sure_of_first(azurite, sent):
    tables = Tables(TableServiceClient.from_connection_string(azurite.connection_string))
    tables.ping()
    assert sent[0].startswith("GET ") and "/Tables" in sent[0], "one Query Tables before the first table's use"


def test_the_health_ping_names_a_table_that_does_not_exist(azurite):
    tables = Tables(TableServiceClient.from_connection_string(azurite.connection_string), create=False)
    with pytest.raises(DependencyUnavailable) as caught:
        tables.ping("NoSuchPortalTable")
    assert "NoSuchPortalTable does not exist" in caught.value.detail


def read_only(azurite) -> TableServiceClient:
    """The tables through an account SAS that may read and list but not write: Azurite's stand-in for an
    identity given 'Storage Table Data Reader' where the app needs 'Contributor'."""
    from datetime import UTC, datetime, timedelta

    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
    from azure.data.tables import AccountSasPermissions, ResourceTypes, generate_account_sas

    shared_key = TableServiceClient.from_connection_string(azurite.connection_string)
    key = shared_key.credential
    sas = generate_account_sas(AzureNamedKeyCredential(key.named_key.name, key.named_key.key),
                               resource_types=ResourceTypes(service=True, object=True),
                               permission=AccountSasPermissions(read=True, list=True),
                               expiry=datetime.now(UTC) + timedelta(hours=1))
    return TableServiceClient(shared_key.url, credential=AzureSasCredential(sas))


def test_the_health_ping_is_refused_by_a_credential_that_may_read_the_tables_but_not_write_them(azurite,
                                                                                                account_store):
    """Health's one read of PortalAccounts said "reachable" while every login got 503 (its flow marker,
    and its audit row, are writes): the ping asks each login table for a write that changes nothing."""
    tables = Tables(read_only(azurite), create=False)
    with pytest.raises(DependencyUnavailable) as caught:
        tables.ping(*LOGIN_TABLES)
    assert "403" in caught.value.detail and ACCOUNTS_TABLE in caught.value.detail, caught.value.detail


def test_the_health_ping_names_each_login_table_it_cannot_reach_not_only_the_first(azurite, account_store):
    tables = Tables(TableServiceClient.from_connection_string(azurite.connection_string), create=False)
    tables.ping(*LOGIN_TABLES)  # the app's own tables, there and writable: nothing to say
    with pytest.raises(DependencyUnavailable) as caught:
        tables.ping(ACCOUNTS_TABLE, "NoSuchFlowsTable")
    assert "NoSuchFlowsTable does not exist" in caught.value.detail, caught.value.detail


class BlackHole:
    """A storage endpoint that accepts connections and never answers (a network black hole)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self._listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept(): close alone leaves it listening
        self._listener.close()
        for conn in self.held:
            conn.close()


def test_first_uses_at_once_against_silent_storage_share_one_attempt_and_the_next_use_tries_again():
    """The tables are made sure of once, single-flight: requests arriving while that attempt waits share
    its outcome (as refreshing.py's reads), so each gets its 503 within one read timeout, not one
    timeout each in turn (once 6.4, 12.8, 19.2, 25.6 s for four). A failure is not kept."""
    hole = BlackHole()
    try:
        tables = Tables.from_settings(azurite_connection_string(hole.port, new_account_key()), None, lambda: None)
        begun, outcomes = time.monotonic(), []

        def first_use() -> None:
            try:
                tables.client(FLOWS_TABLE)
            except DependencyUnavailable as err:
                outcomes.append((err.detail, time.monotonic() - begun))

        threads = [threading.Thread(target=first_use) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(outcomes) == 4, outcomes
        assert max(elapsed for _, elapsed in outcomes) < READ_TIMEOUT + 2, outcomes
        assert len(hole.held) == 1, f"one attempt for all four: {len(hole.held)} connections"
    finally:
        hole.close()
    with pytest.raises(DependencyUnavailable) as caught:  # now refused: a new attempt, failing at once
        tables.client(FLOWS_TABLE)
    assert "ServiceRequestError" in caught.value.detail, caught.value


def test_a_sas_in_the_connection_string_reaches_no_log_record_even_at_debug(azurite, account_store, caplog):
    """TABLES_CONNECTION_STRING may hold a SharedAccessSignature, which the SDK sends as the query of
    every request URL: urllib3 logs each request's URL at DEBUG (`"GET /PortalAccounts(...)?sv=...&sig=..."`),
    the level PYTHON_ENABLE_DEBUG_LOGGING sets on the worker's root logger. The worker holds urllib3
    at INFO (shared/worker.py QUIET_LOGGERS), as tools.host does."""
    from datetime import UTC, datetime, timedelta

    from azure.data.tables import AccountSasPermissions, ResourceTypes, generate_account_sas

    from shared.worker import quiet_loggers

    key = TableServiceClient.from_connection_string(azurite.connection_string).credential.named_key
    sas = generate_account_sas(AzureNamedKeyCredential(key.name, key.key),
                               resource_types=ResourceTypes(service=True, container=True, object=True),
                               permission=AccountSasPermissions(read=True, write=True, add=True, update=True,
                                                                delete=True, list=True),
                               expiry=datetime.now(UTC) + timedelta(hours=1))
    signature = parse_qs(sas)["sig"][0]
    endpoint = TableServiceClient.from_connection_string(azurite.connection_string).url
    tables = Tables.from_settings(f"TableEndpoint={endpoint};SharedAccessSignature={sas}", None, lambda: None)
    table = tables.client(ACCOUNTS_TABLE)

    def leaked_through() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            table.upsert_entity({"PartitionKey": "sas-probe@contoso.test", "RowKey": "user", "Enabled": False})
            assert table.get_entity("sas-probe@contoso.test", "user")["Enabled"] is False, "the SAS works"
            table.delete_entity("sas-probe@contoso.test", "user")
        return sorted({r.name for r in caplog.records
                       if signature in r.getMessage() or quote(signature) in r.getMessage()})

    urllib3_logger = logging.getLogger("urllib3")
    urllib3_logger.setLevel(logging.NOTSET)
    assert leaked_through(), "urllib3 at DEBUG logs no URL here: the check below would prove nothing"
    quiet_loggers()
    assert leaked_through() == [], "the SAS signature reached the log"
    assert urllib3_logger.isEnabledFor(logging.WARNING), "urllib3's warnings are still written"
