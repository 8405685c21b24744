"""Event tables kept by UTC day, newest row first (SignInEvents for the login, DirectoryEvents for
directory sync): their keys, the newest row of the last days, and the purge of the days before the
retention window."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from azure.data.tables import TableClient

from .tables import delete_matching, storage_errors

_MAX_MS = 10**13  # RowKeys count down from here, so a day's newest event lists first


def day_key(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def event_json(event) -> str:
    """An event (a dataclass) as JSON, for the log line that stands in for a row storage refused."""
    return json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(event).items()},
                      sort_keys=True)


def event_keys(at: datetime, correlation_id: str) -> dict[str, str]:
    """An event's PartitionKey (its day) and RowKey (newest first, then the correlation id): a write
    repeated after a lost answer writes the same row."""
    ms = int(at.timestamp() * 1000)
    return {"PartitionKey": day_key(at), "RowKey": f"{_MAX_MS - ms:013d}-{correlation_id}"}


def newest(table: TableClient, days: int, where: str = "", parameters: dict | None = None) -> dict | None:
    """The newest row of the last `days` days (matching `where`, an OData filter over `parameters`),
    as stored, or None: one query of one row per day, today first."""
    today = datetime.now(UTC)
    condition = "PartitionKey eq @pk" + (f" and {where}" if where else "")
    with storage_errors():
        for back in range(days):
            rows = table.query_entities(condition, parameters={**(parameters or {}),
                                                               "pk": day_key(today - timedelta(days=back))},
                                        results_per_page=1)
            for row in rows:
                return dict(row)
    return None


def purge_days_before(table: TableClient, days: int, now: datetime | None = None) -> int:
    """Deletes the rows of the days before the last `days` days. Returns how many went."""
    cutoff = day_key((now or datetime.now(UTC)) - timedelta(days=days))
    return delete_matching(table, "PartitionKey lt @cutoff", {"cutoff": cutoff})
