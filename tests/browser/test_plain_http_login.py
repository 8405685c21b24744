"""`func start` serves plain http://localhost:7071, and Entra accepts http://localhost and
http://127.0.0.1 redirect URIs: a person signs in through the app served over plain HTTP on
127.0.0.1, the `__Host-` flow cookie included (browsers treat loopback HTTP as a secure context)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import sign_in_on_the_idp_page
from tests.conftest import DEMO_USER, HTTP_APP_BASE, HTTP_APP_PORT, HTTP_PORTAL_PORT
from tools.demo_portal import DemoPortal
from tools.host import serve_in_thread

pytestmark = pytest.mark.browser
PORTAL = f"http://127.0.0.1:{HTTP_PORTAL_PORT}"


@pytest.fixture
def plain_http_app(app_server, function_host, use_settings, demo_accounts) -> Iterator[str]:
    """The app and a demo portal, both on plain HTTP on loopback."""
    use_settings(PUBLIC_BASE_URL=HTTP_APP_BASE, PORTAL_USER_URL=f"{PORTAL}/user", PORTAL_AGENT_URL=f"{PORTAL}/agent")
    app = serve_in_thread(function_host, port=HTTP_APP_PORT)
    portal = serve_in_thread(DemoPortal(HTTP_APP_BASE, PORTAL), port=HTTP_PORTAL_PORT)
    try:
        yield app.url
    finally:
        portal.stop()
        app.stop()


def test_sign_in_over_plain_http_on_loopback_with_the_host_cookie(browser, plain_http_app):
    assert plain_http_app.startswith("http://127.0.0.1:"), "served without TLS, like func start"
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{PORTAL}/")
        page.click("text=Sign in as user")
        page.wait_for_selector("#login")  # the IdP's login page
        held = [c for c in context.cookies(plain_http_app) if c["name"].startswith("__Host-portal-sso-user-")]
        assert held and held[0]["secure"] and held[0]["httpOnly"] and held[0]["sameSite"] == "None", \
            f"the browser keeps the __Host- flow cookie set over loopback HTTP: {held}"
        sign_in_on_the_idp_page(page, DEMO_USER)
        assert page.url == f"{PORTAL}/user/inbox"
        assert '"sub": "U-1001"' in page.text_content("#claims")
        assert not [c for c in context.cookies(plain_http_app) if c["name"].startswith("__Host-portal-sso-user-")], \
            "the callback cleared the flow cookie"
    finally:
        context.close()
