"""An admin's write found, after it landed, to share its account id with another email's row is taken
back (shared/accounts.py take_back), unless directory sync took the row over in between (adopted it for
a provisioned person): then the row is that person's account, never deleted nor reverted, and the
write is reported as written and stuck, for the admin to remove one of the two. The real app over
HTTPS (Entra-shaped bodies), the CLI in-process, both against Azurite."""

from __future__ import annotations

import pytest

import shared.accounts as sa
from shared.accounts import AccountStore
from tests.scim import entra
from tests.scim.conftest import unique
from tests.scim.test_admin_and_sync import cli as cli  # a fixture: pytest finds it by its name here
from tests.scim.test_admin_and_sync import csv_file, move, provision, rows_at
from tests.scim.test_stopped_move import stop_once


def test_an_imported_row_directory_sync_adopted_before_the_end_check_is_kept_and_reported_stuck(
        scim, account_store, cli, tmp_path, capsys, monkeypatch):
    """Another admin's add of the id at c@ lands between the import's scan and its write; Entra
    provisions a@'s person (adopting the imported row) before the import's end check. The take-back
    deleted the provisioned person's account and said "not written"."""
    account_id = unique("U")
    a, c = f"{unique('a')}@contoso.test", f"{unique('c')}@contoso.test"
    real_write, real_hold = sa._write_partition, sa._hold_alone

    def write(table, rows, known):
        assert cli("add", c, "--kind", "user", "--account-id", account_id) == 0  # after the scan
        return real_write(table, rows, known)

    def hold(table, result):
        provision(scim, a)  # adopts the row the import wrote at a@
        return real_hold(table, result)
    monkeypatch.setattr(sa, "_write_partition", write)
    monkeypatch.setattr(sa, "_hold_alone", hold)
    capsys.readouterr()
    assert cli("import", csv_file(tmp_path, f"{a},user,{account_id},Ann,")) == 1
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert "line 2: written, but" in err and "remove one of the two" in err and "not written" not in err, err
    assert c in err and "directory sync" in err, err
    [row] = rows_at(account_store, a)
    assert row["AccountId"] == account_id and row.get("ScimId"), "the provisioned person's account stays"


def test_an_added_row_directory_sync_adopted_before_the_check_again_is_kept_and_reported_stuck(
        scim, account_store, cli, capsys, monkeypatch):
    account_id = unique("U")
    a, c = f"{unique('a')}@contoso.test", f"{unique('c')}@contoso.test"
    real, calls = AccountStore.holders, []

    def holders(self, wanted, kind):
        calls.append(1)
        if len(calls) == 2:  # a@'s check again: c@'s row lands and Entra adopts a@'s row first
            account_store._table.create_entity({"PartitionKey": c, "RowKey": "user", "AccountId": account_id,
                                                "Email": c})
            provision(scim, a)
        return real(self, wanted, kind)
    monkeypatch.setattr(AccountStore, "holders", holders)
    assert cli("add", a, "--kind", "user", "--account-id", account_id) == 1
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert "written, but" in err and "remove one of the two" in err and c in err, err
    [row] = rows_at(account_store, a)
    assert row["AccountId"] == account_id and row.get("ScimId"), "the provisioned person's account stays"


@pytest.mark.parametrize("stopped", [True, False], ids=["move-stopped-after-commit", "move-done"])
def test_an_added_row_directory_sync_moved_before_the_check_again_is_left_and_reported_stuck(
        scim, account_store, cli, capsys, monkeypatch, stopped):
    """An add (forced) of another id over a provisioned person's row at a@; before its check again,
    c@'s row of that id lands and Entra moves the person to a new email (stopped after its commit: a@
    says MovedTo, the copy at the new email holds the id). The take-back merged the old id back onto the
    moved-away row and said "taken back", while the copy kept the id beside c@'s. A move that ended
    (the row at a@ gone) left the id at the new email and c@'s, and was said "taken back" too."""
    account_id = unique("U")
    a, c = f"{unique('a')}@contoso.test", f"{unique('c')}@contoso.test"
    new = a.replace("@", ".new@")
    user = provision(scim, a)
    real, calls = AccountStore.holders, []

    def holders(self, wanted, kind):
        calls.append(1)
        if len(calls) == 2:  # a@'s check again: c@'s row lands and Entra's move commits first
            account_store._table.create_entity({"PartitionKey": c, "RowKey": "user", "AccountId": account_id,
                                                "Email": c})
            with monkeypatch.context() as faults:
                if stopped:
                    stop_once(faults, "clear_moved_from")
                r = scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new)))
                assert r.status_code == (503 if stopped else 204), r.text
        return real(self, wanted, kind)
    monkeypatch.setattr(AccountStore, "holders", holders)
    assert cli("add", a, "--kind", "user", "--account-id", account_id, "--force") == 1
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert "written, but" in err and "remove one of the two" in err and "moved" in err, err
    assert account_store.get(new, "user").account_id == account_id, "the moved account is as the move made it"
    move(scim, user, new)  # Entra's retry finishes the move
    assert account_store.get(new, "user").account_id == account_id
