"""The worker's one-time preparation (shared/worker.py)."""

from __future__ import annotations

import gc
import logging

from shared.worker import QUIET_LOGGERS, ready


def test_ready_keeps_azure_cores_per_request_http_logging_out_of_info_logs():
    logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    assert logger.name in QUIET_LOGGERS
    logger.setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.INFO)  # what the Functions worker sets
    try:
        ready()
        assert not logger.isEnabledFor(logging.INFO), "azure-core's request/response records are not written"
        assert logger.isEnabledFor(logging.WARNING), "its warnings still are"
        assert gc.get_freeze_count() > 0, "what was imported is frozen out of the collector's generations"
    finally:
        gc.unfreeze()


def test_ready_keeps_msal_out_of_the_logs_even_at_error():
    """MSAL's `logger.exception("Token response is not in json format: %s", resp.text)` would log a
    token answer whole (tests/reliability/test_idp_faults.py shows it end to end)."""
    logging.getLogger("msal").setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.INFO)
    try:
        ready()
        assert not logging.getLogger("msal.oauth2cli.oauth2").isEnabledFor(logging.ERROR)
    finally:
        gc.unfreeze()
