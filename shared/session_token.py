"""The portal session token: a JWT we sign with our own key, and the JWKS that verifies it.

The signing-key secret holds one or more PEM private keys: the first signs, every one is published.
A rotation takes three steps (docs/operating.md): add the new key after the old, then put it first,
then leave it alone, each step once every worker and portal has the one before."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from functools import cached_property

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from .errors import ConfigurationError
from .flows import FlowCookies, flow_keys

_PEM_BLOCK = re.compile(r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.+?-----END (?:RSA |EC )?PRIVATE KEY-----", re.S)
# Every key's armour, read or not (ENCRYPTED, OPENSSH, a public key): one _PEM_BLOCK does not take is
# refused, not skipped, or a rotation's new key would go unpublished and unused until step 3 (it alone)
# found no key. Other armour (a CERTIFICATE in Key Vault's PEM form, EC PARAMETERS) is no key.
_KEY_ARMOUR = re.compile(r"-----BEGIN [A-Z0-9 ]*(?:PRIVATE|PUBLIC) KEY-----")


def jwk_thumbprint(jwk: dict) -> str:
    """RFC 7638 thumbprint: the `kid` of a public key, stable across restarts and workers."""
    members = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private_key: object
    alg: str
    kid: str
    public_jwk: dict


def _signing_key(private_key) -> SigningKey:
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < 2048:
            raise ValueError("RSA keys must have at least 2048 bits")
        alg, jwk = "RS256", RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    elif isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
        alg, jwk = "ES256", ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    else:
        raise ValueError("only RSA (2048+ bits) and EC P-256 keys can sign session tokens")
    kid = jwk_thumbprint(jwk)
    public = {k: v for k, v in jwk.items() if k in ("kty", "n", "e", "crv", "x", "y")}
    public.update({"kid": kid, "use": "sig", "alg": alg})
    return SigningKey(private_key=private_key, alg=alg, kid=kid, public_jwk=public)


def load_signing_keys(pem_bundle: str, setting: str = "SESSION_SIGNING_KEY") -> list[SigningKey]:
    """Parses every PEM private key in the bundle. Raises ConfigurationError (naming the setting or
    secret, never its content) when there is none or one cannot be used."""
    text = pem_bundle.replace("\\n", "\n")
    keys = [_key_at(text, armour, number, setting) for number, armour in enumerate(_KEY_ARMOUR.finditer(text), 1)]
    if not keys:
        raise ConfigurationError([f"{setting}: {_no_key_problem(text)}."])
    return keys


def readable_kids(pem_bundle: str) -> set[str]:
    """The kids of the bundle's keys that can sign, the others skipped: whether a bundle that
    load_signing_keys refuses still holds a given key (the signer's fallback, shared/runtime.py)."""
    text, kids = pem_bundle.replace("\\n", "\n"), set()
    for number, armour in enumerate(_KEY_ARMOUR.finditer(text), 1):
        try:
            kids.add(_key_at(text, armour, number).kid)
        except ConfigurationError:
            continue
    return kids


def _key_at(text: str, armour: re.Match, number: int, setting: str = "SESSION_SIGNING_KEY") -> SigningKey:
    """The bundle's key #`number`, at `armour`; ConfigurationError when it cannot sign."""
    block = _PEM_BLOCK.match(text, armour.start())
    if block is None:
        raise ConfigurationError([f"{setting}: key #{number} {_armour_problem(armour.group())}."])
    try:
        return _signing_key(serialization.load_pem_private_key(block.group().encode(), password=None))
    except TypeError as exc:  # cryptography's word for a key a password protects (PKCS#1 Proc-Type)
        raise ConfigurationError([f"{setting}: key #{number} is encrypted (a password protects it); the "
                                  "key must be unencrypted."]) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:  # the latter: a curve cryptography has no code for (SM2)
        raise ConfigurationError([f"{setting}: key #{number} cannot sign session tokens ({exc})."]) from exc


_NOT_PRIVATE = "holds a public key or certificate, not the PEM private key (-----BEGIN PRIVATE KEY-----)"


def _armour_problem(armour: str) -> str:
    """What a key's armour (a BEGIN line of _KEY_ARMOUR that _PEM_BLOCK does not take there) holds
    instead of an unencrypted PEM private key."""
    if armour == "-----BEGIN ENCRYPTED PRIVATE KEY-----":
        return ("holds an encrypted PEM private key (-----BEGIN ENCRYPTED PRIVATE KEY-----: a password protects "
                "it); the key must be unencrypted")
    if armour.endswith("PUBLIC KEY-----"):
        return _NOT_PRIVATE
    form = re.fullmatch(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----", armour)  # the armour's other form
    if form and form.group(1) not in ("", "RSA ", "EC "):  # OPENSSH, DSA: not what _PEM_BLOCK reads
        return (f"holds a private key in a form the app cannot read ({armour}), not the PEM private key "
                "(-----BEGIN PRIVATE KEY-----)")
    return "holds a PEM private key cut short (its -----END line is missing)"


def _no_key_problem(bundle: str) -> str:
    """What a bundle with no key's armour at all holds instead: a certificate alone (Key Vault's PEM
    form of a certificate without its key), or nothing like a key."""
    if "-----BEGIN CERTIFICATE-----" in bundle:
        return _NOT_PRIVATE
    return "holds no PEM private key (-----BEGIN PRIVATE KEY-----)"


class SessionSigner:
    def __init__(self, keys: list[SigningKey]):
        self.keys = keys
        self.current = keys[0]

    def issue_session_token(self, *, issuer: str, audience: str, subject: str, email: str, name: str,
                            account_type: str, idp_iss: str, idp_sub: str, now: int, ttl: int,
                            nonce: str | None = None, return_to: str | None = None,
                            auth_time: int | None = None) -> str:
        """`nonce` (the portal's own value from login start) and `return_to` travel only inside the
        signed token, never as form fields a portal might trust. `auth_time`: when the person last
        signed in at the IdP (the ID token's, when it has one), so a portal can ask for a recent one."""
        claims = {"iss": issuer, "aud": audience, "sub": subject, "email": email, "name": name,
                  "account_type": account_type, "idp_iss": idp_iss, "idp_sub": idp_sub,
                  "iat": now, "nbf": now, "exp": now + ttl, "jti": str(uuid.uuid4())}
        if nonce:
            claims["nonce"] = nonce
        if return_to:
            claims["return_to"] = return_to
        if auth_time is not None:
            claims["auth_time"] = auth_time
        return jwt.encode(claims, self.current.private_key, algorithm=self.current.alg,
                          headers={"kid": self.current.kid, "typ": "JWT"})

    @cached_property
    def flow_cookies(self) -> FlowCookies:
        """The flow cookie's seal, keyed from these same private keys: every worker that can sign can
        open a flow, nothing new is stored, and it rotates with the signing key."""
        return FlowCookies(flow_keys([key.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            for key in self.keys]))

    def jwks(self) -> dict:
        """Public members only, current key first."""
        return {"keys": [dict(key.public_jwk) for key in self.keys]}
