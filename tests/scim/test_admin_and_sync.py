"""The accounts CLI (`add`, `import`, `disable`) and directory sync write the same `PortalAccounts`
rows: neither may undo what the other did for a reason. The real app over HTTPS (Entra-shaped
bodies), the CLI in-process, both against Azurite.

- A moved account's AccountId is not given again to its old mailbox (SPEC: two mailboxes never
  share an account), whatever `--force` says.
- An account directory sync manages keeps Entra's enabled state and name through an import or an
  `add` (a departed person is not re-enabled by a CSV that says `enabled` empty).
- An admin's urgent `disable` of a provisioned account holds through Entra's next writes until
  Entra's own `active` changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.accounts import AccountRow
from shared.errors import NoAccount
from tests.scim import entra
from tests.scim.conftest import oid, unique
from tests.scim.test_stopped_move import STOPS, stop_at, stop_once
from tests.support.interleave import LandingAfterFirstRead
from tools import accounts

NO_SETTINGS_DIR = Path(__file__).resolve().parent  # holds no local.settings.json


@pytest.fixture
def cli(app_env):
    def run(*argv: str) -> int:
        return accounts.main(list(argv), environ={"TABLES_CONNECTION_STRING": app_env["TABLES_CONNECTION_STRING"]},
                             app_dir=NO_SETTINGS_DIR)
    return run


def csv_file(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / f"{unique('accounts')}.csv"
    path.write_text("\n".join(["email,kind,account_id,name,enabled", *lines]) + "\n", encoding="utf-8")
    return str(path)


def provision(scim, email: str, kinds=("user",)) -> dict:
    r = scim.post("/Users", entra.create_user(email, email, oid(), kinds=kinds))
    assert r.status_code == 201, r.text
    return r.json()


def move(scim, user: dict, new: str) -> None:
    r = scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new)))
    assert r.status_code == 204, r.text


def rows_at(account_store, email: str) -> list[dict]:
    return list(account_store._table.query_entities("PartitionKey eq @pk", parameters={"pk": email}))


# ---- 1. an AccountId held at another email is not given to a second mailbox -------------------------

@pytest.mark.parametrize("force", [False, True])
def test_an_import_run_again_after_directory_sync_moved_an_account_does_not_recreate_it_at_the_old_email(
        scim, account_store, cli, tmp_path, capsys, force):
    account_id = unique("U")
    old = f"{unique('carl')}@contoso.test"
    new = old.replace("@", ".new@")
    hr_file = csv_file(tmp_path, f"{old},user,{account_id},Carl,")
    assert cli("import", hr_file) == 0
    user = provision(scim, old)  # adopts the imported row and links it
    move(scim, user, new)
    assert account_store.get(new, "user").account_id == account_id
    capsys.readouterr()

    assert cli("import", hr_file, *(["--force"] if force else [])) == 1  # the same file, run again
    err = capsys.readouterr().err
    assert "line 2:" in err and account_id in err and new in err and "nothing was written" in err, err
    assert rows_at(account_store, old) == [], "the old mailbox got the moved account's id"
    with pytest.raises(NoAccount):
        account_store.find_account(old, "user")  # whoever has that mailbox now finds no account


@pytest.mark.parametrize("force", [False, True])
def test_add_of_an_account_id_that_another_email_holds_is_refused_naming_it(scim, account_store, cli, capsys, force):
    account_id = unique("U")
    old = f"{unique('carl')}@contoso.test"
    new = old.replace("@", ".new@")
    assert cli("add", old, "--kind", "user", "--account-id", account_id) == 0
    move(scim, provision(scim, old), new)
    capsys.readouterr()
    assert cli("add", old, "--kind", "user", "--account-id", account_id, *(["--force"] if force else [])) == 1
    err = capsys.readouterr().err
    assert account_id in err and new in err and "directory sync" in err, err
    assert rows_at(account_store, old) == []
    assert cli("add", old, "--kind", "agent", "--account-id", account_id) == 0, "another kind is another account"


def test_an_account_id_held_by_a_hand_made_row_is_refused_too(account_store, cli, tmp_path, capsys):
    account_id = unique("A")
    first, second = f"{unique('a')}@contoso.test", f"{unique('b')}@contoso.test"
    assert cli("add", first, "--kind", "agent", "--account-id", account_id) == 0
    capsys.readouterr()
    assert cli("import", csv_file(tmp_path, f"{second},agent,{account_id},,")) == 1
    assert first in capsys.readouterr().err
    assert cli("add", first, "--kind", "agent", "--account-id", account_id, "--name", "Renamed") == 0, \
        "the row that holds it can be written again"
    assert account_store.get(first, "agent").display_name == "Renamed"


def test_a_file_that_gives_one_account_id_to_two_emails_is_refused_whole(account_store, cli, tmp_path, capsys):
    account_id = unique("U")
    first, second = f"{unique('a')}@contoso.test", f"{unique('b')}@contoso.test"
    assert cli("import", csv_file(tmp_path, f"{first},user,{account_id},,", f"{second},user,{account_id},,")) == 1
    err = capsys.readouterr().err
    assert "line 3:" in err and "line 2" in err and "nothing was written" in err, err
    assert account_store.get(first, "user") is None and account_store.get(second, "user") is None


def test_an_account_id_of_directory_syncs_form_is_refused_at_another_email(scim, account_store, cli, capsys):
    """A provisioned AccountId (`scim-{kind}-{SCIM id}`) comes back with the person's email when a
    removed role returns: given by hand to another email, two mailboxes would share it."""
    email = f"{unique('d')}@contoso.test"
    user = provision(scim, email, kinds=("agent",))
    scim_account = account_store.get(email, "agent").account_id
    other = f"{unique('e')}@contoso.test"
    assert cli("add", other, "--kind", "agent", "--account-id", scim_account) == 1
    assert "directory sync" in capsys.readouterr().err
    r = scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_roles_assertive("user")))
    assert r.status_code == 204, r.text  # the agent role removed: its row is gone, its id is still the person's
    assert account_store.get(email, "agent") is None
    assert cli("add", other, "--kind", "agent", "--account-id", f"scim-agent-{user['id']}") == 1
    assert "directory sync" in capsys.readouterr().err
    assert account_store.get(other, "agent") is None


def test_during_a_move_that_stopped_before_its_commit_the_id_is_held_at_both_emails_but_the_live_row_is_writable(
        scim, account_store, cli, tmp_path, capsys, monkeypatch):
    account_id = unique("U")
    old = f"{unique('f')}@contoso.test"
    new, third = old.replace("@", ".new@"), old.replace("@", ".third@")
    assert cli("add", old, "--kind", "agent", "--account-id", account_id) == 0
    user = provision(scim, old, kinds=("agent",))
    with monkeypatch.context() as m:
        stop_once(m, "commit")
        r = scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new)))
    assert r.status_code == 503, r.text
    assert [row.get("MovedFrom") for row in rows_at(account_store, new)] == [old], "the copy is there"
    capsys.readouterr()
    assert cli("import", csv_file(tmp_path, f"{third},agent,{account_id},,")) == 1
    assert old in capsys.readouterr().err
    assert cli("import", csv_file(tmp_path, f"{old},agent,{account_id},Fay,")) == 0, \
        "the row sign-in finds, which the copy is of, is still the account's own"
    move(scim, user, new)  # Entra's retry finishes the move
    assert account_store.get(new, "agent").account_id == account_id and account_store.get(old, "agent") is None


@pytest.mark.parametrize("stop", ["commit", "clear_moved_from", "delete_old"])
def test_list_shows_a_move_that_stopped_midway_as_sign_in_finds_it_one_row(scim, account_store, cli, capsys,
                                                                           monkeypatch, stop):
    """Stopped before its commit, `list` showed the copy at the new email as a working account beside
    the old one: one account id at two mailboxes, and one of them an account sign-in does not find."""
    account_id = unique("U")
    old = f"{unique('m')}@contoso.test"
    new = old.replace("@", ".new@")
    assert cli("add", old, "--kind", "agent", "--account-id", account_id) == 0
    user = provision(scim, old, kinds=("agent",))
    with monkeypatch.context() as m:
        stop_once(m, stop)
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new))).status_code == 503
    live = new if stop != "commit" else old
    assert account_store.get(live, "agent").account_id == account_id  # what sign-in finds
    capsys.readouterr()
    assert cli("list", "--kind", "agent") == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if account_id in line]
    assert len(listed) == 1 and live in listed[0].split(), listed


def test_a_row_moved_away_between_the_imports_scan_and_its_write_is_not_made_again(scim, account_store):
    account_id = unique("U")
    old = f"{unique('k')}@contoso.test"
    new = old.replace("@", ".new@")
    account_store.add(old, "user", account_id)
    user = provision(scim, old)
    stored = account_store.stored_accounts()  # the import's scan: the account is still at the old email
    move(scim, user, new)
    result = account_store.import_rows([AccountRow(old, "user", account_id, line=2)], stored=stored)
    assert result.written == 0 and len(result.refused) == 1, result
    assert "removed during the import" in result.refused[0][1]
    assert rows_at(account_store, old) == [] and account_store.get(new, "user").account_id == account_id


def test_a_row_no_sign_in_reaches_does_not_hold_its_id(account_store, cli):
    """README "Accounts stored before the email-key rule": `add` the account under the directory's
    address, then remove the old row; the old row (a key with capitals: no sign-in finds it) holds the
    same id meanwhile."""
    account_id = unique("U")
    email = f"{unique('legacy')}@contoso.test"
    stale = email.replace("legacy", "Legacy")
    account_store._table.create_entity({"PartitionKey": stale, "RowKey": "user", "AccountId": account_id,
                                        "Enabled": True})
    assert cli("add", email, "--kind", "user", "--account-id", account_id) == 0
    assert cli("remove", "--stored-key", stale, "--kind", "user") == 0
    assert account_store.get(email, "user").account_id == account_id


# ---- 2. an import or add keeps the enabled state and name of an account directory sync manages --------

def test_an_import_run_again_does_not_re_enable_an_account_entra_disabled(scim, account_store, cli, tmp_path, capsys):
    email = f"{unique('bob')}@contoso.test"
    account_id = unique("A")
    hr_file = csv_file(tmp_path, f"{email},agent,{account_id},Bob,")
    assert cli("import", hr_file) == 0
    user = provision(scim, email, kinds=("agent",))
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204  # Bob left
    capsys.readouterr()

    assert cli("import", hr_file) == 0
    captured = capsys.readouterr()
    account = account_store.get(email, "agent")
    assert (account.account_id, account.enabled, account.display_name) == (account_id, False, "Ann Lee"), \
        "a departed person's account enabled again by the file, or Entra's name replaced"
    said = captured.out + captured.err
    assert "line 2:" in said and "directory sync" in said and "Entra" in said, said


def test_an_import_can_still_disable_an_account_directory_sync_manages(scim, account_store, cli, tmp_path):
    """Disabling is the safe direction, as `accounts disable` is: the file's `false` is applied."""
    email = f"{unique('g')}@contoso.test"
    provision(scim, email, kinds=("agent",))
    account_id = account_store.get(email, "agent").account_id
    assert cli("import", csv_file(tmp_path, f"{email},agent,{account_id},Gone,false")) == 0
    account = account_store.get(email, "agent")
    assert (account.enabled, account.display_name) == (False, "Ann Lee")


def test_add_does_not_re_enable_or_rename_an_account_directory_sync_manages(scim, account_store, cli, capsys):
    email = f"{unique('h')}@contoso.test"
    user = provision(scim, email, kinds=("agent",))
    account_id = account_store.get(email, "agent").account_id
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204
    capsys.readouterr()
    assert cli("add", email, "--kind", "agent", "--account-id", account_id, "--name", "Hand Made") == 0
    out = capsys.readouterr().out
    assert "directory sync" in out and "Entra" in out, out
    account = account_store.get(email, "agent")
    assert (account.enabled, account.display_name) == (False, "Ann Lee")


def test_a_forced_add_over_a_linked_account_directory_sync_manages_says_who_now_signs_in_to_it(
        scim, account_store, cli, capsys):
    """The managed-by-sync line took the place of the re-point warning: the admin was not told that the
    linked person now signs in to the new AccountId."""
    email = f"{unique('f')}@contoso.test"
    provision(scim, email)
    new_id = f"H-{unique('id')}"
    capsys.readouterr()
    assert cli("add", email, "--kind", "user", "--account-id", new_id, "--force") == 0
    out = capsys.readouterr().out
    assert f"now signs in to {new_id} (--force)" in out and "directory sync manages it" in out, out
    assert account_store.get(email, "user").account_id == new_id


@pytest.mark.parametrize("command", ["add", "import"])
def test_a_provisioned_account_bound_to_an_object_id_is_not_repointed_unless_forced(
        hostile, use_settings, cli, tmp_path, capsys, command):
    """With several ALLOWED_TENANT_IDS directory sync cannot link (it does not know the tenant): the row
    is bound to the person's object id (ScimObjectId) until the first login. That binding names a person
    as a link does, yet `add` and `import` wrote another AccountId over it without --force, and the
    provisioned person's first login then signed in to the id the admin typed."""
    from tests.scim.test_recreated_person import provisioned

    scim, _, email, object_id = provisioned(hostile, use_settings)
    accounts = scim.runtime.accounts
    before = accounts.get(email, "user")
    assert (before.linked_idp_subject, before.scim_object_id) == (None, object_id)
    other_id = unique("U")

    def write(*force: str) -> int:
        if command == "add":
            return cli("add", email, "--kind", "user", "--account-id", other_id, *force)
        return cli("import", csv_file(tmp_path, f"{email},user,{other_id},,"), *force)

    capsys.readouterr()
    assert write() == 1
    err = capsys.readouterr().err
    assert object_id in err and "--force" in err, err
    assert accounts.get(email, "user").account_id == before.account_id, "re-pointed without --force"
    assert write("--force") == 0
    out = capsys.readouterr().out
    if command == "add":
        assert f"now signs in to {other_id} (--force)" in out and object_id in out, out
    assert accounts.get(email, "user").account_id == other_id


def test_an_account_made_by_hand_is_still_enabled_and_renamed_by_an_import(account_store, cli, tmp_path):
    email, account_id = f"{unique('i')}@contoso.test", unique("U")
    assert cli("add", email, "--kind", "user", "--account-id", account_id, "--disabled") == 0
    assert cli("import", csv_file(tmp_path, f"{email},user,{account_id},Ida,true")) == 0
    account = account_store.get(email, "user")
    assert (account.enabled, account.display_name) == (True, "Ida")


# ---- 2b. what Entra took away is not made again by hand, unless forced ----------------------------

def _took_away(scim, cli, email: str, how: str) -> None:
    """Entra takes the person's user account away, `how`; the person keeps an agent account when Entra
    keeps them."""
    user = provision(scim, email, kinds=("user", "agent"))
    if how == "role_removed":
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.remove_role("user"))).status_code == 204
    elif how == "disabled_then_removed_by_hand":
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204
        assert cli("remove", email, "--kind", "user") == 0  # the admin tidies the disabled account away
    else:
        assert scim.delete(f"/Users/{user['id']}").status_code == 204


@pytest.mark.parametrize("command", ["add", "import"])
@pytest.mark.parametrize("how", ["role_removed", "disabled_then_removed_by_hand", "deleted"])
def test_an_account_entra_took_away_is_not_made_again_by_add_or_import_unless_forced(
        scim, account_store, cli, tmp_path, capsys, command, how):
    """An HR file imported before directory sync, run again (operating.md: "safe to run again"), gave
    back every account Entra had since removed: enabled, unlinked and never managed again, so whoever
    holds the mailbox next (or the unassigned person, APP_ROLES_REQUIRED being off) signed in to it."""
    email, account_id = f"{unique('leaver')}@contoso.test", unique("U")
    hr_file = csv_file(tmp_path, f"{email},user,{account_id},Lee,")
    assert cli("import", hr_file) == 0  # before directory sync: adopted by the person's create
    _took_away(scim, cli, email, how)
    assert account_store.get(email, "user") is None

    def write(*force: str) -> int:
        if command == "add":
            return cli("add", email, "--kind", "user", "--account-id", account_id, *force)
        return cli("import", hr_file, *force)

    capsys.readouterr()
    assert write() == 1
    err = capsys.readouterr().err
    assert email in err and "Entra" in err and "--force" in err, err
    assert account_store.get(email, "user") is None, "made again what Entra took away"
    assert write("--force") == 0, capsys.readouterr().err
    account = account_store.get(email, "user")
    assert (account.account_id, account.provisioned, account.enabled) == (account_id, False, True)
    capsys.readouterr()
    cli("check")  # its exit code is the whole table's (other tests' rows are there too)
    (line,) = [line for line in capsys.readouterr().out.splitlines() if account_id in line]
    assert line.startswith("entra ") and "Entra" in line, line
    assert "entra" in accounts.CHECK_NOTES, "a note: one made on purpose may stay, and check does not fail for it"


@pytest.mark.parametrize("command", ["add", "import"])
def test_an_account_entra_does_not_give_may_be_made_disabled_and_is_adopted_so_when_it_does(
        scim, account_store, cli, tmp_path, command):
    """A disabled row lets no one in: the way to give a provisioned person an AccountId of one's own
    before Entra assigns the kind (SPEC: an existing row is adopted and keeps its AccountId), enabled
    only when Entra gives it (the role's write carries the person's `active: true`)."""
    email, account_id = f"{unique('early')}@contoso.test", unique("A")
    user = provision(scim, email, kinds=("user",))
    if command == "add":
        assert cli("add", email, "--kind", "agent", "--account-id", account_id, "--disabled") == 0
    else:
        assert cli("import", csv_file(tmp_path, f"{email},agent,{account_id},,false")) == 0
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.add_role_complex("agent"))).status_code == 204
    account = account_store.get(email, "agent")
    assert (account.account_id, account.provisioned, account.enabled) == (account_id, True, True)


def test_an_adopted_account_id_of_yours_comes_back_with_the_role_when_made_again_disabled_first(
        scim, account_store, cli):
    """README: a removed role given back makes a directory sync id (`scim-{kind}-...`) for an account it
    had adopted; the way to keep the admin's own id is a disabled row of it before the role returns."""
    email, account_id = f"{unique('back')}@contoso.test", unique("U")
    assert cli("add", email, "--kind", "user", "--account-id", account_id) == 0
    user = provision(scim, email, kinds=("user", "agent"))
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.remove_role("user"))).status_code == 204
    assert account_store.get(email, "user") is None
    assert cli("add", email, "--kind", "user", "--account-id", account_id, "--disabled") == 0
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.add_role_complex("user"))).status_code == 204
    account = account_store.get(email, "user")
    assert (account.account_id, account.provisioned, account.enabled) == (account_id, True, True)


def test_a_person_entra_keeps_gets_the_kinds_entra_gives_by_hand_and_others_only_forced(scim, account_store, cli,
                                                                                        capsys):
    """The rule reads Entra's record of the person: a kind the person's roles give can be made by hand
    (an admin's `remove` then `add` of a new id), one they do not give is refused."""
    email = f"{unique('kept')}@contoso.test"
    provision(scim, email, kinds=("agent",))
    assert cli("remove", email, "--kind", "agent") == 0
    assert cli("add", email, "--kind", "agent", "--account-id", unique("A")) == 0
    capsys.readouterr()
    assert cli("add", email, "--kind", "user", "--account-id", unique("U")) == 1
    assert "no user account" in capsys.readouterr().err


# ---- 3. an urgent `disable` holds through directory sync's next writes ------------------------------

def test_an_urgent_disable_holds_through_entras_next_change_until_entra_itself_disables_and_enables(
        scim, account_store, cli):
    email = f"{unique('ann')}@contoso.test"
    user = provision(scim, email, kinds=("agent",))
    assert cli("disable", email, "--kind", "agent") == 0
    r = scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_family_name("Smith")))
    assert r.status_code == 204, r.text
    account = account_store.get(email, "agent")
    assert account.enabled is False, "directory sync undid the admin's disable"
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204
    assert account_store.get(email, "agent").enabled is False
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.enable_without_path())).status_code == 204
    assert account_store.get(email, "agent").enabled is True, "Entra's re-enable must still enable"


def test_an_urgent_disable_during_a_move_that_stopped_before_its_commit_holds_at_the_new_email(
        scim, account_store, cli, monkeypatch):
    old = f"{unique('dan')}@contoso.test"
    new = old.replace("@", ".new@")
    user = provision(scim, old, kinds=("agent",))
    with monkeypatch.context() as m:
        stop_once(m, "commit")
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new))).status_code == 503
    assert cli("disable", old, "--kind", "agent") == 0  # where sign-in finds it: no waiting for Entra
    move(scim, user, new)  # Entra's retry
    assert account_store.get(old, "agent") is None
    assert account_store.get(new, "agent").enabled is False, "the move's copy enabled the account again"


def enable() -> dict:
    """TUTORIAL "Disable User"'s shape with the value Entra sends to enable (KNOWN_ISSUES: a string)."""
    return {"op": "Replace", "path": "active", "value": "True"}


def test_enable_of_an_account_whose_person_entra_disabled_is_refused_but_an_admins_own_disable_can_be_undone(
        scim, account_store, cli, capsys):
    """With Enabled written only when `active` changes, an enable by hand would outlast Entra's disable."""
    email = f"{unique('l')}@contoso.test"
    user = provision(scim, email, kinds=("agent",))
    assert cli("disable", email, "--kind", "agent") == 0
    assert cli("enable", email, "--kind", "agent") == 0, "Entra has the person enabled: the admin's disable is undone"
    assert account_store.get(email, "agent").enabled is True
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204
    capsys.readouterr()
    assert cli("enable", email, "--kind", "agent") == 1
    assert "Entra" in capsys.readouterr().err
    assert account_store.get(email, "agent").enabled is False
    assert scim.patch(f"/Users/{user['id']}", entra.patch(enable())).status_code == 204
    assert account_store.get(email, "agent").enabled is True


def test_enable_is_refused_while_a_disable_of_entras_is_under_way(scim, account_store, cli, monkeypatch, capsys):
    """A disable that stopped after the accounts (PendingActive on the person row, `Active` not yet
    written): the person row still says active, but the account holds Entra's disable, and Entra's
    retry (which finds it already disabled) must not find it enabled by hand."""
    email = f"{unique('pend')}@contoso.test"
    user = provision(scim, email, kinds=("agent",))
    with monkeypatch.context() as m:
        stop_at(m, *STOPS["person_row"])
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 503
    capsys.readouterr()
    assert cli("enable", email, "--kind", "agent") == 1
    assert "try again" in capsys.readouterr().err
    assert account_store.get(email, "agent").enabled is False


@pytest.mark.parametrize("admin_disabled_first", [False, True])
def test_an_enable_racing_entras_disable_never_outlasts_it(scim, account_store, cli, admin_disabled_first):
    """The enable read the person (still active), then Entra disabled the person and the account, then
    the enable wrote Enabled=True over it, which Entra's later writes (`active` unchanged) left as it
    was. Also when the account was already disabled by an admin, so that Entra's disable had nothing to
    change on it."""
    from shared.accounts import AccountConflict, AccountStore
    from shared.tables import ACCOUNTS_TABLE, SCIM_USERS_TABLE

    email = f"{unique('race')}@contoso.test"
    user = provision(scim, email, kinds=("agent",))
    if admin_disabled_first:
        assert cli("disable", email, "--kind", "agent") == 0

    def disable():
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204

    tables = scim.runtime.tables
    store = AccountStore(tables.client(ACCOUNTS_TABLE), LandingAfterFirstRead(tables.client(SCIM_USERS_TABLE), disable))
    with pytest.raises(AccountConflict, match="Entra"):
        store.enable(email, "agent")
    assert account_store.get(email, "agent").enabled is False
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_family_name("Later"))).status_code == 204
    assert account_store.get(email, "agent").enabled is False, "Entra's disable was outlasted"


@pytest.mark.parametrize(("first", "then", "expected"), [
    (entra.disable, enable, True),   # a disable stopped after the accounts; then Entra says enabled
    (enable, entra.disable, False),  # an enable stopped after the accounts; then Entra says disabled
])
def test_an_active_change_that_stopped_before_the_person_row_is_settled_by_the_next_write(
        scim, account_store, monkeypatch, first, then, expected):
    """The accounts are written before the person row (which stores `active`): when that last write
    fails, the accounts hold the new state and the person row the old one. Entra's next word wins,
    even when it is what the person row still says (a PATCH that changes nothing)."""
    email = f"{unique('j')}@contoso.test"
    user = provision(scim, email, kinds=("agent",))
    if first is enable:  # enabling needs a disabled person first
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204
    with monkeypatch.context() as m:
        stop_at(m, *STOPS["person_row"])
        assert scim.patch(f"/Users/{user['id']}", entra.patch(first())).status_code == 503
    assert account_store.get(email, "agent").enabled is (not expected), "the stopped write reached the account"
    assert scim.patch(f"/Users/{user['id']}", entra.patch(then())).status_code == 204
    assert account_store.get(email, "agent").enabled is expected


# ---- an unset active, and check's review, over accounts directory sync adopts -----------------------

@pytest.mark.parametrize("how", ["add", "import"])
def test_a_create_without_active_adopting_an_admins_disabled_account_keeps_it_disabled(
        scim, account_store, cli, tmp_path, how):
    """README: active left unset changes no account; a POST without it adopted an admin's disabled row
    enabled (unset read as enabled), and the leaver signed in again."""
    email = f"{unique('dis')}@contoso.test"
    if how == "add":
        assert cli("add", email, "--kind", "user", "--account-id", unique("U"), "--disabled") == 0
    else:
        assert cli("import", csv_file(tmp_path, f"{email},user,{unique('U')},Dee,false")) == 0
    body = entra.create_user(email, email, oid())
    del body["active"]
    assert scim.post("/Users", body).status_code == 201
    (row,) = rows_at(account_store, email)
    assert row["Enabled"] is False and row.get("ScimId"), row
    fresh = f"{unique('new')}@contoso.test"
    body = entra.create_user(fresh, fresh, oid())
    del body["active"]
    assert scim.post("/Users", body).status_code == 201
    assert [r["Enabled"] for r in rows_at(account_store, fresh)] == [True], "a new account is enabled"


@pytest.mark.parametrize(("person_disabled", "row_disabled"), [(False, True), (True, False), (True, True)])
def test_a_put_without_active_adding_a_role_adopts_the_kinds_row_enabled_only_if_both_were(
        scim, account_store, cli, person_disabled, row_disabled):
    """An unset active keeps the person as stored and the adopted row as it was: enabled only if both are
    (a disabled person adopting an admin's enabled row stayed enabled, and a later disable skipped it)."""
    email = f"{unique('put')}@contoso.test"
    user = provision(scim, email)
    if person_disabled:
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204
    # An enabled row Entra does not give (no agent role yet, or the person disabled) needs --force
    # (entra_refusal); a disabled one lets no one in.
    forced = ["--force"] if not row_disabled else []
    assert cli("add", email, "--kind", "agent", "--account-id", unique("A"),
               *(["--disabled"] if row_disabled else []), *forced) == 0
    body = {**entra.create_user(email, email, user["externalId"], kinds=("user", "agent")), "id": user["id"]}
    del body["active"]
    assert scim.put(f"/Users/{user['id']}", body).status_code == 200
    rows = {r["RowKey"]: r["Enabled"] for r in rows_at(account_store, email)}
    assert rows == {"user": not person_disabled, "agent": False}, rows


def test_check_does_not_send_a_provisioned_non_ascii_account_to_review(scim, account_store, cli, capsys):
    """Directory sync wrote the key from the directory's own spelling: review's "the old rule case-folded
    it" cannot hold, and its remove-then-add advice removed the live account (add refuses scim- ids)."""
    email = f"j\u00fcrgen.{unique('x')}@contoso.test"
    provision(scim, email)
    cli("check")
    assert not [line for line in capsys.readouterr().out.splitlines() if email in line], "nothing to fix"
