"""Directory sync's routes: SCIM 2.0 under /api/scim/v2 (anonymous in Azure: the bearer token is
checked by shared.scim). Every method is taken here; the SCIM service answers 405 itself, with a SCIM
error body."""

from __future__ import annotations

import azure.functions as func

from shared.runtime import get_runtime
from shared.scim.service import ScimHttpRequest, handle

from .http import guarded, http_route

bp = func.Blueprint()
# Every method (None), HEAD, OPTIONS and TRACE too: the service refuses what it does not serve with a SCIM
# body, after the bearer check, with its row (and a 404 when directory sync is off), not the app's HTML 405.
METHODS = None


def _serve(req: func.HttpRequest, context: func.Context, path: str) -> func.HttpResponse:
    request = ScimHttpRequest(method=req.method, path=path, query=dict(req.params), headers=dict(req.headers),
                              body=req.get_body() or b"")
    return guarded(context, lambda cid: handle(get_runtime(), request, cid))


# Every path under /api/scim/v2 reaches the SCIM service, which answers an unknown one with a SCIM 404
# body (SPEC): a catch-all, so /Users/{id}/more is the service's to refuse, not the host's. The root
# has a function of its own: tools.host's catch-all takes a remainder of one character or more.
@http_route(bp, "scim/v2", METHODS, func.AuthLevel.ANONYMOUS)
def scim_root(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _serve(req, context, "/")


@http_route(bp, "scim/v2/{*path}", METHODS, func.AuthLevel.ANONYMOUS)
def scim(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _serve(req, context, f"/{req.route_params.get('path', '')}")
