"""What the app asks Table Storage for, by how it reaches it. With TABLES_ENDPOINT and its identity
(Azure, after scripts/deploy) the identity holds 'Storage Table Data Contributor' on each table alone:
the account's list of tables, and creating tables, are operations on the account it may not do, so
the app asks for its tables' rows and nothing else (an account-level Query Tables there would be a 403,
and every request a 503). Azurite has no RBAC to refuse it: what is sent is what the test checks."""

from __future__ import annotations

import pytest
import urllib3.connectionpool
from azure.data.tables import TableServiceClient

from shared.errors import DependencyUnavailable
from shared.tables import ACCOUNTS_TABLE, Tables


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
