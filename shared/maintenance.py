"""Housekeeping run by the timer trigger: abandoned logins and old sign-in events go."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from .scim.events import DirectoryEvents
from .tables import DIRECTORY_EVENTS_TABLE

log = logging.getLogger("portal_sso.maintenance")


def purge(runtime, now: datetime | None = None) -> dict[str, int]:
    """Deletes SsoFlows rows whose 10 minutes ended over an hour ago (logins never finished) and
    SignInEvents and DirectoryEvents rows of days before the retention window
    (SIGNIN_EVENTS_RETENTION_DAYS, default 90). Returns how many rows of each went:
    {"flows": n, "events": m, "directory_events": d}. Raises ConfigurationError or
    DependencyUnavailable (the timer logs it and tries again at its next run; nothing is lost by
    waiting)."""
    now = now or datetime.now(UTC)
    days = runtime.settings.events_retention_days
    flows = runtime.flows.purge_expired(now)
    events = runtime.events.purge_older_than(days, now)
    # Directory sync's audit (shared/scim/events.py, no SCIM library) keeps the same window.
    directory = DirectoryEvents(runtime.tables.client(DIRECTORY_EVENTS_TABLE)).purge_older_than(days, now)
    log.info("maintenance.purge flows=%s events=%s directory_events=%s retention_days=%s", flows, events,
             directory, days, extra={"flows": flows, "events": events, "directory_events": directory,
                                     "retention_days": days})
    return {"flows": flows, "events": events, "directory_events": directory}
