"""The flow in the browser (issue 15) and a browser's logins in flight (issue 13 item 10), against the
real app: each login has a sealed cookie of its own, bound to its state and kind; several run at once
in one browser, through both doors; an <img> starting a login breaks none of them; a cookie that is
altered, truncated, of another kind or sealed under a key the app no longer holds is a 400, never a
500; the table holds the single-use marker and nothing secret."""

from __future__ import annotations

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.flows import MAX_IN_FLIGHT, cookie_name
from shared.login import MAX_RETURN_TO
from shared.runtime import get_runtime
from shared.tables import FLOWS_TABLE
from tests.conftest import APP_BASE, DEMO_AGENT, DEMO_USER, PORTAL_URLS
from tests.support.portal import TIMEOUT, assert_error_page, delivered, start_login
from tools.idp_login import sign_in_at_idp

PERSON = {"user": DEMO_USER, "agent": DEMO_AGENT}


@pytest.fixture
def browser(app_server, demo_accounts) -> requests.Session:
    return requests.Session()


def at_idp(browser: requests.Session, kind: str, **params) -> tuple[str, dict[str, str]]:
    """A login start and the IdP's answer, stopping before the callback: (callback URL, fields). The
    IdP's session is forgotten first (a user and an agent person in one browser); our cookies stay."""
    for cookie in [c for c in browser.cookies if not c.name.startswith("__Host-portal-sso-")]:
        browser.cookies.clear(cookie.domain, cookie.path, cookie.name)
    started = start_login(browser, APP_BASE, kind, **params)
    assert started.status_code == 302, started.text[:300]
    return sign_in_at_idp(browser, started.headers["Location"], PERSON[kind]["login"], PERSON[kind]["password"])


def post(url: str, fields: dict, cookies: dict[str, str] | None = None, session=None) -> requests.Response:
    if session is not None:
        return session.post(url, data=fields, allow_redirects=False, timeout=TIMEOUT)
    header = "; ".join(f"{k}={v}" for k, v in (cookies or {}).items())
    return requests.post(url, data=fields, headers={"Cookie": header} if header else {}, allow_redirects=False,
                         timeout=TIMEOUT)


def flow_cookies(browser: requests.Session) -> dict[str, str]:
    return {c.name: c.value for c in browser.cookies if c.name.startswith("__Host-portal-sso-")}


def test_four_logins_in_flight_in_one_browser_through_both_doors_all_complete(browser):
    """Issue 13 item 10: two tabs per door, started one after another, finished in another order."""
    answers = [(kind, *at_idp(browser, kind)) for kind in ("user", "agent", "user", "agent")]
    assert len(flow_cookies(browser)) == 4, "one cookie per login in flight"
    for kind, action, fields in [answers[2], answers[0], answers[3], answers[1]]:
        response = post(action, fields, session=browser)
        assert response.status_code == 200, f"{kind}: {response.status_code} {response.text[:300]}"
        assert delivered(response)[0] == PORTAL_URLS[kind]
    assert flow_cookies(browser) == {}, "each callback cleared its own cookie"


def test_a_third_party_img_starting_a_login_does_not_break_the_login_in_progress(browser):
    action, fields = at_idp(browser, "user")
    held = flow_cookies(browser)
    # <img src="https://app/api/sso/user/login"> on another site: the browser sends our cookies with it
    img = browser.get(f"{APP_BASE}/api/sso/user/login", headers={"Sec-Fetch-Dest": "image",
                      "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Site": "cross-site"}, allow_redirects=False)
    assert_error_page(img, 400, get_runtime(), "login_not_navigation")
    assert "Set-Cookie" not in img.headers, "no cookie set or cleared"
    assert flow_cookies(browser) == held
    assert post(action, fields, session=browser).status_code == 200, "the login in progress completes"


def test_beyond_the_logins_a_browser_may_have_in_flight_the_oldest_goes_and_the_rest_complete(browser):
    answers = [at_idp(browser, "user") for _ in range(MAX_IN_FLIGHT + 1)]
    assert len(flow_cookies(browser)) == MAX_IN_FLIGHT, "the oldest cookie was dropped"
    assert_error_page(post(*answers[0], session=browser), 400, get_runtime(), "browser_binding_mismatch")
    for action, fields in answers[1:]:
        assert post(action, fields, session=browser).status_code == 200


def test_cookies_under_the_prefix_not_of_the_apps_own_form_are_neither_counted_nor_cleared():
    """Azure's Python worker parses every Set-Cookie with http.cookies: a clearing cookie for a name a
    request brought ('__Host-portal-sso-a,0') raised CookieError after the function returned, a bare
    500 with no page; names with a space, quote or bracket were dropped there, never cleared."""
    from http.cookies import SimpleCookie

    from shared.flows import flows_in_flight

    ours = cookie_name("user", "some-state-value")
    odd = {f"__Host-portal-sso-a,{i}": "x" for i in range(5)} | {"__Host-portal-sso-user-a b": "x",
                                                                  '__Host-portal-sso-"q"': "x"}
    in_flight = flows_in_flight({**odd, ours: "1.123.abc"})
    assert [name for _, name in in_flight] == [ours]
    for _, name in in_flight:
        SimpleCookie()[name] = ""  # a key the worker's parser takes


def test_a_login_start_with_odd_cookie_names_under_the_prefix_is_a_302(app_server):
    odd = "; ".join(f"__Host-portal-sso-a,{i}=x" for i in range(MAX_IN_FLIGHT + 1))
    started = requests.get(f"{APP_BASE}/api/sso/user/login", headers={"Cookie": odd}, allow_redirects=False,
                           timeout=TIMEOUT)
    assert started.status_code == 302
    assert "portal-sso-a," not in started.headers.get("Set-Cookie", ""), "none of them is cleared"


def test_the_cookie_stays_well_under_4_kb_and_the_table_holds_no_secret_of_the_flow(browser):
    prefix = PORTAL_URLS["user"] + "?q="
    for longest in (prefix + "x" * (MAX_RETURN_TO - len(prefix)), prefix + "é" * ((MAX_RETURN_TO - len(prefix)) // 2)):
        started = start_login(browser, APP_BASE, "user", return_to=longest, nonce="n" * 128)
        assert started.status_code == 302, started.status_code
        assert len(started.headers["Set-Cookie"].encode()) < 4096, "even with the longest return_to and nonce"
    plain = start_login(requests.Session(), APP_BASE, "user")
    assert len(plain.headers["Set-Cookie"]) < 400, plain.headers["Set-Cookie"]
    state = plain.headers["Location"].split("state=")[1].split("&")[0]
    (row,) = get_runtime().tables.client(FLOWS_TABLE).query_entities("PartitionKey eq @s", parameters={"s": state})
    assert set(row) == {"PartitionKey", "RowKey", "ExpiresAt", "CorrelationId"}, "the marker, nothing more"
    flow = get_runtime().signer().flow_cookies.open("user", state, plain.headers["Set-Cookie"].split(";")[0]
                                                     .split("=", 1)[1])
    assert flow.code_verifier not in repr(row) and flow.nonce not in repr(row)
    assert flow.code_verifier not in plain.headers["Set-Cookie"] and flow.nonce not in plain.headers["Set-Cookie"]


def _mutations(value: str) -> dict[str, str]:
    middle = len(value) // 2
    flipped = value[:middle] + ("A" if value[middle] != "A" else "B") + value[middle + 1:]
    return {"altered": flipped, "truncated": value[:-5], "expiry edited": value.replace(".", ".1", 1),
            "garbage": "not-a-flow-cookie", "empty-ish": "1.2.3"}


@pytest.mark.parametrize("mutation", list(_mutations("1.12345.abcdefgh")))
def test_an_altered_or_truncated_cookie_is_a_400_and_consumes_the_flow(browser, mutation):
    action, fields = at_idp(browser, "user")
    name, value = next(iter(flow_cookies(browser).items()))
    response = post(action, fields, {name: _mutations(value)[mutation]})
    assert_error_page(response, 400, get_runtime(), "browser_binding_mismatch")
    assert_error_page(post(action, fields, session=browser), 400, get_runtime(), "unknown_state")


def test_a_cookie_of_the_other_kind_does_not_open_for_this_door_and_the_flow_dies_at_both(browser):
    """An agent login's cookie, presented under the name the user door looks for, with the agent's state:
    no browser sends a cookie under another name, so this request is not the browser's, and the flow it
    presented dies at its own door too (it stayed alive there: SPEC, no later request completes a flow a
    wrong browser has presented)."""
    action, fields = at_idp(browser, "agent")
    value = flow_cookies(browser)[cookie_name("agent", fields["state"])]
    user_door = action.replace("/agent/", "/user/")
    response = post(user_door, fields, {cookie_name("user", fields["state"]): value})
    assert response.status_code == 400, response.text[:300]
    assert_error_page(post(action, fields, session=browser), 400, get_runtime(), "unknown_state")


def _pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_a_signing_key_rotation_keeps_logins_in_flight_and_a_removed_key_is_a_clean_400(use_settings, app_env,
                                                                                       demo_accounts):
    """RELIABILITY.md: the new key first, the old one kept after it (as for the tokens): a flow
    sealed under the old key still completes. Once the old key is removed, its cookies are a 400."""
    old_pem, new_pem = app_env["SESSION_SIGNING_KEY"], _pem(ec.generate_private_key(ec.SECP256R1()))
    browser = requests.Session()
    before_rotation = at_idp(browser, "user")
    also_before = at_idp(browser, "user")
    use_settings(SESSION_SIGNING_KEY=new_pem + "\n" + old_pem)
    assert post(*before_rotation, session=browser).status_code == 200, "sealed under the old key, still held"
    use_settings(SESSION_SIGNING_KEY=new_pem)
    assert_error_page(post(*also_before, session=browser), 400, get_runtime(), "browser_binding_mismatch")
