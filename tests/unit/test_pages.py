"""What the SSO endpoints send back (shared/pages.py) and the flow cookie (shared/login.flow_cookie):
escaped error pages without secrets, the form_post page and its CSP, the security headers."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from html.parser import HTMLParser

import pytest

from shared import pages
from shared.config import FLOW_TTL_SECONDS
from shared.errors import DependencyUnavailable, IdpError, InvalidIdToken, NoAccount, SsoError
from shared.flows import cookie_name, set_cookie

CORRELATION_ID = "c0ffee00-1234-4abc-8def-0123456789ab"
FAKE_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJl"


class Parsed(HTMLParser):
    """The tags, attributes and inline script/style texts of a page, as a browser would read them."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._in: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts.append(data)
        elif self._in == "style":
            self.styles.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def csp_of(reply: pages.Reply) -> dict[str, list[str]]:
    directives = {}
    for part in reply.headers["Content-Security-Policy"].split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def assert_security_headers(reply: pages.Reply) -> None:
    headers = reply.headers
    assert headers.get("Cache-Control") == "no-store", "SSO responses are never cached"
    # URLs may hold a code: no Referer leaves a page, but for the delivery page's own origin (its POST's
    # Origin, which the portal checks, is "null" under no-referrer)
    expected = "strict-origin" if 'id="portal-sso"' in reply.body else "no-referrer"
    assert headers.get("Referrer-Policy") == expected, "no path or query leaves the page in a Referer"
    assert not reply.body or f'<meta name="referrer" content="{expected}">' in reply.body, "the meta tag agrees"
    assert headers.get("X-Content-Type-Options") == "nosniff"
    csp = csp_of(reply)
    assert csp.get("default-src") == ["'none'"], "the CSP starts from default-src 'none'"
    assert csp.get("frame-ancestors") == ["'none'"], "no page of ours may be framed (clickjacking)"
    assert "'unsafe-inline'" not in reply.headers["Content-Security-Policy"], "no 'unsafe-inline' anywhere"


# Error pages

def test_error_page_escapes_markup_in_the_shown_text_and_the_hint():
    err = IdpError("IdP error", shown="<script>alert('shown')</script>", hint='<img src=x onerror="alert(1)">')
    reply = pages.error(err, CORRELATION_ID)
    assert "<script>" not in reply.body and "<img" not in reply.body, "echoed text never becomes markup"
    assert "&lt;script&gt;alert(&#x27;shown&#x27;)&lt;/script&gt;" in reply.body, "the shown text is there, escaped"
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in reply.body, "the hint is there, escaped"
    assert not Parsed(reply.body).scripts, "an error page runs no script"


def test_error_page_names_the_correlation_id_and_has_the_error_status():
    reply = pages.error(NoAccount("no account"), CORRELATION_ID)
    assert CORRELATION_ID in reply.body, "the person can quote the correlation id"
    assert reply.status == 403, "the page carries the error's status"
    assert reply.content_type.startswith("text/html"), "error pages are HTML"


def test_error_page_never_contains_what_only_the_log_may_see(caplog):
    err = InvalidIdToken("signature", f"token {FAKE_TOKEN} did not verify")
    with caplog.at_level(logging.WARNING):
        logging.getLogger("portal_sso").warning("detail=%s", err.detail)
        reply = pages.error(err, CORRELATION_ID, portal_url="https://portal.contoso.test/user")
    assert FAKE_TOKEN in caplog.text, "the detail goes to the log"
    assert FAKE_TOKEN not in reply.body, "the page never shows the detail, so never a token"
    assert FAKE_TOKEN not in str(reply.headers), "nor do the headers"


def test_error_page_escapes_the_correlation_id_and_portal_link():
    reply = pages.error(SsoError("x"), '"><script>x</script>', portal_url='https://p.test/?a="><b>')
    assert "<script>x" not in reply.body and "<b>" not in reply.body, "every echoed value is escaped"


def test_error_page_carries_the_security_headers():
    assert_security_headers(pages.error(SsoError("x"), CORRELATION_ID))


def test_dependency_error_page_is_503_with_retry_after():
    reply = pages.error(DependencyUnavailable("idp", "GET failed"), CORRELATION_ID)
    assert reply.status == 503, "an unreachable dependency is a 503"
    assert reply.headers.get("Retry-After", "").isdigit(), "a 503 tells the browser when to retry"
    assert int(reply.headers["Retry-After"]) > 0


def test_client_error_page_has_no_retry_after():
    assert "Retry-After" not in pages.error(NoAccount("x"), CORRELATION_ID).headers


def test_inline_style_is_allowed_by_its_csp_hash():
    reply = pages.error(SsoError("x"), CORRELATION_ID)
    styles = Parsed(reply.body).styles
    assert len(styles) == 1, "one inline style"
    assert csp_of(reply)["style-src"] == [sha256_source(styles[0])], "style-src is the hash of the inline style"


# The form_post page

PORTAL = 'https://portal.contoso.test/user?x=1&y="2"'
ORIGIN = "https://portal.contoso.test"


@pytest.fixture
def form_reply() -> pages.Reply:
    return pages.form_post(PORTAL, {"session_token": FAKE_TOKEN, "return_to": 'https://portal.contoso.test/a?b="<c>'})


def test_form_post_page_posts_to_the_portal_url(form_reply):
    forms = Parsed(form_reply.body).all("form")
    assert len(forms) == 1, "one form"
    assert forms[0].get("method") == "post", "the token travels in a POST body, never a URL"
    assert forms[0].get("action") == PORTAL, "the form's action is the portal URL, read back unescaped"
    assert '"2"' not in form_reply.body, "the portal URL is escaped inside the attribute"


def test_form_post_page_holds_the_hidden_inputs_with_escaped_values(form_reply):
    inputs = {attrs["name"]: attrs for attrs in Parsed(form_reply.body).all("input")}
    assert set(inputs) == {"session_token", "return_to"}, "exactly the session token and return_to are posted"
    assert all(attrs.get("type") == "hidden" for attrs in inputs.values()), "the inputs are hidden"
    assert inputs["session_token"]["value"] == FAKE_TOKEN, "the session token is posted as given"
    assert inputs["return_to"]["value"] == 'https://portal.contoso.test/a?b="<c>', "return_to round-trips"
    assert "<c>" not in form_reply.body, "return_to is escaped in the attribute"


def test_form_post_page_has_a_button_for_browsers_without_script(form_reply):
    buttons = Parsed(form_reply.body).all("button")
    assert buttons and buttons[0].get("type") == "submit", "a visible submit button works without script"


def test_form_post_csp_limits_form_action_to_the_portal_origin(form_reply):
    assert csp_of(form_reply)["form-action"] == [ORIGIN], "the form may post only to the portal's origin"


def test_form_post_csp_also_allows_the_origin_of_where_the_portal_sends_the_person_next():
    reply = pages.form_post(PORTAL, {"session_token": FAKE_TOKEN}, then="https://agents.contoso.test:8443/desk")
    assert csp_of(reply)["form-action"] == [ORIGIN, "https://agents.contoso.test:8443"]
    same = pages.form_post(PORTAL, {"session_token": FAKE_TOKEN}, then="https://portal.contoso.test/queues")
    assert csp_of(same)["form-action"] == [ORIGIN], "an origin once"


def test_form_post_script_is_allowed_only_by_the_hash_of_the_inline_script(form_reply):
    scripts = Parsed(form_reply.body).scripts
    assert len(scripts) == 1, "one inline script"
    match = re.search(r"<script>(.*?)</script>", form_reply.body, re.S)
    assert match and match.group(1) == scripts[0]
    assert csp_of(form_reply)["script-src"] == [sha256_source(scripts[0])], \
        "script-src is exactly the sha256 of the inline script, so the browser runs it and nothing else"


def test_form_post_page_carries_the_security_headers(form_reply):
    assert_security_headers(form_reply)
    assert form_reply.status == 200


def test_redirect_carries_no_store_and_the_location():
    reply = pages.redirect("https://idp.test/authorize?x=1", ["c=1"])
    assert reply.status == 302 and reply.headers["Location"] == "https://idp.test/authorize?x=1"
    assert reply.cookies == ["c=1"]
    assert_security_headers(reply)


# The flow cookie

def cookie_attributes(cookie: str) -> tuple[str, str, dict[str, str]]:
    first, *rest = [part.strip() for part in cookie.split(";")]
    name, _, value = first.partition("=")
    attributes = {}
    for part in rest:
        key, _, val = part.partition("=")
        attributes[key.lower()] = val
    return name, value, attributes


@pytest.mark.parametrize("kind", ["user", "agent"])
def test_flow_cookie_is_a_host_only_secure_httponly_samesite_none_cookie(kind):
    name, value, attributes = cookie_attributes(set_cookie(cookie_name(kind, "state-1234567890"), "binding-value",
                                                           FLOW_TTL_SECONDS))
    assert name.startswith(f"__Host-portal-sso-{kind}-"), "the __Host- prefix pins it to our host"
    assert value == "binding-value"
    assert "secure" in attributes, "Secure (required by __Host-)"
    assert "httponly" in attributes, "HttpOnly: no script reads the binding"
    assert attributes.get("samesite") == "None", "SameSite=None: the form_post callback is a cross-site POST"
    assert attributes.get("path") == "/", "Path=/ (required by __Host-)"
    assert "domain" not in attributes, "no Domain (forbidden by __Host-)"
    assert 0 < int(attributes["max-age"]) <= 600, "the cookie lives no longer than the flow (10 minutes)"


def test_flow_cookie_cleared_has_max_age_zero():
    _, value, attributes = cookie_attributes(set_cookie(cookie_name("user", "state-1234567890"), "", 0))
    assert value == "" and attributes["max-age"] == "0", "the callback clears the cookie"


def test_flow_ttl_is_at_most_ten_minutes():
    assert FLOW_TTL_SECONDS <= 600, "a flow, and so its cookie, expires after at most 10 minutes"


# Landmarks, the way back, the signed-out page (issue 16 items 1, 11, 14)

def test_every_page_has_one_main_landmark():
    for reply in (pages.error(SsoError("x"), CORRELATION_ID), pages.signed_out("https://p.test/"),
                  pages.form_post(PORTAL, {"session_token": FAKE_TOKEN})):
        assert reply.body.count("<main>") == 1 and reply.body.count("</main>") == 1, "content inside a <main>"


def test_the_signed_out_page_says_so_and_links_to_the_portal_home():
    reply = pages.signed_out("https://portal.contoso.test/")
    assert reply.status == 200 and "You are signed out" in reply.body
    assert [a.get("href") for a in Parsed(reply.body).all("a")] == ["https://portal.contoso.test/"]
    assert not Parsed(reply.body).scripts
    assert_security_headers(reply)


def test_the_error_page_links_back_to_each_distinct_portal_home():
    same = pages.error(SsoError("x"), CORRELATION_ID, homes={"user": "https://p.test/", "agent": "https://p.test/"})
    assert [(a.get("href")) for a in Parsed(same.body).all("a")] == ["https://p.test/"], "one link for one home"
    assert "Back to the portal" in same.body
    both = pages.error(SsoError("x"), CORRELATION_ID, homes={"user": "https://u.test/", "agent": "https://a.test/"})
    assert "Back to the user portal" in both.body and "Back to the agent portal" in both.body


def test_the_error_pages_actions_and_notes_are_escaped():
    err = NoAccount("no account")
    err.notes = ("<b>note</b>",)
    err.actions = [("<i>label</i>", '/api/sso/user/login?prompt=select_account&x="y"')]
    reply = pages.error(err, CORRELATION_ID, portal_url="https://p.test/")
    assert "<b>" not in reply.body and "<i>" not in reply.body and "&lt;b&gt;note" in reply.body
    hrefs = [a.get("href") for a in Parsed(reply.body).all("a")]
    assert hrefs == ['/api/sso/user/login?prompt=select_account&x="y"', "https://p.test/"]


def test_form_post_csp_names_the_return_tos_origin_as_browsers_write_it():
    """'https://agents.test:' (an empty port) is an origin a browser accepts and a CSP source Chromium
    ignores: the source must be the canonical origin."""
    reply = pages.form_post(PORTAL, {"session_token": FAKE_TOKEN}, then="https://agents.contoso.test:/desk")
    assert csp_of(reply)["form-action"] == [ORIGIN, "https://agents.contoso.test"]
