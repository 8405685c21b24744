"""ID token validation, done by us: MSAL Python 1.38+ checks none of it. Each check is named after
its step in OpenID Connect Core 1.0, section 3.1.3.7, and fails with InvalidIdToken(check)."""

from __future__ import annotations

import base64
import hmac
import json
import math
import re
import time

import jwt

from .errors import InvalidIdToken, NotReauthenticated
from .jwks import JwksCache
from .provider import ASYMMETRIC_ALGS, ProviderMetadata

LEEWAY_SECONDS = 120  # clock skew we tolerate between the IdP and us
MAX_TOKEN_AGE_SECONDS = 900  # an ID token minted longer ago than a login can take is not this login's
MAX_TIME = 2**53  # seconds: far past any real time, and still exact as a float
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_JWS = jwt.PyJWS()  # the signature alone: the claims are read and checked here


def _a_time(value: object) -> bool:
    """Whether a claim's value can be a NumericDate: a JSON number (not a boolean) within MAX_TIME.
    Python's json (PyJWT's parser) accepts NaN and Infinity: NaN makes every comparison False (so a
    check would pass) and Infinity never expires. An int too large for a float (JSON integers have no
    bound) is no time either, and is tested first: math.isfinite raises OverflowError for it."""
    return not isinstance(value, bool) and isinstance(value, int | float) and abs(value) <= MAX_TIME \
        and math.isfinite(value)


def _number(claims: dict, name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidIdToken(name, f"'{name}' claim missing")
        return None
    if not _a_time(value):
        raise InvalidIdToken(name, f"'{name}' claim is not a number")
    return float(value)


def _auth_time(claims: dict, now: float, authenticated_since: int | None) -> None:
    """auth_time, when present, is an integral, non-negative NumericDate not in the future (it goes into
    the session token, where a portal reads it as a time). After prompt=login (`authenticated_since`,
    the login's start) it is required and must be no earlier than the start, less the skew: the prompt
    travelled in a URL the person can edit, and only auth_time shows that the IdP asked again."""
    def refused(detail: str, hint: str | None = None) -> InvalidIdToken:
        if authenticated_since is None:
            return InvalidIdToken("auth_time", detail)
        return NotReauthenticated(f"prompt=login, and {detail}", hint=hint)

    if "auth_time" not in claims:
        if authenticated_since is not None:
            raise refused("the ID token has no 'auth_time' claim",
                          hint="An administrator must add the 'auth_time' optional claim (ID token) to the app "
                               "registration (Token configuration).")
        return
    value = claims["auth_time"]
    if not _a_time(value) or value < 0 or value != int(value):
        raise refused(f"'auth_time' {_short(value)} is not an integral, non-negative NumericDate")
    if value > now + LEEWAY_SECONDS:
        raise refused(f"'auth_time' {int(value)} is in the future")
    if authenticated_since is not None and value < authenticated_since - LEEWAY_SECONDS:
        raise refused(f"'auth_time' {int(value)} is before the login started ({authenticated_since}, less "
                      f"{LEEWAY_SECONDS} s of skew)")


def _short(value: object) -> str:
    """A value from the token, for a log line's detail: repr'd (escapes control characters and lone
    surrogates) and cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _identifier(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 255 and value.isascii() and value.isprintable()


def _segment(part: str, what: str) -> bytes:
    if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
        raise InvalidIdToken("signature" if what == "signature" else "format", f"the {what} is not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _header(id_token: object) -> dict:
    """The JWS header, read by us: each segment's fault is named (a mangled signature is a signature
    failure, not a format one), and any JSON type in any member leaves as an InvalidIdToken."""
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        raise InvalidIdToken("format", "not a JWS compact token")
    header_part, payload_part, signature_part = id_token.split(".")
    try:
        # UTF-8 only (RFC 7519 7.2 step 10, RFC 8259 8.1): json.loads of bytes would also take UTF-16/32
        # or a BOM, which MSAL's decoder does not, so the two would read one token differently.
        header = json.loads(_segment(header_part, "header").decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidIdToken("format", "the header is not JSON") from exc
    if not isinstance(header, dict):
        raise InvalidIdToken("format", "the header is not a JSON object")
    _segment(payload_part, "payload")
    _segment(signature_part, "signature")
    return header


def verify_id_token(id_token: str, *, metadata: ProviderMetadata, jwks: JwksCache, client_id: str,
                    expected_nonce: str | None, now: float | None = None,
                    authenticated_since: int | None = None) -> dict:
    """Returns the token's claims when every check passes; raises InvalidIdToken naming the first
    check that failed (the check name becomes the audit reason, e.g. 'id_token_aud').
    `authenticated_since`: the login asked for prompt=login at this time (epoch seconds), so the token's
    auth_time must show a sign-in since (NotReauthenticated otherwise)."""
    now = time.time() if now is None else now
    header = _header(id_token)

    # Step 6/7: alg must be one the IdP advertises and asymmetric: never "none", never HS*.
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in metadata.id_token_algs or alg not in ASYMMETRIC_ALGS:
        raise InvalidIdToken("alg", f"alg {_short(alg)} not allowed")
    if "crit" in header or header.get("b64", True) is not True:
        raise InvalidIdToken("format", "critical header extensions (crit, b64) are not supported")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid):
        raise InvalidIdToken("kid", f"kid {_short(kid)} is not a string")
    key = jwks.signing_key(kid, alg)

    # Step 6: signature. Claims are checked below, one by one, for precise reasons.
    try:
        payload = _JWS.decode(id_token, key=key.key, algorithms=[alg])
    except jwt.InvalidSignatureError as exc:
        raise InvalidIdToken("signature", "signature does not verify") from exc
    except jwt.PyJWTError as exc:
        raise InvalidIdToken("signature", type(exc).__name__) from exc
    try:
        claims = json.loads(payload.decode("utf-8"))  # UTF-8 only, as the header
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser goes
        raise InvalidIdToken("format", "the payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise InvalidIdToken("format", "payload is not a JSON object")

    # Step 2: iss is exactly the issuer (Entra's {tenantid} filled from the token's own tid).
    tid = claims.get("tid") if isinstance(claims.get("tid"), str) else None
    if claims.get("iss") != metadata.expected_issuer(tid):
        raise InvalidIdToken("iss", f"iss {_short(claims.get('iss'))} is not {metadata.expected_issuer(tid)!r}")
    # ... and one the key vouches for: Entra's tenant-independent JWKS ("common", "organizations") names
    # each key's issuer, and a key of one tenant (the consumer accounts') must not sign for another
    # (its "Validate the signing key issuer"; Storm-0558 forged work tokens with a consumer key).
    if key.issuer is not None and key.issuer.replace("{tenantid}", tid or "") != claims.get("iss"):
        raise InvalidIdToken("iss", f"the signing key is {key.issuer!r}'s, not {_short(claims.get('iss'))}'s")

    # Step 3: aud contains our client id, and no audience we do not trust (we trust none but ourselves,
    # whatever azp says); azp, when present, must be us (steps 4, 5).
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise InvalidIdToken("aud", "aud does not contain the client id")
    if any(audience != client_id for audience in audiences):
        raise InvalidIdToken("aud", "aud holds an audience besides the client id")
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
    # Core 2: sub is required, at most 255 ASCII characters. tid and oid (Entra's), when present, name
    # the person too (`idp_sub` is tid:oid): the same rule, so nothing odd reaches a table or a log.
    if not _identifier(claims.get("sub")):
        raise InvalidIdToken("sub", "'sub' claim missing, empty, or not up to 255 printable ASCII characters")
    for name in ("tid", "oid"):
        if name in claims and not _identifier(claims[name]):
            raise InvalidIdToken(name, f"'{name}' claim is not up to 255 printable ASCII characters")

    # Step 11: nonce equals what this login sent (MSAL sends sha256-hex of the flow's nonce and also
    # checks it; we check again so a change in MSAL cannot silently drop the replay defence).
    if expected_nonce is not None:
        nonce = claims.get("nonce")
        # compare_digest takes only ASCII str (TypeError otherwise): bytes compare any text.
        if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode("utf-8", "surrogatepass"),
                                                                 expected_nonce.encode()):
            raise InvalidIdToken("nonce", "nonce does not match this login")

    # Step 13: auth_time, checked as max_age's would be, for prompt=login ("ask for the password again");
    # last, so a token not of this person or login is refused (and recorded) for that.
    _auth_time(claims, now, authenticated_since)
    return claims
