"""Bad input gets its SPEC status, an escaped HTML page with a correlation id, and its audit row."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from shared.flows import cookie_name
from shared.runtime import get_runtime
from tests.conftest import APP_BASE, DEMO_USER, DISABLED_USER, NO_ACCOUNT, PORTAL_URLS, SIGNED_OUT_URIS
from tests.support.portal import (
    assert_error_page,
    correlation_id,
    delivered,
    idp_answer,
    sign_in,
    start_login,
)
from tools.stack import azurite_connection_string, free_port, new_account_key

CALLBACK = f"{APP_BASE}/api/sso/user/callback"


@pytest.fixture
def browser_session(app_server, demo_accounts) -> requests.Session:
    return requests.Session()


def test_callback_without_code_or_state_is_400(browser_session):
    response = browser_session.post(CALLBACK, data={"state": "abcdefgh12345678"})
    assert_error_page(response, 400, get_runtime(), "missing_code_or_state")


def test_unknown_state_is_400(browser_session, idp):
    response = browser_session.post(CALLBACK, data={"code": "x", "state": "NoSuchState12345", "iss": idp.issuer})
    assert_error_page(response, 400, get_runtime(), "unknown_state")


def test_state_that_could_never_be_a_table_key_is_400_without_a_table_read(browser_session, idp):
    response = browser_session.post(CALLBACK, data={"code": "x", "state": "a/b#c?d\\e", "iss": idp.issuer})
    assert_error_page(response, 400, get_runtime(), "invalid_parameter")


def test_callback_without_the_browser_binding_cookie_is_400(browser_session):
    action, fields = idp_answer(browser_session, APP_BASE, "user", DEMO_USER)
    response = requests.post(action, data=fields)  # another browser: no flow cookie
    assert_error_page(response, 400, get_runtime(), "browser_binding_mismatch")


def test_replayed_callback_is_400(browser_session):
    action, fields = idp_answer(browser_session, APP_BASE, "user", DEMO_USER)
    first = browser_session.post(action, data=fields)
    assert first.status_code == 200
    cookie = first.request.headers["Cookie"]
    replay = requests.post(action, data=fields, headers={"Cookie": cookie})
    assert_error_page(replay, 400, get_runtime(), "unknown_state")


DESCRIPTION = "AADSTS50011: The redirect URI <script>alert(1)</script> does not match."


def test_idp_error_of_a_flow_bound_to_this_browser_is_400_escaped_with_its_text_and_the_aadsts_fix(
        browser_session, idp):
    started = start_login(browser_session, APP_BASE, "user")
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    response = browser_session.post(CALLBACK, data={"error": "invalid_request", "state": state, "iss": idp.issuer,
                                                     "error_description": DESCRIPTION})
    assert_error_page(response, 400, get_runtime(), "idp_error")
    assert "<script>alert(1)</script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text, "the bound flow's IdP text, escaped"
    assert "Authentication &gt; Web" in response.text or "Authentication > Web" in response.text, "AADSTS50011 fix"
    assert "Max-Age=0" in response.headers["Set-Cookie"], "the IdP ended that flow: its cookie goes"


def test_idp_error_text_of_a_state_not_bound_to_this_browser_is_not_shown(browser_session, idp):
    """Issue 13 item 8: anyone can put text in a URL; our origin shows the IdP's text only for a live
    flow of this browser. The error code and our own AADSTS hint still show."""
    phishing = "AADSTS50011: Your account is locked. Call +1 555 0100 to unlock it."
    for state in ("abcdefgh12345678", start_login(requests.Session(), APP_BASE, "user").headers["Location"]
                  .split("state=")[1].split("&")[0]):  # an unknown state, and another browser's live one
        response = browser_session.post(CALLBACK, data={"error": "invalid_request", "state": state,
                                                         "iss": idp.issuer, "error_description": phishing})
        assert_error_page(response, 400, get_runtime(), "idp_error")
        assert "invalid_request" in response.text
        assert "555 0100" not in response.text and "locked" not in response.text, "the crafted text is not shown"
        assert "Authentication &gt; Web" in response.text or "Authentication > Web" in response.text


def test_idp_error_code_that_is_not_a_known_code_is_not_shown_either(browser_session, idp):
    """Anyone can link to the callback with `error` of their own: a sentence there was shown on our
    origin as it was. RFC 6749 4.1.2.1 and OIDC Core 3.1.2.6 name the codes an IdP sends."""
    phishing = "Your account is locked. Call +1 555 0100 to unlock it"
    for response in (browser_session.get(CALLBACK, params={"error": phishing, "iss": idp.issuer}),  # iss is public
                     browser_session.post(CALLBACK, data={"error": phishing, "state": "abcdefgh12345678",
                                                          "iss": idp.issuer})):
        assert_error_page(response, 400, get_runtime(), "idp_error")
        assert "555 0100" not in response.text and "locked" not in response.text


def test_idp_error_of_a_bound_flow_ends_it_with_or_without_a_description(browser_session, idp):
    """The IdP ended the flow: its marker is consumed and its cookie cleared, so the flow's code (or
    a copy of the cookie) cannot complete it afterwards; an error without error_description (RFC 6749
    allows it) left both."""
    for extra in ({}, {"error_description": "AADSTS65004: User declined to consent."}):
        action, fields = idp_answer(browser_session, APP_BASE, "user", DEMO_USER)
        cookie = browser_session.cookies.get(cookie_name("user", fields["state"]))
        refused = browser_session.post(action, data={"error": "access_denied", "state": fields["state"],
                                                     "iss": idp.issuer, **extra})
        assert_error_page(refused, 400, get_runtime(), "idp_error")
        assert "Max-Age=0" in refused.headers.get("Set-Cookie", ""), f"its cookie goes ({extra})"
        copied = {"Cookie": f"{cookie_name('user', fields['state'])}={cookie}"}
        late = requests.post(action, data=fields, headers=copied)
        assert_error_page(late, 400, get_runtime(), "unknown_state")


def test_an_idp_error_repeated_for_a_flow_already_ended_still_clears_its_cookie(browser_session, idp):
    action, fields = idp_answer(browser_session, APP_BASE, "user", DEMO_USER)
    name = cookie_name("user", fields["state"])
    cookie = {"Cookie": f"{name}={browser_session.cookies.get(name)}"}
    error = {"error": "access_denied", "state": fields["state"], "iss": idp.issuer}
    first = requests.post(action, data=error, headers=cookie)
    again = requests.post(action, data=error, headers=cookie)  # its marker is gone now
    for response in (first, again):
        assert_error_page(response, 400, get_runtime(), "idp_error")
        assert "Max-Age=0" in response.headers.get("Set-Cookie", ""), "the bound flow's cookie goes"


def test_the_iss_parameter_is_checked_before_an_error_response_is_read(browser_session, idp):
    """RFC 9207 2.4: the check comes first, error responses included: an error from another issuer
    (a mix-up) is not our IdP's, and its text is not shown as our IdP's."""
    started = start_login(browser_session, APP_BASE, "user")
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    response = browser_session.post(CALLBACK, data={"error": "access_denied", "state": state,
                                                     "error_description": "Call 555 0100",
                                                     "iss": "https://evil.example/"})
    assert_error_page(response, 400, get_runtime(), "authorization_response_iss_mismatch")
    assert "555 0100" not in response.text


def test_a_stranger_s_text_in_the_iss_parameter_is_not_shown_on_our_origin(browser_session):
    """Anyone can put text in a link: `iss` was echoed on our error page (escaped, but a sentence of
    the attacker's under our heading), with no flow and no cookie needed."""
    lure = "Your account is locked. Call the helpdesk on +1 555 0100"
    for response in (browser_session.get(CALLBACK, params={"error": "access_denied", "iss": lure}),
                     browser_session.post(CALLBACK, data={"code": "x", "state": "y" * 22, "iss": lure})):
        assert_error_page(response, 400, get_runtime(), "authorization_response_iss_mismatch")
        assert "555 0100" not in response.text


def test_query_mode_callback_is_refused_by_default_and_consumes_its_flow(browser_session):
    """Issue 13 item 2: a code in a URL leaks (history, request logs); whoever owns the flow could
    redeem it. The GET is refused, and the flow is dead: the same code posted with the flow's own
    cookie afterwards is refused too."""
    action, fields = idp_answer(browser_session, APP_BASE, "user", DEMO_USER)
    response = browser_session.get(action, params=fields)
    assert_error_page(response, 400, get_runtime(), "response_mode_not_allowed")
    assert "code=" not in response.text
    assert_error_page(browser_session.post(action, data=fields), 400, get_runtime(), "unknown_state")


def test_query_mode_callback_is_handled_like_form_post_when_allowed(use_settings, demo_accounts):
    use_settings(ALLOW_QUERY_RESPONSE_MODE="true")
    session = requests.Session()
    action, fields = idp_answer(session, APP_BASE, "user", DEMO_USER)
    response = session.get(action, params=fields)
    assert response.status_code == 200, response.text[:500]
    assert delivered(response)[0] == PORTAL_URLS["user"]


def test_person_without_a_portal_account_is_403(browser_session):
    response = sign_in(browser_session, APP_BASE, "user", NO_ACCOUNT)
    row = assert_error_page(response, 403, get_runtime(), "no_account")
    assert row["Email"] == "nobody@contoso.test" and row["HadEmailClaim"] is True


def test_user_account_does_not_open_the_agent_side(browser_session):
    response = sign_in(browser_session, APP_BASE, "agent", DEMO_USER)
    assert_error_page(response, 403, get_runtime(), "no_account")


def test_disabled_account_is_403_and_email_is_matched_case_insensitively(browser_session):
    response = sign_in(browser_session, APP_BASE, "user", DISABLED_USER)  # IdP says Disabled@Contoso.test
    row = assert_error_page(response, 403, get_runtime(), "account_disabled")
    assert row["AccountId"] == "U-1002"


def test_unknown_kind_is_404_and_wrong_method_405(app_server):
    assert requests.get(f"{APP_BASE}/api/sso/admin/login", allow_redirects=False).status_code == 404
    wrong = requests.delete(f"{APP_BASE}/api/sso/user/login")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET"
    assert correlation_id(wrong)


def test_a_refused_method_or_kind_has_a_log_line_holding_its_pages_correlation_id(app_server, caplog):
    """README: the correlation id on every error page finds its log line. A 405 (a PUT to the callback,
    a DELETE on the login start) and the signed-out page of an unknown kind named one nothing held."""
    caplog.set_level(logging.INFO)
    for answer, status in ((requests.put(f"{APP_BASE}/api/sso/user/callback", data={"code": "c", "state": "s"}), 405),
                           (requests.delete(f"{APP_BASE}/api/sso/user/login"), 405),
                           (requests.get(f"{APP_BASE}/api/sso/bogus/signed-out"), 404)):
        assert answer.status_code == status
        cid = correlation_id(answer)
        lines = [r.getMessage() for r in caplog.records if cid in r.getMessage()]
        assert len(lines) == 1 and f"status={status}" in lines[0], (answer.request.method, answer.url, lines)


def test_login_start_sets_the_flow_cookie_as_spec_says(browser_session):
    response = start_login(browser_session, APP_BASE, "agent")
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-portal-sso-agent-")
    for attribute in ("Path=/", "Secure", "HttpOnly", "SameSite=None", "Max-Age=600"):
        assert attribute in cookie, f"flow cookie lacks {attribute}"
    assert "Domain" not in cookie
    location = response.headers["Location"]
    for parameter in ("response_mode=form_post", "code_challenge_method=S256", "nonce=", "state=",
                      "redirect_uri=https%3A%2F%2F127.0.0.1"):
        assert parameter in location, f"authorization request lacks {parameter}"
    assert response.headers["Cache-Control"] == "no-store"


def test_redirect_uri_comes_from_public_base_url_not_the_host_header(browser_session):
    response = browser_session.get(f"{APP_BASE}/api/sso/user/login", headers={"Host": "evil.test"},
                                   allow_redirects=False)
    assert response.status_code == 302
    assert "evil.test" not in response.headers["Location"]


def test_logout_goes_to_the_idp_end_session_endpoint_with_the_signed_out_page(app_server):
    response = requests.get(f"{APP_BASE}/api/sso/agent/logout", allow_redirects=False)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert "/session/end" in location
    assert f"post_logout_redirect_uri={requests.utils.quote(SIGNED_OUT_URIS['agent'], safe='')}" in location, \
        "back to our signed-out page (a registered redirect URI), never to the portal's landing URL"
    assert requests.utils.quote(PORTAL_URLS["agent"], safe="") not in location


def test_jwks_is_public_and_cacheable(app_server):
    response = requests.get(f"{APP_BASE}/api/sso/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    keys = response.json()["keys"]
    assert keys and all(set(k) <= {"kty", "n", "e", "crv", "x", "y", "kid", "use", "alg"} for k in keys), \
        "public members only"


def test_table_storage_down_is_503_with_retry_after(use_settings):
    port = free_port()
    use_settings(TABLES_CONNECTION_STRING=azurite_connection_string(port, new_account_key()))
    response = requests.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False)
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert correlation_id(response)


def test_idp_unreachable_is_503_naming_no_secret(use_settings, app_env):
    runtime = use_settings(OIDC_ISSUER_URL=f"https://127.0.0.1:{free_port()}/tenant/v2.0")
    response = requests.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False)
    assert_error_page(response, 503, runtime, "idp_unavailable")
    assert response.headers["Retry-After"]
    assert app_env["OIDC_CLIENT_SECRET"] not in response.text


def test_wrong_issuer_url_says_which_url_was_tried_and_what_came_back(use_settings, idp):
    use_settings(OIDC_ISSUER_URL=f"{idp.issuer}/nope")
    response = requests.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False)
    assert response.status_code == 500
    assert f"{idp.issuer}/nope/.well-known/openid-configuration" in response.text
    assert "HTTP 404" in response.text


@pytest.mark.parametrize("form", ["{issuer}", "{issuer}/", "{issuer}/.well-known/openid-configuration",
                                  "{issuer}.well-known/openid-configuration"])
def test_issuer_url_works_in_every_form_an_admin_pastes(use_settings, idp, demo_accounts, form):
    use_settings(OIDC_ISSUER_URL=form.format(issuer=idp.issuer))
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
    assert response.status_code == 200, response.text[:500]


def test_missing_settings_are_all_named_on_one_page(use_settings):
    use_settings(OIDC_CLIENT_ID=None, PORTAL_AGENT_URL=None, PUBLIC_BASE_URL=None)
    response = requests.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False)
    assert response.status_code == 500
    for name in ("OIDC_CLIENT_ID", "PORTAL_AGENT_URL", "PUBLIC_BASE_URL"):
        assert name in response.text
    assert correlation_id(response)


def test_a_strangers_bogus_callback_does_not_clear_the_cookie_of_a_login_under_way(browser_session, idp):
    action, fields = idp_answer(browser_session, APP_BASE, "user", DEMO_USER)
    bogus = browser_session.post(CALLBACK, data={"code": "x", "state": "SomeoneElses1234", "iss": idp.issuer})
    assert bogus.status_code == 400
    assert "Set-Cookie" not in bogus.headers, "a callback that consumed no flow leaves the flow cookie alone"
    finished = browser_session.post(action, data=fields)
    assert finished.status_code == 200, "the real login still completes"
    assert f"{cookie_name('user', fields['state'])}=;" in finished.headers["Set-Cookie"] and \
        "Max-Age=0" in finished.headers["Set-Cookie"], "a consumed flow's cookie is cleared"


def test_a_refused_login_start_has_its_audit_row_too(browser_session):
    response = start_login(browser_session, APP_BASE, "user", return_to="https://evil.test/")
    row = assert_error_page(response, 400, get_runtime(), "return_to_not_allowed")
    assert row["Stage"] == "login" and row["Kind"] == "user"


def test_logs_hold_no_token_code_or_secret(browser_session, caplog, app_env):
    caplog.set_level(logging.DEBUG)
    action, fields = idp_answer(browser_session, APP_BASE, "user", DEMO_USER)
    response = browser_session.post(action, data=fields)
    token = delivered(response)[1]["session_token"]
    failed = browser_session.post(action, data=fields)  # replayed: a failure's log line too
    assert failed.status_code == 400
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "sso.callback kind=user outcome=success" in text, "one log line per login attempt"
    for secret, what in ((token, "session token"), (fields["code"], "authorization code"),
                         (app_env["OIDC_CLIENT_SECRET"], "client secret"), ("BEGIN PRIVATE KEY", "signing key")):
        assert secret not in text, f"the {what} must never be logged"
    assert not re.search(r"eyJ[\w-]+\.[\w-]+\.", text), "no JWT of any kind in the logs"


def test_the_setup_page_shows_when_query_mode_is_on(use_settings):
    use_settings(ALLOW_QUERY_RESPONSE_MODE="true")
    page = requests.get(f"{APP_BASE}/api/sso/setup").text
    assert "ALLOW_QUERY_RESPONSE_MODE is true" in page, "an amber line says codes may arrive in URLs"
    use_settings(ALLOW_QUERY_RESPONSE_MODE=None)
    assert "ALLOW_QUERY_RESPONSE_MODE is true" not in requests.get(f"{APP_BASE}/api/sso/setup").text


def test_a_query_mode_setting_that_is_not_true_or_false_is_named(use_settings):
    use_settings(ALLOW_QUERY_RESPONSE_MODE="yes")
    response = requests.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False)
    assert response.status_code == 500 and "ALLOW_QUERY_RESPONSE_MODE" in response.text
