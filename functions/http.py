"""Conversions between azure.functions and the host-neutral request/reply of `shared`."""

from __future__ import annotations

import functools
import logging
import uuid
from urllib.parse import parse_qsl

import azure.functions as func

from shared import pages
from shared.errors import InternalError, InvalidParameter, MethodNotAllowed, SsoError

log = logging.getLogger("portal_sso")
MAX_BODY = 64 * 1024  # an authorization response is a few KB; more is not one


def correlation_id(context: func.Context | None) -> str:
    return getattr(context, "invocation_id", None) or str(uuid.uuid4())


def cookies_of(req: func.HttpRequest) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in (req.headers.get("cookie") or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in jar:  # the first of duplicate names is the most specific
            jar[name] = value.strip()
    return jar


def authorization_response(req: func.HttpRequest) -> dict[str, str]:
    """form_post puts the response in the body; a GET callback (query mode) in the query string."""
    if req.method.upper() != "POST":
        return dict(req.params)
    body = req.get_body() or b""
    if len(body) > MAX_BODY:
        raise InvalidParameter(f"body of {len(body)} bytes")
    content_type = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidParameter(f"callback body of type {content_type or 'none'}")
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError as exc:
        raise InvalidParameter("callback body is not UTF-8") from exc


def to_response(reply: pages.Reply) -> func.HttpResponse:
    mimetype, _, rest = reply.content_type.partition(";")
    charset = rest.split("=", 1)[1].strip() if "=" in rest else "utf-8"
    response = func.HttpResponse(body=reply.body, status_code=reply.status, headers=dict(reply.headers),
                                 mimetype=mimetype.strip(), charset=charset)
    for cookie in reply.cookies:
        response.headers.add("Set-Cookie", cookie)
    return response


def guarded(context: func.Context | None, handler) -> func.HttpResponse:
    """Runs a handler; an SsoError or a bug still becomes a proper page with the correlation id."""
    cid = correlation_id(context)
    try:
        return to_response(handler(cid))
    except SsoError as err:
        return to_response(pages.error(err, cid))
    except Exception:
        log.exception("unhandled error correlation_id=%s", cid)
        return to_response(pages.error(InternalError(), cid))


ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def http_route(bp: func.Blueprint, route: str, methods: list[str], auth_level: func.AuthLevel):
    """Registers an HTTP function that answers 405 (with Allow) to the methods it does not serve.
    The trigger takes every method because Azure's host answers 404, not 405, to a known route with
    a wrong method (azure-functions-host#10098)."""

    def register(handler):
        @functools.wraps(handler)
        def function(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
            if req.method.upper() not in methods:
                reply = pages.error(MethodNotAllowed(f"{req.method} {route}"), correlation_id(context))
                reply.headers["Allow"] = ", ".join(methods)
                return to_response(reply)
            return handler(req, context)

        function.served_methods = tuple(methods)  # what tools.host lists at start
        return bp.route(route=route, methods=ALL_METHODS, auth_level=auth_level)(function)

    return register
