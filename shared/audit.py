"""The `SignInEvents` table: one row per callback, success or failure, written before the response
goes out (after a function returns, Azure may freeze its instance). Nothing secret is stored."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from azure.data.tables import TableClient, UpdateMode

from .daylog import day_key, event_keys, newest, purge_days_before
from .errors import DependencyUnavailable
from .tables import storage_errors

__all__ = ["SignInEvent", "SignInEvents", "day_key"]
# Pauses between the audit insert's attempts: three attempts within a few hundred milliseconds ride
# out a dropped connection or a busy partition without holding the person's sign-in for long. No
# attempt starts after RETRY_BUDGET: an attempt that failed slowly (storage not answering) is not
# repeated, since a repeat would hold the person another read timeout for little chance.
RETRY_DELAYS = (0.05, 0.15)
RETRY_BUDGET = 0.5  # seconds since the first attempt


@dataclass
class SignInEvent:
    correlation_id: str
    kind: str
    outcome: str  # "success" or "failure"
    reason: str  # "ok" or the error's reason code
    status: int
    email: str = ""
    account_id: str = ""
    idp_subject: str = ""
    tenant_id: str = ""
    had_email_claim: bool | None = None
    elapsed_ms: int = 0
    stage: str = "callback"  # "login" for a refused login start; the setup page shows callbacks only
    detail: str = ""  # why it failed, as the log line says it (errors' details name no secret)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _retry_after(err: DependencyUnavailable) -> float:
    """The seconds storage's answer asked for (Retry-After), 0 when it named none or there was no answer."""
    response = getattr(err.__cause__, "response", None)
    try:
        return float(response.headers.get("Retry-After") or 0) if response is not None else 0.0
    except (TypeError, ValueError):  # an HTTP date, or anything else: none that we read
        return 0.0


class SignInEvents:
    def __init__(self, table: TableClient):
        self._table = table

    def record(self, event: SignInEvent) -> None:
        """Writes the row, trying up to len(RETRY_DELAYS) + 1 times within RETRY_BUDGET; raises
        DependencyUnavailable when storage still refuses it (the caller decides). The row is all ours
        and keyed by the event, so a write repeated after a lost answer writes the same row again (PUT,
        idempotent)."""
        entity = {"".join(part.title() for part in key.split("_")): value  # correlation_id -> CorrelationId
                  for key, value in asdict(event).items() if value is not None and key != "at"}
        entity.update({**event_keys(event.at, event.correlation_id), "At": event.at})
        first = time.monotonic()
        for delay in (*RETRY_DELAYS, None):
            try:
                with storage_errors():
                    # Our own bounded retries instead of the SDK's (retry_total=0): a browser is waiting.
                    self._table.upsert_entity(entity, mode=UpdateMode.REPLACE, retry_total=0)
                return
            except DependencyUnavailable as err:
                # Storage's Retry-After (a busy partition's 503) past the budget: asked again by the next
                # request, not sooner, as the SDK's own retries do (transport.RetryBudget).
                wait = max(delay or 0.0, _retry_after(err))
                if delay is None or time.monotonic() - first + wait > RETRY_BUDGET:
                    raise
                time.sleep(wait)

    def latest(self, kind: str, days: int = 7) -> dict | None:
        """The newest callback of this kind in the last `days` days, as stored, or None."""
        return newest(self._table, days, "Kind eq @kind and Stage eq 'callback'", {"kind": kind})

    def purge_older_than(self, days: int, now: datetime | None = None) -> int:
        """Deletes events of days before the retention window. Returns how many rows went."""
        return purge_days_before(self._table, days, now)
