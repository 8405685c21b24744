"""Settings (shared/config.py): every bad setting named at once, the issuer accepted in the forms an
admin pastes, tenant allowlists, and the values derived from the portal URLs."""

from __future__ import annotations

import importlib

import pytest

from shared.config import load_settings, may_hold_a_credential
from shared.errors import ConfigurationError

TENANT = "3f0c9a52-6d1e-4b7a-9c2f-8e5d41a7b0c6"
OTHER_TENANT = "11111111-2222-4333-8444-555555555555"
ENTRA = f"https://login.microsoftonline.com/{TENANT}/v2.0"


def env(**overrides: str | None) -> dict[str, str]:
    """A complete, valid local-development environment; an override of None removes the setting."""
    values = {
        "OIDC_ISSUER_URL": ENTRA,
        "OIDC_CLIENT_ID": "6b1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e",
        "OIDC_CLIENT_SECRET": "local-secret",
        "SESSION_SIGNING_KEY": "not parsed by load_settings",
        "TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true",
        "PORTAL_USER_URL": "https://portal.contoso.test/user",
        "PORTAL_AGENT_URL": "https://portal.contoso.test/agent",
        "PUBLIC_BASE_URL": "https://sso.contoso.test",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def problems_of(environment: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environment)
    assert caught.value.problems, "a ConfigurationError lists its problems"
    return "\n".join(map(str, caught.value.problems))


def test_complete_local_development_settings_load():
    settings = load_settings(env())
    assert settings.issuer_base == ENTRA, "the issuer is kept as given"
    assert settings.metadata_url == f"{ENTRA}/.well-known/openid-configuration", "metadata URL derived from issuer"
    assert settings.client_secret == "local-secret" and settings.key_vault_url is None
    assert settings.portal_urls == {"user": "https://portal.contoso.test/user",
                                    "agent": "https://portal.contoso.test/agent"}
    assert settings.session_issuer == "https://sso.contoso.test", "the session token's iss defaults to the base URL"
    assert settings.session_ttl == 3600, "SESSION_TOKEN_TTL_SECONDS defaults to 3600"
    assert settings.client_secret_name == "oidc-client-secret" and settings.signing_key_name == "session-signing-key"


@pytest.mark.parametrize("raw", [
    ENTRA,
    ENTRA + "/",
    ENTRA + "/.well-known/openid-configuration",
    ENTRA + "/.well-known/openid-configuration/",
    ENTRA + ".well-known/openid-configuration",  # no '/' before .well-known: the portal copy quirk
    "  " + ENTRA + "/.well-known/openid-configuration  ",
], ids=["issuer", "issuer-slash", "metadata", "metadata-slash", "metadata-no-slash", "padded"])
def test_issuer_is_accepted_as_issuer_or_metadata_url_with_or_without_slashes(raw):
    settings = load_settings(env(OIDC_ISSUER_URL=raw))
    assert settings.issuer_base == ENTRA, f"OIDC_ISSUER_URL {raw!r} names the issuer {ENTRA}"
    assert settings.metadata_url == f"{ENTRA}/.well-known/openid-configuration", "one metadata URL for every form"


@pytest.mark.parametrize("raw", [
    ENTRA.replace(TENANT, TENANT.upper()),
    ENTRA.replace("login.microsoftonline.com", "Login.MicrosoftOnline.com"),
    ENTRA.replace("https://", "HTTPS://"),
    ENTRA.replace(TENANT, TENANT.upper()).replace("login.microsoftonline.com", "LOGIN.MICROSOFTONLINE.COM")
    + "/.well-known/openid-configuration",
], ids=["tenant", "host", "scheme", "all"])
def test_an_entra_issuer_pasted_in_capitals_is_the_issuer_entras_document_names(raw):
    """Discovery compares the document's issuer exactly, and Entra's names its host and the tenant's GUID
    in lower case: kept as pasted, every login would be a 502 idp_metadata_invalid blaming the IdP."""
    settings = load_settings(env(OIDC_ISSUER_URL=raw))
    assert settings.issuer_base == ENTRA
    assert settings.metadata_url == f"{ENTRA}/.well-known/openid-configuration"
    assert settings.allowed_tenant_ids == frozenset({TENANT})


def test_an_entra_metadata_url_keeps_its_appid_query_when_its_capitals_are_lowered():
    app = "6b1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
    pasted = f"{ENTRA.replace(TENANT, TENANT.upper())}/.well-known/openid-configuration?appid={app}"
    settings = load_settings(env(OIDC_ISSUER_URL=pasted))
    assert settings.metadata_url == f"{ENTRA}/.well-known/openid-configuration?appid={app}"


def test_another_idps_issuer_is_kept_as_given_in_any_case():
    settings = load_settings(env(OIDC_ISSUER_URL="https://IdP.Contoso.test/Realms/Portal"))
    assert settings.issuer_base == "https://IdP.Contoso.test/Realms/Portal", "its issuer is its own business"


REQUIRED = ["OIDC_ISSUER_URL", "OIDC_CLIENT_ID", "KEY_VAULT_URL", "OIDC_CLIENT_SECRET", "SESSION_SIGNING_KEY",
            "TABLES_CONNECTION_STRING", "TABLES_ENDPOINT", "PORTAL_USER_URL", "PORTAL_AGENT_URL", "PUBLIC_BASE_URL"]


def test_empty_environment_names_every_missing_setting_in_one_error():
    text = problems_of({})
    missing = [name for name in REQUIRED if name not in text]
    assert not missing, f"one ConfigurationError names every missing setting; these were not named: {missing}"


def test_configuration_error_is_safe_to_show_and_never_echoes_values():
    secret = "super-secret-value-123"
    text = problems_of(env(OIDC_ISSUER_URL="http://idp.test/v2.0", OIDC_CLIENT_SECRET=secret,
                           KEY_VAULT_URL="https://vault.vault.azure.net"))
    assert secret not in text, "a ConfigurationError never contains a setting's secret value"


def test_http_issuer_is_refused():
    assert "OIDC_ISSUER_URL" in problems_of(env(OIDC_ISSUER_URL="http://login.microsoftonline.com/x/v2.0")), \
        "the IdP must be https:// (MSAL refuses anything else)"


def test_key_vault_url_together_with_a_local_client_secret_is_refused():
    text = problems_of(env(KEY_VAULT_URL="https://myvault.vault.azure.net", SESSION_SIGNING_KEY=None))
    assert "OIDC_CLIENT_SECRET" in text, "a local client secret next to KEY_VAULT_URL is refused"


def test_key_vault_url_together_with_a_local_signing_key_is_refused():
    text = problems_of(env(KEY_VAULT_URL="https://myvault.vault.azure.net", OIDC_CLIENT_SECRET=None))
    assert "SESSION_SIGNING_KEY" in text, "a local signing key next to KEY_VAULT_URL is refused"


def test_key_vault_url_alone_needs_no_local_secrets():
    settings = load_settings(env(KEY_VAULT_URL="https://myvault.vault.azure.net/", OIDC_CLIENT_SECRET=None,
                                 SESSION_SIGNING_KEY=None))
    assert settings.key_vault_url == "https://myvault.vault.azure.net", "the vault URL loads, trailing '/' trimmed"
    assert settings.client_secret is None and settings.signing_key is None


MULTI_TENANT = ["common", "organizations", "{tenantid}"]


@pytest.mark.parametrize("segment", MULTI_TENANT)
def test_multi_tenant_issuer_without_allowed_tenant_ids_is_refused(segment):
    text = problems_of(env(OIDC_ISSUER_URL=f"https://login.microsoftonline.com/{segment}/v2.0"))
    assert "ALLOWED_TENANT_IDS" in text, f"a '{segment}' issuer accepts any tenant, so an allowlist is required"


@pytest.mark.parametrize("segment", MULTI_TENANT)
def test_multi_tenant_issuer_with_allowed_tenant_ids_is_accepted(segment):
    settings = load_settings(env(OIDC_ISSUER_URL=f"https://login.microsoftonline.com/{segment}/v2.0",
                                 ALLOWED_TENANT_IDS=f"{TENANT.upper()}, {OTHER_TENANT}"))
    assert settings.allowed_tenant_ids == {TENANT, OTHER_TENANT}, "the allowlist is parsed and lower-cased"
    assert settings.multi_tenant, f"a '{segment}' issuer is multi-tenant"


def test_allowed_tenant_ids_that_are_not_guids_are_refused():
    text = problems_of(env(OIDC_ISSUER_URL="https://login.microsoftonline.com/common/v2.0",
                           ALLOWED_TENANT_IDS="contoso.onmicrosoft.com"))
    assert "ALLOWED_TENANT_IDS" in text, "tenant IDs are GUIDs"


def test_single_tenant_issuer_allows_exactly_its_own_tenant():
    settings = load_settings(env())
    assert settings.allowed_tenant_ids == {TENANT}, "a single-tenant GUID issuer allows its own tenant only"
    assert not settings.multi_tenant


@pytest.mark.parametrize("host", ["localhost:7071", "127.0.0.1:7071", "[::1]:7071", "LOCALHOST"])
def test_core_tools_loopback_website_hostname_is_not_taken_for_azures(host):
    """`func start` sets WEBSITE_HOSTNAME=localhost:7071 and serves plain http: it made the redirect URIs
    https://localhost:7071/..., a port that speaks no TLS, where the missing PUBLIC_BASE_URL is named."""
    from shared.diagnostics import settings_fix

    text = problems_of(env(PUBLIC_BASE_URL=None, WEBSITE_HOSTNAME=host))
    assert "PUBLIC_BASE_URL: missing" in text, text
    assert "local.settings.json" in settings_fix({"WEBSITE_HOSTNAME": host}), "the local fix, not Azure's"
    assert "Environment variables" in settings_fix({"WEBSITE_HOSTNAME": "myapp.azurewebsites.net"})


def test_public_base_url_defaults_to_website_hostname():
    settings = load_settings(env(PUBLIC_BASE_URL=None, WEBSITE_HOSTNAME="myapp.azurewebsites.net"))
    assert settings.public_base_url == "https://myapp.azurewebsites.net", "PUBLIC_BASE_URL from WEBSITE_HOSTNAME"


@pytest.mark.parametrize("bad", ["http://sso.contoso.test", "https://sso.contoso.test/api", "sso.contoso.test",
                                 "https://user@sso.contoso.test", "http://10.0.0.5:7071", "http://localhost.evil.test",
                                 "http://127.0.0.1.nip.io:7071", "ftp://127.0.0.1"])
def test_public_base_url_that_is_not_an_https_origin_nor_loopback_http_is_refused(bad):
    assert "PUBLIC_BASE_URL" in problems_of(env(PUBLIC_BASE_URL=bad)), f"{bad!r} cannot build redirect URIs"


@pytest.mark.parametrize("base", ["http://localhost:7071", "http://127.0.0.1:7071", "http://[::1]:7071",
                                  "http://localhost"])
def test_public_base_url_may_be_plain_http_on_loopback_as_func_start_serves(base):
    settings = load_settings(env(PUBLIC_BASE_URL=base))
    assert settings.redirect_uri("agent") == f"{base}/api/sso/agent/callback", \
        "Entra accepts http://localhost and http://127.0.0.1 redirect URIs"


@pytest.mark.parametrize("kind", ["user", "agent"])
def test_redirect_uri_of_each_kind_is_built_from_the_public_base_url(kind):
    settings = load_settings(env(PUBLIC_BASE_URL="https://sso.contoso.test/"))
    assert settings.redirect_uri(kind) == f"https://sso.contoso.test/api/sso/{kind}/callback", \
        "the redirect URI is the base URL + /api/sso/{kind}/callback, without a doubled '/'"


@pytest.mark.parametrize("raw", ["abc", "-5", "0", "59", "86401", "1e3", "3600.5"])
def test_bad_session_ttl_is_named(raw):
    assert "SESSION_TOKEN_TTL_SECONDS" in problems_of(env(SESSION_TOKEN_TTL_SECONDS=raw)), \
        f"SESSION_TOKEN_TTL_SECONDS={raw!r} is named as bad"


@pytest.mark.parametrize("raw", ["\u00b2", "\u2460"], ids=["superscript-two", "circled-one"])
def test_session_ttl_of_unicode_digit_characters_is_named_not_a_crash(raw):
    # str.isdigit() is true for these, but int() cannot parse them: the check must not raise ValueError.
    assert "SESSION_TOKEN_TTL_SECONDS" in problems_of(env(SESSION_TOKEN_TTL_SECONDS=raw)), \
        "a malformed TTL gives the one ConfigurationError, not a ValueError"


def test_good_session_ttl_is_used():
    assert load_settings(env(SESSION_TOKEN_TTL_SECONDS="900")).session_ttl == 900


def test_audience_defaults_to_the_common_portal_origin():
    settings = load_settings(env())
    assert settings.session_audience == "https://portal.contoso.test", "one portal origin is the default audience"


def test_audience_is_required_when_the_portal_origins_differ():
    text = problems_of(env(PORTAL_AGENT_URL="https://agents.contoso.test/"))
    assert "SESSION_TOKEN_AUDIENCE" in text, "two portal origins leave the audience ambiguous"


def test_audience_given_explicitly_is_used_when_the_portal_origins_differ():
    settings = load_settings(env(PORTAL_AGENT_URL="https://agents.contoso.test/", SESSION_TOKEN_AUDIENCE="portal"))
    assert settings.session_audience == "portal"


@pytest.mark.parametrize("setting", ["SESSION_TOKEN_TTL_SECONDS", "SECRET_CACHE_SECONDS",
                                     "SIGNIN_EVENTS_RETENTION_DAYS", "IDP_TIMEOUT_SECONDS"])
def test_a_number_of_more_digits_than_python_converts_is_the_settings_error_not_a_crash(setting):
    """int() refuses strings of over 4300 digits (ValueError): the one ConfigurationError must name it."""
    assert setting in problems_of(env(**{setting: "1" + "0" * 4301}))
    assert load_settings(env(**{setting: "0" * 4301 + "60"})) is not None, "leading zeros are a number still"


def test_return_origins_default_to_the_two_portal_origins():
    settings = load_settings(env(PORTAL_AGENT_URL="https://Agents.Contoso.test:8443/a", SESSION_TOKEN_AUDIENCE="x"))
    assert settings.allowed_return_origins == {"https://portal.contoso.test", "https://agents.contoso.test:8443"}, \
        "return_to may point at either portal origin by default"


def test_return_origins_given_explicitly_replace_the_default():
    settings = load_settings(env(PORTAL_ALLOWED_RETURN_ORIGINS="https://a.contoso.test, https://b.contoso.test/"))
    assert settings.allowed_return_origins == {"https://a.contoso.test", "https://b.contoso.test"}


@pytest.mark.parametrize("bad", ["https://a.contoso.test/path", "https://a.contoso.test?x=1", "javascript:x",
                                 "https://a.contoso.test#frag"])
def test_return_origins_that_are_not_origins_are_refused(bad):
    assert "PORTAL_ALLOWED_RETURN_ORIGINS" in problems_of(env(PORTAL_ALLOWED_RETURN_ORIGINS=bad)), \
        f"{bad!r} is not an origin"


def test_tables_endpoint_may_replace_the_connection_string():
    settings = load_settings(env(TABLES_CONNECTION_STRING=None, TABLES_ENDPOINT="https://acct.table.core.windows.net/"))
    assert settings.tables_endpoint == "https://acct.table.core.windows.net"


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:10002/devstoreaccount1", "http://localhost:10002",
                                      "http://[::1]:10002/devstoreaccount1"])
def test_a_plain_http_tables_endpoint_is_a_named_setting_problem_not_a_crash_at_first_use(endpoint):
    """TABLES_ENDPOINT goes with the managed identity's token, which the Tables SDK sends over https://
    only (it raises ValueError at once): on loopback too, where Azurite goes through the connection string."""
    from azure.identity import DefaultAzureCredential

    from shared.tables import Tables

    with pytest.raises(ValueError, match="HTTPS"):  # what every table use met: a 500, "unexpected error"
        Tables.from_settings(None, endpoint, DefaultAzureCredential)
    text = problems_of(env(TABLES_CONNECTION_STRING=None, TABLES_ENDPOINT=endpoint))
    assert text.startswith("TABLES_ENDPOINT: ") and "https://" in text and "TABLES_CONNECTION_STRING" in text, text


def test_metadata_url_keeps_entras_appid_query_which_selects_the_apps_own_signing_keys():
    url = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0/.well-known/openid-configuration"
    settings = load_settings(env(OIDC_ISSUER_URL=f"{url}?appid=6b1d2e3f"))
    assert settings.metadata_url == f"{url}?appid=6b1d2e3f", "the appid query must reach discovery"
    assert settings.issuer_base == "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"


# Static mistakes (issue 16 item 4): the example file's placeholders, formats, the tenant list.

EXAMPLE = "local.settings.example.json"


@pytest.mark.parametrize(("name", "value"), [
    ("OIDC_ISSUER_URL", "https://login.microsoftonline.com/<tenant-id>/v2.0/.well-known/openid-configuration"),
    ("OIDC_CLIENT_ID", "<application (client) id>"),
    ("KEY_VAULT_URL", "https://<your-vault>.vault.azure.net"),
])
def test_the_example_files_placeholders_are_refused_with_what_to_fix(name, value):
    overrides = {name: value}
    if name == "KEY_VAULT_URL":
        overrides.update(OIDC_CLIENT_SECRET=None, SESSION_SIGNING_KEY=None)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env(**overrides))
    problem = next(p for p in caught.value.problems if p.setting == name)
    assert "placeholder" in problem.text and "<" in problem.text, f"{name}: says it is the example's placeholder"
    assert problem.fix.startswith("replace it with the real value"), "and says what to put there"


def test_the_example_file_itself_does_not_load():
    import json
    from pathlib import Path

    values = json.loads((Path(__file__).resolve().parents[2] / EXAMPLE).read_text())["Values"]
    text = problems_of(values)
    for name in ("OIDC_ISSUER_URL", "OIDC_CLIENT_ID", "KEY_VAULT_URL"):
        assert f"{name}: still holds the placeholder" in text, f"the example's {name} is not taken for a value"


@pytest.mark.parametrize("client_id", ["portal-sso", "6b1d2e3f-4a5b-4c6d-8e7f", "Contoso SSO"])
def test_an_entra_client_id_must_be_a_guid(client_id):
    text = problems_of(env(OIDC_CLIENT_ID=client_id))
    assert f"OIDC_CLIENT_ID: {client_id!r} is not a GUID" in text, "the bad value is quoted, with the fix"


ENTRA_SECRET_VALUE = "Xq58Q~Zk3yJ_vT0pR.aB9cD2eF4gH6iJ8kL0mN1oP"  # the shape of an Entra client secret's Value


@pytest.mark.parametrize("value", [ENTRA_SECRET_VALUE, "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kM9=",
                                   "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45"])
def test_a_secret_pasted_into_the_client_id_is_named_never_quoted(value):
    """The problem reaches the anonymous login page, its log line and audit row: a value that is no
    ID's shape (a secret's Value, most likely) is named, not shown."""
    text = problems_of(env(OIDC_CLIENT_ID=value))
    assert "OIDC_CLIENT_ID" in text and "GUID" in text, text
    assert value not in text and value[:12] not in text, "a secret's Value is quoted"


@pytest.mark.parametrize("value, hidden", [
    (ENTRA_SECRET_VALUE, True), ("aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6kM9=", True),
    ("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45", True),
    ("6b1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e", False), ("portal-sso", False), ("Contoso SSO", False),
    ("0oa1b2c3d4e5f6g7h8i9", False),
    ("123456789012-abcdefghij0123456789klmnopqrstuv.apps.googleusercontent.com", False),
    ("contact-center-portal-sso-production", False), ("{6b1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e}", False),
    ("0123456789abcdef0123456789abcdef01234567", True),  # a GitHub-style hex secret
])
def test_a_client_id_is_shown_only_when_it_has_an_ids_shape(value, hidden):
    assert may_hold_a_credential("OIDC_CLIENT_ID", value) is hidden


# Tokens as they are made (secrets.token_urlsafe(32) without '_', token_hex(32), uuid4().hex): each is
# a name Key Vault allows, so only its look says it is no name.
TOKENS = ["uVnd7gTFwrLcbBob3dfDnTBw62NJTOPuum52bOaGesg", "hCbTZCv3f20cxWIlSpY4AdmuZow3bAHTT-5A8arOJpo",
          "vrYNcK5U6IIfxh2UWgq2lpYvw3yYYDNYsAnzUoBWqKU",
          "6646216a681620f929c195e564b52df00075cfd92d3c7be1cbdf685b1c391b79", "0f9e8d7c6b5a49383726150413f2e1d0"]
SECRET_NAMES = ["oidc-client-secret", "scim-token", "session-signing-key", "oidc-client-certificate",
                "portal-sso-directory-sync-scim-bearer-token", "contoso-prod-westeurope-portal-sso-scim-token-2026-b",
                "kv-sso-prd-weu-001-scim-token-v2-20261202", "ContosoPortalDirectorySyncBearerTokenForProduction"]


@pytest.mark.parametrize("setting", ["SCIM_TOKEN_NAME", "OIDC_CLIENT_SECRET_NAME", "SESSION_SIGNING_KEY_NAME"])
def test_a_token_pasted_where_a_secrets_name_goes_is_hidden_and_real_names_are_shown(setting):
    for token in TOKENS:
        assert may_hold_a_credential(setting, token), f"{token} would be shown as {setting}"
    for name in SECRET_NAMES:
        assert not may_hold_a_credential(setting, name), f"the name {name} would be hidden"


def test_a_client_id_of_another_idp_may_be_any_string():
    settings = load_settings(env(OIDC_ISSUER_URL="https://idp.contoso.test/realm", OIDC_CLIENT_ID="portal-sso"))
    assert settings.client_id == "portal-sso", "only Entra's client ids are GUIDs"


@pytest.mark.parametrize("vault", ["https://contoso-sso.vault.azure.net", "https://contoso-sso.vault.azure.net/",
                                   "https://kv1.vault.azure.cn", "https://kv-gov.vault.usgovcloudapi.net",
                                   "https://127.0.0.1:8443", "https://localhost:8443"])
def test_a_vault_url_in_any_cloud_or_a_local_stand_in_loads(vault):
    settings = load_settings(env(KEY_VAULT_URL=vault, OIDC_CLIENT_SECRET=None, SESSION_SIGNING_KEY=None))
    assert settings.key_vault_url == vault.rstrip("/")


@pytest.mark.parametrize(("vault", "why"), [
    ("https://vault.contoso.com", "is not a Key Vault host"),
    ("https://contoso.vault.azure.net.evil.test", "is not a Key Vault host"),
    ("https://1vault.vault.azure.net", "does not hold a vault name"),
    ("https://contoso-sso.vault.azure.net/secrets/x", "is not an https:// URL of a vault"),
    ("http://contoso-sso.vault.azure.net", "is not an https:// URL of a vault"),
])
def test_a_vault_url_that_is_not_a_vault_is_refused_quoting_it(vault, why):
    text = problems_of(env(KEY_VAULT_URL=vault, OIDC_CLIENT_SECRET=None, SESSION_SIGNING_KEY=None))
    assert f"KEY_VAULT_URL: {vault!r} {why}" in text and "Vault URI" in text


def test_allowed_tenants_without_the_single_tenant_issuers_own_tenant_is_a_problem():
    text = problems_of(env(ALLOWED_TENANT_IDS=OTHER_TENANT))
    assert f"ALLOWED_TENANT_IDS: does not include {TENANT}" in text, "no one of the issuer's tenant could sign in"
    assert "add that tenant" in text


def test_allowed_tenants_including_the_single_tenant_issuers_tenant_load():
    settings = load_settings(env(ALLOWED_TENANT_IDS=f"{TENANT.upper()},{OTHER_TENANT}"))
    assert settings.allowed_tenant_ids == {TENANT, OTHER_TENANT}


# Messages quote the bad value and every problem names its fix (item 10).

def test_a_bad_number_is_quoted_with_its_range_and_the_default():
    text = problems_of(env(IDP_TIMEOUT_SECONDS="-5"))
    assert "IDP_TIMEOUT_SECONDS: '-5' is not a whole number from 1 to 120;" in text
    assert "remove it to use the default (10)" in text


def test_every_problem_of_a_badly_filled_environment_names_its_fix():
    bad = env(OIDC_ISSUER_URL="http://login.microsoftonline.com/x/v2.0", OIDC_CLIENT_ID="<client>",
              KEY_VAULT_URL="https://vault.contoso.com", OIDC_CLIENT_CERTIFICATE_NAME="cert",
              TABLES_CONNECTION_STRING=None, TABLES_ENDPOINT="ftp://tables", PORTAL_USER_URL="portal",
              PORTAL_AGENT_HOME_URL="https://portal.contoso.test/agent", PORTAL_AGENT_URL="https://portal.contoso.test/agent",
              PORTAL_ALLOWED_RETURN_ORIGINS="https://a.test/path", PUBLIC_BASE_URL="http://sso.test",
              ALLOWED_TENANT_IDS="contoso.com", SESSION_TOKEN_TTL_SECONDS="x", SECRET_CACHE_SECONDS="-1",
              IDP_TIMEOUT_SECONDS="0", SIGNIN_EVENTS_RETENTION_DAYS="0")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(bad)
    problems = caught.value.problems
    assert len(problems) >= 14, [str(p) for p in problems]
    assert [str(p) for p in problems if not p.fix] == [], "every problem says how to fix it"


def test_secret_values_are_never_quoted():
    secret = "DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0"
    text = problems_of(env(TABLES_CONNECTION_STRING=secret, KEY_VAULT_URL="https://kv.vault.azure.net",
                           OIDC_CLIENT_SECRET="secret-value-1", SESSION_SIGNING_KEY="secret-key-2"))
    assert "secret-value-1" not in text and "secret-key-2" not in text and "c2VjcmV0" not in text


# Portal homes and the signed-out page (item 1).

def test_portal_homes_default_to_the_landing_urls_origin_never_the_landing_url():
    settings = load_settings(env(PORTAL_AGENT_URL="https://agents.contoso.test:8443/sso/agent",
                                 SESSION_TOKEN_AUDIENCE="portal"))
    assert settings.home_url("user") == "https://portal.contoso.test/"
    assert settings.home_url("agent") == "https://agents.contoso.test:8443/"


def test_portal_homes_given_are_used():
    settings = load_settings(env(PORTAL_USER_HOME_URL="https://portal.contoso.test/start",
                                 PORTAL_AGENT_HOME_URL="https://portal.contoso.test/agents"))
    assert (settings.home_url("user"), settings.home_url("agent")) == (
        "https://portal.contoso.test/start", "https://portal.contoso.test/agents")


@pytest.mark.parametrize(("value", "text"), [("https://portal.contoso.test/user", "is the landing URL"),
                                             # the other kind's, or the same page written another way
                                             ("https://portal.contoso.test/agent", "is the landing URL"),
                                             ("https://PORTAL.contoso.test/user", "is the landing URL"),
                                             ("https://portal.contoso.test:443/user", "is the landing URL"),
                                             ("https://portal.contoso.test/user?", "is the landing URL"),
                                             ("javascript:alert(1)", "is not an https:// URL")])
def test_a_portal_home_that_is_the_landing_url_or_not_a_url_is_refused(value, text):
    assert f"PORTAL_USER_HOME_URL: {text}" in problems_of(env(PORTAL_USER_HOME_URL=value)).replace(
        f"{value!r} ", "")


@pytest.mark.parametrize("value", ["javascript:alert(1)//", "http://evil.example/", "https://portal.contoso.test/user"],
                         ids=["javascript", "plain-http", "the-landing-url"])
def test_a_refused_portal_home_is_never_the_way_back_while_the_settings_are_bad(value):
    """The signed-out and error pages link the homes of `portal_homes` while the settings fail; a home
    the settings refuse went there as it was (a javascript: or plain-http link, a GET to the POST-only
    landing URL). The portal URL's origin stands in, as when no home is set."""
    from shared.config import portal_homes

    assert portal_homes(env(PORTAL_USER_HOME_URL=value)) == {"user": "https://portal.contoso.test/",
                                                             "agent": "https://portal.contoso.test/"}


def test_the_signed_out_uri_is_built_from_the_public_base_url():
    settings = load_settings(env())
    assert settings.signed_out_uri("agent") == "https://sso.contoso.test/api/sso/agent/signed-out"


def test_portal_homes_are_known_while_other_settings_are_bad():
    from shared.config import portal_homes

    assert portal_homes(env(OIDC_CLIENT_ID=None, PORTAL_AGENT_URL="bad")) == {"user": "https://portal.contoso.test/"}


@pytest.mark.parametrize("pattern, good", [
    ("shared.config:GUID", "3f0c9a52-6d1e-4b7a-9c2f-8e5d41a7b0c6"), ("shared.config:VAULT_NAME", "kv-sso"),
    ("shared.flows:STATE_SYNTAX", "abcdefgh"), ("shared.login:PORTAL_NONCE", "a" * 16),
    ("shared.scim.service:RESOURCE_SEGMENT", "Users"),
])
def test_every_syntax_check_refuses_a_final_newline(pattern, good):
    """`$` also matches before a final newline: a value that passed with one would reach a table key,
    a token claim or a URL."""
    module, name = pattern.split(":")
    regex = getattr(importlib.import_module(module), name)
    assert regex.match(good) and not regex.match(good + "\n"), pattern


# TABLES_CONNECTION_STRING: what the Tables SDK accepts loads; anything else is a setting problem
# (before the check it surfaced as the SDK's ValueError, a 500, at first use).

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
GOOD_CONNECTION_STRINGS = [
    "UseDevelopmentStorage=true",
    f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;",
    f"DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey={AZURITE_KEY};EndpointSuffix=core.windows.net",
    f"AccountName=contoso;AccountKey={AZURITE_KEY}",
    "TableEndpoint=https://contoso.table.core.windows.net/;SharedAccessSignature=sv=2019-02-02&ss=t&sig=c2ln",
    "AccountName=contoso;SharedAccessSignature=sv=2019-02-02&ss=t&sig=c2ln",
]


@pytest.mark.parametrize("value", GOOD_CONNECTION_STRINGS)
def test_every_connection_string_form_the_tables_sdk_takes_loads(value):
    from azure.data.tables import TableServiceClient

    TableServiceClient.from_connection_string(value)  # the SDK takes it: so must the settings check
    assert load_settings(env(TABLES_CONNECTION_STRING=value)).tables_connection_string == value


@pytest.mark.parametrize(("value", "why"), [
    ("garbage", "is not a connection string"),
    ("AccountName=a;AccountName=b;AccountKey=c2VjcmV0", "is not a connection string"),
    ("AccountName=contoso;AccountKey=", "is not a connection string"),
    ("DefaultEndpointsProtocol=https;EndpointSuffix=core.windows.net", "holds no credential"),
    ("AccountName=contoso;AccountKey=not base64!", "AccountKey that is not base64"),
    ("AccountKey=c2VjcmV0;TableEndpoint=https://t.test", "AccountKey without its AccountName"),
    ("SharedAccessSignature=sv=1&sig=c2ln", "names neither TableEndpoint nor AccountName"),
    ("SharedAccessSignature=sv=1&sig=c2ln;TableSecondaryEndpoint=https://t.test", "TableSecondaryEndpoint"),
    ("SharedAccessSignature=sv=1&sig=c2ln;TableEndpoint=https://", "TableEndpoint that is not a URL"),
    ("DefaultEndpointsProtocol=ftp;AccountName=contoso;AccountKey=c2VjcmV0", "DefaultEndpointsProtocol"),
])  # fmt: skip
def test_a_malformed_connection_string_is_named_with_its_fix_never_quoted(value, why):
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env(TABLES_CONNECTION_STRING=value))
    (problem,) = caught.value.problems
    assert problem.setting == "TABLES_CONNECTION_STRING" and why in problem.text and problem.fix, str(problem)
    assert value not in str(problem) and "c2VjcmV0" not in str(problem) and "c2ln" not in str(problem)


@pytest.mark.parametrize("raw", [
    f"https://login.microsoftonline.com/{TENANT}",  # v1.0: its ID tokens' iss is sts.windows.net
    f"https://login.microsoftonline.com/{TENANT}/.well-known/openid-configuration",
    "https://login.microsoftonline.com/organizations",
    f"https://sts.windows.net/{TENANT}/",
    f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0",  # an endpoint, not the issuer
])
def test_an_entra_issuer_that_is_not_the_v2_metadata_document_is_a_named_problem(raw):
    text = problems_of(env(OIDC_ISSUER_URL=raw, ALLOWED_TENANT_IDS=TENANT))
    assert "OIDC_ISSUER_URL" in text and "v2.0/.well-known/openid-configuration" in text, text


def test_a_multi_tenant_issuer_segment_is_read_in_any_case_as_multi_tenant_is():
    settings = load_settings(env(OIDC_ISSUER_URL="https://login.microsoftonline.com/Organizations/v2.0",
                                 ALLOWED_TENANT_IDS=TENANT))
    assert settings.multi_tenant


@pytest.mark.parametrize("segment", ["contoso.onmicrosoft.com", "consumers", "Consumers"])
def test_an_entra_issuer_naming_its_tenant_by_domain_or_consumers_is_a_named_problem(segment):
    """Entra's document for these names the GUID issuer its tokens carry: discovery would refuse it."""
    text = problems_of(env(OIDC_ISSUER_URL=f"https://login.microsoftonline.com/{segment}/v2.0",
                           ALLOWED_TENANT_IDS=TENANT))
    assert "OIDC_ISSUER_URL" in text and "tenant id" in text.lower(), text


def test_an_entra_client_id_is_kept_lower_case_as_entras_tokens_carry_it_in_aud():
    settings = load_settings(env(OIDC_CLIENT_ID="6B1D2E3F-4A5B-4C6D-8E7F-901A2B3C4D5E"))
    assert settings.client_id == "6b1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
    other = load_settings(env(OIDC_ISSUER_URL="https://idp.contoso.test/realm", OIDC_CLIENT_ID="Portal-SSO"))
    assert other.client_id == "Portal-SSO", "another IdP's client id is its own business"


@pytest.mark.parametrize("raw", ["https://[bad/v2.0", "https://login.micr\u2100soft.com/x/v2.0"])
def test_an_issuer_that_is_no_url_is_a_named_problem_not_an_exception(raw):
    assert "OIDC_ISSUER_URL" in problems_of(env(OIDC_ISSUER_URL=raw, ALLOWED_TENANT_IDS=TENANT))


@pytest.mark.parametrize("url, origin", [
    ("https://Portal.Contoso.TEST:443/user", "https://portal.contoso.test"), ("https://portal.test:/x", "https://portal.test"),
    ("http://127.0.0.1:80/x", "http://127.0.0.1"), ("http://[::1]:8080/x", "http://[::1]:8080"),
    ("https://agents.test:8443", "https://agents.test:8443"),
])
def test_an_origin_is_written_as_browsers_compare_it(url, origin):
    from shared.config import origin_of

    assert origin_of(url) == origin


@pytest.mark.parametrize("setting", ["OIDC_CLIENT_SECRET_NAME", "SESSION_SIGNING_KEY_NAME"])
def test_a_secret_name_key_vault_refuses_is_a_named_problem_not_a_vault_outage(setting):
    """Key Vault answers a read of 'session_signing_key' with a 400 every time, which looked like the
    vault failing (a 503 and retries for ever)."""
    text = problems_of(env(KEY_VAULT_URL="https://kv-sso.vault.azure.net", OIDC_CLIENT_SECRET=None,
                           SESSION_SIGNING_KEY=None, **{setting: "session_signing_key"}))
    assert setting in text and "letters, digits and '-'" in text, text
    assert load_settings(env(KEY_VAULT_URL="https://kv-sso.vault.azure.net", OIDC_CLIENT_SECRET=None,
                             SESSION_SIGNING_KEY=None, **{setting: "Session-Key-2"}))


@pytest.mark.parametrize("setting", ["OIDC_CLIENT_SECRET_NAME", "OIDC_CLIENT_CERTIFICATE_NAME",
                                     "SESSION_SIGNING_KEY_NAME"])
def test_a_secret_name_that_looks_like_a_token_is_a_named_problem_never_shown(setting):
    """A value pasted where its secret's name goes would be read from Key Vault with the value in the
    URL (the vault's logs, any proxy's): refused before any read, as SCIM_TOKEN_NAME's is."""
    pasted = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # Key Vault takes it for a name
    text = problems_of(env(KEY_VAULT_URL="https://kv-sso.vault.azure.net", OIDC_CLIENT_SECRET=None,
                           SESSION_SIGNING_KEY=None, **{setting: pasted}))
    assert setting in text and "looks like" in text, text
    assert pasted not in text and pasted[:12] not in text, "the value is never shown"


@pytest.mark.parametrize("setting", ["PORTAL_USER_URL", "PORTAL_ALLOWED_RETURN_ORIGINS", "PUBLIC_BASE_URL"])
def test_a_host_in_unicode_form_is_a_named_problem_with_its_xn_form_as_the_fix(setting):
    """Headers are ASCII (Azure's front end refuses others: a bare 500 after the flow was consumed) and
    CSP host sources too; an internationalised domain goes in its punycode form."""
    value = "https://portal.m\u00fcller.test" + ("/sso/user" if setting == "PORTAL_USER_URL" else "")
    text = problems_of(env(**{setting: value, "SESSION_TOKEN_AUDIENCE": "portal"}))
    assert setting in text and "xn--" in text, text
    ascii_form = value.replace("m\u00fcller", "xn--mller-kva")
    assert load_settings(env(**{setting: ascii_form, "SESSION_TOKEN_AUDIENCE": "portal"}))


@pytest.mark.parametrize("setting", ["PORTAL_USER_URL", "PORTAL_ALLOWED_RETURN_ORIGINS", "PUBLIC_BASE_URL"])
def test_a_host_with_the_kelvin_sign_is_a_named_problem_not_read_as_a_k(setting):
    """urlsplit's hostname is lower-cased with str.lower, which makes the Kelvin sign U+212A an ASCII
    'k': the host passed as ASCII and the value went on, non-ASCII, into the form and its CSP."""
    value = "https://portal.\u212Aontoso.test" + ("/sso/user" if setting == "PORTAL_USER_URL" else "")
    text = problems_of(env(**{setting: value, "SESSION_TOKEN_AUDIENCE": "portal"}))
    assert setting in text and "xn--" in text, text


def test_an_origin_folds_only_a_to_z():
    """Only A-Z are folded (str.lower makes the Kelvin sign a 'k'): a host that is not ASCII, which no
    setting holds, stays as written and so matches no allowed origin."""
    from shared.config import origin_of

    assert origin_of("https://Portal.\u212Aontoso.TEST/x") == "https://portal.\u212Aontoso.test"
    assert origin_of("https://portal.\u212Aontoso.test:443/x") != "https://portal.kontoso.test"


@pytest.mark.parametrize(("setting", "value"), [
    ("PORTAL_USER_URL", "https://[2001:db8::10]/landing"), ("PORTAL_AGENT_URL", "http://[::1]:3000/agent"),
    ("PORTAL_ALLOWED_RETURN_ORIGINS", "http://[::1]:3000")])
def test_a_portal_on_an_ipv6_address_is_a_named_problem_not_a_login_that_dead_ends(setting, value):
    """The delivery page's CSP form-action names the portal's origin (and return_to's), and CSP's host
    sources have no IPv6 literal: Chromium drops the source, posts nothing ("form-action 'none'"), and
    the person is left on "Signing you in" with the flow spent and a success audited."""
    text = problems_of(env(**{setting: value, "SESSION_TOKEN_AUDIENCE": "portal"}))
    assert setting in text and "IPv6" in text and "localhost" in text, text
    assert load_settings(env(**{setting: value.replace("[2001:db8::10]", "portal.contoso.test")
                                .replace("[::1]", "localhost"), "SESSION_TOKEN_AUDIENCE": "portal"}))
    assert load_settings(env(PUBLIC_BASE_URL="http://[::1]:7071")), "the app's own URL is no CSP source"


STORAGE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # key1's shape


@pytest.mark.parametrize("setting", ["ALLOWED_TENANT_IDS", "PORTAL_ALLOWED_RETURN_ORIGINS", "PUBLIC_BASE_URL",
                                     "KEY_VAULT_URL", "SESSION_TOKEN_TTL_SECONDS"])
@pytest.mark.parametrize("pasted", [*TOKENS[:3], STORAGE_KEY])
def test_a_scim_token_or_a_bare_storage_key_pasted_into_a_setting_is_named_never_quoted(setting, pasted):
    """Only an Entra secret's '~' shape, a JWT, a PEM, a URL password and the connection-string and SAS
    markers were hidden: the SCIM token the product tells admins to make (token_urlsafe(32)) and the
    portal's key1 (88 characters of base64) were quoted on the anonymous login page, its log and row."""
    text = problems_of(env(**{setting: pasted}))
    assert setting in text, text
    assert pasted not in text and pasted[:12] not in text, "the value is shown"


@pytest.mark.parametrize("value", ["portal-sso", "ContosoPortalDirectorySyncBearerTokenForProduction",
                                   "https://portal.contoso.test/a/very/long/path/of/lower/case/words/only"])
def test_a_bad_value_that_is_no_credential_is_still_quoted(value):
    assert repr(value) in problems_of(env(ALLOWED_TENANT_IDS=value)), "the admin sees what was wrong"


# An app setting holding a Key Vault reference App Service could not resolve (the identity lacks its
# role, the secret is gone): the app gets the reference's own text as the value. Each documented form:
VAULT, SECRET, VERSION = "contoso-sso-kv", "portal-aud", "0123456789abcdef0123456789abcdef"
KEY_VAULT_REFERENCES = {
    "secret-uri": f"@Microsoft.KeyVault(SecretUri=https://{VAULT}.vault.azure.net/secrets/{SECRET}/)",
    "secret-uri-version": f"@Microsoft.KeyVault(SecretUri=https://{VAULT}.vault.azure.net/secrets/{SECRET}/{VERSION})",
    "vault-name": f"@Microsoft.KeyVault(VaultName={VAULT};SecretName={SECRET})",
    "vault-name-version": f"@Microsoft.KeyVault(VaultName={VAULT};SecretName={SECRET};SecretVersion={VERSION})",
    "lower-case-padded": f"  @microsoft.keyvault(VaultName={VAULT};SecretName={SECRET})\n",
}
# Settings whose reference's text loaded as the value (aud, iss, the client secret sent to Entra), or
# was refused for the wrong reason ("holds no credential", "not a GUID", "not an https:// URL").
LOCAL_ONLY = {"OIDC_CLIENT_SECRET": None, "SESSION_SIGNING_KEY": None}
REFERENCED_SETTINGS = {
    "SESSION_TOKEN_AUDIENCE": {}, "SESSION_TOKEN_ISSUER": {}, "OIDC_CLIENT_SECRET": {},
    "TABLES_CONNECTION_STRING": {}, "TABLES_ENDPOINT": {"TABLES_CONNECTION_STRING": None},
    "OIDC_CLIENT_ID": {}, "PORTAL_USER_URL": {}, "KEY_VAULT_URL": LOCAL_ONLY, "PUBLIC_BASE_URL": {},
    "OIDC_CLIENT_SECRET_NAME": {"KEY_VAULT_URL": "https://contoso-sso-kv.vault.azure.net", **LOCAL_ONLY},
}


@pytest.mark.parametrize("reference", KEY_VAULT_REFERENCES.values(), ids=KEY_VAULT_REFERENCES.keys())
@pytest.mark.parametrize("setting", REFERENCED_SETTINGS)
def test_an_unresolved_key_vault_reference_is_its_settings_one_problem_never_its_value(setting, reference):
    with pytest.raises(ConfigurationError) as caught:
        load_settings(env(**REFERENCED_SETTINGS[setting], **{setting: reference}))
    (problem,) = caught.value.problems  # the reference is the whole story: no "missing", "not a GUID"...
    text = str(problem)
    assert problem.setting == setting and f"could not resolve the Key Vault reference for {setting}" in text, text
    assert "Key Vault Secrets User" in text and "Environment variables" in text, "what to fix, where to look"
    assert VAULT not in text and SECRET not in text and "@microsoft" not in text.lower(), "the value is not quoted"


def test_an_unresolved_key_vault_reference_never_loads_as_the_session_tokens_audience():
    """The literal text loaded as aud: every token the portal got carried it, and was refused there."""
    reference = KEY_VAULT_REFERENCES["secret-uri"]
    assert "SESSION_TOKEN_AUDIENCE" in problems_of(env(SESSION_TOKEN_AUDIENCE=reference))
    assert load_settings(env(SESSION_TOKEN_AUDIENCE="api://portal")).session_audience == "api://portal"


def test_only_ascii_letters_are_folded_in_recognising_a_key_vault_reference():
    from shared.config import unresolved_reference

    assert unresolved_reference("X", "@MICROSOFT.KEYVAULT(SecretUri=x)") is not None
    assert unresolved_reference("X", "@Microsoft.\u212aeyVault(SecretUri=x)") is None, "the Kelvin sign is no K"
    assert unresolved_reference("X", "Microsoft.KeyVault(SecretUri=x)") is None
