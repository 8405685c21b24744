"""This app's local host, a stand-in for ``func start`` (Core Tools' installer downloads a binary, which
cannot run everywhere), on werkzeug's threaded HTTP server and router:

    python -m tools.host [--port 7071] [--host 127.0.0.1] [--cert CERT --key KEY] [--app-dir .]

Like Core Tools it applies ``local.settings.json`` (tools/local_settings.py), imports ``function_app``,
calls ``app.get_functions()`` once and serves the HTTP functions under ``extensions.http.routePrefix`` of
``host.json``: unknown path 404 and wrong method 405 (the app's own pages, functions/http.py; ``Allow`` the
methods the function serves), no function keys asked, plain HTTP unless given a certificate. Timer
functions are listed, not run.

It serves what this app uses, nothing more: ``{name}`` route parameters and a catch-all ``{*name}``
(one or more segments; matched case-sensitively, where Azure ignores case), a function taking the
request and ``context`` and returning a ``func.HttpResponse``. An exception in a function is a 500
whose traceback goes to the log only; the access log never shows the query string, which carries
authorization codes. A request it gives no function (a body over Azure's 100 MB: 413; a request line,
request target, header line, Content-Length, chunked body or Host it cannot read, not exactly one Host in
HTTP/1.1, or an absolute-form target whose host is not one by the Host rule: 400) gets the app's error
page with the app's headers; the function is picked by the path alone, never by the Host header.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlsplit

import azure.functions as func
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    MethodNotAllowed,
    NotFound,
    RequestEntityTooLarge,
    default_exceptions,
)
from werkzeug.routing import Map, PathConverter, Rule
from werkzeug.serving import DechunkedInput, ThreadedWSGIServer, WSGIRequestHandler, load_ssl_context
from werkzeug.wrappers import Request, Response

from shared import pages
from shared.config import log_value, public_base_url
from shared.errors import InvalidRequest
from shared.worker import quiet_loggers
from tools.arguments import whole_number
from tools.local_settings import load_local_settings, local_http_port, settings_path

LOG = logging.getLogger("tools.host")
DEFAULT_PORT = 7071
MAX_REQUEST_BODY = 100 * 1024 * 1024  # what Azure's front end takes (above it: 413)
# The server sets these from the body it sends; a function's own values would only confuse the client.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class RequestTooLarge(InvalidRequest):
    """A body over MAX_REQUEST_BODY: the host's own answer, as Azure's front end gives it."""

    status = 413
    reason = "request_too_large"
    message = "The request's body is larger than the 100 MB this app accepts."


def route_prefix(app_dir: Path) -> str:
    """``extensions.http.routePrefix`` of ``app_dir/host.json`` without slashes; ``api`` when unset."""
    path = Path(app_dir) / "host.json"
    data = json.loads(path.read_text(encoding="utf-8-sig")) if path.is_file() else {}
    prefix = ((data.get("extensions") or {}).get("http") or {}).get("routePrefix")
    return "api" if prefix is None else str(prefix).strip("/")


def _methods(function: Any) -> list[str]:
    """The trigger's methods (none: every method)."""
    return [str(getattr(method, "value", method)).upper() for method in function.get_trigger().methods or ()]


def _served(function: Any) -> list[str]:
    """The methods a function serves: functions/http.py's triggers take every method and answer 405
    themselves to all but these (Azure would answer 404), so they say which; else the trigger's."""
    return list(getattr(function.get_user_function(), "served_methods", None) or _methods(function))


class _Remainder(PathConverter):
    """`{*name}`: the rest of the path as it is. Werkzeug's `path` wants a first character other than
    `/`, so /api/scim/v2//Users was the host's 404, never the SCIM service's (bearer check, SCIM 404, row)."""

    regex = ".+"
    part_isolating = False  # werkzeug would infer True from a regex without "/": one segment only


def _rule(template: str, prefix: str, function: Any) -> Rule:
    path = "/" + "/".join(part for part in (prefix, template.strip("/")) if part)
    rule_path = re.sub(r"\{\*(\w+)\}", r"<remainder:\1>", re.sub(r"\{(\w+)\}", r"<\1>", path))
    if "{" in rule_path or "}" in rule_path:
        raise ValueError(f"route {template!r}: tools.host serves {{name}} and {{*name}} parameters only")
    return Rule(rule_path, endpoint=function, methods=_methods(function) or None)


def _app_page(name: str) -> Any:
    """One of this project's own error pages (functions/http.py): `not_found_response` for a path no
    function serves, `method_not_allowed_response` for a method no trigger takes; None (werkzeug's
    plain page) for an app directory without it."""
    try:
        from functions import http
    except ImportError:
        return None
    return getattr(http, name, None)


class FunctionHost:
    """The WSGI app that routes requests to the HTTP functions of a ``func.FunctionApp``."""

    def __init__(self, function_app: func.FunctionApp, prefix: str = "api") -> None:
        self.not_found = _app_page("not_found_response")
        self.method_not_allowed = _app_page("method_not_allowed_response")
        rules, self.other_functions = [], []
        for function in function_app.get_functions():
            trigger = function.get_trigger()
            if trigger.get_binding_name() != "httpTrigger":
                self.other_functions.append(f"{function.get_function_name()}: {trigger.get_binding_name()}")
                continue
            rules.append(_rule(trigger.route or function.get_function_name(), prefix, function))
        # No redirects for a trailing or doubled slash: Azure has none, and they would echo the path.
        self.routes = Map(rules, strict_slashes=False, merge_slashes=False, converters={"remainder": _Remainder})

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.perf_counter()
        request = Request(environ)
        # The path alone picks the function: bind_to_environ would also read the Host header, and refuse
        # one it cannot IDNA-encode (a label over 63 characters) with an exception outside this try.
        routes = self.routes.bind("localhost", path_info=request.path, default_method=request.method)
        try:
            function, params = routes.match()
            response = self.invoke(function, request, params)
        except NotFound:
            response = self.not_found_page(environ)
        except MethodNotAllowed as exc:
            response = self.method_not_allowed_page(environ, routes, exc)
        except RequestEntityTooLarge as exc:
            response = refusal(413, exc.description)
        except (BadRequest, UnicodeError) as exc:  # what the function would be given cannot be read
            response = refusal(400, f"{type(exc).__name__}: {getattr(exc, 'description', exc)}")
        except HTTPException as exc:
            response = exc.get_response(environ)
        with_transport_security(response)  # the host's own answers too
        # The method is any token a client sends (escape bytes too): escaped like every logged value.
        LOG.info("%s %s %d %.1fms", log_value(request.method), quote(request.path), response.status_code,
                 (time.perf_counter() - started) * 1000)
        return response(environ, start_response)

    def not_found_page(self, environ: dict[str, Any]) -> Response:
        if self.not_found is None:
            return NotFound().get_response(environ)
        return self.as_response(self.not_found())

    def method_not_allowed_page(self, environ: dict[str, Any], routes: Any, exc: MethodNotAllowed) -> Response:
        """A method no trigger takes (TRACE, any other token) never reaches the function that would
        answer it: the app's own 405 page here, its Allow the methods that function serves."""
        function, _ = routes.match(method=exc.valid_methods[0])
        served = _served(function)
        if self.method_not_allowed is None:
            return MethodNotAllowed(served).get_response(environ)
        return self.as_response(self.method_not_allowed(environ["REQUEST_METHOD"], function.get_trigger().route,
                                                        served))

    @staticmethod
    def as_response(result: func.HttpResponse) -> Response:
        response = Response(result.get_body(), status=result.status_code, mimetype=result.mimetype)
        # HttpResponseHeaders is werkzeug's Headers: items() yields each Set-Cookie of several.
        for name, value in result.headers.items():
            if name.lower() == "content-type":
                response.headers["Content-Type"] = value
            elif name.lower() not in _HOP_BY_HOP:
                response.headers.add(name, value)
        return response

    @classmethod
    def invoke(cls, function: Any, request: Request, params: dict[str, str]) -> Response:
        binding, user_function, takes_context = _calling(function)
        arguments: dict[str, Any] = {binding: func.HttpRequest(
            method=request.method, url=request.url, headers=dict(request.headers.items()),
            # As Azure's host passes a repeated parameter: its values joined with commas (StringValues);
            # and one whose value is empty not at all (ToRpcHttp skips it: the 3.13 worker does not ask
            # for UseNullableValueDictionaryForHttp), so `?iss=` is no iss in Azure, and so here.
            params={name: joined for name, values in request.args.lists() if (joined := ",".join(values))},
            route_params=params, body=_body(request))}
        if takes_context:
            arguments["context"] = SimpleNamespace(
                invocation_id=str(uuid.uuid4()), function_name=function.get_function_name())
        try:
            result = user_function(**arguments)
            if not isinstance(result, func.HttpResponse):
                raise TypeError(f"returned {type(result).__name__}, not func.HttpResponse")
        except Exception:
            LOG.exception("function %s failed", function.get_function_name())
            return Response("Internal Server Error", status=500, mimetype="text/plain")
        return cls.as_response(result)

    def describe(self, base_url: str) -> list[str]:
        """What Core Tools prints at start: each function with its methods and URL."""
        lines = []
        for rule in sorted(self.routes.iter_rules(), key=lambda rule: rule.endpoint.get_function_name()):
            # functions/http.py takes every method and answers 405 itself (Azure would answer 404): show
            # the methods a function serves.
            function = rule.endpoint
            served = _served(function) or ["*"]
            url = base_url + re.sub(r"<(\w+)>", r"{\1}", re.sub(r"<remainder:(\w+)>", r"{*\1}", rule.rule))
            lines.append(f"  {function.get_function_name()}: [{','.join(sorted(served))}] {url}")
        return lines + [f"  {other} (not run by tools.host)" for other in sorted(self.other_functions)]


@functools.cache
def _calling(function: Any) -> tuple[str, Any, bool]:
    """How a function is called: its request binding's name, the user function, whether it takes
    ``context``. Fixed once the app is built; worked out per request, ``inspect.signature`` alone was a
    tenth of the host's own CPU per callback."""
    user_function = function.get_user_function()
    return (function.get_trigger().name, user_function,
            "context" in inspect.signature(user_function).parameters)


def _body(request: Request) -> bytes:
    """The request's body, RequestEntityTooLarge above MAX_REQUEST_BODY. The handler refuses a Content-Length
    over it; a chunked body has none, and werkzeug stops reading one at max_content_length without a word
    (LimitedStream.readall ends there): one byte more than the limit tells a body that is too large."""
    request.max_content_length = MAX_REQUEST_BODY + 1
    body = request.get_data()
    if len(body) > MAX_REQUEST_BODY:
        raise RequestEntityTooLarge("chunked body over the limit")
    return body


def refusal(status: int, detail: str) -> Response:
    """The host's answer to a request it gives no function: the app's error page, which escapes what it
    shows and names a correlation id (logged with `detail`, which holds nothing the client sent);
    werkzeug's plain page for an app directory without functions/http.py."""
    to_response = _app_page("to_response")
    cid = str(uuid.uuid4())
    LOG.warning("refused: %s correlation_id=%s", detail, cid)
    if to_response is None:
        return default_exceptions[status]().get_response()
    error = RequestTooLarge(detail) if status == 413 else InvalidRequest(detail)
    error.status = status  # http.server's 414, 431 and 505 too
    return FunctionHost.as_response(to_response(pages.error(error, cid, homes=_app_page("home_urls")())))


def with_transport_security(response: Response) -> Response:
    """The app's Strict-Transport-Security rule (functions/http.py) on any answer; none for an app
    directory without it, as with its pages (`_app_page`)."""
    transport_security = _app_page("transport_security")
    for name, value in (transport_security() if transport_security else {}).items():
        response.headers.setdefault(name, value)
    return response


def build_wsgi_app(function_app: func.FunctionApp, prefix: str = "api") -> FunctionHost:
    return FunctionHost(function_app, prefix)


# A header field line (RFC 9112 5.1): a token, a colon at once, then no CR or NUL but its line end.
_FIELD_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\0]*\r?\n")

# Host (RFC 9112 3.2, RFC 3986 3.2.2-3): an IP literal, or a reg-name (an IPv4 address is one), then a port.
_HOST = re.compile(r"(?:\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[-\w.~!$&'()*+,;=:]+)\]"
                   r"|(?:[-\w.~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?", re.ASCII)


# RFC 9112 7.1: chunk-size = 1*HEXDIG, then chunk extensions (BWS ";" ...), which a recipient ignores.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")


class _Dechunked(DechunkedInput):
    """werkzeug's DechunkedInput reading each size line by the RFC: it refused an extension (`6;a=b`,
    which a recipient must ignore) and took what int(line, 16) takes (`0x6`, `+6`, ` 6`), sizes a proxy
    in front reading the RFC does not see. OSError, as werkzeug's: the request's 400."""

    def read_chunk_len(self) -> int:
        line = self._rfile.readline(1000)
        found = _CHUNK_SIZE.fullmatch(line)
        if not found:
            raise OSError("Invalid chunk header")
        return int(found.group(1), 16)


def _http_url(scheme: str, host: str, port: int) -> str:
    """An IPv6 address goes in brackets (RFC 3986 3.2.2): http://[::1]:7071."""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


class _LineRecorder:
    """The connection's reader, keeping the lines http.client reads the headers from (the blank one last)."""

    def __init__(self, rfile: Any) -> None:
        self._rfile, self.lines = rfile, []

    def readline(self, limit: int = -1) -> bytes:
        line = self._rfile.readline(limit)
        self.lines.append(line)
        return line


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler, keeping HTTP/1.1 connections open and without its access log (which shows query
    strings). werkzeug closes every connection because it cannot tell where a body the app left unread
    ends; this handler reads each body before the app runs, so the next request starts where it should."""

    protocol_version = "HTTP/1.1"
    # Buffered writes: werkzeug writes the status line and headers, then the body, then flushes; one
    # buffer makes them one send (one TLS record, one wake-up of the client) instead of two.
    wbufsize = 64 * 1024
    # Each read waits at most this long: a body shorter than its Content-Length, or a client gone
    # silent, frees its thread (and an idle kept-alive connection closes) instead of holding it for ever.
    timeout = 60

    def setup(self) -> None:
        super().setup()
        # werkzeug writes the headers and the body apart: on a kept-alive connection, Nagle's algorithm
        # then holds the body until the client's delayed ACK (~40 ms) unless small writes go at once.
        with suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:  # http.server's own answers (400, 414, 505) too, before the next request is read
            with suppress(OSError, ValueError):
                self.wfile.flush()

    def parse_request(self) -> bool:
        """http.server's parse, then a 400 (and close) for a header line that is not one field: its parser
        (http.client.parse_headers) stops at a line without a colon and drops every header after it,
        Content-Length included, so the body would be read as a next request; it splits a line at a bare
        CR, which a proxy in front reads as one field (RFC 9112 2.2, 5.1, 5.2; RFC 9110 5.5)."""
        reader, self.rfile = self.rfile, _LineRecorder(self.rfile)
        try:
            if not super().parse_request():
                return False
            lines = self.rfile.lines
        finally:
            self.rfile = reader
        if self.request_version == "HTTP/0.9":  # a two-word GET: no headers, no status line in the answer
            self.send_error(505, "HTTP/0.9")
            return False
        if self.headers.defects or not all(map(_FIELD_LINE.fullmatch, lines[:-1])):
            self.send_error(400, "A header line that is not one field")
            return False
        hosts = [value.strip(" \t") for value in self.headers.get_all("Host", [])]
        # RFC 9112 3.2: one Host of uri-host [":" port], which HTTP/1.1 must send; two could name two
        # hosts, one to a proxy in front and the other here.
        if len(hosts) > 1 or not all(map(_HOST.fullmatch, hosts)) or (not hosts and self._version() >= (1, 1)):
            self.send_error(400, "Host missing, repeated or not a host")
            return False
        # The target as werkzeug's environ reads it: its urlsplit raised ValueError on a stray bracket (no
        # answer, a traceback). An absolute-form target's authority is the request's host (RFC 9112 3.2.2;
        # werkzeug makes it HTTP_HOST), so it meets the Host rule too.
        try:
            target = urlsplit(self.path)
        except ValueError:
            target = None
        if target is None or (target.scheme and target.netloc and not _HOST.fullmatch(target.netloc)):
            self.send_error(400, "A request target that is not a path, or whose host is not a host")
            return False
        return True

    def run_wsgi(self) -> None:
        # RFC 9112 5: the whitespace around a field value is not part of it.
        lengths = [value.strip(" \t") for value in self.headers.get_all("Content-Length", ["0"])]
        length = lengths[0]
        if len(lengths) > 1 and lengths.count(length) != len(lengths):
            # The body would end at the first for this handler and at the last for werkzeug's environ: the
            # rest of it taken for a next request (smuggling). RFC 9112 6.3: 400, then close.
            return self.send_error(400, "Differing Content-Length headers")
        codings = [coding.strip(" \t").lower() for value in self.headers.get_all("Transfer-Encoding", [])
                   for coding in value.split(",")]
        chunked = bool(codings)
        if chunked and codings != ["chunked"]:
            # werkzeug de-chunks when "chunked" is among them, and reads by Content-Length when it is not:
            # `gzip` alone ran the function on a body whose end this host cannot know. RFC 9112 6.3: chunked
            # not last is a 400, then close; 6.1: a coding the server does not understand, 501.
            return self.send_error(501 if codings[-1] == "chunked" else 400, "A Transfer-Encoding other than chunked")
        digits = length.isascii() and length.isdigit()  # RFC 9110: 1*DIGIT ('\u00b2'.isdigit() is True)
        if not chunked and (not digits or len(length.lstrip("0")) > len(str(MAX_REQUEST_BODY))
                            or int(length) > MAX_REQUEST_BODY):
            # A huge one: read() would allocate before reading a byte (and int() refuses 4,300 digits).
            # Where the body ends is unknown: send_error closes the connection after the answer, sent
            # before any 100 Continue invites the body.
            return self.send_error(413 if digits else 400,
                                   "Request body too large" if digits else "Bad Content-Length")
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":  # as werkzeug tests it
            if self._version() >= (1, 1):  # RFC 9110 10.1.1: an HTTP/1.0 client's is ignored
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before reading the body, not after
                self.wfile.flush()
            del self.headers["Expect"]  # werkzeug's run_wsgi would send one after the body is read
        if chunked:
            self.close_connection = True  # werkzeug's own way: read what is there, then close
            return super().run_wsgi()
        connection_file, self.rfile = self.rfile, io.BytesIO(self.rfile.read(int(length)))
        try:
            super().run_wsgi()  # its drain after the response now reads self.rfile, not the next request
        finally:
            self.rfile = connection_file

    def make_environ(self) -> dict:
        environ = super().make_environ()
        if type(environ["wsgi.input"]) is DechunkedInput:  # run_wsgi let only `chunked` alone through
            environ["wsgi.input"] = _Dechunked(environ["wsgi.input"]._rfile)
        return environ

    def _version(self) -> tuple[int, int]:
        """The request's HTTP version as numbers (the string compares "HTTP/01.1" below "HTTP/1.1");
        parse_request has checked its form."""
        major, _, minor = self.request_version.partition("/")[2].partition(".")
        return int(major), int(minor)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every refusal before the app runs, http.server's (a request line or header it cannot parse,
        414, 431, 505) and run_wsgi's (a Content-Length it reads no body by): the same page and headers
        as the host's refusals in the app (`refusal`, `with_transport_security`)."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            # A version parse_request refused (HTTP/2.0: 505) is not taken yet, and a line of one or two
            # words is HTTP/0.9's: the answer would go as to HTTP/0.9, a page without status line or
            # headers (no Strict-Transport-Security). No client of this app speaks HTTP/0.9.
            self.request_version = "HTTP/1.1"
        # Not `message`: http.server's echoes the request line, query and all.
        response = with_transport_security(refusal(code, f"{code} before the app ran, from {self.address_string()}"))
        self.send_response(code)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.get_data())

    def handle_expect_100(self) -> bool:
        """http.server's parse_request would send 100 Continue here, before run_wsgi can refuse the body
        (and then run_wsgi sent a second one): run_wsgi's is the only one."""
        return True

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() != "connection" or self.close_connection:  # werkzeug always says "close"
            super().send_header(keyword, value)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        # http.server's "code 400, message Bad request syntax (...)" would echo the request line, query
        # and all (send_error above no longer says it; `refusal` logs the refusal once).
        LOG.warning("%s - %s", self.address_string(), "rejected a malformed request" if format.startswith("code")
                    else format % args)


def _server(wsgi_app: Any, host: str, port: int, ssl_context: Any) -> ThreadedWSGIServer:
    server = ThreadedWSGIServer(host, port, wsgi_app, _RequestHandler)
    if ssl_context is not None:
        # Not werkzeug's own wrapping: with do_handshake_on_connect (its default) the handshake runs inside
        # accept(), on the one serving thread and without a timeout, so a client that connects and never
        # starts TLS stops every other. Here it runs at the handler's first read, in its own thread, under
        # its timeout; werkzeug reads ssl_context for the request's scheme and to log TLS errors.
        context = load_ssl_context(*ssl_context) if isinstance(ssl_context, tuple) else ssl_context
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        server.ssl_context = context
    server.connections = set()  # open connections, closed by ServerHandle.stop
    return server


@dataclass
class ServerHandle:
    server: ThreadedWSGIServer
    thread: threading.Thread
    url: str
    port: int

    def stop(self) -> None:
        """Stops serving, open keep-alive connections included."""
        self.server.shutdown()
        self.server.server_close()
        for connection in list(self.server.connections):
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=10)


def serve_in_thread(wsgi_app: Any, host: str = "127.0.0.1", port: int = 0, ssl_context: Any = None) -> ServerHandle:
    """Serves ``wsgi_app`` on a daemon thread (``port=0``: a free one), plain HTTP unless ``ssl_context``
    (werkzeug's: ``(cert_file, key_file)`` or an ``ssl.SSLContext``)."""
    server = _server(wsgi_app, host, port, ssl_context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = _http_url("https" if ssl_context else "http", host, server.server_port)
    return ServerHandle(server, thread, url, server.server_port)


def elsewhere_than_served(public_base_url: str, served: str) -> str | None:
    """What to tell the person when PUBLIC_BASE_URL names another scheme or port than the host serves (the
    redirect URIs are built from it, so the IdP would send the browser back to an address this host does not
    answer); None when they agree or it is not set. Host names are not compared: 127.0.0.1, localhost and a
    bound 0.0.0.0 are all this host."""
    public, here = urlsplit(public_base_url), urlsplit(served)
    try:
        public_port = public.port or {"http": 80, "https": 443}.get(public.scheme)
    except ValueError:  # a port that is not one: the settings check names it
        return None
    if not public_base_url or (public.scheme, public_port) == (here.scheme, here.port):
        return None
    how = ("over HTTPS with --cert and --key (make run's are .devstack/ca/server.pem and .devstack/ca/server-key.pem)"
           if public.scheme == "https" else "over plain HTTP (no --cert)")
    loopback = here.hostname in ("127.0.0.1", "0.0.0.0")
    ours = _http_url(here.scheme, "localhost" if loopback else here.hostname, here.port)
    return (f"PUBLIC_BASE_URL is {public_base_url}, but this host serves {served}: the IdP sends people back to "
            f"redirect URIs built from PUBLIC_BASE_URL, which this host does not answer. Serve it {how} on port "
            f"{public_port}, or set PUBLIC_BASE_URL={ours} (and register its redirect "
            "URIs). A proxy in front that serves PUBLIC_BASE_URL makes this fine.")


def _stop_once(*_: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portal-sso host", description="Serves function_app.py's HTTP "
                                     "functions like `func start` (settings: environment, then local.settings.json).")
    parser.add_argument("--port", type=whole_number(0, 65535),  # a socket takes a bigger one modulo 65536
                        help=f"default: Host.LocalHttpPort, else {DEFAULT_PORT}; 0: any free port")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--cert", help="PEM certificate (chain): serve HTTPS")
    parser.add_argument("--key", help="PEM private key of --cert")
    parser.add_argument("--app-dir", type=Path, default=Path("."), help="where function_app.py is (default .)")
    parser.add_argument("--settings", type=Path, help="the settings file (default: APP_DIR/local.settings.json)")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    if args.settings is not None and not settings_path(args.settings).is_file():
        # local_settings reads a missing file as no settings (Core Tools' way with its default file): one
        # asked for by name is a mistake, not a host to start without them.
        parser.error(f"--settings {settings_path(args.settings)}: no such file")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_loggers()  # as the worker does (shared/worker.py), also before function_app.py is imported
    app_dir = args.app_dir.resolve()
    settings = args.settings or app_dir
    load_local_settings(settings)
    port = args.port if args.port is not None else local_http_port(settings) or DEFAULT_PORT
    sys.path.insert(0, str(app_dir))
    wsgi_app = build_wsgi_app(importlib.import_module("function_app").app, route_prefix(app_dir))
    server = _server(wsgi_app, args.host, port, (args.cert, args.key) if args.cert else None)
    base_url = _http_url("https" if args.cert else "http", args.host, server.server_port)
    if warning := elsewhere_than_served(public_base_url(os.environ), base_url):
        LOG.warning("%s", warning)
    print("\nFunctions:\n", *wsgi_app.describe(base_url), f"\nServing on {base_url} (Ctrl-C to stop)\n",
          sep="\n", flush=True)
    # `make run` and the tests stop the host with SIGTERM: shut down as cleanly as on Ctrl-C, once. A
    # second one (a terminal's Ctrl-C reaches make run's group and make run forwards it) came mid-shutdown:
    # a traceback, or after Python's finalization had put the default action back, death by signal
    # (exit -15). Ignored from the first on: Python leaves an ignored signal ignored when it finalizes.
    signal.signal(signal.SIGTERM, _stop_once)
    with suppress(KeyboardInterrupt):
        server.serve_forever()
    # Stopping already (a terminal's Ctrl-C reaches make run and this host at once, and make run then
    # sends SIGTERM): a second exit mid-shutdown printed "Exception ignored in threading" tracebacks.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
