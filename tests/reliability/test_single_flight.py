"""A dependency that accepts and never answers, met by many requests at once (shared/refreshing.py):
with nothing cached, one attempt is made and everyone waiting shares its 503 within one timeout (not
one timeout each, in turn); with a value cached and due for its re-read, one request re-reads and
every other gets the cached value at once; a request that never needs the IdP never waits on it.
Real parts: the hostile IdP over HTTPS with the real app (tools.host); the Key Vault stub and a
silent TLS listener read by the real SecretClient."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from azure.identity import DefaultAzureCredential

from shared.errors import DependencyUnavailable
from shared.runtime import Runtime
from shared.scim.auth import TokenCache
from shared.transport import READ_TIMEOUT
from shared.vault import CachedSecret, KeyVaultReader
from tests.conftest import APP_BASE, REDIRECT_URIS
from tests.integration.test_tables_access import BlackHole
from tests.reliability.test_key_vault_outage import health
from tests.support.hostile_flow import switch_to
from tests.support.hostile_idp import HostileIdp
from tests.support.portal import assert_error_page, start_login
from tests.support.raw_answer import Listener
from tests.unit.test_config import env
from tools.stack import azurite_connection_string, new_account_key

TIMEOUT = 1  # the dependency's read timeout in these tests
CALLERS = 8
WARM = 0.5  # what a caller served from the cache may take, at most, while the one re-read waits
DISCOVERY, JWKS = "/.well-known/openid-configuration", "/discovery/v2.0/keys"


def at_once(call: Callable[[], object], n: int = CALLERS) -> list[tuple[float, object]]:
    """`call` from n threads released together: (seconds taken, result or exception) of each, fastest first."""
    barrier, results, lock = threading.Barrier(n), [], threading.Lock()

    def one() -> None:
        barrier.wait()
        started = time.monotonic()
        try:
            outcome = call()
        except Exception as exc:  # collected: the test asserts on it
            outcome = exc
        with lock:
            results.append((time.monotonic() - started, outcome))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(results, key=lambda r: r[0])


def requests_to(idp: HostileIdp, path: str) -> int:
    return sum(1 for method, p in idp.requests if method == "GET" and p.endswith(path))


def one_slow_the_rest_at_once(results: list[tuple[float, object]]) -> None:
    fast, (slowest, _) = results[:-1], results[-1]
    assert all(took < WARM for took, _ in fast), \
        f"every caller but the one re-reading is served the cached value at once: {[round(t, 2) for t, _ in results]}"
    assert slowest < TIMEOUT + 1.5, f"the re-read gave up after its timeout: {slowest:.1f} s"


# ---- the IdP ----

@pytest.fixture
def hostile_idp(test_ca):
    with HostileIdp(test_ca, redirect_uris=REDIRECT_URIS.values()) as hostile:
        yield hostile
        hostile.hang.clear()


@pytest.fixture
def app(hostile_idp, use_settings):
    return switch_to(hostile_idp, use_settings, IDP_TIMEOUT_SECONDS=str(TIMEOUT))


def test_a_silent_discovery_at_a_cold_start_is_one_request_and_everyone_gets_a_503_within_one_timeout(
        hostile_idp, app):
    hostile_idp.hang["discovery"] = TIMEOUT + 4
    credential_took: list[float] = []

    def credential_meanwhile() -> None:  # a request that needs only Table Storage or Key Vault
        deadline = time.monotonic() + 5
        while not requests_to(hostile_idp, DISCOVERY) and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        app.credential()
        credential_took.append(time.monotonic() - started)

    side = threading.Thread(target=credential_meanwhile)
    side.start()
    results = at_once(lambda: start_login(requests.Session(), APP_BASE, "user"))
    side.join()
    for _, response in results:
        assert_error_page(response, 503, app, "idp_unavailable")
    assert results[-1][0] < TIMEOUT + 1.5, \
        f"each of {CALLERS} waiting requests got its 503 within one timeout: {[round(t, 1) for t, _ in results]}"
    assert requests_to(hostile_idp, DISCOVERY) == 1, "the waiters shared the one attempt, none fetched again"
    assert credential_took and credential_took[0] < WARM, f"credential() waited on discovery: {credential_took}"

    hostile_idp.hang.clear()  # the next request after the failure tries again, and heals the worker
    assert start_login(requests.Session(), APP_BASE, "user").status_code == 302
    assert requests_to(hostile_idp, DISCOVERY) == 2


def test_a_health_check_at_a_cold_start_with_a_silent_discovery_tries_it_once_and_answers_within_one_timeout(
        hostile_idp, app):
    """The client secret's check asked the IdP (runtime.oidc) after the metadata's own check had failed,
    and so started a second discovery in the same request: two timeouts (about 20 s at the default, past
    Azure's 230 s HTTP limit at IDP_TIMEOUT_SECONDS=120) for the probe's one 503."""
    hostile_idp.hang["discovery"] = TIMEOUT + 4
    started = time.monotonic()
    checks = health(app)
    took = time.monotonic() - started
    assert checks["http_status"] == 503 and not checks["checks"]["idp_metadata"]["ok"], checks
    assert requests_to(hostile_idp, DISCOVERY) == 1, "one discovery attempt for the whole health check"
    assert took < TIMEOUT + 1.5, f"answered within one timeout: {took:.1f} s"
    secret = checks["checks"]["client_secret"]
    assert "not verified with the IdP" in secret["warning"], secret


def test_a_silent_jwks_endpoint_with_no_keys_cached_is_one_request_shared_by_every_waiter(hostile_idp, app):
    app.metadata()
    hostile_idp.hang["jwks"] = TIMEOUT + 4
    results = at_once(lambda: app.idp_keys().signing_key(hostile_idp.signing_key.kid, "RS256"))
    assert all(isinstance(outcome, DependencyUnavailable) for _, outcome in results), results
    assert results[-1][0] < TIMEOUT + 1.5, f"one timeout for all: {[round(t, 1) for t, _ in results]}"
    assert requests_to(hostile_idp, JWKS) == 1, "the waiters shared the one fetch"
    hostile_idp.hang.clear()
    assert app.idp_keys().signing_key(hostile_idp.signing_key.kid, "RS256"), "the next call fetches again"


def test_a_silent_idp_at_the_daily_refresh_holds_up_only_the_one_request_that_refreshes(hostile_idp, app):
    kid = hostile_idp.signing_key.kid
    held, key = app.metadata(), app.idp_keys().signing_key(kid, "RS256")
    app._metadata.expire()  # a day on (the caches' clock is time.monotonic)
    app.idp_keys()._keys.expire()
    hostile_idp.hang.update({"discovery": TIMEOUT + 4, "jwks": TIMEOUT + 4})
    discoveries, fetches = requests_to(hostile_idp, DISCOVERY), requests_to(hostile_idp, JWKS)

    metadata = at_once(app.metadata)
    assert all(outcome is held for _, outcome in metadata), "the metadata held serves everyone"
    one_slow_the_rest_at_once(metadata)
    keys = at_once(lambda: app.idp_keys().signing_key(kid, "RS256"))
    assert all(outcome.key_id == key.key_id for _, outcome in keys), keys
    one_slow_the_rest_at_once(keys)
    assert (requests_to(hostile_idp, DISCOVERY), requests_to(hostile_idp, JWKS)) == (discoveries + 1, fetches + 1), \
        "exactly one refresh of each was tried"
    again = at_once(app.metadata)
    assert again[-1][0] < WARM, "after the failed refresh, nobody waits for the IdP again before the retry interval"


# ---- Table Storage ----

def test_a_cold_workers_first_uses_of_its_stores_against_silent_storage_share_one_attempt():
    """The login's path to the tables (Runtime.flows, .accounts, .events), not Tables.client alone: each
    store waits on the tables' making sure of, so it must not be built under a lock of its own (Python
    3.11's cached_property holds one per property while it computes, and keeps no failure: four first
    uses of `flows` got their 503s at 6, 12, 18 and 24 s, each starting a new attempt)."""
    hole = BlackHole()
    try:
        runtime = Runtime(env(TABLES_CONNECTION_STRING=azurite_connection_string(hole.port, new_account_key())))
        stores = ["flows", "accounts", "events"] * 2  # two first uses of each store, all at once
        results = at_once(lambda: getattr(runtime, stores.pop()), len(stores))
        assert all(isinstance(outcome, DependencyUnavailable) for _, outcome in results), results
        assert results[-1][0] < READ_TIMEOUT + 2, f"one timeout for all: {[round(t, 1) for t, _ in results]}"
        assert len(hole.held) == 1, f"one attempt shared by every store and caller: {len(hole.held)} connections"
    finally:
        hole.close()
    with pytest.raises(DependencyUnavailable) as caught:  # not kept: a new attempt, refused at once now
        runtime.flows  # noqa: B018 (the first use is what is tested)
    assert "ServiceRequestError" in caught.value.detail, caught.value


# ---- Key Vault ----

class SilentTls(Listener):
    """A vault that completes the TLS handshake, then reads whatever comes and never answers."""

    def __init__(self, ca) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(str(ca.server_cert), str(ca.server_key))
        super().__init__("https")

    def serve(self, conn: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(conn, server_side=True)
            while tls.recv(65536):
                pass
        except OSError:
            pass


@pytest.fixture
def silent_vault(test_ca) -> Iterator[SilentTls]:
    vault = SilentTls(test_ca)
    yield vault
    vault.close()


class VaultThatGoesSilent:
    """Reads from the Key Vault stub until `silent` is set, then from a vault that never answers."""

    def __init__(self, stub, silent: SilentTls) -> None:
        credential = DefaultAzureCredential()  # the stub's managed-identity endpoint (stub.apply_env)
        one_attempt = {"read_timeout": TIMEOUT, "retry_total": 0}  # each read is one connection
        self._readers = (KeyVaultReader.from_url(stub.url, credential),
                         KeyVaultReader.from_url(silent.url, credential, **one_attempt))
        self.silent = False

    def read(self, name: str):
        return self._readers[self.silent].read(name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.usefixtures("loopback_only")
def test_a_silent_vault_at_a_secrets_re_read_holds_up_only_the_one_request_that_re_reads(stub, silent_vault):
    stub.set_secret("session-signing-key", "the key")
    vault, clock = VaultThatGoesSilent(stub, silent_vault), Clock()
    secret = CachedSecret(vault, "session-signing-key", 900, clock=clock)
    assert secret.get().value == "the key"
    vault.silent, clock.now = True, clock.now + 901  # due for its re-read, and the vault black-holed

    results = at_once(lambda: secret.get().value)
    assert [outcome for _, outcome in results] == ["the key"] * CALLERS, "the last good value serves everyone"
    one_slow_the_rest_at_once(results)
    assert silent_vault.connections == 1, "exactly one re-read was in flight"
    assert secret.unavailable_since is not None, "the health check turns amber"
    assert at_once(lambda: secret.get().value)[-1][0] < WARM, "the vault is not asked again before its retry"


@pytest.mark.usefixtures("loopback_only")
def test_a_silent_vault_for_a_secret_never_read_is_one_read_and_everyone_gets_its_error_within_one_timeout(
        stub, silent_vault):
    vault = VaultThatGoesSilent(stub, silent_vault)
    vault.silent = True
    secret = CachedSecret(vault, "oidc-client-secret", 900)
    results = at_once(secret.get)
    assert all(isinstance(outcome, DependencyUnavailable) for _, outcome in results), results
    assert results[-1][0] < TIMEOUT + 1.5, f"one timeout for all: {[round(t, 1) for t, _ in results]}"
    assert silent_vault.connections == 1, "the waiters shared the one read"
    vault.silent = False
    stub.set_secret("oidc-client-secret", "s")
    assert secret.get().value == "s", "not kept: the next call reads again"


@pytest.mark.usefixtures("loopback_only")
def test_a_silent_vault_at_directory_syncs_re_read_keeps_entra_in_without_waiting(stub, silent_vault):
    token = "T" * 40
    stub.set_secret("scim-token", token)
    vault, clock = VaultThatGoesSilent(stub, silent_vault), Clock()
    runtime = Runtime(env(KEY_VAULT_URL=stub.url, OIDC_CLIENT_SECRET=None, SESSION_SIGNING_KEY=None,
                          SECRET_CACHE_SECONDS="900"))
    runtime.secrets = vault
    tokens = TokenCache(runtime, clock=clock)
    assert tokens.get().accepts(f"Bearer {token}")
    vault.silent, clock.now = True, clock.now + 900

    results = at_once(lambda: tokens.get().accepts(f"Bearer {token}"))
    assert [outcome for _, outcome in results] == [True] * CALLERS, "Entra's token keeps working"
    one_slow_the_rest_at_once(results)
    assert silent_vault.connections == 1, "exactly one re-read was in flight"
    assert not tokens.reread_for_mismatch().accepts("Bearer " + "w" * 40), "a wrong token is still refused"
