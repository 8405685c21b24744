"""The IdP's JWKS cache (shared/jwks.py): one refetch on an unknown kid, rate-limited and shared by
concurrent misses, refreshed daily. A counting fetch function and a fake clock stand in for the IdP's
jwks_uri and time; the keys are real."""

from __future__ import annotations

import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.errors import DependencyUnavailable, InvalidIdToken
from shared.jwks import MAX_STALE_SECONDS, STALE_RETRY_SECONDS, JwksCache


def jwk(kid: str, **extra) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, **extra}


@pytest.fixture(scope="module")
def jwks_a() -> dict:
    return jwk("kid-a")


@pytest.fixture(scope="module")
def jwks_b() -> dict:
    return jwk("kid-b")


class FakeIdp:
    """The IdP's jwks_uri: serves `keys`, counts requests, optionally slow."""

    def __init__(self, *keys: dict, delay: float = 0.0):
        self.keys = list(keys)
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def fetch(self) -> dict:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return {"keys": list(self.keys)}


def cache_for(idp: FakeIdp, t: list[float]) -> JwksCache:
    return JwksCache(fetch=idp.fetch, clock=lambda: t[0])


def test_keys_are_fetched_once_and_reused(jwks_a):
    idp, t = FakeIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    for step in range(5):
        t[0] += 60
        assert cache.signing_key("kid-a", "RS256").key_id == "kid-a", f"lookup {step} finds the cached key"
    assert idp.calls == 1, "a known kid is served from the cache without refetching the JWKS"


def test_unknown_kid_triggers_one_refetch_and_a_rotated_key_is_found_at_once(jwks_a, jwks_b):
    idp, t = FakeIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")
    t[0] += 60
    idp.keys = [jwks_b, jwks_a]  # the IdP rotates
    assert cache.signing_key("kid-b", "RS256").key_id == "kid-b", "the rotated key is picked up by the refetch"
    assert idp.calls == 2, "an unknown kid causes exactly one refetch"


def test_unknown_kid_that_stays_unknown_is_refused_after_one_refetch(jwks_a):
    idp, t = FakeIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")
    t[0] += 60
    with pytest.raises(InvalidIdToken) as caught:
        cache.signing_key("forged-kid", "RS256")
    assert caught.value.check == "kid", "a kid the IdP does not publish is refused as 'kid'"
    assert idp.calls == 2, "one refetch, not more, for an unknown kid"


def test_second_unknown_kid_within_5_seconds_causes_no_new_fetch(jwks_a):
    idp, t = FakeIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")
    t[0] += 60
    with pytest.raises(InvalidIdToken):
        cache.signing_key("forged-1", "RS256")
    calls = idp.calls
    t[0] += 4.9
    with pytest.raises(InvalidIdToken):
        cache.signing_key("forged-2", "RS256")
    assert idp.calls == calls, "a stream of forged kids cannot make us refetch more than once per 5 s"


def test_unknown_kid_after_5_seconds_may_refetch_again(jwks_a, jwks_b):
    idp, t = FakeIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")
    t[0] += 60
    with pytest.raises(InvalidIdToken):
        cache.signing_key("kid-b", "RS256")
    calls = idp.calls
    idp.keys = [jwks_b]
    t[0] += 5
    assert cache.signing_key("kid-b", "RS256").key_id == "kid-b", "after 5 s an unknown kid refetches again"
    assert idp.calls == calls + 1, "exactly one more fetch after the 5 s pause"


def test_unknown_kid_right_after_the_first_fetch_does_not_fetch_twice(jwks_a):
    idp, t = FakeIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    with pytest.raises(InvalidIdToken):
        cache.signing_key("forged", "RS256")
    assert idp.calls == 1, "the first fetch already answered; refetching in the same instant would be wasted"


def test_twenty_concurrent_misses_of_the_same_kid_cause_at_most_one_fetch(jwks_a, jwks_b):
    idp, t = FakeIdp(jwks_a, delay=0.05), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")
    t[0] += 60
    idp.keys = [jwks_b, jwks_a]
    calls_before = idp.calls
    barrier = threading.Barrier(20)
    found: list[str] = []
    errors: list[BaseException] = []

    def miss() -> None:
        barrier.wait()
        try:
            found.append(cache.signing_key("kid-b", "RS256").key_id)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=miss) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors, f"every thread finds the rotated key: {errors!r}"
    assert found == ["kid-b"] * 20, "all 20 threads get the rotated key"
    assert idp.calls - calls_before <= 1, f"20 concurrent misses caused {idp.calls - calls_before} fetches"


def test_keys_are_refreshed_after_24_hours(jwks_a, jwks_b):
    idp, t = FakeIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")
    t[0] += 86400 - 1
    cache.signing_key("kid-a", "RS256")
    assert idp.calls == 1, "within 24 h a known kid needs no fetch"
    idp.keys = [jwks_b]  # the IdP retired kid-a
    t[0] += 1
    with pytest.raises(InvalidIdToken):
        cache.signing_key("kid-a", "RS256")
    assert idp.calls >= 2, "after 24 h the JWKS is fetched again, and a retired key stops verifying"


def test_keys_marked_use_enc_are_ignored(jwks_a):
    enc = jwk("kid-enc", use="enc")
    idp, t = FakeIdp(enc, jwks_a), [1000.0]
    cache = cache_for(idp, t)
    with pytest.raises(InvalidIdToken) as caught:
        cache.signing_key("kid-enc", "RS256")
    assert caught.value.check == "kid", "an encryption key is never used to verify a signature"
    assert cache.signing_key(None, "RS256").key_id == "kid-a", "without kid, the one signing key is chosen"


def test_keys_that_cannot_be_parsed_are_skipped_and_the_others_still_serve(jwks_a):
    broken = {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}
    unknown_type = {"kty": "XYZ", "kid": "odd"}
    idp, t = FakeIdp(broken, unknown_type, jwks_a), [1000.0]
    cache = cache_for(idp, t)
    assert cache.signing_key("kid-a", "RS256").key_id == "kid-a", "a broken key does not take the set down"


def test_rotation_right_after_a_routine_fetch_is_picked_up_at_once(jwks_a, jwks_b):
    idp, t = FakeIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")  # a routine fetch
    t[0] += 1
    idp.keys = [jwks_b, jwks_a]  # the IdP rotates a second later
    assert cache.signing_key("kid-b", "RS256").key_id == "kid-b", \
        "only refetches caused by unknown kids are rate-limited, so a rotation never waits 5 s"
    assert idp.calls == 2


def test_keys_held_while_another_callers_re_read_ends_are_not_taken_as_just_fetched(jwks_a, jwks_b):
    """B's lookup gets the held keys while A's daily re-read is under way; A's re-read ends before B
    looks at what it got. B's keys are still the old ones: an unknown kid must refetch, not be
    refused (when "fetched" was counted by reads, B took its old keys for new)."""
    entered, release = threading.Event(), threading.Event()
    idp, t = FakeIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")
    t[0] += 86400 + 1  # the keys are due for their daily re-read

    def slow_fetch() -> dict:
        entered.set()
        release.wait(5)
        return FakeIdp.fetch(idp)

    cache._fetch = slow_fetch
    reader = threading.Thread(target=cache.warm)  # A leads the re-read and waits in it
    reader.start()
    assert entered.wait(5)
    idp.keys = [jwks_b, jwks_a]  # the IdP rotated
    held_get = cache._keys.get

    def get_then_let_the_re_read_end():
        keys = held_get()  # the held keys: a re-read is under way
        release.set()
        reader.join(5)
        return keys

    cache._keys.get = get_then_let_the_re_read_end
    assert cache.signing_key("kid-b", "RS256").key_id == "kid-b"


class FlakyIdp(FakeIdp):
    """A jwks_uri that can go down: a fetch then fails as Runtime._fetch_jwks reports it."""

    down = False

    def fetch(self) -> dict:
        if self.down:
            with self._lock:
                self.calls += 1
            raise DependencyUnavailable("idp", "GET https://idp.test/keys: ConnectionError")
        return super().fetch()


def test_a_failed_daily_refresh_keeps_the_keys_held_and_tries_again_a_minute_later(jwks_a, jwks_b):
    idp, t = FlakyIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")
    idp.down = True
    t[0] += 86400
    assert cache.signing_key("kid-a", "RS256").key_id == "kid-a", "the keys held serve during the outage"
    assert idp.calls == 2, "the daily refresh was tried"
    for _ in range(5):
        t[0] += (STALE_RETRY_SECONDS - 1) / 5
        cache.signing_key("kid-a", "RS256")
    assert idp.calls == 2, "no new try within the retry interval: the outage does not cost each callback a timeout"
    t[0] += 1
    cache.signing_key("kid-a", "RS256")
    assert idp.calls == 3, "tried again once the interval passed"
    idp.down, idp.keys = False, [jwks_b]
    t[0] += STALE_RETRY_SECONDS
    assert cache.signing_key("kid-b", "RS256").key_id == "kid-b", "the IdP back: the refresh takes its keys"
    with pytest.raises(InvalidIdToken):
        cache.signing_key("kid-a", "RS256")


def test_keys_a_week_past_their_refresh_stop_serving_while_the_idp_stays_down(jwks_a):
    idp, t = FlakyIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    cache.signing_key("kid-a", "RS256")
    idp.down = True
    t[0] += 86400 + MAX_STALE_SECONDS - 1
    cache.signing_key("kid-a", "RS256")
    t[0] += STALE_RETRY_SECONDS + 1
    with pytest.raises(DependencyUnavailable):
        cache.signing_key("kid-a", "RS256")


def test_the_first_fetch_failing_is_not_kept(jwks_a):
    idp, t = FlakyIdp(jwks_a), [1000.0]
    cache = cache_for(idp, t)
    idp.down = True
    with pytest.raises(DependencyUnavailable):
        cache.signing_key("kid-a", "RS256")
    idp.down = False
    assert cache.signing_key("kid-a", "RS256").key_id == "kid-a", "the next request fetches again at once"


@pytest.mark.parametrize("doc", [{"keys": None}, {"keys": 5}, {"keys": {"kid": "x"}}, [], {}, {"keys": []},
                                 {"keys": [{"kty": "RSA", "kid": "bad"}]}],
                         ids=["null", "number", "object", "list", "empty", "no-keys", "no-usable-key"])
def test_a_jwks_without_a_usable_key_is_the_idp_unavailable_and_keys_held_serve_on(jwks_a, doc):
    """A 200 that is not a key set (a publishing glitch, a wrong endpoint) must neither crash the login
    (a 500) nor replace the keys held with none (every login a 401 until the next refresh)."""
    t = [1000.0]
    answers = [{"keys": [jwks_a]}, doc]
    cache = JwksCache(fetch=lambda: answers.pop(0) if len(answers) > 1 else answers[0], clock=lambda: t[0])
    assert cache.signing_key("kid-a", "RS256").key_id == "kid-a"
    t[0] += 86400 + 1  # the daily refresh is due and gets `doc`
    assert cache.signing_key("kid-a", "RS256").key_id == "kid-a", "the keys held still verify"
    cold = JwksCache(fetch=lambda: doc, clock=lambda: t[0])
    with pytest.raises(DependencyUnavailable) as caught:
        cold.signing_key("kid-a", "RS256")
    assert caught.value.status == 503 and "JWKS" in caught.value.detail


def test_an_rsa_key_under_2048_bits_is_not_used(jwks_a):
    """RFC 7518 3.3: RS*/PS* keys are 2048 bits or more. A factorable IdP key would let anyone mint ID
    tokens: it is skipped like any key we cannot use; the good one still serves."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    weak_jwk = {**RSAAlgorithm.to_jwk(weak.public_key(), as_dict=True), "kid": "weak"}
    cache = JwksCache(fetch=lambda: {"keys": [weak_jwk, jwks_a]}, clock=lambda: 1000.0)
    assert cache.signing_key("kid-a", "RS256").key_id == "kid-a"
    with pytest.raises(InvalidIdToken):
        cache.signing_key("weak", "RS256")


def test_a_key_declaring_alg_none_is_skipped_and_the_others_still_serve(jwks_a):
    """PyJWT raises NotImplementedError (not a PyJWKError) for a JWK whose `alg` is "none": one such key
    beside the real one must not take the set down (every login a 500), cold or at the daily refresh."""
    odd = {**jwk("odd"), "alg": "none"}
    t = [1000.0]
    cold = JwksCache(fetch=lambda: {"keys": [jwks_a, odd]}, clock=lambda: t[0])
    assert cold.signing_key("kid-a", "RS256").key_id == "kid-a"
    with pytest.raises(InvalidIdToken):
        cold.signing_key("odd", "RS256")
    answers = [{"keys": [jwks_a]}, {"keys": [jwks_a, odd]}]
    warm = JwksCache(fetch=lambda: answers.pop(0) if len(answers) > 1 else answers[0], clock=lambda: t[0])
    assert warm.signing_key("kid-a", "RS256").key_id == "kid-a"
    t[0] += 86400 + 1
    assert warm.signing_key("kid-a", "RS256").key_id == "kid-a", "the refreshed set still verifies"
    assert not answers[1:], "the daily refresh did read the set with the odd key"


def _private_jwks() -> list[dict]:
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm
    strong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    curve = ec.generate_private_key(ec.SECP256R1())
    return [{**RSAAlgorithm.to_jwk(strong, as_dict=True), "kid": "rsa-private"},
            {**RSAAlgorithm.to_jwk(weak, as_dict=True), "kid": "rsa-private-weak"},
            {**ECAlgorithm.to_jwk(curve, as_dict=True), "kid": "ec-private", "alg": "ES256"}]


@pytest.mark.parametrize("private", _private_jwks(), ids=lambda key: key["kid"])
def test_a_key_published_with_its_private_half_is_never_used(jwks_a, private):
    """A JWK carrying private members (RSA `d`, `p`, ...; EC `d`) is a key anyone who read the JWKS holds:
    a token it verifies proves nothing. It is skipped (not reduced to its public half), whatever its size,
    and the real key still serves."""
    assert "d" in private
    cache = JwksCache(fetch=lambda: {"keys": [private, jwks_a]}, clock=lambda: 1000.0)
    assert cache.signing_key("kid-a", "RS256").key_id == "kid-a"
    alg = private.get("alg", "RS256")
    with pytest.raises(InvalidIdToken) as caught:
        cache.signing_key(private["kid"], alg)
    assert caught.value.check == "kid"


def test_the_idp_metadata_a_week_past_its_refresh_stops_serving_while_the_idp_stays_down():
    """The metadata (shared/runtime.py) follows the keys' rule: a failed daily refresh keeps it, for at
    most a week; its endpoints, like a retired key, must not be trusted for ever."""
    from shared.runtime import METADATA_MAX_AGE, Runtime

    class Discovering(Runtime):  # discovery of an IdP that can go down, as discover() reports it
        down, calls = False, 0

        def _discover(self):
            self.calls += 1
            if self.down:
                raise DependencyUnavailable("idp", "GET https://idp.test/.well-known/openid-configuration failed")
            return f"metadata #{self.calls}"

    runtime, t = Discovering({}), [1000.0]
    runtime._metadata._clock = lambda: t[0]  # its clock is time.monotonic: the test's own instead
    assert runtime.metadata() == "metadata #1"
    runtime.down = True
    t[0] += METADATA_MAX_AGE + MAX_STALE_SECONDS - 1
    assert runtime.metadata() == "metadata #1", "held past its refresh while the IdP is down, within the week"
    assert runtime.calls == 2
    t[0] += STALE_RETRY_SECONDS + 1
    with pytest.raises(DependencyUnavailable):
        runtime.metadata()
    assert runtime.calls == 3, "it was tried again, and the error stands"
