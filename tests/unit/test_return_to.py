"""The return_to allowlist (shared/login.check_return_to): exact origins only, and every URL trick
that browsers and parsers read differently is refused (open-redirect defence)."""

from __future__ import annotations

import pytest

from shared.config import load_settings
from shared.errors import ReturnToNotAllowed
from shared.login import MAX_RETURN_TO, check_return_to
from tests.unit.test_config import env

ALLOWED = frozenset({"https://portal.contoso.test", "https://agents.contoso.test:8443"})


@pytest.mark.parametrize("url", [
    "https://portal.contoso.test",
    "https://portal.contoso.test/",
    "https://portal.contoso.test/queues/42?tab=calls&x=%2F#top",
    "https://portal.contoso.test:443/path",  # explicit default port is the same origin
    "https://agents.contoso.test:8443/desk",
    "https://PORTAL.Contoso.TEST/x",  # hosts are case-insensitive; the parser lower-cases them
])
def test_return_to_on_an_allowed_origin_is_accepted_unchanged(url):
    assert check_return_to(url, ALLOWED) == url, f"{url!r} points at an allowed origin and is returned as given"


def test_allowed_origin_given_with_explicit_default_port_matches_a_url_without_port():
    # The settings hold each origin as origin_of gives it, so a login start compares without re-normalizing.
    settings = load_settings(env(PORTAL_ALLOWED_RETURN_ORIGINS="https://PORTAL.contoso.test:443"))
    assert settings.allowed_return_origins == {"https://portal.contoso.test"}
    assert check_return_to("https://portal.contoso.test/x", settings.allowed_return_origins), \
        "an allowlist entry with :443 equals the origin without port"


@pytest.mark.parametrize("url", [
    "https://evil.test/",
    "http://portal.contoso.test/",  # scheme differs
    "https://portal.contoso.test:444/",  # port differs
    "https://agents.contoso.test/desk",  # allowed only on 8443
    "https://portal.contoso.test.evil.test/",  # suffix trick
    "https://evil.test/portal.contoso.test",
    "https://evilportal.contoso.test/",
    "https://portal.contoso.test./",  # trailing-dot host is another origin string
    "//evil.test/",  # protocol-relative
    "///evil.test/",
    "https:\\\\evil.test",
    "https:/\\evil.test",
    "https://portal.contoso.test\\@evil.test/",
    "https://portal.contoso.test/a\\b",  # a backslash alone: browsers read it as '/', parsers do not
    "https://portal.contoso.test@evil.test/",  # user info
    "https://user:pass@portal.contoso.test/",  # user info on the right host
    "https://evil.test#@portal.contoso.test",
    "https://evil.test?@portal.contoso.test",
    "javascript:alert(1)",
    "JavaScript://portal.contoso.test/%0Aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/relative/path",
    "relative",
    "",
    " https://portal.contoso.test/",  # leading space
    "https://portal.contoso.test/ ",
    "https://portal.contoso.test/\tx",  # browsers strip tabs and newlines
    "https://portal.contoso.test/\nx",
    "https://por\ttal.contoso.test/",
    "https://portal.contoso.test/\x00",
    "https://portal.contoso.test/\x7f",
    "https://%2F%2Fevil.test/",  # encoded slashes as the host
    "https://portal.contoso.test%2F%2Fevil.test/",
    "https://portal.contoso.test%40evil.test/",
    "https://portal.contoso.test:abc/",  # a port that is not one
    "https://portal.contoso.test:99999/",
    "https://\uff50ortal.contoso.test/",  # full-width 'p'
    "https://portal.contoso.test\uff03@evil.test/",  # full-width '#' (NFKC)
    "ftp://portal.contoso.test/",
    "https://[::1]/",
    "https://127.0.0.1/",
    "https://portal.contoso.test/" + "a" * MAX_RETURN_TO,  # over-long
], ids=repr)
def test_return_to_not_exactly_on_an_allowed_origin_is_refused_with_400(url):
    with pytest.raises(ReturnToNotAllowed) as caught:
        check_return_to(url, ALLOWED)
    assert caught.value.status == 400, f"a refused return_to {url!r} is a 400"
    assert caught.value.reason == "return_to_not_allowed", "the audit reason names the return_to check"


@pytest.mark.parametrize("url, allowed", [
    # str.lower makes the Kelvin sign an ASCII 'k': this folded onto the allowed origin and went on,
    # non-ASCII, into the flow and the session token's return_to claim.
    ("https://portal.\u212Aontoso.test/x", "https://portal.kontoso.test"),
    # An internationalised host is allowed in its xn-- form only (as the settings hold it): the Unicode
    # form is refused even where an allowlist would hold it as written.
    ("https://b\u00fccher.test/x", "https://b\u00fccher.test"),
], ids=["kelvin-sign", "unicode-host"])
def test_return_to_whose_host_is_not_ascii_is_refused_with_400(url, allowed):
    with pytest.raises(ReturnToNotAllowed) as caught:
        check_return_to(url, frozenset({allowed}))
    assert caught.value.status == 400 and caught.value.reason == "return_to_not_allowed", url
    assert "ASCII" in str(caught.value), "the audit detail says why"


@pytest.mark.parametrize("character", ["\x85", "\x9b", "\u202e", "\u2028", "\u2029", "\ufeff", "\u200b", "\ud800"],
                         ids=["c1-next-line", "c1-csi", "rtl-override", "line-separator", "paragraph-separator",
                              "bom", "zero-width-space", "lone-surrogate"])
def test_return_to_with_a_control_format_or_separator_character_anywhere_is_refused(character):
    """Only ASCII controls were refused: U+0085 (a line break to str.splitlines and other parsers), a
    C1 CSI, a right-to-left override or a zero-width space went into the flow and the session token's
    return_to claim, which the portal redirects to."""
    with pytest.raises(ReturnToNotAllowed):
        check_return_to(f"https://portal.contoso.test/a{character}b", ALLOWED)
    assert check_return_to("https://portal.contoso.test/caf\u00e9", ALLOWED), "a letter of any script is fine"


def test_return_to_on_an_internationalised_host_in_its_xn_form_is_accepted():
    url = "https://xn--bcher-kva.test/x"
    assert check_return_to(url, frozenset({"https://xn--bcher-kva.test"})) == url


def test_return_to_at_the_length_limit_is_accepted_and_one_more_character_is_refused():
    base = "https://portal.contoso.test/"
    at_limit = base + "a" * (MAX_RETURN_TO - len(base))
    assert check_return_to(at_limit, ALLOWED) == at_limit, f"a return_to of exactly {MAX_RETURN_TO} characters passes"
    with pytest.raises(ReturnToNotAllowed):
        check_return_to(at_limit + "a", ALLOWED)


def test_return_to_is_refused_when_nothing_is_allowed():
    with pytest.raises(ReturnToNotAllowed):
        check_return_to("https://portal.contoso.test/", frozenset())


def test_an_ipv6_loopback_origin_on_the_allowlist_lets_its_return_to_through():
    allowed = frozenset({"http://[::1]:8080"})
    assert check_return_to("http://[::1]:8080/x", allowed) == "http://[::1]:8080/x"
    with pytest.raises(ReturnToNotAllowed):
        check_return_to("http://[::1]:8081/x", allowed)


def test_the_limit_counts_bytes_as_the_flow_cookie_holds_them_not_characters():
    """2,048 characters of é would seal into a cookie over the 4 KB a browser keeps: the person would
    sign in at the IdP and come back to a 400. Counted as UTF-8 (JSON-escaped), they are refused at
    login start instead, where the portal can say why."""
    base = "https://portal.contoso.test/"
    accented = base + "é" * ((MAX_RETURN_TO - len(base)) // 2)
    assert check_return_to(accented, ALLOWED) == accented, "2 bytes a character, exactly at the limit"
    room = MAX_RETURN_TO - len(base)
    for too_long in (accented + "é", base + "é" * room, base + '"' * room):  # '"' is 2 bytes in JSON
        with pytest.raises(ReturnToNotAllowed):
            check_return_to(too_long, ALLOWED)
    with pytest.raises(ReturnToNotAllowed):
        check_return_to(base + "\udcff", ALLOWED)  # a lone surrogate: no UTF-8 for it, and no 500
