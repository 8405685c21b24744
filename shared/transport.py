"""How the app's outbound HTTP clients are set up: the options of the Azure SDK clients (Table Storage,
Key Vault) and the session of every IdP call. The environment is read once per worker, never per call."""

from __future__ import annotations

import os
import ssl
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_encoding_from_headers
from urllib3.util.retry import Retry
from urllib3.util.ssl_ import create_urllib3_context

# A browser is waiting: a dead dependency must become a 503 in seconds (values argued in RELIABILITY.md).
# The read timeout sits just above the longest Azure lets a table query page run (5 s; a single-entity
# operation is meant to take under 2 s), so no legitimate answer is cut. `timeout` is the SDK's budget
# per operation: no new attempt starts once that much time has gone, so quick failures (a refused or
# reset connection) get their two retries, and a connection that swallows requests without a word (a
# silently dropped pooled connection) costs one read timeout, not three. A `Retry-After` counts against
# the same budget (RetryBudget).
READ_TIMEOUT = 6
RETRIES = {"retry_total": 2, "retry_backoff_factor": 0.2, "timeout": READ_TIMEOUT}
TIMEOUTS = {"connection_timeout": 3, "read_timeout": READ_TIMEOUT}
IDP_CONNECT_TIMEOUT = 5.0  # a refused connection fails at once; this bounds a silent one (no SYN-ACK)
# What an IdP answer may decode to (it is asked for gzip): discovery is ~2 KB, the keys ~10 KB, a token
# answer a few KB. Table Storage's answers have no limit (StorageSession): they come from our own
# account, authenticated, uncompressed (the SDK asks for no encoding), and a legitimate query page may
# hold 1,000 rows of up to 1 MiB each, which a limit small enough to matter could cut.
IDP_ANSWER_LIMIT = 2**20
# The managed-identity credential's budget per token request: a failing identity endpoint is a 503 in
# under 3 s (RELIABILITY.md), its two quick retries (0 s, then 0.4 s apart) well within it.
CREDENTIAL_RETRIES = {"retry_total": 2, "retry_backoff_factor": 0.2}
CREDENTIAL_BUDGET = 2.0


class RetryBudget:
    """Mixed into an azure-core RetryPolicy (before it): its `timeout` bounds the waits too. azure-core
    sleeps a whole `Retry-After` before it looks at its budget, so Key Vault's 429 `Retry-After: 20`
    held a read 20 s, a busy table's 503 `Retry-After: 10` 10 s, the identity endpoint's 429
    `Retry-After: 15` 30 s (once per retry), and then failed all the same, on the budget. Here an answer
    whose Retry-After reaches past what the budget has left is not retried: it stands at once (the
    caller's 503 says "try again"; the service is not asked again sooner than it said), and no sleep
    outlasts the budget. Built on RetryPolicy's public hooks only (configure_retries, is_retry, sleep,
    get_retry_after, get_backoff_time), which its `send` and the Tables SDK's both call."""

    _ENDS = "portal_sso_budget_ends"  # our key in the retry settings of one operation

    def configure_retries(self, options):
        settings = super().configure_retries(options)
        settings[self._ENDS] = time.monotonic() + settings["timeout"]  # the budget counts from here, as its own
        return settings

    def is_retry(self, settings, response) -> bool:
        if not super().is_retry(settings, response):
            return False
        wait = self.get_retry_after(response)
        return not wait or wait < self._left(settings)

    def sleep(self, settings, transport, response=None) -> None:
        wait = (self.get_retry_after(response) if response is not None else None) or self.get_backoff_time(settings)
        wait = min(wait, self._left(settings))
        if wait > 0:
            transport.sleep(wait)

    def _left(self, settings) -> float:
        return settings[self._ENDS] - time.monotonic()


class BudgetedRetryPolicy(RetryBudget, RetryPolicy):
    """The retry policy of the Key Vault client (its `retry_policy` option)."""


class CredentialRetryPolicy(BudgetedRetryPolicy):
    """The managed-identity credential's, within CREDENTIAL_BUDGET (azure-core's default is 7 days)."""

    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "timeout": CREDENTIAL_BUDGET})


def credential_options(environ: Mapping[str, str] = os.environ) -> dict:
    """Keyword arguments for DefaultAzureCredential: few, quick retries (the SDK's default spends ~5 s
    on a failing identity endpoint), within CREDENTIAL_BUDGET, and the Azure clients' timeouts (its
    transport's were azure-core's 300 s: a silent identity endpoint held a cold read for minutes;
    now one read timeout, not repeated, as the budget is gone). The policy goes in by azure-identity's
    `retry_policy_class`, which every managed-identity flavour's pipeline takes except IMDS's (a VM's,
    chosen when neither IDENTITY_ENDPOINT nor MSI_ENDPOINT is set): that one brings its own class and
    refuses a second (TypeError), so it keeps azure-core's waits. App Service and Functions set
    IDENTITY_ENDPOINT."""
    if environ.get("IDENTITY_ENDPOINT") or environ.get("MSI_ENDPOINT"):
        return {**CREDENTIAL_RETRIES, **TIMEOUTS, "retry_policy_class": CredentialRetryPolicy}
    return {**CREDENTIAL_RETRIES, **TIMEOUTS}


def ca_bundle(environ: Mapping[str, str] = os.environ) -> str | bool:
    """What TLS certificates are checked against: the bundle REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE)
    names, as `requests` would choose, else the system trust store (True). Tests and the dev stack
    trust their local CA this way."""
    return environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE") or True


def azure_client_options(environ: Mapping[str, str] = os.environ) -> dict:
    """Keyword arguments for an Azure SDK client. `use_env_settings=False`: `requests` would otherwise
    re-read the whole environment (proxies, .netrc, CA bundle) on every call; the CA bundle is read
    here, once, instead. Each request's `x-ms-client-request-id` is set by `_client_request_id`, not
    by azure-core's own uuid1 (`auto_request_id` off)."""
    return {**RETRIES, **TIMEOUTS, "use_env_settings": False, "connection_verify": ca_bundle(environ),
            "auto_request_id": False, "raw_request_hook": _client_request_id}


CLIENT_REQUEST_ID = "x-ms-client-request-id"
_serving: ContextVar[str | None] = ContextVar("serving", default=None)


@contextmanager
def serving(correlation_id: str) -> Iterator[None]:
    """While a request is served: every Azure SDK call made for it (on this thread) sends its
    correlation id, the Functions invocation id, as `x-ms-client-request-id`. Storage's logs record
    it (StorageTableLogs' ClientRequestId), so the id a person reads on an error page finds that
    login's table calls as well as its audit row and log line; its Key Vault reads send it too."""
    token = _serving.set(correlation_id)
    try:
        yield
    finally:
        _serving.reset(token)


def _client_request_id(request) -> None:
    """azure-core's raw_request_hook, once per attempt (after the retry policy): the id of the request
    being served, else a new uuid4 (timers, CLI, background work), kept across a call's retries. A
    call that names its own `request_id` keeps it; one given its own `raw_request_hook` replaces this
    one (azure-core runs one hook), so the app passes none. azure-core's uuid1 cost ~25 us a call
    here (libuuid's clock), this ~2 us. Storage's Shared Key signature does not cover this header."""
    headers = request.http_request.headers
    if CLIENT_REQUEST_ID not in headers:
        headers[CLIENT_REQUEST_ID] = _serving.get() or str(uuid.uuid4())


POOL_SIZE = 32  # connections kept per host: the Functions worker runs up to 32 threads (min(32, cores + 4))


_tls_contexts: dict[tuple[str, int, int], ssl.SSLContext] = {}
_tls_contexts_lock = threading.Lock()


def tls_context(verify: str | bool) -> ssl.SSLContext | None:
    """One TLS context for every connection of a session, its CA bundle loaded once: `requests` loads
    a bundle named by path again for each new connection (~22 ms with REQUESTS_CA_BUNDLE's bundle).
    The sessions of a worker (the IdP's, Table Storage's) share the context of a bundle file as it is
    on disk, so a worker's first login loads it once, and a rewritten bundle is loaded afresh.
    `True` is requests' own bundle (certifi's). None when the bundle cannot be read: requests' path
    then names it when a call is made, as before."""
    path = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
    if not isinstance(path, str):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    key = (path, stat.st_mtime_ns, stat.st_size)
    with _tls_contexts_lock:
        found = _tls_contexts.get(key)
    if found is not None:
        return found
    context = create_urllib3_context()
    try:
        context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError):
        return None
    with _tls_contexts_lock:
        return _tls_contexts.setdefault(key, context)


class DirectSession(requests.Session):
    """A `requests` session whose plain requests (a bytes, str or form body, no files, auth, cookies,
    proxies or hooks) go straight to urllib3: no PreparedRequest, no adapter, no cookie jar, no
    redirect machinery, ~0.1 ms less CPU per call than requests' own path (BENCHMARKS.md, issue 15).
    What the caller sees is unchanged: a `requests.Response` read in full (or streamed), and
    requests' exceptions for urllib3's, as requests' adapter maps them (`ReadTimeout`, `ConnectTimeout`,
    `SSLError`, `ConnectionError`), which MSAL's caller and azure-core's transport both act on.
    Anything else takes requests' own path. `with_session_headers`: whether the session's default
    headers (User-Agent, Accept-Encoding...) go with each request, as `requests` would send them."""

    def __init__(self, environ: Mapping[str, str] = os.environ, *, with_session_headers: bool,
                 answer_limit: int | None = None):
        super().__init__()
        self.trust_env = False
        self.verify = ca_bundle(environ)
        self._with_session_headers = with_session_headers
        self._answer_limit = answer_limit  # decoded bytes of a body read in full; None: no limit
        # No retries or redirects of urllib3's own: the SDK's retry policy (or the caller) decides.
        context = tls_context(self.verify)
        self._pools = None if context is None else urllib3.PoolManager(maxsize=POOL_SIZE, retries=False,
                                                                       ssl_context=context)
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE,
                                                max_retries=Retry(total=False, redirect=False, raise_on_status=False))
        for prefix in ("http://", "https://"):
            self.mount(prefix, adapter)

    def request(self, method, url, params=None, data=None, headers=None, cookies=None, files=None, auth=None,
                timeout=None, allow_redirects=True, proxies=None, hooks=None, stream=None, verify=None,
                cert=None, json=None):
        if (self._pools is None or params or cookies or files or auth or proxies or hooks or cert or json is not None
                or verify not in (None, self.verify) or not isinstance(data, (bytes, str, dict, type(None)))):
            # requests' own path (a proxy, for one), its body read as ours is: against the call's timeouts
            # and the answer limit (requests would read it whole, however slowly or large it came). No
            # redirect followed, as on ours: requests would send the body again (a token POST's client
            # secret and code) to wherever a Location named, reading each 3xx body whole on the way.
            started = time.monotonic()
            response = super().request(method, url, params=params, data=data, headers=headers, cookies=cookies,
                                       files=files, auth=auth, timeout=timeout, allow_redirects=False,
                                       proxies=proxies, hooks=hooks, stream=True, verify=verify, cert=cert)
            if not stream:
                response._content = self._whole_body(response.raw, url, started, _timeout(timeout)[1])
                response._content_consumed = True
            return response
        method = method.upper()
        # As requests merges them: the request's headers over the session's, names case-insensitive, a
        # header set to None left out.
        sent = CaseInsensitiveDict(self.headers if self._with_session_headers else {})
        sent.update(headers or {})
        for name in [name for name, value in sent.items() if value is None]:
            del sent[name]
        body = _body(data, sent)
        if body is not None:
            sent["Content-Length"] = str(len(body))
        elif method not in ("GET", "HEAD"):
            sent.setdefault("Content-Length", "0")  # as requests sends it
        timeouts, allowed = _timeout(timeout)
        started = time.monotonic()
        try:
            raw = self._pools.urlopen(method, url, body=body, headers=sent, timeout=timeouts,
                                      redirect=False, retries=False, assert_same_host=False,
                                      preload_content=False, decode_content=True)
        except urllib3.exceptions.HTTPError as exc:
            raise _requests_error(exc) from exc
        except OSError as exc:
            raise requests.ConnectionError(exc) from exc
        content = None if stream else self._whole_body(raw, url, started, allowed)
        response = requests.Response()
        response.status_code, response.reason, response.url, response.raw = raw.status, raw.reason, url, raw
        response.headers = CaseInsensitiveDict(raw.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        if not stream:
            response._content, response._content_consumed = content, True
        return response


    def _whole_body(self, raw: urllib3.BaseHTTPResponse, url: str, started: float, allowed: float | None) -> bytes:
        """The answer's body read against the call's timeouts (`allowed` seconds from `started`, None: no
        bound) and the session's answer limit (_read_body), its failures as requests' own, whichever path
        (ours, or requests' own) sent the request."""
        try:
            return _read_body(raw, None if allowed is None else started + allowed, url, self._answer_limit)
        except urllib3.exceptions.HTTPError as exc:
            raise _requests_error(exc) from exc
        except requests.RequestException:  # AnswerTooLarge: an OSError too, and already requests' own
            raise
        except OSError as exc:
            raise requests.ConnectionError(exc) from exc


READ_PIECE = 64 * 1024  # decoded bytes asked for per read of a body


class AnswerTooLarge(requests.RequestException):
    """The answer's body decoded to more than the session takes (IDP_ANSWER_LIMIT): a requests error,
    so every IdP caller makes it the IdP's 503, as it does a timeout."""


def _read_body(raw: urllib3.BaseHTTPResponse, deadline: float | None, url: str, limit: int | None) -> bytes:
    """The answer's body, decoded, read a piece at a time (each piece at most one read of the socket
    for a body of known length) with the socket's timeout shrunk to what is left before `deadline`.
    A timeout bounds one read of the socket: a peer that sent its headers, then a byte every second,
    held a call with a 2 s read timeout for 12 s, and the tables' first making sure of (6 s read
    timeout, 6 s budget) for 20 s. Past the deadline it is urllib3's read timeout (requests'
    ReadTimeout, azure-core's ServiceResponseTimeoutError); past `limit` decoded bytes AnswerTooLarge,
    having held at most one piece more (urllib3 decodes no more than a piece asks: a 305 KB gzip body
    was once decoded whole, 314 MB). Either way the connection is dropped, not pooled."""
    pieces, size = [], 0
    sock = _socket_of(raw) if deadline is not None else None
    try:
        while True:
            if sock is not None and not raw.closed:  # once closed, the connection may be another call's
                left = deadline - time.monotonic()
                if left <= 0:
                    raise urllib3.exceptions.ReadTimeoutError(None, url, "the answer was not in within the "
                                                              "call's timeouts")
                sock.settimeout(left)
            piece = raw.read1(READ_PIECE, decode_content=True)  # requests' own path opens it undecoded
            if not piece:
                return b"".join(pieces)
            size += len(piece)
            if limit is not None and size > limit:
                raise AnswerTooLarge(f"the answer of {url.split('?')[0]} decodes to more than {limit} bytes")
            pieces.append(piece)
    except BaseException:
        raw.close()  # mid-answer: the connection cannot carry another request
        raw.release_conn()
        raise


def _socket_of(raw: urllib3.BaseHTTPResponse):
    """The socket a body is read from: the connection's while it is kept alive. An answer that closes
    the connection (`Connection: close`) leaves it to http.client's file alone, named only privately
    (urllib3's `_fp`, the file's socket); None if they ever change, and the body is then read as before."""
    connection = raw.connection
    sock = getattr(connection, "sock", None)
    if sock is None:
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    return sock if hasattr(sock, "settimeout") else None


def _body(data: bytes | str | dict | None, headers: CaseInsensitiveDict) -> bytes | None:
    """The request's body as requests would encode it: a dict as a form (its None values left out)."""
    if isinstance(data, dict):
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return urlencode({k: v for k, v in data.items() if v is not None}, doseq=True).encode("ascii")
    if isinstance(data, str):
        return data.encode("utf-8")
    return data


def _timeout(timeout) -> tuple[urllib3.Timeout, float | None]:
    """urllib3's timeouts, and how long the whole call may take: its connect and read timeouts
    together (None: no bound, as the caller asked)."""
    if isinstance(timeout, urllib3.Timeout):
        return timeout, None
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return urllib3.Timeout(connect=connect, read=read), None if read is None else (connect or 0) + read


def _requests_error(exc: urllib3.exceptions.HTTPError) -> requests.RequestException:
    """urllib3's error as requests' adapter raises it (with urllib3's retries off)."""
    errors = urllib3.exceptions
    if isinstance(exc, errors.SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, errors.ReadTimeoutError):
        return requests.ReadTimeout(exc)
    if isinstance(exc, errors.ConnectTimeoutError) and not isinstance(exc, errors.NewConnectionError):
        return requests.ConnectTimeout(exc)
    if isinstance(exc, errors.LocationValueError):
        return requests.exceptions.InvalidURL(exc)
    return requests.ConnectionError(exc)  # refused, reset, closed pool, a broken answer


class StorageSession(DirectSession):
    """The session under the Table Storage clients. Storage answers neither with cookies nor redirects,
    and the SDK sets every header it needs: a request carries the SDK's headers and body, nothing of
    the session's."""

    def __init__(self, environ: Mapping[str, str] = os.environ):
        super().__init__(environ, with_session_headers=False)


def azure_transport(environ: Mapping[str, str] = os.environ) -> RequestsTransport:
    """The SDK's own requests transport (its error mapping, timeouts and retries unchanged) over a
    StorageSession, with the timeouts and CA bundle of azure_client_options."""
    return RequestsTransport(session=StorageSession(environ), session_owner=True, **TIMEOUTS,
                             connection_verify=ca_bundle(environ))


class IdpSession(DirectSession):
    """The session of every IdP call (discovery, JWKS, MSAL's token request). Every request gets
    the timeouts unless it names its own: MSAL does not apply its `timeout` to an http_client handed
    to it, so without this a token endpoint that accepts the connection and never answers would
    hold the callback, and the worker thread, for as long as the IdP likes. The environment (CA
    bundle, proxies) is read once here: with `trust_env` on, `requests` re-reads it on every call."""

    def __init__(self, read_timeout: float, environ: Mapping[str, str] = os.environ):
        super().__init__(environ, with_session_headers=True, answer_limit=IDP_ANSWER_LIMIT)
        self.timeout = (min(IDP_CONNECT_TIMEOUT, read_timeout), read_timeout)
        self._proxies = {k: v for k, v in _environ_proxies(environ).items() if k in ("http", "https", "no")}

    def request(self, method, url, *args, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        if self._proxies and not kwargs.get("proxies"):
            host = urlsplit(url).hostname or ""
            if not urllib.request.proxy_bypass_environment(host, self._proxies):
                kwargs["proxies"] = {k: v for k, v in self._proxies.items() if k != "no"}
        return super().request(method, url, *args, **kwargs)


def _environ_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """HTTP(S)_PROXY and NO_PROXY as `requests` would read them (lower case wins), once."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        lowered = name.lower()
        if value and lowered.endswith("_proxy") and (lowered == name or lowered[:-6] not in found):
            found[lowered[:-6]] = value
    return found
