"""A hostile OpenID Provider: real HTTPS, Entra-shaped, and answering whatever the test scripts.

It serves discovery, a JWKS the test can rotate, an authorization endpoint that records each request
and answers at once with its form_post page (no login page), and a token endpoint that checks the
client secret (client_secret_post, as MSAL sends it, or client_secret_basic when told to take only
that), the code and the PKCE verifier like a real IdP, answers a client-credentials request,
then answers with an ID token built from the test's script: claims and header overrides, another key,
``alg: none``, HS256, an ``error`` answer, or any status, body and headers (a gateway's 502, a 429,
a 200 with Retry-After). Tokens are really signed, with keys made here.

    with HostileIdp(test_ca, redirect_uris=[...]) as idp:   # TENANT, CLIENT_ID, CLIENT_SECRET below
    idp.answer(claims={"aud": "someone-else"})        # the next ID tokens carry this aud
    fields = idp.authorize(session, login_response)    # {code, state, iss} to post to the callback
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm

from tools.idp_login import parse_forms

TIMEOUT = 15
# Who the hostile IdP is and the client it knows (the tests register the app with these).
TENANT = "d2a7c9e1-4b3f-4e8a-9c61-5f0b7e2d8a34"
CLIENT_ID = "b8e4f2a1-9c3d-4e7b-a5f6-1d2c3b4a5e6f"
CLIENT_SECRET = "hostile-idp-client-secret"
INVALID_CLIENT = (401, {
    "error": "invalid_client",
    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
                         "request is the client secret value, not the client secret ID.",
    "error_codes": [7000215],
})  # fmt: skip


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def reencoded(token: str, key: rsa.RSAPrivateKey, *, header_encoding: str = "utf-8",
              payload_encoding: str = "utf-8") -> str:
    """The token with its header and payload JSON in another encoding (UTF-16, a BOM, ...), signed
    again with `key` (RS256): valid but for not being UTF-8 (RFC 7519 7.2 step 10)."""
    header, payload = (json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
                       for part in token.split(".")[:2])
    signing_input = (b64url(json.dumps(header).encode(header_encoding)) + "."
                     + b64url(json.dumps(payload).encode(payload_encoding)))
    return f"{signing_input}.{b64url(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


@dataclass(frozen=True)
class SigningKey:
    """An RSA key the IdP (or an attacker) signs with; `kid` names it in a JWKS and a JWS header."""

    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or secrets.token_urlsafe(12), rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict:
        """The public JWK as Entra publishes it: kid and use, no alg."""
        return {**RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True), "kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Grant:
    """One authorization request as the IdP received it, and the code it issued for it."""

    client_id: str
    redirect_uri: str
    state: str
    nonce: str  # what the client sent: MSAL sends sha256-hex of its secret nonce
    code_challenge: str
    code_challenge_method: str
    response_mode: str
    scope: str
    code: str
    redeemed: bool = False


@dataclass
class Script:
    """How the token endpoint answers: an ID token with these changes, or an error."""

    claims: dict = field(default_factory=dict)  # overrides of the default claims; None removes a claim
    header: dict = field(default_factory=dict)  # overrides of the JWS header; None removes a member
    key: SigningKey | None = None  # default: the IdP's current signing key
    alg: str = "RS256"  # "RS256", "HS256" (with hmac_secret) or "none"
    hmac_secret: bytes | None = None
    error: tuple[int, dict] | None = None  # (HTTP status, error body) instead of tokens
    # (HTTP status, content type, body): what the token endpoint answers to every request, of either
    # grant, before it looks at anything (a gateway's HTML 502, a throttling 429)
    raw: tuple[int, str, str] | None = None
    headers: dict = field(default_factory=dict)  # more headers on every token answer (e.g. Retry-After)
    hang: float = 0.0  # seconds the token endpoint holds the request before answering (a hung IdP)
    mangle: Callable[[str], str] | None = None  # rewrites the minted ID token (e.g. its signature segment)


class HostileIdp:
    def __init__(self, ca, *, tenant: str = TENANT, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET,
                 redirect_uris=()):
        self._ca = ca
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = frozenset(redirect_uris)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.signing_key = SigningKey.generate()
        self.keys: list[SigningKey] = [self.signing_key]  # what the JWKS publishes
        self.reset()

    # ---- control

    def reset(self) -> None:
        """Back to an honest IdP: one published key that signs, default tokens, `iss` advertised."""
        with self._lock:
            self.keys = [self.signing_key]
            self.extra_jwks: list[dict] = []  # published beside the keys' JWKs (e.g. an EC key)
            self.script = Script()
            self.advertise_iss = True
            self.grants: dict[str, Grant] = {}
            self.token_requests: list[dict[str, str]] = []
            self.requests: list[tuple[str, str]] = []
            self.jwks_fetches = 0
            self.down: set[str] = set()  # "discovery" and/or "jwks": answered with HTTP 503
            # "discovery" and/or "jwks" -> seconds each request is held before its answer (an IdP that
            # accepts and does not answer)
            self.hang: dict[str, float] = {}
            # How the token endpoint lets clients authenticate (advertised and enforced).
            self.token_auth_methods = ["client_secret_post", "private_key_jwt"]
            self.metadata_overrides: dict = {}  # members of the discovery document replaced (None removes)
            self.jwks_body: str | None = None  # served (200, JSON) instead of the key set: a broken JWKS
            # (status, content type, body) served instead of the discovery document: a gateway's page,
            # cut-off JSON
            self.discovery_raw: tuple[int, str, str] | None = None

    def answer(self, **script) -> None:
        """Scripts the token endpoint's next answers (see Script), until the next answer() or reset()."""
        self.script = Script(**script)

    def rotate_key(self) -> SigningKey:
        """A new key signs from now on, and is the only one published (the old one is retired)."""
        self.signing_key = SigningKey.generate()
        self.keys = [self.signing_key]
        return self.signing_key

    def add_key(self) -> SigningKey:
        """Publishes one more key (it does not sign)."""
        key = SigningKey.generate()
        self.keys = [*self.keys, key]
        return key

    @property
    def issuer(self) -> str:
        return f"{self.origin}/{self.tenant}/v2.0"

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.origin}/{self.tenant}/oauth2/v2.0/authorize"

    def metadata(self) -> dict:
        base = f"{self.origin}/{self.tenant}"
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["form_post", "query"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": self.token_auth_methods,
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "authorization_response_iss_parameter_supported": self.advertise_iss,
        }

    def served_metadata(self) -> dict:
        doc = {**self.metadata(), **self.metadata_overrides}
        return {k: v for k, v in doc.items() if v is not None}

    # ---- tokens

    def default_claims(self, nonce: str | None, overrides: dict | None = None) -> dict:
        """A valid Entra v2.0 ID token's claims for this client, with `overrides` applied (a None value
        removes the claim). `sub` is pairwise, derived from `oid` like Entra's."""
        overrides = overrides or {}
        now = int(time.time())
        oid = overrides.get("oid", "00000000-0000-4000-8000-00000000a11c")
        claims = {
            "ver": "2.0", "iss": self.issuer, "aud": self.client_id, "tid": self.tenant, "oid": oid,
            "sub": b64url(hashlib.sha256(f"{oid}:{self.client_id}".encode()).digest())[:43],
            "email": "alice@contoso.test", "xms_edov": True, "name": "Alice",
            "preferred_username": "alice@contoso.test", "iat": now, "nbf": now, "exp": now + 3600, "nonce": nonce,
        }  # fmt: skip
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, claims: dict, *, header: dict | None = None, key: SigningKey | None = None, alg: str = "RS256",
             hmac_secret: bytes | None = None) -> str:
        """A compact JWS of `claims`. The header is {alg, typ, kid of the key} with `header` applied
        (None removes a member). alg "none" has an empty signature; "HS256" is keyed by `hmac_secret`
        (PyJWT refuses a PEM as an HMAC key, which is exactly the confusion an attacker tries)."""
        key = key or self.signing_key
        merged = {"alg": alg, "typ": "JWT", "kid": key.kid, **(header or {})}
        signing_input = ".".join(b64url(json.dumps(part, separators=(",", ":")).encode())
                                 for part in ({k: v for k, v in merged.items() if v is not None}, claims))
        data = signing_input.encode()
        if alg == "RS256":
            signature = key.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "HS256":
            signature = hmac.new(hmac_secret or b"", data, hashlib.sha256).digest()
        elif alg == "none":
            signature = b""
        else:
            raise ValueError(f"unsupported alg {alg}")
        return f"{signing_input}.{b64url(signature)}"

    # ---- the browser's side of the authorization endpoint

    def authorize(self, session: requests.Session, login_response: requests.Response) -> dict[str, str]:
        """Follows our app's 302 to this IdP's authorization endpoint (which records the request and
        answers with its form_post page at once) and returns the fields to post to the callback:
        {code, state, iss} (iss only while the IdP advertises it)."""
        assert login_response.status_code == 302, f"login must redirect: {login_response.status_code}"
        location = login_response.headers["Location"]
        assert location.startswith(self.authorization_endpoint + "?"), f"redirected elsewhere: {location}"
        page = session.get(location, allow_redirects=False, timeout=TIMEOUT)
        assert page.status_code == 200, f"authorize answered {page.status_code}: {page.text[:300]}"
        (form,) = parse_forms(page.text).forms
        return form.fields()

    # ---- the server

    def start(self, port: int = 0) -> HostileIdp:
        """Serves on `port` (0: any free one; the same port again after stop(): the IdP comes back)."""
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self._ca.server_cert), str(self._ca.server_key))
        # The handshake in the handler thread, as tools/host.py and the vault stub do: in accept() it ran
        # one at a time on the serving thread, so 30 browsers at once (test_load) queued their token
        # requests' handshakes behind each other, and on a loaded machine one timed out (an SSLError).
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server, self.port = server, server.server_address[1]
        threading.Thread(target=server.serve_forever, name="hostile-idp", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HostileIdp:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _route(self, method: str, path: str, query: dict, form: dict,
               headers=None) -> tuple[int, str, str] | tuple[int, str, str, dict]:
        """(status, content type, body) of one request, and for the token endpoint the more headers."""
        with self._lock:
            self.requests.append((method, path))
        base = f"/{self.tenant}"
        endpoint = {f"{base}/v2.0/.well-known/openid-configuration": "discovery", f"{base}/discovery/v2.0/keys": "jwks"}
        if method == "GET" and self.hang.get(endpoint.get(path, "")):
            time.sleep(self.hang[endpoint[path]])
        if method == "GET" and path == f"{base}/v2.0/.well-known/openid-configuration":
            if "discovery" in self.down:
                return _json(503, {"error": "down"})
            return self.discovery_raw or _json(200, self.served_metadata())
        if method == "GET" and path == f"{base}/discovery/v2.0/keys" and "jwks" in self.down:
            return _json(503, {"error": "down"})
        if method == "GET" and path == f"{base}/discovery/v2.0/keys":
            with self._lock:
                self.jwks_fetches += 1
            if self.jwks_body is not None:
                return 200, "application/json", self.jwks_body
            return _json(200, {"keys": [*(k.jwk() for k in self.keys), *self.extra_jwks]})
        if method == "GET" and path == f"{base}/oauth2/v2.0/authorize":
            return self._authorize(query)
        if method == "POST" and path in (f"{base}/oauth2/v2.0/token", f"{base}/oauth2/moved/token"):  # moved: a re-read
            return self._token(form, (headers or {}).get("Authorization", ""))
        return _json(404, {"error": "not_found"})

    def _authorize(self, query: dict) -> tuple[int, str, str]:
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return _json(400, {"error": "unauthorized_client"})
        redirect_uri = query.get("redirect_uri", "")
        if self.redirect_uris and redirect_uri not in self.redirect_uris:
            return _json(400, {"error": "invalid_request", "error_description": "AADSTS50011: redirect URI mismatch"})
        grant = Grant(client_id=query["client_id"], redirect_uri=redirect_uri, state=query.get("state", ""),
                      nonce=query.get("nonce", ""), code_challenge=query.get("code_challenge", ""),
                      code_challenge_method=query.get("code_challenge_method", ""),
                      response_mode=query.get("response_mode", ""), scope=query.get("scope", ""),
                      code=f"hostile-code-{uuid.uuid4()}")
        with self._lock:
            self.grants[grant.code] = grant
        fields = {"code": grant.code, "state": grant.state}
        if self.advertise_iss:
            fields["iss"] = self.issuer
        inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in fields.items())
        page = (f'<!doctype html><form method="post" action="{html.escape(redirect_uri)}">{inputs}'
                '<button type="submit">Continue</button></form>')
        return 200, "text/html; charset=utf-8", page

    def _client_authenticated(self, form: dict, authorization: str) -> bool:
        """RFC 6749 2.3.1, by the methods this IdP takes: the secret in a Basic header (id and secret
        form-encoded, then base64) or in the body, never both."""
        if authorization.startswith("Basic "):
            if "client_secret_basic" not in self.token_auth_methods or "client_secret" in form:
                return False
            try:
                client_id, _, secret = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
            except ValueError:
                return False
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
            if form.get("client_id", client_id) != client_id:
                return False
        else:
            if "client_secret_post" not in self.token_auth_methods:
                return False
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client_id == self.client_id and hmac.compare_digest(secret.encode(), self.client_secret.encode())

    def _token(self, form: dict, authorization: str = "") -> tuple[int, str, str, dict]:
        script = self.script
        with self._lock:
            self.token_requests.append({**form, **({"authorization": "Basic"} if authorization else {})})
        return (*(script.raw or self._token_answer(script, form, authorization)), script.headers)

    def _token_answer(self, script: Script, form: dict, authorization: str) -> tuple[int, str, str]:
        # Client authentication first: a failed one leaves the code unused (a real IdP does the same).
        if not self._client_authenticated(form, authorization):
            return _json(*INVALID_CLIENT)
        if form.get("grant_type") == "client_credentials":  # what the health check asks: our credential
            if form.get("scope") != f"{self.client_id}/.default":
                return _json(400, {"error": "invalid_scope", "error_codes": [70011]})
            return _json(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": self.mint(
                {"aud": self.client_id, "iss": self.issuer, "exp": int(time.time()) + 3600})})
        if script.hang:
            time.sleep(script.hang)
        if script.error is not None:
            return _json(*script.error)
        with self._lock:
            grant = self.grants.get(form.get("code", ""))
            fresh = grant is not None and not grant.redeemed
            if fresh:
                grant.redeemed = True
        if form.get("grant_type") != "authorization_code" or not fresh:
            return _json(400, {"error": "invalid_grant", "error_codes": [70008],
                               "error_description": "AADSTS70008: The code is unknown, used or expired."})
        verifier = form.get("code_verifier", "")
        if grant.code_challenge_method != "S256" or b64url(hashlib.sha256(verifier.encode()).digest()) \
                != grant.code_challenge:
            return _json(400, {"error": "invalid_grant", "error_codes": [501481],
                               "error_description": "AADSTS501481: The Code_Verifier does not match."})
        if form.get("redirect_uri") != grant.redirect_uri:
            return _json(400, {"error": "invalid_grant", "error_codes": [50011],
                               "error_description": "AADSTS50011: redirect URI differs from the authorize request."})
        id_token = self.mint(self.default_claims(grant.nonce, script.claims), header=script.header, key=script.key,
                             alg=script.alg, hmac_secret=script.hmac_secret)
        if script.mangle is not None:
            id_token = script.mangle(id_token)
        return _json(200, {"token_type": "Bearer", "expires_in": 3600, "scope": grant.scope, "id_token": id_token,
                           "access_token": self.mint({"aud": "00000003-0000-0000-c000-000000000000",
                                                      "iss": self.issuer, "exp": int(time.time()) + 3600})})


def _json(status: int, body: dict) -> tuple[int, str, str]:
    return status, "application/json", json.dumps(body)


def _handler_for(idp: HostileIdp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            form = {}
            if self.command == "POST":
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = dict(parse_qsl(body.decode(), keep_blank_values=True))
            status, content_type, text, *more = idp._route(self.command, parts.path,
                                                           dict(parse_qsl(parts.query, keep_blank_values=True)),
                                                           form, self.headers)
            data = text.encode()
            self.send_response(status)
            for name, value in (more[0] if more else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format, *args):  # quiet: the request log is idp.requests
            pass

    return Handler
