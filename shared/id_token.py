"""ID token validation, done by us: MSAL Python 1.38+ checks none of it. Each check is named after
its step in OpenID Connect Core 1.0, section 3.1.3.7, and fails with InvalidIdToken(check)."""

from __future__ import annotations

import hmac
import math
import time

import jwt

from .errors import InvalidIdToken
from .jwks import JwksCache
from .provider import ASYMMETRIC_ALGS, ProviderMetadata

LEEWAY_SECONDS = 120  # clock skew we tolerate between the IdP and us
MAX_TOKEN_AGE_SECONDS = 900  # an ID token minted longer ago than a login can take is not this login's


def _number(claims: dict, name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidIdToken(name, f"'{name}' claim missing")
        return None
    # Python's json (PyJWT's parser) accepts NaN and Infinity: NaN makes every comparison below False
    # (so the check would pass) and Infinity never expires.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidIdToken(name, f"'{name}' claim is not a number")
    return float(value)


def verify_id_token(id_token: str, *, metadata: ProviderMetadata, jwks: JwksCache, client_id: str,
                    expected_nonce: str | None, now: float | None = None) -> dict:
    """Returns the token's claims when every check passes; raises InvalidIdToken naming the first
    check that failed (the check name becomes the audit reason, e.g. 'id_token_aud')."""
    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as exc:
        raise InvalidIdToken("format", "not a JWS compact token") from exc

    # Step 6/7: alg must be one the IdP advertises and asymmetric: never "none", never HS*.
    alg = header.get("alg")
    if alg not in metadata.id_token_algs or alg not in ASYMMETRIC_ALGS:
        raise InvalidIdToken("alg", f"alg {alg!r} not allowed")
    if header.get("crit"):
        raise InvalidIdToken("alg", "critical header extensions are not supported")
    key = jwks.signing_key(header.get("kid"), alg)

    # Step 6: signature. Claims are checked below, one by one, for precise reasons.
    try:
        claims = jwt.decode(id_token, key=key.key, algorithms=[alg],
                            options={"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                                     "verify_iat": False, "verify_aud": False, "verify_iss": False,
                                     "verify_sub": False, "verify_jti": False, "require": []})
    except jwt.InvalidSignatureError as exc:
        raise InvalidIdToken("signature", "signature does not verify") from exc
    except jwt.PyJWTError as exc:
        raise InvalidIdToken("signature", type(exc).__name__) from exc
    if not isinstance(claims, dict):
        raise InvalidIdToken("format", "payload is not a JSON object")

    # Step 2: iss is exactly the issuer (Entra's {tenantid} filled from the token's own tid).
    tid = claims.get("tid") if isinstance(claims.get("tid"), str) else None
    if claims.get("iss") != metadata.expected_issuer(tid):
        raise InvalidIdToken("iss", f"iss {claims.get('iss')!r} is not {metadata.expected_issuer(tid)!r}")

    # Step 3: aud contains our client id; with several audiences, azp must be us (steps 4, 5).
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise InvalidIdToken("aud", "aud does not contain the client id")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise InvalidIdToken("azp", "azp is not the client id")

    # Step 9: exp in the future; step 10: iat present, not in the future, not too old; nbf if present.
    exp = _number(claims, "exp", required=True)
    if now > exp + LEEWAY_SECONDS:
        raise InvalidIdToken("exp", "token expired")
    iat = _number(claims, "iat", required=True)
    if iat > now + LEEWAY_SECONDS:
        raise InvalidIdToken("iat", "issued in the future")
    if now - iat > MAX_TOKEN_AGE_SECONDS + LEEWAY_SECONDS:
        raise InvalidIdToken("iat", "issued too long ago for this login")
    nbf = _number(claims, "nbf", required=False)
    if nbf is not None and nbf > now + LEEWAY_SECONDS:
        raise InvalidIdToken("nbf", "not yet valid")

    # Core 2: sub is required and non-empty.
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidIdToken("sub", "'sub' claim missing or empty")

    # Step 11: nonce equals what this login sent (MSAL sends sha256-hex of the flow's nonce and also
    # checks it; we check again so a change in MSAL cannot silently drop the replay defence).
    if expected_nonce is not None:
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(nonce, expected_nonce):
            raise InvalidIdToken("nonce", "nonce does not match this login")
    return claims
