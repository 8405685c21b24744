"""The purge of abandoned logins and old sign-in events, against Azurite."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.audit import day_key
from shared.maintenance import purge
from shared.runtime import Runtime


def make_runtime(cs: str, **changes: str) -> Runtime:
    """Valid settings that need no IdP: the purge only touches tables."""
    env = {"OIDC_ISSUER_URL": "https://127.0.0.1:9/purge-test/v2.0", "OIDC_CLIENT_ID": "purge-test",
           "OIDC_CLIENT_SECRET": "unused", "SESSION_SIGNING_KEY": "unused", "TABLES_CONNECTION_STRING": cs,
           "PORTAL_USER_URL": "https://portal.test/user", "PORTAL_AGENT_URL": "https://portal.test/agent",
           "PUBLIC_BASE_URL": "https://app.test", **changes}
    return Runtime(env)


@pytest.fixture
def runtime(azurite) -> Runtime:
    runtime = make_runtime(azurite.connection_string)
    purge(runtime)  # start from tables that hold nothing purgeable, so the counts below are exact
    return runtime


def seed_flow(runtime: Runtime, started: datetime) -> str:
    state = secrets.token_urlsafe(12)
    runtime.flows.save(state, "user", "cid", now=started)
    return state


def seed_event(runtime: Runtime, at: datetime, table: str = "SignInEvents") -> tuple[str, str]:
    key = (day_key(at), f"{secrets.token_hex(8)}-purge-test")
    runtime.tables.client(table).create_entity(
        {"PartitionKey": key[0], "RowKey": key[1], "Kind": "purge-test", "Outcome": "success", "At": at})
    # (a kind of its own: the setup page shows the newest "user" row, and these must not pose as one)
    return key


def exists(client, partition: str, row: str) -> bool:
    try:
        client.get_entity(partition, row)
    except ResourceNotFoundError:
        return False
    return True


def test_purge_deletes_exactly_expired_flows_and_events_past_retention(runtime):
    now = datetime.now(UTC)
    flows_table = runtime.tables.client("SsoFlows")
    events_table = runtime.tables.client("SignInEvents")
    # An expired marker stays FLOW_PURGE_GRACE (an hour) past its 10 minutes: a person back late is told
    # "expired" (the marker says so), not "unknown"; the callback refuses it all the same.
    expired = [seed_flow(runtime, now - timedelta(minutes=71)), seed_flow(runtime, now - timedelta(days=2))]
    live = [seed_flow(runtime, now - timedelta(minutes=9)), seed_flow(runtime, now),
            seed_flow(runtime, now - timedelta(minutes=11)), seed_flow(runtime, now - timedelta(minutes=69))]
    old = [seed_event(runtime, now - timedelta(days=d)) for d in (91, 120, 400)]
    recent = [seed_event(runtime, now - timedelta(days=d)) for d in (0, 1, 89, 90)]

    directory = runtime.tables.client("DirectoryEvents")
    old_directory = [seed_event(runtime, now - timedelta(days=d), "DirectoryEvents") for d in (91, 365)]
    recent_directory = [seed_event(runtime, now - timedelta(days=d), "DirectoryEvents") for d in (0, 90)]

    assert purge(runtime, now) == {"flows": 2, "events": 3, "directory_events": 2}

    assert not any(exists(flows_table, s, "user") for s in expired), "expired flows are gone"
    assert all(exists(flows_table, s, "user") for s in live), "a login still under way keeps its flow"
    assert not any(exists(events_table, *k) for k in old), "events before the 90-day window are gone"
    assert all(exists(events_table, *k) for k in recent), "events of the last 90 days stay"
    assert not any(exists(directory, *k) for k in old_directory), "directory sync's old audit rows go too"
    assert all(exists(directory, *k) for k in recent_directory)
    assert purge(runtime, now) == {"flows": 0, "events": 0, "directory_events": 0}, "a second run finds nothing"
    # Azurite is shared by the session: today's seeded row would pose as directory sync's last request.
    for key in recent_directory:
        directory.delete_entity(*key)


def test_retention_follows_the_setting(runtime, azurite):
    now = datetime.now(UTC)
    kept_by_default = seed_event(runtime, now - timedelta(days=45))
    young = seed_event(runtime, now - timedelta(days=10))
    assert purge(runtime, now)["events"] == 0
    short = make_runtime(azurite.connection_string, SIGNIN_EVENTS_RETENTION_DAYS="30")
    assert purge(short, now)["events"] >= 1  # other tests' rows of 31-90 days ago may go too
    assert not exists(runtime.tables.client("SignInEvents"), *kept_by_default), "45 days > 30 days' retention"
    assert exists(runtime.tables.client("SignInEvents"), *young)


def test_the_timer_function_purges(runtime, monkeypatch):
    import shared.runtime
    from functions.maintenance import purge_expired_rows

    function = purge_expired_rows._function
    assert function.get_trigger().schedule == "0 */15 * * * *"
    abandoned = seed_flow(runtime, datetime.now(UTC) - timedelta(hours=2))
    # The worker's runtime is this one for the call; monkeypatch puts back whatever was there (the
    # app server's, when other tests run in the same session).
    monkeypatch.setattr(shared.runtime, "_runtime", runtime)
    function.get_user_function()(SimpleNamespace(past_due=False))
    assert not exists(runtime.tables.client("SsoFlows"), abandoned, "user")
