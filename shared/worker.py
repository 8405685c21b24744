"""The worker's one-time preparation, called by function_app.py once every function is registered.
It must never raise: an exception while function_app.py is imported shows in Azure only as
"no functions found"."""

from __future__ import annotations

import gc
import logging

# azure-core logs every request and response with full headers at INFO, which is the level the
# Functions worker sets on the root logger: two records per table call, fourteen per login.
QUIET_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy",)


def ready() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Everything imported so far lives as long as the worker: moved out of the garbage collector's
    # generations, it is never scanned again, which shortens every later collection.
    gc.freeze()
