"""A small local host for the function app: a stand-in for Azure Functions Core Tools (``func start``).

Core Tools cannot be installed everywhere (its installer downloads a binary), so the project serves its
v2-model function app with this host, on werkzeug's HTTP server:

    python -m tools.host [--port 7071] [--host 127.0.0.1] [--cert CERT --key KEY] [--app-dir .]

Like Core Tools it
- applies ``local.settings.json`` ``Values`` to the environment, the process environment winning;
- imports ``function_app`` from the app directory and calls ``app.get_functions()`` once;
- serves every HTTP-triggered function under the route prefix of ``host.json``
  (``extensions.http.routePrefix``, default ``api``), with its route template and methods
  (unknown path 404, known path but wrong method 405 with ``Allow``);
- does not ask for function keys, whatever the auth level;
- lists, but does not run, timer and other non-HTTP functions.

An unhandled exception in a function becomes a 500 with the body ``Internal Server Error``; the traceback
goes to the log, never to the client. One access-log line per request names the method, the path
(never the query string, which can carry authorization codes), the status and the time taken.

Differences from the real host worth knowing: every response header is passed through as the function set
it, including several ``Set-Cookie`` headers (the Azure Python worker re-serializes cookies through
``http.cookies.SimpleCookie``); only the trigger, a ``context`` parameter and an HTTP output binding
(``func.Out``) are bound, no other input/output bindings.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import azure.functions as func
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

LOG = logging.getLogger("tools.host")

DEFAULT_PORT = 7071
DEFAULT_ROUTE_PREFIX = "api"
ALL_METHODS = ("GET", "POST", "DELETE", "HEAD", "PATCH", "PUT", "OPTIONS")
_HTTP_TRIGGER = "httpTrigger"
_HTTP_OUTPUT = "http"
# Set by the server from the body it sends; a function's own values would only confuse the client.
_DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


# --------------------------------------------------------------------------------------------------------
# Settings


def _read_local_settings(app_dir: Path) -> dict[str, Any]:
    path = Path(app_dir) / "local.settings.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a JSON object")
    return data


def load_local_settings(app_dir: Path, environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Apply ``Values`` of ``app_dir/local.settings.json`` to ``environ``, like Core Tools does.

    A variable already present in ``environ`` (even empty) is kept: the process environment wins.
    Returns the settings that were applied (name -> value). A missing file applies nothing.
    """
    data = _read_local_settings(app_dir)
    if not data:
        return {}
    if data.get("IsEncrypted"):
        raise SystemExit(
            f"{Path(app_dir) / 'local.settings.json'}: IsEncrypted is true; this host reads plain "
            "settings only (run `func settings decrypt` or set IsEncrypted to false)"
        )
    values = data.get("Values") or {}
    if not isinstance(values, dict):
        raise SystemExit(f"{Path(app_dir) / 'local.settings.json'}: Values must be an object")
    applied: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            LOG.warning("local.settings.json: %s is not a string, number or boolean; ignored", name)
            continue
        if name in environ:
            continue
        environ[name] = text
        applied[name] = text
    return applied


def _local_http_port(app_dir: Path) -> int | None:
    host = _read_local_settings(app_dir).get("Host") or {}
    port = host.get("LocalHttpPort") if isinstance(host, dict) else None
    try:
        return int(port) if port is not None else None
    except (TypeError, ValueError):
        return None


def route_prefix(app_dir: Path) -> str:
    """``extensions.http.routePrefix`` of ``app_dir/host.json`` without surrounding slashes.

    ``api`` when the file or the setting is missing; an empty string is a valid prefix.
    """
    path = Path(app_dir) / "host.json"
    if not path.is_file():
        return DEFAULT_ROUTE_PREFIX
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from exc
    http = ((data or {}).get("extensions") or {}).get("http") or {}
    prefix = http.get("routePrefix", DEFAULT_ROUTE_PREFIX)
    if prefix is None:
        prefix = DEFAULT_ROUTE_PREFIX
    return str(prefix).strip("/")


# --------------------------------------------------------------------------------------------------------
# Route templates (the ASP.NET Core syntax that the Functions host uses, minimally)

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?:true|false)",
    "guid": r"\{?[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}\}?",
}
_SEGMENT_VALUE = r"[^/]+"


@dataclass
class _Param:
    name: str
    pattern: str
    optional: bool = False
    default: str | None = None
    catch_all: bool = False
    constrained: bool = False


def _split_segment(segment: str, template: str) -> list[str | _Param]:
    """Split one path segment into literal strings and parameters."""
    parts: list[str | _Param] = []
    literal = ""
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "{" and segment.startswith("{{", i):
            literal += "{"
            i += 2
            continue
        if ch == "}" and segment.startswith("}}", i):
            literal += "}"
            i += 2
            continue
        if ch != "{":
            literal += ch
            i += 1
            continue
        depth, j = 0, i + 1
        while j < len(segment):
            if segment[j] == "(":
                depth += 1
            elif segment[j] == ")":
                depth = max(depth - 1, 0)
            elif segment[j] == "}" and depth == 0:
                break
            j += 1
        if j >= len(segment):
            raise ValueError(f"route {template!r}: unclosed '{{' in segment {segment!r}")
        if literal:
            parts.append(literal)
            literal = ""
        parts.append(_parse_param(segment[i + 1 : j], template))
        i = j + 1
    if literal:
        parts.append(literal)
    return parts


def _parse_param(text: str, template: str) -> _Param:
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    default = None
    if "=" in text.split(":", 1)[0]:
        text, default = text.split("=", 1)
    optional = text.endswith("?")
    text = text.rstrip("?")
    name, _, constraint_text = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"route {template!r}: a parameter has no name")
    pattern = _SEGMENT_VALUE
    constrained = bool(constraint_text)
    # Only the first recognised constraint narrows the match; regex(...), length(...) and others are
    # ignored and the parameter matches any segment.
    for constraint in re.split(r":(?![^(]*\))", constraint_text) if constraint_text else []:
        if constraint.strip().lower() in _CONSTRAINTS:
            pattern = _CONSTRAINTS[constraint.strip().lower()]
            break
    if catch_all:
        pattern = r".*"
    optional = optional or default is not None or catch_all
    return _Param(name, pattern, optional, default, catch_all, constrained)


@dataclass
class HttpRoute:
    """One HTTP-triggered function as served by this host."""

    function_name: str
    template: str  # the function's route, e.g. "sso/{kind}/login"
    path: str  # with the prefix, e.g. "/api/sso/{kind}/login"
    methods: frozenset[str] | None  # None: every method
    auth_level: str
    function: Any  # azure.functions.Function
    regex: re.Pattern[str] = field(repr=False)
    params: dict[str, _Param] = field(repr=False)
    group_names: dict[str, str] = field(repr=False)  # regex group -> route parameter name
    precedence: tuple[int, ...] = field(repr=False)

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.match(path)
        if not m:
            return None
        values: dict[str, str] = {}
        for group, name in self.group_names.items():
            value = m.group(group)
            if value is None or (value == "" and self.params[name].catch_all):
                default = self.params[name].default
                if default is not None:
                    values[name] = default
                continue
            values[name] = value
        return values

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


def _compile_route(
    template: str, prefix: str
) -> tuple[re.Pattern[str], dict[str, _Param], dict[str, str], tuple[int, ...]]:
    segments = [s for s in prefix.split("/") if s] + [s for s in template.strip("/").split("/") if s]
    regex = "^"
    params: dict[str, _Param] = {}
    groups: dict[str, str] = {}
    precedence: list[int] = []
    for segment in segments:
        parts = _split_segment(segment, template)
        if len(parts) == 1 and isinstance(parts[0], _Param) and parts[0].optional:
            param = parts[0]
            group = f"p{len(groups)}"
            groups[group] = param.name
            params[param.name] = param
            regex += f"(?:/(?P<{group}>{param.pattern}))?"
            precedence.append(5 if param.catch_all else 4)
            continue
        regex += "/"
        rank = 0
        for part in parts:
            if isinstance(part, str):
                regex += re.escape(part)
                continue
            group = f"p{len(groups)}"
            groups[group] = part.name
            params[part.name] = part
            pattern = part.pattern if part.pattern != _SEGMENT_VALUE else r"[^/]+?"
            regex += f"(?P<{group}>{pattern})"
            rank = max(rank, 2 if part.constrained else 3)
            if len(parts) > 1:
                rank = max(rank, 1)
        precedence.append(rank)
    regex += "/?$"
    return re.compile(regex, re.IGNORECASE), params, groups, tuple(precedence)


def _method_names(methods: Iterable[Any] | None) -> frozenset[str] | None:
    if not methods:
        return None
    names = set()
    for method in methods:
        value = method.value if isinstance(method, Enum) else method
        names.add(str(value).upper())
    return frozenset(names)


def _binding_type(binding: Any) -> str:
    try:
        return str(binding.get_binding_name())
    except Exception:
        return str(getattr(binding, "type", "unknown"))


# --------------------------------------------------------------------------------------------------------
# Invocation


class InvocationContext(func.Context):
    """What the Functions worker passes as ``context``."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._thread_local_storage = threading.local()
        self._thread_local_storage.invocation_id = self._invocation_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]
        return self._thread_local_storage

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


class _Out(func.Out):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


def _plain(status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(text, status=status, mimetype="text/plain", headers=list(headers))


def _to_werkzeug_response(result: Any) -> Response:
    if result is None:
        return Response(b"", status=204)
    if isinstance(result, str):
        return Response(result, status=200, mimetype="text/plain")
    if isinstance(result, bytes | bytearray):
        return Response(bytes(result), status=200, mimetype="application/octet-stream")
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function returned {type(result).__name__}, not func.HttpResponse")
    headers: list[tuple[str, str]] = []
    content_type = None
    # HttpResponseHeaders is a werkzeug Headers: items() yields every value of a repeated header.
    for name, value in result.headers.items():
        lower = name.lower()
        if lower in _DROPPED_RESPONSE_HEADERS:
            continue
        if lower == "content-type":
            content_type = value
            continue
        headers.append((name, value))
    if content_type is None:
        mimetype = result.mimetype or "text/plain"
        content_type = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
    response = Response(result.get_body(), status=int(result.status_code), content_type=content_type)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def _safe_path(path: str) -> str:
    return quote(path, safe="/:@!$&'()*+,;=-._~%")


class FunctionHost:
    """The WSGI application that dispatches requests to the HTTP functions of a FunctionApp."""

    def __init__(
        self,
        function_app: Any,
        *,
        prefix: str = DEFAULT_ROUTE_PREFIX,
        function_directory: str | os.PathLike[str] | None = None,
    ) -> None:
        self.prefix = (prefix or "").strip("/")
        self.function_directory = str(function_directory or os.getcwd())
        self.routes: list[HttpRoute] = []
        self.other_functions: list[tuple[str, str]] = []  # (trigger type, function name)
        for fn in function_app.get_functions():
            trigger = fn.get_trigger()
            name = fn.get_function_name()
            if trigger is None or _binding_type(trigger) != _HTTP_TRIGGER:
                kind = _binding_type(trigger) if trigger is not None else "unknown"
                self.other_functions.append((kind.removesuffix("Trigger") or kind, name))
                continue
            template = (trigger.route if trigger.route is not None else name).strip("/")
            regex, params, groups, precedence = _compile_route(template, self.prefix)
            auth = trigger.auth_level
            self.routes.append(
                HttpRoute(
                    function_name=name,
                    template=template,
                    path="/" + "/".join(p for p in (self.prefix, template) if p),
                    methods=_method_names(trigger.methods),
                    auth_level=str(auth.value if isinstance(auth, Enum) else auth or "function").lower(),
                    function=fn,
                    regex=regex,
                    params=params,
                    group_names=groups,
                    precedence=precedence,
                )
            )
            self._check_parameters(fn, trigger)
        # Literal segments before constrained parameters before plain ones, like ASP.NET routing.
        self.routes.sort(key=lambda r: r.precedence)

    @staticmethod
    def _check_parameters(fn: Any, trigger: Any) -> None:
        bound = {trigger.name, "context"} | {
            b.name for b in fn.get_bindings() if _binding_type(b) == _HTTP_OUTPUT
        }
        try:
            signature = inspect.signature(fn.get_user_function())
        except (TypeError, ValueError):
            return
        for param in signature.parameters.values():
            if (
                param.name not in bound
                and param.default is inspect.Parameter.empty
                and param.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            ):
                LOG.warning(
                    "%s: parameter %r is a binding that tools.host does not provide; it gets None",
                    fn.get_function_name(),
                    param.name,
                )

    # -- WSGI ------------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except Exception:  # the dispatcher itself failed; never leak details
            LOG.exception("tools.host: dispatch failed")
            response = _plain(500, "Internal Server Error")
        LOG.info(
            "%s %s %d %.1fms",
            request.method,
            _safe_path(request.path),
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response(environ, start_response)

    def find(self, method: str, path: str) -> tuple[HttpRoute | None, dict[str, str], set[str]]:
        """The route for ``method path`` and its parameters; else None and the methods the path allows."""
        allowed: set[str] = set()
        for route in self.routes:
            values = route.match(path)
            if values is None:
                continue
            if route.allows(method):
                return route, values, allowed
            allowed |= set(route.methods or ALL_METHODS)
        return None, {}, allowed

    def dispatch(self, request: Request) -> Response:
        route, route_params, allowed = self.find(request.method.upper(), request.path)
        if route is None:
            if allowed:
                return _plain(405, "Method Not Allowed", [("Allow", ", ".join(sorted(allowed)))])
            return _plain(404, "Not Found")
        http_request = func.HttpRequest(
            method=request.method.upper(),
            url=request.url,
            headers=dict(request.headers.items()),
            params={key: values[-1] for key, values in request.args.lists()},
            route_params=route_params,
            body=request.get_data(cache=False),
        )
        try:
            return _to_werkzeug_response(self.invoke(route, http_request))
        except Exception:
            LOG.error("function %s failed:\n%s", route.function_name, traceback.format_exc().rstrip())
            return _plain(500, "Internal Server Error")

    def invoke(self, route: HttpRoute, http_request: func.HttpRequest) -> Any:
        fn = route.function
        user_function = fn.get_user_function()
        trigger = fn.get_trigger()
        outputs = {
            b.name: _Out()
            for b in fn.get_bindings()
            if _binding_type(b) == _HTTP_OUTPUT and b.name != "$return"
        }
        try:
            signature = inspect.signature(user_function)
            names = [
                p.name
                for p in signature.parameters.values()
                if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            ]
            defaults = {
                p.name for p in signature.parameters.values() if p.default is not inspect.Parameter.empty
            }
        except (TypeError, ValueError):
            names, defaults = [trigger.name], set()
        kwargs: dict[str, Any] = {}
        for name in names:
            if name == trigger.name:
                kwargs[name] = http_request
            elif name in outputs:
                kwargs[name] = outputs[name]
            elif name == "context":
                kwargs[name] = InvocationContext(route.function_name, self.function_directory)
            elif name not in defaults:
                kwargs[name] = None
        result = user_function(**kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        if result is None:
            for out in outputs.values():
                if out.get() is not None:
                    return out.get()
        return result

    def describe(self, base_url: str) -> list[str]:
        """Lines like Core Tools prints them at start."""
        lines = []
        for route in sorted(self.routes, key=lambda r: r.function_name):
            # A function may serve fewer methods than its trigger takes (functions/http.py answers 405
            # itself, since Azure would answer 404): show those it serves.
            served = getattr(route.function.get_user_function(), "served_methods", None) or route.methods
            methods = ",".join(sorted(served)) if served else ",".join(ALL_METHODS)
            lines.append(f"  {route.function_name}: [{methods}] {base_url}{route.path}")
        for kind, name in sorted(self.other_functions, key=lambda t: t[1]):
            lines.append(
                f"  {kind}: {name} (not scheduled by tools.host)"
                if kind == "timer"
                else f"  {kind}: {name} (not run by tools.host)"
            )
        return lines


async def _await(awaitable: Any) -> Any:
    return await awaitable


def build_wsgi_app(
    function_app: Any,
    *,
    prefix: str = DEFAULT_ROUTE_PREFIX,
    function_directory: str | os.PathLike[str] | None = None,
) -> FunctionHost:
    """A WSGI app serving the HTTP functions of ``function_app`` (calls ``get_functions()`` once)."""
    return FunctionHost(function_app, prefix=prefix, function_directory=function_directory)


# --------------------------------------------------------------------------------------------------------
# Server


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler without its own access log, which would print query strings."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("code %d") and args:
            # e.g. "Bad request syntax (...)": the message echoes the request line, query and all.
            LOG.warning("%s - rejected a malformed request (HTTP %s)", self.address_string(), args[0])
        else:
            LOG.warning("%s - %s", self.address_string(), format % args if args else format)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass
class ServerHandle:
    server: BaseWSGIServer
    thread: threading.Thread
    url: str
    port: int

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_server(wsgi_app: Any, host: str, port: int, ssl_context: Any) -> BaseWSGIServer:
    return make_server(
        host, port, wsgi_app, threaded=True, request_handler=_RequestHandler, ssl_context=ssl_context
    )


def serve_in_thread(
    wsgi_app: Any, host: str = "127.0.0.1", port: int = 0, ssl_context: Any = None
) -> ServerHandle:
    """Serve ``wsgi_app`` on a daemon thread; ``port=0`` picks a free port. ``ssl_context`` is what
    werkzeug takes: ``(cert_file, key_file)`` or an ``ssl.SSLContext``."""
    server = _make_server(wsgi_app, host, port, ssl_context)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"tools.host:{server.server_port}",
        daemon=True,
    )
    thread.start()
    scheme = "https" if ssl_context is not None else "http"
    return ServerHandle(
        server, thread, f"{scheme}://{_url_host(host)}:{server.server_port}", server.server_port
    )


# --------------------------------------------------------------------------------------------------------
# Command line


def _find_function_app(module: Any) -> Any:
    app = getattr(module, "app", None)
    if isinstance(app, func.FunctionRegister):
        return app
    for value in vars(module).values():
        if isinstance(value, func.FunctionRegister):
            return value
    raise SystemExit(f"{module.__file__}: no azure.functions.FunctionApp instance found (expected `app`)")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.host",
        description="Serve the function app's HTTP functions locally, like `func start` "
        "(settings from the environment and local.settings.json; no function keys asked).",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port (default: Host.LocalHttpPort of local.settings.json, else {DEFAULT_PORT})",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--cert", help="PEM certificate (chain) file: serve HTTPS")
    parser.add_argument("--key", help="PEM private key file of --cert")
    parser.add_argument(
        "--app-dir",
        default=".",
        type=Path,
        help="directory holding function_app.py, host.json, local.settings.json (default .)",
    )
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The Azure SDK's HTTP logging policy is chatty at INFO (every request and its headers).
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    app_dir = args.app_dir.resolve()
    if not (app_dir / "function_app.py").is_file():
        print(f"tools.host: {app_dir / 'function_app.py'} not found (use --app-dir)", file=sys.stderr)
        return 2
    applied = load_local_settings(app_dir)
    if applied:
        LOG.info("local.settings.json: applied %s", ", ".join(sorted(applied)))
    prefix = route_prefix(app_dir)
    port = args.port if args.port is not None else (_local_http_port(app_dir) or DEFAULT_PORT)

    sys.path.insert(0, str(app_dir))
    module = importlib.import_module("function_app")
    wsgi_app = build_wsgi_app(_find_function_app(module), prefix=prefix, function_directory=app_dir)

    ssl_context = (args.cert, args.key) if args.cert else None
    server = _make_server(wsgi_app, args.host, port, ssl_context)
    scheme = "https" if ssl_context else "http"
    base_url = f"{scheme}://{_url_host(args.host)}:{server.server_port}"
    print("\nFunctions:\n", flush=True)
    for line in wsgi_app.describe(base_url):
        print(line, flush=True)
    if not wsgi_app.routes:
        print("  (no HTTP functions found)", flush=True)
    print(f"\nServing on {base_url} (Ctrl-C to stop)\n", flush=True)
    # `make run` and tests stop the host with SIGTERM: shut down as cleanly as on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
