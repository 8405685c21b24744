"""Directory sync's routes: SCIM 2.0 under /api/scim/v2 (anonymous in Azure: the bearer token is
checked by shared.scim). Every method is taken here; the SCIM service answers 405 itself, with a SCIM
error body."""

from __future__ import annotations

import azure.functions as func

from shared.runtime import get_runtime
from shared.scim.service import ScimHttpRequest, handle

from .http import guarded, http_route

bp = func.Blueprint()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def _serve(req: func.HttpRequest, context: func.Context, path: str) -> func.HttpResponse:
    request = ScimHttpRequest(method=req.method, path=path, query=dict(req.params), headers=dict(req.headers),
                              body=req.get_body() or b"")
    return guarded(context, lambda cid: handle(get_runtime(), request, cid))


@http_route(bp, "scim/v2", METHODS, func.AuthLevel.ANONYMOUS)
def scim_root(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _serve(req, context, "/")


@http_route(bp, "scim/v2/{endpoint}", METHODS, func.AuthLevel.ANONYMOUS)
def scim_endpoint(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _serve(req, context, f"/{req.route_params.get('endpoint', '')}")


@http_route(bp, "scim/v2/{endpoint}/{resource_id}", METHODS, func.AuthLevel.ANONYMOUS)
def scim_resource(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    params = req.route_params
    return _serve(req, context, f"/{params.get('endpoint', '')}/{params.get('resource_id', '')}")
