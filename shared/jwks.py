"""The IdP's signing keys, cached. An unknown `kid` triggers one refetch (a genuine rotation is
picked up at once), at most one such refetch per `min_refetch_seconds`, shared by concurrent misses,
so a stream of forged tokens cannot make us hammer the IdP; the set is refreshed at least daily. The
fetches are single-flight, and a daily refresh that fails keeps the keys held (refreshing.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import DependencyUnavailable, InvalidIdToken
from .refreshing import Refreshing

# While the IdP's endpoint is down, how often a refresh of what we hold is tried again, and for how long
# past its daily refresh what we hold still serves (the keys and the metadata, runtime.py): the keys
# held still verify what the IdP signs until it rotates (a rotation's new kid still asks for a
# refetch), the metadata's endpoints rarely move; held a week past its refresh, neither serves: a
# key the IdP retired (compromised) must not verify for ever because its JWKS stays out of reach.
STALE_RETRY_SECONDS = 60.0
MAX_STALE_SECONDS = 7 * 86400.0
MIN_RSA_BITS = 2048  # RFC 7518 3.3, as the session key (session_token.py)


class JwksCache:
    def __init__(self, fetch: Callable[[], dict], *, min_refetch_seconds: float = 5.0,
                 max_age_seconds: float = 86400.0, clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._min_refetch = min_refetch_seconds
        self._keys = Refreshing(self._fetch_keys, "idp", "keys", fresh_for=max_age_seconds,
                                retry_seconds=STALE_RETRY_SECONDS, max_stale_seconds=MAX_STALE_SECONDS, clock=clock)

    @property
    def fetch_count(self) -> int:
        return self._keys.reads

    @property
    def held(self) -> Refreshing:
        """The keys as held: whether a refresh is failing (`unavailable_since`), for the health check."""
        return self._keys

    def _fetch_keys(self) -> list[IdpKey]:
        doc = self._fetch()
        items = doc.get("keys") if isinstance(doc, dict) else None
        keys = [key for key in map(_usable_key, items if isinstance(items, list) else []) if key is not None]
        if not keys:
            # A 200 that is no key set (a publishing glitch, a wrong endpoint) is the IdP unavailable:
            # the keys held serve on (refreshing.py), rather than none at all.
            raise DependencyUnavailable("idp", "the JWKS holds no signing key we can use")
        return keys

    def _current(self, *, refetch: bool) -> tuple[list[IdpKey], bool]:
        """The keys, and whether they were fetched during this call. Only refetches caused by an
        unknown kid are rate-limited (refresh's `not_within`), so the first unknown kid after a
        routine fetch (a genuine rotation) refetches at once, while a stream of unknown kids costs
        the IdP one fetch per `min_refetch_seconds`; concurrent misses share that fetch."""
        before = self._keys.peek()
        keys = self._keys.refresh(not_within=self._min_refetch) if refetch else self._keys.get()
        # By identity, not by counting reads: a re-read may end between get()'s handing out the held
        # keys and this line, and those keys are then no newer than before.
        return keys, keys is not before

    def warm(self) -> None:
        """Fetches the keys now if they are not cached (or are a day old)."""
        self._current(refetch=False)

    def signing_key(self, kid: str | None, alg: str) -> IdpKey:
        """The key that signed a token with this header `kid` and `alg`. Only keys that can verify
        `alg` are candidates (RFC 7517 `kty`, `crv`, `use`, and a declared `alg` equal to it: no
        algorithm confusion). Raises InvalidIdToken('kid') when no candidate matches, or when the
        token has no `kid` and more than one candidate remains (trying each would let any of them
        vouch for any token; Entra always sends `kid`)."""
        keys, fetched = self._current(refetch=False)
        found = self._match(keys, kid, alg)
        if found is None and not fetched:  # keys fetched this very moment would not be newer
            keys, _ = self._current(refetch=True)
            found = self._match(keys, kid, alg)
        if found is None:
            raise InvalidIdToken("kid", f"no key with kid {kid!r} for {alg} in the IdP's JWKS" if kid is not None
                                 else f"no kid in the header and the IdP does not publish exactly one {alg} key")
        return found

    @staticmethod
    def _match(keys: list[IdpKey], kid: str | None, alg: str) -> IdpKey | None:
        usable = [key for key in keys if key.verifies(alg)]
        if kid is None:
            return usable[0] if len(usable) == 1 else None
        return next((key for key in usable if key.key_id == kid), None)


def _usable_key(item: object) -> IdpKey | None:
    """A signing key of the IdP's JWKS, or None for one we cannot or must not use: not for signatures,
    a type we do not know, malformed, published with its private half, or RSA under 2048 bits (RFC 7518
    3.3: factorable, it would let anyone sign ID tokens)."""
    if not isinstance(item, dict) or item.get("use", "sig") != "sig":
        return None
    # RFC 7517 4.3: key_ops, when given, names what the key is for; one not for "verify" is not ours to use.
    # An issuer that is not text scopes the key to nothing we can read: skipped, not taken as unscoped
    # (which would let it sign for every tenant).
    if ("key_ops" in item and (not isinstance(item["key_ops"], list) or "verify" not in item["key_ops"])) or (
            "issuer" in item and not isinstance(item["issuer"], str)):
        return None
    if _PRIVATE_MEMBERS.intersection(item):
        # Skipped, not cut down to its public half: everyone who reads the JWKS holds this key, so a
        # token it verifies proves nothing (and PyJWT would hand back a private key, which cannot verify).
        return None
    try:
        jwk = jwt.PyJWK(item)
    except Exception:
        # Foreign data parsed by PyJWT, whose errors are many (NotImplementedError for "alg": "none",
        # ValueError, KeyError, ...): one bad key is skipped, it never fails the whole set (a 500).
        return None
    if isinstance(jwk.key, rsa.RSAPublicKey) and jwk.key.key_size < MIN_RSA_BITS:
        return None
    return IdpKey(jwk, item.get("alg"), item.get("kty"), item.get("crv"), item.get("issuer"))


# RFC 7518 6.3.2, 6.2.2 and 6.4.1 (RSA, EC and OKP private members; `k`, a symmetric key, is all private).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

# What a JWK must be to verify each algorithm: (kty, crv or None for any).
_KEY_FOR_ALG = {**{f"{family}{bits}": ("RSA", None) for family in ("RS", "PS") for bits in (256, 384, 512)},
                "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521")}


@dataclass(frozen=True)
class IdpKey:
    jwk: jwt.PyJWK
    declared_alg: object  # the JWK's own `alg`, when it has one
    kty: object
    crv: object
    # Entra's JWKS scopes each key to the issuer it signs for ("https://login.microsoftonline.com/
    # {tenantid}/v2.0", or one tenant's, e.g. the consumer accounts'): id_token.py holds a token to it.
    issuer: str | None = None

    @property
    def key(self):
        return self.jwk.key

    @property
    def key_id(self) -> str | None:
        return self.jwk.key_id

    def verifies(self, alg: str) -> bool:
        kty, crv = _KEY_FOR_ALG.get(alg, (None, None))
        return (self.declared_alg in (None, alg) and kty is not None and self.kty == kty
                and (crv is None or self.crv == crv))
