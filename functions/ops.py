"""The operator's routes: the setup page and the readiness probe (function keys in Azure)."""

from __future__ import annotations

import azure.functions as func

from shared import diagnostics
from shared.runtime import get_runtime

from .http import guarded, http_route

bp = func.Blueprint()


@http_route(bp, "sso/setup", ["GET", "HEAD"], func.AuthLevel.FUNCTION)
def sso_setup(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return guarded(context, lambda cid: diagnostics.setup(get_runtime(), correlation_id=cid))


@http_route(bp, "health", ["GET", "HEAD"], func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return guarded(context, lambda cid: diagnostics.health(get_runtime()))
