"""tools.accounts, the operators' account CLI, against Azurite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tools import accounts
from tools.stack import azurite_connection_string, free_port, new_account_key

REPO = Path(__file__).resolve().parents[2]


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


def run(cs: str, *argv: str) -> int:
    return accounts.main(["--connection-string", cs, *argv])


def test_add_list_disable_enable_unlink_remove(cs, store, tag, capsys):
    email = f"Ann.{tag}@Contoso.TEST"
    normalized = email.casefold()

    assert run(cs, "add", email, "--kind", "user", "--account-id", "U-1", "--name", "Ann Example") == 0
    assert run(cs, "add", email, "--kind", "agent", "--account-id", "A-1", "--disabled") == 0
    assert "added user account U-1" in capsys.readouterr().out
    account = store.get(normalized, "user")
    assert (account.account_id, account.display_name, account.enabled) == ("U-1", "Ann Example", True)
    assert store.get(normalized, "agent").enabled is False, "--disabled creates the account disabled"

    store.link_and_record_login(store.get(normalized, "user"), "tenant:person")
    assert run(cs, "list") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if normalized in line]
    assert len(lines) == 2, lines
    user_line = next(line for line in lines if " user " in line)
    assert "U-1" in user_line and "Ann Example" in user_line
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
    assert unlinked.linked_idp_subject is None and unlinked.account_id == "U-1", "unlink keeps the account"
    assert run(cs, "remove", email, "--kind", "agent") == 0
    assert store.get(normalized, "agent") is None
    assert store.get(normalized, "user") is not None, "remove takes only the named kind"


def test_commands_on_a_missing_account_or_bad_input_exit_1(cs, tag, capsys):
    assert run(cs, "disable", f"nobody.{tag}@contoso.test", "--kind", "user") == 1
    assert "no user account" in capsys.readouterr().err
    assert run(cs, "add", "not-an-email", "--kind", "user", "--account-id", "U-9") == 1
    assert "not an email address" in capsys.readouterr().err
    assert run(cs, "add", f"x.{tag}@contoso.test", "--kind", "boss", "--account-id", "U-9") == 1, \
        "a usage error is 1 (2 means storage unreachable)"
    assert run(cs, "add", f"x.{tag}@contoso.test", "--kind", "user", "--account-id", "  ") == 1


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_import_writes_every_row_and_keeps_links(cs, store, tag, tmp_path, capsys):
    both = f"both.{tag}@contoso.test"
    store.add(both, "user", "U-OLD", "Old Name")
    store.link_and_record_login(store.get(both, "user"), "tenant:both")
    csv_file = _write(tmp_path / "accounts.csv", [
        "email,kind,account_id,name,enabled",
        f"{both},user,U-10,Both Person,true",
        f"{both.upper()},agent,A-10,Both Person,yes",  # same partition: one transaction
        f"one.{tag}@contoso.test,agent,A-11,\"Agent, One\",0",
        f"two.{tag}@contoso.test,user,U-12,,",
    ])  # fmt: skip

    assert run(cs, "import", str(csv_file)) == 0
    captured = capsys.readouterr()
    assert "imported 4 accounts (2 user, 2 agent)" in captured.out
    assert captured.err == "", "no progress bar when stderr is not a terminal"

    user = store.get(both, "user")
    assert (user.account_id, user.display_name) == ("U-10", "Both Person")
    assert user.linked_idp_subject == "tenant:both", "an import updates an account without unlinking it"
    assert store.get(both, "agent").account_id == "A-10"
    agent = store.get(f"one.{tag}@contoso.test", "agent")
    assert (agent.display_name, agent.enabled) == ("Agent, One", False)
    assert store.get(f"two.{tag}@contoso.test", "user").enabled is True, "empty enabled means true"


def test_import_with_bad_rows_writes_nothing_and_names_each_line(cs, store, tag, tmp_path, capsys):
    good = [f"good{i}.{tag}@contoso.test" for i in range(4)]
    csv_file = _write(tmp_path / "bad.csv", [
        "email,kind,account_id,name,enabled",                   # line 1
        f"{good[0]},user,U-1,Good,true",                        # line 2
        f"not-an-email-{tag},user,U-2,Bad,true",                # line 3: email
        f"{good[1]},agent,A-3,Good,no",                         # line 4
        f"{good[2]},supervisor,U-5,Bad,maybe",                  # line 5: kind and enabled
        f"{good[3]},user,U-6,Good,1",                           # line 6
        f"{good[0].upper()},user,U-7,Dup,",                     # line 7: duplicate of line 2
    ])  # fmt: skip

    assert run(cs, "import", str(csv_file)) == 1
    err = capsys.readouterr().err
    named = sorted(int(line.split(":")[0].removeprefix("line ")) for line in err.splitlines()
                   if line.startswith("line "))
    assert named == [3, 5, 7], err
    assert "not an email address" in err and "must be user or agent" in err and "'maybe'" in err
    assert "duplicate of line 2" in err
    assert "3 bad rows; nothing was written" in err
    assert all(store.get(email, kind) is None for email in good for kind in ("user", "agent")), \
        "one bad row means no row is written"


def test_import_refuses_a_wrong_header(cs, tmp_path, capsys):
    csv_file = _write(tmp_path / "h.csv", ["mail,type,id", "a@b.test,user,U-1"])
    assert run(cs, "import", str(csv_file)) == 1
    assert "line 1: the header must be" in capsys.readouterr().err


def test_unreachable_storage_exits_2_quickly(tmp_path, tag, capsys):
    closed = azurite_connection_string(free_port(), new_account_key())  # nothing listens there
    started = time.monotonic()
    assert run(closed, "list") == 2
    assert run(closed, "add", f"x.{tag}@contoso.test", "--kind", "user", "--account-id", "U-1") == 2
    elapsed = time.monotonic() - started
    assert "Table Storage is unreachable" in capsys.readouterr().err
    assert elapsed < 10, f"two commands against a closed port took {elapsed:.1f} s"
    bad = _write(tmp_path / "bad.csv", ["email,kind,account_id", "nope,user,U-1"])
    assert run(closed, "import", str(bad)) == 1, "the file is checked before storage is touched"


def test_the_module_entry_point(cs, store, tag):
    email = f"cli.{tag}@contoso.test"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLES_")}
    done = subprocess.run([sys.executable, "-m", "tools.accounts", "--connection-string", cs, "add", email,
                           "--kind", "agent", "--account-id", "A-77"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "added agent account A-77" in done.stdout
    assert store.get(email, "agent").account_id == "A-77"
    usage = subprocess.run([sys.executable, "-m", "tools.accounts", "frobnicate"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 1 and "invalid choice" in usage.stderr
