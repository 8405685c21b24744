"""One SCIM request, end to end: directory sync on or off, the bearer token, the size limit, the
protocol (engine.py, imported on the first request that gets that far), the DirectoryEvents row and
the log line. Host-neutral: functions/scim.py hands in the request's parts."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import weakref
from dataclasses import dataclass, field

from ..config import log_value
from ..daylog import event_json
from ..errors import ConfigurationError, DependencyUnavailable
from ..pages import Reply
from ..tables import ACCOUNTS_TABLE, DIRECTORY_EVENTS_TABLE, SCIM_USERS_TABLE
from .auth import TokenCache
from .events import DirectoryEvent, DirectoryEvents

log = logging.getLogger("portal_sso")
MAX_BODY = 256 * 1024
MEDIA_TYPE = "application/scim+json"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
RETRY_AFTER = 30
RESOURCE_SEGMENT = re.compile(r"^[A-Za-z.]{1,40}\Z")  # Users, Groups, Schemas, ServiceProviderConfig, .search


@dataclass
class ScimHttpRequest:
    method: str
    path: str  # below /api/scim/v2, e.g. "/Users/2819c223"
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class _State:
    """Per runtime: the token cache, and the protocol engine once a request needs it."""

    def __init__(self, runtime):
        self.tokens = TokenCache(runtime)
        self._engine = None
        self._lock = threading.Lock()

    def engine(self):
        with self._lock:
            if self._engine is None:
                from .engine import Engine  # the SCIM libraries load here, on the first SCIM request

                self._engine = Engine()
            return self._engine


_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def _state(runtime) -> _State:
    with _states_lock:
        state = _states.get(runtime)
        if state is None:
            _states[runtime] = state = _State(runtime)
        return state


def error_reply(status: int, detail: str, scim_type: str | None = None, headers: dict | None = None) -> Reply:
    body = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return Reply(status, json.dumps(body), MEDIA_TYPE, {"Cache-Control": "no-store", **(headers or {})})


def _operation(request: ScimHttpRequest) -> str:
    """The method and the path's shape (`POST /Users`, `PATCH /Users/{id}`), for the log line and the
    audit row. It names a resource only when the path's first segment looks like one (letters and a
    dot: Users, Schemas, .search): anyone may send a request, and its path must not write the line."""
    parts = [p for p in request.path.split("/") if p]
    first = parts[:1] if not parts or RESOURCE_SEGMENT.match(parts[0]) else ["{other}"]
    shown = "/" + "/".join(first + (["{id}"] if len(parts) > 1 else []))
    method = request.method.upper()
    return f"{method if method.isascii() and method.isalpha() else '{method}'} {shown}"


def _user_name(request: ScimHttpRequest, body) -> str:
    """The userName the response's or the request's body names, "" when neither does."""
    for source in (body, _json(request.body)):
        if isinstance(source, dict) and isinstance(source.get("userName"), str):
            return source["userName"]
    return ""


def _json(raw: bytes):
    """The body's JSON for the audit row's userName, or None. Anyone may send a body, also before the
    token is checked: one nested too deep for the parser (RecursionError) is just not JSON here."""
    try:
        return json.loads(raw) if raw and len(raw) <= MAX_BODY else None
    except (ValueError, RecursionError):
        return None


class DirectorySync:
    def __init__(self, runtime):
        self.runtime = runtime
        self.state = _state(runtime)

    def handle(self, request: ScimHttpRequest, correlation_id: str) -> Reply:
        started = time.perf_counter()
        event = DirectoryEvent(correlation_id=correlation_id, operation=_operation(request), status=0, outcome="")
        parts = [p for p in request.path.split("/") if p]
        if len(parts) > 1 and parts[0].lower() == "users":
            event.scim_id = parts[1]
        try:
            config = self.state.tokens.get()
        except DependencyUnavailable as exc:
            return self._finish(event, error_reply(503, "Directory sync is temporarily unavailable.",
                                                   headers={"Retry-After": str(RETRY_AFTER)}), exc.reason, started)
        if not config.on:  # off: nothing here, and nothing recorded
            return error_reply(404, "Not found.", headers={"X-Correlation-Id": correlation_id})
        if config.problems:
            names = sorted({p.setting for p in config.problems if p.setting})
            event.detail = "; ".join(map(str, config.problems))
            fix = f"fix {', '.join(names)}" if names else "the app's settings have problems"
            return self._finish(event, error_reply(503, f"Directory sync is not configured correctly: {fix} "
                                                   "(see the setup page).",
                                                   headers={"Retry-After": str(RETRY_AFTER)}),
                                "configuration_error", started)
        authorization = request.header("Authorization")
        if not config.accepts(authorization) and not self.state.tokens.reread_for_mismatch().accepts(authorization):
            event.user_name = _user_name(request, None)
            return self._finish(event, error_reply(401, "A valid bearer token is required.",
                                                   headers={"WWW-Authenticate": 'Bearer realm="scim"'}),
                                "unauthorized" if authorization else "no_token", started)
        if parts and parts[-1].lower() == ".search":
            return self._finish(event, error_reply(501, "POST .search is not offered: search with GET and a "
                                                   "filter."), "not_implemented", started)
        if len(request.body) > MAX_BODY:
            return self._finish(event, error_reply(413, f"The body is larger than {MAX_BODY} bytes.", "tooLarge"),
                                "tooLarge", started)
        built: list = []  # the storages the engine asked for: the last one answered
        try:
            reply, body = self._protocol(request, config, built)
        except DependencyUnavailable as exc:
            return self._finish(event, error_reply(503, "Directory sync is temporarily unavailable; retry.",
                                                   headers={"Retry-After": str(exc.retry_after or RETRY_AFTER)}),
                                exc.reason, started)
        except ConfigurationError as exc:
            event.detail = str(exc)
            return self._finish(event, error_reply(503, "Directory sync is not configured correctly: the app's "
                                                   "settings have problems (see the setup page).",
                                                   headers={"Retry-After": str(RETRY_AFTER)}),
                                "configuration_error", started)
        except Exception as exc:  # a bug, or an answer no code path expects: SCIM's 500, its row and a traceback
            log.exception("scim.internal_error correlation_id=%s", correlation_id)
            event.detail = type(exc).__name__  # never its text: it may quote what storage or the request held
            return self._finish(event, error_reply(500, "An unexpected error; quote the X-Correlation-Id of this "
                                                   "answer when you ask for help."), "internal_error", started)
        if isinstance(body, dict):
            if body.get("id") and event.scim_id == "":
                event.scim_id = str(body["id"])
            reason = body.get("scimType") or ("ok" if reply.status < 400 else f"http_{reply.status}")
            if reply.status >= 400:
                event.detail = str(body.get("detail") or "")
        else:
            reason = "ok" if reply.status < 400 else f"http_{reply.status}"
        event.user_name = _user_name(request, body) or built[-1].user_name(event.scim_id)
        return self._finish(event, reply, reason, started)

    def _protocol(self, request: ScimHttpRequest, config, built: list) -> tuple[Reply, dict | None]:
        """The reply and the SCIM body it carries (or None); each storage the engine builds is appended
        to `built` (the last answered: what it read names the person, TableScimStorage.user_name)."""
        from scim2_server.requests import ScimRequest

        from . import engine as protocol
        from .mapping import link_tenant

        runtime = self.runtime
        settings = runtime.settings
        users, accounts = runtime.tables.client(SCIM_USERS_TABLE), runtime.tables.client(ACCOUNTS_TABLE)
        tenant = link_tenant(settings)
        scim_request = ScimRequest(method=request.method.upper(), base_url=f"{settings.public_base_url}/api/scim/v2",
                                   path=request.path or "/", query=request.query, headers=request.headers,
                                   body=request.body)
        def storage():
            built.append(protocol.storage(users, accounts, config.default_kind, tenant))
            return built[-1]

        response = self.state.engine().handle(scim_request, storage)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
        headers["Cache-Control"] = "no-store"
        if int(response.status) == 503:
            headers.setdefault("Retry-After", str(RETRY_AFTER))
        text = protocol.response_json(response)
        return Reply(int(response.status), text, MEDIA_TYPE, headers), response.body

    def _finish(self, event: DirectoryEvent, reply: Reply, reason: str, started: float) -> Reply:
        """The DirectoryEvents row for every write and every refused request, before the response
        goes out, then the log line. A row storage refuses goes to the log whole, and a write it
        should have recorded is not acknowledged (503: Entra retries, and every write is built to be
        repeated), as the login does with an unaudited success; a refusal keeps its answer."""
        event.status, event.reason = reply.status, reason
        event.outcome = "success" if reply.status < 400 else "failure"
        if event.operation.split(" ")[0] in WRITES or reply.status >= 400:
            try:
                DirectoryEvents(self.runtime.tables.client(DIRECTORY_EVENTS_TABLE)).record(event)
            except (DependencyUnavailable, ConfigurationError) as exc:
                why = getattr(exc, "reason", type(exc).__name__)
                log.error("scim.audit_failed correlation_id=%s reason=%s event=%s", event.correlation_id, why,
                          event_json(event))
                if reply.status < 400:
                    reply, reason = error_reply(503, "Directory sync could not record this write; retry.",
                                                headers={"Retry-After": str(RETRY_AFTER)}), why
        reply.headers["X-Correlation-Id"] = event.correlation_id  # the DirectoryEvents row's and the log's
        level = logging.INFO if reply.status < 400 else logging.WARNING
        # op is ours (see _operation); reason and scim_id may come from the request, so each is one token.
        log.log(level, "scim.request op=%s status=%d reason=%s scim_id=%s correlation_id=%s elapsed_ms=%d",
                event.operation, reply.status, log_value(reason[:80]), log_value(event.scim_id[:80]),
                event.correlation_id, (time.perf_counter() - started) * 1000)
        return reply


def handle(runtime, request: ScimHttpRequest, correlation_id: str) -> Reply:
    return DirectorySync(runtime).handle(request, correlation_id)
