"""Settings, read from the environment (app settings in Azure, `local.settings.json` locally) and
checked all at once on first use, never at import: an exception while `function_app.py` is imported
only shows as "no functions found" in Azure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ConfigurationError

KINDS = ("user", "agent")
WELL_KNOWN_SUFFIX = ".well-known/openid-configuration"
# Entra's issuers that accept people of any tenant; such an issuer needs an explicit tenant allowlist.
MULTI_TENANT_SEGMENTS = {"common", "organizations", "consumers", "{tenantid}"}
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
FLOW_TTL_SECONDS = 600


@dataclass(frozen=True)
class Settings:
    issuer_base: str  # the issuer as configured, without the metadata document's path
    metadata_url: str
    client_id: str
    key_vault_url: str | None
    client_secret_name: str
    signing_key_name: str
    client_certificate_name: str | None
    client_secret: str | None  # local development only
    signing_key: str | None  # local development only
    client_certificate: str | None  # local development only
    tables_connection_string: str | None
    tables_endpoint: str | None
    portal_urls: Mapping[str, str]
    allowed_return_origins: frozenset[str]
    public_base_url: str
    allowed_tenant_ids: frozenset[str] | None  # None: the IdP has no tenants (not Entra)
    session_audience: str
    session_issuer: str
    session_ttl: int
    secret_cache_seconds: int
    events_retention_days: int

    @property
    def multi_tenant(self) -> bool:
        return issuer_tenant_segment(self.issuer_base).lower() in MULTI_TENANT_SEGMENTS

    @property
    def uses_certificate(self) -> bool:
        return bool(self.client_certificate_name or self.client_certificate)

    def redirect_uri(self, kind: str) -> str:
        return redirect_uri(self.public_base_url, kind)


def redirect_uri(public_base: str, kind: str) -> str:
    """A kind's redirect URI ("User/Agent Single Sign On URL"): never from the request's Host header."""
    return f"{public_base}/api/sso/{kind}/callback"


def public_base_url(env: Mapping[str, str]) -> str:
    """PUBLIC_BASE_URL, else https://$WEBSITE_HOSTNAME (set by Azure); "" when neither is set."""
    base = env.get("PUBLIC_BASE_URL", "").strip().rstrip("/")
    host = env.get("WEBSITE_HOSTNAME", "").strip()
    return base or (f"https://{host}" if host else "")


def valid_public_base(base: str) -> bool:
    """An https:// origin (Entra accepts only https redirect URIs, built from it)."""
    return _https_url(base) and urlsplit(base).path in ("", "/") and not urlsplit(base).query


def issuer_base(raw: str) -> str:
    """The issuer part of OIDC_ISSUER_URL, which may be the issuer itself or Entra's "OpenID Connect
    metadata document" URL, with or without the '/' before '.well-known' (an Entra portal copy quirk)."""
    url = raw.strip()
    at = url.find(WELL_KNOWN_SUFFIX)
    if at >= 0:
        url = url[:at]
    return url.rstrip("/")


def metadata_query(raw: str) -> str:
    """Entra shows the metadata URL with `?appid=<client id>` for apps that have their own signing
    keys; that query selects the app's JWKS, so it is kept."""
    at = raw.find(WELL_KNOWN_SUFFIX)
    query = urlsplit(raw.strip()[at:]).query if at >= 0 else ""
    return f"?{query}" if query else ""


def issuer_tenant_segment(base: str) -> str:
    """Entra issuers are https://host/{tenant}/v2.0: the first path segment names the tenant."""
    parts = [p for p in urlsplit(base).path.split("/") if p]
    return parts[0] if parts else ""


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _https_url(value: str, *, allow_loopback_http: bool = False) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    return allow_loopback_http and parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def _positive_int(env: Mapping[str, str], name: str, default: int, problems: list[str],
                  lo: int = 1, hi: int = 10**7) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    # isascii(): str.isdigit() is also true for '\u00b2' or '\u2460', which int() cannot parse.
    if not (raw.isascii() and raw.isdigit()) or not lo <= int(raw) <= hi:
        problems.append(f"{name}: must be a whole number from {lo} to {hi} (got a value that is not).")
        return default
    return int(raw)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Returns the settings, or raises ConfigurationError naming every bad setting and its fix."""
    problems: list[str] = []

    def get(name: str) -> str:
        return env.get(name, "").strip()

    raw_issuer = get("OIDC_ISSUER_URL")
    base = issuer_base(raw_issuer) if raw_issuer else ""
    if not raw_issuer:
        problems.append("OIDC_ISSUER_URL: missing. Paste the app registration's 'OpenID Connect metadata "
                        "document' URL (Endpoints), e.g. https://login.microsoftonline.com/<tenant>/v2.0/"
                        ".well-known/openid-configuration.")
    elif not _https_url(base):
        problems.append("OIDC_ISSUER_URL: must be an https:// URL (MSAL refuses anything else).")

    client_id = get("OIDC_CLIENT_ID")
    if not client_id:
        problems.append("OIDC_CLIENT_ID: missing. Copy the 'Application (client) ID' from the app registration.")

    key_vault_url = get("KEY_VAULT_URL").rstrip("/") or None
    client_secret = get("OIDC_CLIENT_SECRET") or None
    signing_key = env.get("SESSION_SIGNING_KEY", "").strip() or None
    client_certificate = env.get("OIDC_CLIENT_CERTIFICATE", "").strip() or None
    cert_name = get("OIDC_CLIENT_CERTIFICATE_NAME") or None
    if key_vault_url:
        if not _https_url(key_vault_url):
            problems.append("KEY_VAULT_URL: must be the vault's https:// URL, e.g. https://myvault.vault.azure.net.")
        for name, value in (("OIDC_CLIENT_SECRET", client_secret), ("SESSION_SIGNING_KEY", signing_key),
                            ("OIDC_CLIENT_CERTIFICATE", client_certificate)):
            if value:
                problems.append(f"{name}: not allowed together with KEY_VAULT_URL (local development only); "
                                "remove it and keep the value in Key Vault.")
    else:
        if cert_name:
            problems.append("OIDC_CLIENT_CERTIFICATE_NAME: needs KEY_VAULT_URL.")
        if not client_secret and not client_certificate:
            problems.append("KEY_VAULT_URL: missing. Set it to the vault holding the client secret "
                            "(or, for local development only, set OIDC_CLIENT_SECRET).")
        if not signing_key:
            problems.append("SESSION_SIGNING_KEY: missing. Set KEY_VAULT_URL and keep the session-signing key "
                            "there (or, for local development only, give the PEM key in SESSION_SIGNING_KEY).")

    tables_cs = get("TABLES_CONNECTION_STRING") or None
    tables_endpoint = get("TABLES_ENDPOINT").rstrip("/") or None
    if not tables_cs and not tables_endpoint:
        problems.append("TABLES_CONNECTION_STRING or TABLES_ENDPOINT: missing. Give the storage account's "
                        "table endpoint (used with the managed identity), or a connection string.")
    elif tables_endpoint and not tables_cs and not _https_url(tables_endpoint, allow_loopback_http=True):
        problems.append("TABLES_ENDPOINT: must be an https:// URL, e.g. https://myaccount.table.core.windows.net.")

    portal_urls: dict[str, str] = {}
    for kind in KINDS:
        name = f"PORTAL_{kind.upper()}_URL"
        value = get(name)
        if not value:
            problems.append(f"{name}: missing. Set the portal page that receives the {kind}s' session token.")
        elif not _https_url(value, allow_loopback_http=True):
            problems.append(f"{name}: must be an https:// URL without user name or fragment.")
        else:
            portal_urls[kind] = value

    raw_origins = get("PORTAL_ALLOWED_RETURN_ORIGINS")
    if raw_origins:
        origins = set()
        for item in re.split(r"[,\s]+", raw_origins):
            if not item:
                continue
            parts = urlsplit(item)
            if not _https_url(item, allow_loopback_http=True) or parts.path not in ("", "/") or parts.query:
                problems.append("PORTAL_ALLOWED_RETURN_ORIGINS: each entry must be an origin such as "
                                "https://portal.contoso.com (scheme, host and port only).")
                break
            origins.add(origin_of(item))
    else:
        origins = {origin_of(u) for u in portal_urls.values()}

    public_base = public_base_url(env)
    if not public_base:
        problems.append("PUBLIC_BASE_URL: missing (and no WEBSITE_HOSTNAME). Set the app's external URL, "
                        "e.g. https://myapp.azurewebsites.net.")
    elif not valid_public_base(public_base):
        problems.append("PUBLIC_BASE_URL: must be an https:// origin such as https://myapp.azurewebsites.net "
                        "(redirect URIs are built from it; Entra accepts only https).")

    tenant_segment = issuer_tenant_segment(base) if base else ""
    raw_tenants = get("ALLOWED_TENANT_IDS")
    allowed_tenants: frozenset[str] | None
    if raw_tenants:
        ids = [t for t in re.split(r"[,\s]+", raw_tenants) if t]
        bad = [t for t in ids if not GUID.match(t)]
        if bad:
            problems.append("ALLOWED_TENANT_IDS: each entry must be a tenant ID (a GUID), comma-separated.")
        allowed_tenants = frozenset(t.lower() for t in ids)
    elif tenant_segment.lower() in MULTI_TENANT_SEGMENTS:
        problems.append(f"ALLOWED_TENANT_IDS: required because the issuer is multi-tenant ('{tenant_segment}'); "
                        "list the tenant IDs whose people may sign in.")
        allowed_tenants = frozenset()
    elif GUID.match(tenant_segment):
        allowed_tenants = frozenset({tenant_segment.lower()})
    else:
        allowed_tenants = None

    audience = get("SESSION_TOKEN_AUDIENCE")
    if not audience and len(portal_urls) == 2:
        user_origin, agent_origin = (origin_of(portal_urls[k]) for k in KINDS)
        if user_origin == agent_origin:
            audience = user_origin
        else:
            problems.append("SESSION_TOKEN_AUDIENCE: required because the two portal URLs have different origins; "
                            "set the value your portal checks as 'aud'.")

    ttl = _positive_int(env, "SESSION_TOKEN_TTL_SECONDS", 3600, problems, lo=60, hi=86400)
    secret_cache = _positive_int(env, "SECRET_CACHE_SECONDS", 900, problems, lo=0, hi=86400)
    retention = _positive_int(env, "SIGNIN_EVENTS_RETENTION_DAYS", 90, problems, lo=1, hi=3650)

    if problems:
        raise ConfigurationError(problems)
    return Settings(
        issuer_base=base,
        metadata_url=f"{base}/{WELL_KNOWN_SUFFIX}{metadata_query(raw_issuer)}",
        client_id=client_id,
        key_vault_url=key_vault_url,
        client_secret_name=get("OIDC_CLIENT_SECRET_NAME") or "oidc-client-secret",
        signing_key_name=get("SESSION_SIGNING_KEY_NAME") or "session-signing-key",
        client_certificate_name=cert_name,
        client_secret=client_secret,
        signing_key=signing_key,
        client_certificate=client_certificate,
        tables_connection_string=tables_cs,
        tables_endpoint=tables_endpoint,
        portal_urls=portal_urls,
        allowed_return_origins=frozenset(origins),
        public_base_url=public_base,
        allowed_tenant_ids=allowed_tenants,
        session_audience=audience,
        session_issuer=get("SESSION_TOKEN_ISSUER") or public_base,
        session_ttl=ttl,
        secret_cache_seconds=secret_cache,
        events_retention_days=retention,
    )
