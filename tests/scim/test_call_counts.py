"""How many Table Storage calls a SCIM write (and a login) makes, pinned: a change that adds a read
or a write to a DELETE, an email change, a create refused with 409 or a login shows here. Counted on
the real TableClient (each call counted, then made as it is), against the real app and Azurite."""

from __future__ import annotations

from collections import Counter

import pytest
from azure.data.tables import TableClient

from shared.tables import ACCOUNTS_TABLE, SCIM_USERS_TABLE
from tests.scim import entra
from tests.scim.conftest import oid, unique

METHODS = ("get_entity", "create_entity", "update_entity", "upsert_entity", "delete_entity", "query_entities",
           "list_entities", "submit_transaction")
SHORT = {ACCOUNTS_TABLE: "accounts", SCIM_USERS_TABLE: "users"}


@pytest.fixture
def calls(monkeypatch) -> Counter:
    """(table, method) -> calls made, for the accounts and SCIM users tables."""
    counted: Counter = Counter()
    for name in METHODS:
        real = getattr(TableClient, name)

        def call(self, *args, _real=real, _name=name, **kwargs):
            if self.table_name in SHORT:
                counted[(SHORT[self.table_name], _name)] += 1
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(TableClient, name, call)
    return counted


def person(scim, kinds=("agent",)) -> tuple[dict, str]:
    email = f"{unique('n')}@contoso.test"
    r = scim.post("/Users", entra.create_user(email, email, oid(), kinds=kinds))
    assert r.status_code == 201, r.text
    return r.json(), email


def test_an_email_change_makes_these_calls(scim, account_store, calls):
    user, old = person(scim)
    new = old.replace("@", ".moved@")
    calls.clear()
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new))).status_code == 204
    assert dict(calls) == {
        ("users", "get_entity"): 2,  # the person; the old email's pointer before it is let go
        ("users", "create_entity"): 1,  # the new email's pointer
        ("users", "update_entity"): 2,  # PendingEmailKeys, then the person row
        ("users", "delete_entity"): 1,  # the old email's pointer
        ("accounts", "get_entity"): 4,  # agent at the new and old key; user (a kind not given) at both
        ("accounts", "create_entity"): 1,  # the copy
        ("accounts", "update_entity"): 2,  # the commit; clearing MovedFrom on the copy's own etag
        ("accounts", "delete_entity"): 1,  # the old row, on the commit's etag
    }, sorted(calls.items())
    assert account_store.get(new, "agent") is not None and account_store.get(old, "agent") is None


def test_a_delete_makes_these_calls(scim, account_store, calls):
    user, email = person(scim, kinds=("agent", "user"))
    calls.clear()
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert dict(calls) == {
        ("users", "get_entity"): 4,  # the person; each of its 3 pointers before it is let go
        ("users", "upsert_entity"): 1,  # the record that Entra deleted the person at its email (R)
        ("users", "delete_entity"): 4,  # the person row, the 3 pointers
        ("accounts", "get_entity"): 2,  # each kind's row, once
        ("accounts", "delete_entity"): 2,  # each on the etag read
    }, sorted(calls.items())
    assert account_store.get(email, "agent") is None and account_store.get(email, "user") is None


def test_a_refused_email_reads_the_other_person_once(scim, account_store, calls):
    """A row at the email that another, existing person's ScimId names (as an older version could
    leave it): 409, having read that person once."""
    other, _ = person(scim)
    email = f"{unique('taken')}@contoso.test"
    account_store._table.create_entity({"PartitionKey": email, "RowKey": "agent", "AccountId": "scim-agent-o",
                                        "Email": email, "Enabled": True, "ScimId": other["id"]})
    calls.clear()
    r = scim.post("/Users", entra.create_user(email, email, oid(), kinds=("agent",)))
    assert r.status_code == 409, r.text
    assert dict(calls) == {
        ("users", "create_entity"): 3,  # the new person's pointers (userName, externalId, email)
        ("accounts", "get_entity"): 1,  # the row at the email
        ("users", "get_entity"): 4,  # its owner, once; each pointer before it is let go (refused)
        ("users", "delete_entity"): 3,  # the pointers
    }, sorted(calls.items())
    assert account_store.get(email, "agent").account_id == "scim-agent-o"


def test_login_reads_an_unmoved_row_once_and_a_moved_one_with_its_source(scim, account_store, calls):
    _, old = person(scim)
    calls.clear()
    assert account_store.get(old, "agent") is not None
    assert dict(calls) == {("accounts", "get_entity"): 1}
    new = old.replace("@", ".moved@")
    account_store._table.create_entity({**account_store._table.get_entity(old, "agent"), "PartitionKey": new,
                                        "MovedFrom": old})
    account_store._table.update_entity({"PartitionKey": old, "RowKey": "agent", "MovedTo": new})  # committed
    calls.clear()
    assert account_store.get(new, "agent") is not None and account_store.get(old, "agent") is None
    assert dict(calls) == {("accounts", "get_entity"): 3}  # the copy and its source; the old row alone
