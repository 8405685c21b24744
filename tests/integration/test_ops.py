"""The operator's routes, through the real host: GET /api/sso/setup and GET /api/health."""

from __future__ import annotations

import base64
import logging
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.config import KIND_ROLES
from tests.conftest import APP_BASE, CERT_CLIENT_ID, CLIENT_SECRET, DEMO_USER, REDIRECT_URIS, SM2_KEY_PEM
from tests.support.portal import sign_in
from tools.stack import azurite_connection_string, free_port, new_account_key

TIMEOUT = 20


def get(path: str, **kwargs) -> requests.Response:
    return requests.get(f"{APP_BASE}{path}", timeout=TIMEOUT, allow_redirects=False, **kwargs)


def row_of(page: str, title: str) -> str:
    """The table row whose header cell is `title` (the setup page shows one row per check)."""
    for row in re.findall(r"<tr>.*?</tr>", page, flags=re.S):
        if f"<th>{title}</th>" in row:
            return row
    raise AssertionError(f"no row {title!r} on the page")


def assert_no_secrets(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, "a secret value appeared in an ops response"
    assert "AccountKey" not in text and "PRIVATE KEY" not in text


def test_setup_page_shows_what_to_paste_and_the_live_state(app_server, app_env, signing_key_pem):
    response = get("/api/sso/setup")
    assert response.status_code == 200
    page = response.text
    for uri in REDIRECT_URIS.values():
        assert f'<code class="copy">{uri}</code>' in page, "each redirect URI, exactly as to paste"
    assert "User Single Sign On URL" in page and "Agent Single Sign On URL" in page
    assert "<code>email</code>" in page and "xms_edov" in page
    assert "<code>auth_time</code>" in page, "prompt=login needs the auth_time optional claim"
    for title in ("Settings", "Identity provider metadata", "Client secret", "Session signing key", "Table Storage"):
        assert 'class="st ok"' in row_of(page, title), f"{title} is green on the default app"
    assert app_env["OIDC_ISSUER_URL"] in row_of(page, "Identity provider metadata"), "which URL worked"
    assert 'id="AADSTS50011"' in page and 'id="AADSTS7000215"' in page, "the AADSTS hints, with anchors"
    assert "set (value hidden)" in row_of(page, "OIDC_CLIENT_SECRET")
    assert_no_secrets(page, CLIENT_SECRET, signing_key_pem.splitlines()[1])
    headers = response.headers
    assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"], "the page runs no script"


def test_health_is_ready_with_every_check_ok(app_server, signing_key_pem):
    started = time.monotonic()
    response = get("/api/health")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "ready"
    for name in ("idp_metadata", "client_secret", "signing_key", "tables"):
        assert body["checks"][name]["ok"] is True, body["checks"][name]
    assert body["checks"]["client_secret"]["days_to_expiry"] is None, "a secret from settings has no expiry"
    assert body["checks"]["signing_key"]["kid"]
    assert_no_secrets(response.text, CLIENT_SECRET, signing_key_pem.splitlines()[1])
    assert response.headers["Cache-Control"] == "no-store"
    assert elapsed < 2, f"health took {elapsed:.2f} s: it must be cheap"


def test_the_last_sign_in_of_each_kind_shows_whether_the_token_had_email(app_server, demo_accounts):
    assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200
    row = row_of(get("/api/sso/setup").text, "Last user sign-in")
    assert 'class="st ok"' in row and "success" in row
    assert "email claim in the token: yes" in row


def test_a_missing_setting_is_named_on_the_setup_page_and_health_is_503(use_settings):
    use_settings(PORTAL_AGENT_URL=None)
    page = get("/api/sso/setup")
    assert page.status_code == 200, "the setup page still answers: it is where the fix is shown"
    assert 'class="st fail"' in row_of(page.text, "PORTAL_AGENT_URL")
    assert "PORTAL_AGENT_URL: missing" in page.text
    assert REDIRECT_URIS["user"] in page.text, "the redirect URIs need only PUBLIC_BASE_URL"
    health = get("/api/health")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "unavailable"
    assert any(p["setting"] == "PORTAL_AGENT_URL" and p["text"] for p in body["checks"]["settings"]["problems"]), \
        "the health JSON names each bad setting as structured data"


def test_storage_unreachable_is_red_and_health_503(use_settings):
    closed = azurite_connection_string(free_port(), new_account_key())  # nothing listens there
    use_settings(TABLES_CONNECTION_STRING=closed)
    started = time.monotonic()
    health = get("/api/health")
    assert health.status_code == 503
    body = health.json()
    assert body["checks"]["tables"]["ok"] is False and "unreachable" in body["checks"]["tables"]["detail"]
    assert body["checks"]["idp_metadata"]["ok"] is True, "only the dependency that is down is red"
    page = get("/api/sso/setup").text
    assert 'class="st fail"' in row_of(page, "Table Storage")
    assert "Fix:" in row_of(page, "Table Storage")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("name", ["SESSION_TOKEN_ISSUER", "OIDC_ISSUER_URL", "SCIM_DEFAULT_KIND"])
def test_a_setting_holding_bytes_that_are_not_utf8_is_shown_escaped_not_a_500(use_settings, name):
    """On Linux an environment value that is not UTF-8 arrives with lone surrogates (surrogateescape):
    the setup page, which "always answers 200, even when nothing works", was a 500 (UnicodeEncodeError
    writing the body)."""
    use_settings(**{name: "https://iss.example/caf\udce9"})
    page = get("/api/sso/setup")
    assert page.status_code == 200, page.text[:300]
    assert "caf\\udce9" in page.text


def test_the_setup_page_escapes_setting_values(use_settings):
    use_settings(PORTAL_USER_URL="https://x.test/<b>", SESSION_TOKEN_AUDIENCE="https://x.test")
    page = get("/api/sso/setup").text
    assert "https://x.test/&lt;b&gt;" in page
    assert "<b>" not in page


def app_roles_section(page: str) -> str:
    found = re.search(r"<h2>3\. App roles</h2>.*?(?=<h2>)", page, flags=re.S)
    assert found, "the setup page has an app roles section"
    return found.group(0)


def test_the_setup_page_names_each_doors_app_role_and_whether_it_is_required(use_settings):
    section = app_roles_section(get("/api/sso/setup").text)
    for kind, role in KIND_ROLES.items():
        assert re.search(f"<th><code>{re.escape(role)}</code></th><td>[^<]*the {kind} door", section), section
    assert "<code>APP_ROLES_REQUIRED</code> is off" in section and "role_not_assigned" not in section
    assert "scripts/register-app --resource-group RG --app APP assign" in section and "Users and groups" in section, \
        "how to assign them"
    use_settings(APP_ROLES_REQUIRED="true")
    section = app_roles_section(get("/api/sso/setup").text)
    assert "<code>APP_ROLES_REQUIRED</code> is on" in section and "role_not_assigned" in section
    use_settings(APP_ROLES_REQUIRED="maybe")
    section = app_roles_section(get("/api/sso/setup").text)
    assert "<code>APP_ROLES_REQUIRED</code> is on" not in section and "is off" not in section
    assert "maybe" not in section, "the bad value is quoted under Settings, escaped, not here"


def test_wrong_method_is_405(app_server):
    assert requests.post(f"{APP_BASE}/api/health", timeout=TIMEOUT).status_code == 405


def test_a_client_secret_expiring_soon_is_a_warning(stub, use_settings, signing_key_pem):
    stub.set_secret("oidc-client-secret", CLIENT_SECRET, expires_on=datetime.now(UTC) + timedelta(days=10))
    stub.set_secret("session-signing-key", signing_key_pem)
    use_settings(KEY_VAULT_URL=stub.url, OIDC_CLIENT_SECRET=None, SESSION_SIGNING_KEY=None)
    health = get("/api/health")
    assert health.status_code == 200, "a warning does not take the app out of service"
    secret = health.json()["checks"]["client_secret"]
    assert secret["ok"] is True
    assert 9 <= secret["days_to_expiry"] <= 10
    assert "expires in" in secret["warning"]
    row = row_of(get("/api/sso/setup").text, "Client secret")
    assert 'class="st warn"' in row and "Key Vault secret &#x27;oidc-client-secret&#x27;" in row
    assert 'href="#AADSTS7000222"' in row
    assert_no_secrets(health.text, CLIENT_SECRET)


def test_an_expired_client_secret_is_red(stub, use_settings, signing_key_pem):
    stub.set_secret("oidc-client-secret", CLIENT_SECRET, expires_on=datetime.now(UTC) - timedelta(days=2))
    stub.set_secret("session-signing-key", signing_key_pem)
    use_settings(KEY_VAULT_URL=stub.url, OIDC_CLIENT_SECRET=None, SESSION_SIGNING_KEY=None)
    health = get("/api/health")
    assert health.status_code == 503
    assert health.json()["checks"]["client_secret"]["days_to_expiry"] < 0


def _unusable_certificates(client_certificate) -> dict[str, dict[str, str]]:
    """A client certificate login cannot use, as each store holds it: a PEM without its private key
    (locally), a PFX with a password (Key Vault's secret of a certificate imported with one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs12

    key = serialization.load_pem_private_key(client_certificate.private_key_pem.encode(), None)
    cert = x509.load_pem_x509_certificate(client_certificate.certificate_pem.encode())
    pfx = pkcs12.serialize_key_and_certificates(b"portal-sso", key, cert, None,
                                                serialization.BestAvailableEncryption(b"pfx password"))
    return {"pem-without-key": {"OIDC_CLIENT_CERTIFICATE": client_certificate.certificate_pem},
            "pfx-with-password": {"value": base64.b64encode(pfx).decode(), "content_type": "application/x-pkcs12"}}


@pytest.mark.parametrize("form", ["pem-without-key", "pfx-with-password"])
def test_an_unusable_client_certificate_is_red_and_health_503(stub, use_settings, client_certificate, signing_key_pem,
                                                             form):
    """The login cannot use it (500 configuration_error), so health must not say ready: the check reads
    the certificate as the login does, names where it is and what it must hold, never its content."""
    given = _unusable_certificates(client_certificate)[form]
    if "value" in given:
        stub.set_secret("oidc-client-certificate", given["value"], content_type=given["content_type"])
        stub.set_secret("session-signing-key", signing_key_pem)
        use_settings(KEY_VAULT_URL=stub.url, OIDC_CLIENT_SECRET=None, SESSION_SIGNING_KEY=None,
                     OIDC_CLIENT_CERTIFICATE_NAME="oidc-client-certificate", OIDC_CLIENT_ID=CERT_CLIENT_ID)
        where, setting = "oidc-client-certificate", "OIDC_CLIENT_CERTIFICATE_NAME"
    else:
        use_settings(OIDC_CLIENT_SECRET=None, OIDC_CLIENT_ID=CERT_CLIENT_ID, **given)
        where = setting = "OIDC_CLIENT_CERTIFICATE"
    login = get("/api/sso/user/login")
    assert login.status_code == 500 and "configuration_error" in login.text, login.text[:600]
    health = get("/api/health")
    assert health.status_code == 503, health.text
    check = health.json()["checks"]["client_secret"]
    assert check["ok"] is False, check
    assert where in check["detail"] and "private key" in check["detail"], check
    assert setting in check["fix"] and "private key" in check["fix"], check
    row = row_of(get("/api/sso/setup").text, "Client certificate")
    assert 'class="st fail"' in row, row
    secret_part = client_certificate.certificate_pem.splitlines()[1]
    for text in (login.text, health.text, row):
        assert secret_part not in text and given.get("value", secret_part)[:40] not in text


def _key_pem(key, encryption=None) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption or serialization.NoEncryption()).decode()


BAD_SIGNING_KEYS = {
    "garbage": lambda: "not a key at all",
    "public-key": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
    "encrypted": lambda: _key_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                  serialization.BestAvailableEncryption(b"pass phrase")),
    "rsa-1024": lambda: _key_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505 - the weak key it must refuse
    "p-384": lambda: _key_pem(ec.generate_private_key(ec.SECP384R1())),
}


@pytest.mark.parametrize("make", BAD_SIGNING_KEYS.values(), ids=BAD_SIGNING_KEYS.keys())
def test_a_bad_local_signing_key_gets_the_fix_of_the_setting_it_is_in(use_settings, make):
    """Without KEY_VAULT_URL the key is SESSION_SIGNING_KEY's own value: the fix names that setting and
    what it must hold, not a Key Vault secret the app does not read."""
    use_settings(SESSION_SIGNING_KEY=make())
    check = get("/api/health").json()["checks"]["signing_key"]
    assert check["ok"] is False, check
    assert "SESSION_SIGNING_KEY" in check["fix"] and "unencrypted" in check["fix"], check["fix"]
    assert "Key Vault" not in check["fix"] and "SESSION_SIGNING_KEY_NAME" not in check["fix"], check["fix"]
    assert "RSA" in check["fix"] and "P-256" in check["fix"]
    if make is BAD_SIGNING_KEYS["encrypted"]:
        assert "encrypted" in check["detail"] and "no PEM private key" not in check["detail"], check["detail"]


def test_a_bad_signing_key_in_key_vault_gets_the_key_vault_fix(stub, use_settings):
    stub.set_secret("oidc-client-secret", CLIENT_SECRET)
    stub.set_secret("session-signing-key", BAD_SIGNING_KEYS["encrypted"]())
    use_settings(KEY_VAULT_URL=stub.url, OIDC_CLIENT_SECRET=None, SESSION_SIGNING_KEY=None)
    check = get("/api/health").json()["checks"]["signing_key"]
    assert check["ok"] is False and "encrypted" in check["detail"], check
    assert "Key Vault" in check["fix"] and "SESSION_SIGNING_KEY_NAME" in check["fix"], check["fix"]


def test_a_key_on_a_curve_cryptography_does_not_support_is_a_setting_error_not_a_bug(use_settings):
    """SM2 raises UnsupportedAlgorithm in cryptography: the login named no setting (internal_error)."""
    use_settings(SESSION_SIGNING_KEY=SM2_KEY_PEM)
    login = get("/api/sso/user/login")
    assert login.status_code == 500 and "SESSION_SIGNING_KEY: key #1 cannot sign" in login.text, login.text[:600]
    check = get("/api/health").json()["checks"]["signing_key"]
    assert check["ok"] is False and "SESSION_SIGNING_KEY: key #1" in check["detail"], check
    assert SM2_KEY_PEM.splitlines()[1] not in login.text + check["detail"]

def test_a_rotations_new_key_the_app_cannot_read_is_red_at_step_one(stub, use_settings, signing_key_pem):
    """The old key, then the new one encrypted: skipped, the JWKS would publish the old key alone with
    health green, and logins would fail only at step 3 (the new key alone)."""
    new = BAD_SIGNING_KEYS["encrypted"]()
    stub.set_secret("oidc-client-secret", CLIENT_SECRET)
    stub.set_secret("session-signing-key", signing_key_pem + new)
    use_settings(KEY_VAULT_URL=stub.url, OIDC_CLIENT_SECRET=None, SESSION_SIGNING_KEY=None)
    health = get("/api/health")
    check = health.json()["checks"]["signing_key"]
    assert health.status_code == 503 and check["ok"] is False, check
    assert "Key Vault secret 'session-signing-key'" in check["detail"] and "key #2" in check["detail"], check
    assert "encrypted" in check["detail"], check["detail"]
    row = row_of(get("/api/sso/setup").text, "Session signing key")
    assert 'class="st fail"' in row, row
    for text in (health.text, row):
        for line in (signing_key_pem + new).splitlines():
            assert line.startswith("-----") or line not in text, "the bundle's content is never shown"


ENTRA_SECRET_VALUE = "Xq58Q~Zk3yJ_vT0pR.aB9cD2eF4gH6iJ8kL0mN1oP"  # the shape of an Entra client secret's Value
SAS = "sv=2022-11-02&ss=t&srt=sco&sp=rwdlacu&se=2030-01-01&sig=SECRETSIG%3D"


ENTRA_ISSUER = "https://login.microsoftonline.com/3f0c9a52-6d1e-4b7a-9c2f-8e5d41a7b0c6/v2.0"


@pytest.mark.parametrize("setting, value, secret", [
    # The secret's Value pasted where its name goes: Key Vault refuses the name, and its problem quoted it.
    ("SESSION_SIGNING_KEY_NAME", ENTRA_SECRET_VALUE, ENTRA_SECRET_VALUE),
    # The connection string pasted where the endpoint goes, or the portal's "Table service SAS URL".
    ("TABLES_ENDPOINT", "DefaultEndpointsProtocol=https;AccountName=contososso;AccountKey=X91DfRtGh2k",
     "X91DfRtGh2k"),
    ("TABLES_ENDPOINT", f"https://contososso.table.core.windows.net/?{SAS}", "SECRETSIG"),
    # The secret's Value pasted where the Application (client) ID goes: an Entra client ID is a GUID,
    # and its problem quoted what was there.
    ("OIDC_CLIENT_ID", ENTRA_SECRET_VALUE, ENTRA_SECRET_VALUE),
    # ... or wherever a value is quoted for being wrong: every setting's problem and Settings row.
    ("ALLOWED_TENANT_IDS", ENTRA_SECRET_VALUE, ENTRA_SECRET_VALUE),
    ("KEY_VAULT_URL", ENTRA_SECRET_VALUE, ENTRA_SECRET_VALUE),
    ("PUBLIC_BASE_URL", ENTRA_SECRET_VALUE, ENTRA_SECRET_VALUE),
    # A URL holding a password (userinfo): refused for it, and its problem quoted the whole URL.
    ("PORTAL_USER_URL", "https://admin:Hunter2Password@portal.contoso.com/landing", "Hunter2Password"),
    ("KEY_VAULT_URL", "https://admin:Hunter2Password@contoso-sso.vault.azure.net", "Hunter2Password"),
    ("OIDC_ISSUER_URL", f"https://admin:Hunter2Password@{ENTRA_ISSUER.removeprefix('https://')}", "Hunter2Password"),
    ("PUBLIC_BASE_URL", "https://admin:Hunter2Password@app.contoso.com", "Hunter2Password"),
], ids=["secret-in-a-name", "key-in-the-endpoint", "sas-in-the-endpoint", "secret-in-the-client-id",
        "secret-in-the-tenants", "secret-in-the-vault-url", "secret-in-the-base-url", "password-in-the-portal-url",
        "password-in-the-vault-url", "password-in-the-issuer-url", "password-in-the-base-url"])
def test_a_credential_pasted_into_the_wrong_setting_is_named_but_never_shown(use_settings, caplog, setting, value,
                                                                             secret):
    """Problems name the setting and the fix, never a value that may be a credential: the login's 500
    page is anonymous, and the same text reaches the log line and the audit row's detail."""
    changes = {setting: value}
    if setting == "TABLES_ENDPOINT":
        changes["TABLES_CONNECTION_STRING"] = None
    if setting == "OIDC_CLIENT_ID":
        changes["OIDC_ISSUER_URL"] = ENTRA_ISSUER  # Entra's client IDs are GUIDs: it is checked there
    use_settings(**changes)
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        login = get("/api/sso/user/login")
    assert login.status_code == 500 and setting in login.text, login.text[:600]
    # Its log line, and its audit row's detail: with the settings unloadable there is no table to write
    # to, so the row goes to the log whole (sso.audit_failed).
    log = "\n".join(record.getMessage() for record in caplog.records)
    assert f"detail=\"{setting}: " in log and '"detail": "' in log, log
    setup, health = get("/api/sso/setup").text, get("/api/health").text
    for text in (login.text, log, setup, health):
        assert secret not in text, "a credential pasted into a setting is shown"
    assert 'class="st fail"' in row_of(setup, setting)


def test_a_client_id_that_looks_like_a_secret_is_never_shown_on_the_setup_page(use_settings):
    """Another IdP's client ID may be any string, so the settings load; the setup page still names it
    hidden, in its Settings row and in the redirect URIs' section, rather than showing a secret's Value."""
    use_settings(OIDC_CLIENT_ID=ENTRA_SECRET_VALUE)
    setup, health = get("/api/sso/setup").text, get("/api/health").text
    for text in (setup, health):
        assert ENTRA_SECRET_VALUE not in text, "a client ID shaped like a secret's Value is shown"
    assert "value hidden" in row_of(setup, "OIDC_CLIENT_ID")


@pytest.mark.parametrize("path", ["/api/sso/jwks.json", "/api/sso/user/signed-out", "/api/health", "/api/sso/setup"])
def test_head_is_served_where_get_is_and_has_no_side_effect(app_server, path):
    """RFC 9110 9.1: HEAD wherever GET, with GET's headers (uptime monitors, JWKS caches send it)."""
    got, head = get(path), requests.head(f"{APP_BASE}{path}", timeout=TIMEOUT)
    assert head.status_code == got.status_code == 200, (head.status_code, head.text[:300])
    assert head.content == b"" and head.headers["Content-Type"] == got.headers["Content-Type"]
    assert head.headers["Cache-Control"] == got.headers["Cache-Control"]


def test_head_on_the_login_start_is_405_it_would_start_a_login(app_server):
    refused = requests.head(f"{APP_BASE}/api/sso/user/login", timeout=TIMEOUT, allow_redirects=False)
    assert refused.status_code == 405 and refused.headers["Allow"] == "GET"
    assert "Set-Cookie" not in refused.headers
