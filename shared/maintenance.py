"""Housekeeping run by the timer trigger: abandoned logins and old sign-in events go."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

log = logging.getLogger("portal_sso.maintenance")


def purge(runtime, now: datetime | None = None) -> dict[str, int]:
    """Deletes SsoFlows rows whose 10 minutes are over (logins started and never finished) and
    SignInEvents rows of days before the retention window (SIGNIN_EVENTS_RETENTION_DAYS, default 90).
    Returns how many rows of each went: {"flows": n, "events": m}. Raises ConfigurationError or
    DependencyUnavailable (the timer logs it and tries again at its next run; nothing is lost by
    waiting)."""
    now = now or datetime.now(UTC)
    days = runtime.settings.events_retention_days
    flows = runtime.flows.purge_expired(now)
    events = runtime.events.purge_older_than(days, now)
    log.info("maintenance.purge flows=%s events=%s retention_days=%s", flows, events, days,
             extra={"flows": flows, "events": events, "retention_days": days})
    return {"flows": flows, "events": events}
