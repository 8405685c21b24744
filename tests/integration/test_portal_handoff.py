"""Issue 13 item 3: the hand-off to the portal is bound to the portal's browser. The app's half: login
start takes the portal's `nonce` and a `prompt`, the session token carries `nonce` and `return_to`,
the delivery page posts the token alone. The portal's half, as tools/demo_portal.py does it (README
"What the portal must do"): the POST's Origin, the nonce of this browser, each jti once, the return_to
claim only. The attacks first: a token posted from another site, twice, with the attacker's return_to.
Then logins in flight: one nonce cookie per login start (SPEC: starting one does not break another)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from werkzeug.test import Client

from shared.runtime import get_runtime
from tests.conftest import APP_BASE, DEMO_USER, PORTAL_ORIGIN
from tests.support.portal import assert_error_page, delivered, sign_in, start_login, verify_session_token
from tools.demo_portal import MAX_NONCE_COOKIES, DemoPortal, nonce_cookie_name
from tools.idp_login import sign_in_at_idp

NONCE = "portal-nonce-0123456789_ABCDEF"


@pytest.fixture
def portal(app_server, demo_accounts) -> Client:
    """The demo portal in-process (its JWKS fetched from the running app), as one browser sees it."""
    return Client(DemoPortal(APP_BASE, PORTAL_ORIGIN))


def start_at_portal(portal: Client, kind: str = "user") -> str:
    """The portal's sign-in link: the app's login URL it sends the browser to (with its nonce)."""
    started = portal.get(f"/{kind}/start", base_url=PORTAL_ORIGIN)
    assert started.status_code == 302
    return started.headers["Location"]


def finish_login(app_login_url: str) -> dict[str, str]:
    """The app's login, the IdP, the callback: the delivered form's fields."""
    browser = requests.Session()
    app_start = browser.get(app_login_url, allow_redirects=False, timeout=20)
    assert app_start.status_code == 302, app_start.text[:300]
    action, fields = sign_in_at_idp(browser, app_start.headers["Location"], DEMO_USER["login"],
                                    DEMO_USER["password"])
    return delivered(browser.post(action, data=fields, allow_redirects=False, timeout=20))[1]


def login_through_the_portal(portal: Client, kind: str = "user") -> dict[str, str]:
    return finish_login(start_at_portal(portal, kind))


def nonce_of(app_login_url: str) -> str:
    return parse_qs(urlsplit(app_login_url).query)["nonce"][0]


def holds_nonce_cookie(portal: Client, app_login_url: str, kind: str = "user") -> bool:
    return portal.get_cookie(nonce_cookie_name(kind, nonce_of(app_login_url)), domain="127.0.0.1") is not None


def put_nonce_cookie(portal: Client, nonce: str, kind: str = "user") -> None:
    """What GET /{kind}/start leaves in the browser for a login with this nonce."""
    portal.set_cookie(nonce_cookie_name(kind, nonce), f"1.{nonce}", domain="127.0.0.1", secure=True)


def post_to_portal(portal: Client, fields: dict[str, str], origin: str = APP_BASE, kind: str = "user"):
    return portal.post(f"/{kind}", data=fields, headers={"Origin": origin}, base_url=PORTAL_ORIGIN)


def token_for(portal: Client, kind: str = "user") -> dict[str, str]:
    """A login this portal browser started: its nonce in the portal's cookie and in the login start
    (what GET /{kind}/start does), then the delivered fields."""
    put_nonce_cookie(portal, NONCE, kind)
    response = sign_in(requests.Session(), APP_BASE, kind, DEMO_USER, nonce=NONCE,
                       return_to=f"{PORTAL_ORIGIN}/{kind}/inbox")
    assert response.status_code == 200, response.text[:300]
    return delivered(response)[1]


# ---- the attacks, each refused by the portal half


def test_a_token_posted_from_another_site_is_refused(portal):
    fields = token_for(portal)
    refused = post_to_portal(portal, fields, origin="https://evil.example")
    assert refused.status_code == 403, refused.get_data(as_text=True)[:300]
    assert "__Host-demo-portal-session" not in refused.headers.get("Set-Cookie", ""), "no portal session"
    assert post_to_portal(portal, fields).status_code == 303, "the same token from the app's own page is fine"


def test_a_user_token_is_refused_at_the_agent_page(portal):
    """Both doors' tokens have the same `aud` (the portal's origin, SPEC): only the `account_type` check keeps
    a user's token from opening the agent side, so the portal half, the sample portal operators copy, must
    make it, even with an agent nonce cookie of the same nonce in the browser."""
    fields = token_for(portal, "user")
    put_nonce_cookie(portal, NONCE, "agent")
    refused = post_to_portal(portal, fields, kind="agent")
    assert refused.status_code == 401 and "user token posted to the agent page" in refused.get_data(as_text=True)
    assert "__Host-demo-portal-session" not in refused.headers.get("Set-Cookie", ""), "no portal session"
    assert post_to_portal(portal, fields).status_code == 303, "the same token at its own page is fine"


def test_a_token_is_accepted_once(portal):
    fields = token_for(portal)
    assert post_to_portal(portal, fields).status_code == 303
    # the browser's nonce cookie put back (the first POST cleared it): only the jti is left to refuse it
    put_nonce_cookie(portal, NONCE)
    again = post_to_portal(portal, fields)
    assert again.status_code == 401 and "already used" in again.get_data(as_text=True), \
        "the second POST of one jti is a replay"
    assert portal.get_cookie(nonce_cookie_name("user", NONCE), domain="127.0.0.1") is None, \
        "a refused hand-off of a verified token spends its login's cookie too"


def test_a_posted_return_to_is_ignored_and_only_the_claim_is_followed(portal):
    fields = token_for(portal)
    accepted = post_to_portal(portal, {**fields, "return_to": "https://evil.example/phish"})
    assert accepted.status_code == 303
    assert accepted.headers["Location"] == f"{PORTAL_ORIGIN}/user/inbox", "the return_to claim, not the field"
    assert "evil.example" not in accepted.get_data(as_text=True)


def test_a_token_of_a_login_this_browser_did_not_start_is_refused(portal, app_server):
    """Login CSRF: the attacker signs in himself and posts his token into the victim's browser (which
    holds its own nonce cookie, or none)."""
    attacker = Client(DemoPortal(APP_BASE, PORTAL_ORIGIN))
    attackers_fields = login_through_the_portal(attacker)
    login_through_the_portal(portal)  # the victim's own login in flight: its nonce cookie is another
    refused = post_to_portal(portal, attackers_fields)
    assert refused.status_code == 401 and "not this browser" in refused.get_data(as_text=True)
    fresh = Client(DemoPortal(APP_BASE, PORTAL_ORIGIN))  # a browser with no nonce cookie at all
    assert post_to_portal(fresh, login_through_the_portal(attacker)).status_code == 401


def test_the_portal_session_is_the_portals_own_and_logout_ends_it(portal):
    assert post_to_portal(portal, login_through_the_portal(portal)).status_code == 303
    inbox = portal.get("/user/inbox", base_url=PORTAL_ORIGIN)
    assert inbox.status_code == 200 and 'id="signed-in"' in inbox.get_data(as_text=True)
    out = portal.get("/user/logout", base_url=PORTAL_ORIGIN)
    assert out.status_code == 302 and out.headers["Location"] == f"{APP_BASE}/api/sso/user/logout"
    assert portal.get("/user/inbox", base_url=PORTAL_ORIGIN).status_code == 401, "the portal's session is over"


# ---- logins in flight: one nonce cookie per login start


def test_two_logins_of_one_kind_in_flight_in_one_browser_both_land(portal):
    """Two tabs: both sign-in links clicked before either login completes (tab 2's start must not
    overwrite tab 1's nonce); each token then lands in the portal, in either order."""
    tab1, tab2 = start_at_portal(portal), start_at_portal(portal)
    fields1, fields2 = finish_login(tab1), finish_login(tab2)
    for tab, fields in ((tab1, fields1), (tab2, fields2)):
        landed = post_to_portal(portal, fields)
        assert landed.status_code == 303, landed.get_data(as_text=True)[:300]
        assert landed.headers["Location"] == f"{PORTAL_ORIGIN}/user/inbox"
        inbox = portal.get("/user/inbox", base_url=PORTAL_ORIGIN).get_data(as_text=True)
        assert 'id="signed-in"' in inbox and nonce_of(tab) in inbox, "this tab's login started the session"


def test_the_nonce_cookie_goes_with_its_hand_off_and_only_it(portal):
    tab1, tab2 = start_at_portal(portal), start_at_portal(portal)
    assert holds_nonce_cookie(portal, tab1) and holds_nonce_cookie(portal, tab2)
    landed = post_to_portal(portal, finish_login(tab1))
    assert landed.status_code == 303, landed.get_data(as_text=True)[:300]
    cleared = [c for c in landed.headers.getlist("Set-Cookie")
               if c.startswith(nonce_cookie_name("user", nonce_of(tab1)) + "=")]
    assert len(cleared) == 1 and "Max-Age=0" in cleared[0], landed.headers.getlist("Set-Cookie")
    assert not holds_nonce_cookie(portal, tab1), "the hand-off spent its login's cookie"
    assert holds_nonce_cookie(portal, tab2), "the other login in flight keeps its own"


def test_a_token_whose_nonce_cookie_is_missing_is_refused(portal):
    """The browser holds another login's nonce cookie, not this one's (cleared, expired or evicted):
    no fallback to any other cookie."""
    tab1, tab2 = start_at_portal(portal), start_at_portal(portal)
    portal.delete_cookie(nonce_cookie_name("user", nonce_of(tab1)), domain="127.0.0.1")
    refused = post_to_portal(portal, finish_login(tab1))
    assert refused.status_code == 401 and "not this browser" in refused.get_data(as_text=True)
    assert "__Host-demo-portal-session" not in refused.headers.get("Set-Cookie", ""), "no portal session"
    assert holds_nonce_cookie(portal, tab2), "a refused token does not touch another login's cookie"
    assert post_to_portal(portal, finish_login(tab2)).status_code == 303, "the other login still lands"


def test_a_browser_holds_a_bounded_number_of_nonce_cookies_the_oldest_evicted(portal):
    """Login starts never completed must not pile cookies up: beyond MAX_NONCE_COOKIES (both kinds
    together, like the app's own flow cookies) the oldest goes, and its login is refused."""
    kinds = ["user", "agent", "user", "agent", "user", "user", "user"]
    logins = [start_at_portal(portal, kind) for kind in kinds]
    held = [holds_nonce_cookie(portal, url, kind) for url, kind in zip(logins, kinds, strict=True)]
    evicted = len(kinds) - MAX_NONCE_COOKIES
    assert MAX_NONCE_COOKIES >= 4, "SPEC: at least four logins in flight per browser"
    assert held == [False] * evicted + [True] * MAX_NONCE_COOKIES
    assert post_to_portal(portal, finish_login(logins[0])).status_code == 401, "the evicted login"
    assert post_to_portal(portal, finish_login(logins[evicted])).status_code == 303, "the oldest one kept"


def test_a_foreign_or_garbled_nonce_cookie_is_evicted_first_not_a_500(portal):
    """Cookies under the prefix that no start of this portal set (another tool's, an old format, a
    non-ASCII digit) count as the oldest."""
    portal.set_cookie("__Host-demo-portal-nonce-user", "\u00b2.x", domain="127.0.0.1", secure=True)
    for _ in range(MAX_NONCE_COOKIES):
        start_at_portal(portal)
    assert portal.get_cookie("__Host-demo-portal-nonce-user", domain="127.0.0.1") is None


# ---- the app's half


def test_the_token_carries_the_portals_nonce_and_return_to_and_the_form_only_the_token(app_server, demo_accounts):
    return_to = f"{PORTAL_ORIGIN}/user/queue?tab=mine"
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER, nonce=NONCE, return_to=return_to)
    assert response.status_code == 200, response.text[:500]
    _, fields = delivered(response)
    assert set(fields) == {"session_token"}, "return_to and the nonce travel only inside the signed token"
    claims = verify_session_token(fields["session_token"], APP_BASE, audience=PORTAL_ORIGIN)
    assert (claims["nonce"], claims["return_to"]) == (NONCE, return_to)


def test_empty_nonce_and_prompt_count_as_absent(app_server, demo_accounts):
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER, nonce="", prompt="", return_to="")
    assert response.status_code == 200, response.text[:500]
    claims = verify_session_token(delivered(response)[1]["session_token"], APP_BASE, audience=PORTAL_ORIGIN)
    assert "nonce" not in claims and "return_to" not in claims


@pytest.mark.parametrize("nonce", ["a" * 15, "a" * 129, "a" * 20 + "!", "a" * 20 + " ", "é" * 20, "a" * 16 + "."])
def test_a_nonce_off_its_syntax_is_refused_at_login(app_server, nonce):
    response = start_login(requests.Session(), APP_BASE, "user", nonce=nonce)
    assert_error_page(response, 400, get_runtime(), "invalid_parameter")
    assert "Set-Cookie" not in response.headers and "Location" not in response.headers


@pytest.mark.parametrize("nonce", ["a" * 16, "A-z_0" * 25 + "abc"])
def test_a_nonce_at_its_bounds_is_accepted(app_server, nonce):
    assert start_login(requests.Session(), APP_BASE, "user", nonce=nonce).status_code == 302


@pytest.mark.parametrize("prompt", ["select_account", "login"])
def test_prompt_goes_to_the_idp(app_server, prompt):
    response = start_login(requests.Session(), APP_BASE, "user", prompt=prompt)
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.headers["Location"]).query)["prompt"] == [prompt]


@pytest.mark.parametrize("prompt", ["none", "consent", "login select_account", "LOGIN"])
def test_any_other_prompt_is_refused(app_server, prompt):
    assert_error_page(start_login(requests.Session(), APP_BASE, "user", prompt=prompt), 400, get_runtime(),
                      "invalid_parameter")
