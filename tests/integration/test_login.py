"""The whole login, through the real host, MSAL, the dev IdP and Azurite."""

from __future__ import annotations

import requests

from tests.conftest import APP_BASE, DEMO_AGENT, DEMO_USER, PORTAL_ORIGIN, PORTAL_URLS
from tests.support.portal import delivered, sign_in, verify_session_token


def test_user_and_agent_sign_in_and_get_a_verifiable_session_token(app_server, demo_accounts):
    for kind, person in (("user", DEMO_USER), ("agent", DEMO_AGENT)):
        session = requests.Session()
        response = sign_in(session, APP_BASE, kind, person)
        assert response.status_code == 200, response.text[:800]
        action, fields = delivered(response)
        assert action == PORTAL_URLS[kind], "the token goes to this kind's portal URL"
        claims = verify_session_token(fields["session_token"], APP_BASE, audience=PORTAL_ORIGIN)
        assert claims["sub"] == demo_accounts[kind]
        assert claims["account_type"] == kind
        assert claims["email"] == person["claims"]["email"]
        assert claims["idp_sub"] == f"{person['claims']['tid']}:{person['claims']['oid']}"
        assert "session_token" not in response.url
