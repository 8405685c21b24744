"""Account writes against Azurite, with the real SDK: a login writes only when something changed (the
link once, LastLoginAt at most hourly; every login is in SignInEvents anyway); every read-modify-write
is etag-checked; an `Enabled` that is not a real boolean counts as disabled."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import UpdateMode

from shared.accounts import LAST_LOGIN_PRECISION, AccountConflict, AccountStore
from shared.errors import AccountDisabled, IdentityMismatch, NoAccount
from tests.support.interleave import LandingAfterFirstRead


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


def test_two_people_racing_for_one_unlinked_account_only_the_first_to_write_gets_it(account_store, fresh_account):
    """A's login read the row unlinked; B's link landed before A's write: A's etag-checked write fails,
    the row is read again, and A is refused, whatever A's login read."""
    read_by_a = account_store.get(fresh_account, "agent")
    assert read_by_a.linked_idp_subject is None
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:person-b")
    with pytest.raises(IdentityMismatch):
        account_store.link_and_record_login(read_by_a, "tid:person-a")
    assert account_store.get(fresh_account, "agent").linked_idp_subject == "tid:person-b", "B keeps it"


def test_a_row_readded_without_an_account_id_during_a_login_is_no_account(account_store, fresh_account):
    """The link's write fails on the etag and the row is read again: that fresh row is held to
    find_account's rule too, or a token with an empty sub would be issued."""
    read_before = account_store.get(fresh_account, "agent")
    table = account_store._table
    table.upsert_entity({"PartitionKey": read_before.key, "RowKey": "agent", "Email": fresh_account, "Enabled": True},
                        mode=UpdateMode.REPLACE)  # removed and added again by hand, without AccountId
    with pytest.raises(NoAccount):
        account_store.link_and_record_login(read_before, "tid:person-a")


def test_a_login_time_written_after_ours_by_a_racing_login_counts_as_recent(account_store, fresh_account):
    """Two logins of one person race: the one whose clock read came first re-reads the row the other
    wrote, with a LastLoginAt after its own `now`. That is recent, not a reason to write again."""
    ours = datetime.now(UTC)
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid",
                                        now=ours + timedelta(milliseconds=5))
    etag = etag_of(account_store, fresh_account)
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid", now=ours)
    assert etag_of(account_store, fresh_account) == etag, "no second write for the same person's racing login"


# ---- every read-modify-write is etag-checked: a real interleaving against Azurite (issue 13 item 6)


class Interleaved:
    """The real TableClient, with `between()` run once right after the first read: another writer's
    change lands between our read and our write, as it would in production."""

    def __init__(self, table, between):
        self._table, self._between = table, between

    def get_entity(self, *args, **kwargs):
        entity = self._table.get_entity(*args, **kwargs)
        between, self._between = self._between, None
        if between:
            between()
        return entity

    def __getattr__(self, name):
        return getattr(self._table, name)


def test_a_disable_between_unlinks_read_and_write_is_kept(account_store, fresh_account):
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid")
    racing = AccountStore(Interleaved(account_store._table,
                                      lambda: account_store.update(fresh_account, "agent", Enabled=False)))
    assert racing.unlink(fresh_account, "agent")
    stored = account_store.get(fresh_account, "agent")
    assert stored.linked_idp_subject is None, "unlinked"
    assert stored.enabled is False, "the disable that landed between unlink's read and write is not lost"


def test_a_login_between_adds_read_and_write_is_not_silently_repointed(account_store, fresh_account):
    original = account_store.get(fresh_account, "agent").account_id
    racing = AccountStore(Interleaved(account_store._table, lambda: account_store.link_and_record_login(
        account_store.get(fresh_account, "agent"), "tid:first-person")))
    with pytest.raises(AccountConflict) as refused:
        racing.add(fresh_account, "agent", "A-OTHER", "Someone Else")
    assert original in str(refused.value) and "tid:first-person" in str(refused.value), \
        "the refusal names the account and the link it would change"
    stored = account_store.get(fresh_account, "agent")
    assert (stored.account_id, stored.linked_idp_subject) == (original, "tid:first-person")


def test_add_over_a_linked_account_of_another_id_needs_force(account_store, fresh_account):
    original = account_store.get(fresh_account, "agent").account_id
    account_store.link_and_record_login(account_store.get(fresh_account, "agent"), "tid:oid")
    with pytest.raises(AccountConflict):
        account_store.add(fresh_account, "agent", "A-NEW")
    assert account_store.get(fresh_account, "agent").account_id == original
    account_store.add(fresh_account, "agent", original, "Renamed")  # same id: an ordinary update
    assert account_store.get(fresh_account, "agent").display_name == "Renamed"
    before = account_store.add(fresh_account, "agent", "A-NEW", force=True)
    assert before.account_id == original
    stored = account_store.get(fresh_account, "agent")
    assert (stored.account_id, stored.linked_idp_subject) == ("A-NEW", "tid:oid"), "--force re-points, as asked"


def test_remove_says_whether_there_was_a_row(account_store, fresh_account):
    assert account_store.remove(fresh_account, "agent") is True
    assert account_store.get(fresh_account, "agent") is None
    assert account_store.remove(fresh_account, "agent") is False, "a 404 is not reported as removed"


# ---- Enabled that is not a real boolean counts as disabled (issue 13 item 5)


@pytest.mark.parametrize("stored", ["false", "False", 0, "0", "true", 1, ""], ids=repr)
def test_an_enabled_that_is_not_a_boolean_counts_as_disabled(account_store, fresh_account, stored, caplog):
    """What `az storage entity merge --entity Enabled=false` stores is the string 'false'."""
    account_store._table.update_entity({"PartitionKey": fresh_account, "RowKey": "agent", "Enabled": stored},
                                       mode=UpdateMode.MERGE)
    account = account_store.get(fresh_account, "agent")
    assert account.enabled is False and account.invalid_enabled == repr(stored)
    with caplog.at_level(logging.WARNING, logger="portal_sso"), pytest.raises(AccountDisabled):
        account_store.find_account(fresh_account, "agent")
    assert "accounts.enabled_not_boolean" in caplog.text and account.account_id in caplog.text, \
        "the log says why the account counts as disabled"


def test_a_missing_enabled_is_enabled(account_store, fresh_account):
    entity = account_store._table.get_entity(fresh_account, "agent")
    del entity["Enabled"]
    account_store._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
    assert account_store.find_account(fresh_account, "agent").enabled is True, "SPEC: default true"


@pytest.mark.parametrize("reader", ["login", "admin disable"])
def test_a_read_at_the_new_email_as_a_move_ends_finds_the_account(azurite, reader):
    """A move committed (the old row says MovedTo); a reader at the new email read the copy (still
    MovedFrom = old), then the move cleared MovedFrom and deleted the old row, then the reader read the
    source, found none, and took the copy for a dead one: login 403 no_account, the CLI "finds it at
    neither address". RELIABILITY.md: never both, never neither."""
    from azure.core.exceptions import ServiceRequestError
    from azure.data.tables import TableServiceClient

    from shared.accounts import email_key
    from shared.errors import DependencyUnavailable
    from shared.scim.sync import AccountSync, Desired
    from shared.tables import ACCOUNTS_TABLE, Tables

    table = Tables(TableServiceClient.from_connection_string(azurite.connection_string)).client(ACCOUNTS_TABLE)
    scim_id, tag = secrets.token_hex(8), secrets.token_hex(4)
    old, new = f"old-{tag}@contoso.test", f"new-{tag}@contoso.test"

    def desired(email):
        return Desired(scim_id=scim_id, email_key=email_key(email), email=email, kinds=("user",), active=True,
                       link=None, display_name="Mover", active_changed=False)

    class StoppingAfterTheCommit:  # the move's third write (clearing MovedFrom) is lost: it stops committed
        def __init__(self):
            self.updates = 0

        def __getattr__(self, name):
            if name != "update_entity":
                return getattr(table, name)

            def call(*args, **kwargs):
                self.updates += 1
                if self.updates == 2:
                    raise ServiceRequestError("connection dropped (test)")
                return table.update_entity(*args, **kwargs)
            return call

    AccountSync(table, lambda _: True).apply(desired(old))
    with pytest.raises(DependencyUnavailable):
        AccountSync(StoppingAfterTheCommit(), lambda _: True).apply(desired(new), [email_key(old)])
    assert table.get_entity(email_key(new), "user")["MovedFrom"] == email_key(old), "a committed move, not ended"

    def finish():
        AccountSync(table, lambda _: True).apply(desired(new), [email_key(old)])
        assert [r["PartitionKey"] for r in table.query_entities("ScimId eq @id", parameters={"id": scim_id})] == \
            [email_key(new)], "the move ended: one row, at the new email"

    store = AccountStore(LandingAfterFirstRead(table, finish))
    if reader == "login":
        assert store.find_account(new, "user").account_id == f"scim-user-{scim_id}"
    else:
        assert store.update(new, "user", Enabled=False) is True
        assert table.get_entity(email_key(new), "user")["Enabled"] is False
