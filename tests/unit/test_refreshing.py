"""The rules of shared/refreshing.py that the four caches share, with a fetch function the test gates
(an Event holds it "in flight") and a fake clock."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import pytest

from shared.errors import ConfigurationError, DependencyUnavailable
from shared.refreshing import Refreshing


class Source:
    """A dependency: answers `value`, or raises `error`; `gate` (when set) holds each fetch until opened."""

    def __init__(self) -> None:
        self.value, self.error, self.calls = "v1", None, 0
        self.gate: threading.Event | None = None
        self.started = threading.Event()

    def fetch(self) -> str:
        self.calls += 1
        value = self.value  # what the dependency holds when the read reaches it
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.error is not None:
            raise self.error
        return value


def make(source: Source, t: list[float], **kw) -> Refreshing[str]:
    return Refreshing(source.fetch, "test", "thing", fresh_for=kw.pop("fresh_for", 100.0),
                      retry_seconds=kw.pop("retry_seconds", 10.0), clock=lambda: t[0], **kw)


def in_thread(call) -> tuple[threading.Thread, list]:
    out: list = []

    def run() -> None:
        try:
            out.append(call())
        except Exception as exc:  # collected
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_failed_re_read_keeps_the_value_until_the_retry_interval_and_a_success_clears_the_outage():
    source, t = Source(), [0.0]
    cache = make(source, t)
    assert cache.get() == "v1"
    source.error, t[0] = DependencyUnavailable("key_vault", "down"), 100.0
    assert cache.get() == "v1" and cache.unavailable_since is not None and "down" in cache.unavailable_detail
    t[0] = 109.9
    assert cache.get() == "v1" and source.calls == 2, "no new try within the retry interval"
    source.error, source.value, t[0] = None, "v2", 110.0
    assert cache.get() == "v2" and cache.unavailable_since is None and cache.reads == 2


def held_then_refused(detail: str):
    """A cache that held a value, then met a refusal (not an outage) at its re-read: (source, t, cache)."""
    source, t = Source(), [0.0]
    cache = make(source, t)
    cache.get()
    source.error, t[0] = ConfigurationError([detail]), 100.0
    with pytest.raises(ConfigurationError):
        cache.get()
    return source, t, cache


def test_an_error_that_is_not_an_outage_is_raised_to_every_caller_and_the_next_call_re_reads():
    source, _, cache = held_then_refused("secret deleted")
    with pytest.raises(ConfigurationError):
        cache.get()
    assert source.calls == 3, "not an outage: nothing is held back, each call asks again"
    # Raised, not hidden (RELIABILITY.md): callers arriving while the next re-read is in flight wait for
    # it, instead of getting what was held.
    source.gate = threading.Event()
    source.started.clear()
    leader, led = in_thread(cache.get)
    assert source.started.wait(5)
    during, got = in_thread(cache.get)
    time.sleep(0.2)
    assert not got, "a caller during the re-read waits for it"
    source.gate.set()
    leader.join(5)
    during.join(5)
    assert isinstance(led[0], ConfigurationError) and isinstance(got[0], ConfigurationError), (led, got)
    source.error, source.gate = None, None
    assert cache.get() == "v1", "the next good read serves again"


def test_a_value_past_its_stale_limit_no_longer_serves():
    source, t = Source(), [0.0]
    cache = make(source, t, max_stale_seconds=50.0)
    cache.get()
    source.error, t[0] = DependencyUnavailable("idp", "down"), 149.0
    assert cache.get() == "v1"
    assert cache.stale_limit_ends > datetime.now(UTC), "what the health check reads: still serving (amber)"
    t[0] = 160.0
    with pytest.raises(DependencyUnavailable):
        cache.get()
    assert cache.stale_limit_ends <= datetime.now(UTC), "past its limit: serving no one (red)"
    assert make(Source(), [0.0]).stale_limit_ends is None, "nothing held"
    unlimited = make(Source(), [0.0])
    unlimited.get()
    assert unlimited.stale_limit_ends is None, "no limit (a Key Vault secret's)"


def test_refresh_never_falls_back_on_the_held_value_unless_asked_to():
    source, t = Source(), [0.0]
    cache = make(source, t)
    cache.get()
    source.error = DependencyUnavailable("key_vault", "down")
    with pytest.raises(DependencyUnavailable):
        cache.refresh()  # the IdP refused the held secret: it is no answer
    assert cache.unavailable_since is None and cache.get() == "v1", "a refused refresh changes nothing held"
    assert cache.refresh(keep=True) == "v1", "with keep, the held value serves as for a due re-read"


def test_refresh_at_most_once_per_not_within():
    source, t = Source(), [0.0]
    cache = make(source, t)
    cache.get()
    cache.refresh(not_within=5.0)
    t[0] = 4.9
    cache.refresh(not_within=5.0)
    assert source.calls == 2
    t[0] = 5.0
    cache.refresh(not_within=5.0)
    assert source.calls == 3


def test_waiters_of_a_cold_read_share_its_error_and_the_next_call_tries_again():
    source, t = Source(), [0.0]
    cache = make(source, t)
    source.gate, source.error = threading.Event(), DependencyUnavailable("idp", "timeout")
    leader, led = in_thread(cache.get)
    assert source.started.wait(5)
    waiters = [in_thread(cache.get) for _ in range(5)]
    time.sleep(0.2)  # the waiters reach the read in flight
    source.gate.set()
    for thread, _ in [(leader, led), *waiters]:
        thread.join(5)
    outcomes = [led[0], *(out[0] for _, out in waiters)]
    assert all(outcome is source.error for outcome in outcomes), outcomes
    assert source.calls == 1, "the waiters shared the one attempt"
    source.error, source.gate = None, None
    assert cache.get() == "v1" and source.calls == 2, "a failure is not kept"


def test_during_a_re_read_others_get_the_held_value_and_a_refresh_reads_after_it():
    """A refresh (the held value was refused, or lacks a new kid) must get a value read after it was
    asked: the routine re-read in flight may have started before a rotation, so it waits for that one
    and reads again."""
    source, t = Source(), [0.0]
    cache = make(source, t)
    cache.get()
    source.gate, source.value, t[0] = threading.Event(), "v2", 100.0
    leader, led = in_thread(cache.get)
    assert source.started.wait(5)
    assert cache.get() == "v1", "served at once while the one re-read waits"
    joiner, joined = in_thread(cache.refresh)
    time.sleep(0.2)
    assert not joined, "the refresh waits for the read in flight"
    source.value = "v3"  # rotated after the routine read began
    source.gate.set()
    leader.join(5)
    joiner.join(5)
    assert (led, joined, source.calls) == (["v2"], ["v3"], 3), "the refresh read again, after the routine read"


def test_concurrent_refreshes_share_one_read():
    source, t = Source(), [0.0]
    cache = make(source, t)
    cache.get()
    source.gate, source.value = threading.Event(), "v2"
    first, got_first = in_thread(cache.refresh)
    assert source.started.wait(5)
    others = [in_thread(cache.refresh) for _ in range(4)]
    time.sleep(0.2)
    source.gate.set()
    for thread, _ in [(first, got_first), *others]:
        thread.join(5)
    assert [got_first[0], *(out[0] for _, out in others)] == ["v2"] * 5 and source.calls == 2


def test_a_refresh_that_waited_out_a_routine_read_the_dependency_failed_does_not_try_again_at_once():
    """The dependency just failed: a second read would cost the caller a second timeout in a row."""
    source, t = Source(), [0.0]
    cache = make(source, t)
    cache.get()
    source.gate, source.error, t[0] = threading.Event(), DependencyUnavailable("idp", "down"), 100.0
    source.started.clear()
    leader, led = in_thread(cache.get)
    assert source.started.wait(5)
    kept, got_kept = in_thread(lambda: cache.refresh(keep=True))
    strict, got_strict = in_thread(cache.refresh)
    time.sleep(0.2)
    source.gate.set()
    for thread in (leader, kept, strict):
        thread.join(5)
    assert led == ["v1"] and got_kept == ["v1"], "the held value serves, as for the routine re-read"
    assert isinstance(got_strict[0], DependencyUnavailable), "without keep the outage stands"
    assert source.calls == 2, "one read for all three"


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "portal_sso"]


def _vault_secret(source: Source, t: list[float]):
    from shared.vault import CachedSecret

    class Reader:  # what KeyVaultReader.read gives and raises
        def read(self, name: str):
            return source.fetch()

    return CachedSecret(Reader(), "client-secret", 100.0, clock=lambda: t[0]), "vault", "secret=client-secret", 30


def _idp_keys(source: Source, t: list[float]):
    from shared.jwks import JwksCache
    from tests.unit.test_jwks_cache import jwk

    keys = {"keys": [jwk("kid-a")]}
    source.value = keys
    cache = JwksCache(fetch=source.fetch, max_age_seconds=100.0, clock=lambda: t[0])
    return cache._keys, "idp", "keys", 60


@pytest.mark.parametrize("cache_of", [_vault_secret, _idp_keys], ids=["vault secret", "idp keys"])
def test_an_outage_is_logged_stale_once_and_recovered_once(cache_of, caplog):
    """RELIABILITY.md's log lines of a held value serving through an outage: `{service}.stale {subject}
    serving the last good value ...` once per outage (not once per failed re-read), and
    `{service}.recovered {subject}` when the dependency answers again, as the real caches name them."""
    source, t = Source(), [0.0]
    cache, service, subject, retry = cache_of(source, t)
    held = cache.get()
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        source.error = DependencyUnavailable(service, "it is down")
        for step in range(3):  # three failed re-reads, each a retry interval apart: one outage
            t[0] += 100.0 + retry if step == 0 else retry + 1
            assert cache.get() == held
        assert source.calls == 4
        stale = [m for m in _lines(caplog) if m.startswith(f"{service}.stale ")]
        assert stale == [f"{service}.stale {subject} serving the last good value, next try within {retry}s: "
                         f"{service}: it is down"], _lines(caplog)
        assert not [m for m in _lines(caplog) if ".recovered" in m], "not recovered while it is down"
        source.error = None
        t[0] += retry + 1
        cache.get()
        assert [m for m in _lines(caplog) if ".recovered" in m] == [f"{service}.recovered {subject}"]
        t[0] += 101.0
        cache.get()  # a routine re-read after the recovery: no line
        assert len([m for m in _lines(caplog) if ".recovered" in m or ".stale" in m]) == 2, _lines(caplog)
        source.error = DependencyUnavailable(service, "down again")
        t[0] += 101.0
        cache.get()
        assert [m for m in _lines(caplog) if m.startswith(f"{service}.stale ")][1:] == [
            f"{service}.stale {subject} serving the last good value, next try within {retry}s: {service}: down again"
        ], "a new outage is logged again"


def test_after_a_refusal_an_outage_does_not_bring_the_refused_value_back():
    """An admin's doing (access removed, secret deleted) ends the held value: a later re-read that meets
    an outage must not serve it again (nor report it amber, as if it were only stale)."""
    source, t, cache = held_then_refused("access removed")
    source.error, t[0] = DependencyUnavailable("key_vault", "down"), 101.0
    with pytest.raises(DependencyUnavailable):
        cache.get()
    assert cache.unavailable_since is None, "nothing serves on: this is no stale value"
    with pytest.raises(DependencyUnavailable):
        cache.refresh(keep=True)
    source.error, t[0] = None, 102.0
    assert cache.get() == "v1", "the next good read serves again"


def test_a_refusal_met_by_a_forced_re_read_ends_the_held_value_while_it_is_still_fresh():
    """invalid_client makes the caller refresh() a secret read moments ago; Key Vault answers that it is
    deleted (or access removed). The held value is fresh, but the admin's word stands: get() must not
    hand the refused value out until its time is up."""
    source, t = Source(), [0.0]
    cache = make(source, t)
    cache.get()
    source.error, t[0] = ConfigurationError(["secret deleted"]), 10.0
    with pytest.raises(ConfigurationError):
        cache.refresh()
    with pytest.raises(ConfigurationError):
        cache.get()
    source.error, t[0] = DependencyUnavailable("key_vault", "down"), 11.0
    with pytest.raises(DependencyUnavailable):
        cache.get()
    source.error, source.value, t[0] = None, "v2", 12.0
    assert cache.get() == "v2", "the next good read serves again"
    calls = source.calls
    assert cache.get() == "v2" and source.calls == calls, "and is held again: no read per call"
