"""The local stand-ins themselves: the dev IdP (a real OpenID Provider shaped like Entra ID) and Azurite."""

from __future__ import annotations

import hashlib
import uuid
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import jwt
import msal
import pytest
import requests
from azure.data.tables import TableServiceClient

from tools.idp_login import login_form, parse_forms, sign_in_at_idp
from tools.stack import RunningIdp, Service

TIMEOUT = 15


def _metadata(idp: RunningIdp) -> dict:
    response = requests.get(f"{idp.issuer}/.well-known/openid-configuration", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def _verified_claims(idp: RunningIdp, id_token: str, client_id: str) -> dict:
    jwks = requests.get(_metadata(idp)["jwks_uri"], timeout=TIMEOUT).json()
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    return jwt.decode(
        id_token,
        key=key,
        algorithms=["RS256"],
        audience=client_id,
        issuer=idp.issuer,
        options={"require": ["exp", "iat", "sub", "nonce"]},
    )


def _code_flow(
    idp: RunningIdp,
    app: msal.ConfidentialClientApplication,
    person: dict,
    redirect_uri: str,
    browser: requests.Session | None = None,
):
    flow = app.initiate_auth_code_flow(["email"], redirect_uri=redirect_uri, response_mode="form_post")
    with requests.Session() as fresh:
        browser = browser or fresh
        action, fields = sign_in_at_idp(browser, flow["auth_uri"], person["login"], person["password"])
    assert action == redirect_uri
    assert fields["state"] == flow["state"]
    assert fields["iss"] == idp.issuer  # RFC 9207
    result = app.acquire_token_by_auth_code_flow(flow, fields)
    assert "error" not in result, result
    return flow, result


def test_discovery_is_entra_shaped(idp: RunningIdp) -> None:
    assert idp.issuer == f"https://127.0.0.1:{idp.config['port']}/{idp.tenant}/v2.0"
    meta = _metadata(idp)
    assert meta["issuer"] == idp.issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
        assert meta[endpoint].startswith(f"{idp.issuer}/"), endpoint
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "RS256" in meta["id_token_signing_alg_values_supported"]
    assert "form_post" in meta["response_modes_supported"]
    assert {"S256"} <= set(meta["code_challenge_methods_supported"])
    assert {"email", "name", "preferred_username", "oid", "tid"} <= set(meta["claims_supported"])
    assert {"client_secret_post", "private_key_jwt"} <= set(meta["token_endpoint_auth_methods_supported"])
    keys = requests.get(meta["jwks_uri"], timeout=TIMEOUT).json()["keys"]
    assert [(k["kty"], k["alg"]) for k in keys] == [("RSA", "RS256")]
    assert all("d" not in k for k in keys)  # public members only


def test_outside_the_tenant_prefix_is_404(idp: RunningIdp) -> None:
    origin = idp.issuer.rsplit("/", 2)[0]
    assert requests.get(f"{origin}/.well-known/openid-configuration", timeout=TIMEOUT).status_code == 404
    other = f"{origin}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration"
    assert requests.get(other, timeout=TIMEOUT).status_code == 404


def test_msal_code_flow_with_client_secret(idp: RunningIdp) -> None:
    client = idp.client()
    person = idp.person("user@contoso.test")
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    flow, result = _code_flow(idp, app, person, client["redirect_uris"][0])

    claims = _verified_claims(idp, result["id_token"], client["client_id"])
    expected = person["claims"]
    for name in ("email", "name", "preferred_username", "oid", "tid"):
        assert claims[name] == expected[name], name
    assert claims["sub"] == expected["oid"]
    assert claims["tid"] == idp.tenant
    # MSAL sends sha256-hex of its own nonce and checks the echo; so does this test.
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert result["id_token_claims"]["email"] == expected["email"]


def test_extra_claims_are_emitted(idp: RunningIdp) -> None:
    client = idp.client()
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    _flow, result = _code_flow(idp, app, idp.person("unverified@contoso.test"), client["redirect_uris"][0])
    claims = _verified_claims(idp, result["id_token"], client["client_id"])
    assert claims["xms_edov"] is False
    assert claims["email_verified"] is False
    assert claims["email"] == "unverified@contoso.test"


def test_msal_code_flow_with_private_key_jwt(idp: RunningIdp, client_certificate) -> None:
    client = next(c for c in idp.config["clients"] if c["token_endpoint_auth_method"] == "private_key_jwt")
    person = idp.person("agent@contoso.test")
    app = msal.ConfidentialClientApplication(
        client["client_id"],
        client_credential={
            "private_key": client_certificate.private_key_pem,
            "thumbprint": client_certificate.sha1_thumbprint,
        },
        oidc_authority=idp.issuer,
    )
    _flow, result = _code_flow(idp, app, person, client["redirect_uris"][1])
    claims = _verified_claims(idp, result["id_token"], client["client_id"])
    assert claims["email"] == "agent@contoso.test"

    # MSAL's other certificate form: PS256 with x5t#S256 and x5c headers.
    app = msal.ConfidentialClientApplication(
        client["client_id"],
        client_credential={
            "private_key": client_certificate.private_key_pem,
            "public_certificate": client_certificate.certificate_pem,
        },
        oidc_authority=idp.issuer,
    )
    _flow, result = _code_flow(idp, app, person, client["redirect_uris"][1])
    assert result["id_token_claims"]["oid"] == person["claims"]["oid"]


def test_wrong_password_stays_on_login_page(idp: RunningIdp) -> None:
    client = idp.client()
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    flow = app.initiate_auth_code_flow(
        ["email"], redirect_uri=client["redirect_uris"][0], response_mode="form_post"
    )
    with requests.Session() as browser:
        with pytest.raises(AssertionError, match=r"refused the login .*HTTP 200.*incorrect"):
            sign_in_at_idp(browser, flow["auth_uri"], "user@contoso.test", "not-the-password")
        # Unknown people are refused the same way, and the form is still there to try again.
        login_page = browser.get(flow["auth_uri"], timeout=TIMEOUT)
        form = login_form(parse_forms(login_page.text))
        assert form is not None
        action = urljoin(login_page.url, form.attrs["action"])
        answer = browser.post(action, data={"login": "nobody@contoso.test", "password": "x"}, timeout=TIMEOUT)
        assert answer.status_code == 200
        assert login_form(parse_forms(answer.text)) is not None
        # ... and the right password then works in the same interaction.
        answer = browser.post(
            action, data={"login": "user@contoso.test", "password": "user-password"}, timeout=TIMEOUT
        )
        assert 'name="code"' in answer.text
        assert f'action="{client["redirect_uris"][0]}"' in answer.text


def _confirm_logout(browser: requests.Session, url: str) -> requests.Response:
    """Open the end-session URL and confirm the sign-out with one click (the IdP's confirm form, or
    its auto-submitted form when there is no session); return the IdP's answer, not followed."""
    page = browser.get(url, timeout=TIMEOUT)
    assert page.status_code == 200, page.text
    form = next(
        f for f in parse_forms(page.text).forms if f.attrs.get("action", "").endswith("/session/end/confirm")
    )
    action = urljoin(page.url, form.attrs["action"])
    return browser.post(
        action, data={**form.fields(), "logout": "yes"}, allow_redirects=False, timeout=TIMEOUT
    )


def test_rp_initiated_logout(idp: RunningIdp) -> None:
    client = idp.client()
    person = idp.person("user@contoso.test")
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    portal = client["post_logout_redirect_uris"][0]
    end_session = _metadata(idp)["end_session_endpoint"]
    with requests.Session() as browser:
        _flow, result = _code_flow(idp, app, person, client["redirect_uris"][0], browser)
        query = urlencode(
            {"id_token_hint": result["id_token"], "post_logout_redirect_uri": portal, "state": "bye"}
        )
        page = browser.get(f"{end_session}?{query}", timeout=TIMEOUT)
        assert 'id="op.logoutForm"' in page.text and "Yes, sign me out" in page.text
        done = _confirm_logout(browser, f"{end_session}?{query}")
        assert done.status_code in (302, 303), done.text
        location = urlsplit(done.headers["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == portal
        assert parse_qs(location.query)["state"] == ["bye"]
        # Signed out at the IdP: the next authorization request shows the login page again.
        flow = app.initiate_auth_code_flow(
            ["email"], redirect_uri=client["redirect_uris"][0], response_mode="form_post"
        )
        again = browser.get(flow["auth_uri"], timeout=TIMEOUT)
        assert login_form(parse_forms(again.text)) is not None

    # A post_logout_redirect_uri that is not registered is refused.
    query = urlencode({"client_id": client["client_id"], "post_logout_redirect_uri": "https://evil.test/"})
    refused = requests.get(f"{end_session}?{query}", timeout=TIMEOUT)
    assert refused.status_code == 400
    assert "post_logout_redirect_uri not registered" in refused.text


def test_second_login_uses_the_idp_session(idp: RunningIdp) -> None:
    client = idp.client()
    person = idp.person("agent@contoso.test")
    app = msal.ConfidentialClientApplication(
        client["client_id"], client_credential=client["client_secret"], oidc_authority=idp.issuer
    )
    with requests.Session() as browser:
        _code_flow(idp, app, person, client["redirect_uris"][1], browser)
        # Signed in already: no login page, straight to the form_post page (wrong password unused).
        _flow, result = _code_flow(
            idp, app, {**person, "password": "unused"}, client["redirect_uris"][1], browser
        )
    assert result["id_token_claims"]["email"] == "agent@contoso.test"


def test_azurite_tables(azurite: Service) -> None:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    table = service.create_table_if_not_exists("DevstackCheck")
    entity = {"PartitionKey": "user@contoso.test", "RowKey": "user", "AccountId": "u-1", "Enabled": True}
    table.upsert_entity(entity)
    got = table.get_entity("user@contoso.test", "user")
    assert got["AccountId"] == "u-1"
    assert got["Enabled"] is True
    assert azurite.url == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"
