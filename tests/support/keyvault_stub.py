"""A local HTTPS stand-in for Azure Key Vault's secrets REST API, plus an App Service managed-identity endpoint.

Key Vault has no emulator, so the tests serve the part of its data-plane API the product uses and let the
real ``azure-keyvault-secrets`` ``SecretClient`` and the real ``azure-identity`` ``DefaultAzureCredential``
talk to it exactly as they do in Azure:

* the vault (HTTPS, with the certificate the tests give, usually one issued by a ``trustme`` CA):
  ``GET /secrets/{name}/`` (latest), ``GET /secrets/{name}/{version}``, ``GET /secrets/{name}/versions``
  and ``GET /secrets``, each with ``?api-version=...``; the JSON shapes, status codes and error bodies of
  the real service (``SecretNotFound`` 404; ``Forbidden``/``SecretDisabled`` 403 for a disabled version;
  401 with Key Vault's ``WWW-Authenticate`` challenge for a request without a valid bearer token). As on
  the real service, an expired secret (``exp`` in the past) is still returned: ``exp``/``nbf`` are
  informational for secrets. Names are case-insensitive, versions are 32 hex digits, a list is paged
  with ``nextLink``.
* the managed-identity endpoint (plain HTTP on loopback, like App Service / Azure Functions, whose
  ``IDENTITY_ENDPOINT`` is ``http://127.0.0.1:<port>/msi/token``): ``GET /msi/token?api-version=2019-08-01
  &resource=...`` with header ``X-IDENTITY-HEADER``. The vault accepts only tokens this endpoint issued,
  for the resource ``https://vault.azure.net``, and not expired.

Which environment makes ``DefaultAzureCredential`` use this endpoint (azure-identity 1.27 / MSAL 1.39):
``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` both set, ``IDENTITY_SERVER_THUMBPRINT`` unset (else it is
Service Fabric), and nothing that an earlier credential in the chain would pick up (``AZURE_CLIENT_SECRET``
and friends for EnvironmentCredential, ``AZURE_FEDERATED_TOKEN_FILE`` for workload identity). With those
two set, ManagedIdentityCredential is the App Service flavour and never touches IMDS (169.254.169.254);
IMDS is used only when no managed-identity variables are set. Neither azure-identity nor MSAL checks the
endpoint's scheme or host, so https would work too, but App Service serves it over plain HTTP on a local
address, so this stub does the same (and the credential needs no CA). ``AZURE_CLIENT_ID``, when set, is
sent as ``client_id`` (a user-assigned identity); the stub accepts only its own ``client_id``.
:meth:`KeyVaultStub.managed_identity_env` returns the variables to set and :data:`CONFLICTING_IDENTITY_ENV`
lists the ones to remove; :meth:`KeyVaultStub.apply_env` does both with a pytest ``monkeypatch``.

Trust: azure-core's ``RequestsTransport`` passes ``connection_verify`` (a CA file path) to requests, and
requests consults ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` only when verify is ``True``, so an explicit
``connection_verify`` wins over those variables. Code that does not pass it (the product) trusts the stub
when ``REQUESTS_CA_BUNDLE`` names a bundle holding the test CA: :func:`write_ca_bundle` builds one from
the system bundle plus the test CA.

Outages: :meth:`KeyVaultStub.stop_vault` makes the vault unreachable while the identity endpoint keeps
serving (as in Azure); :meth:`KeyVaultStub.fail_next` answers the next requests with an error status or drops
them. Note that azure-keyvault caches each vault's auth challenge process-wide, so a new client for a vault
already read asks its credential for a token first; and DefaultAzureCredential retries an unreachable
identity endpoint for about 5 s unless built with ``retry_total=0``.

Usage::

    with KeyVaultStub(cert_file, key_file) as stub:
        stub.set_secret("oidc-client-secret", "s3cret", expires_on=datetime(2030, 1, 1, tzinfo=UTC))
        stub.apply_env(monkeypatch)
        client = SecretClient(stub.url, DefaultAzureCredential(), verify_challenge_resource=False,
                              connection_verify=ca_path)
        client.get_secret("oidc-client-secret").value
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import secrets
import socket
import socketserver
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "CONFLICTING_IDENTITY_ENV",
    "KEY_VAULT_RESOURCE",
    "KeyVaultStub",
    "RequestRecord",
    "write_ca_bundle",
]

KEY_VAULT_RESOURCE = "https://vault.azure.net"
MSI_API_VERSION = "2019-08-01"
MSI_PATH = "/msi/token"

# Variables that would make DefaultAzureCredential pick another credential or another managed-identity
# flavour than App Service (or make it send a user-assigned client id); remove them in tests.
CONFLICTING_IDENTITY_ENV = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)

_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_RECOVERY_LEVEL = "Recoverable+Purgeable"
_RECOVERABLE_DAYS = 90
_DEFAULT_PAGE_SIZE = 25  # the real service's maximum for maxresults


def write_ca_bundle(dest: str | os.PathLike[str], *ca_pems: bytes | str, base: str | None = None) -> str:
    """Write ``dest`` = the system CA bundle (or ``base``) followed by ``ca_pems``; return its path.

    Point ``REQUESTS_CA_BUNDLE`` at the result so code that does not pass ``connection_verify`` (requests,
    azure-core, MSAL) trusts both public CAs and the test CA.
    """
    base = base or ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    parts = [Path(base).read_bytes()] if base and Path(base).is_file() else []
    for pem in ca_pems:
        parts.append(pem.encode() if isinstance(pem, str) else pem)
    Path(dest).write_bytes(b"\n".join(p.rstrip(b"\n") + b"\n" for p in parts))
    return str(dest)


@dataclass(frozen=True)
class RequestRecord:
    """One request either server answered (or dropped): ``server`` is ``"vault"`` or ``"identity"``."""

    server: str
    method: str
    path: str
    query: str
    status: int
    authorized: bool


@dataclass
class _Version:
    version: str
    value: str
    created: int
    updated: int
    enabled: bool
    expires: int | None
    not_before: int | None
    content_type: str | None
    tags: dict[str, str] | None


@dataclass
class _Secret:
    name: str  # as first created; lookups are case-insensitive like the real service
    versions: list[_Version] = field(default_factory=list)  # in creation order; the last is the latest


@dataclass
class _Token:
    resource: str
    expires_on: int
    client_id: str


@dataclass
class _Failure:
    count: int
    status: int
    retry_after: int | None


class _Reply(Exception):
    """Raised inside a handler to answer with a status, a JSON body and headers."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class _Drop(Exception):
    """Raised inside a handler to close the connection without answering."""


def _epoch(moment: datetime | None, what: str) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware (e.g. datetime(..., tzinfo=UTC))")
    return int(moment.timestamp())


def _kv_error(status: int, code: str, message: str, inner: str | None = None, **headers: str) -> _Reply:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return _Reply(status, {"error": error}, headers)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, stub: KeyVaultStub, kind: str) -> None:
        self.stub = stub
        self.kind = kind
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a reverse DNS lookup); loopback needs none.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def get_request(self):  # type: ignore[override]
        conn, addr = super().get_request()
        with self._open_lock:
            self._open.add(conn)
        return conn, addr

    def shutdown_request(self, request) -> None:  # type: ignore[override]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut keep-alive connections too, so a stopped stub is really unreachable."""
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        # TLS handshakes refused by clients that do not trust the CA, resets from stopped tests: not news.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KeyVaultStub/1.0"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end their thread eventually
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        stub = self.server.stub
        kind = self.server.kind
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        authorized = False
        try:
            try:
                stub._maybe_fail(kind)
                if kind == "vault":
                    authorized = stub._authorize(self.headers.get("Authorization"))
                    body, headers = stub._vault_get(self.command, split.path, split.query)
                else:
                    body, headers = stub._identity_get(self.command, split.path, split.query, self.headers)
                status = 200
            except _Reply as reply:
                status, body, headers = reply.status, reply.body, reply.headers
        except _Drop:
            stub._record(RequestRecord(kind, self.command, split.path, split.query, 0, authorized))
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        stub._record(RequestRecord(kind, self.command, split.path, split.query, status, authorized))
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache")
        request_id = self.headers.get("x-ms-client-request-id")
        if kind == "vault":
            self.send_header("x-ms-keyvault-service-version", "1.9.0.0")
            self.send_header("x-ms-request-id", str(uuid.uuid4()))
            if request_id:
                self.send_header("x-ms-client-request-id", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class KeyVaultStub:
    """Key Vault's secrets API over local HTTPS, with an App Service managed-identity endpoint.

    Thread-safe: the control methods may be called while the SDK reads from another thread.
    """

    def __init__(
        self,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        identity_port: int = 0,
        tenant_id: str | None = None,
        client_id: str | None = None,
        token_lifetime: int = 24 * 3600,
        page_size: int = _DEFAULT_PAGE_SIZE,
    ) -> None:
        """``cert_file``: PEM certificate chain (may also hold the key, then ``key_file`` may be None).

        The vault listens on ``host:port`` (HTTPS), the identity endpoint on ``host:identity_port`` (HTTP);
        0 picks a free port. ``tenant_id`` goes into the 401 challenge, ``client_id`` is the identity's
        (random by default), ``token_lifetime`` the seconds an issued token lives, ``page_size`` the
        default number of items per list page.
        """
        self._cert_file = str(cert_file)
        self._key_file = str(key_file) if key_file is not None else None
        self._host = host
        self._port = port
        self._identity_port = identity_port
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.client_id = client_id or str(uuid.uuid4())
        self.identity_header = secrets.token_urlsafe(24)
        self.token_lifetime = token_lifetime
        self.page_size = page_size
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request served, both servers
        self.log: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._secrets: dict[str, _Secret] = {}
        self._tokens: dict[str, _Token] = {}
        self._failures: dict[str, list[_Failure]] = {"vault": [], "identity": []}
        self._vault: _Server | None = None
        self._identity: _Server | None = None
        self.url = ""
        self.identity_endpoint = ""

    # ----------------------------------------------------------------------------------------- lifecycle
    def start(self) -> KeyVaultStub:
        """Start both servers (idempotent); a second start after :meth:`stop` reuses the same ports."""
        if self._identity is None:
            identity = _Server((self._host, self._identity_port), _Handler, self, "identity")
            self._identity_port = identity.server_address[1]
            self.identity_endpoint = f"http://{self._netloc()}:{self._identity_port}{MSI_PATH}"
            self._identity = identity
            self._serve(identity)
        return self.start_vault()

    def start_vault(self) -> KeyVaultStub:
        """(Re)start the vault alone, on the same port as before when it ran already."""
        if self._vault is None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self._cert_file, self._key_file)
            vault = _Server((self._host, self._port), _Handler, self, "vault")
            # The handshake happens lazily in the handler thread, so a client that refuses the
            # certificate cannot stall the accept loop.
            vault.socket = context.wrap_socket(vault.socket, server_side=True, do_handshake_on_connect=False)
            self._port = vault.server_address[1]
            self.url = f"https://{self._netloc()}:{self._port}"
            self._vault = vault
            self._serve(vault)
        return self

    def stop_vault(self) -> None:
        """Make the vault unreachable (connections refused, open ones cut) while the managed-identity
        endpoint keeps answering, as in Azure when Key Vault is down or blocked by its firewall."""
        vault, self._vault = self._vault, None
        self._halt(vault)

    def stop(self) -> None:
        """Stop both servers and cut open connections; afterwards connections are refused."""
        vault, identity = self._vault, self._identity
        self._vault = self._identity = None
        self._halt(vault)
        self._halt(identity)

    def _netloc(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    def _serve(self, server: _Server) -> None:
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"keyvault-stub-{server.kind}",
        )
        thread.start()
        server.thread = thread

    @staticmethod
    def _halt(server: _Server | None) -> None:
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if server.thread is not None:
            server.thread.join(timeout=5)

    def __enter__(self) -> KeyVaultStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    # ----------------------------------------------------------------------------------- environment
    def managed_identity_env(self, *, user_assigned: bool = False) -> dict[str, str]:
        """The variables that point DefaultAzureCredential (ManagedIdentityCredential, App Service
        flavour) at this stub. With ``user_assigned``, also ``AZURE_CLIENT_ID`` = the stub's
        ``client_id`` (the credential then asks for that identity, as a user-assigned one)."""
        env = {"IDENTITY_ENDPOINT": self.identity_endpoint, "IDENTITY_HEADER": self.identity_header}
        if user_assigned:
            env["AZURE_CLIENT_ID"] = self.client_id
        return env

    def apply_env(self, monkeypatch: Any, *, user_assigned: bool = False) -> None:
        """With a pytest ``monkeypatch``: remove :data:`CONFLICTING_IDENTITY_ENV`, set
        :meth:`managed_identity_env`."""
        for name in CONFLICTING_IDENTITY_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in self.managed_identity_env(user_assigned=user_assigned).items():
            monkeypatch.setenv(name, value)

    # -------------------------------------------------------------------------------------- control
    def set_secret(
        self,
        name: str,
        value: str,
        *,
        expires_on: datetime | None = None,
        not_before: datetime | None = None,
        enabled: bool = True,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Add a new version of ``name`` (creating the secret if needed), which becomes the latest, like
        the real service's set; return the version id (32 hex digits)."""
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid Key Vault secret name {name!r}: 1-127 of 0-9, a-z, A-Z, -")
        if not isinstance(value, str):
            raise TypeError("a Key Vault secret value is a string")
        now = int(time.time())
        version = _Version(
            version=uuid.uuid4().hex,
            value=value,
            created=now,
            updated=now,
            enabled=enabled,
            expires=_epoch(expires_on, "expires_on"),
            not_before=_epoch(not_before, "not_before"),
            content_type=content_type,
            tags=dict(tags) if tags is not None else None,
        )
        with self._lock:
            secret = self._secrets.setdefault(name.lower(), _Secret(name))
            secret.versions.append(version)
        return version.version

    def set_enabled(self, name: str, enabled: bool, version: str | None = None) -> None:
        """Enable or disable one version (default: the latest), like updating its properties."""
        with self._lock:
            target = self._find_version(name, version)
            target.enabled = enabled
            target.updated = int(time.time())

    def disable(self, name: str, version: str | None = None) -> None:
        """Disable the latest version (or ``version``): reading it then fails with 403 SecretDisabled."""
        self.set_enabled(name, False, version)

    def enable(self, name: str, version: str | None = None) -> None:
        self.set_enabled(name, True, version)

    def delete(self, name: str) -> None:
        """Remove the secret and all its versions (reads then get 404 SecretNotFound)."""
        with self._lock:
            if self._secrets.pop(name.lower(), None) is None:
                raise KeyError(name)

    def versions(self, name: str) -> list[str]:
        """The version ids of ``name``, oldest first."""
        with self._lock:
            secret = self._secrets.get(name.lower())
            return [v.version for v in secret.versions] if secret else []

    def fail_next(
        self, n: int = 1, status: int = 503, *, server: str = "vault", retry_after: int | None = None
    ) -> None:
        """Answer the next ``n`` requests to ``server`` (``"vault"`` or ``"identity"``) with ``status``
        and a Key Vault error body (``Retry-After`` when given). ``status=0`` closes the connection
        without an answer instead (the client sees a dropped connection)."""
        if server not in self._failures:
            raise ValueError("server must be 'vault' or 'identity'")
        with self._lock:
            self._failures[server].append(_Failure(n, status, retry_after))

    def revoke_tokens(self) -> None:
        """Forget every issued token: the vault answers 401 to them from now on."""
        with self._lock:
            self._tokens.clear()

    def issued_tokens(self) -> int:
        with self._lock:
            return len(self._tokens)

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()
            self.log.clear()

    def reads(self, name: str | None = None) -> int:
        """How many secret values the vault handed out (200 answers to GET /secrets/{name}[/{version}])."""
        count = 0
        with self._lock:
            log = list(self.log)
        for record in log:
            if record.server != "vault" or record.method != "GET" or record.status != 200:
                continue
            parts = [unquote(p) for p in record.path.split("/") if p]
            if len(parts) in (2, 3) and parts[0] == "secrets" and parts[2:] != ["versions"]:
                if name is None or parts[1].lower() == name.lower():
                    count += 1
        return count

    # ------------------------------------------------------------------------------------- internals
    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append((record.method, record.path))
            self.log.append(record)

    def _maybe_fail(self, server: str) -> None:
        with self._lock:
            queue = self._failures[server]
            if not queue:
                return
            failure = queue[0]
            failure.count -= 1
            if failure.count <= 0:
                queue.pop(0)
        if failure.status == 0:
            raise _Drop
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        if server == "identity":
            raise _Reply(failure.status, {"statusCode": failure.status, "message": "simulated failure"}, headers)
        code = {503: "ServiceUnavailable", 429: "Throttled", 500: "InternalServerError"}.get(failure.status, "Error")
        raise _kv_error(failure.status, code, "Simulated failure from the Key Vault stub.", **headers)

    def _challenge_headers(self) -> dict[str, str]:
        return {
            "WWW-Authenticate": (
                f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
                f'resource="{KEY_VAULT_RESOURCE}"'
            )
        }

    def _authorize(self, header: str | None) -> bool:
        challenge = self._challenge_headers()
        if not header or not header.lower().startswith("bearer "):
            raise _kv_error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.", **challenge)
        token = header[7:].strip()
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None:
            raise _kv_error(
                401,
                "Unauthorized",
                "AKV10032: Invalid issuer. The token was not issued by this stub's identity endpoint.",
                **challenge,
            )
        if issued.resource.rstrip("/") != KEY_VAULT_RESOURCE:
            raise _kv_error(
                401,
                "Unauthorized",
                f"AKV10022: Invalid audience. Expected {KEY_VAULT_RESOURCE}, found: {issued.resource}.",
                **challenge,
            )
        if issued.expires_on <= time.time():
            raise _kv_error(401, "Unauthorized", "AKV10014: Token is expired.", **challenge)
        return True

    def _find_version(self, name: str, version: str | None) -> _Version:
        secret = self._secrets.get(name.lower())
        if secret is None or not secret.versions:
            raise KeyError(name)
        if not version:
            return secret.versions[-1]
        for candidate in secret.versions:
            if candidate.version == version.lower():
                return candidate
        raise KeyError(f"{name}/{version}")

    @staticmethod
    def _attributes(v: _Version) -> dict[str, Any]:
        attrs: dict[str, Any] = {"enabled": v.enabled}
        if v.not_before is not None:
            attrs["nbf"] = v.not_before
        if v.expires is not None:
            attrs["exp"] = v.expires
        attrs.update(
            created=v.created, updated=v.updated, recoveryLevel=_RECOVERY_LEVEL, recoverableDays=_RECOVERABLE_DAYS
        )
        return attrs

    def _item(self, secret: _Secret, v: _Version, *, versioned: bool) -> dict[str, Any]:
        ident = f"{self.url}/secrets/{secret.name}" + (f"/{v.version}" if versioned else "")
        item: dict[str, Any] = {"id": ident, "attributes": self._attributes(v)}
        if v.tags is not None:
            item["tags"] = dict(v.tags)
        if v.content_type is not None:
            item["contentType"] = v.content_type
        return item

    def _page(
        self, items: list[dict[str, Any]], path: str, query: dict[str, list[str]], api_version: str
    ) -> dict[str, Any]:
        try:
            size = int(query.get("maxresults", [self.page_size])[0])
            start = int(base64.urlsafe_b64decode(query["$skiptoken"][0]).decode()) if "$skiptoken" in query else 0
        except (ValueError, TypeError) as exc:
            raise _kv_error(400, "BadParameter", "Invalid maxresults or $skiptoken.") from exc
        if not 1 <= size <= _DEFAULT_PAGE_SIZE:
            raise _kv_error(400, "BadParameter", f"maxresults must be between 1 and {_DEFAULT_PAGE_SIZE}.")
        page = items[start : start + size]
        next_link = None
        if start + size < len(items):
            token = base64.urlsafe_b64encode(str(start + size).encode()).decode()
            next_link = f"{self.url}{path}?api-version={quote(api_version)}&$skiptoken={quote(token)}&maxresults={size}"
        return {"value": page, "nextLink": next_link}

    def _vault_get(self, method: str, path: str, raw_query: str) -> tuple[Any, dict[str, str]]:
        query = parse_qs(raw_query)
        if method != "GET":
            raise _kv_error(405, "MethodNotAllowed", f"The stub serves only GET, not {method}.")
        api_version = (query.get("api-version") or [""])[0]
        if not api_version:
            raise _kv_error(400, "BadParameter", "The 'api-version' query parameter is missing.")
        parts = [unquote(p) for p in path.split("/") if p]
        if not parts or parts[0] != "secrets" or len(parts) > 3:
            raise _kv_error(404, "NotFound", f"The path {path} is not served by the Key Vault stub.")
        with self._lock:
            if len(parts) == 1:  # GET /secrets: one item per secret, its latest version's attributes
                items = [
                    self._item(s, s.versions[-1], versioned=False)
                    for _, s in sorted(self._secrets.items())
                    if s.versions
                ]
                return self._page(items, path, query, api_version), {}
            name = parts[1]
            secret = self._secrets.get(name.lower())
            if len(parts) == 3 and parts[2] == "versions":
                # Like the real service: ordered by version id, not by creation time.
                items = (
                    [self._item(secret, v, versioned=True) for v in sorted(secret.versions, key=lambda v: v.version)]
                    if secret
                    else []
                )
                return self._page(items, path, query, api_version), {}
            version = parts[2] if len(parts) == 3 else None
            try:
                found = self._find_version(name, version)
            except KeyError:
                shown = f"{name}/{version}" if version else name
                raise _kv_error(
                    404,
                    "SecretNotFound",
                    f"A secret with (name/id) {shown} was not found in this key vault. If you recently "
                    "deleted this secret you may be able to recover it using the correct recovery command. "
                    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
                ) from None
            if not found.enabled:
                raise _kv_error(
                    403, "Forbidden", "Operation get is not allowed on a disabled secret.", inner="SecretDisabled"
                )
            assert secret is not None
            bundle = {"value": found.value, **self._item(secret, found, versioned=True)}
            return bundle, {}

    def _identity_get(
        self, method: str, path: str, raw_query: str, headers: Mapping[str, str]
    ) -> tuple[Any, dict[str, str]]:
        def error(status: int, message: str) -> _Reply:
            return _Reply(status, {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())})

        if path.rstrip("/").lower() != MSI_PATH:
            raise error(404, f"No route for {path}.")
        if method != "GET":
            raise error(405, "Only GET is supported.")
        given = headers.get("X-IDENTITY-HEADER")
        if not given or not secrets.compare_digest(given, self.identity_header):
            raise error(401, "The X-IDENTITY-HEADER header is missing or wrong.")
        query = parse_qs(raw_query)
        if (query.get("api-version") or [""])[0] != MSI_API_VERSION:
            raise error(400, f"Unsupported api-version; this endpoint serves {MSI_API_VERSION}.")
        resource = (query.get("resource") or [""])[0]
        if not resource:
            raise error(400, "The resource parameter is required.")
        asked_client = (query.get("client_id") or [""])[0]
        if asked_client and asked_client.lower() != self.client_id.lower():
            raise error(400, "Unable to load the proper Managed Identity.")
        if "mi_res_id" in query or "principal_id" in query or "object_id" in query:
            raise error(400, "Unable to load the proper Managed Identity.")
        token = secrets.token_urlsafe(32)
        expires_on = int(time.time()) + self.token_lifetime
        with self._lock:
            self._tokens[token] = _Token(resource, expires_on, self.client_id)
        return {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": self.client_id,
        }, {}
