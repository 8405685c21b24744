"""A dependency's `Retry-After` holds a request no longer than its retry budget (RELIABILITY.md: 2 retries
within 6 s; the managed identity's 503 in under 3 s). azure-core's RetryPolicy sleeps the whole
Retry-After before it looks at its budget: Key Vault's 429 `Retry-After: 20` held a read 20 s, a busy
table's 503 `Retry-After: 10` 10 s, the identity endpoint's 429 `Retry-After: 15` 30 s (twice). The real
SecretClient and DefaultAzureCredential against the Key Vault stub, the real Tables SDK against Azurite
behind the fault proxy (which answers storage's busy 503 in Azurite's place)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from azure.data.tables import TableServiceClient

from shared.errors import DependencyUnavailable
from shared.runtime import _default_credential
from shared.tables import Tables
from shared.transport import READ_TIMEOUT
from shared.vault import KeyVaultReader
from tests.support.fault_proxy import FaultProxy
from tools.stack import azurite_connection_string

pytestmark = pytest.mark.usefixtures("loopback_only")


def timed(call) -> tuple[object, float]:
    begun = time.monotonic()
    try:
        outcome = call()
    except Exception as exc:  # what the caller gets, compared by the test
        outcome = exc
    return outcome, time.monotonic() - begun


def statuses(stub, server: str) -> list[int]:
    return [r.status for r in stub.log if r.server == server]


def test_key_vaults_retry_after_past_the_budget_is_a_503_at_once_not_a_wait(stub):
    stub.set_secret("s", "v1")
    reader = KeyVaultReader.from_url(stub.url, _default_credential())
    assert reader.read("s").value == "v1"  # the token is cached: only the vault's answers count below
    asked = stub.requests_for("s")
    stub.fail_next(10, 429, retry_after="20")
    outcome, elapsed = timed(lambda: reader.read("s"))
    assert isinstance(outcome, DependencyUnavailable) and "HTTP 429" in outcome.detail, outcome
    assert elapsed < 1, f"Retry-After: 20 held the read {elapsed:.1f} s (the budget is {READ_TIMEOUT} s)"
    assert statuses(stub, "vault")[-1:] == [429] and stub.requests_for("s") == asked + 1, \
        "not asked again sooner than it said: one request, no retry"


def test_a_retry_after_within_the_budget_is_still_waited_for(stub):
    stub.set_secret("s", "v1")
    reader = KeyVaultReader.from_url(stub.url, _default_credential())
    reader.read("s")
    stub.fail_next(1, 429, retry_after="1")
    outcome, elapsed = timed(lambda: reader.read("s"))
    assert getattr(outcome, "value", outcome) == "v1"
    assert 1 <= elapsed < 2, f"the retry waits the Retry-After it was given, no more: {elapsed:.2f} s"


def test_the_identity_endpoints_retry_after_does_not_hold_a_cold_read(stub):
    stub.set_secret("s", "v1")
    reader = KeyVaultReader.from_url(stub.url, _default_credential())
    stub.fail_next(10, 429, server="identity", retry_after="15")
    outcome, elapsed = timed(lambda: reader.read("s"))
    assert isinstance(outcome, DependencyUnavailable), outcome
    assert elapsed < 3, f"the identity endpoint's Retry-After: 15 held the read {elapsed:.1f} s"
    assert statuses(stub, "identity") == [429], "one request: it asked not to be asked again so soon"


@pytest.fixture
def busy_storage(azurite):
    """Azurite behind the fault proxy; `proxy.decide` makes chosen requests storage's busy 503."""
    with FaultProxy(target_port=azurite.port) as proxy:
        tables = Tables.from_settings(azurite_connection_string(proxy.port, azurite.account_key), None, lambda: None)
        tables.ping()  # the tables made sure of, the connection warm
        yield proxy, tables


def test_a_busy_tables_retry_after_past_the_budget_is_a_503_at_once(busy_storage):
    proxy, tables = busy_storage
    proxy.busy_retry_after, proxy.decide = 10, lambda exchange: "busy"
    outcome, elapsed = timed(tables.ping)
    assert isinstance(outcome, DependencyUnavailable) and "HTTP 503" in outcome.detail, outcome
    assert elapsed < 1, f"Retry-After: 10 held the table read {elapsed:.1f} s (the budget is {READ_TIMEOUT} s)"
    assert [e.fault for e in proxy.exchanges[-1:]] == ["busy"] and sum(e.fault == "busy" for e in proxy.exchanges) == 1


def test_a_busy_tables_short_retry_after_is_waited_and_the_retry_succeeds(busy_storage):
    proxy, tables = busy_storage
    answered: list[str] = []
    proxy.busy_retry_after = 1
    proxy.decide = lambda exchange: "" if answered else answered.append("busy") or "busy"
    outcome, elapsed = timed(tables.ping)
    assert outcome is None, outcome
    assert 1 <= elapsed < 2, f"{elapsed:.2f} s"


def test_a_busy_tables_retry_after_ends_the_audit_rows_own_retries_at_once(busy_storage):
    """The audit insert retries by itself (the SDK's off: a browser is waiting), and asked again 0.05 and
    0.2 s after storage's 503 said Retry-After: 10 (RELIABILITY.md: the service is asked again by the next
    request, not sooner)."""
    import uuid

    from shared.audit import SignInEvent, SignInEvents
    from shared.tables import EVENTS_TABLE

    proxy, tables = busy_storage
    events = SignInEvents(tables.client(EVENTS_TABLE))
    proxy.busy_retry_after, proxy.decide = 10, lambda exchange: "busy" if exchange.method == "PUT" else ""
    outcome, _ = timed(lambda: events.record(SignInEvent(correlation_id=str(uuid.uuid4()), kind="user",
                                                         outcome="failure", reason="test", status=400)))
    assert isinstance(outcome, DependencyUnavailable), outcome
    assert sum(e.fault == "busy" for e in proxy.exchanges) == 1, [e.fault for e in proxy.exchanges]


def test_the_tables_budget_rests_on_a_private_hook_that_still_exists():
    """azure-data-tables builds its retry policy in TableServiceClient._configure_policies (no public
    option chooses it); shared.tables overrides that method. Renamed, the override would be dead code
    and the waits above would come back: this says so by name."""
    from shared.tables import table_service

    assert callable(getattr(TableServiceClient, "_configure_policies", None))
    service = table_service(azurite_connection_string(1, "a2V5"))  # no I/O: nothing is sent
    kinds = [type(p).__name__ for p in service._policies]
    assert kinds.count("BudgetedTablesRetryPolicy") == 1 and "TablesRetryPolicy" not in kinds, kinds


def test_a_silent_identity_endpoint_costs_one_read_timeout_not_the_sdks_five_minutes(stub, monkeypatch):
    """The credential's transport had azure-core's defaults (connect and read 300 s): an identity
    endpoint that accepts and never answers held a cold read for minutes. It has the Azure clients'
    timeouts now (connect 3 s, read 6 s), and its budget leaves no retry after a timed-out attempt."""
    hole = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                held.append(hole.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{hole.getsockname()[1]}/msi/token")
        stub.set_secret("s", "v1")
        reader = KeyVaultReader.from_url(stub.url, _default_credential())
        outcome, elapsed = timed(lambda: reader.read("s"))
        assert isinstance(outcome, DependencyUnavailable), outcome
        assert elapsed < READ_TIMEOUT + 1.5, f"a silent identity endpoint held the read {elapsed:.1f} s"
        assert len(held) == 1, f"one attempt, not repeated after its timeout: {len(held)} connections"
    finally:
        hole.shutdown(socket.SHUT_RDWR)  # wakes the accept(): close alone leaves it listening
        hole.close()
        for conn in held:
            conn.close()
