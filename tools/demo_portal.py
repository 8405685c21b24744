"""A demo portal: the whole portal half of the hand-off (README "What the portal must do"), as an example.

`GET /{kind}/start` makes the portal's own random nonce, keeps it in a cookie of this browser of its own
(named by the nonce's hash, so a second tab's login start never overwrites the first's) and sends the
browser to the app's login with it (and a return_to on this portal). `POST /{kind}` receives the
form_post and accepts the session token only if: the POST's `Origin` is the app's origin; the JWT
verifies against the app's JWKS (pinned algorithms, iss, aud, exp/nbf/iat with a bounded leeway, the
page's account_type); its `nonce` claim is in this browser's cookie of that nonce; its `jti` was never
accepted before. Then it starts the portal's own session (a cookie of its own) and redirects to the
`return_to` claim, never to anything posted beside the token. `GET /{kind}/logout` ends that session
and then the IdP's. Run by `make run`; `python -m tools.demo_portal --help` runs it alone."""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import secrets
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

import jwt
from werkzeug.wrappers import Request, Response

KINDS = ("user", "agent")
LEEWAY = 60  # seconds of clock skew tolerated between the app and the portal
NONCE_PREFIX = "__Host-demo-portal-nonce-"
# A login start's cookie outlives the app's flow (10 minutes): the app's "Sign in with another account"
# (its 403 page) starts a new login of 10 minutes of its own with this nonce. 30 minutes covers two.
NONCE_SECONDS = 1800
# One nonce cookie per login start: tabs and both doors each keep their own (SPEC: at least four logins
# in flight per browser). Beyond this many, both kinds together, the oldest goes, as the app does with
# its own flow cookies: starts never completed must not pile cookies up.
MAX_NONCE_COOKIES = 5
SESSION_COOKIE = "__Host-demo-portal-session"
SESSION_SECONDS = 8 * 3600  # the portal's own session: its length is the portal's choice, not the token's
REQUIRED = ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Demo portal</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}
a.button{{display:inline-block;padding:.6rem 1rem;margin:.3rem;background:#0f6cbd;color:#fff;text-decoration:none;
border-radius:4px}}pre{{background:#f4f4f4;padding:1rem;white-space:pre-wrap;word-break:break-all}}
.ok{{color:#107c10}}.bad{{color:#c50f1f}}</style></head><body><h1>Contoso contact center (demo portal)</h1>{body}
</body></html>"""


class HandOffRefused(Exception):
    """The POSTed token must not start a session; `status` is the page's (403 for a foreign origin)."""

    def __init__(self, reason: str, status: int = 401, spent: str | None = None):
        super().__init__(reason)
        self.status = status
        self.spent = spent


def _cookie(name: str, value: str, max_age: int) -> str:
    # SameSite=None: the form_post from the app's origin is a cross-site POST in production (the app and
    # the portal are different sites), which would not carry a Lax cookie. __Host-: Secure, Path=/.
    return f"{name}={value}; Path=/; Secure; HttpOnly; SameSite=None; Max-Age={max_age}"


def nonce_cookie_name(kind: str, nonce: str) -> str:
    """`__Host-demo-portal-nonce-{kind}-{12 url-safe characters of the nonce's SHA-256}`: the landing
    finds the cookie of the token's own login from its `nonce` claim, and the name's length is fixed
    whatever the nonce's (16 to 128 characters)."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(nonce.encode()).digest()[:9]).decode()
    return f"{NONCE_PREFIX}{kind}-{digest}"


def nonce_cookies_held(cookies: Mapping[str, str]) -> list[tuple[int, str]]:
    """(start time in ns, name) of the nonce cookies a request carries, oldest first. The value is
    `{start time}.{nonce}`: browsers do not send a cookie's age, and the oldest is the one to evict."""
    found = []
    for name, value in cookies.items():
        if name.startswith(NONCE_PREFIX):
            started = value.partition(".")[0]
            found.append((int(started) if started.isascii() and started.isdigit() else 0, name))
    return sorted(found)


class PortalHalf:
    """The checks, apart from the pages: what a portal must do with the session token."""

    def __init__(self, app_base: str, audience: str, issuer: str | None = None, leeway: int = LEEWAY):
        self.app_base = app_base.rstrip("/")
        parts = urlsplit(self.app_base)
        self.app_origin = f"{parts.scheme}://{parts.netloc}".lower()
        self.audience = audience
        self.issuer = issuer or self.app_base
        self.leeway = leeway
        # The key set is cached 300 s and refetched on an unknown kid, at most once per 5 s (as the app's
        # own IdP key cache): a key rotated in is taken within seconds (PyJWKClient's default waits
        # 30 s after every fetch). No cache of single keys (cache_keys): PyJWT keeps those in an
        # lru_cache that never expires, so a key the app dropped went on verifying until a restart.
        self.jwks = jwt.PyJWKClient(f"{self.app_base}/api/sso/jwks.json", lifespan=300, cooldown_duration=5)
        self._seen: dict[str, float] = {}  # jti -> until when it must be remembered (its exp + leeway)
        self._lock = threading.Lock()

    def verify(self, token: str, kind: str) -> dict:
        """The JWT checks: signature by a key of the app's JWKS, the algorithm pinned to that key's, iss, aud, exp, nbf,
        iat (bounded leeway), every required claim, and the account_type of the page it was posted to."""
        key = self.jwks.get_signing_key_from_jwt(token)
        # The one algorithm of the key the kid names (the app's JWKS gives each key its `alg`): with a
        # list, a header saying RS256 over the EC key had PyJWT hand that key to RSA, a TypeError (500).
        claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience=self.audience,
                            issuer=self.issuer, leeway=self.leeway, options={"require": REQUIRED})
        if claims["iat"] > time.time() + self.leeway:
            raise jwt.ImmatureSignatureError("iat is in the future")
        if claims.get("account_type") != kind:
            raise jwt.InvalidTokenError(f"a {claims.get('account_type')} token posted to the {kind} page")
        return claims

    def accept(self, token: str, kind: str, *, origin: str | None, cookies: Mapping[str, str]) -> dict:
        """The whole check of one hand-off, given the request's cookies; returns the claims, or raises
        HandOffRefused (its `spent`: the nonce cookie of a verified token's login, for the page to clear)."""
        # 1. Only the app's own delivery page may POST here: the landing URL is exempt from the
        #    portal's CSRF tokens (the app cannot know them), which is safe because of 1 to 4.
        if (origin or "").lower() != self.app_origin:
            raise HandOffRefused(f"POST from origin {origin or '(none)'}, not {self.app_origin}", 403)
        try:
            claims = self.verify(token, kind)
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise HandOffRefused(f"{type(exc).__name__}: {exc}") from exc
        # 3. This browser started this login (login CSRF): it holds the cookie of the token's nonce, and
        #    the nonce in it is the token's. No cookie of that name: refused, never another cookie tried.
        nonce = str(claims.get("nonce", ""))
        spent = nonce_cookie_name(kind, nonce) if nonce else None
        held = cookies.get(spent, "").partition(".")[2] if spent else ""
        if not held or not secrets.compare_digest(nonce.encode(), held.encode()):
            raise HandOffRefused("the token's nonce is not this browser's login",
                                 spent=spent if spent in cookies else None)
        # 4. Each token once (a token copied from a browser, a log or a proxy cannot be replayed).
        now = time.time()
        with self._lock:
            self._seen = {jti: until for jti, until in self._seen.items() if until > now}
            if claims["jti"] in self._seen:
                raise HandOffRefused("this token was already used (jti seen)", spent=spent)
            self._seen[claims["jti"]] = claims["exp"] + self.leeway
        return claims


class DemoPortal:
    def __init__(self, app_base: str, audience: str, issuer: str | None = None):
        self.half = PortalHalf(app_base, audience, issuer)
        self.app_base = self.half.app_base
        self._sessions: dict[str, dict] = {}  # the portal's own sessions: id -> claims

    def verify(self, token: str, kind: str) -> dict:
        return self.half.verify(token, kind)

    def home(self, request: Request) -> Response:
        links = "".join(f'<a class="button" href="/{kind}/start">Sign in as {kind}</a>' for kind in KINDS)
        return self._page(f"<p>Sign in with Microsoft Entra ID (here: the local dev IdP).</p>{links}")

    def start(self, request: Request, kind: str) -> Response:
        """A nonce of this login, in a cookie of its own and in the login start; return_to on this portal.
        The browser's other logins in flight keep their cookies, but for the oldest beyond the bound."""
        nonce = secrets.token_urlsafe(32)
        query = urlencode({"return_to": f"{request.host_url.rstrip('/')}/{kind}/inbox", "nonce": nonce})
        response = Response(status=302, headers={"Location": f"{self.app_base}/api/sso/{kind}/login?{query}"})
        response.headers.add("Set-Cookie", _cookie(nonce_cookie_name(kind, nonce), f"{time.time_ns()}.{nonce}",
                                                   NONCE_SECONDS))
        held = nonce_cookies_held(request.cookies)
        for _, name in held[:max(0, len(held) + 1 - MAX_NONCE_COOKIES)]:
            response.headers.add("Set-Cookie", _cookie(name, "", 0))
        return self._no_store(response)

    def landing(self, request: Request, kind: str) -> Response:
        try:
            claims = self.half.accept(request.form.get("session_token", ""), kind,
                                      origin=request.headers.get("Origin"), cookies=request.cookies)
        except HandOffRefused as exc:
            body = (f'<h2 class="bad" id="refused">Session token refused</h2><p>{html.escape(str(exc))}</p>'
                    '<p><a href="/">Back</a></p>')
            refused = self._page(body, status=exc.status)
            if exc.spent:  # a verified token of this browser's login, refused: that login is over too
                refused.headers.add("Set-Cookie", _cookie(exc.spent, "", 0))
            return refused
        # The token was a one-time hand-off: from here on, the portal's own session is what counts.
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = claims
        target = claims.get("return_to") or f"/{kind}/inbox"  # the claim only: allow-listed by the app
        response = Response(status=303, headers={"Location": target})
        response.headers.add("Set-Cookie", _cookie(SESSION_COOKIE, session_id, SESSION_SECONDS))
        response.headers.add("Set-Cookie", _cookie(nonce_cookie_name(kind, claims["nonce"]), "", 0))
        return self._no_store(response)

    def signed_in(self, request: Request, kind: str) -> Response:
        claims = self._sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if not claims or claims.get("account_type") != kind:
            return self._page(f'<p>Not signed in. <a href="/{kind}/start">Sign in as {kind}</a></p>', status=401)
        body = (f'<h2 class="ok" id="signed-in">Signed in as {html.escape(claims.get("name") or claims["sub"])} '
                f"({html.escape(kind)})</h2><p>The session token was verified against "
                f"<code>{html.escape(self.app_base)}/api/sso/jwks.json</code>, accepted once, and started this "
                f"portal session.</p>"
                f'<h3>Claims</h3><pre id="claims">{html.escape(json.dumps(claims, indent=2))}</pre>'
                f'<p><a href="/{kind}/logout">Sign out</a> &middot; <a href="/">Home</a></p>')
        return self._page(body)

    def logout(self, request: Request, kind: str) -> Response:
        """Ends the portal's own session first (the token it came from is not a session), then the IdP's."""
        self._sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response = Response(status=302, headers={"Location": f"{self.app_base}/api/sso/{kind}/logout"})
        response.headers.add("Set-Cookie", _cookie(SESSION_COOKIE, "", 0))
        return self._no_store(response)

    def __call__(self, environ, start_response):
        request = Request(environ)
        kind, _, action = request.path.strip("/").partition("/")
        if kind in KINDS and request.method == "POST" and not action:
            response = self.landing(request, kind)
        elif kind in KINDS and request.method == "GET" and action in ("start", "logout"):
            response = getattr(self, action)(request, kind)
        elif kind in KINDS and request.method == "GET":
            response = self.signed_in(request, kind)
        elif request.method == "GET":
            response = self.home(request)
        else:
            response = Response("Method Not Allowed", status=405)
        return response(environ, start_response)

    @staticmethod
    def _no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    @classmethod
    def _page(cls, body: str, status: int = 200) -> Response:
        response = Response(PAGE.format(body=body), status=status, mimetype="text/html")
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return cls._no_store(response)


def main(argv: list[str] | None = None) -> int:
    from .host import serve_in_thread

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--app-base", default="https://127.0.0.1:7071")
    parser.add_argument("--audience", default="https://127.0.0.1:7080")
    parser.add_argument("--port", type=int, default=7080)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args(argv)
    handle = serve_in_thread(DemoPortal(args.app_base, args.audience), port=args.port,
                             ssl_context=(args.cert, args.key) if args.cert else None)
    print(f"demo portal on {handle.url}", flush=True)
    try:
        handle.thread.join()
    except KeyboardInterrupt:
        handle.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
