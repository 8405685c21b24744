"""A value fetched from a dependency (the IdP's metadata and keys, a Key Vault secret, directory
sync's token), held and re-read, single-flight.

- Nothing held: one caller fetches; callers arriving meanwhile wait for that attempt and share its
  value or its error (a dependency that hangs costs each of them one timeout, not one each in
  turn). A failure is not kept: the next call after it tries again.
- A value held and due for its re-read: exactly one caller re-reads, with no lock held while it
  waits on the dependency; everyone else gets the held value at once.
- The re-read fails with DependencyUnavailable: the held value serves on (a secret or a key does not
  stop being valid because its source is down; refusing everyone would turn that outage into a
  sign-in outage), and the dependency is tried again every min(fresh_for, retry_seconds), not on
  every call. Held `max_stale_seconds` past its freshness, it no longer serves (the error stands):
  a key the IdP retired must not verify for ever. Any other error (a secret deleted, access
  removed: an admin's doing, not an outage) is raised, and the held value serves no one from then on,
  also when a refresh() met it while the value was fresh, or a later re-read meets an outage, until
  a read succeeds.

A warm hit is an attribute read and a clock comparison: no lock, no thread handoff."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from .errors import DependencyUnavailable

log = logging.getLogger("portal_sso")
T = TypeVar("T")


class _Held(Generic[T]):
    __slots__ = ("due", "fresh_until", "value")

    def __init__(self, value: T, fresh_until: float, due: float):
        self.value = value
        self.fresh_until = fresh_until  # when it stopped being fresh (the stale limit counts from here)
        self.due = due  # when the next read may start: fresh_until, or later after a failed re-read


class _Read:
    """One read in flight; whoever waits for it shares what it gave."""

    __slots__ = ("done", "error", "forced", "kept", "value")

    def __init__(self, *, forced: bool = False) -> None:
        self.forced = forced  # started by refresh(): what it reads was asked for after a refusal
        self.done = threading.Event()
        self.value = None
        self.error: BaseException | None = None
        self.kept = False  # it failed and the held value serves on (`value` is that value)

    def outcome(self, *, keep: bool):
        self.done.wait()  # the reader always sets it: its fetch is bounded by the dependency's timeout
        if self.error is None or (keep and self.kept):
            return self.value
        raise self.error


class Refreshing(Generic[T]):
    """`fetch()` gives the value or raises; `fresh_for` (seconds, or a function of the value) is how
    long a value is used before it is re-read. `service` and `subject` name it in the log lines
    (`{service}.stale {subject} ...` once per outage, `{service}.recovered {subject}`);
    `unavailable_since` (UTC) and `unavailable_detail` say that a held value is serving past a failed
    re-read (the health check turns amber)."""

    def __init__(self, fetch: Callable[[], T], service: str, subject: str, *,
                 fresh_for: float | Callable[[T], float], retry_seconds: float,
                 max_stale_seconds: float = math.inf, clock: Callable[[], float] = time.monotonic):
        self._fetch = fetch
        self._service, self._subject = service, subject
        self._fresh_for = fresh_for if callable(fresh_for) else (lambda _value: fresh_for)
        self._retry, self._max_stale, self._clock = retry_seconds, max_stale_seconds, clock
        self._lock = threading.Lock()  # guards the fields below; never held while fetching
        self._held: _Held[T] | None = None
        self._reading: _Read | None = None
        self._forced_at = -math.inf  # when the last refresh() started a read
        # The last re-read's error when it was no outage (a secret deleted, access removed): the held
        # value then serves no one, even while the next re-read is in flight (raised, not hidden).
        self._refused: BaseException | None = None
        self.reads = 0  # successful fetches
        self.unavailable_since: datetime | None = None
        self.unavailable_detail = ""

    def get(self) -> T:
        held = self._held
        if held is not None and self._clock() < held.due:
            return held.value
        return self._get_due()

    @property
    def stale_limit_ends(self) -> datetime | None:
        """When (UTC) what is held stops serving unless a re-read succeeds first: `max_stale_seconds`
        past its freshness. None: nothing held, or no limit (a Key Vault secret's)."""
        held = self._held
        if held is None or math.isinf(self._max_stale):
            return None
        return datetime.now(UTC) + timedelta(seconds=held.fresh_until + self._max_stale - self._clock())

    def _serves(self, held: _Held | None, now: float) -> bool:
        """Whether what is held may serve while a re-read is under way or failed with an outage: within
        the stale limit, and never after a refusal (an admin's doing: an outage since cannot bring
        the refused value back)."""
        return held is not None and self._refused is None and now < held.fresh_until + self._max_stale

    def peek(self) -> T | None:
        """What is held, without reading or waiting (None: nothing yet)."""
        held = self._held
        return held.value if held is not None else None

    def _get_due(self) -> T:
        with self._lock:
            held, now = self._held, self._clock()
            if held is not None and now < held.due:
                return held.value  # re-read by another caller meanwhile
            read, lead = self._reading, self._reading is None
            if lead:
                read = self._reading = _Read()
            elif self._serves(held, now):
                return held.value  # its re-read is under way: what is held serves meanwhile
        return self._lead(read, keep=True) if lead else read.outcome(keep=True)

    def refresh(self, *, keep: bool = False, not_within: float = 0.0) -> T:
        """Reads now (the held value was refused, or lacks what a caller needs), or shares the read
        already in flight. At most one such read starts per `not_within` seconds; a call within it
        gets get()'s value. When the read fails the error stands, unless `keep` is set: then the held
        value serves on as for a due re-read. A routine re-read in flight may have begun before what
        made the caller ask (a rotation): it is waited for, then read again; only another refresh's
        read is shared."""
        while True:
            with self._lock:
                read, lead = self._reading, False
                if read is None:
                    now = self._clock()
                    if now - self._forced_at < not_within:
                        break  # rate-limited: what get() gives
                    self._forced_at, lead = now, True
                    read = self._reading = _Read(forced=True)
            if lead:
                return self._lead(read, keep=keep)
            if read.forced:
                return read.outcome(keep=keep)
            read.done.wait()  # a routine read: its value may predate what made the caller ask
            if isinstance(read.error, DependencyUnavailable):
                return read.outcome(keep=keep)  # the dependency just failed: not a second timeout
        return self.get()

    def expire(self, *, by: float = 0.0) -> None:
        """Makes the held value due now, as if its time had passed, and `by` seconds more (tests age a
        cache with it)."""
        with self._lock:
            if self._held is not None:
                now = self._clock()
                self._held = _Held(self._held.value, now - by, now)

    def due_within(self, seconds: float) -> None:
        """Makes the held value due within `seconds` (sooner if it already was): what it was made
        into could not be used, so a fix is looked for before its time is up (shared/vault.py)."""
        with self._lock:
            held, due = self._held, self._clock() + seconds
            if held is not None and due < held.due:
                self._held = _Held(held.value, held.fresh_until, due)

    def _lead(self, read: _Read, *, keep: bool) -> T:
        try:
            return self._read(read, keep=keep)
        finally:  # whatever happened, those waiting for this read are let go
            with self._lock:
                self._reading = None
            read.done.set()

    def _read(self, read: _Read, *, keep: bool) -> T:
        try:
            value = self._fetch()
            fresh_for = self._fresh_for(value)
        except BaseException as exc:
            read.error = exc
            with self._lock:
                held, now = self._held, self._clock()
                outage = isinstance(exc, DependencyUnavailable)
                if keep and outage and self._serves(held, now):
                    retry = min(self._fresh_for(held.value), self._retry)
                    self._held = _Held(held.value, held.fresh_until, now + retry)
                    self._stale(exc)
                    read.value, read.kept = held.value, True
                    return held.value
                if not outage and isinstance(exc, Exception):
                    self._refused = exc
                    if held is not None:  # due now: a refresh() may meet the refusal while it is fresh
                        self._held = _Held(held.value, held.fresh_until, now)
            raise
        with self._lock:
            fresh_until = self._clock() + fresh_for
            self._held = _Held(value, fresh_until, fresh_until)
            self._refused = None
            self.reads += 1
            if self.unavailable_since is not None:
                log.info("%s.recovered %s", self._service, self._subject)
                self.unavailable_since, self.unavailable_detail = None, ""
        read.value = value
        return value

    def _stale(self, exc: DependencyUnavailable) -> None:
        if self.unavailable_since is None:
            self.unavailable_since = datetime.now(UTC)
            log.warning("%s.stale %s serving the last good value, next try within %ds: %s", self._service,
                        self._subject, self._retry, exc.detail)
        self.unavailable_detail = exc.detail
