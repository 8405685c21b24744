"""300 logins, 30 browsers at a time, through tools.host against the local stack (the dev IdP's real
login page, Azurite): every one succeeds, every session token is distinct, the audit table holds exactly
one success row for each, and the process's memory does not grow with the logins."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import jwt
import requests

from shared.audit import day_key
from shared.tables import EVENTS_TABLE
from tests.conftest import APP_BASE, DEMO_AGENT
from tests.support.portal import delivered, sign_in

LOGINS, BROWSERS = 300, 30
PAGE_SIZE = 4096


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def test_three_hundred_logins_thirty_at_a_time_all_succeed_with_unique_tokens_and_rows(
        app_server, demo_accounts, account_store):
    from shared.runtime import get_runtime

    local = threading.local()  # one browser (a session with its cookies and connections) per thread

    def login(_: int) -> str:
        if not hasattr(local, "browser"):
            local.browser = requests.Session()
        response = sign_in(local.browser, APP_BASE, "agent", DEMO_AGENT)
        assert response.status_code == 200, response.text[:300]
        return delivered(response)[1]["session_token"]

    with ThreadPoolExecutor(BROWSERS) as pool:
        list(pool.map(login, range(BROWSERS)))  # warm: every browser's connections, the app's caches
        started, rss_before = datetime.now(UTC), rss_bytes()
        begun = time.monotonic()
        tokens = list(pool.map(login, range(LOGINS)))
        elapsed = time.monotonic() - begun
    growth = rss_bytes() - rss_before

    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
    assert len(tokens) == LOGINS and len(jtis) == LOGINS, "every login got its own session token (unique jti)"
    events = get_runtime().tables.client(EVENTS_TABLE)
    rows = [r for day in sorted({day_key(started), day_key(datetime.now(UTC))})
            for r in events.query_entities("PartitionKey eq @day and At ge @since and AccountId eq @account",
                                           parameters={"day": day, "since": started - timedelta(seconds=1),
                                                       "account": "A-2001"})]
    successes = [r for r in rows if r["Outcome"] == "success" and r["At"] >= started]
    assert len(successes) == LOGINS, f"exactly one success row per login: {len(successes)}"
    assert growth < 20 * 2**20, f"RSS grew {growth / 2**20:.1f} MB over {LOGINS} logins"
    print(f"\n{LOGINS} logins, {BROWSERS} at a time: {elapsed:.1f} s, {LOGINS / elapsed:.0f}/s, "
          f"RSS growth {growth / 2**20:.1f} MB")
