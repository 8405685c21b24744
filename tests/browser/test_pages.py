"""Every page of the app as a person meets it in Chromium: the setup page, the signed-out page after a
real logout, the 403 pages (no account, the other kind's door), 404 (unknown kind, unknown path), 400,
500 and the form_post page. Each is audited with axe-core (WCAG 2.1 A and AA: any violation fails),
must have a <main> landmark, must not scroll sideways at 200% zoom, shows the correlation id at a
readable size, and offers a way back that is the portal's home, never a landing URL (which takes
POSTs only). Screenshots of each, at 100% and 200%, go to the test's temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import sign_in_on_the_idp_page
from tests.conftest import APP_BASE, DEMO_USER, NO_ACCOUNT, PORTAL_ORIGIN, PORTAL_URLS, SIGNED_OUT_URIS
from tools.stack import NODE_MODULES

pytestmark = pytest.mark.browser

AXE = NODE_MODULES / "axe-core" / "axe.min.js"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
HOME = f"{PORTAL_ORIGIN}/"  # PORTAL_*_HOME_URL's default: the landing URL's origin
NORMAL, ZOOMED = {"width": 1280, "height": 800}, {"width": 640, "height": 400}  # 200% of a 1280 px window


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("page-screenshots")


@pytest.fixture
def page(browser, portal, demo_accounts):
    context = browser.new_context(viewport=NORMAL)
    page = context.new_page()
    yield page
    context.close()


def audit(page, name: str, shots: Path) -> None:
    """What every page of ours must pass, at 100% and at 200% zoom."""
    assert page.locator("main").count() == 1, f"{name}: one <main> landmark holds the content"
    for label, viewport in (("100", NORMAL), ("200", ZOOMED)):
        page.set_viewport_size(viewport)
        page.screenshot(path=str(shots / f"{name}-{label}.png"), full_page=True)
        sideways = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert sideways <= 0, f"{name} scrolls sideways by {sideways}px at {label}% zoom"
    page.set_viewport_size(NORMAL)
    if page.get_by_text("Correlation ID").count():
        size = page.evaluate("""() => {
            const p = [...document.querySelectorAll('p')].find(e => e.textContent.includes('Correlation ID'));
            return parseFloat(getComputedStyle(p.querySelector('code')).fontSize);
        }""")
        assert size >= 16, f"{name}: the correlation id people must quote renders at {size}px"
    page.evaluate(AXE.read_text())  # through the DevTools protocol: our CSP allows no foreign script
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_21_AA)
    violations = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]]
    assert not violations, f"{name}: axe-core (WCAG 2.1 A/AA) found {violations}"
    assert result["passes"], "axe-core ran its rules"


def links(page) -> dict[str, str]:
    return {a.text_content().strip(): a.get_attribute("href") for a in page.locator("main a").all()}


def assert_no_landing_links(page) -> None:
    hrefs = set(links(page).values())
    assert not hrefs & set(PORTAL_URLS.values()), f"no page links to a landing URL (POST only): {hrefs}"


def sign_in_as(page, person: dict) -> None:
    page.fill("#login", person["login"])
    page.fill("#password", person["password"])
    page.click("button[type=submit]")


def test_the_setup_page(page, shots):
    page.goto(f"{APP_BASE}/api/sso/setup")
    text = page.text_content("main")
    for uri in SIGNED_OUT_URIS.values():
        assert uri in text, "the signed-out URIs are listed beside the callbacks, to be registered"
    audit(page, "setup", shots)


def test_the_setup_page_with_long_bad_values_does_not_scroll_sideways(page, shots, use_settings):
    long_url = "https://portal.contoso.test/" + "a-very-long-path-segment/" * 8
    use_settings(PORTAL_USER_URL="htp:/" + long_url, PORTAL_ALLOWED_RETURN_ORIGINS=long_url,
                 SESSION_TOKEN_TTL_SECONDS="-5")
    page.goto(f"{APP_BASE}/api/sso/setup")
    assert "'-5' is not a whole number from 60 to 86400" in page.text_content("main"), "the bad value is quoted"
    audit(page, "setup-problems", shots)


def test_logout_comes_back_to_the_signed_out_page_which_links_to_the_portal_home(page, shots):
    page.goto(f"{PORTAL_ORIGIN}/")
    page.click("text=Sign in as user")
    page.wait_for_selector("#login")
    sign_in_on_the_idp_page(page, DEMO_USER)
    page.goto(f"{APP_BASE}/api/sso/user/logout")
    page.click("#logout-yes")  # the IdP's own "sign me out" confirmation
    page.wait_for_selector("text=You are signed out")
    assert page.url.split("?")[0] == SIGNED_OUT_URIS["user"], "the IdP returned to our registered signed-out page"
    assert links(page) == {"Back to the portal": HOME}
    audit(page, "signed-out", shots)
    page.click("text=Back to the portal")
    page.wait_for_selector("text=Sign in as user")  # the portal's home answers a GET
    # Signed out at the IdP too: a new login asks for the password again.
    page.goto(f"{APP_BASE}/api/sso/user/login")
    page.wait_for_selector("#login")


def test_a_logout_declined_at_the_idp_lands_on_a_signed_out_page_that_claims_no_idp_sign_out(page, shots):
    """The IdP lets the person say "No, stay signed in" and still returns to our signed-out page: the page
    must not say the organization's sign-in ended (on a shared computer the next person would believe
    it), and must say to close the browser. The next login here is indeed silent."""
    page.goto(f"{PORTAL_ORIGIN}/")
    page.click("text=Sign in as user")
    page.wait_for_selector("#login")
    sign_in_on_the_idp_page(page, DEMO_USER)
    page.goto(f"{APP_BASE}/api/sso/user/logout")
    page.click("#logout-no")  # the IdP's "No, stay signed in"
    page.wait_for_selector("text=You are signed out")
    assert page.url.split("?")[0] == SIGNED_OUT_URIS["user"], "declined, and still sent to the signed-out page"
    text = " ".join(page.text_content("main").split())
    assert "You have signed out of the portal." in text
    assert "of your organization's sign-in for it" not in text and "and of your organization" not in text
    assert "still active in this browser" in text and "Close the browser if it is a shared computer" in text
    audit(page, "signed-out-declined", shots)
    page.goto(f"{PORTAL_ORIGIN}/user/start")  # the IdP's session lives on: no password asked
    page.wait_for_selector("#signed-in")


def refused_at(page, kind: str, person: dict) -> str:
    """Signs the person in at the kind's door, expecting the 403 page: its text, once its links are checked."""
    page.goto(f"{APP_BASE}/api/sso/{kind}/login")
    sign_in_as(page, person)
    page.wait_for_selector("text=Access denied")
    assert links(page) == {"Sign in with another account": f"/api/sso/{kind}/login?prompt=select_account",
                           "Back to the portal": HOME}, "one link to the portal both kinds share"
    assert_no_landing_links(page)
    return page.text_content("main")


def test_no_account_page_names_the_kind_and_offers_another_account(page, shots):
    text = refused_at(page, "user", NO_ACCOUNT)
    assert f"no portal user account for {NO_ACCOUNT['claims']['email']}" in text
    assert "portal agent account" not in text, "this person has no account of the other kind either"
    audit(page, "403-no-account", shots)


def test_the_other_kinds_door_says_which_account_the_person_has(page, shots):
    text = refused_at(page, "agent", DEMO_USER)
    assert f"no portal agent account for {DEMO_USER['claims']['email']}" in text
    assert "You have a portal user account" in text
    audit(page, "403-other-kind", shots)


@pytest.mark.parametrize(("name", "path"), [("404-unknown-kind", "/api/sso/nobody/login"),
                                            ("404-unknown-path", "/api/no/such/page")])
def test_not_found_pages_offer_the_way_back(page, shots, name, path):
    response = page.goto(f"{APP_BASE}{path}")
    assert response.status == 404
    assert page.text_content("h1") == "Not found", "the app's own 404 page, not the host's"
    assert links(page) == {"Back to the portal": HOME}
    audit(page, name, shots)


def test_a_bad_request_page(page, shots):
    response = page.goto(f"{APP_BASE}/api/sso/user/callback")
    assert response.status == 400
    assert links(page) == {"Back to the portal": HOME}
    audit(page, "400-bad-request", shots)


def test_the_configuration_error_page_still_offers_the_way_back(page, shots, use_settings):
    use_settings(OIDC_CLIENT_ID=None)
    response = page.goto(f"{APP_BASE}/api/sso/agent/login")
    assert response.status == 500
    assert "OIDC_CLIENT_ID" in page.text_content("main")
    assert links(page) == {"Back to the portal": HOME}, "the portal's own settings are fine: its home is known"
    audit(page, "500-configuration", shots)


def test_the_form_post_page(page, shots):
    # The portal answers the token's POST with 204: the browser stays on our page, which is audited.
    page.route(PORTAL_URLS["user"], lambda route: route.fulfill(status=204))
    page.goto(f"{APP_BASE}/api/sso/user/login")
    page.wait_for_selector("#login")
    sign_in_as(page, DEMO_USER)
    page.wait_for_selector("text=Signing you in")
    audit(page, "form-post", shots)


def test_the_form_post_page_sends_the_token_once_when_its_button_is_pressed_too(browser):
    """A slow portal landing (a cold start) and a person pressing "Continue to the portal" while the
    page's own submit was under way: Chromium sent the token a second time, which the portal refuses as
    a replay (its jti seen), dropping the first answer's session cookie: signed out. Here the landing
    answers 204 (no navigation), so the page stays for the press; its script runs under its real CSP."""
    from shared import pages

    reply = pages.form_post("https://portal.test/sso/user", {"session_token": "the-token"})
    posted = []
    context = browser.new_context()
    page = context.new_page()
    try:
        page.route("https://sso.test/delivery", lambda route: route.fulfill(
            status=200, headers={**reply.headers, "Content-Type": reply.content_type}, body=reply.body))
        page.route("https://portal.test/sso/user", lambda route: (posted.append(route.request.post_data),
                                                                 route.fulfill(status=204)))
        page.goto("https://sso.test/delivery", wait_until="commit")  # its own submit follows at once
        for _ in range(100):
            if posted:
                break
            page.wait_for_timeout(20)
        assert posted == ["session_token=the-token"], "the page's script sent the token"
        button = page.locator("#portal-sso button")
        assert button.is_disabled(), "once sent, the button cannot send it again"
        button.click(force=True)
        page.wait_for_timeout(300)
        assert posted == ["session_token=the-token"], "pressed, it sent nothing more"
    finally:
        context.close()
