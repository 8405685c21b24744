"""PortalAccounts keys (shared/accounts.py `email_key`): two mailboxes never share an account. Only ASCII
`A`-`Z` is folded; an address that is not NFC, holds whitespace, control or format characters or a lone
surrogate, or is not one '@' with text on both sides is refused; the key is one Table Storage accepts,
and ASCII addresses keep the keys the old rule (strip + casefold) gave them."""

from __future__ import annotations

import itertools
import random
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.accounts import MAX_KEY_UNITS, canonical_email, email_key, email_problem, printable, unprintable
from shared.errors import MalformedEmail

# Table Storage forbids these in PartitionKey/RowKey; '%' is our escape character.
FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def old_key(raw: str) -> str:
    """The rule before issue 13 (normalize_email + email_key), kept here to prove ASCII keys unchanged."""
    folded = raw.strip().casefold()
    return re.sub(r"[%/\\#?\x00-\x1f\x7f-\x9f]", lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), folded)


def unescape(key: str) -> str:
    """Independent inverse of the key's escaping: %XX runs are UTF-8 bytes."""
    out, raw, i = [], bytearray(), 0
    while i < len(key):
        if key[i] == "%":
            raw.append(int(key[i + 1:i + 3], 16))
            i += 3
            continue
        if raw:
            out.append(raw.decode("utf-8"))
            raw.clear()
        out.append(key[i])
        i += 1
    if raw:
        out.append(raw.decode("utf-8"))
    return "".join(out)


# Issue 13 item 1: each pair merged into one account under casefold()/NFKC. Each must now be two
# accounts, or the second address refused.
MERGED_BEFORE = [
    pytest.param("stra\u00dfe@contoso.test", "strasse@contoso.test", id="sharp-s"),
    pytest.param("\u212aim@contoso.test", "kim@contoso.test", id="kelvin-sign"),
    pytest.param("jame\u017f@contoso.test", "james@contoso.test", id="long-s"),
    pytest.param("o\ufb03ce@contoso.test", "office@contoso.test", id="ffi-ligature"),
    pytest.param("ann@fa\u00df.de", "ann@fass.de", id="idna2008-domain"),
    pytest.param("kim@contoso.test\u00a0", "kim@contoso.test", id="trailing-nbsp"),
    pytest.param("\u3000kim@contoso.test", "kim@contoso.test", id="leading-ideographic-space"),
    pytest.param("\u00c4rzte@contoso.test", "\u00e4rzte@contoso.test", id="non-ascii-capital"),
    pytest.param("\u0130zmir@contoso.test", "i\u0307zmir@contoso.test", id="turkish-dotted-I"),
]


@pytest.mark.parametrize(("attacker", "victim"), MERGED_BEFORE)
def test_addresses_that_casefold_merged_are_two_accounts_or_refused(attacker, victim):
    assert old_key(attacker) == old_key(victim), "the pair did share an account before (the attack)"
    try:
        key = email_key(attacker)
    except MalformedEmail:
        return  # refused: it finds no account at all
    assert key != email_key(victim), f"{attacker!r} must not find the account of {victim!r}"


@pytest.mark.parametrize(("raw", "why"), [
    ("kim@contoso.test\u00a0", "whitespace (U+00A0 NO-BREAK SPACE) at character 17"),
    ("\u3000kim@contoso.test", "whitespace (U+3000 IDEOGRAPHIC SPACE) at character 1"),
    (" kim@contoso.test", "whitespace (U+0020 SPACE)"),
    ("kim@contoso.test\n", "whitespace"),
    ("kim\u2028@contoso.test", "whitespace"),
    ("kim\u2029@contoso.test", "whitespace"),
    ("kim\u0085@contoso.test", "whitespace"),
    ("kim\x00@contoso.test", "a control character (U+0000"),
    ("kim\x7f@contoso.test", "a control character"),
    ("kim\u200b@contoso.test", "an invisible format character (U+200B ZERO WIDTH SPACE)"),
    ("kim\u202e@contoso.test", "an invisible format character"),
    ("\ufeffkim@contoso.test", "an invisible format character"),
    ("kim\u180e@contoso.test", "an invisible format character"),
    ("kim\ud800@contoso.test", "a lone surrogate (U+D800)"),
    ("\u212aim@contoso.test", "not in Unicode normalization form C"),
    ("re\u0301my@contoso.test", "not in Unicode normalization form C"),
    ("kim.contoso.test", "has no '@'"),
    ("kim@contoso@test", "more than one '@'"),
    ("@contoso.test", "nothing before the '@'"),
    ("kim@", "nothing after the '@'"),
    ("", "has no '@'"),
    ("k" * 250 + "@x.test", "over the 254"),
])  # fmt: skip
def test_malformed_addresses_are_refused_with_the_reason(raw, why):
    with pytest.raises(MalformedEmail) as refused:
        email_key(raw)
    assert refused.value.status == 403 and refused.value.reason == "email_malformed"
    assert why in refused.value.detail, refused.value.detail
    assert raw.strip() not in refused.value.detail or not raw.strip(), "the reason never echoes the address"


def test_a_non_string_is_refused():
    for value in (None, 42, ["a@b"], {"a": "b"}):
        assert email_problem(value), f"{value!r} is refused"


def test_only_ascii_letters_are_folded():
    assert canonical_email("Ann.Lee@Contoso.COM") == "ann.lee@contoso.com"
    assert canonical_email("\u00c4RZTE@M\u00fcnchen.DE") == "\u00c4rzte@m\u00fcnchen.de", "non-ASCII kept as given"
    with pytest.raises(MalformedEmail):  # an upper-case non-ASCII domain letter: mail maps it to the lower one
        canonical_email("ann@M\u00dcNCHEN.DE")
    assert canonical_email("\u03a3\u0391\u03a3@x.test") == "\u03a3\u0391\u03a3@x.test"
    assert email_key("ANN@CONTOSO.COM") == email_key("ann@contoso.com") == "ann@contoso.com"


def test_ascii_addresses_keep_the_keys_they_had():
    """Every printable ASCII address without spaces has the same key under both rules: no stored
    ASCII row needs moving."""
    alphabet = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~.\"(),:;<>[\\]"
    rng = random.Random(1013)
    addresses = [f"{''.join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))}@"
                 f"{''.join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))}" for _ in range(5000)]
    addresses += ["ann@contoso.com", "Ann.Lee+tag@Contoso.COM", "a%2Fb@x", "a/b@x", "%@x", "IZMIR@x.test"]
    for address in addresses:
        local, _, domain = address.rpartition("@")
        if '"' in local or "" in domain.split("."):  # now refused: another address spells the same mailbox
            with pytest.raises(MalformedEmail):
                email_key(address)
            continue
        assert email_key(address) == old_key(address), f"{address!r} changed key"


@pytest.mark.parametrize(("char", "escaped"), [("/", "%2F"), ("\\", "%5C"), ("#", "%23"), ("?", "%3F"), ("%", "%25")])
def test_email_key_percent_encodes_characters_that_table_keys_forbid(char, escaped):
    assert email_key(f"a{char}b@x.test") == f"a{escaped}b@x.test", f"{char!r} is percent-encoded as {escaped}"


def test_email_key_leaves_ordinary_characters_alone():
    email = "first.last+tag_1-\u00e9\u00df\u4e2d@sub.contoso.test"
    assert email_key(email) == email, "only forbidden characters and '%' are escaped"


@pytest.mark.parametrize(("a", "b"), [
    ("a%2Fb@x", "a/b@x"),
    ("a%25b@x", "a%b@x"),
    ("a%b@x", "a%25b@x"),
    ("a%2F@x", "a%252F@x"),
    ("%@x", "%25@x"),
])
def test_two_different_emails_never_share_a_key(a, b):
    assert email_key(a) != email_key(b), f"{a!r} and {b!r} must be two accounts"


def crafted_strings() -> list[str]:
    alphabet = ["a", "Z", "%", "2", "F", "/", "\\", "#", "?", "@", ".", "\x00", "\x1f", "\x7f", "\x80", "\x9f",
                "\xa0", "\u00df", "\u00c4", "\u20ac", "\U0001f600", "\t", "\n", " ", "'", '"', "\u0301", "\u212a",
                "\u200b", "\ud800"]
    strings = ["".join(p) for n in range(1, 4) for p in itertools.product(alphabet, repeat=n)]
    rng = random.Random(7638)
    strings += ["".join(rng.choice(alphabet) for _ in range(rng.randint(4, 30))) for _ in range(3000)]
    valid = [c for c in alphabet if c.isprintable() and c not in " @\u0301\u212a"]
    strings += ["".join(rng.choice(valid) for _ in range(rng.randint(1, 12))) + "@"
                + "".join(rng.choice(valid) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    return strings


def test_every_key_is_valid_and_decodes_to_exactly_one_canonical_address():
    keys: dict[str, str] = {}
    accepted = 0
    for text in crafted_strings():
        try:
            key = email_key(text)
        except MalformedEmail:
            continue
        accepted += 1
        assert not FORBIDDEN.search(key), f"email_key({text!r}) = {key!r} holds a character Table keys forbid"
        assert unescape(key) == canonical_email(text), f"email_key({text!r}) decodes to its canonical address"
        canonical = keys.setdefault(key, canonical_email(text))
        assert canonical == canonical_email(text), f"{canonical!r} and {text!r} both map to the key {key!r}"
        folded = canonical_email(text)
        assert len(folded) == len(text) and all(a == b or (a in string.ascii_uppercase and b == a.lower())
                                                for a, b in zip(text, folded, strict=True)), \
            f"only ASCII A-Z is folded in {text!r}"
    # (most random non-ASCII domains are no IDNA2008 label, and are refused: test_accounts_cli.py, spellings)
    assert accepted > 500, "the crafted strings include many valid addresses"


def test_printable_escapes_what_a_terminal_would_run_and_is_exact():
    for text in ["Ann\x1b[2J", "a\nb\rc", "\u202eevil", "x\\u0041", "\ud800", "ok \u00e9\u4e2d"]:
        shown = printable(text)
        assert shown.isprintable() and "\x1b" not in shown and "\n" not in shown
        assert unprintable(shown) == text, f"{text!r} -> {shown!r} reads back"
    assert printable("ok \u00e9\u4e2d") == "ok \u00e9\u4e2d", "printable text is left alone"


@settings(max_examples=3000, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.text(), st.builds(lambda a, b: f"{a}@{b}", st.text(min_size=1), st.text(min_size=1))))
def test_any_text_is_refused_or_gets_a_valid_key_that_decodes_to_its_canonical_address(text):
    try:
        key = email_key(text)
    except MalformedEmail as refused:
        assert refused.reason == "email_malformed" and email_problem(text)
        return
    assert email_problem(text) is None
    assert not FORBIDDEN.search(key) and unescape(key) == canonical_email(text)
    assert email_key(canonical_email(text)) == key, "the canonical address has the same key"


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_an_address_whose_key_is_over_table_storages_limit_is_refused_and_one_at_it_accepted():
    """Table Storage keeps a key of 1 KiB of UTF-16 (512 units; Azurite refuses longer with a 400, which
    became a 503): '/' takes three in the key, an astral character two units, both counted."""
    assert MAX_KEY_UNITS == 512
    at_limit = "/" * 168 + "\U0001f600" + "@x.com"         # 504 + 2 + 6 units, 176 characters
    assert email_problem(at_limit) is None
    assert utf16_units(email_key(at_limit)) == MAX_KEY_UNITS
    for over in ("/" * 168 + "\U0001f600" + "a@x.com",      # 513 units, but 512 characters of key
                 "/" * 200 + "@x.com"):                       # the defect's input: 606 units, 206 characters
        assert len(over) <= 254, "short enough by the address rule: only the key is too long"
        with pytest.raises(MalformedEmail) as refused:
            email_key(over)
        assert refused.value.status == 403 and refused.value.reason == "email_malformed"
        assert "512" in refused.value.detail and "%2F" not in refused.value.detail, refused.value.detail


# ---- account ids and names: the id becomes the session token's `sub` and log text; both are shown


@pytest.mark.parametrize(("value", "why"), [
    pytest.param("U-1\nforged=1", "a control character (U+000A)", id="newline"),
    pytest.param("U-1\x1b[2J", "a control character (U+001B)", id="escape"),
    pytest.param("U-1\x85", "a control character (U+0085)", id="c1-next-line"),
    pytest.param("U-\u202e1", "an invisible format character (U+202E RIGHT-TO-LEFT OVERRIDE)", id="bidi-override"),
    pytest.param("U-\u200b1", "an invisible format character (U+200B ZERO WIDTH SPACE)", id="zero-width-space"),
    pytest.param("U-1\u2028x", "a line separator (U+2028 LINE SEPARATOR)", id="line-separator"),
    pytest.param("U-\udcff\udcfe", "a lone surrogate (U+DCFF)", id="lone-surrogate"),  # undecodable argv bytes
])
def test_an_account_id_or_a_name_with_a_control_format_or_undecodable_character_is_refused(value, why):
    from shared.accounts import check_account

    (problem,) = check_account("ann@contoso.test", "user", value)
    assert problem.startswith(f"account_id '{printable(value)}' is refused: it holds {why}"), problem
    (problem,) = check_account("ann@contoso.test", "user", "U-1", f"Ann {value}")
    assert problem.startswith(f"name 'Ann {printable(value)}' is refused: it holds {why}"), problem


@pytest.mark.parametrize(("value", "why"), [
    pytest.param("\xa0U-1", "starts with whitespace (U+00A0 NO-BREAK SPACE)", id="leading-no-break-space"),
    pytest.param("U-1\u3000", "ends with whitespace (U+3000 IDEOGRAPHIC SPACE)", id="trailing-ideographic-space"),
    pytest.param(" U-1", "starts with whitespace (U+0020 SPACE)", id="leading-space"),
    pytest.param("a\u0308", "is not in Unicode normalization form C", id="decomposed"),
    pytest.param("O'Neil\u212a", "is not in Unicode normalization form C", id="kelvin-sign"),
])
def test_an_account_id_two_mailboxes_could_share_once_a_portal_trims_or_normalizes_it_is_refused(value, why):
    """An account id is the session token's `sub`, the portal's key for its person: `\xa0U-1\u3000` was
    stored beside another email's `U-1`, and NFD `a\u0308` beside NFC `\xe4` (`list` shows both as one);
    a portal that trims or normalizes its keys would sign two mailboxes in to one account."""
    from shared.accounts import check_account

    (problem,) = check_account("ann@contoso.test", "user", value)
    assert problem.startswith(f"account_id '{printable(value)}' is refused: it {why}"), problem
    assert check_account("ann@contoso.test", "user", "U 1") == [], "a space inside is its own character"


def test_names_keep_the_joiners_scripts_and_emoji_need_and_ids_their_printable_characters():
    from shared.accounts import check_account

    for name in ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: a zero-width non-joiner
                 "\U0001f468\u200d\U0001f469\u200d\U0001f467",           # an emoji family: zero-width joiners
                 "L\u00e9a O'Brien-Smith, Jr.", "\u674e\u5c0f\u9f8d"):
        assert check_account("ann@contoso.test", "user", "U-1", name) == [], name
    assert check_account("ann@contoso.test", "user", "U 1/\u00e9#?\\%") == [], "an id is any printable text"
    assert check_account("ann@contoso.test", "user", "U-\u200d1") != [], "no joiner in an id: it is no word"
