"""`make run`: the whole local stack in one command.

Azurite (Table Storage, its data kept in .devstack/azurite), the dev IdP (oidc-provider shaped like
Entra ID, with demo people), the function app (tools.host, HTTPS) and the demo portal, all on
127.0.0.1 with a local test CA made in .devstack/ (git-ignored). Demo accounts are seeded when
missing. It leaves local.settings.json in the project root (git-ignored), which the accounts CLI and
tools.host read. Like Core Tools, the process environment wins over those settings where it holds a
value (`OIDC_CLIENT_SECRET=wrong make run` runs the app with that secret; an empty variable is filled).
`make run SCENARIO=NAME` sets up one of the mistakes admins make (SCENARIOS), to see what the setup
page, health and the person show.
Ctrl-C stops everything, and so do `kill` (SIGTERM) and closing the terminal (SIGHUP), at any moment."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.config import KINDS, SETTINGS_TABLE, redirect_uri, signed_out_uri

from .local_settings import apply_values
from .stack import (
    ROOT,
    STOP_SIGNALS,
    TestCA,
    ensure_npm_packages,
    entra_person,
    idp_config,
    make_ca,
    new_account_key,
    signals_deferred,
    start_azurite,
    start_idp,
    stop_all,
    trust_env,
    write_private,
)

# Elsewhere only for the tests (and a second stack): DEV_STATE_DIR, DEV_SETTINGS_FILE.
STATE = Path(os.environ.get("DEV_STATE_DIR") or ROOT / ".devstack")
LOCAL_SETTINGS = Path(os.environ.get("DEV_SETTINGS_FILE") or ROOT / "local.settings.json")
WRITTEN_BY = "make run (tools/dev.py)"  # in the file it writes: a file without it is someone's own
WRITTEN_SETTINGS = STATE / "local.settings.json"  # the copy of what make run last wrote: is the root file ours?
TENANT = "11111111-2222-4333-8444-555555555555"
OTHER_TENANT = "99999999-8888-4777-8666-555555555555"
CLIENT_ID = "00000000-0000-4000-8000-00000000c11d"
PORT_VARIABLES = {"app": ("DEV_APP_PORT", 7071), "idp": ("DEV_IDP_PORT", 7443), "portal": ("DEV_PORTAL_PORT", 7080),
                  "azurite": ("DEV_TABLES_PORT", 10002)}


def read_ports(environ) -> tuple[dict[str, int], list[str]]:
    """Each service's port, from its variable (unset or empty: the default), and what is not a port;
    said by main, not raised here at import (a traceback), nor by a socket (which takes 99999 modulo 65536)."""
    ports, problems = {}, []
    for service, (variable, default) in PORT_VARIABLES.items():
        raw = environ.get(variable, "").strip()
        port = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 5 else 0
        if raw and not 1 <= port <= 65535:
            problems.append(f"{variable}={raw!r} is not a port (1 to 65535)")
        ports[service] = port if raw and 1 <= port <= 65535 else default
    return ports, problems


PORTS, PORT_PROBLEMS = read_ports(os.environ)
# (login, password, name, oid, app roles): the roles claim Entra sends for the app roles assigned.
PEOPLE = [
    ("user@contoso.test", "user", "Demo User", "0c1f6b0e-2b8e-4f5a-9d51-7a3e1f2c9b01", ["Portal.User"]),
    ("agent@contoso.test", "agent", "Demo Agent", "5e2d9c4a-8b7f-4e1d-a3c6-0f9b8a7d6c02", ["Portal.Agent"]),
    ("nobody@contoso.test", "nobody", "No Portal Account", "9d3c2b1a-0f9e-4d8c-b7a6-5e4d3c2b1a03", ["Portal.User"]),
]


@dataclass(frozen=True)
class Scenario:
    """One mistake an admin makes, set up in the IdP and the app: what the person then sees."""

    what: str
    app: dict[str, str] = field(default_factory=dict)  # settings that differ from the working stack
    person: dict = field(default_factory=dict)  # claims that differ for every demo person (None drops one)


SCENARIOS = {
    "wrong-secret": Scenario("the app holds a client secret the IdP does not accept (a secret's ID pasted for "
                             "its Value, or an old one): sign-in ends in a 401, the setup page and health say so",
                             app={"OIDC_CLIENT_SECRET": "not-the-secret-the-idp-holds"}),
    "no-email-claim": Scenario("the app registration has no 'email' optional claim: a 403 no_email_claim, and the "
                               "setup page's last sign-in says 'email claim in the token: no'",
                               person={"email": None, "xms_edov": None}),  # Entra sends xms_edov with email only
    "wrong-tenant": Scenario(f"people come from another tenant ({OTHER_TENANT}) than the app allows: a 403 "
                             "tenant_not_allowed, and the setup page names ALLOWED_TENANT_IDS",
                             person={"tid": OTHER_TENANT}),
    "no-role": Scenario("APP_ROLES_REQUIRED=true but no one is assigned the kind's app role (Portal.User, "
                        "Portal.Agent): a 403 role_not_assigned",
                        app={"APP_ROLES_REQUIRED": "true"}, person={"roles": None}),
}


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _state_secret(name: str, make) -> str:
    """A value made once and kept in .devstack/, so restarts keep the same keys and secrets."""
    path = STATE / name
    if not path.exists():
        write_private(path, make())
    return path.read_text()


def _new_signing_key() -> str:
    # EC P-256 (ES256): it loads in well under a millisecond and signs faster than RSA 2048, whose
    # key loading alone cost 36 ms on the first callback.
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def app_settings(issuer: str, client_secret: str, tables_connection_string: str, ca: TestCA) -> dict[str, str]:
    """The working stack's settings (what local.settings.json holds, the scenario's changes applied)."""
    app, portal = f"https://127.0.0.1:{PORTS['app']}", f"https://127.0.0.1:{PORTS['portal']}"
    return {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "OIDC_ISSUER_URL": f"{issuer}/.well-known/openid-configuration",
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": client_secret,
        "SESSION_SIGNING_KEY": _state_secret("session-signing-key.pem", _new_signing_key),
        "TABLES_CONNECTION_STRING": tables_connection_string,
        "PORTAL_USER_URL": f"{portal}/user",
        "PORTAL_AGENT_URL": f"{portal}/agent",
        "PUBLIC_BASE_URL": app,
        "SESSION_TOKEN_AUDIENCE": portal,
        # So that tools.host alone, started on these settings, trusts the dev IdP's test CA too.
        **trust_env(ca),
        # Directory sync on, with a token kept in .devstack/ (make scim-demo sends a provisioning cycle).
        "SCIM_TOKEN": _state_secret("scim-token", lambda: secrets.token_urlsafe(32)),
    }


def demo_people(scenario: Scenario | None) -> list[dict]:
    people = []
    for email, password, name, oid, roles in PEOPLE:
        person = entra_person(email, password, name=name, oid=oid, tenant=TENANT, roles=roles)
        for claim, value in (scenario.person if scenario else {}).items():
            if value is None:
                person["claims"].pop(claim, None)
            else:
                person["claims"][claim] = value
        people.append(person)
    return people


def _written_by_make_run(path: Path) -> bool:
    """Whether the file says make run wrote it: so it is still ours once .devstack/ (and the copy there
    that told before) was deleted to start afresh. Core Tools ignores the extra key."""
    try:
        return json.loads(path.read_text()).get("WrittenBy") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False


def write_local_settings(values: dict[str, str]) -> str:
    """Writes local.settings.json for the accounts CLI and tools.host, unless the file there is not
    one make run wrote (someone's own settings for `func start`: left alone). Says what it did."""
    text = json.dumps({"IsEncrypted": False, "Values": values, "Host": {"LocalHttpPort": PORTS["app"]},
                       "WrittenBy": WRITTEN_BY}, indent=2)
    ours = not LOCAL_SETTINGS.exists() or _written_by_make_run(LOCAL_SETTINGS) or (
        WRITTEN_SETTINGS.exists() and LOCAL_SETTINGS.read_text() == WRITTEN_SETTINGS.read_text())
    for path in (WRITTEN_SETTINGS, LOCAL_SETTINGS) if ours else (WRITTEN_SETTINGS,):
        write_private(path, text)  # it holds the storage key
    if ours:
        return f"{LOCAL_SETTINGS} (read by tools.accounts and tools.host; git-ignored)"
    return (f"{WRITTEN_SETTINGS} (your own {LOCAL_SETTINGS.name} was left alone: copy this one over it for "
            "tools.accounts to reach this stack's storage)")


def from_environment(values: dict[str, str]) -> list[str]:
    """The settings the process environment overrides (it wins, as with Core Tools, where it is not empty):
    those of `values` it holds another value for, and every other app setting it holds (the app gets the
    whole environment, so an APP_ROLES_REQUIRED left exported in the shell applies too). Names only."""
    filled = apply_values(values, dict(os.environ))
    written = {name for name in values if name not in filled and os.environ[name] != values[name]}
    unwritten = {info.name for info in SETTINGS_TABLE if info.name not in values and os.environ.get(info.name)}
    return sorted(written | unwritten)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default=os.environ.get("SCENARIO") or None, choices=sorted(SCENARIOS),
                        help="a mistake to set up (also SCENARIO=NAME)")
    args = parser.parse_args(argv)
    if args.scenario is not None and args.scenario not in SCENARIOS:  # argparse checks no default (SCENARIO=)
        parser.error(f"SCENARIO={args.scenario!r} is not one of: {', '.join(sorted(SCENARIOS))}")
    if PORT_PROBLEMS:
        parser.error("; ".join(PORT_PROBLEMS))
    # Azurite and the IdP run in sessions of their own, out of reach of the terminal's signals: every
    # stop (Ctrl-C, `kill`, the terminal closing) must come through here, from the first moment, or
    # they outlive make run and hold their ports. A signal ignored already (nohup) stays ignored.
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _interrupt)
    children: list[subprocess.Popen] = []  # the host and the portal; the services are stack's to stop
    try:
        return _run(args.scenario, children)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            print("\nstopping ...", flush=True)
        return 0
    finally:
        for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the stopping short
            signal.signal(sig, signal.SIG_IGN)
        for proc in children:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        stop_all()  # whatever has started, or is starting, of Azurite and the IdP
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _run(scenario_name: str | None, children: list[subprocess.Popen]) -> int:
    """Starts the stack and waits; a stop signal ends it with KeyboardInterrupt at any point."""
    scenario = SCENARIOS[scenario_name] if scenario_name else None
    busy = [f"{name} port {port}" for name, port in PORTS.items() if not _port_free(port)]
    if busy:
        print(f"make run: {', '.join(busy)} already in use. Stop what uses it, or set DEV_APP_PORT, "
              "DEV_IDP_PORT, DEV_PORTAL_PORT or DEV_TABLES_PORT.", file=sys.stderr)
        return 1
    STATE.mkdir(parents=True, exist_ok=True)
    ensure_npm_packages()
    ca = make_ca(STATE / "ca")
    os.environ.update(trust_env(ca))
    os.environ.pop("CURL_CA_BUNDLE", None)  # requests would prefer it to our bundle
    logs = STATE / "logs"
    logs.mkdir(exist_ok=True)
    print("starting Azurite (Table Storage) ...", flush=True)
    # On disk in .devstack/azurite, under a key made once: demo accounts survive a restart.
    azurite = start_azurite(PORTS["azurite"], workdir=STATE / "azurite", on_disk=True,
                            key=_state_secret("azurite-account-key", new_account_key))
    app_base, portal = f"https://127.0.0.1:{PORTS['app']}", f"https://127.0.0.1:{PORTS['portal']}"
    secret = _state_secret("client-secret", lambda: secrets.token_urlsafe(32))
    client = {"client_id": CLIENT_ID, "client_secret": secret, "token_endpoint_auth_method": "client_secret_post",
              "redirect_uris": [redirect_uri(app_base, k) for k in KINDS],
              "post_logout_redirect_uris": [signed_out_uri(app_base, k) for k in KINDS]}
    print("starting the dev IdP (oidc-provider, Entra-shaped) ...", flush=True)
    idp = start_idp(idp_config(ca, port=PORTS["idp"], tenant=TENANT, clients=[client],
                               people=demo_people(scenario)), workdir=logs)
    settings = app_settings(idp.url, secret, azurite.connection_string, ca)
    settings.update(scenario.app if scenario else {})
    with signals_deferred():  # never half written: a torn file would no longer count as ours
        written = write_local_settings(settings)
    overridden = from_environment(settings)
    env = dict(os.environ)
    apply_values(settings, env)  # the environment wins where it holds a value, as with Core Tools
    seed(settings["TABLES_CONNECTION_STRING"])
    print("starting the function app (tools.host) and the demo portal ...", flush=True)
    with signals_deferred():  # each is on the list as soon as it exists
        # The stack's own settings file: an admin's local.settings.json in the root (left alone, for
        # `func start`) must not fill in what the stack does not set (KEY_VAULT_URL, tenants, roles).
        app = subprocess.Popen([sys.executable, "-m", "tools.host", "--port", str(PORTS["app"]),
                                "--settings", str(WRITTEN_SETTINGS),
                                "--cert", str(ca.server_cert), "--key", str(ca.server_key)], cwd=ROOT, env=env)
        children.append(app)
    with signals_deferred():
        portal_proc = subprocess.Popen([sys.executable, "-m", "tools.demo_portal", "--app-base", app_base,
                                        "--audience", portal, "--port", str(PORTS["portal"]),
                                        "--cert", str(ca.server_cert), "--key", str(ca.server_key)],
                                       cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        children.append(portal_proc)
    time.sleep(1.5)
    notes = ""
    if scenario:
        notes += (f"\n  SCENARIO {scenario_name}: {scenario.what}.\n"
                  "  Sign in, then open the setup page and health.\n")
    if overridden:
        notes += f"\n  From your environment (it wins over local.settings.json): {', '.join(overridden)}\n"
    print(f"""
Local stack is up (logs in {logs}).
{notes}
  Open the demo portal:   {portal}/
  Sign in as a user:      user@contoso.test   / user
  Sign in as an agent:    agent@contoso.test  / agent
  No portal account:      nobody@contoso.test / nobody   (shows the 403 page)

  Function app:           {app_base}/api/sso/setup   (setup page)   {app_base}/api/health
  Dev IdP (issuer):       {idp.url}
  Table Storage:          Azurite on 127.0.0.1:{PORTS['azurite']}, data in {STATE / 'azurite'}
  Settings written to:    {written}
  Scenarios:              make run SCENARIO={'|'.join(sorted(SCENARIOS))}

  Directory sync (SCIM):  tenant URL {app_base}/api/scim/v2
                          token {settings["SCIM_TOKEN"]}   (kept in .devstack/scim-token)
                          `make scim-demo` provisions people; then nobody@contoso.test signs in as an agent

Everything but Azurite is served over HTTPS with a local test CA: {ca.ca_cert}
Import it into your browser as a trusted authority, or accept the certificate warnings.
Press Ctrl-C to stop.""", flush=True)
    while app.poll() is None and portal_proc.poll() is None:
        time.sleep(0.5)
    print("a process of the stack exited; stopping.", file=sys.stderr)
    return 1


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


DEMO_ACCOUNTS = [("user@contoso.test", "user", "U-1001", "Demo User"),
                 ("agent@contoso.test", "agent", "A-2001", "Demo Agent")]


def seed(connection_string: str) -> list[str]:
    """The demo accounts (the demo user's user account, the demo agent's agent account), each added
    only when missing: a restart keeps what the stack's storage holds (links, last logins, your own
    accounts and changes). Returns those it added."""
    from shared.accounts import AccountConflict, AccountStore
    from shared.tables import ACCOUNTS_TABLE, Tables

    store = AccountStore(Tables.from_settings(connection_string, None, lambda: None).client(ACCOUNTS_TABLE))
    added = []
    for email, kind, account_id, name in DEMO_ACCOUNTS:
        if store.get(email, kind) is None:
            try:
                store.add(email, kind, account_id, name)
            except AccountConflict as refused:  # e.g. the id moved to another email by hand or by directory sync
                print(f"not seeded: {refused}", file=sys.stderr)
                continue
            added.append(f"{email} ({kind} {account_id})")
    print(json.dumps({"seeded": added}))
    return added


if __name__ == "__main__":
    raise SystemExit(main())
