"""The SSO routes: login, callback, logout (per kind) and the session tokens' JWKS."""

from __future__ import annotations

import azure.functions as func

from shared.login import Callback, SsoService
from shared.runtime import get_runtime

from .http import authorization_response, cookies_of, guarded, http_route

bp = func.Blueprint()


def service() -> SsoService:
    return SsoService(get_runtime())


@http_route(bp, "sso/{kind}/login", ["GET"], func.AuthLevel.ANONYMOUS)
def sso_login(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    kind = req.route_params.get("kind", "")
    return guarded(context, lambda cid: service().start_login(kind, req.params.get("return_to"), cid))


@http_route(bp, "sso/{kind}/callback", ["GET", "POST"], func.AuthLevel.ANONYMOUS)
def sso_callback(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    kind = req.route_params.get("kind", "")

    def handle(cid: str):
        try:
            params = authorization_response(req)
        except Exception:
            params = {"error": "invalid_request", "error_description": "the authorization response is malformed"}
        return service().complete_login(kind, Callback(params, cookies_of(req)), cid)

    return guarded(context, handle)


@http_route(bp, "sso/{kind}/logout", ["GET"], func.AuthLevel.ANONYMOUS)
def sso_logout(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    kind = req.route_params.get("kind", "")
    return guarded(context, lambda cid: service().logout(kind, cid))


@http_route(bp, "sso/jwks.json", ["GET"], func.AuthLevel.ANONYMOUS)
def sso_jwks(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return guarded(context, lambda cid: service().session_jwks(cid))
