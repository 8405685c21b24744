"""Our client credential as the IdP sees it (issue 16 item 3, issue 13 conformance (a)), against the
real dev IdP (panva's oidc-provider) and the hostile one: health and the setup page ask the IdP with
a client-credentials request (cached, rate-limited, never on the login path), and an IdP whose token
endpoint takes only client_secret_basic gets the secret that way."""

from __future__ import annotations

import json

import pytest
import requests

from shared.errors import ClientCredentialRejected
from shared.oidc_client import CREDENTIAL_CHECK_SECONDS, CREDENTIAL_RECHECK_SECONDS, OidcClient
from shared.provider import discover
from shared.transport import IdpSession
from shared.vault import CachedSecret, SecretValue
from tests.conftest import APP_BASE, CLIENT_ID, CLIENT_SECRET, DEMO_USER, IDP_TENANT, REDIRECT_URIS
from tests.support.hostile_flow import new_person, switch_to
from tests.support.hostile_flow import sign_in as hostile_sign_in
from tests.support.hostile_idp import CLIENT_ID as HOSTILE_CLIENT_ID
from tests.support.hostile_idp import CLIENT_SECRET as HOSTILE_CLIENT_SECRET
from tests.support.portal import delivered, sign_in
from tools.stack import free_port, idp_config, start_idp

TIMEOUT = 20


def health() -> tuple[int, dict]:
    response = requests.get(f"{APP_BASE}/api/health", timeout=TIMEOUT)
    return response.status_code, response.json()["checks"]["client_secret"]


def setup_row() -> str:
    page = requests.get(f"{APP_BASE}/api/sso/setup", timeout=TIMEOUT).text
    return next(row for row in page.split("<tr>") if "<th>Client secret</th>" in row)


def test_the_dev_idp_accepts_the_right_secret_and_health_says_so(use_settings):
    use_settings()
    status, check = health()
    assert status == 200 and check["ok"] is True and check["accepted_by_idp"] is True, check
    assert "accepted by the IdP" in setup_row()


def test_a_wrong_secret_is_red_in_health_and_on_the_setup_page_before_anyone_signs_in(use_settings):
    use_settings(OIDC_CLIENT_SECRET="the-secret-id-not-its-value")
    status, check = health()
    assert status == 503 and check["ok"] is False and check["accepted_by_idp"] is False, check
    assert "refuses" in check["detail"] and "Certificates & secrets" in check["fix"]
    assert "put it in OIDC_CLIENT_SECRET" in check["fix"] and "Key Vault" not in check["fix"], \
        "a local secret's fix names its setting, not a vault the app does not read"
    assert "the-secret-id-not-its-value" not in str(check)
    row = setup_row()
    assert "Problem" in row and "refuses" in row


NOT_IN_TENANT = ("AADSTS700016: Application with identifier 'x' was not found in the directory 'Contoso'. You may "
                 "have sent your authentication request to the wrong tenant.")
WRONG_SECRET = "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent is the secret's value."


@pytest.mark.parametrize(("error", "code", "description", "leads_with"), [
    ("unauthorized_client", 700016, NOT_IN_TENANT, "AADSTS700016: The client ID is not known in this tenant"),
    ("invalid_client", 7000215, WRONG_SECRET, "The IdP refuses the client secret: create a new one"),
    ("invalid_client", None, "Client authentication failed.", "The IdP refuses the client secret: create a new one"),
], ids=["700016-client-id-unknown", "7000215-wrong-secret", "no-code"])
def test_a_refused_credential_leads_with_the_fix_its_aadsts_code_names(hostile, use_settings, error, code,
                                                                       description, leads_with):
    """AADSTS700016 (the client ID unknown in this tenant: a wrong client ID or tenant) is not the secret's
    fault: a new secret would change nothing, so its own hint leads."""
    hostile.reset()
    switch_to(hostile, use_settings)
    body = {"error": error, "error_description": description, **({"error_codes": [code]} if code else {})}
    hostile.answer(raw=(400 if code != 7000215 else 401, "application/json", json.dumps(body)))
    status, check = health()
    assert status == 503 and check["accepted_by_idp"] is False, check
    assert check["fix"].startswith(leads_with), check["fix"]
    if code == 700016:
        assert "Certificates & secrets" not in check["fix"], "no new secret for a client ID the tenant lacks"
        assert setup_row().index("#AADSTS700016") < setup_row().index("#AADSTS7000215"), "its code's link first"


def test_the_credential_check_is_cached_rate_limited_and_never_on_the_login_path(hostile, use_settings,
                                                                                  account_store):
    hostile.reset()
    switch_to(hostile, use_settings)
    for _ in range(5):
        assert health()[1]["accepted_by_idp"] is True
    setup_row()
    grants = [r.get("grant_type") for r in hostile.token_requests]
    assert grants == ["client_credentials"], f"five probes and a setup page, one request: {grants}"
    person = new_person(account_store)
    hostile.answer(claims=person.claims)
    assert hostile_sign_in(hostile).status_code == 200
    grants = [r.get("grant_type") for r in hostile.token_requests]
    assert grants == ["client_credentials", "authorization_code"], "a login asks nothing about our credential"


def test_a_refused_credential_is_asked_again_at_most_once_a_minute(hostile, use_settings):
    hostile.reset()
    switch_to(hostile, use_settings, OIDC_CLIENT_SECRET="wrong")
    for _ in range(3):
        assert health()[1]["accepted_by_idp"] is False
    # the first probe asks, and re-reads the secret once in case it was rotated; the next two reuse it
    assert [r.get("grant_type") for r in hostile.token_requests] == ["client_credentials"] * 2


@pytest.fixture(scope="module")
def basic_only_idp(test_ca, tmp_path_factory):
    """A second dev IdP whose token endpoint takes client_secret_basic only (and private_key_jwt),
    as an OpenID conformance IdP can: discovery says so, and a secret in the body is refused."""
    client = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token_endpoint_auth_method":
              "client_secret_basic", "redirect_uris": list(REDIRECT_URIS.values())}
    config = idp_config(test_ca, port=free_port(), tenant=IDP_TENANT, clients=[client], people=[DEMO_USER])
    config["clientAuthMethods"] = ["client_secret_basic", "private_key_jwt"]
    service = start_idp(config, workdir=tmp_path_factory.mktemp("basic-idp"))
    try:
        yield service
    finally:
        service.stop()


def test_a_basic_only_idp_is_advertised_as_such_and_refuses_the_secret_in_the_body(basic_only_idp):
    metadata = requests.get(f"{basic_only_idp.url}/.well-known/openid-configuration", timeout=TIMEOUT).json()
    assert "client_secret_post" not in metadata["token_endpoint_auth_methods_supported"]
    refused = requests.post(metadata["token_endpoint"], timeout=TIMEOUT, data={
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "scope": f"{CLIENT_ID}/.default"})
    assert refused.json()["error"] == "invalid_client", "MSAL's own way (secret in the body) fails here"


def test_sign_in_and_the_credential_check_work_with_a_basic_only_idp(basic_only_idp, use_settings, demo_accounts):
    use_settings(OIDC_ISSUER_URL=basic_only_idp.url)
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
    assert response.status_code == 200, response.text[:600]
    assert delivered(response)[1]["session_token"]
    assert health()[1]["accepted_by_idp"] is True


def client_of(hostile, clock, secret: list[str]) -> OidcClient:
    """An OidcClient of the hostile IdP, over real HTTPS, on this clock, reading the secret `secret[0]`
    (never cached: the test changes it)."""
    reader = type("Reader", (), {"read": lambda self, name: SecretValue(secret[0], None, None, "test")})()
    metadata = discover(f"{hostile.issuer}/.well-known/openid-configuration", hostile.issuer, IdpSession(10),
                        multi_tenant=False)
    return OidcClient(client_id=HOSTILE_CLIENT_ID, authority=hostile.issuer, certificate=False,
                      credential=CachedSecret(reader, "s", 0), session=IdpSession(10),
                      metadata=lambda: metadata, clock=clock)


def test_the_credential_is_asked_again_after_ten_minutes_and_a_refusal_after_one(hostile, test_ca):
    """OidcClient's own clock, moved by hand; the IdP is the hostile one, over real HTTPS."""
    hostile.reset()
    now = [1000.0]
    secret = ["wrong"]
    client = client_of(hostile, lambda: now[0], secret)

    def asked() -> int:
        return sum(r.get("grant_type") == "client_credentials" for r in hostile.token_requests)

    assert client.credential_check().accepted is False and asked() == 2  # refused, re-read, refused again
    now[0] += CREDENTIAL_RECHECK_SECONDS - 1
    assert client.credential_check().accepted is False and asked() == 2, "a refusal is reused for a minute"
    secret[0] = HOSTILE_CLIENT_SECRET  # the admin stores the right one
    now[0] += 1
    assert client.credential_check().accepted is True and asked() == 3, "then asked again: the fix shows"
    now[0] += CREDENTIAL_CHECK_SECONDS - 1
    assert client.credential_check().accepted is True and asked() == 3, "an acceptance is reused for ten minutes"
    now[0] += 1
    assert client.credential_check().accepted is True and asked() == 4


def test_a_new_credential_is_asked_about_at_once_not_given_the_last_ones_verdict(hostile, test_ca):
    """The verdict was the worker's, not the credential's: a wrong version stored after an accepted
    check was "accepted by the IdP" in health for ten minutes (operating.md's rotation deletes the old
    Entra secret once health shows the new one), while every login got 401."""
    hostile.reset()
    now, secret = [1000.0], [HOSTILE_CLIENT_SECRET]
    client = client_of(hostile, lambda: now[0], secret)
    assert client.credential_check().accepted is True
    secret[0] = "a-secret-id-pasted-as-its-value"  # the new version in Key Vault
    now[0] += 1
    assert client.credential_check().accepted is False


def test_a_login_the_idp_refused_our_credential_for_ends_the_accepted_verdict(hostile, test_ca):
    """An accepted verdict outlived the IdP's refusal of the same secret at a login (a secret deleted in
    Entra): health said "accepted" for up to ten minutes while every login got 401."""
    hostile.reset()
    now = [1000.0]
    client = client_of(hostile, lambda: now[0], [HOSTILE_CLIENT_SECRET])
    assert client.credential_check().accepted is True
    refused = {"error": "invalid_client", "error_codes": [7000215], "error_description": WRONG_SECRET}
    hostile.answer(raw=(401, "application/json", json.dumps(refused)))
    flow = client.start(REDIRECT_URIS["user"])
    with pytest.raises(ClientCredentialRejected):
        client.redeem(flow, "some-code", flow["state"])
    now[0] += 1
    assert client.credential_check().accepted is False


def test_an_idp_that_does_not_allow_the_check_grant_is_not_verified_rather_than_refusing_the_secret(hostile,
                                                                                                     test_ca):
    """RFC 6749 5.2: unauthorized_client is "the authenticated client is not authorized to use this
    grant type", what Okta, Auth0 or Keycloak answer a client allowed the code grant alone (least
    privilege): health was red, "create a new secret", while every login worked. Entra's own
    unauthorized_client carries an invalid-client code (AADSTS700016) and stays a refusal."""
    hostile.reset()
    client = client_of(hostile, lambda: 1000.0, [HOSTILE_CLIENT_SECRET])
    body = {"error": "unauthorized_client", "error_description": "client_credentials is not allowed"}
    hostile.answer(raw=(400, "application/json", json.dumps(body)))
    verdict = client.credential_check()
    assert verdict.accepted is None and "unauthorized_client" in verdict.detail, verdict


UNAVAILABLE = {  # a gateway's page, Entra's "try later" telling MSAL to wait an hour, a throttle
    "html-502": ((502, "text/html", "<html>Bad Gateway</html>"), {}),
    "json-503-retry-after-an-hour": ((503, "application/json", json.dumps({"error": "temporarily_unavailable"})),
                                     {"Retry-After": "3600"}),
    "429-retry-after-an-hour": ((429, "application/json", json.dumps({"error": "too_many_requests"})),
                                {"Retry-After": "3600"}),
}


@pytest.mark.parametrize(("answer", "headers"), UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
def test_an_unavailable_token_endpoint_is_not_verified_and_the_next_check_asks_the_idp(hostile, answer, headers):
    """Not "refused" (a 5xx or a 429 says nothing of the secret), and not replayed: on old main a 5xx
    raised out of the check, and MSAL's throttling cache answered the next checks for the hour."""
    hostile.reset()
    now = [1000.0]
    client = client_of(hostile, lambda: now[0], [HOSTILE_CLIENT_SECRET])
    hostile.answer(raw=answer, headers=headers)
    verdict = client.credential_check()
    assert verdict.accepted is None and f"answered HTTP {answer[0]}" in verdict.detail, verdict
    hostile.answer()  # the IdP is itself again
    now[0] += CREDENTIAL_RECHECK_SECONDS
    assert client.credential_check().accepted is True
    assert [r.get("grant_type") for r in hostile.token_requests] == ["client_credentials"] * 2, \
        "each check asked the IdP once, no re-read of the secret for an IdP that did not answer"


def test_an_unavailable_token_endpoint_is_amber_in_health_not_red(hostile, use_settings):
    hostile.reset()
    switch_to(hostile, use_settings)
    hostile.answer(raw=(503, "text/html", "<html>Service Unavailable</html>"), headers={"Retry-After": "3600"})
    status, check = health()
    assert status == 200 and check["ok"] is True and check["accepted_by_idp"] is None, (status, check)
    assert "not verified with the IdP" in check["warning"] and "answered HTTP 503" in check["warning"], check
    assert "fix" not in check, "no fix of the secret is offered: nothing says it is wrong"
    row = setup_row()
    assert "not verified with the IdP" in row and "refuses" not in row
