"""A demo portal page: the example of how a portal receives and verifies our session token.

It links to the login of each kind, receives the form_post at /user and /agent, verifies the token
against the app's JWKS (signature, pinned algorithms, iss, aud, exp/nbf, account_type of the page)
and shows its claims. Run by `make run`; `python -m tools.demo_portal --help` runs it alone."""

from __future__ import annotations

import argparse
import html
import json
from urllib.parse import urlencode

import jwt
from werkzeug.wrappers import Request, Response

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Demo portal</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}}
a.button{{display:inline-block;padding:.6rem 1rem;margin:.3rem;background:#0f6cbd;color:#fff;text-decoration:none;
border-radius:4px}}pre{{background:#f4f4f4;padding:1rem;white-space:pre-wrap;word-break:break-all}}
.ok{{color:#107c10}}.bad{{color:#c50f1f}}</style></head><body><h1>Contoso contact center (demo portal)</h1>{body}
</body></html>"""


class DemoPortal:
    def __init__(self, app_base: str, audience: str, issuer: str | None = None):
        self.app_base = app_base.rstrip("/")
        self.audience = audience
        self.issuer = issuer or self.app_base
        # PyJWKClient caches the keys and refetches on an unknown kid: a rotation is picked up at once.
        self.jwks = jwt.PyJWKClient(f"{self.app_base}/api/sso/jwks.json", cache_keys=True, lifespan=300)

    def verify(self, token: str, kind: str) -> dict:
        """The checks every portal must make on our token before trusting it."""
        key = self.jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(token, key.key, algorithms=["RS256", "ES256"], audience=self.audience,
                            issuer=self.issuer, leeway=60,
                            options={"require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]})
        if claims.get("account_type") != kind:
            raise jwt.InvalidTokenError(f"a {claims.get('account_type')} token posted to the {kind} page")
        return claims

    def home(self, request: Request) -> Response:
        origin = f"{request.scheme}://{request.host}"
        links = "".join(
            f'<a class="button" href="{html.escape(self.app_base)}/api/sso/{kind}/login?'
            f'{html.escape(urlencode({"return_to": f"{origin}/{kind}/inbox"}))}">Sign in as {kind}</a>'
            for kind in ("user", "agent"))
        return self._page(f"<p>Sign in with Microsoft Entra ID (here: the local dev IdP).</p>{links}")

    def landing(self, request: Request, kind: str) -> Response:
        token = request.form.get("session_token", "")
        try:
            claims = self.verify(token, kind)
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            body = (f'<h2 class="bad">Session token refused</h2><p>{html.escape(type(exc).__name__)}: '
                    f"{html.escape(str(exc))}</p>")
            return self._page(body + '<p><a href="/">Back</a></p>', status=401)
        header = jwt.get_unverified_header(token)
        body = (f'<h2 class="ok" id="signed-in">Signed in as {html.escape(claims.get("name") or claims["sub"])} '
                f"({html.escape(kind)})</h2><p>The session token was verified against "
                f"<code>{html.escape(self.app_base)}/api/sso/jwks.json</code> (kid "
                f"<code>{html.escape(str(header.get('kid')))}</code>, {html.escape(str(header.get('alg')))}).</p>"
                f'<h3>Claims</h3><pre id="claims">{html.escape(json.dumps(claims, indent=2))}</pre>'
                f"<p>return_to: <code>{html.escape(request.form.get('return_to', '(none)'))}</code></p>"
                f'<p><a href="{html.escape(self.app_base)}/api/sso/{kind}/logout">Sign out</a> &middot; '
                '<a href="/">Home</a></p>')
        return self._page(body)

    def __call__(self, environ, start_response):
        request = Request(environ)
        kind = request.path.strip("/")
        if request.method == "POST" and kind in ("user", "agent"):
            response = self.landing(request, kind)
        elif request.method == "GET":
            response = self.home(request)
        else:
            response = Response("Method Not Allowed", status=405)
        return response(environ, start_response)

    @staticmethod
    def _page(body: str, status: int = 200) -> Response:
        response = Response(PAGE.format(body=body), status=status, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return response


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
