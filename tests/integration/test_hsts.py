"""Strict-Transport-Security (issue 13 item 11, SPEC "Delivering the session token"): on every answer,
the functions' and the host's own, whenever PUBLIC_BASE_URL is https://, whatever the request's
scheme (TLS ends in front of the app in Azure); never when it is plain http:// on loopback."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import APP_BASE

TIMEOUT = 20
ROUTES = [("GET", "/api/sso/user/login"), ("POST", "/api/sso/user/callback"), ("GET", "/api/sso/agent/logout"),
          ("GET", "/api/sso/jwks.json"), ("GET", "/api/sso/setup"), ("GET", "/api/health"),
          ("DELETE", "/api/sso/user/login"), ("GET", "/api/sso/nobody/login"), ("GET", "/api/no-such-path")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_answer_carries_hsts_when_the_public_base_url_is_https(app_server, method, path):
    response = requests.request(method, f"{APP_BASE}{path}", allow_redirects=False, timeout=TIMEOUT)
    assert response.headers.get("Strict-Transport-Security") == "max-age=31536000", (response.status_code,
                                                                                      dict(response.headers))


def test_no_hsts_when_the_public_base_url_is_plain_http_on_loopback(use_settings):
    use_settings(PUBLIC_BASE_URL="http://127.0.0.1:7071")
    for method, path in ROUTES:
        response = requests.request(method, f"{APP_BASE}{path}", allow_redirects=False, timeout=TIMEOUT)
        assert "Strict-Transport-Security" not in response.headers, path


def test_hsts_whatever_the_case_of_the_public_base_urls_scheme(use_settings):
    """The setting is accepted as HTTPS://... (URL schemes are case-insensitive): so is its HSTS."""
    use_settings(PUBLIC_BASE_URL=APP_BASE.replace("https://", "HTTPS://", 1))
    response = requests.get(f"{APP_BASE}/api/health", timeout=TIMEOUT)
    assert response.headers.get("Strict-Transport-Security") == "max-age=31536000"
