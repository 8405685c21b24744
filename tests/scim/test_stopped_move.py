"""An email move that stopped midway, followed by a write that is NOT the same retry (RELIABILITY.md
"Directory sync": never both, never neither). Real app, real Azurite; the fault is one storage error
(as a dropped connection raises it) from the TableClient call that makes the chosen step."""

from __future__ import annotations

from datetime import timedelta

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient

from shared.tables import ACCOUNTS_TABLE, SCIM_USERS_TABLE
from tests.scim import entra
from tests.scim.conftest import TENANT, oid, unique


def _entity(args, kwargs) -> dict:
    return (args[0] if args else kwargs.get("entity")) or {}


# Where a move stops: (TableClient method, table, which call of it). Each names its step by what the
# call writes, not by its position, so the same test runs against any order of calls.
STOPS = {
    "copy": ("create_entity", ACCOUNTS_TABLE, lambda e: bool(e.get("MovedFrom"))),
    "commit": ("update_entity", ACCOUNTS_TABLE, lambda e: bool(e.get("MovedTo"))),
    "clear_moved_from": ("update_entity", ACCOUNTS_TABLE, lambda e: e.get("MovedFrom") == ""),
    "delete_old": ("delete_entity", ACCOUNTS_TABLE, lambda e: True),
    "person_row": ("update_entity", SCIM_USERS_TABLE, lambda e: "Resource" in e),
}
AFTER_COMMIT = ("clear_moved_from", "delete_old", "person_row")


def stop_once(monkeypatch, where: str) -> None:
    """The first TableClient call that makes step `where` raises; every other call is the real one."""
    stop_at(monkeypatch, *STOPS[where])


def stop_at(monkeypatch, method: str, table_name: str, makes, nth: int = 1) -> None:
    """The `nth` call of `method` on `table_name` whose entity `makes` says is the step raises."""
    real = getattr(TableClient, method)
    state = {"left": nth}

    def call(self, *args, **kwargs):
        if state["left"] and self.table_name == table_name and makes(_entity(args, kwargs)):
            state["left"] -= 1
            if not state["left"]:
                raise ServiceRequestError("connection dropped (test)")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(TableClient, method, call)


def make(scim, account_store, external_id: str | None = None):
    """A provisioned agent who has signed in once (so a move must keep link and login time)."""
    old = f"{unique('p')}@contoso.test"
    r = scim.post("/Users", entra.create_user(old, old, external_id or oid(), kinds=("agent",)))
    assert r.status_code == 201, r.text
    account = account_store.get(old, "agent")
    account_store.link_and_record_login(account, account.linked_idp_subject or f"{TENANT}:{oid()}")
    return r.json(), old, account_store.get(old, "agent")


def stopped_move(scim, monkeypatch, user: dict, new: str, where: str) -> None:
    with monkeypatch.context() as m:
        stop_once(m, where)
        r = scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new)))
    assert r.status_code == 503, r.text


def found(account_store, *emails) -> dict:
    return {e: a for e in emails if (a := account_store.get(e, "agent")) is not None}


def stored(account_store, *emails) -> list[tuple]:
    return [(r["PartitionKey"], r.get("MovedFrom") or "", r.get("MovedTo") or "") for e in dict.fromkeys(emails)
            for r in account_store._table.query_entities("PartitionKey eq @pk", parameters={"pk": e})]


# ---- M1: DELETE or active:false after a stopped move ---------------------------------------------

@pytest.mark.parametrize("where", list(STOPS))
def test_delete_after_a_stopped_move_removes_the_account_at_both_emails(scim, account_store, monkeypatch, where):
    user, old, _ = make(scim, account_store)
    new = old.replace("@", ".new@")
    stopped_move(scim, monkeypatch, user, new, where)
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert found(account_store, old, new) == {}, "a deleted person's account still signs in"
    assert stored(account_store, old, new) == []


@pytest.mark.parametrize("where", list(STOPS))
def test_disable_after_a_stopped_move_disables_the_one_account(scim, account_store, monkeypatch, where):
    user, old, before = make(scim, account_store)
    new = old.replace("@", ".new@")
    stopped_move(scim, monkeypatch, user, new, where)
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204
    live = found(account_store, old, new)
    assert all(not a.enabled for a in live.values()), {e: a.enabled for e, a in live.items()}
    assert len(live) == 1 and next(iter(live.values())).account_id == before.account_id, live


# ---- M2: the next write names a third email (or the old one again) --------------------------------

@pytest.mark.parametrize("where", list(STOPS))
@pytest.mark.parametrize("then", ["third", "old"])
def test_the_next_write_to_another_email_leaves_one_account_with_its_history(scim, account_store, monkeypatch,
                                                                            where, then):
    user, old, before = make(scim, account_store)
    new = old.replace("@", ".new@")
    final = old.replace("@", ".third@") if then == "third" else old
    stopped_move(scim, monkeypatch, user, new, where)
    r = scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(final)))
    assert r.status_code == 204, r.text
    live = found(account_store, old, new, final)
    assert list(live) == [final], live
    a = live[final]
    assert (a.account_id, a.linked_idp_subject, a.last_login_at, a.enabled) == \
        (before.account_id, before.linked_idp_subject, before.last_login_at, True)
    assert stored(account_store, old, new, final) == [(final, "", "")]


def test_a_stop_while_recording_the_move_leaves_the_old_email(scim, account_store, monkeypatch):
    """The write that records where the move goes (on the person row, before any account) may fail too."""
    user, old, before = make(scim, account_store)
    new = old.replace("@", ".new@")
    real = TableClient.update_entity
    state = {"armed": True}

    def call(self, *args, **kwargs):
        if state["armed"] and self.table_name == SCIM_USERS_TABLE and "Resource" not in _entity(args, kwargs):
            state["armed"] = False
            raise ServiceRequestError("connection dropped (test)")
        return real(self, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(TableClient, "update_entity", call)
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new))).status_code == 503
    assert {e: a.account_id for e, a in found(account_store, old, new).items()} == {old: before.account_id}
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new))).status_code == 204
    assert {e: a.account_id for e, a in found(account_store, old, new).items()} == {new: before.account_id}


# ---- M4: a write that is not an email change, after a move stopped past its commit --------------

# The person row still names the old email (the move's PATCH failed), so the next write moves the
# account back there: from the copy, which is live only through the old row's MovedTo. Its steps:
MOVE_BACK = {
    "settle_source": ("update_entity", ACCOUNTS_TABLE, lambda e: e.get("MovedFrom") == "", 1),
    "copy_over": ("update_entity", ACCOUNTS_TABLE, lambda e: bool(e.get("MovedFrom")), 1),
    "commit": ("update_entity", ACCOUNTS_TABLE, lambda e: bool(e.get("MovedTo")), 1),
    "clear_moved_from": ("update_entity", ACCOUNTS_TABLE, lambda e: e.get("MovedFrom") == "", 2),
    "delete_old": ("delete_entity", ACCOUNTS_TABLE, lambda e: True, 1),
    "person_row": ("update_entity", SCIM_USERS_TABLE, lambda e: "Resource" in e, 1),
}


@pytest.mark.parametrize("where", list(MOVE_BACK))
def test_a_name_change_after_a_committed_stopped_move_always_leaves_one_account(scim, account_store, monkeypatch,
                                                                              where):
    user, old, before = make(scim, account_store)
    new = old.replace("@", ".new@")
    stopped_move(scim, monkeypatch, user, new, "clear_moved_from")  # old: MovedTo=new; new: MovedFrom=old
    rename = entra.patch({"op": "Replace", "path": "displayName", "value": "Renamed"})
    with monkeypatch.context() as m:
        stop_at(m, *MOVE_BACK[where])
        r = scim.patch(f"/Users/{user['id']}", rename)
    assert r.status_code == 503, r.text
    live = found(account_store, old, new)
    assert [(a.account_id, a.enabled) for a in live.values()] == [(before.account_id, True)], \
        f"after a stop at {where}: {stored(account_store, old, new)}"
    assert scim.patch(f"/Users/{user['id']}", rename).status_code == 204  # the retry settles
    live = found(account_store, old, new)
    assert list(live) == [old], live
    a = live[old]
    assert (a.account_id, a.linked_idp_subject, a.last_login_at, a.display_name) == \
        (before.account_id, before.linked_idp_subject, before.last_login_at, "Renamed")
    assert stored(account_store, old, new) == [(old, "", "")]


# ---- M3: a row left by a person who no longer exists ----------------------------------------------

def _leftover(account_store, email: str, linked: str | None) -> str:
    """A row as the old code could leave it: provisioned for a SCIM id that no longer names a person."""
    gone = oid()
    row = {"PartitionKey": email, "RowKey": "agent", "AccountId": f"scim-agent-{gone}", "Email": email,
           "DisplayName": "Gone", "Enabled": True, "ScimId": gone}
    if linked:
        row["LinkedIdpSubject"] = linked
    account_store._table.create_entity(row)
    return gone


@pytest.mark.parametrize("leftover_link", [None, "other"])
@pytest.mark.parametrize("new_external_id", ["guid", "mailnick"])
def test_a_new_person_never_takes_over_a_gone_persons_account(scim, account_store, leftover_link, new_external_id):
    email = f"{unique('b')}@contoso.test"
    gone = _leftover(account_store, email, f"{TENANT}:{oid()}" if leftover_link else None)
    external_id = oid() if new_external_id == "guid" else f"mailnick-{unique()}"
    r = scim.post("/Users", entra.create_user(email, email, external_id, kinds=("agent",)))
    assert r.status_code == 201, r.text
    b = account_store.get(email, "agent")
    assert b.account_id == f"scim-agent-{r.json()['id']}" != f"scim-agent-{gone}"
    assert b.linked_idp_subject == (f"{TENANT}:{external_id}" if new_external_id == "guid" else None)
    assert b.last_login_at is None


def test_a_create_that_stopped_leaves_nothing_the_next_person_inherits(scim, account_store, monkeypatch):
    from shared.scim import store

    email = f"{unique('c')}@contoso.test"
    real = TableClient.create_entity
    state = {"armed": True}

    def call(self, *args, **kwargs):
        if state["armed"] and self.table_name == SCIM_USERS_TABLE and "Resource" in _entity(args, kwargs):
            state["armed"] = False
            raise ServiceRequestError("connection dropped (test)")
        return real(self, *args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(TableClient, "create_entity", call)
        r = scim.post("/Users", entra.create_user(email, email, f"mailnick-{unique()}", kinds=("agent",)))
        assert r.status_code == 503, r.text
    left = account_store.get(email, "agent")
    monkeypatch.setattr(store, "CLAIM_GRACE", timedelta(0))
    name = unique("next")
    r = scim.post("/Users", entra.create_user(name, email, oid(), kinds=("agent",)))
    assert r.status_code == 201, r.text
    assert account_store.get(email, "agent").account_id == f"scim-agent-{r.json()['id']}" != left.account_id


# ---- M5: an admin's change made between the copy and the commit -----------------------------------

def test_an_account_id_changed_mid_move_is_kept_by_the_retry(scim, account_store, monkeypatch):
    user, old, _ = make(scim, account_store, external_id=f"mailnick-{unique()}")
    new = old.replace("@", ".new@")
    stopped_move(scim, monkeypatch, user, new, "commit")
    account_store.add(old, "agent", "CLI-7", "Renamed by hand", force=True)
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new))).status_code == 204
    assert found(account_store, old, new)[new].account_id == "CLI-7"
