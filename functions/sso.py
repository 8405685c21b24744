"""The SSO routes: login, callback, logout, signed-out (per kind) and the session tokens' JWKS."""

from __future__ import annotations

import azure.functions as func

from shared.callback import CallbackRequest
from shared.login import SsoService
from shared.runtime import get_runtime

from .http import guarded, http_route

bp = func.Blueprint()


def service() -> SsoService:
    return SsoService(get_runtime())


@http_route(bp, "sso/{kind}/login", ["GET"], func.AuthLevel.ANONYMOUS)
def sso_login(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    kind = req.route_params.get("kind", "")
    return guarded(context, lambda cid: service().start_login(
        kind, req.params.get("return_to"), cid, nonce=req.params.get("nonce"), prompt=req.params.get("prompt"),
        cookie_header=req.headers.get("cookie") or "", fetch_dest=req.headers.get("sec-fetch-dest") or ""))


@http_route(bp, "sso/{kind}/callback", ["GET", "POST"], func.AuthLevel.ANONYMOUS)
def sso_callback(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    kind = req.route_params.get("kind", "")

    request = CallbackRequest(method=req.method, content_type=req.headers.get("content-type") or "",
                              body=req.get_body() or b"", query=dict(req.params),
                              cookie_header=req.headers.get("cookie") or "")
    return guarded(context, lambda cid: service().complete_login(kind, request, cid))


@http_route(bp, "sso/{kind}/logout", ["GET"], func.AuthLevel.ANONYMOUS)
def sso_logout(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    kind = req.route_params.get("kind", "")
    return guarded(context, lambda cid: service().logout(kind, cid))


@http_route(bp, "sso/{kind}/signed-out", ["GET", "HEAD"], func.AuthLevel.ANONYMOUS)
def sso_signed_out(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    # Takes nothing from the request but the kind: the IdP's query (state, ...) is ignored.
    kind = req.route_params.get("kind", "")
    return guarded(context, lambda cid: service().signed_out(kind, cid))


@http_route(bp, "sso/jwks.json", ["GET", "HEAD"], func.AuthLevel.ANONYMOUS)
def sso_jwks(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return guarded(context, lambda cid: service().session_jwks(cid))
