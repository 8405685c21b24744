"""A local HTTPS stand-in for the part of Azure Key Vault the app uses, plus an App Service managed-identity
endpoint, so that the real ``SecretClient`` and the real ``DefaultAzureCredential`` read secrets here
exactly as they do in Azure (Key Vault has no emulator).

* The vault (HTTPS): ``GET /secrets/{name}/`` (latest) and ``GET /secrets/{name}/{version}``, with the
  real service's JSON shape (value, id with version, ``exp``, ``contentType``) and errors: 404
  ``SecretNotFound``; 401 with Key Vault's ``WWW-Authenticate`` challenge to a request without a token
  this stub's identity endpoint issued for ``https://vault.azure.net``.
* The identity endpoint (plain HTTP on loopback, as App Service serves it):
  ``GET /msi/token?api-version=2019-08-01&resource=...`` with header ``X-IDENTITY-HEADER``.
  ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER`` (and none of ``CONFLICTING_IDENTITY_ENV``) make
  ``DefaultAzureCredential`` use it and never touch IMDS: :meth:`KeyVaultStub.apply_env` sets that up.
* Outages: :meth:`~KeyVaultStub.stop_vault` / :meth:`~KeyVaultStub.start_vault` take the vault down and
  bring it back on the same port (open keep-alive connections are cut), :meth:`~KeyVaultStub.fail_next`
  answers the next requests with an error status, :meth:`~KeyVaultStub.answer_raw` answers every vault
  request with what a gateway in front of it might (a 200 HTML page, truncated JSON);
  :meth:`~KeyVaultStub.reads` counts the values handed out.

The app trusts the vault's certificate through ``REQUESTS_CA_BUNDLE`` (tools.stack.trust_env).
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

KEY_VAULT_RESOURCE = "https://vault.azure.net"
MSI_PATH = "/msi/token"

# Variables that would make DefaultAzureCredential pick another credential or another managed-identity
# flavour than App Service; apply_env removes them.
CONFLICTING_IDENTITY_ENV = (
    "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_USERNAME", "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_TOKEN_CREDENTIALS",
    "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET",
)


@dataclass(frozen=True)
class RequestRecord:
    """One request either server answered: ``server`` is ``"vault"`` or ``"identity"``."""

    server: str
    path: str
    status: int
    client_request_id: str = ""  # the x-ms-client-request-id it carried
    raw: bool = False  # answered with answer_raw's body, not the vault's own


@dataclass(frozen=True)
class _Version:
    version: str
    value: str
    created: int
    expires: int | None
    content_type: str | None


class _Reply(Exception):
    """Raised inside a handler to answer with a status, a JSON body and headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _secret_of(path: str) -> str | None:
    """The secret name a vault request's path names (/secrets/{name}/...), else None."""
    parts = unquote(path).strip("/").split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "secrets" else None


def _kv_error(status: int, code: str, message: str, **headers: str) -> _Reply:
    return _Reply(status, {"error": {"code": code, "message": message}}, headers)


class _Server(http.server.ThreadingHTTPServer):
    """Remembers its open connections, so a stopped server is really unreachable (keep-alive ones too)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, stub: KeyVaultStub, kind: str) -> None:
        self.stub, self.kind, self._open, self._open_lock = stub, kind, set(), threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def get_request(self):  # type: ignore[override]
        conn, addr = super().get_request()
        with self._open_lock:
            self._open.add(conn)
        return conn, addr

    def shutdown_request(self, request) -> None:  # type: ignore[override]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def halt(self) -> None:
        self.shutdown()
        self.server_close()
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            for close in (lambda c=conn: c.shutdown(socket.SHUT_RDWR), conn.close):
                try:
                    close()
                except OSError:
                    pass

    def handle_error(self, request, client_address) -> None:  # type: ignore[override]
        pass  # resets from stopped tests and refused handshakes are not news


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections end their thread eventually
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        stub, kind, split = self.server.stub, self.server.kind, urlsplit(self.path)
        raw = stub._raw if kind == "vault" else None
        if raw is not None:
            status, content_type, body = raw
            stub._record(RequestRecord(kind, split.path, status, self.headers.get("x-ms-client-request-id", ""),
                                       raw=True))
            self._send(status, content_type, body.encode(), {})
            return
        try:
            stub._maybe_fail(kind)
            if kind == "vault":
                stub._authorize(self.headers.get("Authorization"))
                body, headers, status = stub._get_secret(split.path), {}, 200
            else:
                body, headers, status = stub._issue_token(split.path, split.query, self.headers), {}, 200
        except _Reply as reply:
            status, body, headers = reply.status, reply.body, reply.headers
        stub._record(RequestRecord(kind, split.path, status, self.headers.get("x-ms-client-request-id", "")))
        self._send(status, "application/json; charset=utf-8", json.dumps(body).encode(), headers)

    def _send(self, status: int, content_type: str, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class KeyVaultStub:
    """Thread-safe: the control methods may be called while the SDK reads from another thread."""

    def __init__(self, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> None:
        self._cert_file, self._key_file = str(cert_file), str(key_file)
        self.tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.identity_header = secrets.token_urlsafe(24)
        self.log: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._secrets: dict[str, list[_Version]] = {}  # name (lower case) -> versions, latest last
        self._tokens: dict[str, tuple[str, int]] = {}  # token -> (resource, expires_on)
        self._failures: dict[str, list[list[int]]] = {"vault": [], "identity": []}  # [count, status]
        self._raw: tuple[int, str, str] | None = None  # answer_raw's (status, content type, body)
        self._vault: _Server | None = None
        self._identity: _Server | None = None
        self._vault_port = self._identity_port = 0
        self.url = self.identity_endpoint = ""

    # ---- lifecycle

    def start(self) -> KeyVaultStub:
        if self._identity is None:
            self._identity = self._serve(_Server(self._identity_port, self, "identity"))
            self._identity_port = self._identity.server_address[1]
            self.identity_endpoint = f"http://127.0.0.1:{self._identity_port}{MSI_PATH}"
        return self.start_vault()

    def start_vault(self) -> KeyVaultStub:
        """(Re)starts the vault alone, on the same port as before when it ran already."""
        if self._vault is None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self._cert_file, self._key_file)
            vault = _Server(self._vault_port, self, "vault")
            # The handshake happens in the handler thread: a client refusing the certificate cannot stall accept().
            vault.socket = context.wrap_socket(vault.socket, server_side=True, do_handshake_on_connect=False)
            self._vault = self._serve(vault)
            self._vault_port = vault.server_address[1]
            self.url = f"https://127.0.0.1:{self._vault_port}"
        return self

    def stop_vault(self) -> None:
        """The vault unreachable (connections refused, open ones cut) while the identity endpoint still
        answers, as in Azure when Key Vault is down or behind its firewall."""
        vault, self._vault = self._vault, None
        if vault is not None:
            vault.halt()

    def stop(self) -> None:
        self.stop_vault()
        identity, self._identity = self._identity, None
        if identity is not None:
            identity.halt()

    @staticmethod
    def _serve(server: _Server) -> _Server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name=f"keyvault-stub-{server.kind}").start()
        return server

    def __enter__(self) -> KeyVaultStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- environment

    def apply_env(self, monkeypatch: Any) -> None:
        """Points DefaultAzureCredential (ManagedIdentityCredential, App Service flavour) here."""
        for name in CONFLICTING_IDENTITY_ENV:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("IDENTITY_ENDPOINT", self.identity_endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", self.identity_header)

    # ---- control

    def set_secret(self, name: str, value: str, *, expires_on: datetime | None = None,
                   content_type: str | None = None) -> str:
        """Adds a new version of `name`, which becomes the latest (the real service's set); returns its id."""
        version = _Version(uuid.uuid4().hex, value, int(time.time()),
                           int(expires_on.timestamp()) if expires_on else None, content_type)
        with self._lock:
            self._secrets.setdefault(name.lower(), []).append(version)
        return version.version

    def versions(self, name: str) -> list[str]:
        """The version ids of `name`, oldest first."""
        with self._lock:
            return [v.version for v in self._secrets.get(name.lower(), [])]

    def fail_next(self, n: int = 1, status: int = 503, *, server: str = "vault",
                  retry_after: str | None = None) -> None:
        """Answers the next `n` requests to `server` ("vault" or "identity") with `status`, and with a
        `Retry-After` header when one is given (as Key Vault's throttling 429 and a busy 503 carry)."""
        with self._lock:
            self._failures[server].append([n, status, retry_after])

    def answer_raw(self, answer: tuple[int, str, str] | None) -> None:
        """Answers every vault request with (status, content type, body) until called with None: a
        gateway or captive proxy answering in the vault's place (a 200 HTML page, truncated JSON)."""
        with self._lock:
            self._raw = answer

    def requests_for(self, name: str) -> int:
        """How many requests for `name` reached the vault, whatever they were answered."""
        with self._lock:
            return sum(1 for r in self.log if r.server == "vault" and _secret_of(r.path) == name)

    def reads(self, name: str) -> int:
        """How many values of `name` the vault handed out (its own 200 answers)."""
        with self._lock:
            return sum(1 for r in self.log if r.server == "vault" and r.status == 200 and not r.raw
                       and _secret_of(r.path) == name)

    # ---- the two servers' answers

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.log.append(record)

    def _maybe_fail(self, server: str) -> None:
        with self._lock:
            queue = self._failures[server]
            if not queue:
                return
            queue[0][0] -= 1
            _, status, retry_after = queue[0]
            if queue[0][0] <= 0:
                queue.pop(0)
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        raise _kv_error(status, "ServiceUnavailable", "Simulated failure from the Key Vault stub.", **headers)

    def _authorize(self, header: str | None) -> None:
        challenge = {"WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/'
                                         f'{self.tenant_id}", resource="{KEY_VAULT_RESOURCE}"'}
        token = header[7:].strip() if header and header.lower().startswith("bearer ") else ""
        with self._lock:
            resource, expires_on = self._tokens.get(token, ("", 0))
        if resource.rstrip("/") != KEY_VAULT_RESOURCE or expires_on <= time.time():
            raise _kv_error(401, "Unauthorized", "AKV10000: no valid bearer token from this stub's identity.",
                            **challenge)

    def _get_secret(self, path: str) -> dict:
        parts = [unquote(p) for p in path.split("/") if p]
        if len(parts) not in (2, 3) or parts[0] != "secrets":
            raise _kv_error(404, "NotFound", f"The stub does not serve {path}.")
        with self._lock:
            versions = self._secrets.get(parts[1].lower(), [])
            wanted = [v for v in versions if len(parts) == 2 or v.version == parts[2].lower()]
        if not wanted:
            raise _kv_error(404, "SecretNotFound", f"A secret with (name/id) {'/'.join(parts[1:])} was not found.")
        v = wanted[-1]
        attributes = {"enabled": True, "created": v.created, "updated": v.created,
                      **({"exp": v.expires} if v.expires is not None else {})}
        return {"value": v.value, "id": f"{self.url}/secrets/{parts[1]}/{v.version}", "attributes": attributes,
                **({"contentType": v.content_type} if v.content_type else {})}

    def _issue_token(self, path: str, query: str, headers: Any) -> dict:
        params = {k: v[0] for k, v in parse_qs(query).items()}
        if path != MSI_PATH or headers.get("X-IDENTITY-HEADER") != self.identity_header:
            raise _Reply(401, {"statusCode": 401, "message": "missing or wrong X-IDENTITY-HEADER"})
        if params.get("client_id", self.client_id) != self.client_id or not params.get("resource"):
            raise _Reply(400, {"statusCode": 400, "message": "unknown identity or no resource"})
        token, expires_on = secrets.token_urlsafe(32), int(time.time()) + 3600
        with self._lock:
            self._tokens[token] = (params["resource"], expires_on)
        return {"access_token": token, "expires_on": str(expires_on), "resource": params["resource"],
                "token_type": "Bearer", "client_id": self.client_id}
