"""Timer-triggered housekeeping (the logic is shared.maintenance.purge)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.maintenance import purge
from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger("portal_sso")


# Every 15 minutes (NCRONTAB with seconds). Not on startup: a scale-out would start one per instance.
@bp.timer_trigger(schedule="0 */15 * * * *", arg_name="timer", run_on_startup=False)
def purge_expired_rows(timer: func.TimerRequest) -> None:
    if getattr(timer, "past_due", False):
        log.info("maintenance.purge past due: running now")
    purge(get_runtime())  # an exception fails this run (logged by the host); the next run retries
