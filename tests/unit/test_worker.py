"""The worker's one-time preparation (shared/worker.py)."""

from __future__ import annotations

import gc
import logging

from shared.worker import QUIET_LOGGERS, ready


def test_ready_keeps_azure_cores_per_request_http_logging_out_of_info_logs():
    logger = logging.getLogger(QUIET_LOGGERS[0])
    logger.setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.INFO)  # what the Functions worker sets
    try:
        ready()
        assert not logger.isEnabledFor(logging.INFO), "azure-core's request/response records are not written"
        assert logger.isEnabledFor(logging.WARNING), "its warnings still are"
        assert gc.get_freeze_count() > 0, "what was imported is frozen out of the collector's generations"
    finally:
        gc.unfreeze()
