"""The `DirectoryEvents` table: one row per SCIM write and per refused SCIM request, written before
the response goes out. Never the token, never a request body."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.data.tables import TableClient, UpdateMode

from ..daylog import event_keys, newest, purge_days_before
from ..tables import storage_errors

_MAX_TEXT = 512  # a userName or reason is cut here: an audit row is no place for a whole payload


@dataclass
class DirectoryEvent:
    correlation_id: str
    operation: str  # e.g. "POST /Users", "PATCH /Users/{id}", "GET /Users"
    status: int
    outcome: str  # "success" or "failure"
    reason: str = "ok"  # "ok", a scimType, or what refused the request (e.g. "unauthorized")
    scim_id: str = ""
    user_name: str = ""
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def entity(self) -> dict:
        return {**event_keys(self.at, self.correlation_id), "At": self.at,
                "CorrelationId": self.correlation_id, "Operation": self.operation[:_MAX_TEXT],
                "Status": self.status, "Outcome": self.outcome, "Reason": self.reason[:_MAX_TEXT],
                "ScimId": self.scim_id[:_MAX_TEXT], "UserName": self.user_name[:_MAX_TEXT],
                "Detail": self.detail[:_MAX_TEXT]}


class DirectoryEvents:
    def __init__(self, table: TableClient):
        self._table = table

    def record(self, event: DirectoryEvent) -> None:
        """Raises DependencyUnavailable when storage refuses the row (the caller answers 503: Entra
        retries, and a write it cannot audit is not acknowledged). Keyed by the event: a repeat writes
        the same row."""
        with storage_errors():
            self._table.upsert_entity(event.entity(), mode=UpdateMode.REPLACE)

    def purge_older_than(self, days: int, now: datetime | None = None) -> int:
        """Deletes rows of days before the retention window (the timer's purge, SignInEvents' window)."""
        return purge_days_before(self._table, days, now)

    def latest(self, days: int = 7) -> dict | None:
        """The newest event of the last `days` days, as stored."""
        return newest(self._table, days)
