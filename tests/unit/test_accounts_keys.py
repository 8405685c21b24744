"""PortalAccounts keys (shared/accounts.py): one account per person whatever the email's case or
padding, and a PartitionKey that Table Storage accepts and that no two emails share."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from shared.accounts import email_key, normalize_email

# Table Storage forbids these in PartitionKey/RowKey; '%' is our escape character.
FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def unescape(key: str) -> str:
    """Independent inverse of email_key: %XX runs are UTF-8 bytes."""
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


@pytest.mark.parametrize(("raw", "expected"), [
    ("  Ann@Contoso.COM \t\n", "ann@contoso.com"),
    ("STRASSE@x.test", "strasse@x.test"),
    ("stra\u00dfe@x.test", "strasse@x.test"),  # 'ß' case-folds to 'ss'
    ("\u0130zmir@x.test", "i\u0307zmir@x.test"),  # Turkish 'İ' folds to 'i' + combining dot, not to plain 'i'
    ("IZMIR@x.test", "izmir@x.test"),  # ASCII 'I' folds to 'i', never to Turkish dotless i (U+0131)
], ids=["trim-and-case", "upper", "sharp-s", "turkish-dotted-I", "ascii-I"])
def test_normalize_email_trims_and_casefolds(raw, expected):
    assert normalize_email(raw) == expected, f"normalize_email({raw!r}) is trimmed and case-folded"


def test_normalize_email_is_idempotent():
    for raw in ["Ann@Contoso.COM", "stra\u00dfe@X", "\u0130@x", " \u03a3\u0391\u03a3@x "]:
        once = normalize_email(raw)
        assert normalize_email(once) == once, f"normalizing {raw!r} twice changes nothing"


def test_emails_differing_only_in_case_or_padding_share_one_key():
    assert email_key(normalize_email(" Ann@Contoso.com")) == email_key(normalize_email("ann@CONTOSO.COM ")), \
        "one person, one account, whatever case or spaces the IdP sends"


@pytest.mark.parametrize(("char", "escaped"), [
    ("/", "%2F"), ("\\", "%5C"), ("#", "%23"), ("?", "%3F"), ("%", "%25"),
    ("\x00", "%00"), ("\x1f", "%1F"), ("\t", "%09"), ("\x7f", "%7F"), ("\x85", "%C2%85"), ("\x9f", "%C2%9F"),
])
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
    ("a%C2%85@x", "a\x85@x"),
    ("a%09@x", "a\t@x"),
    ("%@x", "%25@x"),
])
def test_two_different_emails_never_share_a_key(a, b):
    assert email_key(a) != email_key(b), f"{a!r} and {b!r} must be two accounts"


def crafted_strings() -> list[str]:
    alphabet = ["a", "Z", "%", "2", "F", "/", "\\", "#", "?", "@", ".", "\x00", "\x1f", "\x7f", "\x80", "\x9f",
                "\xa0", "\u00df", "\u20ac", "\U0001f600", "\t", "\n", " ", "'", '"']
    strings = ["".join(p) for n in range(1, 4) for p in itertools.product(alphabet, repeat=n)]
    rng = random.Random(7638)
    strings += ["".join(rng.choice(alphabet) for _ in range(rng.randint(4, 30))) for _ in range(3000)]
    return strings


def test_email_key_output_never_holds_a_forbidden_character_and_is_reversible():
    strings = crafted_strings()
    keys: dict[str, str] = {}
    for text in strings:
        key = email_key(text)
        assert not FORBIDDEN.search(key), f"email_key({text!r}) = {key!r} holds a character Table keys forbid"
        assert unescape(key) == text, f"email_key({text!r}) can be decoded back, so it loses nothing"
        other = keys.setdefault(key, text)
        assert other == text, f"{other!r} and {text!r} both map to the key {key!r}"
    assert len(keys) == len(set(strings)), "distinct inputs give distinct keys"
