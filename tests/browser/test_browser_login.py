"""A person signs in with a real browser: Debian's Chromium, driven by Playwright, through the
dev IdP's real login page, the form_post callback and the demo portal's verification."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.browser.conftest import sign_in_on_the_idp_page
from tests.conftest import APP_BASE, DEMO_AGENT, DEMO_USER, NO_ACCOUNT

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(("kind", "person", "account_id"), [("user", DEMO_USER, "U-1001"),
                                                             ("agent", DEMO_AGENT, "A-2001")])
def test_person_signs_in_through_the_idp_login_page_and_lands_on_the_portal(
        browser, portal, demo_accounts, kind, person, account_id):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{portal}/")
        page.click(f"text=Sign in as {kind}")
        page.wait_for_selector("#login")  # the IdP's own login page
        sign_in_on_the_idp_page(page, person)
        assert page.url == f"{portal}/{kind}/inbox", \
            "the token was posted to this kind's portal page, which went on to the return_to claim"
        assert "session_token" not in page.url
        claims = page.text_content("#claims")
        assert f'"sub": "{account_id}"' in claims
        assert f'"account_type": "{kind}"' in claims
        assert f'"email": "{person["claims"]["email"]}"' in claims
        assert not [c for c in context.cookies(APP_BASE) if c["name"].startswith(f"__Host-portal-sso-{kind}-")], \
            "the flow cookie is cleared by the callback"
    finally:
        context.close()


def test_wrong_password_stays_at_the_idp_and_no_token_reaches_the_portal(browser, portal, demo_accounts):
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{APP_BASE}/api/sso/user/login")
        page.fill("#login", DEMO_USER["login"])
        page.fill("#password", "not-the-password")
        page.click("button[type=submit]")
        page.wait_for_selector("#login")
        assert not page.url.startswith(portal)
        flow_cookie = [c for c in context.cookies(APP_BASE) if c["name"].startswith("__Host-portal-sso-user-")]
        assert flow_cookie and flow_cookie[0]["secure"] and flow_cookie[0]["httpOnly"], "flow cookie as SPEC says"
        assert flow_cookie[0]["sameSite"] == "None"
    finally:
        context.close()


def test_two_tabs_sign_in_at_once_and_both_land_on_the_portal(browser, portal, demo_accounts):
    """Both tabs' sign-in links clicked before either login completes: the second start must not break
    the first (SPEC: logins in flight), at the app (its flow cookies) nor at the portal (its nonces)."""
    context = browser.new_context()
    try:
        tabs = [context.new_page(), context.new_page()]
        for tab in tabs:
            tab.goto(f"{portal}/")
            tab.click("text=Sign in as user")
            tab.wait_for_selector("#login")
        assert len([c for c in context.cookies(portal) if c["name"].startswith("__Host-demo-portal-nonce-")]) == 2, \
            "one nonce cookie per login start"
        for tab in tabs:  # the first started, first
            sign_in_on_the_idp_page(tab, DEMO_USER)
            assert tab.url == f"{portal}/user/inbox"
        assert not [c for c in context.cookies(portal) if c["name"].startswith("__Host-demo-portal-nonce-")], \
            "each hand-off cleared its own login's nonce cookie"
    finally:
        context.close()


def test_sign_in_with_another_account_lands_after_the_first_logins_time_is_up(browser, portal, demo_accounts,
                                                                             monkeypatch):
    """The 403 page's "Sign in with another account" starts a new login (its own 10 minutes) with the
    portal's nonce, so the portal's nonce cookie must outlive the first login. Scaled down: a flow of
    3 s, the demo's nonce cookie scaled alike; the link is followed once the first flow's time is up."""
    import time

    import tools.demo_portal as demo
    from shared.runtime import get_runtime

    flows = get_runtime().flows
    scale = 3 / flows.ttl
    monkeypatch.setattr(flows, "ttl", 3)
    monkeypatch.setattr(demo, "NONCE_SECONDS", max(1, round(demo.NONCE_SECONDS * scale)))
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{portal}/")
        page.click("text=Sign in as user")
        page.wait_for_selector("#login")
        page.fill("#login", NO_ACCOUNT["login"])
        page.fill("#password", NO_ACCOUNT["password"])
        page.click("button[type=submit]")
        page.wait_for_selector("text=Access denied")
        time.sleep(3.5)  # reading the page: the first login's time is up
        page.click("a:has-text('Sign in with another account')")
        page.wait_for_selector("#login")
        sign_in_on_the_idp_page(page, DEMO_USER)
        assert page.url == f"{portal}/user/inbox"
        assert '"sub": "U-1001"' in page.text_content("#claims")
    finally:
        context.close()




def _step_up_at_the_idp(context, portal: str, kind: str) -> str:
    """The portal's step-up: its own login start (its nonce), with prompt=login added, followed as far as
    the IdP's authorization URL the app redirects to, which is returned unvisited (the portal's nonce
    cookie and the app's flow cookie are in the browser by then: the context's requests share its jar)."""
    from urllib.parse import parse_qsl, urlsplit

    start = context.request.get(f"{portal}/{kind}/start", max_redirects=0)
    login = context.request.get(f"{start.headers['location']}&prompt=login", max_redirects=0)
    assert login.status == 302, login.text()[:300]
    idp_url = login.headers["location"]
    assert ("prompt", "login") in parse_qsl(urlsplit(idp_url).query), "the app asked the IdP for prompt=login"
    return idp_url

def test_prompt_login_taken_out_of_the_idps_url_is_refused_and_honoured_lands(browser, portal, demo_accounts,
                                                                             monkeypatch):
    """README: prompt=login is "ask for the password again" (the step-up at a shared agent desk). A person
    already signed in at the IdP who deletes prompt=login from the IdP's URL is signed in by the IdP
    without a password; the token's auth_time (before the login started) shows it, and the app refuses.
    The same step-up with its prompt left alone asks for the password and lands. Scaled down: the clock
    skew allowed (120 s) to 1 s, the IdP and the app sharing this machine's clock, and the step-up 3 s
    after the first sign-in."""
    import json
    import time
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    import shared.id_token

    monkeypatch.setattr(shared.id_token, "LEEWAY_SECONDS", 1)

    # The context's own requests (Playwright's, in Node) do not take Chromium's pinned test certificate.
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    try:
        page.goto(f"{portal}/")
        page.click("text=Sign in as agent")
        page.wait_for_selector("#login")
        sign_in_on_the_idp_page(page, DEMO_AGENT)
        time.sleep(3)  # the step-up comes after the first sign-in (by more than the skew allowed)
        started = int(time.time())

        parts = urlsplit(_step_up_at_the_idp(context, portal, "agent"))
        stripped = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "prompt"])
        page.goto(urlunsplit(parts._replace(query=stripped)))
        page.wait_for_selector("#signed-in, p.ref", timeout=20000)  # no password asked: straight back
        assert page.url == f"{APP_BASE}/api/sso/agent/callback"
        text = page.text_content("main")
        assert "id_token_auth_time" in text and "password again" in text and "Correlation ID" in text

        page.goto(_step_up_at_the_idp(context, portal, "agent"))
        page.wait_for_selector("#login")  # honoured: the IdP asks for the password
        sign_in_on_the_idp_page(page, DEMO_AGENT)
        assert page.url == f"{portal}/agent/inbox"
        claims = json.loads(page.text_content("#claims"))
        assert claims["sub"] == "A-2001" and claims["auth_time"] >= started, "a sign-in of the step-up's own"
    finally:
        context.close()


def test_after_another_profile_presented_the_callback_the_browsers_own_clears_its_flow_cookie(
        browser, portal, demo_accounts):
    """The authorization response presented first from another browser profile (400
    browser_binding_mismatch, the marker consumed), then by the browser that started the login: 400
    unknown_state, and that browser's flow cookie is gone (SPEC: the callback clears it), not left holding
    one of the slots of logins in flight."""
    import html
    import re
    from urllib.parse import parse_qsl

    started_here, other_profile = browser.new_context(), browser.new_context()
    try:
        page = started_here.new_page()
        held = {}

        def hold(route):  # the IdP's form_post, kept from this browser and replayed below
            held.update(url=route.request.url, fields=dict(parse_qsl(route.request.post_data)))
            route.abort()

        page.route(re.compile(r".*/api/sso/user/callback$"), hold)
        page.goto(f"{APP_BASE}/api/sso/user/login")
        page.fill("#login", DEMO_USER["login"])
        page.fill("#password", DEMO_USER["password"])
        page.click("button[type=submit]")
        for _ in range(100):
            if held:
                break
            page.wait_for_timeout(100)
        page.unroute_all()
        form = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                       for k, v in held["fields"].items())
        flow_cookies = lambda: [c["name"] for c in started_here.cookies(APP_BASE)  # noqa: E731
                                if c["name"].startswith("__Host-portal-sso-user-")]
        assert len(flow_cookies()) == 1

        for context, reason in ((other_profile, "browser_binding_mismatch"), (started_here, "unknown_state")):
            tab = context.new_page()
            tab.set_content(f'<form id="f" method="post" action="{held["url"]}">{form}</form>')
            with tab.expect_navigation():
                tab.evaluate("document.getElementById('f').submit()")
            assert f"Reason: {reason}" in " ".join(tab.text_content("main").split())
        assert flow_cookies() == [], "the browser's own callback cleared its flow cookie"
    finally:
        started_here.close()
        other_profile.close()


def test_a_flow_lent_through_response_mode_fragment_dies_in_the_victims_browser(browser, portal, demo_accounts):
    """The attacker starts a login (his cookie), turns `response_mode=form_post` into `fragment` in the
    IdP's link and has the victim sign in through it: the victim lands on the callback with the code in
    the URL's fragment, which no request carries, so the app saw an empty GET (400, nothing consumed)
    and the attacker's POST of that code with his own cookie signed him in as the victim. The callback's
    page now reports the fragment's state (only), which consumes the flow, and takes the code out of the
    address bar and history."""
    import requests

    from shared.runtime import get_runtime
    from tests.support.portal import assert_error_page

    attacker = requests.Session()
    started = attacker.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False, timeout=30)
    lure = started.headers["Location"].replace("response_mode=form_post", "response_mode=fragment")
    assert lure != started.headers["Location"]
    victim = browser.new_context()
    try:
        page = victim.new_page()
        redirects: list[str] = []
        page.on("response", lambda r: redirects.append(r.headers.get("location") or ""))
        page.goto(lure)
        page.fill("#login", DEMO_USER["login"])
        page.fill("#password", DEMO_USER["password"])
        page.click("button[type=submit]")
        page.wait_for_selector("text=response_mode_not_allowed", timeout=20000)
        assert "#" not in page.url and "code=" not in page.url, "the code is out of the address bar"
        landing = next(url for url in redirects if "/api/sso/user/callback#" in url)
    finally:
        victim.close()
    fields = dict(parse_qsl(urlsplit(landing).fragment))
    assert fields.get("code") and fields.get("state"), landing
    replay = attacker.post(f"{APP_BASE}/api/sso/user/callback", data=fields, timeout=30)
    assert_error_page(replay, 400, get_runtime(), "unknown_state")
