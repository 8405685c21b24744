"""The IdP's signing keys, cached. An unknown `kid` triggers one refetch (a genuine rotation is
picked up at once), at most one per `min_refetch_seconds` and shared by concurrent misses, so a
stream of forged tokens cannot make us hammer the IdP; the set is refreshed at least daily."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import jwt

from .errors import InvalidIdToken


class JwksCache:
    def __init__(self, fetch: Callable[[], dict], *, min_refetch_seconds: float = 5.0,
                 max_age_seconds: float = 86400.0, clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._min_refetch = min_refetch_seconds
        self._max_age = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[tuple[jwt.PyJWK, str | None]] = []  # (key, the alg its JWK declares)
        self._fetched_at: float | None = None
        self.fetch_count = 0

    def _refresh_locked(self) -> None:
        doc = self._fetch()
        keys = []
        for item in doc.get("keys", []) if isinstance(doc, dict) else []:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            try:
                keys.append((jwt.PyJWK(item), item.get("alg")))
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
                continue  # a key type we cannot use; the others still serve
        self._keys = keys
        self._fetched_at = self._clock()
        self.fetch_count += 1

    def _current(self, *, refetch: bool) -> list[tuple[jwt.PyJWK, str | None]]:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._max_age
            may_refetch = self._fetched_at is None or now - self._fetched_at >= self._min_refetch
            if stale or (refetch and may_refetch):
                self._refresh_locked()
            return self._keys

    def signing_key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The key that signed a token with this header `kid` and `alg`. Raises InvalidIdToken('kid')
        when no key matches, or when the token has no `kid` and the set holds more than one key (trying
        each would let any key in the set vouch for any token; Entra always sends `kid`). A key whose
        JWK declares another `alg` never matches (no algorithm confusion)."""
        for attempt in (False, True):
            keys = [key for key, declared in self._current(refetch=attempt) if declared in (None, alg)]
            if kid is None:
                if len(keys) == 1:
                    return keys[0]
                if len(keys) > 1:
                    raise InvalidIdToken("kid", f"no kid in the header and the IdP publishes {len(keys)} keys")
            else:
                for key in keys:
                    if key.key_id == kid:
                        return key
        raise InvalidIdToken("kid", f"no key with kid {kid!r} in the IdP's JWKS")
