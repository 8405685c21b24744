"""`make run`: the whole local stack in one command.

Azurite (Table Storage), the dev IdP (oidc-provider shaped like Entra ID, with demo people), the
function app (tools.host, HTTPS) and the demo portal, all on 127.0.0.1 with a local test CA made in
.devstack/ (git-ignored). Demo accounts are seeded. Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .stack import (
    ROOT,
    ensure_npm_packages,
    entra_person,
    idp_config,
    make_ca,
    start_azurite,
    start_idp,
    trust_env,
)

STATE = ROOT / ".devstack"
TENANT = "11111111-2222-4333-8444-555555555555"
CLIENT_ID = "00000000-0000-4000-8000-00000000c11d"
PORTS = {
    "app": int(os.environ.get("DEV_APP_PORT", 7071)),
    "idp": int(os.environ.get("DEV_IDP_PORT", 7443)),
    "portal": int(os.environ.get("DEV_PORTAL_PORT", 7080)),
    "azurite": int(os.environ.get("DEV_TABLES_PORT", 10002)),
}
PEOPLE = [
    ("user@contoso.test", "user", "Demo User", "0c1f6b0e-2b8e-4f5a-9d51-7a3e1f2c9b01"),
    ("agent@contoso.test", "agent", "Demo Agent", "5e2d9c4a-8b7f-4e1d-a3c6-0f9b8a7d6c02"),
    ("nobody@contoso.test", "nobody", "No Portal Account", "9d3c2b1a-0f9e-4d8c-b7a6-5e4d3c2b1a03"),
]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _state_secret(name: str, make) -> str:
    """A value made once and kept in .devstack/, so restarts keep the same keys and secrets."""
    path = STATE / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text()


def _new_signing_key() -> str:
    # EC P-256 (ES256): it loads in well under a millisecond and signs faster than RSA 2048, whose
    # key loading alone cost 36 ms on the first callback.
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def app_settings(issuer: str, client_secret: str, tables_connection_string: str) -> dict[str, str]:
    app, portal = f"https://127.0.0.1:{PORTS['app']}", f"https://127.0.0.1:{PORTS['portal']}"
    return {
        "OIDC_ISSUER_URL": f"{issuer}/.well-known/openid-configuration",
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": client_secret,
        "SESSION_SIGNING_KEY": _state_secret("session-signing-key.pem", _new_signing_key),
        "TABLES_CONNECTION_STRING": tables_connection_string,
        "PORTAL_USER_URL": f"{portal}/user",
        "PORTAL_AGENT_URL": f"{portal}/agent",
        "PUBLIC_BASE_URL": app,
        "SESSION_TOKEN_AUDIENCE": portal,
        # Directory sync on, with a token kept in .devstack/ (make scim-demo sends a provisioning cycle).
        "SCIM_TOKEN": _state_secret("scim-token", lambda: secrets.token_urlsafe(32)),
    }


def main() -> int:
    busy = [f"{name} port {port}" for name, port in PORTS.items() if not _port_free(port)]
    if busy:
        print(f"make run: {', '.join(busy)} already in use. Stop what uses it, or set DEV_APP_PORT, "
              "DEV_IDP_PORT, DEV_PORTAL_PORT or DEV_TABLES_PORT.", file=sys.stderr)
        return 1
    STATE.mkdir(exist_ok=True)
    ensure_npm_packages()
    ca = make_ca(STATE / "ca")
    os.environ.update(trust_env(ca))
    os.environ.pop("CURL_CA_BUNDLE", None)  # requests would prefer it to our bundle
    logs = STATE / "logs"
    logs.mkdir(exist_ok=True)
    services = []
    try:
        print("starting Azurite (Table Storage) ...", flush=True)
        azurite = start_azurite(PORTS["azurite"], workdir=logs)
        services.append(azurite)
        app_base, portal = f"https://127.0.0.1:{PORTS['app']}", f"https://127.0.0.1:{PORTS['portal']}"
        secret = _state_secret("client-secret", lambda: secrets.token_urlsafe(32))
        client = {"client_id": CLIENT_ID, "client_secret": secret, "token_endpoint_auth_method": "client_secret_post",
                  "redirect_uris": [f"{app_base}/api/sso/{k}/callback" for k in ("user", "agent")],
                  "post_logout_redirect_uris": [f"{portal}/user", f"{portal}/agent"]}
        people = [entra_person(email, password, name=name, oid=oid, tenant=TENANT)
                  for email, password, name, oid in PEOPLE]
        print("starting the dev IdP (oidc-provider, Entra-shaped) ...", flush=True)
        idp = start_idp(idp_config(ca, port=PORTS["idp"], tenant=TENANT, clients=[client], people=people),
                        workdir=logs)
        services.append(idp)
        settings = app_settings(idp.url, secret, azurite.connection_string)
        env = {**os.environ, **settings}
        seed(settings["TABLES_CONNECTION_STRING"])
        print("starting the function app (tools.host) and the demo portal ...", flush=True)
        app = subprocess.Popen([sys.executable, "-m", "tools.host", "--port", str(PORTS["app"]),
                                "--cert", str(ca.server_cert), "--key", str(ca.server_key)], cwd=ROOT, env=env)
        portal_proc = subprocess.Popen([sys.executable, "-m", "tools.demo_portal", "--app-base", app_base,
                                        "--audience", portal, "--port", str(PORTS["portal"]),
                                        "--cert", str(ca.server_cert), "--key", str(ca.server_key)],
                                       cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        time.sleep(1.5)
        print(f"""
Local stack is up (logs in {logs}).

  Open the demo portal:   {portal}/
  Sign in as a user:      user@contoso.test   / user
  Sign in as an agent:    agent@contoso.test  / agent
  No portal account:      nobody@contoso.test / nobody   (shows the 403 page)

  Function app:           {app_base}/api/sso/setup   (setup page)   {app_base}/api/health
  Dev IdP (issuer):       {idp.url}
  Table Storage:          Azurite on 127.0.0.1:{PORTS['azurite']} (in memory)

  Directory sync (SCIM):  tenant URL {app_base}/api/scim/v2
                          token {settings["SCIM_TOKEN"]}   (kept in .devstack/scim-token)
                          `make scim-demo` provisions people; then nobody@contoso.test signs in as an agent

Everything is served over HTTPS with a local test CA: {ca.ca_cert}
Import it into your browser as a trusted authority, or accept the certificate warnings.
Press Ctrl-C to stop.""", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        while app.poll() is None and portal_proc.poll() is None:
            time.sleep(0.5)
        print("a process of the stack exited; stopping.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        for proc in [p for p in (locals().get("app"), locals().get("portal_proc")) if p is not None]:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for service in reversed(services):
            service.stop()


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


def seed(connection_string: str) -> None:
    """The demo accounts: the demo user's user account and the demo agent's agent account."""
    from shared.accounts import AccountStore
    from shared.tables import ACCOUNTS_TABLE, Tables

    store = AccountStore(Tables.from_settings(connection_string, None, lambda: None).client(ACCOUNTS_TABLE))
    store.add("user@contoso.test", "user", "U-1001", "Demo User")
    store.add("agent@contoso.test", "agent", "A-2001", "Demo Agent")
    print(json.dumps({"seeded": ["user@contoso.test (user U-1001)", "agent@contoso.test (agent A-2001)"]}))


if __name__ == "__main__":
    raise SystemExit(main())
