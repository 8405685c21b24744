"""SECURITY.md's known limit, kept where a write of Entra's stopped or raced: an admin's `accounts remove`
of a row made for "no object id" (externalId not a GUID; operating.md "a different person") is never
undone, and the row made next is a new account. Olivia is provisioned for `hr-...` and signed in once by
A; the next object id to sign in by her email is B. Real logins through MSAL and the hostile IdP,
through tools.host against Azurite; faults are storage errors from the real TableClient's calls."""

from __future__ import annotations

from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient

from shared.accounts import AccountStore
from shared.tables import ACCOUNTS_TABLE, SCIM_USERS_TABLE
from tests.scim import entra
from tests.scim.conftest import oid
from tests.scim.test_recreated_identity import (
    cli_accounts,
    removed_mid_write,
    rename,
    sign_in,
    signed_in_without_object_id,
)
from tests.scim.test_stopped_move import stopped_move


def test_a_remove_after_a_move_stopped_past_its_commit_is_not_undone_by_the_retry(hostile, use_settings,
                                                                                   monkeypatch):
    """The move stopped after its commit: the dead old row still held scim-user-P and A's link. The admin
    removed the account at the new address; Entra's retry of the move recorded the dead row's id as "no
    object id"'s again, and made scim-user-P at the new address for B."""
    scim, email, pid, me = signed_in_without_object_id(hostile, use_settings)
    new, move = f"moved-{email}", entra.patch(entra.replace_work_email(f"moved-{email}"))
    stopped_move(scim, monkeypatch, {"id": pid}, new, "clear_moved_from")
    assert sign_in(hostile, use_settings, new, me, "user") == f"scim-user-{pid}"
    assert cli_accounts(scim).remove(new, "user")
    assert scim.patch(f"/Users/{pid}", move).status_code == 204
    assert sign_in(hostile, use_settings, new, oid(), "user") != f"scim-user-{pid}"


def test_a_remove_at_the_old_address_of_a_move_stopped_before_its_commit_is_not_undone_by_the_retry(
        hostile, use_settings, monkeypatch):
    """The move stopped before its commit: the invisible copy at the new address held scim-user-P and
    A's link. The admin removed the live account at the old address; Entra's retry made the copy live,
    id and link and all: the account removed was back at once."""
    scim, email, pid, _ = signed_in_without_object_id(hostile, use_settings)
    new, move = f"moved-{email}", entra.patch(entra.replace_work_email(f"moved-{email}"))
    stopped_move(scim, monkeypatch, {"id": pid}, new, "commit")
    assert cli_accounts(scim).remove(email, "user")
    assert scim.patch(f"/Users/{pid}", move).status_code == 204
    row = scim.runtime.tables.client(ACCOUNTS_TABLE).get_entity(new, "user")
    assert (row["AccountId"], row.get("LinkedIdpSubject")) == (f"scim-user-{pid}-no-object-id", None)
    assert sign_in(hostile, use_settings, new, oid(), "user") == f"scim-user-{pid}-no-object-id"


def test_a_login_between_a_raced_writes_re_made_row_and_its_retry_keeps_nothing_removed(hostile, use_settings,
                                                                                        monkeypatch):
    """The remove landed during a rename, which made the row again from its stale record (scim-user-P,
    unlinked); B's login linked it before the rename's retry (412 on the person row), and the retry kept
    a linked row in place, id and all, and recorded it as "no object id"'s again."""
    from shared.scim import sync

    scim, email, pid, _ = signed_in_without_object_id(hostile, use_settings)
    tenant = scim.runtime.tables.client(ACCOUNTS_TABLE).get_entity(email, "user")["LinkedIdpSubject"].rpartition(":")[0]
    real, b, linked = sync.AccountSync._write, oid(), []

    def write(self, desired, plan):
        real(self, desired, plan)
        if not linked:  # B's login, as soon as the row is there
            accounts = AccountStore(scim.runtime.tables.client(ACCOUNTS_TABLE))
            account = accounts.find_account(email, "user")
            linked.append(account.account_id)
            accounts.link_and_record_login(account, f"{tenant}:{b}")
    with monkeypatch.context() as patched:
        removed = removed_mid_write(scim, email, patched)
        patched.setattr(sync.AccountSync, "_write", write)
        assert scim.patch(f"/Users/{pid}", rename("B")).status_code == 204
    assert removed == [True] and linked
    assert scim.patch(f"/Users/{pid}", rename("C")).status_code == 204
    assert sign_in(hostile, use_settings, email, b, "user") == f"scim-user-{pid}-no-object-id"


def test_a_raced_writes_re_made_row_is_never_signed_in_to_when_its_person_row_write_fails(hostile, use_settings,
                                                                                          monkeypatch):
    """...and when the rename's person-row write met an outage instead (a 503, no 412 to retry at once),
    the re-made scim-user-P stayed live and unlinked until Entra's next cycle: B signed in to it."""
    scim, email, pid, _ = signed_in_without_object_id(hostile, use_settings)
    real = TableClient.update_entity

    def update(self, entity, *args, **kwargs):
        if self.table_name == SCIM_USERS_TABLE and "Resource" in entity:
            raise ServiceRequestError("storage went away (test)")
        return real(self, entity, *args, **kwargs)
    with monkeypatch.context() as patched:
        removed = removed_mid_write(scim, email, patched)
        patched.setattr(TableClient, "update_entity", update)
        assert scim.patch(f"/Users/{pid}", rename("B")).status_code == 503
    assert removed == [True]
    b = oid()
    assert sign_in(hostile, use_settings, email, b, "user") != f"scim-user-{pid}"
    assert scim.patch(f"/Users/{pid}", rename("C")).status_code == 204
    assert sign_in(hostile, use_settings, email, b, "user") != f"scim-user-{pid}"


def test_a_remove_after_an_admin_repointed_the_row_is_not_undone_by_the_next_write(hostile, use_settings):
    """`accounts add --account-id X --force` repointed the provisioned row (operating.md allows it), then
    `accounts remove`: the remove noted only X (not directory sync's), so Entra's next write made
    scim-user-P again, unlinked, and B signed in to A's account from before the repoint."""
    scim, email, pid, _ = signed_in_without_object_id(hostile, use_settings)
    admin = cli_accounts(scim)
    admin.add(email, "user", "hand-made-x", force=True)
    assert admin.remove(email, "user")
    assert scim.patch(f"/Users/{pid}", rename("B")).status_code == 204
    assert sign_in(hostile, use_settings, email, oid(), "user") not in (f"scim-user-{pid}", "hand-made-x")


def test_a_move_racing_the_remove_never_revives_the_removed_account_at_the_new_address(hostile, use_settings,
                                                                                       monkeypatch):
    """The admin's remove of the live row at the old address landed between the move's copy and its
    commit: the commit failed, and the move, read again, made its copy (scim-user-P, A's link) live in
    place from its stale record; with the person row's write then meeting an outage, A signed in to the
    account removed."""
    scim, email, pid, me = signed_in_without_object_id(hostile, use_settings)
    new, admin, real, removed = f"moved-{email}", cli_accounts(scim), TableClient.update_entity, []

    def update(self, entity, *args, **kwargs):
        if self.table_name == SCIM_USERS_TABLE and "Resource" in entity:
            raise ServiceRequestError("storage went away (test)")
        if entity.get("MovedTo") and not removed:  # the commit
            removed.append(admin.remove(email, "user"))
        return real(self, entity, *args, **kwargs)
    with monkeypatch.context() as patched:
        patched.setattr(TableClient, "update_entity", update)
        assert scim.patch(f"/Users/{pid}", entra.patch(entra.replace_work_email(new))).status_code == 503
    assert removed == [True]
    assert sign_in(hostile, use_settings, new, me, "user") != f"scim-user-{pid}"
