"""The setup page and health tell an admin the truth (issue 16 item 10): a person's own mistakes (the
other kind's door, a cancelled sign-in) leave it green, a missing account does not; every bad setting
counts and has its fix; how a fixed setting takes effect is said as it is."""

from __future__ import annotations

import re

import requests

from tests.conftest import APP_BASE, DEMO_USER, NO_ACCOUNT
from tests.integration.test_ops import get, row_of
from tests.support.portal import sign_in, start_login


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
