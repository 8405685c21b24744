"""Drive the app's SSO routes the way a browser does, with requests, and read what it answers."""

from __future__ import annotations

import re

import jwt
import requests

from tools.idp_login import _parse, sign_in_at_idp

TIMEOUT = 20
CORRELATION = re.compile(r"Correlation ID: <code>([^<]+)</code>")


def start_login(session: requests.Session, base: str, kind: str, **params: str) -> requests.Response:
    return session.get(f"{base}/api/sso/{kind}/login", params=params, allow_redirects=False, timeout=TIMEOUT)


def sign_in(session: requests.Session, base: str, kind: str, person: dict, **params: str) -> requests.Response:
    """Login start, the IdP's login page, and the form_post callback; returns the callback's response."""
    started = start_login(session, base, kind, **params)
    assert started.status_code == 302, f"login start must redirect: {started.status_code} {started.text[:300]}"
    action, fields = sign_in_at_idp(session, started.headers["Location"], person["login"], person["password"])
    return session.post(action, data=fields, allow_redirects=False, timeout=TIMEOUT)


def idp_answer(session: requests.Session, base: str, kind: str, person: dict) -> tuple[str, dict[str, str]]:
    """Login start and the IdP's sign-in, stopping before the callback: (redirect URI, its fields)."""
    started = start_login(session, base, kind)
    assert started.status_code == 302, started.text[:300]
    return sign_in_at_idp(session, started.headers["Location"], person["login"], person["password"])


def delivered(response: requests.Response) -> tuple[str, dict[str, str]]:
    """The form_post page's form: (action, hidden fields)."""
    forms = _parse(response.text).forms
    assert len(forms) == 1, f"the delivery page must hold exactly one form: {response.text[:500]}"
    return forms[0].attrs["action"], forms[0].fields()


def verify_session_token(token: str, base: str, audience: str) -> dict:
    """Verifies the way a portal does: against the app's JWKS, pinned algorithms, iss and aud."""
    keys = jwt.PyJWKClient(f"{base}/api/sso/jwks.json")
    key = keys.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256", "ES256"], audience=audience, issuer=base,
                      options={"require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]})


def correlation_id(response: requests.Response) -> str:
    found = CORRELATION.search(response.text)
    assert found, f"an error page must name a correlation id: {response.text[:500]}"
    return found.group(1)


def audit_row(runtime, correlation: str) -> dict:
    """The SignInEvents row of one callback (written before its response went out)."""
    from datetime import UTC, datetime

    from shared.audit import day_key
    from shared.tables import EVENTS_TABLE

    table = runtime.tables.client(EVENTS_TABLE)
    rows = list(table.query_entities("PartitionKey eq @pk and CorrelationId eq @cid",
                                     parameters={"pk": day_key(datetime.now(UTC)), "cid": correlation}))
    assert len(rows) == 1, f"exactly one audit row per callback, found {len(rows)} for {correlation}"
    return dict(rows[0])


JWT_LIKE = re.compile(r"eyJ[\w-]+\.[\w-]+\.")


def assert_error_page(response: requests.Response, status: int, runtime, reason: str) -> dict:
    """SPEC's error contract: the status, an HTML page with a correlation id, no token, no traceback,
    and the audit row with the reason code. Returns the row."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:600]}"
    assert response.headers["Content-Type"].startswith("text/html")
    assert not JWT_LIKE.search(response.text), "an error page must never hold a token"
    assert "Traceback" not in response.text
    assert response.headers.get("Cache-Control") == "no-store"
    row = audit_row(runtime, correlation_id(response))
    assert row["Reason"] == reason, f"audit reason {row['Reason']!r}, expected {reason!r}"
    assert row["Outcome"] == "failure" and row["Status"] == status
    return row
