"""The setup page and health tell an admin the truth (issue 16 item 10): a person's own mistakes (the
other kind's door, a cancelled sign-in) leave it green, a missing account does not; every bad setting
counts and has its fix; how a fixed setting takes effect is said as it is."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests

from tests.conftest import APP_BASE, DEMO_USER, NO_ACCOUNT
from tests.integration.test_ops import get, row_of
from tests.support.portal import sign_in, start_login

ROOT = Path(__file__).resolve().parents[2]


def level_of(row: str) -> str:
    return re.search(r'class="st (\w+)"', row).group(1)


def test_the_other_kinds_door_is_the_persons_own_mistake_not_an_amber_line(app_server, demo_accounts):
    response = sign_in(requests.Session(), APP_BASE, "agent", DEMO_USER)  # a user at the agent door
    assert response.status_code == 403
    row = row_of(get("/api/sso/setup").text, "Last agent sign-in")
    assert level_of(row) == "ok", row
    assert "no_account" in row and "person&#x27;s own mistake" in row


def test_a_person_without_any_account_is_amber_with_the_fix(app_server, demo_accounts):
    assert sign_in(requests.Session(), APP_BASE, "user", NO_ACCOUNT).status_code == 403
    row = row_of(get("/api/sso/setup").text, "Last user sign-in")
    assert level_of(row) == "warn", row
    assert "portal-sso accounts add" in row


def test_a_cancelled_sign_in_is_the_persons_own(app_server, idp):
    with requests.Session() as browser:
        started = start_login(browser, APP_BASE, "user")
        state = re.search(r"[?&]state=([^&]+)", started.headers["Location"]).group(1)
        # What Entra posts back when the person cancels (or declines consent), with the RFC 9207 iss
        # the dev IdP advertises and sends with its errors too.
        answer = browser.post(f"{APP_BASE}/api/sso/user/callback", data={"error": "access_denied", "state": state,
                              "iss": idp.issuer, "error_description": "AADSTS65004: User declined to consent"},
                              timeout=20)
    assert answer.status_code == 400
    row = row_of(get("/api/sso/setup").text, "Last user sign-in")
    assert level_of(row) == "ok" and "idp_error" in row, row


def test_the_problem_count_counts_every_bad_setting_and_health_gives_each_its_fix(use_settings):
    use_settings(SESSION_TOKEN_TTL_SECONDS="-5", IDP_TIMEOUT_SECONDS="abc", PORTAL_USER_URL="portal")
    page = get("/api/sso/setup").text
    assert "3 problems:" in page, "three bad settings are three problems, not one Settings line"
    assert "&#x27;-5&#x27; is not a whole number from 60 to 86400" in page, "the bad value is quoted"
    assert "(no restart needed)" not in page, "locally the host reads its settings once, at start"
    assert "restart the host" in row_of(page, "Settings")
    problems = get("/api/health").json()["checks"]["settings"]["problems"]
    assert {p["setting"] for p in problems} == {"SESSION_TOKEN_TTL_SECONDS", "IDP_TIMEOUT_SECONDS", "PORTAL_USER_URL"}
    assert all(p["fix"] for p in problems), problems


def test_in_azure_the_fix_says_saving_the_settings_restarts_the_app(use_settings):
    use_settings(IDP_TIMEOUT_SECONDS="abc", WEBSITE_INSTANCE_ID="abc123")
    settings = get("/api/health").json()["checks"]["settings"]
    assert "saving restarts the app" in settings["fix"]


def test_the_example_settings_count_each_placeholder_once_and_call_none_a_secret(use_settings, app_env):
    """A newcomer's first run on local.settings.example.json as it is: three placeholders, three
    problems. Directory sync's line only repeats that the settings do not load (its token is read
    once they do): not a fourth problem, and not red. The client ID's placeholder is named as one,
    not hidden as "looks like a secret"."""
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    use_settings(**{**dict.fromkeys(app_env), **example})  # the example's settings and no others
    page = get("/api/sso/setup").text
    assert "3 problems:" in page, re.search(r'<p class="summary[^"]*">(.*?)</p>', page, re.S).group(1)
    assert '<span class="st fail">setting error</span>' not in page, "directory sync's repeat is red"
    assert "the token is read once they load" in page, "directory sync says why it is not checked"
    client_id = row_of(page, "OIDC_CLIENT_ID")
    assert "looks like a secret" not in client_id, client_id
    assert level_of(client_id) == "fail" and "&lt;application (client) id&gt;" in client_id, client_id
    assert "(client ID <code>" not in page, "the placeholder shown as the app's client ID"
