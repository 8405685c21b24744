"""Client authentication by certificate (private_key_jwt through MSAL), and rotation of the key
that signs session tokens."""

from __future__ import annotations

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import APP_BASE, CERT_CLIENT_ID, DEMO_USER, PORTAL_ORIGIN
from tests.support.portal import delivered, sign_in, verify_session_token


def test_client_authenticates_with_a_certificate_instead_of_a_secret(use_settings, client_certificate, demo_accounts):
    use_settings(OIDC_CLIENT_ID=CERT_CLIENT_ID, OIDC_CLIENT_SECRET=None,
                 OIDC_CLIENT_CERTIFICATE=client_certificate.certificate_pem + client_certificate.private_key_pem)
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
    assert response.status_code == 200, response.text[:600]
    claims = verify_session_token(delivered(response)[1]["session_token"], APP_BASE, PORTAL_ORIGIN)
    assert claims["sub"] == demo_accounts["user"]


def test_certificate_client_with_the_wrong_key_is_refused(use_settings, client_certificate, signing_key_pem):
    use_settings(OIDC_CLIENT_ID=CERT_CLIENT_ID, OIDC_CLIENT_SECRET=None,
                 OIDC_CLIENT_CERTIFICATE=client_certificate.certificate_pem + signing_key_pem)
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
    assert response.status_code == 401, "a client assertion signed by another key must not redeem the code"
    assert "client_credential_rejected" in response.text, "our credential, not the person's code"


def test_rotated_signing_key_signs_new_tokens_while_old_tokens_still_verify(use_settings, signing_key_pem,
                                                                            demo_accounts):
    session = requests.Session()
    use_settings(SESSION_SIGNING_KEY=signing_key_pem)
    old_token = delivered(sign_in(session, APP_BASE, "user", DEMO_USER))[1]["session_token"]

    new_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    use_settings(SESSION_SIGNING_KEY=new_key + signing_key_pem)  # new first, previous kept until its tokens expire
    new_token = delivered(sign_in(session, APP_BASE, "user", DEMO_USER))[1]["session_token"]

    old_kid, new_kid = jwt.get_unverified_header(old_token)["kid"], jwt.get_unverified_header(new_token)["kid"]
    assert old_kid != new_kid and jwt.get_unverified_header(new_token)["alg"] == "ES256"
    published = [k["kid"] for k in requests.get(f"{APP_BASE}/api/sso/jwks.json").json()["keys"]]
    assert published == [new_kid, old_kid], "the JWKS publishes the current key first, then the previous"
    for token in (old_token, new_token):
        assert verify_session_token(token, APP_BASE, PORTAL_ORIGIN)["sub"] == demo_accounts["user"]
