"""One mailbox, one account of a kind: an address that another address also spells is refused at every
entry point (add, import, the login's claim, directory sync). The email key folds ASCII A-Z only (SPEC),
and each of these once got a key of its own beside the plain form: a domain with characters IDNA maps
(upper-case non-ASCII, full-width letters, the ideographic full stop), a trailing dot, a quoted local
part (RFC 5322 3.4.1: `"ann"@x` is `ann@x`); and an address holding a default-ignorable character
(invisible, so `list` showed two rows that look the same). Left to a decision: a domain's A-label
(`xn--`) and U-label are still two keys (SPEC keys the address as given; mapping one onto the other
would change keys already stored)."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import pytest

from shared.errors import MalformedEmail
from tools import accounts

EMPTY_DIR = Path(__file__).resolve().parent  # holds no local.settings.json


@pytest.fixture
def cs(azurite) -> str:
    return azurite.connection_string


@pytest.fixture
def store(cs):
    return accounts.connect(cs, None)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


def run(cs: str, *argv: str) -> int:
    return accounts.main(list(argv), environ={"TABLES_CONNECTION_STRING": cs}, app_dir=EMPTY_DIR)


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
