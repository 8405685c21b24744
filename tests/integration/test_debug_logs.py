"""No secret in any log record at DEBUG (the root level PYTHON_ENABLE_DEBUG_LOGGING gives the worker),
with shared/worker.py's quiet_loggers() applied. The worker forwards a record's message and traceback to
the host, and OpenTelemetry carries each attribute beyond LogRecord's own (`extra`) to Application
Insights: all of it is checked, for every logger's records, through a login and its refusals, health,
directory sync and the purge timer, the secrets read from the Key Vault stub as in Azure."""

from __future__ import annotations

import logging
import re
import traceback
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, quote, urlsplit

import msal
import pytest
import requests
from azure.core.credentials import AzureNamedKeyCredential
from azure.data.tables import AccountSasPermissions, ResourceTypes, TableServiceClient, generate_account_sas

from functions.maintenance import purge_expired_rows
from shared.runtime import _default_credential
from shared.vault import KeyVaultReader
from shared.worker import QUIET_LOGGERS, quiet_loggers
from tests.conftest import APP_BASE, CLIENT_SECRET, CLIENT_SECRET_NAME, DEMO_USER
from tests.scim import entra
from tests.scim.conftest import TOKEN, Scim, oid, unique
from tests.support.portal import TIMEOUT, delivered, idp_answer, start_login

pytestmark = pytest.mark.usefixtures("loopback_only")

STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# Secrets known by their shape, whoever's: a JWT (ID, access, session token), a Shared Key request
# signature, a SAS signature (azure-core's `sig=REDACTED` is none), a PEM private key.
SHAPES = {"a JWT": re.compile(r"eyJ[\w-]+\.[\w-]+\."), "a SharedKey signature": re.compile(r"SharedKey(Lite)? \w+:"),
          "a SAS signature": re.compile(r"[?&;]sig=(?!REDACTED)"), "a PEM key": re.compile(r"PRIVATE KEY-----")}
NEW_TOKEN = "N" * 8 + TOKEN  # the SCIM secret's first line: the new token, then the old one (rotation)


def logged(record: logging.LogRecord) -> dict[str, str]:
    """What of a record leaves the worker: message, traceback, stack, and each extra attribute."""
    exc = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
    out = {"message": record.getMessage(), "traceback": exc, "stack": record.stack_info or ""}
    out.update({f"attribute {k}": repr(v) for k, v in vars(record).items() if k not in STANDARD})
    return out


def leaks(records, secrets: dict[str, str]) -> list[str]:
    """'logger LEVEL where: what' for each secret (as is or URL-encoded), or secret shape, in a record."""
    assert all(secrets.values()), "an empty secret would be found everywhere"
    found = []
    for record in records:
        for where, text in logged(record).items():
            named = [what for what, value in secrets.items() if value in text or quote(value, safe="") in text]
            named += [what for what, shape in SHAPES.items() if shape.search(text)]
            found += [f"{record.name} {record.levelname} {where}: {what}" for what in named]
    return found


@pytest.fixture
def at_debug(caplog):
    """The worker under PYTHON_ENABLE_DEBUG_LOGGING: root at DEBUG, quiet_loggers() applied; the held
    loggers' levels are put back afterwards."""
    held = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    caplog.set_level(logging.DEBUG)
    quiet_loggers()
    yield caplog
    for name, level in held.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def msal_held(monkeypatch) -> dict[str, str]:
    """What only MSAL and the app hold: each flow's PKCE verifier and nonce, every token the IdP gave
    (the login's ID and access tokens; health's client-credentials token, opaque from oidc-provider,
    which no JWT shape would find). Recorded by wrapping MSAL's own methods, which still do the work."""
    held: dict[str, str] = {}

    def record(method: str, *keys: str) -> None:
        real = getattr(msal.ConfidentialClientApplication, method)

        def wrapper(self, *args, **kwargs):
            result = real(self, *args, **kwargs)
            held.update({f"{key} #{len(held)}": result[key] for key in keys if isinstance(result.get(key), str)})
            return result

        monkeypatch.setattr(msal.ConfidentialClientApplication, method, wrapper)

    record("initiate_auth_code_flow", "code_verifier", "nonce")
    record("acquire_token_by_auth_code_flow", "id_token", "access_token", "refresh_token")
    record("acquire_token_for_client", "access_token")
    return held


def vault_secrets(stub, signing_key_pem: str) -> dict[str, str]:
    """Each line of the signing key's body, the identity endpoint's header secret, and each access token
    the stub's identity endpoint issued for Key Vault (its own record of them)."""
    lines = [line for line in signing_key_pem.splitlines() if len(line) > 40]
    with stub._lock:
        issued = list(stub._tokens)
    assert lines and issued, "the app read the vault, with a token of the managed identity's"
    return {**{f"signing key line {i}": line for i, line in enumerate(lines)}, "IDENTITY_HEADER": stub.identity_header,
            **{f"Key Vault access token {i}": token for i, token in enumerate(issued)}}


def assert_debug_seen(records) -> None:
    """The check cannot pass for want of records: DEBUG ones (the credential's, at the first Key Vault
    read) and a record of ours with extra attributes reached the capture."""
    assert any(r.levelno == logging.DEBUG and r.name.startswith("azure.identity") for r in records), \
        "no DEBUG record captured: the root logger is not at DEBUG, and the check proves nothing"
    assert any(r.name.startswith("portal_sso") and set(vars(r)) - STANDARD for r in records), \
        "no record of ours with extra attributes captured"


def flow_cookies(browser: requests.Session) -> dict[str, str]:
    return {f"flow cookie {c.name}": c.value for c in browser.cookies if c.name.startswith("__Host-portal-sso-")}


def test_a_login_its_refusals_and_health_log_no_secret_at_debug(stub, vault_app, demo_accounts, idp, azurite,
                                                                 signing_key_pem, at_debug, msal_held):
    """A success; its replay; its code with a state no flow has; the IdP's error for a live flow; a
    made-up code for a live flow (redemption refused); a code from another browser; a GET callback
    carrying a code; then health and the setup page (the client-credentials check). Tables by
    Azurite's account key (Shared Key)."""
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    vault_app()
    callback, cookies, codes, statuses = f"{APP_BASE}/api/sso/user/callback", {}, {}, []

    def at_idp() -> tuple[requests.Session, str, dict[str, str]]:
        browser = requests.Session()
        action, fields = idp_answer(browser, APP_BASE, "user", DEMO_USER)
        cookies.update(flow_cookies(browser))
        codes[f"authorization code #{len(codes)}"] = fields["code"]
        return browser, action, fields

    browser, action, fields = at_idp()
    landed = browser.post(action, data=fields, allow_redirects=False, timeout=TIMEOUT)
    session_token = delivered(landed)[1]["session_token"]
    replay = {"Cookie": landed.request.headers["Cookie"]}
    statuses.append(requests.post(action, data=fields, headers=replay, timeout=TIMEOUT).status_code)
    statuses.append(browser.post(callback, data={**fields, "state": "NoSuchState12345"}, timeout=TIMEOUT).status_code)
    for answer in ({"error": "access_denied", "error_description": "AADSTS50105: not assigned"},
                   {"code": "made-up-code-" + "x" * 30}):
        started = start_login(browser, APP_BASE, "user")
        state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
        cookies.update(flow_cookies(browser))
        answer = {**answer, "state": state, "iss": idp.issuer}
        statuses.append(browser.post(callback, data=answer, timeout=TIMEOUT).status_code)
    _, action, fields = at_idp()
    statuses.append(requests.post(action, data=fields, timeout=TIMEOUT).status_code)  # no flow cookie
    browser, action, fields = at_idp()
    statuses.append(browser.get(action, params=fields, allow_redirects=False, timeout=TIMEOUT).status_code)
    health = requests.get(f"{APP_BASE}/api/health", timeout=TIMEOUT)
    setup = requests.get(f"{APP_BASE}/api/sso/setup", timeout=TIMEOUT)

    assert (landed.status_code, statuses, health.status_code, setup.status_code) == (
        200, [400, 400, 400, 401, 400, 400], 200, 200), health.text[:500]
    assert len(cookies) == 5 and {k.split()[0] for k in msal_held} >= {"code_verifier", "nonce", "id_token",
                                                                         "access_token"}, (cookies, msal_held)
    assert sum(k.startswith("access_token") for k in msal_held) == 2, "the login's and health's"
    assert_debug_seen(at_debug.records)
    assert "sso.callback kind=user outcome=success" in at_debug.text
    account_key = dict(p.split("=", 1) for p in azurite.connection_string.split(";") if "=" in p)["AccountKey"]
    secrets = {"client secret": CLIENT_SECRET, "session token": session_token, "Azurite account key": account_key,
               **codes, **cookies, **msal_held, **vault_secrets(stub, signing_key_pem)}
    assert leaks(at_debug.records, secrets) == []


def sas_connection_string(azurite) -> tuple[str, str]:
    """A connection string holding an account SAS for the tables, and the SAS."""
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    key = service.credential.named_key
    sas = generate_account_sas(AzureNamedKeyCredential(key.name, key.key),
                               resource_types=ResourceTypes(service=True, container=True, object=True),
                               permission=AccountSasPermissions(read=True, write=True, add=True, update=True,
                                                                delete=True, list=True),
                               expiry=datetime.now(UTC) + timedelta(hours=1))
    return f"TableEndpoint={service.url};SharedAccessSignature={sas}", sas


def test_directory_sync_and_the_purge_timer_log_no_token_or_sas_at_debug(stub, vault_app, azurite, signing_key_pem,
                                                                         at_debug):
    """Create, patch, get, list, put and delete with either of the secret's two tokens; a wrong token,
    none, and the token in another scheme; then the purge timer, past due, with an expired flow to
    delete. Tables through a SAS, which urllib3 at DEBUG logs when released (shown last: the check
    finds what a record carries)."""
    connection_string, sas = sas_connection_string(azurite)
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    stub.set_secret("scim-token", f"{NEW_TOKEN}\n{TOKEN}\n")
    runtime = vault_app(SCIM_TOKEN_NAME="scim-token", TABLES_CONNECTION_STRING=connection_string)
    new, old, wrong = Scim(runtime, token=NEW_TOKEN), Scim(runtime), TOKEN[:-6] + "WRONG1"
    user_name = f"{unique()}@contoso.test"
    created = new.post("/Users", entra.create_user(user_name, user_name, oid()))
    assert created.status_code == 201, created.text[:300]
    path, body = f"/Users/{created.json()['id']}", created.json()
    answers = [old.patch(path, entra.patch(entra.disable())), new.get(path),
               old.get("/Users", params=entra.by_user_name(user_name)), new.put(path, {**body, "displayName": "A L"}),
               new.get("/Users", token=wrong), new.get("/Users", token=""),
               new.get("/Users", headers={"Authorization": f"Basic {TOKEN}"}), old.delete(path)]
    assert [a.status_code for a in answers] == [204, 200, 200, 200, 401, 401, 401, 204], [a.text[:200] for a in answers]
    runtime.flows.save(f"expired{unique()}", "user", "debug-logs", now=datetime.now(UTC) - timedelta(hours=3))
    purge_expired_rows._function.get_user_function()(SimpleNamespace(past_due=True))

    records = list(at_debug.records)
    assert_debug_seen(records)
    purged = [r for r in records if r.getMessage().startswith("maintenance.purge flows=")]
    assert len(purged) == 1 and purged[0].flows >= 1, "the purge ran, deleted the flow, logged its counts"
    assert sum(r.getMessage().startswith("scim.request ") for r in records) == 9, "one line per SCIM request"
    storage = {"SAS": sas, "SAS signature": parse_qs(sas)["sig"][0]}
    secrets = {"SCIM token (new)": NEW_TOKEN, "SCIM token (old)": TOKEN, "wrong SCIM token": wrong,
               "client secret": CLIENT_SECRET, **storage, **vault_secrets(stub, signing_key_pem)}
    assert leaks(records, secrets) == []

    at_debug.clear()
    logging.getLogger("urllib3").setLevel(logging.NOTSET)
    assert new.get("/Users", params={"count": "1"}).status_code == 200
    assert any(found.startswith("urllib3") and "SAS signature" in found for found in leaks(at_debug.records, storage))


def test_a_vault_client_made_with_network_tracing_logs_no_secret_value_at_debug(stub, at_debug):
    """azure-core's NetworkTraceLoggingPolicy logs every header and body, unredacted (a secret's value in the
    answer's), at DEBUG for a client or call given `logging_enable=True`. The app gives none today; the worker
    holds that logger at INFO all the same, so that one added for a day's debugging cannot publish the secrets
    (shown last: released, it logs the value, so the check finds what a record carries)."""
    value = "vault-value-" + "v" * 24
    stub.set_secret("traced", value)
    reader = KeyVaultReader.from_url(stub.url, _default_credential(), logging_enable=True)
    assert reader.read("traced").value == value
    assert any(r.levelno == logging.DEBUG and r.name.startswith("azure.identity") for r in at_debug.records), \
        "no DEBUG record captured: the check proves nothing"
    assert leaks(at_debug.records, {"the secret's value": value}) == []

    at_debug.clear()
    logging.getLogger("azure.core.pipeline.policies._universal").setLevel(logging.NOTSET)
    assert reader.read("traced").value == value
    assert leaks(at_debug.records, {"the secret's value": value}), "released, the trace logs the answer's body"
