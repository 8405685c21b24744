"""Driving the real app against the hostile IdP (tests/support/hostile_idp.py), as a browser would:
switch the app to it, seed a person with an account, start a login, post the callback, check a session.
Shared by the hostile-IdP, concurrency and IdP-fault tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import requests

from shared.config import origin_of
from shared.flows import cookie_name
from tests.conftest import APP_BASE, PORTAL_URLS
from tests.support.hostile_idp import CLIENT_ID, CLIENT_SECRET, TENANT, HostileIdp
from tests.support.portal import TIMEOUT, delivered, start_login, verify_session_token

PORTAL_ORIGIN = origin_of(PORTAL_URLS["user"])  # the portal origin the app serves (conftest picks it)


def switch_to(hostile: HostileIdp, use_settings, **changes):
    """Serves the app with the hostile IdP as its issuer; returns the app's new Runtime."""
    settings = {"OIDC_ISSUER_URL": hostile.issuer, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": CLIENT_SECRET,
                **changes}
    return use_settings(**settings)


@dataclass
class Person:
    email: str
    oid: str
    account_id: str

    @property
    def claims(self) -> dict:
        return {"email": self.email, "oid": self.oid, "name": "Test Person", "preferred_username": self.email}


def new_person(account_store, kind: str = "user") -> Person:
    """A person of the hostile IdP's tenant with an enabled, unlinked portal account of `kind`."""
    tag = uuid.uuid4().hex[:12]
    person = Person(email=f"p-{tag}@contoso.test", oid=str(uuid.uuid4()), account_id=f"H-{tag}")
    account_store.add(person.email, kind, person.account_id, "Test Person")
    return person


def begin(hostile: HostileIdp, kind: str = "user", session: requests.Session | None = None,
          **params: str) -> tuple[requests.Session, dict[str, str]]:
    """Login start in a browser-like session and the IdP's answer: (session, callback fields)."""
    session = session or requests.Session()
    return session, hostile.authorize(session, start_login(session, APP_BASE, kind, **params))


def post_callback(session: requests.Session, fields: dict[str, str], kind: str = "user") -> requests.Response:
    return session.post(f"{APP_BASE}/api/sso/{kind}/callback", data=fields, allow_redirects=False, timeout=TIMEOUT)


def post_with_cookie(fields: dict[str, str], cookie: str, kind: str = "user") -> requests.Response:
    """A callback carrying exactly this binding cookie (a copy of a browser's, or none when empty), under
    the name of the flow of the fields' state."""
    headers = {"Cookie": f"{cookie_name(kind, fields.get('state', ''))}={cookie}"} if cookie else {}
    return requests.post(f"{APP_BASE}/api/sso/{kind}/callback", data=fields, headers=headers,
                         allow_redirects=False, timeout=TIMEOUT)


def sign_in(hostile: HostileIdp, kind: str = "user") -> requests.Response:
    session, fields = begin(hostile, kind)
    return post_callback(session, fields, kind)


def cookie_of(session: requests.Session, kind: str = "user") -> str:
    """The value of the one flow cookie of `kind` the session holds (it started one login)."""
    values = [c.value for c in session.cookies if c.name.startswith(f"__Host-portal-sso-{kind}-")]
    assert len(values) == 1, f"login start must set one browser-binding cookie, found {len(values)}"
    return values[0]


def assert_signed_in(response: requests.Response, person: Person) -> dict:
    assert response.status_code == 200, f"expected a session: {response.status_code} {response.text[:600]}"
    action, fields = delivered(response)
    assert action == PORTAL_URLS["user"]
    claims = verify_session_token(fields["session_token"], APP_BASE, audience=PORTAL_ORIGIN)
    assert claims["sub"] == person.account_id, "the session is for the seeded account"
    assert claims["idp_sub"] == f"{TENANT}:{person.oid}", "the session names the person who signed in"
    return fields
