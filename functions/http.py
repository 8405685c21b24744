"""Conversions between azure.functions and the host-neutral request/reply of `shared`."""

from __future__ import annotations

import functools
import logging
import uuid
from urllib.parse import urlsplit

import azure.functions as func

from shared import pages
from shared.config import home_urls as configured_home_urls
from shared.config import log_value, public_base_url
from shared.errors import InternalError, MethodNotAllowed, NotFound, SsoError
from shared.runtime import get_runtime
from shared.transport import serving

log = logging.getLogger("portal_sso")


def correlation_id(context: func.Context | None) -> str:
    return getattr(context, "invocation_id", None) or str(uuid.uuid4())


# A year, this host only: PUBLIC_BASE_URL may be a custom domain whose other subdomains are not ours.
HSTS = "max-age=31536000"


def transport_security() -> dict[str, str]:
    """Strict-Transport-Security whenever the app's public base URL is https://. TLS usually ends in
    front of the app (Azure's front end), so the request's own scheme says nothing. None for a base URL
    the parser cannot read (a stray bracket: ValueError): it goes on every answer, the error pages' own
    included, and the settings check names that value (health 503, the setup page)."""
    try:
        https = urlsplit(public_base_url(get_runtime().env)).scheme == "https"  # the parser lower-cases it
    except ValueError:
        return {}
    return {"Strict-Transport-Security": HSTS} if https else {}


def to_response(reply: pages.Reply) -> func.HttpResponse:
    mimetype, _, rest = reply.content_type.partition(";")
    charset = rest.split("=", 1)[1].strip() if "=" in rest else "utf-8"
    # A lone surrogate (a setting's bytes that were not UTF-8, as Linux hands them over) is written as
    # its escape: strict encoding made every page that shows it a 500, the setup page included.
    body = reply.body.encode(charset, "backslashreplace") if isinstance(reply.body, str) else reply.body
    response = func.HttpResponse(body=body, status_code=reply.status,
                                 headers={**reply.headers, **transport_security()},
                                 mimetype=mimetype.strip(), charset=charset)
    for cookie in reply.cookies:
        response.headers.add("Set-Cookie", cookie)
    return response


def home_urls() -> dict[str, str]:
    """Each kind's portal home, the way back from a page of no kind; none while the settings do not load."""
    try:
        runtime = get_runtime()
        return configured_home_urls(lambda: runtime.settings, runtime.env)
    except Exception:  # a page about a failure must not fail in its turn
        return {}


def guarded(context: func.Context | None, handler) -> func.HttpResponse:
    """Runs a handler; an SsoError or a bug still becomes a proper page with the correlation id, which
    the handler's Azure SDK calls also send (shared.transport.serving)."""
    cid = correlation_id(context)
    try:
        with serving(cid):
            return to_response(handler(cid))
    except SsoError as err:  # a handler's own refusals log theirs; this one is the page's only line
        return to_response(_refused(err, cid))
    except Exception:
        log.exception("unhandled error correlation_id=%s", cid)
        return to_response(pages.error(InternalError(), cid, homes=home_urls()))


def _refused(err: SsoError, cid: str) -> pages.Reply:
    """The page of a request no handler took, and its one log line, which holds the correlation id the
    page names (README: every error page's id finds its line)."""
    reply = pages.error(err, cid, homes=home_urls())
    fields = {"reason": err.reason, "status": reply.status, "correlation_id": cid}
    log.warning("http.refused %s detail=%s", " ".join(f"{k}={log_value(v)}" for k, v in fields.items()),
                log_value(err.detail, quote=True), extra=fields)
    return reply


def not_found_response() -> func.HttpResponse:
    """The app's 404 page for a path no function serves (what tools.host answers there)."""
    return to_response(_refused(NotFound("no function serves this path"), str(uuid.uuid4())))


def method_not_allowed_response(method: str, route: str, served: list[str] | tuple[str, ...],
                                cid: str | None = None) -> func.HttpResponse:
    """The app's 405 page, `Allow` naming the methods the route serves: a function's own answer to a
    method it does not serve, and tools.host's to one no trigger can take (TRACE, any other token)."""
    reply = _refused(MethodNotAllowed(f"{method[:20]} {route}"), cid or str(uuid.uuid4()))
    reply.headers["Allow"] = ", ".join(served)
    return to_response(reply)


def http_route(bp: func.Blueprint, route: str, methods: list[str] | None, auth_level: func.AuthLevel):
    """Registers an HTTP function that answers 405 (with Allow) to the methods it does not serve (None:
    every method reaches the handler). The trigger names no methods, so Azure's host routes every one
    to it: with a list, the host answers any other method with an empty 404 of its own, not a 405
    (azure-functions-host#10098), and a method outside the list (TRACE, PROPFIND) is no route at all.
    A route lists HEAD beside GET (RFC 9110 9.1: the same answer without its body, which the host
    drops) only when a GET changes nothing: a HEAD on the login start would start a login."""

    def register(handler):
        if methods is None:
            function = handler
        else:
            @functools.wraps(handler)
            def function(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
                if req.method.upper() not in methods:
                    return method_not_allowed_response(req.method, route, methods, correlation_id(context))
                return handler(req, context)

            function.served_methods = tuple(methods)  # what tools.host lists at start
        return bp.route(route=route, auth_level=auth_level)(function)

    return register
