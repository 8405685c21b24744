"""The demo portal's key handling (tools/demo_portal.py): what portal teams copy. A key the app's JWKS
no longer publishes stops verifying once the portal's key-set cache runs out, and a key rotated in is
taken at the first token it signed. A local JWKS endpoint serves the real SessionSigner's key set."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from shared.session_token import SessionSigner, load_signing_keys
from tools.demo_portal import HandOffRefused, PortalHalf, nonce_cookie_name

AUDIENCE, NONCE = "https://portal.contoso.test", "n" * 22


def new_key():
    from cryptography.hazmat.primitives import serialization

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    (key,) = load_signing_keys(pem)
    return key


@pytest.fixture
def app_jwks():
    """The app's /api/sso/jwks.json, serving whatever key bundle the test sets."""
    published: dict = {"keys": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(SessionSigner(published["keys"]).jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", published
    server.shutdown()


def token(key, base: str) -> str:
    now = int(time.time())
    claims = {"iss": base, "aud": AUDIENCE, "sub": "U-1", "email": "ann@contoso.test", "name": "Ann",
              "account_type": "user", "idp_iss": "https://idp.test", "idp_sub": "t:o", "iat": now, "nbf": now,
              "exp": now + 3600, "jti": str(uuid.uuid4()), "nonce": NONCE}
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid})


def accept(portal: PortalHalf, base: str, signed: str) -> dict:
    return portal.accept(signed, "user", origin=base, cookies={nonce_cookie_name("user", NONCE): f"1.{NONCE}"})


def test_a_key_the_app_no_longer_publishes_stops_verifying_when_the_key_set_cache_runs_out(app_jwks):
    """PyJWKClient(cache_keys=True) kept each key it had used in an lru_cache that never expires: a
    compromised key dropped from the app's JWKS went on verifying until the portal restarted."""
    base, published = app_jwks
    old, new = new_key(), new_key()
    published["keys"] = [old]
    portal = PortalHalf(base, AUDIENCE)
    assert accept(portal, base, token(old, base))["sub"] == "U-1"
    published["keys"] = [new]
    portal.jwks.jwk_set_cache.lifespan = 0.2  # the portal's key-set cache (300 s) runs out
    time.sleep(0.3)
    with pytest.raises(HandOffRefused):
        accept(portal, base, token(old, base))


def test_a_key_rotated_in_verifies_within_seconds_of_the_last_fetch_not_half_a_minute(app_jwks):
    """An unknown kid refetches the key set; PyJWKClient's default 30 s cooldown after every fetch
    refused a rotated-in key's tokens meanwhile. The app's own IdP key cache rate-limits at 5 s."""
    base, published = app_jwks
    old, new = new_key(), new_key()
    published["keys"] = [old]
    portal = PortalHalf(base, AUDIENCE)
    accept(portal, base, token(old, base))  # the key set fetched
    published["keys"] = [new, old]
    time.sleep(5.5)
    assert accept(portal, base, token(new, base))["sub"] == "U-1"


def forged(kid: str, alg: str, base: str) -> str:
    """A token naming a published key's kid with another key type's algorithm (the signature is junk)."""
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    now = int(time.time())
    claims = {"iss": base, "aud": AUDIENCE, "sub": "U-1", "iat": now, "nbf": now, "exp": now + 60}
    return f"{part({'alg': alg, 'kid': kid, 'typ': 'JWT'})}.{part(claims)}.{'A' * 86}"


def new_rsa_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    (key,) = load_signing_keys(pem)
    return key


@pytest.mark.parametrize(("make_key", "alg"), [(new_key, "RS256"), (new_rsa_key, "ES256")],
                         ids=["ec-as-rs", "rsa-as-es"])
def test_a_token_whose_alg_is_not_its_keys_is_refused_not_a_crash(app_jwks, make_key, alg):
    """With algorithms=["RS256", "ES256"] PyJWT handed an EC key to RS256 (or an RSA key to ES256) and
    raised TypeError: the landing page answered 500. The algorithm is the kid's key's own."""
    base, published = app_jwks
    key = make_key()
    published["keys"] = [key]
    portal = PortalHalf(base, AUDIENCE)
    with pytest.raises(HandOffRefused) as refused:
        accept(portal, base, forged(key.kid, alg, base))
    assert refused.value.status == 401
