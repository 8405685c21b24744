"""The portal session token (shared/session_token.py): keys loaded from PEM, published as a JWKS of
public members with RFC 7638 kids, tokens a portal verifies with an ordinary JWT library, rotation."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from shared.errors import ConfigurationError
from shared.session_token import SessionSigner, load_signing_keys, readable_kids
from tests.conftest import SM2_KEY_PEM

NOW = 1_700_000_000
ISSUER = "https://sso.contoso.test"
AUDIENCE = "https://portal.contoso.test"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def pem(key, fmt=serialization.PrivateFormat.PKCS8) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def b64url_uint(value: int, length: int | None = None) -> str:
    raw = value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rfc7638_rsa(key: rsa.RSAPrivateKey) -> str:
    numbers = key.public_key().public_numbers()
    # RFC 7638 section 3.2: required members only, lexicographic order, no whitespace.
    canonical = '{"e":"%s","kty":"RSA","n":"%s"}' % (b64url_uint(numbers.e), b64url_uint(numbers.n))  # noqa: UP031
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def rfc7638_ec(key: ec.EllipticCurvePrivateKey) -> str:
    numbers = key.public_key().public_numbers()
    canonical = '{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' % (b64url_uint(numbers.x, 32),  # noqa: UP031
                                                                  b64url_uint(numbers.y, 32))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def issue(signer: SessionSigner, **overrides) -> str:
    claims = {"issuer": ISSUER, "audience": AUDIENCE, "subject": "acct-42", "email": "ann@contoso.test",
              "name": "Ann", "account_type": "agent", "idp_iss": "https://idp.test/t/v2.0",
              "idp_sub": "tid:oid", "now": NOW, "ttl": 3600}
    claims.update(overrides)
    return signer.issue_session_token(**claims)


def verify_as_a_portal(token: str, jwks: dict) -> dict:
    """What a portal does: pick the key by kid from the JWKS and verify with an ordinary library."""
    keys = jwt.PyJWKSet(jwks["keys"])
    kid = jwt.get_unverified_header(token)["kid"]
    key = keys[kid]
    return jwt.decode(token, key.key, algorithms=["RS256", "ES256"], audience=AUDIENCE, issuer=ISSUER,
                      options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                               "require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})


def test_rsa_2048_pkcs8_pem_loads_as_rs256(rsa_key):
    [key] = load_signing_keys(pem(rsa_key))
    assert key.alg == "RS256", "an RSA key signs RS256"
    assert key.kid == rfc7638_rsa(rsa_key), "the kid is the RFC 7638 thumbprint of the public key"


def test_rsa_traditional_pem_loads(rsa_key):
    [key] = load_signing_keys(pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL))
    assert key.kid == rfc7638_rsa(rsa_key), "-----BEGIN RSA PRIVATE KEY----- loads too"


def test_ec_p256_pem_loads_as_es256(ec_key):
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        [key] = load_signing_keys(pem(ec_key, fmt))
        assert key.alg == "ES256", f"an EC P-256 key ({fmt.name}) signs ES256"
        assert key.kid == rfc7638_ec(ec_key), "the kid is the RFC 7638 thumbprint of the EC public key"


def test_pem_with_escaped_newlines_from_an_app_setting_loads(rsa_key):
    [key] = load_signing_keys(pem(rsa_key).replace("\n", "\\n"))
    assert key.kid == rfc7638_rsa(rsa_key), "a PEM pasted with literal \\n into an app setting still loads"


def test_bundle_of_two_keys_signs_with_the_first_and_publishes_both(rsa_key, ec_key):
    keys = load_signing_keys(pem(ec_key) + "\n" + pem(rsa_key))
    signer = SessionSigner(keys)
    header = jwt.get_unverified_header(issue(signer))
    assert header["kid"] == rfc7638_ec(ec_key) and header["alg"] == "ES256", "the first key in the bundle signs"
    published = signer.jwks()["keys"]
    assert [k["kid"] for k in published] == [rfc7638_ec(ec_key), rfc7638_rsa(rsa_key)], \
        "the JWKS publishes every key of the bundle, current first"


def test_jwks_holds_public_members_only(rsa_key, ec_key):
    jwks = SessionSigner(load_signing_keys(pem(rsa_key) + pem(ec_key))).jwks()
    for key in jwks["keys"]:
        leaked = PRIVATE_MEMBERS & set(key)
        assert not leaked, f"the JWKS must never publish private key members: {sorted(leaked)}"
        assert key.get("use") == "sig" and key.get("alg") in ("RS256", "ES256"), "each key says what it is for"
    text = json.dumps(jwks)
    rsa_private = rsa_key.private_numbers()
    for secret in (rsa_private.d, rsa_private.p, rsa_private.q, ec_key.private_numbers().private_value):
        assert b64url_uint(secret) not in text, "no private number appears anywhere in the JWKS"


def test_session_token_verifies_against_the_jwks_with_the_claims_the_spec_lists(rsa_key):
    signer = SessionSigner(load_signing_keys(pem(rsa_key)))
    token = issue(signer)
    claims = verify_as_a_portal(token, signer.jwks())
    expected = {"iss": ISSUER, "aud": AUDIENCE, "sub": "acct-42", "email": "ann@contoso.test", "name": "Ann",
                "account_type": "agent", "idp_iss": "https://idp.test/t/v2.0", "idp_sub": "tid:oid",
                "iat": NOW, "nbf": NOW, "exp": NOW + 3600}
    for name, value in expected.items():
        assert claims.get(name) == value, f"the session token's '{name}' claim is {value!r}"
    assert isinstance(claims.get("jti"), str) and claims["jti"], "a jti is present"
    assert jwt.get_unverified_header(token).get("typ") == "JWT"


def test_session_token_verifies_with_es256(ec_key):
    signer = SessionSigner(load_signing_keys(pem(ec_key)))
    assert verify_as_a_portal(issue(signer), signer.jwks())["sub"] == "acct-42", "ES256 tokens verify via the JWKS"


def test_session_token_jti_is_unique(rsa_key):
    signer = SessionSigner(load_signing_keys(pem(rsa_key)))
    jwks = signer.jwks()
    assert verify_as_a_portal(issue(signer), jwks)["jti"] != verify_as_a_portal(issue(signer), jwks)["jti"], \
        "two tokens, even issued in the same second, have different jti"


def test_session_token_is_live_now_and_expires_after_the_ttl(rsa_key):
    signer = SessionSigner(load_signing_keys(pem(rsa_key)))
    jwks = jwt.PyJWKSet(signer.jwks()["keys"])
    token = signer.issue_session_token(issuer=ISSUER, audience=AUDIENCE, subject="s", email="e", name="n",
                                       account_type="user", idp_iss="i", idp_sub="s", now=NOW, ttl=60)
    key = jwks[jwt.get_unverified_header(token)["kid"]].key
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token, key, algorithms=["RS256"], audience=AUDIENCE)  # NOW + 60 is long past
    assert jwt.decode(token, key, algorithms=["RS256"], audience=AUDIENCE, options={"verify_exp": False})


def test_token_of_the_old_key_still_verifies_after_rotation(rsa_key, ec_key):
    old = load_signing_keys(pem(rsa_key))
    token = issue(SessionSigner(old))
    rotated = SessionSigner(load_signing_keys(pem(ec_key) + pem(rsa_key)))
    assert verify_as_a_portal(token, rotated.jwks())["sub"] == "acct-42", \
        "after rotation the JWKS keeps the previous key, so its tokens still verify"
    assert jwt.get_unverified_header(issue(rotated))["kid"] == rfc7638_ec(ec_key), "the new key signs new tokens"


def test_token_of_a_removed_key_no_longer_verifies(rsa_key, ec_key):
    token = issue(SessionSigner(load_signing_keys(pem(rsa_key))))
    jwks = SessionSigner(load_signing_keys(pem(ec_key))).jwks()
    with pytest.raises(KeyError):
        verify_as_a_portal(token, jwks)


def refusal(pem_text: str) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        load_signing_keys(pem_text, setting="SESSION_SIGNING_KEY")
    text = str(caught.value) + "\n".join(map(str, caught.value.problems)) + (caught.value.shown or "")
    assert "SESSION_SIGNING_KEY" in text, "the error names the setting"
    body_lines = [line for line in pem_text.splitlines() if line and not line.startswith("-----")]
    for line in body_lines:
        assert line not in text, "the error never contains the key's PEM"
    return caught.value


def test_rsa_1024_key_is_refused():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key the loader must refuse
    refusal(pem(weak))


@pytest.mark.parametrize("make", [lambda: ec.generate_private_key(ec.SECP384R1()),
                                  lambda: ed25519.Ed25519PrivateKey.generate(),
                                  lambda: dsa.generate_private_key(2048)], ids=["p384", "ed25519", "dsa"])
def test_key_types_other_than_rsa_and_p256_are_refused(make):
    refusal(pem(make()))


@pytest.mark.parametrize("garbage", [
    "",
    "not a key at all",
    "-----BEGIN PRIVATE KEY-----\nR2FyYmFnZUdhcmJhZ2VHYXJiYWdlR2FyYmFnZQ==\n-----END PRIVATE KEY-----",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
], ids=["empty", "text", "bad-der", "public-key"])
def test_garbage_is_refused_without_echoing_it(garbage):
    refusal(garbage)


@pytest.mark.parametrize("fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
                         ids=["pkcs8", "pkcs1"])
def test_an_encrypted_key_is_refused_as_encrypted(rsa_key, fmt):
    """Not "holds no PEM private key": it holds one, which a password protects."""
    encrypted = rsa_key.private_bytes(serialization.Encoding.PEM, fmt,
                                      serialization.BestAvailableEncryption(b"pass phrase")).decode()
    text = "\n".join(map(str, refusal(encrypted).problems))
    assert "encrypted" in text and "no PEM private key" not in text, text


def test_a_public_key_is_refused_as_a_public_key(rsa_key):
    public = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    text = "\n".join(map(str, refusal(public).problems))
    assert "public key" in text and "private key" in text, text


def test_second_bad_key_in_a_bundle_is_refused_by_number(rsa_key):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key the loader must refuse
    err = refusal(pem(rsa_key) + pem(weak))
    assert "#2" in "\n".join(map(str, err.problems)), "the error says which key of the bundle is unusable"


def _unreadable_forms(key) -> dict[str, str]:
    """A rotation's new key in a form the loader cannot read, as it might be pasted beside the old."""
    return {"encrypted": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"pass phrase")).decode(),
            "openssh": pem(key, serialization.PrivateFormat.OpenSSH),
            "public-key": key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
            "cut-short": pem(key).rsplit("-----END", 1)[0]}


@pytest.mark.parametrize("form", ["encrypted", "openssh", "public-key", "cut-short"])
@pytest.mark.parametrize("step", ["old-first", "new-first"])
def test_a_new_key_the_loader_cannot_read_is_refused_beside_a_good_one(rsa_key, ec_key, form, step):
    """Rotation step 1 (old, new) and 2 (new, old): skipping the unreadable new key would publish and
    sign with the old one alone, health green, and break only at step 3 (the new key alone)."""
    new = _unreadable_forms(ec_key)[form]
    bundle, number = (pem(rsa_key) + new, "#2") if step == "old-first" else (new + "\n" + pem(rsa_key), "#1")
    text = "\n".join(map(str, refusal(bundle).problems))
    assert f"key {number}" in text, text
    if form == "encrypted":
        assert "encrypted" in text, text
    if form == "public-key":
        assert "public key" in text, text


def test_the_certificate_and_ec_parameters_beside_a_key_are_not_keys(ec_key):
    """Key Vault's PEM form of a certificate is its key followed by the certificate; `openssl ecparam
    -genkey` writes EC PARAMETERS before the key. Neither is a key of the bundle."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portal-sso-unit")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ec_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(ec_key, hashes.SHA256()))
    parameters = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"  # P-256's OID
    [key] = load_signing_keys(parameters + pem(ec_key) + cert.public_bytes(serialization.Encoding.PEM).decode())
    assert key.kid == rfc7638_ec(ec_key)


def test_a_key_on_a_curve_cryptography_does_not_support_is_refused_by_number(rsa_key):
    """SM2: cryptography raises UnsupportedAlgorithm, which was no ConfigurationError but a 500."""
    text = "\n".join(map(str, refusal(pem(rsa_key) + SM2_KEY_PEM).problems))
    assert "key #2 cannot sign session tokens" in text, text


@pytest.mark.parametrize("form", ["encrypted", "openssh", "public-key", "cut-short"])
@pytest.mark.parametrize("step", ["old-first", "new-first"])
def test_the_keys_readable_in_a_refused_bundle_are_told_apart_from_those_that_are_not(rsa_key, ec_key, form, step):
    """What the signer's fallback asks of a bundle load_signing_keys refuses: is the key it signs
    with still in it (shared/runtime.py)."""
    new = _unreadable_forms(ec_key)[form]
    bundle = pem(rsa_key) + new if step == "old-first" else new + "\n" + pem(rsa_key)
    assert readable_kids(bundle) == {rfc7638_rsa(rsa_key)}
    assert readable_kids(new) == set()
    assert readable_kids(pem(ec_key) + pem(rsa_key)) == {rfc7638_ec(ec_key), rfc7638_rsa(rsa_key)}
