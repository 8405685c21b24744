"""tools.accounts, the operators' account CLI, against Azurite."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from azure.data.tables import TableClient, UpdateMode

from shared.accounts import AccountStore
from shared.errors import MalformedEmail
from tools import accounts
from tools.stack import azurite_connection_string, free_port, new_account_key

REPO = Path(__file__).resolve().parents[2]
EMPTY_DIR = Path(__file__).resolve().parent  # holds no local.settings.json


@pytest.fixture
def cs(azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def store(cs):
    return accounts.connect(cs, None)


@pytest.fixture
def tag() -> str:
    """Each test's emails are its own: the Azurite of the session is shared."""
    return uuid.uuid4().hex[:8]


def run(cs: str, *argv: str, app_dir: Path | None = None) -> int:
    """The CLI in-process, its storage in the environment (a key never goes on argv), and a settings
    directory without local.settings.json unless the test gives one."""
    return accounts.main(list(argv), environ={"TABLES_CONNECTION_STRING": cs}, app_dir=app_dir or EMPTY_DIR)


def test_add_list_disable_enable_unlink_remove(cs, store, tag, capsys):
    email = f"Ann.{tag}@Contoso.TEST"
    normalized = email.lower()  # ASCII: only A-Z is folded

    assert run(cs, "add", email, "--kind", "user", "--account-id", f"U-1.{tag}", "--name", "Ann Example") == 0
    assert run(cs, "add", email, "--kind", "agent", "--account-id", f"A-1.{tag}", "--disabled") == 0
    assert f"added user account U-1.{tag}" in capsys.readouterr().out
    account = store.get(normalized, "user")
    assert (account.account_id, account.display_name, account.enabled) == (f"U-1.{tag}", "Ann Example", True)
    assert store.get(normalized, "agent").enabled is False, "--disabled creates the account disabled"

    store.link_and_record_login(store.get(normalized, "user"), "tenant:person")
    assert run(cs, "list") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if normalized in line]
    assert len(lines) == 2, lines
    user_line = next(line for line in lines if " user " in line)
    assert f"U-1.{tag}" in user_line and "Ann Example" in user_line
    assert "never" not in user_line and "UTC" in user_line, "the last login is shown"
    assert " yes " in user_line, "linked and enabled"
    agent_line = next(line for line in lines if " agent " in line)
    assert agent_line.rstrip().endswith("never")

    assert run(cs, "list", "--kind", "agent") == 0
    listed = capsys.readouterr().out
    # Columns are as wide as the longest email in the (shared) table: match the gap, not its width.
    assert re.search(rf"{re.escape(normalized)} +agent", listed) and not re.search(rf"{re.escape(normalized)} +user",
                                                                                   listed)

    assert run(cs, "disable", email, "--kind", "user") == 0
    assert store.get(normalized, "user").enabled is False
    assert run(cs, "enable", email, "--kind", "user") == 0
    assert store.get(normalized, "user").enabled is True
    assert run(cs, "unlink", email, "--kind", "user") == 0
    unlinked = store.get(normalized, "user")
    assert unlinked.linked_idp_subject is None and unlinked.account_id == f"U-1.{tag}", "unlink keeps the account"
    assert run(cs, "remove", email, "--kind", "agent") == 0
    assert store.get(normalized, "agent") is None
    assert store.get(normalized, "user") is not None, "remove takes only the named kind"


def test_commands_on_a_missing_account_or_bad_input_exit_1(cs, tag, capsys):
    assert run(cs, "disable", f"nobody.{tag}@contoso.test", "--kind", "user") == 1
    assert "no user account" in capsys.readouterr().err
    assert run(cs, "add", "not-an-email", "--kind", "user", "--account-id", "U-9") == 1
    assert "email 'not-an-email' is refused: it has no '@'" in capsys.readouterr().err
    assert run(cs, "add", f"x.{tag}@contoso.test", "--kind", "boss", "--account-id", "U-9") == 1, \
        "a usage error is 1 (2 means storage unreachable)"
    assert run(cs, "add", f"x.{tag}@contoso.test", "--kind", "user", "--account-id", "  ") == 1


def test_add_trims_ascii_spaces_around_its_arguments_as_import_does_and_judges_the_rest(cs, store, tag, capsys):
    """`add` stripped every kind of whitespace (`\xa0U-1\u3000` became `U-1`) where import keeps all but
    ASCII spaces and judges them: the same id typed twice was two ids or one by the command used."""
    email = f"trim.{tag}@contoso.test"
    assert run(cs, "add", email, "--kind", "user", "--account-id", f"  U-3.{tag} ", "--name", " Tia ") == 0
    assert (store.get(email, "user").account_id, store.get(email, "user").display_name) == (f"U-3.{tag}", "Tia")
    assert run(cs, "add", email, "--kind", "agent", "--account-id", f"\xa0A-3.{tag}") == 1
    assert "starts with whitespace (U+00A0 NO-BREAK SPACE)" in capsys.readouterr().err
    assert store.get(email, "agent") is None


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_import_writes_every_row_and_keeps_links(cs, store, tag, tmp_path, capsys):
    both = f"both.{tag}@contoso.test"
    store.add(both, "user", f"U-10.{tag}", "Old Name")
    store.link_and_record_login(store.get(both, "user"), "tenant:both")
    csv_file = _write(tmp_path / "accounts.csv", [
        "email,kind,account_id,name,enabled",
        f"{both},user,U-10.{tag},Both Person,true",
        f"{both.upper()},agent,A-10.{tag},Both Person,yes",  # same partition: one transaction
        f"one.{tag}@contoso.test,agent,A-11.{tag},\"Agent, One\",0",
        f"two.{tag}@contoso.test,user,U-12.{tag},,",
    ])  # fmt: skip

    assert run(cs, "import", str(csv_file)) == 0
    captured = capsys.readouterr()
    assert "imported 4 accounts (2 user, 2 agent)" in captured.out
    assert captured.err == "", "no progress bar when stderr is not a terminal"

    user = store.get(both, "user")
    assert (user.account_id, user.display_name) == (f"U-10.{tag}", "Both Person")
    assert user.linked_idp_subject == "tenant:both", "an import updates an account without unlinking it"
    assert store.get(both, "agent").account_id == f"A-10.{tag}"
    agent = store.get(f"one.{tag}@contoso.test", "agent")
    assert (agent.display_name, agent.enabled) == ("Agent, One", False)
    assert store.get(f"two.{tag}@contoso.test", "user").enabled is True, "empty enabled means true"


@pytest.mark.parametrize(("header", "fields", "existing", "created"), [
    ("email,kind,account_id", "", ("Bob Builder", False), ("", True)),      # neither column: both kept
    ("email,kind,account_id,enabled", ",", ("Bob Builder", True), ("", True)),  # enabled present, empty: true
    ("email,kind,account_id,name", ",", ("", False), ("", True)),           # name present, empty: cleared
    ("email,kind,account_id,name,enabled", ",,", ("", True), ("", True)),   # both present: set
    ("email,kind,account_id,name,enabled", ",Bob B.,false", ("Bob B.", False), ("Bob B.", False)),
], ids=["no-name-no-enabled", "enabled-empty", "name-empty", "both-empty", "both-set"])
def test_an_import_without_a_name_or_enabled_column_leaves_that_value_of_an_existing_account(
        cs, store, tag, tmp_path, capsys, header, fields, existing, created):
    """An import of a file with only email,kind,account_id over an account `disable` had turned off
    re-enabled it and wiped its name, saying nothing: a bulk import that never mentioned `enabled`
    let a disabled leaver sign in again. A column left out leaves the stored value (a new account: no
    name, enabled); one present sets it, empty included."""
    bob, new = f"bob.{tag}@contoso.test", f"new.{tag}@contoso.test"
    assert run(cs, "add", bob, "--kind", "user", "--account-id", f"B-1.{tag}", "--name", "Bob Builder") == 0
    assert run(cs, "disable", bob, "--kind", "user") == 0
    csv_file = _write(tmp_path / "columns.csv", [header, f"{bob},user,B-1.{tag}{fields}",
                                                 f"{new},user,N-1.{tag}{fields}"])
    assert run(cs, "import", str(csv_file)) == 0, capsys.readouterr()
    account, made = store.get(bob, "user"), store.get(new, "user")
    assert (account.account_id, account.display_name, account.enabled) == (f"B-1.{tag}", *existing)
    assert (made.account_id, made.display_name, made.enabled) == (f"N-1.{tag}", *created)


@pytest.mark.parametrize("header", ["email,kind,account_id", "email,kind,account_id,enabled"])
def test_an_import_says_a_managed_account_stays_disabled_only_when_its_file_would_enable_it(
        cs, store, tag, tmp_path, capsys, header):
    email = f"managed.{tag}@contoso.test"
    store._table.create_entity({"PartitionKey": email, "RowKey": "user", "Email": email, "AccountId": f"M-1.{tag}",
                                "Enabled": False, "ScimId": f"s-{tag}", "DisplayName": "Entra's Name"})
    csv_file = _write(tmp_path / "managed.csv", [header, f"{email},user,M-1.{tag}" + ("," if "enabled" in header
                                                                                       else "")])
    assert run(cs, "import", str(csv_file)) == 0
    out = capsys.readouterr().out
    assert ("stays disabled" in out) == ("enabled" in header), out
    account = store.get(email, "user")
    assert (account.display_name, account.enabled) == ("Entra's Name", False)


def test_import_checks_its_rows_for_shared_accounts_once(cs, tag, tmp_path, monkeypatch):
    """cmd_import refuses rows that would share an account against its scan before writing any; the
    store's import_rows, handed that scan, ran the same check over every row again."""
    import shared.accounts

    calls = []
    real = shared.accounts.sharing_problems
    monkeypatch.setattr(shared.accounts, "sharing_problems", lambda *a: calls.append(a) or real(*a))
    csv_file = _write(tmp_path / "once.csv", ["email,kind,account_id", f"once.{tag}@contoso.test,user,U-1.{tag}"])
    assert run(cs, "import", str(csv_file)) == 0
    assert calls == [], "checked again inside import_rows"


def test_import_with_bad_rows_writes_nothing_and_names_each_line(cs, store, tag, tmp_path, capsys):
    good = [f"good{i}.{tag}@contoso.test" for i in range(4)]
    csv_file = _write(tmp_path / "bad.csv", [
        "email,kind,account_id,name,enabled",                   # line 1
        f"{good[0]},user,U-1.{tag},Good,true",                        # line 2
        f"not-an-email-{tag},user,U-2.{tag},Bad,true",                # line 3: email
        f"{good[1]},agent,A-3.{tag},Good,no",                         # line 4
        f"{good[2]},supervisor,U-5.{tag},Bad,maybe",                  # line 5: kind and enabled
        f"{good[3]},user,U-6.{tag},Good,1",                           # line 6
        f"{good[0].upper()},user,U-7.{tag},Dup,",                     # line 7: duplicate of line 2
    ])  # fmt: skip

    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    named = sorted(int(line.split(":")[0].removeprefix("line ")) for line in err.splitlines()
                   if line.startswith("line "))
    assert named == [3, 5, 7], err
    assert "has no '@'" in err and "must be user or agent" in err and "'maybe'" in err
    assert "duplicate of line 2" in err
    assert "3 bad rows; nothing was written" in err
    assert all(store.get(email, kind) is None for email in good for kind in ("user", "agent")), \
        "one bad row means no row is written"


def test_import_of_a_wrong_header_or_a_missing_file_says_exactly_that(cs, tmp_path, capsys):
    csv_file = _write(tmp_path / "h.csv", ["mail,type,id", "a@b.test,user,U-1"])
    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    assert f"{csv_file}: line 1, the header, must be email,kind,account_id,name,enabled" in err
    assert "got mail,type,id" in err and "bad row" not in err, err

    assert run(cs, "import", str(tmp_path / "missing.csv")) == 1
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'missing.csv'}: no such file; nothing was written.\n", err

    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert run(cs, "import", str(empty)) == 1
    err = capsys.readouterr().err
    assert "empty; the first line must be the header" in err and "bad row" not in err


def test_unreachable_storage_exits_2_quickly(tmp_path, tag, capsys):
    closed = azurite_connection_string(free_port(), new_account_key())  # nothing listens there
    started = time.monotonic()
    assert run(closed, "list") == 2
    assert run(closed, "add", f"x.{tag}@contoso.test", "--kind", "user", "--account-id", "U-1") == 2
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert "Table Storage is unreachable" in err
    assert "was written" not in err, "storage failed before the write: nothing was written"
    assert elapsed < 10, f"two commands against a closed port took {elapsed:.1f} s"
    bad = _write(tmp_path / "bad.csv", ["email,kind,account_id", "nope,user,U-1"])
    assert run(closed, "import", str(bad)) == 1, "the file is checked before storage is touched"


def test_the_module_entry_point(cs, store, tag):
    email = f"cli.{tag}@contoso.test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLES_")}
    done = subprocess.run([sys.executable, "-m", "tools.accounts", "add", email, "--kind", "agent",
                           "--account-id", "A-77"],
                          cwd=REPO, env={**env, "TABLES_CONNECTION_STRING": cs}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "added agent account A-77" in done.stdout
    assert store.get(email, "agent").account_id == "A-77"
    usage = subprocess.run([sys.executable, "-m", "tools.accounts", "frobnicate"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 1 and "invalid choice" in usage.stderr


# ---- storage settings: never a key on argv; the settings file `make run` leaves; refused vs unreachable


def test_a_connection_string_with_a_key_on_argv_is_refused_with_the_hint(cs, tag, capsys):
    code = accounts.main(["--connection-string", cs, "add", f"argv.{tag}@contoso.test", "--kind", "user",
                          "--account-id", "U-1"], environ={}, app_dir=EMPTY_DIR)
    err = capsys.readouterr().err
    assert code == 1
    assert "holds a storage key, which must not be on the command line" in err and "TABLES_CONNECTION_STRING" in err
    assert cs.split("AccountKey=")[1].split(";")[0] not in err, "the key is not echoed"
    assert accounts.connect(cs, None).get(f"argv.{tag}@contoso.test", "user") is None, "nothing was written"


def test_the_settings_file_is_read_by_default_and_the_environment_wins(cs, tag, tmp_path, capsys):
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "TABLES_CONNECTION_STRING": cs}}), encoding="utf-8")
    email = f"file.{tag}@contoso.test"
    assert accounts.main(["add", email, "--kind", "user", "--account-id", "U-F"], environ={}, app_dir=tmp_path) == 0
    assert accounts.connect(cs, None).get(email, "user").account_id == "U-F"
    closed = azurite_connection_string(free_port(), new_account_key())
    assert accounts.main(["list"], environ={"TABLES_CONNECTION_STRING": closed}, app_dir=tmp_path) == 2, \
        "the process environment wins over the file, as in func start"
    capsys.readouterr()
    assert accounts.main(["list"], environ={}, app_dir=EMPTY_DIR) == 1
    assert "TABLES_CONNECTION_STRING or TABLES_ENDPOINT: missing" in capsys.readouterr().err
    assert accounts.PROJECT_ROOT == REPO, "by default the project root's file: the one `make run` leaves"


class _Token:
    """A credential for a loopback endpoint where nothing listens (DefaultAzureCredential would ask Azure)."""

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("not-a-real-token", int(time.time()) + 3600)


def test_an_environment_endpoint_is_not_overridden_by_the_files_connection_string(cs, tag, tmp_path, capsys,
                                                                                   monkeypatch):
    """The hunt's case: after `make run` (its local.settings.json holds Azurite's connection string), an admin
    points the CLI at the deployed storage with TABLES_ENDPOINT in the environment: the file's connection
    string still won, so Ann was written to Azurite ("added ...", naming no storage) and signed in nowhere."""
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "TABLES_CONNECTION_STRING": cs}}), encoding="utf-8")
    monkeypatch.setattr(accounts, "_default_credential", _Token)
    elsewhere = "https://127.0.0.1:1/devstoreaccount1"  # nothing listens: the run must go there, not to Azurite
    email = f"ann.{tag}@contoso.test"
    code = accounts.main(["add", email, "--kind", "user", "--account-id", "U-E"],
                         environ={"TABLES_ENDPOINT": elsewhere}, app_dir=tmp_path)
    assert code == 2, capsys.readouterr()
    assert accounts.connect(cs, None).get(email, "user") is None, "nothing written to the file's Azurite"
    parsed = accounts.build_parser().parse_args(["list"])
    assert accounts.storage_settings(parsed, {"TABLES_ENDPOINT": elsewhere}, tmp_path) == (None, elsewhere)
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {
        "TABLES_ENDPOINT": elsewhere}}), encoding="utf-8")
    assert accounts.storage_settings(parsed, {"TABLES_CONNECTION_STRING": cs}, tmp_path) == (cs, None), \
        "the environment's connection string, without the file's endpoint"
    assert accounts.storage_settings(parsed, {"TABLES_ENDPOINT": ""}, tmp_path) == (None, elsewhere), \
        "an empty one is none (Core Tools fills unset or empty ones from the file)"


def test_add_and_import_name_the_storage_they_wrote_to_and_never_its_key(cs, tag, tmp_path, capsys):
    key = cs.split("AccountKey=")[1].split(";")[0]
    table_endpoint = cs.split("TableEndpoint=")[1].split(";")[0]
    assert run(cs, "add", f"named.{tag}@contoso.test", "--kind", "user", "--account-id", f"U-N.{tag}") == 0
    csv_file = _write(tmp_path / "named.csv", ["email,kind,account_id", f"named2.{tag}@contoso.test,agent,A-N.{tag}"])
    assert run(cs, "import", str(csv_file)) == 0
    added, imported = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("added", "imported"))]
    for said in (added, imported):
        assert f"Table Storage {table_endpoint}" in said, said
    assert accounts.storage_named(None, "https://x.table.core.windows.net/") == "Table Storage https://x.table.core.windows.net"
    for hidden in (cs, f"{cs.rstrip(';')};SharedAccessSignature=sv=2024&sig=s3cret"):
        assert key not in accounts.storage_named(hidden, None) and "s3cret" not in accounts.storage_named(hidden, None)
    assert accounts.storage_named("UseDevelopmentStorage=true", None) == \
        "Table Storage http://127.0.0.1:10002/devstoreaccount1"
    assert accounts.storage_named("AccountName=st;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn", None) == \
        "Table Storage https://st.table.core.chinacloudapi.cn"
    assert accounts.storage_named("TableEndpoint=https://st.table.core.windows.net/?sv=1&sig=s3cret;"
                                  "SharedAccessSignature=sv=1&sig=s3cret", None) == \
        "Table Storage https://st.table.core.windows.net"


def test_a_wrong_key_is_refused_not_unreachable(azurite, capsys):
    wrong = azurite.connection_string.replace(azurite.connection_string.split("AccountKey=")[1].split(";")[0],
                                              new_account_key())
    assert run(wrong, "list") == 3
    err = capsys.readouterr().err
    assert "refused our credentials" in err and "wrong account key" in err and "unreachable" not in err


# ---- emails: the email-key rule, trimmed ASCII spaces, a clear error naming the row


def test_lookalike_and_malformed_addresses_are_refused_naming_the_line(cs, store, tag, tmp_path, capsys):
    csv_file = _write(tmp_path / "lookalikes.csv", [
        "email,kind,account_id",                           # line 1
        f"  padded.{tag}@contoso.test  ,user,U-1.{tag}",         # line 2: ASCII spaces are trimmed
        f"kim.{tag}@contoso.test\u00a0,user,U-2.{tag}",          # line 3: a trailing no-break space
        f"\u3000kim.{tag}@contoso.test,user,U-3.{tag}",          # line 4: a leading ideographic space
        f"\u212aim.{tag}@contoso.test,user,U-4.{tag}",           # line 5: the Kelvin sign (not NFC)
        f"kim.{tag}\u200b@contoso.test,user,U-5.{tag}",          # line 6: a zero-width space
        f"stra\u00dfe.{tag}@contoso.test,user,U-6.{tag}",        # line 7: fine, and not strasse
        f"strasse.{tag}@contoso.test,user,U-7.{tag}",            # line 8: another mailbox, not a duplicate
    ])  # fmt: skip
    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    assert f"line 3: email 'kim.{tag}@contoso.test\\xa0' is refused: it holds whitespace (U+00A0 NO-BREAK SPACE)" \
        in err, err
    assert "line 4: email '\\u3000kim" in err and "U+3000 IDEOGRAPHIC SPACE" in err
    assert "line 5:" in err and "not in Unicode normalization form C" in err
    assert "line 6:" in err and "U+200B ZERO WIDTH SPACE" in err
    assert not any(line.startswith(("line 2:", "line 7:", "line 8:")) for line in err.splitlines()), err
    assert "4 bad rows; nothing was written" in err

    csv_file = _write(tmp_path / "good.csv", ["email,kind,account_id", f"  padded.{tag}@contoso.test  ,user,U-1.{tag}",
                                              f"stra\u00dfe.{tag}@contoso.test,user,U-6.{tag}",
                                              f"strasse.{tag}@contoso.test,user,U-7.{tag}"])
    assert run(cs, "import", str(csv_file)) == 0
    assert store.get(f"padded.{tag}@contoso.test", "user").account_id == f"U-1.{tag}"
    assert store.get(f"stra\u00dfe.{tag}@contoso.test", "user").account_id == f"U-6.{tag}"
    assert store.get(f"strasse.{tag}@contoso.test", "user").account_id == f"U-7.{tag}", "two mailboxes, two accounts"

    assert run(cs, "add", f"kim.{tag}@contoso.test\u00a0", "--kind", "user", "--account-id", f"U-9.{tag}") == 1
    assert "U+00A0 NO-BREAK SPACE" in capsys.readouterr().err


def _long_key_email(tag: str, units: int) -> str:
    """An address of at most 254 characters whose key is `units` UTF-16 units long: each '/' takes three."""
    slashes, rest = divmod(units - len(f"{tag}@x.test"), 3)
    return "/" * slashes + "a" * rest + f"{tag}@x.test"


def _stored_with(store, tag: str) -> list:
    return [a for a in store.list() if tag in a.email]


def test_an_address_whose_key_is_too_long_for_table_storage_is_bad_input_naming_the_row(cs, store, tag, tmp_path,
                                                                                         capsys):
    """Table Storage keeps a key of 512 UTF-16 units: such an address used to reach it and come back as
    exit 2, 'Table Storage is unreachable (HTTP 400)'."""
    over, at_limit = _long_key_email(tag, 513), _long_key_email(tag, 512)
    assert len(over) <= 254 and len(at_limit) <= 254, "the address rule alone lets both through"
    assert run(cs, "add", over, "--kind", "user", "--account-id", f"U-1.{tag}") == 1
    err = capsys.readouterr().err
    assert "is refused: it" in err and "512" in err and "unreachable" not in err, err

    good = f"good.{tag}@contoso.test"
    csv_file = _write(tmp_path / "long.csv", ["email,kind,account_id", f"{good},user,U-2.{tag}",
                                              f"{over},user,U-3.{tag}"])
    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    assert "line 3: email '" in err and "512" in err and "1 bad row; nothing was written" in err, err
    assert _stored_with(store, tag) == [], "nothing was written"

    assert run(cs, "add", at_limit, "--kind", "user", "--account-id", f"U-4.{tag}") == 0, "a key of 512 units is kept"
    assert store.get(at_limit, "user").account_id == f"U-4.{tag}"
    assert run(cs, "remove", at_limit, "--kind", "user") == 0


def test_a_name_or_account_id_too_long_to_store_is_bad_input_naming_the_line_and_nothing_is_written(
        cs, store, tag, tmp_path, capsys):
    """A Table string property holds 32,768 UTF-16 units (64 KiB): an import with a longer name used to
    write the rows before it, then exit 2 'storage failed', and fail the same way every run. A name is
    held to the session token's rule now (at most 256 characters), which refuses it before that."""
    emails = [f"row{i}.{tag}@contoso.test" for i in range(11)]
    rows = [f"{email},user,U-{i},Name {i}," for i, email in enumerate(emails)]
    rows[5] = f"{emails[5]},user,U-5,{'n' * 40_000},"           # line 7
    rows[8] = f"{emails[8]},user,{'I' * 256},Name 8,"            # line 10: over the 255 of a token's sub
    csv_file = _write(tmp_path / "long.csv", ["email,kind,account_id,name,enabled", *rows])
    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    assert "line 7: name is 40000 characters long, over the 256" in err, err
    assert "line 10: account_id is 256 characters long, over the 255" in err, err
    assert "2 bad rows; nothing was written" in err and "storage failed" not in err, err
    assert _stored_with(store, tag) == [], "nothing was written"

    assert run(cs, "add", emails[0], "--kind", "user", "--account-id", "U-0", "--name", "n" * 257) == 1
    assert "name is 257 characters long, over the 256" in capsys.readouterr().err
    assert run(cs, "add", emails[0], "--kind", "user", "--account-id", "I" * 256) == 1
    assert "account_id is 256 characters long" in capsys.readouterr().err
    assert _stored_with(store, tag) == []

    at_limit = "n" * 255 + "\U0001f600"  # 256 characters (257 UTF-16 units): what a session token's name holds
    assert run(cs, "add", emails[0], "--kind", "user", "--account-id", "I" * 255, "--name", at_limit) == 0
    stored = store.get(emails[0], "user")
    assert (stored.display_name, stored.account_id) == (at_limit, "I" * 255)


def test_add_over_a_linked_account_of_another_id_is_refused_unless_forced(cs, store, tag, capsys):
    email = f"linked.{tag}@contoso.test"
    assert run(cs, "add", email, "--kind", "user", "--account-id", f"U-1.{tag}") == 0
    store.link_and_record_login(store.get(email, "user"), "tenant:first")
    capsys.readouterr()
    assert run(cs, "add", email, "--kind", "user", "--account-id", f"U-2.{tag}") == 1
    err = capsys.readouterr().err
    assert f"is U-1.{tag}, linked to tenant:first" in err and "--force" in err and "unlink" in err, err
    assert store.get(email, "user").account_id == f"U-1.{tag}", "nothing changed"
    assert run(cs, "add", email, "--kind", "user", "--account-id", f"U-2.{tag}", "--force") == 0
    assert f"it was U-1.{tag}, linked to tenant:first: that person now signs in to U-2.{tag}" in capsys.readouterr().out
    assert store.get(email, "user").account_id == f"U-2.{tag}"


# ---- list: escaped, and an Enabled that is not a boolean shown as disabled


def test_list_escapes_control_characters_and_shows_a_non_boolean_enabled_as_disabled(cs, store, tag, tmp_path,
                                                                                   capsys):
    """add and import refuse such a name: it comes from another tool writing the table."""
    email = f"esc.{tag}@contoso.test"
    store._table.create_entity({"PartitionKey": email, "RowKey": "user", "Email": email, "AccountId": f"U-1.{tag}",
                                "DisplayName": "Evil\x1b[2J\x1b]0;owned\x07\u202eName", "Enabled": "false"})
    capsys.readouterr()
    assert run(cs, "list") == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if email in line)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, "no control character reaches the terminal"
    assert "Evil\\x1b[2J\\x1b]0;owned\\x07\\u202eName" in line
    assert "no (stored 'false', not a boolean)" in line
    assert "Enabled that is not a boolean" in out


# ---- check: rows the new rule does not find as stored


def test_check_lists_rows_whose_key_differs_or_is_refused_and_remove_by_stored_key(cs, store, tag, capsys):
    def raw_row(key: str, email: str | None, **extra) -> None:
        entity = {"PartitionKey": key, "RowKey": "user", "AccountId": f"C-{len(key)}", **extra}
        if email is not None:
            entity["Email"] = email
        store._table.upsert_entity(entity)

    raw_row(f"inner\u00a0{tag}@contoso.test", f"inner\u00a0{tag}@contoso.test")  # strip() kept an inner NBSP
    raw_row(f"Upper.{tag}@Contoso.test", None)       # written by another tool, capitals in the key
    raw_row(f"\u00e4rzte.{tag}@contoso.test", f"\u00e4rzte.{tag}@contoso.test")  # case-folded by the old rule
    raw_row(f"fine.{tag}@contoso.test", f"fine.{tag}@contoso.test", Enabled="0")
    assert run(cs, "check") == 1
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if tag in line}
    assert lines[f"inner\\xa0{tag}@contoso.test"].startswith("refused") and "U+00A0" in out
    assert lines[f"Upper.{tag}@Contoso.test"].startswith("key")
    assert lines[f"\u00e4rzte.{tag}@contoso.test"].startswith("review")
    assert lines[f"fine.{tag}@contoso.test"].startswith("enabled") and "'0', not a boolean" in out
    assert "remove this row with --stored-key" in out

    assert run(cs, "remove", "--stored-key", f"inner\\xa0{tag}@contoso.test", "--kind", "user") == 0
    assert store.get_by_key(f"inner\u00a0{tag}@contoso.test", "user") is None
    assert run(cs, "remove", "--stored-key", f"Upper.{tag}@Contoso.test", "--kind", "user") == 0
    assert run(cs, "remove", "--stored-key", f"Upper.{tag}@Contoso.test", "--kind", "user") == 1
    assert "no user row with the stored key" in capsys.readouterr().err


def test_checks_review_advice_is_two_commands_that_work_in_the_order_printed(cs, store, tag, capsys):
    """README and check said to `add` the account under the directory's spelling, then `remove` the old
    row: the add is refused while the old row (sign-in reaches it) holds the account id."""
    stored, directory, account_id = f"\u00e4rzte.{tag}@klinik.test", f"\u00c4rzte.{tag}@klinik.test", f"R-7.{tag}"
    store._table.create_entity({"PartitionKey": stored, "RowKey": "user", "Email": stored, "AccountId": account_id,
                                "Enabled": True})
    run(cs, "check")  # its exit code is the shared table's (other tests leave rows to fix)
    out = capsys.readouterr().out
    assert re.search(rf"^review +{re.escape(stored)} +user +{re.escape(account_id)} ", out, re.M), out
    (advice,) = [line for line in out.splitlines() if line.startswith("review: ")]
    commands = re.findall(r"`([^`]*)`", advice)
    assert [c.split()[0] for c in commands] == ["remove", "add"], advice

    assert run(cs, "add", directory, "--kind", "user", "--account-id", account_id) == 1, "the other order"
    assert f"remove it at {stored} first" in capsys.readouterr().err
    values = {"KEY": stored, "KIND": "user", "ADDRESS": directory, "ID": account_id}
    for command in commands:
        argv = [re.sub(r"\b(KEY|KIND|ADDRESS|ID)\b", lambda m: values[m.group()], arg) for arg in shlex.split(command)]
        assert run(cs, *argv) == 0, (argv, capsys.readouterr().err)
    assert store.get(directory, "user").account_id == account_id and store.get(stored, "user") is None


def test_check_lists_rows_sign_in_refuses_for_their_kind_or_missing_id_and_remove_takes_the_kind_as_stored(
        cs, store, tag, capsys):
    """Rows another tool wrote: a RowKey that is no kind ('User'), no AccountId. Sign-in finds neither
    (no_account), `list` showed both as accounts and `check` said all was well; `remove --stored-key`
    refused the kind as stored, so the row could not go."""
    capital, no_id = f"cap.{tag}@contoso.test", f"noid.{tag}@contoso.test"
    store._table.upsert_entity({"PartitionKey": capital, "RowKey": "User", "AccountId": f"C-{tag}", "Email": capital})
    store._table.upsert_entity({"PartitionKey": no_id, "RowKey": "user", "Email": no_id})
    assert run(cs, "check") == 1
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if tag in line}
    assert lines[capital].startswith("kind") and lines[no_id].startswith("no-id"), out
    assert run(cs, "remove", "--stored-key", capital, "--kind", "User") == 0
    assert not list(store._table.query_entities("PartitionKey eq @k", parameters={"k": capital}))
    capsys.readouterr()
    assert run(cs, "remove", f"rest.{tag}@contoso.test", "--kind", "User") == 1, "an EMAIL's kind is user or agent"
    err = capsys.readouterr().err
    assert "kind 'User' must be user or agent" in err and "--stored-key" in err, err


def _shown(out: str, problem: str, account_id: str) -> tuple[str, str]:
    """(kind column, what column) of `check`'s `problem` line for the row holding `account_id`."""
    (line,) = [line for line in out.splitlines() if line.startswith(f"{problem} ") and f" {account_id} " in line]
    _, _, kind, _, what = re.split(r"  +", line.rstrip(), maxsplit=4)
    return kind, what


def test_a_kind_with_invisible_characters_is_shown_escaped_and_typed_back_removes_that_row_not_the_live_one(
        cs, store, tag, capsys):
    """Another tool stored a second row at the email whose RowKey is `user` and a zero-width space. `list`
    and `check` printed that kind raw (it looked like `user`), and check's `what` escaped it twice
    (`'user\\x5cu200b'`): the kind typed as shown deleted the live account instead."""
    email, odd = f"zed.{tag}@contoso.test", f"odd.{tag}@contoso.test"
    assert run(cs, "add", email, "--kind", "user", "--account-id", f"Z-1.{tag}") == 0
    store._table.upsert_entity({"PartitionKey": email, "RowKey": "user\u200b", "AccountId": f"Z-OLD.{tag}",
                                "Enabled": True})
    store._table.upsert_entity({"PartitionKey": odd, "RowKey": "user\u202e\u2028x", "AccountId": f"O-1.{tag}",
                                "Enabled": "false\u200b"})
    capsys.readouterr()
    assert run(cs, "list") == 0
    listed = capsys.readouterr().out
    assert not {"\u200b", "\u202e", "\u2028"} & set(listed), "no invisible character reaches the terminal"
    assert re.search(rf"{re.escape(email)} +user\\u200b +Z-OLD\.{tag}", listed), listed
    assert re.search(rf"{re.escape(odd)} +user\\u202e\\u2028x +O-1\.{tag} ", listed), listed

    assert run(cs, "check") == 1
    out = capsys.readouterr().out
    assert not {"\u200b", "\u202e", "\u2028"} & set(out), out
    assert not [line for line in out.splitlines() if tag in line and "\\x5c" in line], "escaped once, not twice"
    kind, what = _shown(out, "kind", f"Z-OLD.{tag}")
    assert kind == "user\\u200b" and what == f"its kind '{kind}' is not user or agent", (kind, what)
    odd_kind, odd_what = _shown(out, "kind", f"O-1.{tag}")
    assert odd_kind == "user\\u202e\\u2028x" and f"its kind '{odd_kind}'" in odd_what, out
    assert _shown(out, "enabled", f"O-1.{tag}")[1] == "Enabled is 'false\\u200b', not a boolean: counts as disabled"

    assert run(cs, "remove", "--stored-key", email, "--kind", kind) == 0, "the kind as `check` shows it"
    assert store._table.get_entity(email, "user")["AccountId"] == f"Z-1.{tag}", "the live account stays"
    assert not list(store._table.query_entities("PartitionKey eq @k and RowKey ne 'user'", parameters={"k": email}))
    assert run(cs, "remove", "--stored-key", odd, "--kind", odd_kind) == 0
    assert not list(store._table.query_entities("PartitionKey eq @k", parameters={"k": odd}))


def test_a_last_login_at_stored_as_text_is_no_time_and_no_crash(cs, store, tag, capsys):
    """`az storage entity merge LastLoginAt=...` stores a string: every later login of the person was a
    500 (datetime minus str) and `list` a traceback; it counts as no login yet and the next one rewrites it."""
    email = f"text.{tag}@contoso.test"
    assert run(cs, "add", email, "--kind", "user", "--account-id", f"T-{tag}") == 0
    store._table.update_entity({"PartitionKey": email, "RowKey": "user", "LastLoginAt": "2024-05-01T10:00:00Z",
                                "LinkedIdpSubject": f"t:{tag}"}, mode=UpdateMode.MERGE)
    account = store.get(email, "user")
    assert account.last_login_at is None
    linked = store.link_and_record_login(account, f"t:{tag}")
    assert isinstance(store.get(email, "user").last_login_at, datetime) and linked.account_id == f"T-{tag}"
    capsys.readouterr()
    assert run(cs, "list") == 0 and email in capsys.readouterr().out


def test_import_over_linked_accounts_of_other_ids_writes_nothing_unless_forced(cs, store, tag, tmp_path, capsys):
    linked, fresh = f"imp-linked.{tag}@contoso.test", f"imp-new.{tag}@contoso.test"
    store.add(linked, "agent", f"A-OLD.{tag}")
    store.link_and_record_login(store.get(linked, "agent"), "tenant:agent-person")
    csv_file = _write(tmp_path / "repoint.csv", ["email,kind,account_id", f"{fresh},user,U-NEW.{tag}",
                                                 f"{linked},agent,A-NEW.{tag}"])
    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    assert "line 3: the agent account of" in err and f"is A-OLD.{tag}, linked to tenant:agent-person" in err, err
    assert "1 row would sign a linked person in to another account; nothing was written" in err
    assert store.get(fresh, "user") is None and store.get(linked, "agent").account_id == f"A-OLD.{tag}"
    assert run(cs, "import", str(csv_file), "--force") == 0
    assert store.get(linked, "agent").account_id == f"A-NEW.{tag}"
    assert store.get(fresh, "user").account_id == f"U-NEW.{tag}"


def test_a_login_during_an_import_is_not_repointed(cs, store, tag):
    """The import checks against a scan, then writes etag-checked: a person who links the account in
    between keeps it, and the row comes back refused."""
    email = f"imp-race.{tag}@contoso.test"
    store.add(email, "user", f"U-OLD.{tag}")
    stored = store.stored_accounts()
    store.link_and_record_login(store.get(email, "user"), "tenant:raced")  # lands after the scan
    from shared.accounts import AccountRow

    result = store.import_rows([AccountRow(email, "user", f"U-NEW.{tag}", line=2)], stored=stored)
    assert result.written == 0 and [r.account_id for r, _ in result.refused] == [f"U-NEW.{tag}"]
    assert (store.get(email, "user").account_id, store.get(email, "user").linked_idp_subject) == (f"U-OLD.{tag}",
                                                                                                  "tenant:raced")


# ---- rows that directory sync is moving (shared/scim/sync.py): login's rule, not the row's presence


def _moving_pair(store, tag: str, committed: bool, cleared: bool = False) -> tuple[str, str]:
    """An agent account mid-move as directory sync leaves it: the old row, and its copy at the new email
    (MovedFrom: invisible until the old row says MovedTo, the commit; `cleared`: the copy's MovedFrom
    is already cleared, only the old row is left to delete)."""
    old, new = f"mv-old.{tag}@contoso.test", f"mv-new.{tag}@contoso.test"
    common = {"RowKey": "agent", "AccountId": "scim-agent-x", "Enabled": True, "ScimId": "x"}
    store._table.create_entity({"PartitionKey": old, "Email": old, **common,
                                **({"MovedTo": new} if committed else {})})
    store._table.create_entity({"PartitionKey": new, "Email": new, **common, **({} if cleared else {"MovedFrom": old})})
    return old, new


def _stored(store, key: str) -> dict:
    return dict(store._table.get_entity(key, "agent"))


@pytest.mark.parametrize("committed", [True, False])
def test_add_import_disable_enable_unlink_refuse_a_row_login_does_not_find_because_it_is_moving(
        cs, store, tag, tmp_path, capsys, committed):
    old, new = _moving_pair(store, tag, committed)
    hidden = old if committed else new  # login finds the other one
    before = _stored(store, hidden)
    csv_file = _write(tmp_path / "moving.csv", ["email,kind,account_id", f"{hidden},agent,CLI-1"])
    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    assert "line 2:" in err and "directory sync" in err and "nothing was written" in err, err
    live = new if committed else old
    assert f"sign-in finds it at {live}, not here: run the command on {live}" in err, err
    assert run(cs, "add", hidden, "--kind", "agent", "--account-id", "CLI-2") == 1
    err = capsys.readouterr().err
    assert "directory sync" in err and "kept changing" not in err, err
    for command in ("disable", "enable", "unlink"):
        assert run(cs, command, hidden, "--kind", "agent") == 1, command
        err = capsys.readouterr().err
        # The account signs in at `live` now, where the command works at once: no waiting for Entra.
        assert f"sign-in finds it at {live}, not here: run the command on {live}" in err and "Entra" not in err, err
    assert _stored(store, hidden) == before, "nothing was written"
    assert store.get(live, "agent").account_id == "scim-agent-x", "the move is untouched"
    assert run(cs, "disable", live, "--kind", "agent") == 0, "the command works where the refusal said"
    assert store.get(live, "agent").enabled is False


@pytest.mark.parametrize("committed", [True, False])
def test_a_row_of_a_move_that_neither_address_signs_in_at_says_to_let_entra_finish(cs, store, tag, capsys, committed):
    """The other row of the move gone (or not the move's): sign-in finds the account nowhere, so
    only Entra's next write can put it back."""
    old, new = _moving_pair(store, tag, committed)
    hidden, other = (old, new) if committed else (new, old)
    store._table.delete_entity(other, "agent")
    assert store.get(hidden, "agent") is None
    assert run(cs, "disable", hidden, "--kind", "agent") == 1
    err = capsys.readouterr().err
    assert "sign-in finds it at neither address now: let Entra finish the move" in err, err
    assert "run the command on" not in err, err


def test_disable_of_the_moved_account_itself_works_while_its_marker_is_still_there(cs, store, tag, capsys):
    """After the commit the copy (MovedFrom still set) is the account login finds: it can be disabled."""
    _, new = _moving_pair(store, tag, committed=True)
    assert run(cs, "disable", new, "--kind", "agent") == 0
    assert store.get(new, "agent").enabled is False


def test_check_reports_rows_directory_sync_is_moving(cs, store, tag, capsys):
    old, new = _moving_pair(store, tag, committed=True)
    assert run(cs, "check") == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if old in line)
    assert line.startswith("moving") and new in line, out
    assert "Entra" in out


@pytest.mark.parametrize("by", ["email", "stored key"])
def test_remove_refuses_an_old_row_whose_copy_still_depends_on_it(cs, store, tag, capsys, by):
    """By its email or by --stored-key (as `check` prints it) alike: the stored-key path deleted the old
    row, and the account at the new email stopped signing in."""
    old, new = _moving_pair(store, tag, committed=True)
    which = (old,) if by == "email" else ("--stored-key", old)
    assert run(cs, "remove", *which, "--kind", "agent") == 1
    err = capsys.readouterr().err
    assert "directory sync" in err and f"would hide the account at {new}" in err, err
    assert store.get(new, "agent") is not None, "the moved account still signs in"
    store._table.update_entity({"PartitionKey": new, "RowKey": "agent", "MovedFrom": ""})  # step 3 done
    assert run(cs, "remove", *which, "--kind", "agent") == 0, "a leftover old row can go"
    assert store.get(new, "agent") is not None


# ---- CSV: a stray quote is refused, not read as a field running on over the next rows


def test_a_stray_quote_is_refused_naming_its_lines_and_nothing_is_written(cs, store, tag, tmp_path, capsys):
    """The lenient reader let an unclosed quote swallow the next row into a name ('imported 2 accounts',
    exit 0) and read `"a"b@...` as `ab@...`."""
    emails = [f"{who}.{tag}@swallow.test" for who in ("ann", "bob", "cat")]
    swallow = _write(tmp_path / "swallow.csv", [
        "email,kind,account_id,name",
        f'{emails[0]},user,SX-1.{tag},"Lee, Ann',      # line 2: the quote is not closed on its line
        f'{emails[1]},user,SX-2.{tag},"Bob" Smith',   # line 3: ... but here, followed by text
        f"{emails[2]},user,SX-3.{tag},Cat",
    ])  # fmt: skip
    assert run(cs, "import", str(swallow)) == 1
    err = capsys.readouterr().err
    assert f"{swallow}: the row that starts on line 2 is not valid CSV at line 3" in err, err
    assert "nothing was written" in err and "imported" not in err, err
    assert _stored_with(store, tag) == [], "no row of the file was written"

    quoted = _write(tmp_path / "quoted.csv", ["email,kind,account_id", f'"a"b.{tag}@swallow.test,user,SX-4.{tag}'])
    assert run(cs, "import", str(quoted)) == 1
    assert f"{quoted}: line 2 is not valid CSV" in capsys.readouterr().err
    unclosed = _write(tmp_path / "unclosed.csv", ["email,kind,account_id,name", f'{emails[0]},user,SX-5.{tag},"Ann'])
    assert run(cs, "import", str(unclosed)) == 1
    assert "line 2 is not valid CSV" in capsys.readouterr().err
    assert _stored_with(store, tag) == []


def test_a_well_formed_quoted_field_over_two_lines_is_one_row_and_later_lines_keep_their_numbers(
        cs, store, tag, tmp_path, capsys):
    emails = [f"{who}.{tag}@quoted.test" for who in ("ann", "bob", "cat")]
    rows = ["email,kind,account_id,name",
            f'{emails[0]},user,Q-1.{tag},"Lee, ""Ann"""',     # line 2: a comma and quotes, well quoted
            f'{emails[1]},user,Q-2.{tag},"Bob',               # line 3 ...
            'Smith"',                                          # ... to 4: one row (a name with a line break)
            f'not-an-email-{tag},user,Q-3.{tag},"Two',      # line 5 ...
            'Lines"',                                          # ... to 6: named by its first line
            f"{emails[2]},user,Q-4.{tag},Cat",
            f"also-not-an-email-{tag},user,Q-5.{tag},"]       # line 8
    csv_file = _write(tmp_path / "multi.csv", rows)
    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    assert [line.split(":")[0] for line in err.splitlines() if line.startswith("line ")] == \
        ["line 3", "line 5", "line 8"], err
    assert "line 3: name 'Bob\\x0aSmith' is refused: it holds a control character (U+000A)" in err, err
    assert "3 bad rows; nothing was written" in err

    del rows[2:6], rows[-1]
    assert run(cs, "import", str(_write(tmp_path / "multi.csv", rows))) == 0, capsys.readouterr().err
    assert store.get(emails[0], "user").display_name == 'Lee, "Ann"'
    assert store.get(emails[1], "user") is None
    assert store.get(emails[2], "user").display_name == "Cat"


# ---- account ids and names: no control characters in; none raw in a log line out


def test_add_and_import_refuse_an_account_id_or_name_with_control_characters_and_write_nothing(
        cs, store, tag, tmp_path, capsys):
    """An account id becomes the session token's `sub` and log text: one with a newline forged a line
    of its own in the log, and `add`/`import` took it."""
    email = f"forge.{tag}@contoso.test"
    assert run(cs, "add", email, "--kind", "user", "--account-id", "U-1\naccounts.fake kind=user") == 1
    assert "account_id 'U-1\\x0aaccounts.fake kind=user' is refused: it holds a control character (U+000A)" \
        in capsys.readouterr().err
    assert run(cs, "add", email, "--kind", "user", "--account-id", f"U-1.{tag}", "--name", "Ann\x1b]0;owned\x07") == 1
    assert "name 'Ann\\x1b]0;owned\\x07' is refused" in capsys.readouterr().err
    csv_file = _write(tmp_path / "forge.csv", ["email,kind,account_id,name",
                                               f"{email},user,U-2.{tag},Ann",
                                               f"other.{tag}@contoso.test,agent,\"A-3\u202e.{tag}\",Bob",
                                               f"third.{tag}@contoso.test,user,U-4.{tag},\"Cat\rDog\""])
    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    assert "line 3: account_id 'A-3\\u202e" in err and "U+202E RIGHT-TO-LEFT OVERRIDE" in err, err
    assert "line 4: name 'Cat\\x0dDog' is refused" in err and "2 bad rows; nothing was written" in err, err
    assert _stored_with(store, tag) == []


def test_a_stored_account_id_another_tool_wrote_cannot_forge_a_log_line(cs, store, tag, caplog):
    """accounts.enabled_not_boolean wrote the stored AccountId (and Enabled) raw into the log."""
    from shared.errors import AccountDisabled

    email = f"logged.{tag}@contoso.test"
    store._table.create_entity({"PartitionKey": email, "RowKey": "user", "Email": email,
                                "AccountId": "U-1\nsso.login outcome=success account_id=ADMIN",
                                "Enabled": "no way\r\nforged=1"})
    with caplog.at_level("WARNING", logger="portal_sso"), pytest.raises(AccountDisabled):
        store.find_account(email, "user")
    (record,) = [r for r in caplog.records if "enabled_not_boolean" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message, message
    assert 'account_id="U-1\\nsso.login outcome=success account_id=ADMIN"' in message, message


# ---- storage settings the app would refuse: said as the app says them, no traceback, no credential


@pytest.mark.parametrize(("argv", "env", "said"), [
    pytest.param([], {"TABLES_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=foo"},
                 "TABLES_CONNECTION_STRING: holds no credential", id="no-credential"),
    pytest.param([], {"TABLES_CONNECTION_STRING": "AccountName=foo;AccountKey=not*base64*s3cret"},
                 "TABLES_CONNECTION_STRING: holds an AccountKey that is not base64", id="key-not-base64"),
    pytest.param(["--connection-string", "garbage"], {}, "--connection-string: is not a connection string",
                 id="argv-garbage"),
    pytest.param([], {"TABLES_ENDPOINT": "http://storage.example.com"}, "TABLES_ENDPOINT: is not an https:// URL",
                 id="endpoint-plain-http"),
    pytest.param(["--endpoint", "https://st.table.core.windows.net/?sv=2024&sig=s3cret"], {},
                 "--endpoint: is not an https:// URL", id="argv-endpoint-sas"),
    pytest.param(["--endpoint", "http://127.0.0.1:1/devstoreaccount1"], {},  # the identity's token needs https
                 "--endpoint: is not an https:// URL", id="argv-endpoint-loopback-http"),
])
def test_storage_settings_the_app_refuses_are_bad_input_named_without_a_traceback_or_the_value(argv, env, said,
                                                                                               capsys):
    assert accounts.main([*argv, "list"], environ=env, app_dir=EMPTY_DIR) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}"), err
    assert "Traceback" not in err and "s3cret" not in err and "garbage" not in err, err


# ---- a table of this test's own: rows that can never be removed, or a table that is not there


@pytest.fixture
def own_table(cs, tag, monkeypatch) -> str:
    """The CLI's PortalAccounts is a table of this test alone (made, and dropped after it)."""
    from azure.data.tables import TableServiceClient

    name = f"Accounts{tag}"
    service = TableServiceClient.from_connection_string(cs)
    service.create_table(name)
    monkeypatch.setattr(accounts, "ACCOUNTS_TABLE", name)
    yield name
    service.delete_table(name)


def test_a_row_whose_key_holds_a_lone_surrogate_is_said_to_be_unremovable_not_a_traceback(cs, own_table, tag,
                                                                                           capsys):
    """Another tool can POST such a key (Azurite keeps it); no request URL can name it again (UTF-8 has no
    lone surrogates). `check` said to remove it with --stored-key, and that was a UnicodeEncodeError."""
    table = TableClient.from_connection_string(cs, own_table)
    key = f"k\udcff.{tag}@t.com"
    table.create_entity({"PartitionKey": key, "RowKey": "user", "AccountId": f"S-{tag}", "Email": key})
    assert run(cs, "check") == 0, "nothing `check` can have fixed"
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if tag in line]
    assert line.startswith("unaddressable") and f"k\\udcff.{tag}@t.com" in line, out
    assert "unaddressable: no request can name this row" in out and "--stored-key" not in out, out

    assert run(cs, "remove", "--stored-key", f"k\\udcff.{tag}@t.com", "--kind", "user") == 1
    err = capsys.readouterr().err
    assert "--stored-key holds a lone surrogate (U+DCFF)" in err and "no request can name" in err, err
    assert run(cs, "add", f"x4.{tag}@t.com", "--kind", "user", "--account-id", "U-\udcff\udcfe") == 1
    assert "account_id 'U-\\udcff\\udcfe' is refused: it holds a lone surrogate" in capsys.readouterr().err
    assert [e["AccountId"] for e in table.list_entities()] == [f"S-{tag}"], "nothing else was written"


def test_the_csv_path_is_printed_escaped_in_every_message(cs, store, tag, tmp_path, capsys):
    """SECURITY.md: every value the CLI's errors print goes through `printable`; the file's path did not."""
    odd = tmp_path / "in\x1b[31mport\u202e"
    odd.mkdir()
    shown = str(odd).replace("\x1b", "\\x1b").replace("\u202e", "\\u202e")
    assert run(cs, "import", str(odd / "none.csv")) == 1                                   # no such file
    bad = _write(odd / "bad.csv", ["email,kind,account_id", f"nope-{tag},user,U-1"])       # a bad row
    assert run(cs, "import", str(bad)) == 1
    header = _write(odd / "header.csv", ["mail,kind"])                                      # a wrong header
    assert run(cs, "import", str(header)) == 1
    linked = f"esc-path.{tag}@contoso.test"                                                 # a refused row
    store.add(linked, "user", f"U-OLD.{tag}")
    store.link_and_record_login(store.get(linked, "user"), "tenant:esc")
    repoint = _write(odd / "repoint.csv", ["email,kind,account_id", f"{linked},user,U-NEW.{tag}"])
    assert run(cs, "import", str(repoint)) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err, err
    for said in (f"error: {shown}/none.csv: no such file", f"{shown}/bad.csv: 1 bad row",
                 f"error: {shown}/header.csv: line 1, the header", f"{shown}/repoint.csv: 1 row would sign"):
        assert said in err, (said, err)


@pytest.mark.parametrize("argv", [
    pytest.param(["disable", "a@t.com", "--kind", "user"], id="disable"),
    pytest.param(["enable", "a@t.com", "--kind", "user"], id="enable"),
    pytest.param(["unlink", "a@t.com", "--kind", "user"], id="unlink"),
    pytest.param(["remove", "a@t.com", "--kind", "user"], id="remove"),
    pytest.param(["remove", "--stored-key", "a@t.com", "--kind", "user"], id="remove-stored-key"),
    pytest.param(["add", "a@t.com", "--kind", "user", "--account-id", "U-1"], id="add"),
    pytest.param(["list"], id="list"),
    pytest.param(["check"], id="check"),
])
def test_a_missing_accounts_table_is_named_not_no_such_account_or_unreachable(cs, tag, monkeypatch, capsys, argv):
    """With TABLES_ENDPOINT nothing creates the tables (scripts/deploy does): against storage without
    PortalAccounts, disable/unlink/remove said 'no user account' and add 'Table Storage is unreachable'."""
    monkeypatch.setattr(accounts, "ACCOUNTS_TABLE", f"Missing{tag}")
    assert run(cs, *argv) == 1
    err = capsys.readouterr().err
    assert f"error: Table Storage has no table Missing{tag}" in err and "scripts/deploy" in err, err
    assert "no user account" not in err and "unreachable" not in err and "no user row" not in err, err


def test_an_import_into_a_missing_accounts_table_is_named_and_writes_nothing(cs, tag, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(accounts, "ACCOUNTS_TABLE", f"Missing{tag}")
    csv_file = _write(tmp_path / "ok.csv", ["email,kind,account_id", f"a.{tag}@t.com,user,U-1"])
    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    assert f"error: Table Storage has no table Missing{tag}" in err and "written" not in err, err


@pytest.mark.parametrize("key", ["a/b@t.com", "a\\x5cb@t.com", "a#b@t.com", "a?b@t.com", "a\\x0ab@t.com",
                                 "a\\x85b@t.com"])
def test_remove_of_a_stored_key_no_table_key_can_be_is_bad_input_before_any_request(cs, key, capsys, monkeypatch):
    """Table Storage keeps no key with / \\ # ? or a control character (Azurite refuses to store one):
    `remove --stored-key a/b` reached it and came back as 'Table Storage is unreachable (HTTP 500)', exit 2."""
    monkeypatch.setattr(accounts, "connect", lambda *a, **k: pytest.fail("a request was made"))
    assert run(cs, "remove", "--stored-key", key, "--kind", "user") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --stored-key holds ") and "which Table Storage keeps in no key" in err, err
    assert run(cs, "remove", "--stored-key", "a@t.com", "--kind", "us/er") == 1
    assert capsys.readouterr().err.startswith("error: --kind holds '/'")


# ---- two admin writes of one account id at once: write, then check again (never two mailboxes)


def _holders(store, account_id: str, kind: str = "user") -> list[str]:
    return sorted(a.email for a in store.holders(account_id, kind))


def _paused_after_its_check(monkeypatch, paused_thread: str, checked: threading.Event, go: threading.Event):
    """`add`'s check of the id's holders, in the thread named `paused_thread`, answers and then waits for
    `go` (once): another writer's whole command lands between that check and its write."""
    real = AccountStore.holders

    def holders(self, account_id, kind):
        found = real(self, account_id, kind)
        if threading.current_thread().name == paused_thread and not checked.is_set():
            checked.set()
            assert go.wait(30), "the other writer never finished"
        return found
    monkeypatch.setattr(AccountStore, "holders", holders)


def _before_the_check_again(monkeypatch, window):
    """`add`'s second query of the id's holders, its check again after its write, runs `window` first:
    what it does lands between the write and that check."""
    real, calls = AccountStore.holders, []

    def holders(self, wanted, kind):
        calls.append(1)
        if len(calls) == 2:
            window()
        return real(self, wanted, kind)
    monkeypatch.setattr(AccountStore, "holders", holders)


@pytest.mark.parametrize("late_row", ["new", "existing of another id"])
def test_an_add_that_checked_before_another_adds_write_takes_its_own_row_back(cs, store, tag, capsys, monkeypatch,
                                                                            late_row):
    """B checked the id's holders (none), then A added the id at another email, whole, then B wrote:
    both exited 0 and two mailboxes held the account. B checks again after its write, sees A's row,
    takes its own write back and is refused, naming A's email."""
    account_id, a, b = f"U-RACE.{tag}", f"race-a.{tag}@contoso.test", f"race-b.{tag}@contoso.test"
    if late_row != "new":
        store.add(b, "user", f"U-B-OWN.{tag}", "B Own")
    checked, go = threading.Event(), threading.Event()
    _paused_after_its_check(monkeypatch, "late", checked, go)
    codes = {}
    late = threading.Thread(name="late", target=lambda: codes.setdefault(
        "b", run(cs, "add", b, "--kind", "user", "--account-id", account_id, "--name", "B Late")))
    late.start()
    assert checked.wait(30)
    assert run(cs, "add", a, "--kind", "user", "--account-id", account_id) == 0
    capsys.readouterr()
    go.set()
    late.join(30)
    err = capsys.readouterr().err
    assert codes["b"] == 1, "the later writer saw the other row after its own write and yielded"
    assert f"account id {account_id} is the user account of {a}" in err, err
    assert _holders(store, account_id) == [a], "one mailbox holds the account"
    if late_row == "new":
        assert store.get(b, "user") is None, "its own row taken back"
    else:
        kept = store.get(b, "user")
        assert (kept.account_id, kept.display_name) == (f"U-B-OWN.{tag}", "B Own"), "its own write taken back"


def test_two_adds_that_both_checked_before_either_wrote_never_both_keep_the_account(cs, store, tag, capsys,
                                                                                   monkeypatch):
    """The hunter's race: a barrier right after each add's check of the id's holders, so both checks
    see none and both write. Each checks again after its own write: at worst both yield, never both
    stay; an add that exits 0 holds the account, one that exits 1 does not."""
    account_id = f"U-BAR.{tag}"
    emails = {"first": f"bar-1.{tag}@contoso.test", "second": f"bar-2.{tag}@contoso.test"}
    barrier = threading.Barrier(2, timeout=30)
    real, waited = AccountStore.holders, set()

    def holders(self, wanted, kind):
        found = real(self, wanted, kind)
        name = threading.current_thread().name
        if name in emails and name not in waited:  # the check before the write, not the one after
            waited.add(name)
            barrier.wait()
        return found
    monkeypatch.setattr(AccountStore, "holders", holders)
    codes = {}
    threads = [threading.Thread(name=name, target=lambda n=name, e=email: codes.setdefault(
        n, run(cs, "add", e, "--kind", "user", "--account-id", account_id))) for name, email in emails.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    capsys.readouterr()
    holding = _holders(store, account_id)
    assert len(holding) <= 1, f"two mailboxes hold {account_id}: {holding} (exit codes {codes})"
    assert sorted(codes.values()) in ([0, 1], [1, 1]), codes
    assert holding == [emails[n] for n, code in codes.items() if code == 0], (holding, codes)


@pytest.mark.parametrize("racer", ["add", "import"])
def test_an_import_that_scanned_before_another_writer_took_the_id_takes_its_own_row_back(
        cs, store, tag, tmp_path, capsys, monkeypatch, racer):
    """An add (or a second import) of the same account id at another email lands whole between the
    import's scan and its write: the import checks the ids it wrote again once at the end (one scan),
    removes its own colliding row and reports it refused; its other rows stay written."""
    account_id = f"U-IMP.{tag}"
    mine, theirs, other = (f"imp-mine.{tag}@contoso.test", f"imp-theirs.{tag}@contoso.test",
                           f"imp-other.{tag}@contoso.test")
    ours = _write(tmp_path / "ours.csv", ["email,kind,account_id", f"{mine},user,{account_id}",
                                          f"{other},user,U-OTHER.{tag}"])
    theirs_file = _write(tmp_path / "theirs.csv", ["email,kind,account_id", f"{theirs},user,{account_id}"])
    real, scans = AccountStore.stored_accounts, []

    def scan(self):
        found = real(self)
        scans.append(1)
        if len(scans) == 1:  # our import's scan: the other writer lands whole before our write
            argv = ("add", theirs, "--kind", "user", "--account-id", account_id) if racer == "add" else \
                ("import", str(theirs_file))
            assert run(cs, *argv) == 0, "the other writer came first and saw no holder"
        return found
    monkeypatch.setattr(AccountStore, "stored_accounts", scan)
    capsys.readouterr()
    assert run(cs, "import", str(ours)) == 1
    captured = capsys.readouterr()
    assert "line 2: not written" in captured.err and f"is the user account of {theirs}" in captured.err, captured.err
    assert "imported 1 accounts" in captured.out, captured.out
    assert _holders(store, account_id) == [theirs], "one mailbox holds the account"
    assert store.get(mine, "user") is None, "the import's own colliding row was removed"
    assert store.get(other, "user").account_id == f"U-OTHER.{tag}", "its other rows stay"


def test_an_email_whose_rows_keep_changing_is_refused_and_the_other_rows_are_written(cs, store, tag, tmp_path,
                                                                                    capsys, monkeypatch):
    """One email's row changes before each of the import's writes (a real change: Azurite answers 412
    to the etag-checked write): that email's rows were an AccountConflict that cancelled every pending
    partition, while the CLI said "(the other rows were written)". Now they are refused, said by line,
    and every other row is written; the exit is still 1."""
    import shared.accounts

    hot = f"hot.{tag}@contoso.test"
    store.add(hot, "user", f"U-HOT.{tag}")
    others = [f"later{n}.{tag}@contoso.test" for n in range(60)]
    csv_file = _write(tmp_path / "hot.csv", ["email,kind,account_id", f"{hot},user,U-HOT.{tag}",
                                             *(f"{email},user,U-L{n}.{tag}" for n, email in enumerate(others))])
    real = shared.accounts._write_partition

    def changed_first(table, rows, known):
        if rows[0].email == hot:  # another writer lands before each of our writes of this email
            table.update_entity({"PartitionKey": hot, "RowKey": "user", "DisplayName": "changed"},
                                mode=UpdateMode.MERGE)
        return real(table, rows, known)
    monkeypatch.setattr(shared.accounts, "_write_partition", changed_first)
    assert run(cs, "import", str(csv_file), "--workers", "4") == 1
    captured = capsys.readouterr()
    assert f"line 2: not written (changed during the import): the accounts of {hot} kept changing" in captured.err, \
        captured.err
    assert "the other rows were written" not in captured.err
    assert "1 of 61 rows was not written (the lines above); the other 60 were written" in captured.err, captured.err
    assert "imported 60 accounts (60 user, 0 agent)" in captured.out, captured.out
    assert [store.get(email, "user") is not None for email in others] == [True] * len(others), \
        "every other email's row is written"


@pytest.mark.parametrize("late_row", ["new", "existing of another id"])
def test_a_change_in_the_window_before_the_check_again_does_not_keep_the_account_nor_is_lost(
        cs, store, tag, capsys, monkeypatch, late_row):
    """Between B's write and its check again, A's row of the id lands and another change lands on B's
    row (a login linking the new row, the window SECURITY.md names; an admin's disable of the updated
    one): B's take-back, etag-checked on its own write, fails (412), reads the row again and still
    takes the account id back: the new row is deleted, linked or not; the updated row gets its old id
    back and keeps the disable."""
    account_id, a, b = f"U-WIN.{tag}", f"win-a.{tag}@contoso.test", f"win-b.{tag}@contoso.test"
    if late_row != "new":
        store.add(b, "user", f"U-B-OWN.{tag}")
    def window():  # B's check again, after its write: A's add and the other change land first
        store._table.create_entity({"PartitionKey": a, "RowKey": "user", "AccountId": account_id, "Email": a})
        if late_row == "new":
            store.link_and_record_login(store.get(b, "user"), "tenant:in-the-window")
        else:
            store.update(b, "user", Enabled=False)
    _before_the_check_again(monkeypatch, window)
    assert run(cs, "add", b, "--kind", "user", "--account-id", account_id) == 1
    assert f"is the user account of {a}" in capsys.readouterr().err
    monkeypatch.undo()
    assert _holders(store, account_id) == [a]
    if late_row == "new":
        assert store.get(b, "user") is None, "the row linked in the window goes too"
    else:
        kept = store.get(b, "user")
        assert (kept.account_id, kept.enabled) == (f"U-B-OWN.{tag}", False), "its old id back, the disable kept"


@pytest.mark.parametrize("in_window", ["login", "rename"])
def test_a_take_back_after_a_change_in_the_window_puts_back_what_the_write_replaced_and_keeps_the_change(
        cs, store, tag, capsys, monkeypatch, in_window):
    """B's add over B's own disabled, named row wrote another id, enabled, renamed; A's add of that id
    and another change at B's row (a login linking it; an admin's rename) landed before B's check
    again. The take-back's etag failed and its retry merged back only the AccountId: the row stayed
    enabled, renamed, linked to whoever signed in. Now each field the write set that still holds what
    it set is merged back; what changed since (the link, the rename) stays."""
    account_id, a, b = f"U-T1.{tag}", f"t1-a.{tag}@contoso.test", f"t1-b.{tag}@contoso.test"
    assert run(cs, "add", b, "--kind", "user", "--account-id", f"U-B-OWN.{tag}", "--name", "Bob Original",
               "--disabled") == 0
    def window():  # B's check again: A's add and the other change at B's row land first
        store._table.create_entity({"PartitionKey": a, "RowKey": "user", "AccountId": account_id, "Email": a})
        if in_window == "login":
            store.link_and_record_login(store.get(b, "user"), "tenant:in-the-window")
        else:
            store._table.update_entity({"PartitionKey": b, "RowKey": "user", "DisplayName": "Renamed Since"},
                                       mode=UpdateMode.MERGE)
    _before_the_check_again(monkeypatch, window)
    assert run(cs, "add", b, "--kind", "user", "--account-id", account_id, "--name", "Replaced") == 1
    assert f"is the user account of {a}" in capsys.readouterr().err
    monkeypatch.undo()
    kept = store.get(b, "user")
    name = "Bob Original" if in_window == "login" else "Renamed Since"
    assert (kept.account_id, kept.enabled, kept.display_name) == (f"U-B-OWN.{tag}", False, name), \
        "the id, disable and name the write replaced are back; a rename since is kept"
    assert kept.linked_idp_subject == ("tenant:in-the-window" if in_window == "login" else None), \
        "the login's link (not the write's) is left alone"


def test_an_import_stopped_by_storage_before_its_end_check_is_said_and_check_and_the_rerun_name_the_shared_id(
        tmp_path, tag, capsys, monkeypatch):
    """Another admin's add of the id at c@ lands between the import's scan and its write at a@; storage
    goes away after the writes, before the end check: two mailboxes hold the id. The failure message
    said only "run the same import again", whose refusal said "writing it under a@ would let a second
    mailbox..." (it is written), and `check` said all was fine. A private Azurite, stopped and
    restarted on its disk (an outage, not a data loss)."""
    import shared.accounts
    from tools.stack import start_azurite

    azurite = start_azurite(workdir=tmp_path, on_disk=True)
    try:
        cs = azurite.connection_string
        assert run(cs, "add", f"seed.{tag}@contoso.test", "--kind", "user", "--account-id", f"U-SEED.{tag}") == 0
        account_id, a, c = f"U-OUT.{tag}", f"out-a.{tag}@contoso.test", f"out-c.{tag}@contoso.test"
        csv_file = _write(tmp_path / "out.csv", ["email,kind,account_id", f"{a},user,{account_id}"])
        real_write, real_hold = shared.accounts._write_partition, shared.accounts._hold_alone

        def write(table, rows, known):
            assert run(cs, "add", c, "--kind", "user", "--account-id", account_id) == 0  # after the scan
            return real_write(table, rows, known)

        def hold(table, result):
            azurite.stop()  # storage goes away after the writes, before the end check's scan
            return real_hold(table, result)
        monkeypatch.setattr(shared.accounts, "_write_partition", write)
        monkeypatch.setattr(shared.accounts, "_hold_alone", hold)
        capsys.readouterr()
        assert run(cs, "import", str(csv_file)) == 2
        err = capsys.readouterr().err
        assert "end check" in err and "did not run" in err and "accounts check" in err, err
        monkeypatch.undo()
        azurite = start_azurite(azurite.port, workdir=tmp_path, key=azurite.account_key, on_disk=True)

        assert run(cs, "check") == 1, "two mailboxes holding one account is a finding"
        out = capsys.readouterr().out
        shared_lines = [line for line in out.splitlines() if account_id in line]
        assert len(shared_lines) == 2 and any(a in line for line in shared_lines) and \
            any(c in line for line in shared_lines), out
        assert all(line.startswith("shared") for line in shared_lines), out

        assert run(cs, "import", str(csv_file)) == 1
        err = capsys.readouterr().err
        assert f"already held by both {a} and {c}" in err and "remove one" in err, err
        assert "would let a second mailbox" not in err, err
        assert run(cs, "add", a, "--kind", "user", "--account-id", account_id) == 1
        assert f"already held by both {a} and {c}" in capsys.readouterr().err

        assert run(cs, "remove", c, "--kind", "user") == 0
        capsys.readouterr()
        assert run(cs, "check") == 0, capsys.readouterr().out
    finally:
        azurite.stop()


@pytest.mark.parametrize("in_window", ["nothing else", "a disable", "a login"])
def test_a_take_back_that_found_the_row_changed_never_enables_it(cs, store, tag, capsys, monkeypatch, in_window):
    """b@ enabled, holding its own id; B's `add --disabled` wrote another id; A's add of that id landed
    before B's check again, and with it a disable of b@ by a third admin (or a login). B's take-back
    failed its etag check and, reading the row again, found Enabled false, what B had written too, so it
    merged Enabled true back: the third admin's disable was undone. A take-back that finds the row
    changed leaves it disabled (the safe direction) and says so; one that finds it as its write left it
    enables it again."""
    account_id, a, b = f"U-EN.{tag}", f"en-a.{tag}@contoso.test", f"en-b.{tag}@contoso.test"
    assert run(cs, "add", b, "--kind", "user", "--account-id", f"U-B-OWN.{tag}") == 0
    def window():  # B's check again: A's add and the other change at B's row land first
        store._table.create_entity({"PartitionKey": a, "RowKey": "user", "AccountId": account_id, "Email": a})
        if in_window == "a disable":
            assert store.update(b, "user", Enabled=False)
        elif in_window == "a login":
            store.link_and_record_login(store.get(b, "user"), "tenant:in-the-window")
    _before_the_check_again(monkeypatch, window)
    capsys.readouterr()
    assert run(cs, "add", b, "--kind", "user", "--account-id", account_id, "--disabled") == 1
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert f"is the user account of {a}" in err and "taken back" in err, err
    kept = store.get(b, "user")
    assert kept.account_id == f"U-B-OWN.{tag}", "its own id back"
    if in_window == "nothing else":
        assert kept.enabled is True, "the row as the write left it: the disable the write made is taken back too"
        assert "left disabled" not in err, err
    else:
        assert kept.enabled is False, "a row changed since the write is never enabled by the take-back"
        assert "left disabled" in err and f"accounts enable {b} --kind user" in err, err


@pytest.mark.parametrize("writer", ["add", "import"])
def test_a_take_back_whose_old_id_another_email_took_meanwhile_never_leaves_two_mailboxes_on_it(
        cs, store, tag, tmp_path, capsys, monkeypatch, writer):
    """b@ holds Y; B writes X at b@ (an add, or an import's row); before B's check again, A adds X at a@
    and C adds Y at c@ (it passes: b@ holds X then). B took its write back, putting Y back at b@: two
    mailboxes signed in to Y, B exited 1 saying only that its write was taken back, C exited 0. The
    take-back is a write that gives an id, so it is checked again after it: b@ is left disabled (its
    row, id, name and link kept) and the message names c@ and says to remove one of the two."""
    x, y = f"U-X.{tag}", f"U-Y.{tag}"
    a, b, c = f"old-a.{tag}@contoso.test", f"old-b.{tag}@contoso.test", f"old-c.{tag}@contoso.test"
    assert run(cs, "add", b, "--kind", "user", "--account-id", y, "--name", "Bob Kept") == 0

    def window():
        store._table.create_entity({"PartitionKey": a, "RowKey": "user", "AccountId": x, "Email": a})
        assert run(cs, "add", c, "--kind", "user", "--account-id", y) == 0, "b@ holds X now: Y is free"

    if writer == "add":
        _before_the_check_again(monkeypatch, window)  # B's check again, after its write
        argv = ("add", b, "--kind", "user", "--account-id", x, "--name", "Bob Kept")
    else:
        import shared.accounts

        real_hold = shared.accounts._hold_alone

        def hold(table, result):
            window()  # after the import's writes, before its end check
            return real_hold(table, result)
        monkeypatch.setattr(shared.accounts, "_hold_alone", hold)
        argv = ("import", str(_write(tmp_path / "b.csv", ["email,kind,account_id,name", f"{b},user,{x},Bob Kept"])))
    capsys.readouterr()
    assert run(cs, *argv) == 1
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert _holders(store, x) == [a], "the write of X taken back"
    assert [h.email for h in store.holders(y, "user") if h.enabled] == [c], "one mailbox signs in to Y"
    kept = store.get(b, "user")
    assert (kept.account_id, kept.display_name, kept.enabled) == (y, "Bob Kept", False), \
        "b@'s row is kept, with its id, disabled"
    assert f"{c} took its old account id {y}" in err and "disabled" in err and "remove one of the two" in err, err
    assert run(cs, "check") == 1, "still a finding for the admin: b@'s row and c@'s hold Y"
    shared_lines = [line for line in capsys.readouterr().out.splitlines() if y in line and line.startswith("shared")]
    assert len(shared_lines) == 2 and all("two mailboxes hold it (a disabled one" in line for line in shared_lines), \
        shared_lines


def test_an_add_cut_off_by_storage_before_its_check_after_the_write_says_it_was_written(tmp_path, tag, capsys,
                                                                                        monkeypatch):
    """Storage goes away after the add's write, before its check again (A's add of the id at a@ landed
    first): it said only "Table Storage is unreachable", exit 2, and b@'s row stayed, sharing the id.
    It says, as a cut-off import does, that the account was written and its check did not run, and to
    run `accounts check`, which lists the shared id once storage is back."""
    from tools.stack import start_azurite

    azurite = start_azurite(workdir=tmp_path, on_disk=True)
    try:
        cs = azurite.connection_string
        account_id, a, b = f"U-CUT.{tag}", f"cut-a.{tag}@contoso.test", f"cut-b.{tag}@contoso.test"
        store = accounts.connect(cs, None)
        def window():  # the check after the write
            store._table.create_entity({"PartitionKey": a, "RowKey": "user", "AccountId": account_id,
                                        "Email": a})
            azurite.stop()
        _before_the_check_again(monkeypatch, window)
        assert run(cs, "add", b, "--kind", "user", "--account-id", account_id) == 2
        err = capsys.readouterr().err
        monkeypatch.undo()
        assert "Table Storage is unreachable" in err, err
        assert f"user account {account_id} for {b} was written" in err and "did not run" in err and \
            "accounts check" in err, err
        azurite = start_azurite(azurite.port, workdir=tmp_path, key=azurite.account_key, on_disk=True)
        assert run(cs, "check") == 1
        out = capsys.readouterr().out
        assert len([line for line in out.splitlines() if account_id in line and line.startswith("shared")]) == 2, out
    finally:
        azurite.stop()


def test_an_import_cut_off_by_storage_counts_only_the_rows_written_and_says_why_the_others_were_not(
        tmp_path, tag, capsys, monkeypatch):
    """A login links a@'s row under its old id during the import (so its row is refused: re-pointing a
    linked person), then storage goes away before the end check. The message said "2 of 2 rows were
    written" and never why a@'s was not. It counts the written rows alone and prints the refused ones
    with their reasons, as far as the import got."""
    import shared.accounts
    from tools.stack import start_azurite

    azurite = start_azurite(workdir=tmp_path)
    try:
        cs = azurite.connection_string
        a, n = f"imp-a.{tag}@contoso.test", f"imp-n.{tag}@contoso.test"
        store = accounts.connect(cs, None)
        assert run(cs, "add", a, "--kind", "user", "--account-id", f"U-A-OLD.{tag}") == 0
        csv_file = _write(tmp_path / "cut.csv", ["email,kind,account_id", f"{a},user,U-A-NEW.{tag}",
                                                 f"{n},user,U-N.{tag}"])
        real_write, real_hold, linked = shared.accounts._write_partition, shared.accounts._hold_alone, []

        def write(table, rows, known):
            if rows[0].email == a and not linked:  # a login in the window between the scan and the write
                linked.append(1)
                store.link_and_record_login(store.get(a, "user"), "tenant:someone")
            return real_write(table, rows, known)

        def hold(table, result):
            azurite.stop()
            return real_hold(table, result)
        monkeypatch.setattr(shared.accounts, "_write_partition", write)
        monkeypatch.setattr(shared.accounts, "_hold_alone", hold)
        capsys.readouterr()
        assert run(cs, "import", str(csv_file), "--workers", "1") == 2
        err = capsys.readouterr().err
        assert "1 of 2 rows were written" in err or "1 of 2 rows was written" in err, err
        assert "2 of 2 rows" not in err, err
        assert f"line 2: not written (changed during the import): the user account of {a} is U-A-OLD.{tag}, " \
               "linked to tenant:someone" in err, err
        assert "end check" in err and "did not run" in err and "accounts check" in err, err
    finally:
        azurite.stop()


def test_an_import_cut_off_by_storage_counts_a_row_whose_write_ended_after_the_failure(tmp_path, tag, capsys,
                                                                                       monkeypatch):
    """Two partitions in flight: one's write lands, and it returns only after storage failed for the
    other and the import began to stop. Its row is written, so the message counts it."""
    import concurrent.futures

    import shared.accounts
    from tools.stack import start_azurite

    azurite = start_azurite(workdir=tmp_path)
    try:
        cs = azurite.connection_string
        first, second = f"late-1.{tag}@contoso.test", f"late-2.{tag}@contoso.test"
        csv_file = _write(tmp_path / "late.csv", ["email,kind,account_id", f"{first},user,U-L1.{tag}",
                                                  f"{second},user,U-L2.{tag}"])
        real_write, real_cancel = shared.accounts._write_partition, concurrent.futures.Future.cancel
        landed, stopping = threading.Event(), threading.Event()

        def write(table, rows, known):
            if rows[0].email == first:
                etags = real_write(table, rows, known)
                landed.set()
                assert stopping.wait(30), "the import never stopped"
                return etags
            assert landed.wait(30)
            azurite.stop()
            return real_write(table, rows, known)

        def cancel(future):
            stopping.set()  # the import has seen the failure and cancels what is left
            return real_cancel(future)
        monkeypatch.setattr(shared.accounts, "_write_partition", write)
        monkeypatch.setattr(concurrent.futures.Future, "cancel", cancel)
        capsys.readouterr()
        assert run(cs, "import", str(csv_file), "--workers", "2") == 2
        err = capsys.readouterr().err
        assert "1 of 2 rows was written before storage failed" in err, err
    finally:
        azurite.stop()


# ---- one mailbox, one account of a kind: spellings of one mailbox are refused
#
# One mailbox, one account of a kind: an address that another address also spells is refused at every
# entry point (add, import, the login's claim, directory sync). The email key folds ASCII A-Z only (SPEC),
# and each of these once got a key of its own beside the plain form: a domain with characters IDNA maps
# (upper-case non-ASCII, full-width letters, the ideographic full stop), a trailing dot, a quoted local
# part (RFC 5322 3.4.1: `"ann"@x` is `ann@x`); and an address holding a default-ignorable character
# (invisible, so `list` showed two rows that look the same). Left to a decision: a domain's A-label
# (`xn--`) and U-label are still two keys (SPEC keys the address as given; mapping one onto the other
# would change keys already stored).

# (one way the mailbox is written, another way of writing the same mailbox); {t} is a per-test tag.
SAME_MAILBOX = [
    pytest.param("ann.{t}@b\u00fccher.test", "ann.{t}@B\u00dcCHER.test", id="idn-uppercase-non-ascii"),
    pytest.param("ann.{t}@contoso.test", "ann.{t}@\uff43\uff4f\uff4e\uff54\uff4f\uff53\uff4f.test",
                 id="fullwidth-domain"),
    pytest.param("ann.{t}@contoso.test", "ann.{t}@contoso\u3002test", id="ideographic-full-stop"),
    pytest.param("ann.{t}@contoso.test", "ann.{t}@contoso.test.", id="trailing-dot"),
    pytest.param("ann.{t}@contoso.test", '"ann.{t}"@contoso.test', id="needlessly-quoted-local-part"),
]


def _accounts_of(store, forms: list[str], kind: str) -> dict[str, str]:
    """{stored key: account id} of the rows of `kind` that the forms find (a refused form finds none)."""
    found = {}
    for form in forms:
        try:
            account = store.get(form, kind)
        except MalformedEmail:
            continue
        if account is not None:
            found[account.key] = account.account_id
    return found


@pytest.mark.parametrize(("first", "second"), SAME_MAILBOX)
def test_add_of_one_mailbox_written_two_ways_never_makes_two_accounts(cs, store, tag, capsys, first, second):
    """`add` of a mailbox, then `add` of the same mailbox written another way with another account id:
    both were accepted ("added" twice, exit 0) under two keys, so one mailbox holds two user
    accounts, and which one a login reaches depends on how Entra happens to write the address (the
    admin's row may also be simply unreachable: no_account). The second add must either land on the
    first one's row or be refused (exit 1, nothing written)."""
    first, second = first.format(t=tag), second.format(t=tag)
    assert run(cs, "add", first, "--kind", "user", "--account-id", f"U-1.{tag}") == 0
    code = run(cs, "add", second, "--kind", "user", "--account-id", f"U-2.{tag}")
    out = capsys.readouterr()
    found = _accounts_of(store, [first, second], "user")
    assert len(found) <= 1, (f"one mailbox, two user accounts: {found} (second add exited {code}: "
                             f"{out.out.strip()} {out.err.strip()})")


@pytest.mark.parametrize(("first", "second"), SAME_MAILBOX)
def test_one_import_file_with_one_mailbox_written_two_ways_is_refused_or_one_row(cs, store, tag, tmp_path, capsys,
                                                                              first, second):
    """An import checks its file for duplicate rows (same email and kind) before writing anything; a
    mailbox written two ways in one HR export slips past that check, and both rows are written: two
    user accounts for one mailbox from one file. The file must be refused (a duplicate, or a malformed
    address), or both lines must be one row."""
    first, second = first.format(t=tag), second.format(t=tag)
    csv_file = tmp_path / "accounts.csv"
    with csv_file.open("w", encoding="utf-8", newline="") as handle:  # csv quoting: '"ann"@x' is '"""ann""@x"'
        csv.writer(handle).writerows([("email", "kind", "account_id"), (first, "user", f"U-1.{tag}"),
                                      (second, "user", f"U-2.{tag}")])
    code = run(cs, "import", str(csv_file))
    out = capsys.readouterr()
    found = _accounts_of(store, [first, second], "user")
    assert len(found) <= 1, (f"one mailbox, two user accounts from one file: {found} (import exited {code}: "
                             f"{out.out.strip()} {out.err.strip()})")


def _key_or_refused(make_key, raw: str) -> str | None:
    try:
        return make_key(raw)
    except (MalformedEmail, ValueError):  # login's MalformedEmail; directory sync's MappingError (a ValueError)
        return None


@pytest.mark.parametrize(("first", "second"), SAME_MAILBOX)
def test_login_and_directory_sync_never_key_one_mailbox_two_ways(first, second):
    """The same rule at the other two doors: the login's `email` claim (shared.login: canonical_email,
    then the account's key) and directory sync's work email (shared.scim.mapping.email_key) accept both
    forms and give them two keys, so an account made by `add` under one form is not found (no_account)
    or not adopted by directory sync (which makes a second account for the same mailbox) when Entra
    writes the other. Both forms must give one key, or one of them be refused."""
    from shared.accounts import email_key
    from shared.scim import mapping

    first, second = first.format(t="x"), second.format(t="x")
    for door, make_key in (("login", email_key), ("directory sync", mapping.email_key)):
        keys = {_key_or_refused(make_key, first), _key_or_refused(make_key, second)} - {None}
        assert len(keys) <= 1, f"{door}: one mailbox, two keys: {sorted(keys)}"


@pytest.mark.parametrize("invisible", [
    pytest.param("\u034f", id="U+034F-combining-grapheme-joiner"),
    pytest.param("\u3164", id="U+3164-hangul-filler"),
    pytest.param("\u180b", id="U+180B-mongolian-free-variation-selector"),
    pytest.param("\u17b4", id="U+17B4-khmer-vowel-inherent-aq"),
])
def test_an_address_with_an_invisible_character_is_refused_or_listed_so_it_can_be_told_apart(cs, store, tag, capsys,
                                                                                          invisible):
    """The email rule refuses zero-width *format* characters (Cf, e.g. U+200B) because they make one
    address look like another. These characters are just as invisible (Unicode Default_Ignorable, or a
    blank filler) but are not Cf, so `add` accepts `ann<invisible>@...` beside `ann@...`, and `list`
    prints both rows raw: an operator sees the same address twice with two account ids and cannot
    tell which row is the real mailbox's (nor remove the right one by typing it). Such an address must
    be refused (exit 1), or at least `list` must show the character escaped."""
    plain = f"ann.{tag}@contoso.test"
    lookalike = f"ann.{tag}{invisible}@contoso.test"
    assert run(cs, "add", plain, "--kind", "user", "--account-id", f"U-1.{tag}") == 0
    code = run(cs, "add", lookalike, "--kind", "user", "--account-id", f"U-2.{tag}")
    capsys.readouterr()
    if code == 0:
        assert run(cs, "list", "--kind", "user") == 0
        listed = [line for line in capsys.readouterr().out.splitlines() if tag in line]
        assert not any(invisible in line for line in listed), \
            f"two rows that look alike, the invisible U+{ord(invisible):04X} printed raw: {listed}"
