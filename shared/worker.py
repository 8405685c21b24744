"""The worker's one-time preparation, called by function_app.py once every function is registered.
It must never raise: an exception while function_app.py is imported shows in Azure only as
"no functions found"."""

from __future__ import annotations

import gc
import logging

# Loggers of libraries held to a level (tools.host sets the same):
# - azure-core logs every request and response with full headers at INFO, which is the level the
#   Functions worker sets on the root logger: two records per table call, fourteen per login.
# - MSAL logs a token answer that is not JSON whole, at ERROR with a traceback (oauth2cli/oauth2.py
#   `_obtain_token`): an IdP answering form-encoded would put tokens in the log. Everything MSAL
#   reports reaches us as its result or exception, and our own log line records the failure.
# - urllib3 logs every request's URL, query included, at DEBUG (the level PYTHON_ENABLE_DEBUG_LOGGING
#   gives the root logger): a TABLES_CONNECTION_STRING with a SharedAccessSignature puts the SAS,
#   `sig` and all, in every table call's URL. Its warnings (a pool full, a retry) are kept.
# - azure-core's NetworkTraceLoggingPolicy (`_universal`) logs every header and body unredacted at DEBUG
#   for a client or call given `logging_enable=True` (a Key Vault answer's body is the secret). None is
#   given one; held all the same, so that one added for a day's debugging publishes nothing.
QUIET_LOGGERS = {"azure.core.pipeline.policies.http_logging_policy": logging.WARNING, "msal": logging.CRITICAL,
                 "urllib3": logging.INFO, "azure.core.pipeline.policies._universal": logging.INFO}


def quiet_loggers() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def ready() -> None:
    quiet_loggers()
    # Everything imported so far lives as long as the worker: moved out of the garbage collector's
    # generations, it is never scanned again, which shortens every later collection.
    gc.freeze()
