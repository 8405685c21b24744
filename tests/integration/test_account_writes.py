"""A login writes the account only when something changed: the link once, LastLoginAt at most hourly
(every login is in SignInEvents anyway). Against Azurite, with the real SDK."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from shared.accounts import LAST_LOGIN_PRECISION
from shared.errors import IdentityMismatch


def etag_of(store, email: str) -> str:
    return store.get(email, "agent").etag


@pytest.fixture
def fresh_account(account_store):
    email = f"w{secrets.token_hex(3)}@contoso.test"  # short: the accounts CLI tests read aligned columns
    account_store.add(email, "agent", "A-" + secrets.token_hex(3), "Writes Test")
    return email


def test_first_login_links_and_later_logins_within_the_hour_write_nothing(account_store, fresh_account):
    first = datetime.now(UTC)
    linked = account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid", now=first)
    stored = account_store.get(fresh_account, "agent")
    assert stored.linked_idp_subject == "tid:oid" and stored.last_login_at == linked.last_login_at, \
        "the first login writes the link and the login time"
    etag = stored.etag
    for minutes in (1, 30, 59):
        account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid",
                                            now=first + timedelta(minutes=minutes))
    assert etag_of(account_store, fresh_account) == etag, "logins within the hour leave the row untouched"


def test_login_an_hour_after_the_recorded_one_refreshes_last_login_at(account_store, fresh_account):
    first = datetime.now(UTC)
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid", now=first)
    etag = etag_of(account_store, fresh_account)
    later = first + LAST_LOGIN_PRECISION + timedelta(seconds=1)
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid", now=later)
    stored = account_store.get(fresh_account, "agent")
    assert stored.etag != etag and abs(stored.last_login_at - later) < timedelta(milliseconds=1), \
        "LastLoginAt is refreshed once it is an hour old"


def test_a_recent_login_time_does_not_let_another_person_in(account_store, fresh_account):
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid")
    with pytest.raises(IdentityMismatch):
        account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:someone-else")


def test_a_login_time_written_after_ours_by_a_racing_login_counts_as_recent(account_store, fresh_account):
    """Two logins of one person race: the one whose clock read came first re-reads the row the other
    wrote, with a LastLoginAt after its own `now`. That is recent, not a reason to write again."""
    ours = datetime.now(UTC)
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid",
                                        now=ours + timedelta(milliseconds=5))
    etag = etag_of(account_store, fresh_account)
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid", now=ours)
    assert etag_of(account_store, fresh_account) == etag, "no second write for the same person's racing login"
