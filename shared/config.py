"""Settings, read from the environment (app settings in Azure, `local.settings.json` locally) and
checked all at once on first use, never at import: an exception while `function_app.py` is imported
only shows as "no functions found" in Azure."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from azure.core.utils import parse_connection_string

from .errors import ConfigurationError, Problem

KINDS = ("user", "agent")
KIND_ROLES = {"user": "Portal.User", "agent": "Portal.Agent"}  # each kind's app role (infra/app-roles.json)
WELL_KNOWN_SUFFIX = ".well-known/openid-configuration"
# Entra's issuers that accept people of any tenant; such an issuer needs an explicit tenant allowlist.
MULTI_TENANT_SEGMENTS = {"common", "organizations", "consumers", "{tenantid}"}
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
FLOW_TTL_SECONDS = 600
SECRET_CACHE_SECONDS = 900  # SECRET_CACHE_SECONDS' default: how long a secret read from Key Vault is reused
# Hosts of Entra's sign-in endpoints (public cloud and the sovereign clouds): their client ids are GUIDs.
ENTRA_LOGIN_HOSTS = {"login.microsoftonline.com", "login.microsoftonline.us", "login.partner.microsoftonline.cn",
                     "login.chinacloudapi.cn", "sts.windows.net", "login.windows.net"}
# Key Vault's DNS suffixes (public cloud, Azure China, Azure US Government).
VAULT_HOST_SUFFIXES = (".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net")
VAULT_NAME = re.compile(r"^[a-z][a-z0-9-]{1,22}[a-z0-9]\Z")  # Key Vault's own naming rule: 3-24 characters
PLACEHOLDER = re.compile(r"<[^<>]*>")  # what local.settings.example.json leaves to fill in: <tenant-id>
# What a client ID looks like besides a GUID: a short name, a name of lower-case words, or a domain-style
# name (Google's ...apps.googleusercontent.com). Anything else may be the client secret's Value pasted in
# its place (an Entra Value holds '~'), so it is named, never shown.
CLIENT_ID_SHAPE = re.compile(r"[\w .-]{1,32}|[a-z0-9]{1,24}(?:[ ._-][a-z0-9]{1,24}){1,7}"
                             r"|[\w-]{1,64}(?:\.[\w-]{1,63})*\.[a-z]{2,24}")


@dataclass(frozen=True)
class SettingInfo:
    """One app setting, as the setup page and the docs present it."""

    name: str
    doc: str
    field: str | None = None  # the Settings attribute holding the value in force (shown when unset)
    secret: bool = False  # shown only as "set": the value is a secret (a connection string holds a key)


# Every setting the app reads, in the README's order: the setup page's list, defaults and docs.
SETTINGS_TABLE = (
    SettingInfo("OIDC_ISSUER_URL", "the IdP's issuer, or Entra's 'OpenID Connect metadata document' URL"),
    SettingInfo("OIDC_CLIENT_ID", "the app registration's Application (client) ID"),
    SettingInfo("IDP_TIMEOUT_SECONDS", "how long a call to the IdP may wait for its answer", "idp_timeout_seconds"),
    SettingInfo("KEY_VAULT_URL", "the vault holding the client secret and the session-signing key"),
    SettingInfo("OIDC_CLIENT_SECRET_NAME", "Key Vault secret holding the client secret", "client_secret_name"),
    SettingInfo("OIDC_CLIENT_CERTIFICATE_NAME", "Key Vault secret holding a client certificate (PEM with key), "
                "instead of a client secret"),
    SettingInfo("SESSION_SIGNING_KEY_NAME", "Key Vault secret holding the session-signing key (PEM)",
                "signing_key_name"),
    SettingInfo("OIDC_CLIENT_SECRET", "the client secret itself: local development only", secret=True),
    SettingInfo("OIDC_CLIENT_CERTIFICATE", "the client certificate itself: local development only", secret=True),
    SettingInfo("SESSION_SIGNING_KEY", "the session-signing key itself: local development only", secret=True),
    SettingInfo("TABLES_CONNECTION_STRING", "Table Storage connection string (Azurite locally)", secret=True),
    SettingInfo("TABLES_ENDPOINT", "Table Storage endpoint, used with the managed identity"),
    SettingInfo("PORTAL_USER_URL", "where users' session tokens are delivered (form_post)"),
    SettingInfo("PORTAL_AGENT_URL", "where agents' session tokens are delivered (form_post)"),
    SettingInfo("PORTAL_USER_HOME_URL", "the users' portal home: 'Back to the portal' links and the signed-out "
                "page point there", "portal_user_home_url"),
    SettingInfo("PORTAL_AGENT_HOME_URL", "the agents' portal home: 'Back to the portal' links and the "
                "signed-out page point there", "portal_agent_home_url"),
    SettingInfo("PORTAL_ALLOWED_RETURN_ORIGINS", "origins a return_to may point at", "allowed_return_origins"),
    SettingInfo("PUBLIC_BASE_URL", "the app's external base URL; the redirect URIs are built from it",
                "public_base_url"),
    SettingInfo("ALLOWED_TENANT_IDS", "Entra tenants whose people may sign in", "allowed_tenant_ids"),
    SettingInfo("SESSION_TOKEN_AUDIENCE", "the session token's aud", "session_audience"),
    SettingInfo("SESSION_TOKEN_ISSUER", "the session token's iss", "session_issuer"),
    SettingInfo("SESSION_TOKEN_TTL_SECONDS", "the session token's lifetime", "session_ttl"),
    SettingInfo("REQUIRE_EMAIL_VERIFIED_CLAIM", "true: a token must say the email is verified (xms_edov or "
                "email_verified, JSON true)", "require_email_verified"),
    SettingInfo("APP_ROLES_REQUIRED", "true: the user door needs app role Portal.User, the agent door Portal.Agent",
                "app_roles_required"),
    SettingInfo("SECRET_CACHE_SECONDS", "how long a secret read from Key Vault is reused", "secret_cache_seconds"),
    SettingInfo("SIGNIN_EVENTS_RETENTION_DAYS", "how long SignInEvents rows are kept", "events_retention_days"),
    SettingInfo("ALLOW_QUERY_RESPONSE_MODE", "true accepts GET callbacks carrying a code (a code in a URL leaks "
                "into history and request logs)", "allow_query_response_mode"),
    # Directory sync (shared/scim/auth.py reads these itself: a problem there never stops sign-in)
    SettingInfo("SCIM_TOKEN_NAME", "Key Vault secret holding directory sync's bearer token(s), one per line, "
                "the new one first (default scim-token)"),
    SettingInfo("SCIM_TOKEN", "directory sync's bearer token(s) themselves: local development only", secret=True),
    SettingInfo("SCIM_DEFAULT_KIND", "the account kind a provisioned person with no portal app role gets "
                "(user, agent, or empty: none)"),
)


@dataclass(frozen=True)
class Settings:
    issuer_base: str  # the issuer as configured, without the metadata document's path
    metadata_url: str
    client_id: str
    idp_timeout_seconds: int  # read timeout of every IdP call (discovery, JWKS, token)
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
    portal_user_home_url: str
    portal_agent_home_url: str
    allowed_return_origins: frozenset[str]
    public_base_url: str
    allowed_tenant_ids: frozenset[str] | None  # None: the IdP has no tenants (not Entra)
    session_audience: str
    session_issuer: str
    session_ttl: int
    secret_cache_seconds: int
    events_retention_days: int
    require_email_verified: bool = True
    app_roles_required: bool = False
    allow_query_response_mode: bool = False  # GET callbacks carrying a code (query mode) accepted

    @property
    def multi_tenant(self) -> bool:
        return issuer_tenant_segment(self.issuer_base).lower() in MULTI_TENANT_SEGMENTS

    @property
    def uses_certificate(self) -> bool:
        return bool(self.client_certificate_name or self.client_certificate)

    def redirect_uri(self, kind: str) -> str:
        return redirect_uri(self.public_base_url, kind)

    def signed_out_uri(self, kind: str) -> str:
        return signed_out_uri(self.public_base_url, kind)

    def home_url(self, kind: str) -> str:
        """Where a person of this kind goes back to: never the landing URL, which takes POSTs only."""
        return self.portal_user_home_url if kind == "user" else self.portal_agent_home_url


def redirect_uri(public_base: str, kind: str) -> str:
    """A kind's redirect URI ("User/Agent Single Sign On URL"): never from the request's Host header."""
    return f"{public_base}/api/sso/{kind}/callback"


def signed_out_uri(public_base: str, kind: str) -> str:
    """A kind's post-logout redirect URI: Entra returns only to a registered redirect URI, so it is
    registered beside the callback."""
    return f"{public_base}/api/sso/{kind}/signed-out"


def unprintable_escaped(text: str) -> str:
    """Control and other unprintable characters as their Python escapes (a raw newline in a message or
    log line would let whoever wrote the value start a line of their own)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def log_value(value: object, *, quote: bool = False) -> str:
    """A value as one token of `name=value` log text: backslashes and quotes escaped, then control and
    other unprintable characters (a raw newline would let a caller forge log lines), and quoted when
    it holds a space, `=`, a quote or a backslash, or is empty (so no value can pose as a field)."""
    text = str(value)
    escaped = unprintable_escaped(text.replace("\\", "\\\\").replace('"', '\\"'))
    if quote or not text or escaped != text or any(c in text for c in " ="):
        return f'"{escaped}"'
    return escaped


# What a credential looks like, wherever it was pasted: an Entra client secret's Value (some 40
# characters of [A-Za-z0-9._~-], with its '~'), a JWT, a PEM, a storage account key or a SAS, or a
# URL holding a password (scheme://user:password@host: the settings refuse it, and must not quote it).
_TOKEN_RUN = re.compile(r"[\w.~-]{32,}")  # linear: runs of a token's characters, then a look for its '~'
_JWT = re.compile(r"eyJ[\w-]{8,}\.[\w-]+\.")
_URL_PASSWORD = re.compile(r"://[^/?#@\s]*:[^/?#@\s]*@")  # in the authority: before any '/', '?' or '#'
_CREDENTIAL_MARKERS = ("accountkey=", "sig=", "sharedaccesssignature=", "-----begin")
# A generated token or key of no marked shape, by looks_like_a_token's rule: a SCIM token (token_urlsafe,
# as the product tells admins to make one) or a hex secret; a storage account's bare key1 (base64). Two
# alphabets, so that a URL's path ('/' between words) is not read as base64 running into a token.
_KEY_RUNS = (re.compile(r"[A-Za-z0-9_-]{32,}"), re.compile(r"[A-Za-z0-9+/]{32,}={0,2}"))
NOT_SHOWN = "(not shown: it may be a secret)"


def looks_like_a_secret(value: str) -> bool:
    lowered = value.lower()
    return any(marker in lowered for marker in _CREDENTIAL_MARKERS) or bool(_JWT.search(value)) or bool(
        _URL_PASSWORD.search(value)) or any("~" in run for run in _TOKEN_RUN.findall(value)) or any(
        looks_like_a_token(run) for runs in _KEY_RUNS for run in runs.findall(value))


def quoted(value: str, limit: int = 120) -> str:
    """A bad (non-secret) value as a message quotes it: in quotes, unprintable characters escaped, cut
    at `limit` characters; a value shaped like a credential (pasted in the wrong setting) is not shown:
    the login's error page is anonymous, and the text reaches the log and the audit row."""
    if looks_like_a_secret(value):
        return NOT_SHOWN
    shown = unprintable_escaped(value)
    return repr(shown[:limit] + ("..." if len(shown) > limit else ""))


def azure_hostname(env: Mapping[str, str]) -> str:
    """WEBSITE_HOSTNAME as Azure sets it (the app's default host name), "" when unset or a loopback one:
    Core Tools sets it too, to `localhost:7071`, for `func start`, which serves plain http there."""
    host = env.get("WEBSITE_HOSTNAME", "").strip()
    try:
        loopback = urlsplit(f"//{host}").hostname in LOOPBACK_HOSTS
    except ValueError:  # no host a browser could reach: not Azure's
        loopback = True
    return "" if loopback else host


def public_base_url(env: Mapping[str, str]) -> str:
    """PUBLIC_BASE_URL, else https://$WEBSITE_HOSTNAME (set by Azure); "" when neither is set."""
    base = env.get("PUBLIC_BASE_URL", "").strip().rstrip("/")
    return base or (f"https://{host}" if (host := azure_hostname(env)) else "")


def valid_https_url(value: str, *, origin_only: bool = False) -> bool:
    """An https:// URL (or origin) without credentials or fragment: what a deployed app's settings need,
    where no loopback http:// makes sense."""
    return _origin_url(value) if origin_only else _https_url(value)


def valid_public_base(base: str) -> bool:
    """An https:// origin, or an http:// one on loopback: Entra accepts https redirect URIs and, for
    development, http://localhost and http://127.0.0.1 ones (what `func start` serves)."""
    return _origin_url(base, allow_loopback_http=True)


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
    """Entra issuers are https://host/{tenant}/v2.0: the first path segment names the tenant ("" for a
    value that is no URL, which _issuer names as a problem)."""
    try:
        parts = [p for p in urlsplit(base).path.split("/") if p]
    except ValueError:
        return ""
    return parts[0] if parts else ""


def ascii_lower(value: str) -> str:
    """Only `A`-`Z` lowercased (str.lower and casefold merge distinct strings: the Kelvin sign, 'ß')."""
    return value.translate(_ASCII_LOWER)


def ascii_host(parts: SplitResult) -> bool:
    """Whether the URL's host is ASCII as written. Not `parts.hostname.isascii()`: hostname is lower-cased
    with str.lower, which makes the Kelvin sign U+212A an ASCII 'k'. The whole netloc is checked: user
    info and port are refused or meaningless in anything but ASCII too."""
    return parts.netloc.isascii()


def origin_of(url: str) -> str:
    """The URL's origin as browsers compare it: scheme://host[:port], A-Z lower-cased, an IPv6 literal in
    its brackets, the default port left out ("https://a:443/x" and "https://a:/x" are "https://a": a
    CSP source or an allowlist entry written any other way would not match what the browser sends)."""
    parts = urlsplit(url)
    as_written = ascii_lower(f"{parts.scheme}://{parts.netloc}")
    if not ascii_host(parts):  # no setting holds one (_https_url): as written, it matches none
        return as_written
    try:
        port = parts.port
    except ValueError:  # no port a browser would use: as written, which then matches nothing
        return as_written
    host = parts.hostname or ""  # an ASCII netloc, so str.lower folded A-Z only
    host = f"[{host}]" if ":" in host else host
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return ascii_lower(f"{parts.scheme}://{host}") + (f":{port}" if port is not None and port != default else "")


def _https_url(value: str, *, allow_loopback_http: bool = False) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    # An ASCII host only: it goes into headers (Location, the form's CSP), which are ASCII, and CSP
    # host sources are; an internationalised domain is given in its xn-- form.
    if not parts.hostname or not ascii_host(parts) or parts.username or parts.password or parts.fragment:
        return False
    if parts.scheme == "https":
        return True
    return allow_loopback_http and parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def _origin_url(value: str, *, allow_loopback_http: bool = False) -> bool:
    """An `_https_url` of scheme, host and port only (no path beyond '/', no query)."""
    return _https_url(value, allow_loopback_http=allow_loopback_http) and urlsplit(value).path in ("", "/") \
        and not urlsplit(value).query


# How App Service writes a Key Vault reference app setting, in all its forms (SecretUri=..., or
# VaultName=...;SecretName=...), matched in any ASCII case: one it cannot resolve reaches the app as this text.
KEY_VAULT_REFERENCE_PREFIX = "@microsoft.keyvault("


def unresolved_reference(setting: str, value: str) -> Problem | None:
    """The problem of a setting that holds a Key Vault reference's own text (None when it does not):
    App Service could not resolve it, and the text is no value of any setting, nor a secret (its vault
    and secret names are derivable), so it is never used, nor quoted."""
    if ascii_lower(value.strip()[:len(KEY_VAULT_REFERENCE_PREFIX)]) != KEY_VAULT_REFERENCE_PREFIX:
        return None
    return Problem(setting, f"App Service could not resolve the Key Vault reference for {setting}, so the app got "
                   "the reference's text instead of the secret;", "give the app's managed identity the \"Key Vault "
                   "Secrets User\" role on that secret (or the vault); the reference's status shows under the "
                   "Function App's Environment variables (Configuration), on this setting.")


class _Reader:
    """Reads raw settings for one validator and collects its problems."""

    def __init__(self, env: Mapping[str, str], problems: list[Problem]):
        self.env, self.problems = env, problems
        self._unresolved: set[str] = set()  # settings holding an unresolved Key Vault reference

    def get(self, name: str) -> str:
        value = self.env.get(name, "").strip()
        if name not in self._unresolved and (problem := unresolved_reference(name, value)):
            self._unresolved.add(name)
            self.problems.append(problem)
        return value

    def add(self, problem: Problem) -> None:
        """Records a problem, unless its setting holds an unresolved Key Vault reference: that is the
        whole story ("not a GUID", "holds no credential" would send the admin after the wrong fix)."""
        if problem.setting not in self._unresolved:
            self.problems.append(problem)

    def problem(self, setting: str, text: str, fix: str = "") -> None:
        self.add(Problem(setting, text, fix))

    def placeholder(self, name: str, value: str) -> bool:
        """True (and a problem) when the value still holds a placeholder of the example file."""
        found = PLACEHOLDER.search(value)
        if found:
            self.problem(name, f"still holds the placeholder {found.group(0)} of local.settings.example.json;",
                         f"replace it with the real value ({_PLACEHOLDER_FIXES.get(name, 'see the README')}).")
        return bool(found)

    def whole_number(self, name: str, default: int, lo: int = 1, hi: int = 10**7) -> int:
        raw = self.get(name)
        if not raw:
            return default
        # isascii(): str.isdigit() is also true for '\u00b2' or '\u2460', which int() cannot parse; and
        # int() refuses over 4300 digits (leading zeros counted), so those go and the length is checked first.
        digits = raw.lstrip("0") or "0"
        if not (raw.isascii() and raw.isdigit()) or len(digits) > len(str(hi)) or not lo <= int(digits) <= hi:
            self.problem(name, f"{quoted(raw)} is not a whole number from {lo} to {hi};",
                         f"set a whole number from {lo} to {hi}, or remove it to use the default ({default}).")
            return default
        return int(digits)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.get(name).lower()
        if not raw:
            return default
        if raw not in ("true", "false"):
            self.problem(name, f"{quoted(self.get(name), 40)} is not true or false;",
                         f"set true or false, or remove it to use the default ({str(default).lower()}).")
            return default
        return raw == "true"


# ---- one validator per group: each reads its settings, records its problems, returns its fields ----
# Every problem names its fix, and quotes the bad value unless the setting is secret.

_PLACEHOLDER_FIXES = {
    "OIDC_ISSUER_URL": "the app registration's Overview > Endpoints > 'OpenID Connect metadata document'",
    "OIDC_CLIENT_ID": "the app registration's 'Application (client) ID', a GUID",
    "KEY_VAULT_URL": "the vault's 'Vault URI', e.g. https://contoso-sso.vault.azure.net",
}
_URL_FIX = ("an https:// URL with a host name (an internationalised one in its xn-- form), no user name, "
            "password or #fragment")


def _issuer(read: _Reader, _: dict) -> dict:
    raw = read.get("OIDC_ISSUER_URL")
    base = issuer_base(raw) if raw else ""
    entra = _entra_issuer(base)
    if not raw:
        read.problem("OIDC_ISSUER_URL", "missing.", "Paste the app registration's 'OpenID Connect metadata "
                     "document' URL (Endpoints), e.g. https://login.microsoftonline.com/<tenant>/v2.0/"
                     ".well-known/openid-configuration.")
    elif read.placeholder("OIDC_ISSUER_URL", raw):
        pass
    elif not _https_url(base):
        read.problem("OIDC_ISSUER_URL", f"{quoted(raw)} is not an https:// URL (MSAL refuses anything else);",
                     "paste the 'OpenID Connect metadata document' URL from the app registration's Endpoints.")
    elif entra and not _ENTRA_V2_PATH.fullmatch(urlsplit(base).path):
        # MSAL signs in at Entra's v2.0 endpoints whatever it is given: with the v1.0 document (issuer
        # sts.windows.net) every ID token would fail our iss check, and a longer path is no tenant.
        read.problem("OIDC_ISSUER_URL", f"{quoted(raw)} is not Entra's v2.0 metadata document;",
                     "paste the app registration's Endpoints > 'OpenID Connect metadata document', "
                     "https://login.microsoftonline.com/<tenant>/v2.0/.well-known/openid-configuration.")
    elif entra and not _entra_tenant(issuer_tenant_segment(base)):
        # Entra's document for a domain (or for consumers) names the tenant's GUID issuer, which the ID
        # tokens carry: discovery would refuse it as another issuer's.
        read.problem("OIDC_ISSUER_URL", f"{quoted(raw)} names the tenant by domain (or is 'consumers': personal "
                     "accounts only);", "use the Directory (tenant) ID, a GUID: https://login.microsoftonline.com/"
                     "<tenant id>/v2.0/.well-known/openid-configuration (or organizations with ALLOWED_TENANT_IDS).")
    client_id = read.get("OIDC_CLIENT_ID")
    if not client_id:
        read.problem("OIDC_CLIENT_ID", "missing.", "Copy the 'Application (client) ID' from the app registration.")
    elif read.placeholder("OIDC_CLIENT_ID", client_id):
        pass
    elif entra and not GUID.match(client_id):
        # The problem reaches the anonymous login page, its log line and audit row: quoted only when it
        # has an ID's shape (a name), never when it may be the secret's Value.
        shown = NOT_SHOWN if may_hold_a_credential("OIDC_CLIENT_ID", client_id) else quoted(client_id)
        read.problem("OIDC_CLIENT_ID", f"{shown} is not a GUID, which every Entra client ID is;",
                     "copy the 'Application (client) ID' from the app registration's Overview (not a secret's "
                     "Value, the app's name or the Object ID's label).")
    if entra and GUID.match(client_id or ""):
        client_id = client_id.lower()  # Entra's ID tokens carry it lower-case in aud, which is compared exactly
    if entra:
        base = _entra_lower_cased(base)
    return {"issuer_base": base, "metadata_url": f"{base}/{WELL_KNOWN_SUFFIX}{metadata_query(raw)}",
            "client_id": client_id, "idp_timeout_seconds": read.whole_number("IDP_TIMEOUT_SECONDS", 10, lo=1, hi=120)}


_ENTRA_V2_PATH = re.compile(r"/([A-Za-z0-9._-]+|\{tenantid\})/v2\.0")  # /{tenant id, domain, organizations...}/v2.0


def _entra_tenant(segment: str) -> bool:
    """A tenant as Entra's documents name it in their issuer: its GUID, or a multi-tenant segment other
    than consumers (personal accounts only)."""
    return bool(GUID.match(segment)) or segment.lower() in MULTI_TENANT_SEGMENTS - {"consumers"}  # as multi_tenant


def _entra_lower_cased(base: str) -> str:
    """An Entra issuer as Entra's metadata document names it, which discovery compares exactly: scheme,
    host and a GUID tenant in lower case (a pasted https://Login.MicrosoftOnline.com/3F0C9A52-.../v2.0
    loads, then every login would be refused as another issuer's)."""
    scheme, _, rest = base.partition("://")
    host, slash, path = rest.partition("/")
    tenant, more, tail = path.partition("/")
    tenant = tenant.lower() if GUID.match(tenant) else tenant
    return f"{scheme.lower()}://{host.lower()}{slash}{tenant}{more}{tail}"


def _entra_issuer(base: str) -> bool:
    try:
        return (urlsplit(base).hostname or "") in ENTRA_LOGIN_HOSTS
    except ValueError:
        return False


def _vault_problem(vault: str) -> str:
    """Why KEY_VAULT_URL is not a vault's URL ("" when it is): https://{name}.vault.azure.net (or a
    sovereign cloud's suffix), or a loopback address (a local stand-in such as the tests' stub)."""
    if not _origin_url(vault):
        return "is not an https:// URL of a vault (scheme and host only)"
    host = (urlsplit(vault).hostname or "").lower()
    if host in LOOPBACK_HOSTS:
        return ""
    suffix = next((s for s in VAULT_HOST_SUFFIXES if host.endswith(s)), None)
    if suffix is None:
        return f"is not a Key Vault host (*{', *'.join(VAULT_HOST_SUFFIXES)})"
    if not VAULT_NAME.match(host.removesuffix(suffix)):
        return "does not hold a vault name (3 to 24 letters, digits and hyphens, starting with a letter)"
    return ""


# Key Vault's rule for a secret's name: a name it refuses is a 400 on every read, which would look
# like the vault failing (503) rather than the setting it is.
SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
SECRET_NAME_FIX = "use letters, digits and '-' only (Key Vault's rule for a secret's name), e.g. session-signing-key."  # noqa: S105 - a hint, not a secret


def looks_like_client_id(value: str) -> bool:
    """Whether OIDC_CLIENT_ID's value has a client ID's shape (a GUID, in braces or not, or a name:
    CLIENT_ID_SHAPE), so that showing it shows no secret."""
    return bool(GUID.match(value.removeprefix("{").removesuffix("}")) or CLIENT_ID_SHAPE.fullmatch(value))


_HEX_RUN = re.compile(r"[0-9a-fA-F]{32}")
TOKEN_NAME_BITS = 4.2  # Shannon entropy per character, at and above which a long mixed-case name is a token


def looks_like_a_token(value: str) -> bool:
    """Whether a value Key Vault would take for a secret's name is more likely a token pasted there
    (secrets.token_hex, or a token_urlsafe without '_'): 32 characters or more, and either 32 hex digits
    in a row, or upper and lower case mixed at TOKEN_NAME_BITS of entropy per character or more (a
    token_urlsafe(32) has some 4.85, and none of 155,000 drawn had under 4.2). Names in Key Vault's usual style,
    lower-case words, digits and hyphens (scim-token, oidc-client-secret), are never taken for one, nor
    is a long PascalCase name of words (under 4 bits). Not caught: a token of one case and no hex run."""
    if len(value) < 32:
        return False
    if _HEX_RUN.search(value):
        return True
    if value.lower() == value or value.upper() == value:
        return False
    counts = [value.count(c) / len(value) for c in set(value)]
    return -sum(p * math.log2(p) for p in counts) >= TOKEN_NAME_BITS


def may_hold_a_credential(name: str, value: str) -> bool:
    """Whether a setting's value, shown as it is on the setup page, might be a credential pasted in the
    wrong place: a secret name Key Vault refuses or that looks like a token, a client ID of no ID's
    shape (other than the example's placeholder), a storage key or SAS in an endpoint."""
    if name.endswith("_NAME") and secret_name_problem(name, value):
        return True
    # The example file's placeholder, left as it is, is named as one (its Settings row), not hidden.
    if name == "OIDC_CLIENT_ID" and value and not looks_like_client_id(value) and not PLACEHOLDER.fullmatch(value):
        return True
    return looks_like_a_secret(value)


def secret_name_problem(setting: str, name: str | None) -> Problem | None:
    """Why the Key Vault secret name `setting` gives may not be read (None when it may, or none is set):
    a name Key Vault refuses, or one that looks like a token, which a read would put in the vault's URL
    (its logs, any proxy's). Never quoted: either is most often the secret's value pasted in its place."""
    if not name:
        return None
    if not SECRET_NAME.fullmatch(name):
        return Problem(setting, "is not a name Key Vault allows (a secret's name goes here, never its value);",
                       SECRET_NAME_FIX)
    if looks_like_a_token(name):
        return Problem(setting, "looks like a token, not a secret's name (a secret's name goes here, never its "
                       "value);", "put the value in the Key Vault secret and the secret's name here; then replace "
                       "the value, which has been in the app's settings.")
    return None


def _secrets(read: _Reader, _: dict) -> dict:
    vault = read.get("KEY_VAULT_URL").rstrip("/") or None
    direct = {name: read.get(name) or None
              for name in ("OIDC_CLIENT_SECRET", "SESSION_SIGNING_KEY", "OIDC_CLIENT_CERTIFICATE")}
    cert_name = read.get("OIDC_CLIENT_CERTIFICATE_NAME") or None
    for setting in ("OIDC_CLIENT_SECRET_NAME", "OIDC_CLIENT_CERTIFICATE_NAME", "SESSION_SIGNING_KEY_NAME"):
        if problem := secret_name_problem(setting, read.get(setting)):
            read.add(problem)
    if vault:
        if not read.placeholder("KEY_VAULT_URL", vault) and (why := _vault_problem(vault)):
            read.problem("KEY_VAULT_URL", f"{quoted(vault)} {why};", "copy the vault's 'Vault URI' from its "
                         "Overview, e.g. https://contoso-sso.vault.azure.net.")
        for name, value in direct.items():
            if value:
                read.problem(name, "not allowed together with KEY_VAULT_URL (local development only);",
                             "remove it and keep the value in Key Vault.")
    else:
        if cert_name:
            read.problem("OIDC_CLIENT_CERTIFICATE_NAME", "needs KEY_VAULT_URL;",
                         "set KEY_VAULT_URL to the vault holding the certificate, or remove this setting.")
        if not direct["OIDC_CLIENT_SECRET"] and not direct["OIDC_CLIENT_CERTIFICATE"]:
            read.problem("KEY_VAULT_URL", "missing.", "Set it to the vault holding the client secret "
                         "(or, for local development only, set OIDC_CLIENT_SECRET).")
        if not direct["SESSION_SIGNING_KEY"]:
            read.problem("SESSION_SIGNING_KEY", "missing.", "Set KEY_VAULT_URL and keep the session-signing key "
                         "there (or, for local development only, give the PEM key in SESSION_SIGNING_KEY).")
    return {"key_vault_url": vault, "client_secret": direct["OIDC_CLIENT_SECRET"],
            "signing_key": direct["SESSION_SIGNING_KEY"], "client_certificate": direct["OIDC_CLIENT_CERTIFICATE"],
            "client_certificate_name": cert_name,
            "client_secret_name": read.get("OIDC_CLIENT_SECRET_NAME") or "oidc-client-secret",
            "signing_key_name": read.get("SESSION_SIGNING_KEY_NAME") or "session-signing-key",
            "secret_cache_seconds": read.whole_number("SECRET_CACHE_SECONDS", SECRET_CACHE_SECONDS, lo=0, hi=86400)}


def _storage(read: _Reader, _: dict) -> dict:
    connection_string = read.get("TABLES_CONNECTION_STRING") or None
    endpoint = read.get("TABLES_ENDPOINT").rstrip("/") or None
    if not connection_string and not endpoint:
        read.problem("TABLES_CONNECTION_STRING", "missing, and so is TABLES_ENDPOINT.", "Give the storage "
                     "account's table endpoint (used with the managed identity), or a connection string.")
    elif endpoint and not connection_string and (not _https_url(endpoint) or urlsplit(endpoint).query):
        # Never quoted: what lands here by mistake is a connection string (its key) or a SAS URL. No
        # http://, even on loopback: the endpoint goes with the identity's token, which the Tables SDK
        # sends over https:// only (it raises at the first table use).
        read.problem("TABLES_ENDPOINT", f"is not {_URL_FIX} without a query (it is used with the managed "
                     "identity's token, sent over https:// only; a SAS or a connection string, Azurite's "
                     "included, goes in TABLES_CONNECTION_STRING);", "copy the storage account's Table service "
                     "endpoint, e.g. https://myaccount.table.core.windows.net.")
    elif connection_string and (why := _connection_string_problem(connection_string)):
        # Never quoted: it holds the account key or a SAS.
        read.problem("TABLES_CONNECTION_STRING", f"{why};", "copy the storage account's connection string "
                     "(Security + networking > Access keys), or UseDevelopmentStorage=true for Azurite, or use "
                     "TABLES_ENDPOINT with the managed identity instead.")
    return {"tables_connection_string": connection_string, "tables_endpoint": endpoint,
            "events_retention_days": read.whole_number("SIGNIN_EVENTS_RETENTION_DAYS", 90, lo=1, hi=3650)}


def _connection_string_problem(value: str) -> str:
    """Why the Tables SDK's from_connection_string would refuse the value, or its first request fail
    ("" when neither): checked here so that it is a setting problem, not a 500 at first use. Its
    forms: UseDevelopmentStorage=true; AccountName with AccountKey (base64) or SharedAccessSignature;
    TableEndpoint with a SharedAccessSignature alone."""
    if value.lower() == "usedevelopmentstorage=true":
        return ""
    try:
        parts = parse_connection_string(value)
    except ValueError:
        return "is not a connection string (Name=value pairs separated by ';', each name once)"
    if "accountkey" in parts:
        try:
            base64.b64decode(parts["accountkey"], validate=True)
        except binascii.Error:
            return "holds an AccountKey that is not base64"
        if "accountname" not in parts:
            return "holds an AccountKey without its AccountName"
    elif "sharedaccesssignature" not in parts:
        return "holds no credential (AccountName with AccountKey, or SharedAccessSignature)"
    table = parts.get("tableendpoint")
    if table is not None:  # the SDK's own rule: https:// is assumed when no scheme is given
        try:
            host = urlsplit(table if table.lower().startswith("http") else f"https://{table}").hostname
        except ValueError:
            host = None
        return "" if host else "holds a TableEndpoint that is not a URL with a host"
    if "tablesecondaryendpoint" in parts:
        return "holds a TableSecondaryEndpoint without TableEndpoint"
    if "accountname" not in parts:
        return "names neither TableEndpoint nor AccountName"
    if parts.get("defaultendpointsprotocol", "https").lower() not in ("http", "https"):
        return "holds a DefaultEndpointsProtocol that is neither http nor https"
    return ""


def _same_page(url: str) -> str:
    """The URL as a browser requests it: origin_of's origin, the path ("/" for none) and any query."""
    parts = urlsplit(url)
    return f"{origin_of(url)}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")


# The delivery page's CSP form-action names the portal's origin and return_to's, and CSP host sources have
# no IPv6 literal: a browser drops such a source and posts nothing, after the flow was spent.
_NO_IPV6 = ("names an IPv6 address, which the sign-in page's Content-Security-Policy (form-action) cannot "
            "name: the browser would refuse to post the session token there;",
            "use the portal's DNS name (localhost for development).")


def _ipv6_host(url: str) -> bool:
    return ":" in (urlsplit(url).hostname or "")


def _portals(read: _Reader, _: dict) -> dict:
    urls: dict[str, str] = {}
    homes: dict[str, str] = {}
    for kind in KINDS:
        name = f"PORTAL_{kind.upper()}_URL"
        value = read.get(name)
        if not value:
            read.problem(name, "missing.", f"Set the portal page that receives the {kind}s' session token.")
        elif not _https_url(value, allow_loopback_http=True):
            read.problem(name, f"{quoted(value)} is not {_URL_FIX};",
                         f"set the portal page that receives the {kind}s' session token (a POST).")
        elif _ipv6_host(value):
            read.problem(name, *_NO_IPV6)
        else:
            urls[kind] = value
    # Either kind's landing URL, however written (case, :443, an empty query): both take POSTs only.
    landings = {_same_page(u): f"PORTAL_{k.upper()}_URL" for k, u in urls.items()}
    for kind in KINDS:
        home_name = f"PORTAL_{kind.upper()}_HOME_URL"
        home = read.get(home_name)
        if home and not _https_url(home, allow_loopback_http=True):
            read.problem(home_name, f"{quoted(home)} is not {_URL_FIX};",
                         f"set the page the {kind}s start from, or remove it to use the portal URL's origin.")
            home = ""  # portal_homes links it while the settings fail: the default stands in
        elif home and (name := landings.get(_same_page(home))):
            read.problem(home_name, f"is the landing URL {name}, which takes the session token's POST only "
                         "(a link there is a GET);", f"set the page the {kind}s start from, or remove it to use "
                         "the portal URL's origin.")
            home = ""
        homes[kind] = home or (f"{origin_of(urls[kind])}/" if kind in urls else "")
    origins = {origin_of(u) for u in urls.values()}
    raw_origins = read.get("PORTAL_ALLOWED_RETURN_ORIGINS")
    if raw_origins:
        origins = set()
        for item in (i for i in re.split(r"[,\s]+", raw_origins) if i):
            if not _origin_url(item, allow_loopback_http=True):
                read.problem("PORTAL_ALLOWED_RETURN_ORIGINS", f"{quoted(item)} is not an origin;", "give each "
                             "entry as scheme, host and port only, e.g. https://portal.contoso.com, comma-separated "
                             "(an internationalised host in its xn-- form).")
                break
            if _ipv6_host(item):
                read.problem("PORTAL_ALLOWED_RETURN_ORIGINS", *_NO_IPV6)
                break
            origins.add(origin_of(item))
    read.get("PUBLIC_BASE_URL")  # public_base_url reads it from the env: this names an unresolved reference there
    base = public_base_url(read.env)
    if not base:
        read.problem("PUBLIC_BASE_URL", "missing (and no WEBSITE_HOSTNAME).",
                     "Set the app's external URL, e.g. https://myapp.azurewebsites.net.")
    elif not valid_public_base(base):
        read.problem("PUBLIC_BASE_URL", f"{quoted(base)} is not an https:// origin (redirect URIs are built from "
                     "it; Entra accepts no other http:// than loopback);", "set the app's external URL, e.g. "
                     "https://myapp.azurewebsites.net (an internationalised host in its xn-- form), or http:// on "
                     "localhost, 127.0.0.1 or [::1] for development.")
    return {"portal_urls": urls, "portal_user_home_url": homes["user"], "portal_agent_home_url": homes["agent"],
            "allowed_return_origins": frozenset(origins), "public_base_url": base}


def _tenants(read: _Reader, fields: dict) -> dict:
    segment = issuer_tenant_segment(fields["issuer_base"]) if fields["issuer_base"] else ""
    multi_tenant = segment.lower() in MULTI_TENANT_SEGMENTS
    raw = read.get("ALLOWED_TENANT_IDS")
    if raw:
        ids = [t for t in re.split(r"[,\s]+", raw) if t]
        bad = [t for t in ids if not GUID.match(t)]
        allowed = frozenset(t.lower() for t in ids)
        if bad:
            read.problem("ALLOWED_TENANT_IDS", f"{quoted(bad[0])} is not a tenant ID (a GUID);", "list tenant IDs "
                         "(Entra ID > Overview > Tenant ID), comma-separated.")
        elif not multi_tenant and GUID.match(segment) and segment.lower() not in allowed:
            # A single-tenant issuer signs in its own tenant's people only: a list without it lets no one in.
            read.problem("ALLOWED_TENANT_IDS", f"does not include {segment.lower()}, the tenant of the "
                         "single-tenant issuer OIDC_ISSUER_URL, so no one could sign in;", "add that tenant, "
                         "remove ALLOWED_TENANT_IDS (a single-tenant issuer allows its own tenant), or use a "
                         "multi-tenant issuer (organizations) for people of other tenants.")
        return {"allowed_tenant_ids": allowed}
    if multi_tenant:
        read.problem("ALLOWED_TENANT_IDS", f"required because the issuer is multi-tenant ('{segment}');",
                     "list the tenant IDs whose people may sign in.")
        return {"allowed_tenant_ids": frozenset()}
    return {"allowed_tenant_ids": frozenset({segment.lower()}) if GUID.match(segment) else None}


def _session_token(read: _Reader, fields: dict) -> dict:
    audience = read.get("SESSION_TOKEN_AUDIENCE")
    portals = fields["portal_urls"]
    if not audience and len(portals) == len(KINDS):
        origins = {origin_of(portals[k]) for k in KINDS}
        if len(origins) == 1:
            audience = origins.pop()
        else:
            read.problem("SESSION_TOKEN_AUDIENCE", "required because the two portal URLs have different origins;",
                         "set the value your portal checks as 'aud'.")
    return {"session_audience": audience,
            "session_issuer": read.get("SESSION_TOKEN_ISSUER") or fields["public_base_url"],
            "session_ttl": read.whole_number("SESSION_TOKEN_TTL_SECONDS", 3600, lo=60, hi=86400)}


def portal_homes(env: Mapping[str, str]) -> dict[str, str]:
    """Each kind's portal home that its own settings give, even when other settings are bad: the way
    back from a page that says sign-in is not configured."""
    fields = _portals(_Reader(env, []), {})
    return {kind: fields[f"portal_{kind}_home_url"] for kind in KINDS if fields[f"portal_{kind}_home_url"]}


def home_urls(settings: Callable[[], Settings], env: Mapping[str, str]) -> dict[str, str]:
    """Each kind's portal home, the way back from a page: from the settings, else (while other
    settings are bad) from each kind's own portal settings (`portal_homes`)."""
    try:
        loaded = settings()
    except ConfigurationError:
        return portal_homes(env)
    return {kind: loaded.home_url(kind) for kind in KINDS}


def _who_may_enter(read: _Reader, _: dict) -> dict:
    return {"require_email_verified": read.boolean("REQUIRE_EMAIL_VERIFIED_CLAIM", True),
            "app_roles_required": read.boolean("APP_ROLES_REQUIRED", False)}


def _callback(read: _Reader, _: dict) -> dict:
    return {"allow_query_response_mode": read.boolean("ALLOW_QUERY_RESPONSE_MODE", False)}


VALIDATORS = (_issuer, _secrets, _storage, _portals, _tenants, _session_token, _who_may_enter, _callback)


def storage_problems(env: Mapping[str, str]) -> list[Problem]:
    """What the app would find wrong with TABLES_CONNECTION_STRING / TABLES_ENDPOINT in `env` (its
    `_storage` rules): the operators' CLI checks the storage it is given by them."""
    problems: list[Problem] = []
    _storage(_Reader(env, problems), {})
    return problems


def load_settings(env: Mapping[str, str]) -> Settings:
    """Returns the settings, or raises ConfigurationError naming every bad setting and its fix."""
    problems: list[Problem] = []
    read = _Reader(env, problems)
    fields: dict = {}
    for validate in VALIDATORS:  # in order: later groups build on earlier ones' fields
        fields.update(validate(read, fields))
    if problems:
        raise ConfigurationError(problems)
    return Settings(**fields)
