"""Cold path: the app's tables are made sure of once per worker, in one round trip when they exist
(scripts/deploy creates them in Azure) and created on a fresh store; the first login start warms the
IdP's keys and the signer in the background."""

from __future__ import annotations

from shared.tables import ACCOUNTS_TABLE, APP_TABLES, EVENTS_TABLE, FLOWS_TABLE, Tables
from tools.stack import start_azurite


def test_first_use_creates_missing_tables_then_a_new_worker_spends_one_request(tmp_path):
    azurite = start_azurite(workdir=tmp_path)
    try:
        sent: list[str] = []

        def tables() -> Tables:
            return Tables.from_settings(azurite.connection_string, None, lambda: None,
                                        raw_request_hook=lambda r: sent.append(r.http_request.method))

        fresh = tables()
        fresh.client(FLOWS_TABLE)
        names = {t.name for t in fresh._service.list_tables()}
        assert set(APP_TABLES) <= names, f"all of the app's tables exist after first use: {names}"

        sent.clear()
        worker = tables()
        for name in (FLOWS_TABLE, ACCOUNTS_TABLE, EVENTS_TABLE, FLOWS_TABLE):
            worker.client(name)
        assert sent == ["GET"], f"a worker whose tables exist makes one request for all three: {sent}"
    finally:
        azurite.stop()


def test_first_login_start_warms_the_idp_keys_and_the_signer_in_the_background(use_settings):
    import time

    import requests

    from tests.conftest import APP_BASE

    runtime = use_settings()
    assert runtime.idp_keys().fetch_count == 0 and runtime.signing_key_secret.reads == 0, "a cold worker"
    started = requests.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False, timeout=20)
    assert started.status_code == 302
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (runtime.idp_keys().fetch_count, runtime.signing_key_secret.reads) != (1, 1):
        time.sleep(0.02)
    assert runtime.idp_keys().fetch_count == 1, "the IdP's keys are fetched before the first callback needs them"
    assert runtime.signing_key_secret.reads == 1, "the signing key is loaded before the first callback needs it"
    requests.get(f"{APP_BASE}/api/sso/agent/login", allow_redirects=False, timeout=20)
    time.sleep(0.2)
    assert (runtime.idp_keys().fetch_count, runtime.signing_key_secret.reads) == (1, 1), "warmed once per worker"
