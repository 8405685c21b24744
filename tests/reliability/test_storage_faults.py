"""Table Storage fails while the app is warm: Azurite stopped mid-run and started again, and Azurite
behind a proxy that cuts a random share of requests (tests/support/fault_proxy.py). A person gets a
quick, clear "try again"; the app heals without a restart; and the sign-in record stays complete: every
callback has its audit row or its event in the error log, and no session token goes out without its row."""

from __future__ import annotations

import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests

from shared.audit import day_key
from shared.diagnostics import health as health_reply
from shared.errors import DependencyUnavailable
from shared.maintenance import purge
from shared.tables import ACCOUNTS_TABLE, EVENTS_TABLE, FLOWS_TABLE, Tables
from shared.transport import READ_TIMEOUT
from tests.conftest import APP_BASE, DEMO_USER
from tests.support.fault_proxy import FaultProxy
from tests.support.portal import assert_error_page, correlation_id, delivered, idp_answer, sign_in, start_login
from tools.idp_login import sign_in_at_idp
from tools.stack import azurite_connection_string, free_port, start_azurite

AZURITE_AUTOSAVE_SECONDS = 5  # Azurite writes its on-disk tables this often (LokiJS autosave), not at exit
SUCCESS_LINE = re.compile(r"sso\.callback .*outcome=(\w+) .*status=(\d+) .*correlation_id=(\S+)")


def seed(connection_string: str) -> Tables:
    tables = Tables.from_settings(connection_string, None, lambda: None)
    from shared.accounts import AccountStore

    AccountStore(tables.client(ACCOUNTS_TABLE)).add(DEMO_USER["claims"]["email"], "user", "U-1001", "Demo User")
    return tables


def refusal_lines(records, name: str, cid: str, cause: str) -> None:
    """The log lines RELIABILITY.md promises for a table step that failed: the attempt's line with its
    reason and the storage error's name, and the whole event of its unwritable audit row."""
    lines = [r.getMessage() for r in records]
    stage = "sso.login" if name == "login start" else "sso.callback"
    assert any(m.startswith(f"{stage} ") and " reason=table_storage_unavailable " in m
               and f"correlation_id={cid} " in m and f'detail="table_storage: {cause}"' in m for m in lines), \
        (name, lines)
    assert any(m.startswith(f"sso.audit_failed correlation_id={cid} reason=table_storage_unavailable event={{")
               and f'"correlation_id": "{cid}"' in m for m in lines), (name, lines)


def test_table_storage_dies_mid_run_gives_quick_503s_and_heals_without_a_restart(use_settings, tmp_path, caplog):
    port = free_port()
    azurite = start_azurite(port, workdir=tmp_path, on_disk=True)
    try:
        seed(azurite.connection_string)
        use_settings(TABLES_CONNECTION_STRING=azurite.connection_string)
        assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200, "warm: pooled connections"
        time.sleep(AZURITE_AUTOSAVE_SECONDS + 0.5)  # so the restart finds the tables: an outage, not a data loss
        session = requests.Session()
        started = start_login(session, APP_BASE, "user")
        action, fields = sign_in_at_idp(session, started.headers["Location"], DEMO_USER["login"],
                                        DEMO_USER["password"])
        azurite.stop()
        for name, call in (("login start", lambda: start_login(requests.Session(), APP_BASE, "user")),
                           ("callback", lambda: session.post(action, data=fields, allow_redirects=False, timeout=20))):
            caplog.clear()
            begun = time.monotonic()
            with caplog.at_level(logging.INFO, logger="portal_sso"):
                response = call()
            elapsed = time.monotonic() - begun
            assert response.status_code == 503, f"{name}: {response.status_code} {response.text[:300]}"
            assert response.headers["Retry-After"] == "30" and "try again" in response.text.lower()
            refusal_lines(caplog.records, name, correlation_id(response), "ServiceRequestError")
            assert elapsed < 3, f"{name} took {elapsed:.1f} s to become a 503 (a dead pooled connection must not hang)"
        azurite = start_azurite(port, workdir=tmp_path, key=azurite.account_key, on_disk=True)
        response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
        assert response.status_code == 200, f"healed without a restart: {response.status_code} {response.text[:300]}"
    finally:
        azurite.stop()


def test_with_a_fifth_of_storage_requests_failing_every_callback_keeps_its_record(use_settings, azurite, caplog):
    seed(azurite.connection_string)
    with FaultProxy(azurite.port, failure_rate=0.2, seed=20261128) as proxy:
        use_settings(TABLES_CONNECTION_STRING=azurite_connection_string(proxy.port, azurite.account_key))
        statuses: dict[str, int] = {}
        tokens: dict[str, str] = {}
        with caplog.at_level(logging.INFO, logger="portal_sso"):
            attempts = 0
            while len(statuses) < 100 and attempts < 400:
                attempts += 1
                session = requests.Session()
                started = start_login(session, APP_BASE, "user")
                if started.status_code != 302:
                    assert started.status_code == 503, started.text[:300]
                    continue  # the flow could not be stored: no callback to make
                action, fields = sign_in_at_idp(session, started.headers["Location"], DEMO_USER["login"],
                                                DEMO_USER["password"])
                before = len(caplog.records)
                response = session.post(action, data=fields, allow_redirects=False, timeout=20)
                lines = [SUCCESS_LINE.search(r.getMessage()) for r in caplog.records[before:]]
                _, status, cid = next(m.groups() for m in lines if m)
                assert int(status) == response.status_code
                statuses[cid] = response.status_code
                if response.status_code == 200:
                    tokens[cid] = delivered(response)[1]["session_token"]
                else:
                    assert response.status_code in (400, 503), response.text[:300]
        failed_audits = {m.group(1) for r in caplog.records
                         if (m := re.search(r"sso\.audit_failed correlation_id=(\S+) .*event=\{", r.getMessage()))}
    assert len(statuses) == 100, f"100 callbacks were made ({attempts} attempts)"
    assert any(e.fault for e in proxy.exchanges), "faults were injected"
    events = Tables.from_settings(azurite.connection_string, None, lambda: None).client(EVENTS_TABLE)
    today = day_key(datetime.now(UTC))
    rows = {row.get("CorrelationId"): row for row in events.query_entities("PartitionKey eq @day",
                                                                           parameters={"day": today})}
    missing = [cid for cid in statuses if cid not in rows and cid not in failed_audits]
    assert not missing, f"callbacks with neither an audit row nor a logged event: {missing}"
    unaudited = [cid for cid in tokens if cid not in rows or rows[cid]["Outcome"] != "success"]
    assert not unaudited, f"session tokens delivered without their success row: {unaudited}"
    assert len(tokens) >= 50, f"most callbacks still succeed with a fifth of requests failing: {len(tokens)}"


def test_table_storage_that_stops_answering_gives_503s_in_bounded_time_and_heals(use_settings, azurite, caplog):
    """A black hole rather than a stopped process: the pooled connections stay open and swallow every
    request (no FIN, no RST), as when a load balancer silently drops an idle connection. Each table step
    costs one read timeout, never a retry of it: login start and callback each make two (the flow, then
    the audit row of the refusal)."""
    seed(azurite.connection_string)
    with FaultProxy(azurite.port) as proxy:
        use_settings(TABLES_CONNECTION_STRING=azurite_connection_string(proxy.port, azurite.account_key))
        assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200, "warm: pooled connections"
        session = requests.Session()
        started = start_login(session, APP_BASE, "user")
        action, fields = sign_in_at_idp(session, started.headers["Location"], DEMO_USER["login"],
                                        DEMO_USER["password"])
        proxy.hanging = True
        bound = 2 * READ_TIMEOUT + 2

        def timed(call):
            begun = time.monotonic()
            return call(), time.monotonic() - begun

        with caplog.at_level(logging.INFO, logger="portal_sso"), ThreadPoolExecutor(2) as pool:
            # both at once: the test waits for the timeouts only once
            results = list(pool.map(timed, (lambda: start_login(requests.Session(), APP_BASE, "user"),
                                            lambda: session.post(action, data=fields, allow_redirects=False,
                                                                 timeout=60))))
        for name, (response, elapsed) in zip(("login start", "callback"), results, strict=True):
            assert response.status_code == 503, f"{name}: {response.status_code} {response.text[:300]}"
            assert response.headers["Retry-After"] == "30" and "try again" in response.text.lower()
            refusal_lines(caplog.records, name, correlation_id(response), "ServiceResponseTimeoutError")
            assert elapsed < bound, f"{name} took {elapsed:.1f} s: a hung table call was retried (bound {bound} s)"
        hung = [e for e in proxy.exchanges if e.fault == "hung"]
        assert len(hung) == 4, f"one attempt per table step, none repeated: {[(e.method, e.path) for e in hung]}"
        proxy.hanging = False
        proxy.cut_all()  # the swallowed connections die; the next requests open new ones
        response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
        assert response.status_code == 200, f"healed without a restart: {response.status_code} {response.text[:300]}"


def audit_inserts(proxy: FaultProxy, since: int) -> list:
    return [e for e in proxy.exchanges[since:] if e.method == "PUT" and f"/{EVENTS_TABLE}(" in e.path]


def test_an_audit_insert_that_fails_twice_is_tried_again_and_the_login_succeeds_with_its_row(use_settings, azurite):
    """RELIABILITY.md: the audit insert, up to 3 attempts 50 and 150 ms apart. Its first two attempts are
    cut before Azurite sees them (a dropped connection): the third writes the row, the login succeeds."""
    tables = seed(azurite.connection_string)
    with FaultProxy(azurite.port) as proxy:
        use_settings(TABLES_CONNECTION_STRING=azurite_connection_string(proxy.port, azurite.account_key))
        cuts = [2]

        def first_two_inserts(exchange) -> str:
            if exchange.method == "PUT" and f"/{EVENTS_TABLE}(" in exchange.path and cuts[0]:
                cuts[0] -= 1
                return "before"
            return ""

        proxy.decide = first_two_inserts
        since = len(proxy.exchanges)
        response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
        assert response.status_code == 200, f"the third attempt wrote the row: {response.text[:300]}"
        inserts = audit_inserts(proxy, since)
    assert [(e.fault, e.status) for e in inserts] == [("before", None), ("before", None), ("", 204)], \
        [(e.fault, e.status, e.path) for e in inserts]
    assert len({e.path for e in inserts}) == 1, "every attempt writes the same row (an idempotent PUT)"
    row_key = re.search(r"RowKey='([^']+)'", inserts[0].path).group(1)
    rows = list(tables.client(EVENTS_TABLE).query_entities("RowKey eq @rk", parameters={"rk": row_key}))
    assert [(r["Outcome"], r["Status"]) for r in rows] == [("success", 200)], rows


def test_an_audit_insert_that_keeps_failing_stops_at_three_attempts_and_none_after_half_a_second(
        use_settings, azurite, caplog):
    """Every attempt of the audit insert fails: quickly (three attempts, no fourth), then slowly, 0.25 s
    each (the second ends past the 0.5 s budget: no third). The success becomes a 503 and the whole
    event goes to the error log."""
    seed(azurite.connection_string)
    with FaultProxy(azurite.port) as proxy:
        use_settings(TABLES_CONNECTION_STRING=azurite_connection_string(proxy.port, azurite.account_key))
        proxy.decide = lambda e: "before" if e.method == "PUT" and f"/{EVENTS_TABLE}(" in e.path else ""
        for cut_delay, attempts in ((0.0, 3), (0.25, 2)):
            proxy.cut_delay = cut_delay
            since = len(proxy.exchanges)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="portal_sso"):
                response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
            assert response.status_code == 503, f"no session without its row: {response.text[:300]}"
            assert response.headers["Retry-After"] == "30"
            inserts = audit_inserts(proxy, since)
            assert [e.fault for e in inserts] == ["before"] * attempts, \
                f"failing after {cut_delay} s each: {[(e.fault, e.path) for e in inserts]}"
            cid = correlation_id(response)
            assert any(r.getMessage().startswith(f"sso.audit_failed correlation_id={cid} ") and '"outcome": "success"'
                       in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def page_for_gets_of(table: str, fault: str = "page"):
    """FaultProxy.decide: the reads of `table` answered with a gateway's 200 HTML page (or, "json", a 200
    of JSON that is no table data)."""
    return lambda exchange: fault if exchange.method == "GET" and f"/{table}" in exchange.path else ""


@pytest.mark.parametrize("fault", ["page", "json"])
def test_table_storage_answering_a_page_to_a_read_is_a_503_and_heals(use_settings, azurite, caplog, fault):
    """A 200 text/html where rows should be: the SDK raises DeserializationError (a ValueError, no
    HttpResponseError), which on old main went past storage_errors: the callback was a 500, health a bug.
    A 200 of JSON that is no table data made the SDK hand back a "row" without its keys: a 500 (KeyError)."""
    seed(azurite.connection_string)
    with FaultProxy(azurite.port) as proxy:
        runtime = use_settings(TABLES_CONNECTION_STRING=azurite_connection_string(proxy.port, azurite.account_key))
        assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200, "warm"
        session = requests.Session()
        action, fields = idp_answer(session, APP_BASE, "user", DEMO_USER)
        proxy.decide = page_for_gets_of(ACCOUNTS_TABLE, fault)  # the callback's account read
        since = len(proxy.exchanges)
        with caplog.at_level(logging.INFO, logger="portal_sso"):
            response = session.post(action, data=fields, allow_redirects=False, timeout=20)
        assert any(e.fault == fault for e in proxy.exchanges[since:]), "the account read met the page"
        row = assert_error_page(response, 503, runtime, "table_storage_unavailable")
        assert response.headers["Retry-After"] == "30"
        assert row["Detail"] == "table_storage: DeserializationError", row["Detail"]
        assert "Service Unavailable" not in caplog.text, "what storage answered is never quoted"

        reply = health_reply(runtime)
        tables = json.loads(reply.body)["checks"]["tables"]
        assert reply.status == 503 and reply.headers["Retry-After"] == "30", reply.status
        said = "unreachable: table_storage: table PortalAccounts: DeserializationError"
        assert not tables["ok"] and tables["detail"] == said, tables

        proxy.decide = None
        assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200, "healed, no restart"
        assert json.loads(health_reply(runtime).body)["checks"]["tables"]["ok"]


def test_the_purge_meeting_a_page_for_its_query_raises_dependency_unavailable(use_settings, azurite):
    """shared/maintenance.py: the timer's run fails with DependencyUnavailable (the next run retries)."""
    with FaultProxy(azurite.port) as proxy:
        runtime = use_settings(TABLES_CONNECTION_STRING=azurite_connection_string(proxy.port, azurite.account_key))
        purge(runtime)  # tables made, nothing in the way
        proxy.decide = page_for_gets_of(FLOWS_TABLE)
        with pytest.raises(DependencyUnavailable) as raised:
            purge(runtime)
        assert raised.value.reason == "table_storage_unavailable"
        proxy.decide = None
        purge(runtime)
