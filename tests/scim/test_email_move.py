"""An email move that fails midway (RELIABILITY.md "Directory sync"): at every step of the move, the
person is found by login under exactly one email, with the same AccountId, link and state; the next
attempt completes it. Real Azurite; the fault is a storage error raised by the accounts table client
at the chosen call (as a dropped connection would raise it)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.errors import DependencyUnavailable
from shared.scim.mapping import email_key
from shared.scim.sync import AccountSync, Desired
from shared.tables import ACCOUNTS_TABLE
from tests.scim.conftest import TENANT, oid, unique

# The move's writes, in order: the copy at the new email, the commit on the old row, clearing the
# copy's MovedFrom, deleting the old row.
STEPS = [("create_entity", 1), ("update_entity", 1), ("update_entity", 2), ("delete_entity", 1)]


class FailingAt:
    """The real TableClient, except that the n-th call of one method raises as a lost connection does."""

    def __init__(self, table, method: str, n: int):
        self._table, self._method, self._left = table, method, n

    def __getattr__(self, name):
        real = getattr(self._table, name)
        if name != self._method:
            return real

        def call(*args, **kwargs):
            self._left -= 1
            if self._left == 0:
                raise ServiceRequestError("connection dropped (test)")
            return real(*args, **kwargs)
        return call


@pytest.mark.parametrize(("method", "n"), STEPS)
def test_a_move_that_fails_at_any_step_leaves_one_account_and_the_retry_completes_it(account_store, app_env,
                                                                                     method, n):
    from shared.runtime import Runtime

    table = Runtime(app_env).tables.client(ACCOUNTS_TABLE)
    scim_id, link = oid(), f"{TENANT}:{oid()}"
    old, new = f"{unique('old')}@contoso.test", f"{unique('new')}@contoso.test"

    def desired(email, active_changed=False):
        # An email change only, as Entra's PATCH and its retry send it: `active` is not news, so no write
        # of a row is forced by it and the retry must itself see what the stopped move left to do.
        return Desired(scim_id=scim_id, email_key=email_key(email), email=email, kinds=("agent",), active=True,
                       link=link, display_name="Mover", active_changed=active_changed)

    AccountSync(table, lambda _: True).apply(desired(old, active_changed=True))  # the create
    first = account_store.get(old, "agent")
    with pytest.raises(DependencyUnavailable):
        AccountSync(FailingAt(table, method, n), lambda _: True).apply(desired(new), [email_key(old)])
    found = [(e, a) for e in (old, new) if (a := account_store.get(e, "agent")) is not None]
    assert len(found) == 1, f"findable under exactly one email after a failure at {method} #{n}: {found}"
    assert (found[0][1].account_id, found[0][1].linked_idp_subject, found[0][1].enabled) == \
        (first.account_id, link, True)

    AccountSync(table, lambda _: True).apply(desired(new), [email_key(old)])  # Entra's retry
    assert account_store.get(old, "agent") is None
    moved = account_store.get(new, "agent")
    assert (moved.account_id, moved.linked_idp_subject) == (first.account_id, link)
    rows = [r for e in (old, new) for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": e})]
    assert [(r["PartitionKey"], r.get("MovedFrom") or "", r.get("MovedTo") or "") for r in rows] == [(new, "", "")]


def test_a_login_during_the_move_does_not_lose_its_time(account_store, app_env):
    """The commit is etag-checked on the old row: a login that records its time there between the copy
    and the commit makes the move copy again, so LastLoginAt (and a first link) travel with it."""
    from shared.runtime import Runtime

    table = Runtime(app_env).tables.client(ACCOUNTS_TABLE)
    scim_id = oid()
    old, new = f"{unique('old')}@contoso.test", f"{unique('new')}@contoso.test"
    base = {"scim_id": scim_id, "kinds": ("user",), "active": True, "link": None, "display_name": "Racer"}
    AccountSync(table, lambda _: True).apply(Desired(email_key=email_key(old), email=old, **base))

    class LoginBetween(FailingAt):
        def __getattr__(self, name):
            real = getattr(self._table, name)
            if name == "update_entity" and self._left:
                def call(*args, **kwargs):
                    self._left = 0
                    account = account_store.get(old, "user")
                    account_store.link_and_record_login(account, "tenant:person")  # the login lands first
                    return real(*args, **kwargs)
                return call
            return real

    AccountSync(LoginBetween(table, "", 1), lambda _: True).apply(Desired(email_key=email_key(new), email=new,
                                                                          active_changed=False, **base),
                                                                  [email_key(old)])
    moved = account_store.get(new, "user")
    assert moved.linked_idp_subject == "tenant:person" and moved.last_login_at is not None
    assert account_store.get(old, "user") is None
