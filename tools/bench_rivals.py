"""Our login against the libraries people would pick instead (`make bench-rivals`), side by side in one
run: the same dev IdP (HTTPS), the same Azurite, the same browser, the same keep-alive server
(tools.host's), logins interleaved (ours, then each rival's, round after round).

- **identity** (Microsoft's `identity` 0.11, the helper its Flask samples use): `identity.web.Auth`
  over Flask's session; the authorization URI asks for `form_post`, as ours does.
- **Authlib** (1.9, its Flask OAuth client, PKCE S256): `authorize_redirect` / `authorize_access_token`,
  which also validates the ID token (signature, iss, aud, exp, nonce).

Each rival's callback then does what ours does after the token: the account's point read and one
audit row (azure-data-tables, as its docs show it: a TableClient from the connection string), an ES256
session token (PyJWT) and an auto-posting form page. Ours also checks what the rivals do not (the
binding cookie, single use, tenant, email verification, ...).

Two rounds: the machine's defaults (REQUESTS_CA_BUNDLE: the system bundle plus the local CA, which
every new TLS connection loads), and tuned (a trust store of the local CA alone). Printed per app:
callback p50/p95 through the host, and the process CPU of a whole login (start + callback, this one
process: the browser's share is the same for every app), p50.

    .venv/bin/python -m tools.bench_rivals [--logins 200]

Needs the rivals installed (`make bench-rivals` installs requirements-bench.txt first). Not a test and
not in CI: it prints figures and exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .bench_login import CLIENT_ID, PASSWORD, SECRET, TENANT, Browser, cpu_model, git_commit, percentile
from .idp_login import sign_in_at_idp
from .stack import entra_person, free_port, idp_config, make_ca, start_azurite, start_idp, trust_env

EMAIL = "rival@contoso.test"
ACCOUNTS, EVENTS = "PortalAccounts", "SignInEvents"
PAGE = ('<!doctype html><html><head><meta charset="utf-8"><title>Signing in</title></head><body onload='
        '"document.forms[0].submit()"><form method="post" action="https://127.0.0.1:9/user"><input type='
        '"hidden" name="session_token" value="{token}"><noscript><button>Continue</button></noscript></form>'
        '</body></html>')


class Job:
    """What a rival's callback does once it has the ID token's claims: the account, the audit row, the
    session token and the page, with the SDK and PyJWT as their docs show them."""

    def __init__(self, connection_string: str, key_pem: str):
        from azure.data.tables import TableClient

        self.accounts = TableClient.from_connection_string(connection_string, ACCOUNTS)
        self.events = TableClient.from_connection_string(connection_string, EVENTS)
        self.key = serialization.load_pem_private_key(key_pem.encode(), password=None)

    def finish(self, claims: dict) -> str:
        import uuid

        import jwt

        email = str(claims.get("email") or "").lower()
        account = self.accounts.get_entity(email, "user")
        now = int(time.time())
        self.events.upsert_entity({"PartitionKey": time.strftime("%Y%m%d"), "RowKey": str(uuid.uuid4()),
                                   "Kind": "user", "Email": email, "Outcome": "success",
                                   "AccountId": account["AccountId"]})
        token = jwt.encode({"iss": "portal-sso", "aud": "portal", "sub": account["AccountId"], "email": email,
                            "iat": now, "exp": now + 300}, self.key, algorithm="ES256")
        return PAGE.format(token=token)


def identity_app(issuer: str, redirect_uri: str, job: Job):
    import flask
    import identity.web

    app = flask.Flask("rival-identity")
    app.secret_key = os.urandom(32)
    http_cache: dict = {}  # the helper's own way to share MSAL's discovery across requests

    def auth():
        return identity.web.Auth(session=flask.session, client_id=CLIENT_ID + "-identity",
                                 client_credential=SECRET, oidc_authority=issuer, http_cache=http_cache)

    @app.get("/login")
    def login():
        started = auth().log_in(scopes=["email"], redirect_uri=redirect_uri)
        return flask.redirect(started["auth_uri"] + "&response_mode=form_post")

    @app.post("/callback")
    def callback():
        helper = auth()
        result = helper.complete_log_in(flask.request.form.to_dict())
        user = helper.get_user()
        if "error" in result or not user:
            return f"refused: {result}", 401
        return job.finish(user)

    return app


def authlib_app(issuer: str, redirect_uri: str, job: Job):
    import flask
    from authlib.integrations.flask_client import OAuth

    app = flask.Flask("rival-authlib")
    app.secret_key = os.urandom(32)
    oauth = OAuth(app)
    idp = oauth.register("idp", client_id=CLIENT_ID + "-authlib", client_secret=SECRET,
                         server_metadata_url=f"{issuer}/.well-known/openid-configuration",
                         client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256",
                                        "token_endpoint_auth_method": "client_secret_post"})

    @app.get("/login")
    def login():
        return idp.authorize_redirect(redirect_uri, response_mode="form_post")

    @app.post("/callback")
    def callback():
        token = idp.authorize_access_token()
        return job.finish(token["userinfo"])

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=200, help="per app and round")
    parser.add_argument("--markdown", type=Path, help="append the figures to this file (BENCHMARKS.md)")
    parser.add_argument("--label", default="the rivals, side by side", help="the markdown section's title")
    args = parser.parse_args(argv)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    try:
        import authlib  # noqa: F401
        import flask  # noqa: F401
        import identity  # noqa: F401
    except ImportError as exc:
        print(f"the rivals are not installed ({exc.name}): run `make bench-rivals`", file=sys.stderr)
        return 2

    from . import host

    work = Path(tempfile.mkdtemp(prefix="bench-rivals-"))
    ca = make_ca(work / "ca")
    os.environ.update(trust_env(ca))
    os.environ.pop("CURL_CA_BUNDLE", None)
    full_bundle = os.environ["REQUESTS_CA_BUNDLE"]
    ports = {name: free_port() for name in ("ours", "identity", "authlib")}
    base = {name: f"https://127.0.0.1:{port}" for name, port in ports.items()}
    redirect = {"ours": f"{base['ours']}/api/sso/user/callback", "identity": f"{base['identity']}/callback",
                "authlib": f"{base['authlib']}/callback"}
    clients = [{"client_id": CLIENT_ID + ("" if name == "ours" else f"-{name}"), "client_secret": SECRET,
                "token_endpoint_auth_method": "client_secret_post", "redirect_uris": [uri]}
               for name, uri in redirect.items()]
    person = entra_person(EMAIL, PASSWORD, name="Rival Bench", oid="0c1f6b0e-2b8e-4f5a-9d51-0000000000aa",
                          tenant=TENANT)
    azurite = start_azurite(workdir=work)
    idp = start_idp(idp_config(ca, port=free_port(), tenant=TENANT, clients=clients, people=[person]), workdir=work)
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    os.environ.update({"OIDC_ISSUER_URL": idp.url, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": SECRET,
                       "SESSION_SIGNING_KEY": key, "TABLES_CONNECTION_STRING": azurite.connection_string,
                       "PORTAL_USER_URL": "https://127.0.0.1:9/user", "PORTAL_AGENT_URL": "https://127.0.0.1:9/agent",
                       "PUBLIC_BASE_URL": base["ours"]})
    import function_app
    from shared.runtime import get_runtime

    get_runtime().accounts.add(EMAIL, "user", "U-RIVAL", "Rival Bench")
    get_runtime().tables.client(EVENTS)  # made by our app's first use; the rivals write to it too
    job = Job(azurite.connection_string, key)
    tls = (str(ca.server_cert), str(ca.server_key))
    servers = [host.serve_in_thread(host.build_wsgi_app(function_app.app), port=ports["ours"], ssl_context=tls),
               host.serve_in_thread(identity_app(idp.url, redirect["identity"], job), port=ports["identity"],
                                    ssl_context=tls),
               host.serve_in_thread(authlib_app(idp.url, redirect["authlib"], job), port=ports["authlib"],
                                    ssl_context=tls)]
    start_path = {"ours": "/api/sso/user/login", "identity": "/login", "authlib": "/login"}
    load = os.getloadavg()
    say(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, load average at start "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}; commit {git_commit()}")
    try:
        for round_name, bundle in (("defaults (REQUESTS_CA_BUNDLE: system bundle + local CA)", full_bundle),
                                   ("tuned (a trust store of the local CA alone)", str(ca.ca_cert))):
            os.environ["REQUESTS_CA_BUNDLE"] = bundle  # what the rivals' new sessions read
            browsers = {name: Browser(full_bundle) for name in base}
            walls: dict[str, list[float]] = {name: [] for name in base}
            cpus: dict[str, list[float]] = {name: [] for name in base}
            for n in range(args.logins + 10):
                for name, browser in browsers.items():
                    cpu = time.process_time()
                    started = browser.session.get(base[name] + start_path[name], allow_redirects=False, timeout=30)
                    assert started.status_code in (302, 303), (name, started.status_code, started.text[:200])
                    cpu_start = time.process_time() - cpu
                    action, fields = sign_in_at_idp(browser.session, started.headers["Location"], EMAIL, PASSWORD)
                    t, cpu = time.perf_counter(), time.process_time()
                    done = browser.session.post(action, data=fields, allow_redirects=False, timeout=30)
                    wall, cpu_callback = (time.perf_counter() - t) * 1000, time.process_time() - cpu
                    assert done.status_code == 200 and "session_token" in done.text, (name, done.status_code,
                                                                                      done.text[:300])
                    if n >= 10:
                        walls[name].append(wall)
                        cpus[name].append((cpu_start + cpu_callback) * 1000)
            say()
            say(f"{round_name}, {args.logins} logins per app, interleaved")
            say()
            say("| app | callback p50 ms | callback p95 ms | CPU per login p50 ms |")
            say("| --- | ---: | ---: | ---: |")
            for name in base:
                say(f"| {name} | {statistics.median(walls[name]):.1f} | {percentile(walls[name], 95):.1f} | "
                    f"{statistics.median(cpus[name]):.1f} |")
    finally:
        for server in servers:
            server.stop()
    if args.markdown:
        with args.markdown.open("a") as out:
            out.write(f"\n## {args.label}\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
