"""Drive the app's SSO routes the way a browser does, with requests, and read what it answers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import jwt
import requests

from shared.audit import day_key
from shared.tables import EVENTS_TABLE
from tools.idp_login import parse_forms, sign_in_at_idp

TIMEOUT = 20
CORRELATION = re.compile(r"Correlation ID: <code>([^<]+)</code>")
JWT_LIKE = re.compile(r"eyJ[\w-]+\.[\w-]+\.")


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
    forms = parse_forms(response.text).forms
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
    """The SignInEvents row of one request (written before its response went out). PartitionKey is
    the UTC day, so a request just before midnight is looked up in the day before as well."""
    table = runtime.tables.client(EVENTS_TABLE)
    now = datetime.now(UTC)
    rows = [row for day in sorted({day_key(now), day_key(now - timedelta(minutes=10))})
            for row in table.query_entities("PartitionKey eq @day and CorrelationId eq @cid",
                                            parameters={"day": day, "cid": correlation})]
    assert len(rows) == 1, f"exactly one audit row per request, found {len(rows)} for {correlation}"
    row = dict(rows[0])
    assert row["RowKey"].endswith(f"-{correlation}")
    assert not JWT_LIKE.search(repr(row)), "an audit row never holds a token"
    return row


def assert_error_page(response: requests.Response, status: int, runtime, reason: str) -> dict:
    """SPEC's error contract: the status, an HTML page naming the reason and a correlation id, no session
    token and no JWT anywhere in the answer, no traceback, not cached, and the audit row of that
    correlation id with the reason code. Returns the row."""
    text = response.text
    assert response.status_code == status, f"expected {status} {reason}, got {response.status_code}: {text[:800]}"
    assert response.headers["Content-Type"].startswith("text/html")
    assert 'name="session_token"' not in text, "a refused login must not deliver a session token"
    everything = text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
    assert not JWT_LIKE.search(everything), "no JWT (ID token or session token) may appear on an error page"
    assert "Traceback" not in text
    assert response.headers.get("Cache-Control") == "no-store"
    assert f"<code>{reason}</code>" in text, f"the page names reason {reason}"
    row = audit_row(runtime, correlation_id(response))
    assert (row["Outcome"], row["Reason"], row["Status"]) == ("failure", reason, status), row
    return row
