"""What an operator needs to see: the live state of every setting and dependency, as checks
({name, ok, detail, fix}), for the setup page (`GET /api/sso/setup`) and the readiness probe
(`GET /api/health`).

Cheap by design: the IdP's metadata, the secrets and the signing key come from the runtime's caches
(read once, then reused), the token endpoint is asked only whether it accepts our credential (one
client-credentials request per worker every few minutes at most), and tables cost one round trip. No
secret value is ever put in a check: secrets are named, and described by version and expiry only."""

from __future__ import annotations

import logging
import math
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from . import pages
from .aadsts import HINTS
from .config import (
    KINDS,
    SETTINGS_TABLE,
    SettingInfo,
    Settings,
    azure_hostname,
    looks_like_client_id,
    may_hold_a_credential,
    public_base_url,
    redirect_uri,
    signed_out_uri,
    valid_public_base,
)
from .errors import (
    REGISTER_APP,
    WRONG_DOOR,
    ConfigurationError,
    DependencyUnavailable,
    IdpMetadataInvalid,
    Problem,
    SsoError,
)
from .oidc_client import client_certificate
from .tables import LOGIN_TABLES

log = logging.getLogger("portal_sso.diagnostics")

SECRET_WARNING_DAYS = 30
SIGNING_KEY_FORM = ("an unencrypted PEM private key, PKCS#8 '-----BEGIN PRIVATE KEY-----' or PKCS#1 '-----BEGIN RSA "
                    "PRIVATE KEY-----', RSA of 2048 bits or more, or EC P-256")
# The IdP's codes for a credential that is itself wrong or expired, whose fix is a new one; its other
# refusals (the client ID unknown in the tenant: 700016) lead with their own hint.
NEW_CREDENTIAL_CODES = {7000215, 7000222}

# A failed sign-in's reason that an admin can fix, with the fix and the AADSTS codes to read about.
REASON_FIXES: dict[str, tuple[str, tuple[int, ...]]] = {
    "no_email_claim": ("Add the 'email' optional claim (ID token) under Token configuration, and let Entra "
                       "turn on the Microsoft Graph email permission.", ()),
    "client_credential_rejected": ("The IdP refused our client credential (invalid_client): check the "
                                   "{credential} is the current one, and OIDC_CLIENT_ID.",
                                   (7000215, 7000222, 700016)),
    "code_redemption_failed": ("The IdP refused the authorization code (invalid_grant: expired, used or not "
                               "this app's): the person starts again; nothing to fix unless it repeats.", ()),
    "idp_error": ("The IdP refused the sign-in; its AADSTS code names the fix.", (50011, 50105, 65001, 50020)),
    "id_token_auth_time": ("A login that asked prompt=login got an ID token that does not show a new sign-in: "
                           "add the 'auth_time' optional claim (ID token) under Token configuration "
                           "(scripts/register-app does). If it is there, the IdP did not ask for the password "
                           "(the prompt taken out of its URL): the person starts again.", ()),
    "tenant_not_allowed": ("Add the person's tenant to ALLOWED_TENANT_IDS if they should enter.", ()),
    "email_unverified": ("The token did not say the email is verified: add the 'xms_edov' optional claim (ID "
                         "token) under Token configuration (scripts/register-app does), and give the person an "
                         "email on a verified domain; or set REQUIRE_EMAIL_VERIFIED_CLAIM=false to accept tokens "
                         "that carry no verification claim at all.", ()),
    "role_not_assigned": ("APP_ROLES_REQUIRED is on and the person lacks the door's app role (Portal.User or "
                          f"Portal.Agent): assign it with {REGISTER_APP} assign --kind KIND --user UPN, or under "
                          "Enterprise applications > the app > Users and groups.", ()),
    "no_account": ("Add the person's portal account of this kind if they should have one: portal-sso accounts add "
                   "EMAIL --kind KIND --account-id ID (the same email as in Entra).", ()),
}

# Failures a person causes and mends alone (an old tab, the back button, a cancelled sign-in): the
# setup is fine, so they do not turn the page amber.
PERSON_REASONS = {"unknown_state", "flow_expired", "browser_binding_mismatch", "missing_code_or_state",
                  "account_disabled"}
# A no_account whose detail holds WRONG_DOOR: the person used the other kind's door (login.py writes it).


def _credential(settings: Settings) -> tuple[str, str, str]:
    """The client credential this app signs in with: what it is, the setting that gives it, and the
    Key Vault secret it is read from when the app reads a vault."""
    what, setting = (("client certificate", "OIDC_CLIENT_CERTIFICATE") if settings.uses_certificate else
                     ("client secret", "OIDC_CLIENT_SECRET"))
    return what, setting, f"the secret {setting}_NAME names"


def _credential_named(runtime) -> str:
    """The client credential as client_credential_rejected's fix names it: what it is and where this
    app reads it (a local setting, or Key Vault)."""
    try:
        settings = runtime.settings
    except ConfigurationError:
        return "client secret or certificate"
    what, setting, secret = _credential(settings)
    return f"{what} in Key Vault ({secret})" if settings.key_vault_url else f"{what} in {setting}"


def _persons_own(reason: str, detail: str) -> bool:
    if reason in PERSON_REASONS:
        return True
    if reason == "no_account":
        return WRONG_DOOR in detail
    # The IdP's answer to a person who cancels (or declines consent) is access_denied.
    return reason == "idp_error" and detail.split()[-1:] == ["access_denied"]


def settings_fix(env: Mapping[str, str]) -> str:
    """How a fixed setting takes effect, which differs: Azure restarts the app when its settings are
    saved; a local host reads local.settings.json once, at start."""
    if env.get("WEBSITE_INSTANCE_ID") or azure_hostname(env):
        return ("Correct each setting listed under Settings in the function app's Environment variables; saving "
                "restarts the app. Then reload this page.")
    return ("Correct each setting listed under Settings in local.settings.json (or the environment), restart the "
            "host (tools.host or func start: it reads the settings at start), then reload this page.")


@dataclass
class Check:
    """One line of the state: `ok` False is red; ok with a `warning` is amber."""

    name: str
    title: str
    ok: bool
    detail: str = ""
    fix: str = ""
    warning: str = ""
    aadsts: tuple[int, ...] = ()  # codes whose hints help with this check
    data: dict = field(default_factory=dict)  # extra members of the health JSON
    checked: bool = True  # False: not run because something it needs failed

    @property
    def level(self) -> str:
        if not self.checked:
            return "none"
        return "fail" if not self.ok else "warn" if self.warning else "ok"

    def as_json(self) -> dict:
        out = {"ok": self.ok, "detail": self.detail, "warning": self.warning or None, **self.data}
        if not self.ok and self.fix:
            out["fix"] = self.fix
        return out


def _failure(name: str, title: str, exc: Exception, fix: str = "", aadsts: tuple[int, ...] = ()) -> Check:
    """A check that raised."""
    fix = fix or ("Fix the setting named above." if isinstance(exc, ConfigurationError) else "")
    return Check(name, title, False, failure_text(f"check {name}", exc), fix, aadsts=aadsts)


def failure_text(what: str, exc: Exception, correlation_id: str = "") -> str:
    """Why `what` (a check, a section of the setup page) raised, described safely: error details name
    URLs, settings and secret names, never secret values; a bug is described by unexpected()."""
    if isinstance(exc, ConfigurationError):
        return "; ".join(map(str, exc.problems))
    if isinstance(exc, DependencyUnavailable):
        return f"unreachable: {exc.detail}"
    if isinstance(exc, SsoError):
        return exc.reason
    return unexpected(what, exc, correlation_id)


def unexpected(what: str, exc: Exception, correlation_id: str = "") -> str:
    """A bug met while checking, described safely (its type, never its text): the traceback goes to
    the log under a correlation id (the request's, else a new one) that the description names."""
    correlation_id = correlation_id or str(uuid.uuid4())
    log.error("diagnostics: %s failed correlation_id=%s", what, correlation_id, exc_info=exc)
    return f"unexpected error ({type(exc).__name__}); see the log, correlation id {correlation_id}"


def _run(name: str, title: str, probe: Callable[[], Check], fix: str = "", aadsts: tuple[int, ...] = ()) -> Check:
    try:
        return probe()
    except Exception as exc:  # a check reports; it never breaks the page
        return _failure(name, title, exc, fix, aadsts)


# ---- the checks --------------------------------------------------------------------------------------


def check_settings(runtime) -> tuple[Check, Settings | None]:
    try:
        settings = runtime.settings
    except ConfigurationError as err:
        return Check("settings", "Settings", False, " ".join(map(str, err.problems)), settings_fix(runtime.env),
                     data={"problems": [asdict(p) for p in err.problems]}), None
    return Check("settings", "Settings", True, "all settings load"), settings


def check_idp_metadata(runtime) -> Check:
    def probe() -> Check:
        metadata = runtime.metadata()
        check = Check("idp_metadata", "Identity provider metadata", True,
                      f"issuer {metadata.issuer}, read from {metadata.discovered_from}",
                      data={"issuer": metadata.issuer, "discovered_from": metadata.discovered_from})
        # Amber while a daily refresh fails and what is held serves on (refreshing.py), as for Key Vault.
        for what, held in runtime.idp_held().items():
            _stale(held, check, f"the IdP could not refresh its {what}", "serving the ones read before",
                   f"The app must reach the identity provider's {what} (OIDC_ISSUER_URL's metadata document and "
                   "its jwks_uri): sign-in works again at the first refresh that succeeds, no restart needed.")
        if not check.ok:
            return check
        try:
            runtime.idp_keys().warm()  # every callback needs them: a worker that cannot have them is not ready
        except DependencyUnavailable as err:
            if _certificate_not_trusted(err):
                raise  # the trust store's fix, below
            return _failure("idp_metadata", "Identity provider metadata",
                            DependencyUnavailable("idp", f"its signing keys cannot be had: {err.detail}"),
                            f"The app must read the identity provider's signing keys from its jwks_uri "
                            f"({metadata.jwks_uri}, from OIDC_ISSUER_URL's metadata) and find an RS256 or ES256 "
                            "key there: until it can, every sign-in fails (503 idp_unavailable). Check the app "
                            "can reach that URL; sign-in works again at the first fetch that succeeds.")
        return check

    try:
        return probe()
    except IdpMetadataInvalid as err:  # the IdP's own fault: no setting of ours fixes it
        return _failure("idp_metadata", "Identity provider metadata", err,
                        "The identity provider must publish safe metadata (its issuer, https:// endpoints, "
                        "RS256/ES256 ID tokens); if OIDC_ISSUER_URL names another provider than yours, fix it.")
    except Exception as exc:  # a check reports; it never breaks the page
        if _certificate_not_trusted(exc):  # the URL answered; it is our trust that refused it
            return _failure("idp_metadata", "Identity provider metadata", exc,
                            "The identity provider's TLS certificate is not trusted by this process: its certificate "
                            "is checked against the system trust store or the bundle that REQUESTS_CA_BUNDLE names. "
                            "Trust the CA that issued it there (or unset a REQUESTS_CA_BUNDLE that names the wrong "
                            "bundle); a value in the environment wins over local.settings.json.")
        return _failure("idp_metadata", "Identity provider metadata", exc,
                        "Set OIDC_ISSUER_URL to the app registration's 'OpenID Connect metadata document' URL "
                        "(Overview > Endpoints), and check the app can reach it.")


def _certificate_not_trusted(exc: BaseException) -> bool:
    """Whether a failure was a TLS certificate verification error. requests wraps it several times
    (SSLError > urllib3's MaxRetryError > urllib3's SSLError > ssl.SSLCertVerificationError), in causes,
    args and `reason`, so every link is followed."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        link = todo.pop()
        if not isinstance(link, BaseException) or id(link) in seen:
            continue
        if isinstance(link, ssl.SSLCertVerificationError):
            return True
        seen.add(id(link))
        todo += [link.__cause__, link.__context__, getattr(link, "reason", None), *link.args]
    return False


def _stale(cached, check: Check, what: str = "Key Vault unreachable",
           serving: str = "serving the last version read", fix: str = "") -> Check:
    """Amber when what is held serves on because its source cannot be read (refreshing.py); red once
    it is past its stale limit and serves no one (the IdP's metadata and keys, a week on)."""
    if cached.unavailable_since is not None:
        stale = f"{what} since {cached.unavailable_since:%Y-%m-%d %H:%M:%S} UTC ({cached.unavailable_detail})"
        check.data.setdefault("stale_since", cached.unavailable_since.isoformat())
        ends = cached.stale_limit_ends
        if ends is not None and ends <= datetime.now(UTC):
            check.ok, check.fix = False, fix
            check.detail = f"{stale}; no longer serving what was read before: held past its limit since " \
                           f"{ends:%Y-%m-%d %H:%M:%S} UTC"
        else:
            check.warning = f"{stale}; {serving}" + (f"; {check.warning}" if check.warning else "")
    return check


def check_client_secret(runtime, settings: Settings, now: datetime) -> Check:
    certificate = settings.uses_certificate
    what, setting, secret = _credential(settings)
    title = what.capitalize()
    # Where a new one goes: a vault's new version is read without a restart; a local setting at start.
    store = (f"store it in Key Vault as a new version of {secret} (with its expiry date); "
             "the app reads it within SECRET_CACHE_SECONDS, no restart needed" if settings.key_vault_url else
             f"put it in {setting} (local development only), then restart the host")

    def probe() -> Check:
        check = describe(runtime.cached_client_credential.get())
        return _stale(runtime.cached_client_credential, _asked_idp(check) if check.ok else check)

    def _asked_idp(check: Check) -> Check:
        """The IdP's own word on the credential (cached and rate-limited by the OIDC client)."""
        if runtime.metadata_held() is None:
            # The metadata's own check (run first) could not read it: asking again here would start a
            # second discovery in this request, and the probe would wait out two timeouts for its 503.
            check.data["accepted_by_idp"] = None
            check.warning = "not verified with the IdP: its metadata could not be read (see idp_metadata)"
            return check
        try:
            verdict = runtime.oidc.credential_check()
        except SsoError as err:  # the IdP's metadata: its own check says why
            check.data["accepted_by_idp"] = None
            check.warning = f"not verified with the IdP: {err.reason}"
            return check
        check.data["accepted_by_idp"] = verdict.accepted
        if verdict.accepted is False:
            codes = REASON_FIXES["client_credential_rejected"][1]
            code = verdict.code  # the code whose fix `hint` is
            if code is None or code in NEW_CREDENTIAL_CODES:
                fix = (f"The IdP refuses the {what}: create a new one under Certificates & secrets and {store}."
                       + (f" {verdict.hint}" if verdict.hint else ""))
            else:  # e.g. 700016, a client ID the tenant does not know: a new secret would change nothing
                fix, codes = verdict.hint or "", (code, *(c for c in codes if c != code))
            return Check("client_secret", title, False, f"{check.detail}; {verdict.detail}", fix, aadsts=codes,
                         data=check.data)
        if verdict.accepted is None:
            note = f"not verified with the IdP: {verdict.detail}"
            check.warning = f"{check.warning}; {note}" if check.warning else note
        else:
            check.detail += "; accepted by the IdP"
        return check

    def describe(secret) -> Check:
        if secret.source == "key vault":
            where = f"Key Vault secret '{runtime.cached_client_credential.name}'"
            where += f", version {secret.version}" if secret.version else ""
        else:
            where = f"{secret.source} (local development only)"
        if certificate:
            # Read as sign-in reads it (PEM or PKCS#12): one sign-in cannot use is red, not "readable".
            try:
                expires = client_certificate(secret)[1].not_valid_after_utc
            except ConfigurationError as err:
                return Check("client_secret", title, False, f"unusable, from {where}: {failure_text('', err)}",
                             f"Give the certificate with its private key, unencrypted (PEM, or PKCS#12 without a "
                             f"password): {store}.")
        else:
            expires = secret.expires_on
        if expires is None:
            note = ("" if secret.source != "key vault" else
                    "; no expiry date on the secret: set it to the Entra secret's, so this page and "
                    "/api/health can warn before it runs out")
            return Check("client_secret", title, True, f"readable, from {where}{note}",
                         data={"days_to_expiry": None, "expires_on": None})
        days = math.floor((expires - now).total_seconds() / 86400)
        data = {"days_to_expiry": days, "expires_on": expires.isoformat()}
        detail = f"readable, from {where}; expires {expires:%Y-%m-%d} ({days} days)"
        if days < 0:
            return Check("client_secret", title, False, f"{where}: expired on {expires:%Y-%m-%d}",
                         f"Create a new {what} under Certificates & secrets and {store}.",
                         aadsts=(7000222,), data=data)
        warning = (f"the {what} expires in {days} days ({expires:%Y-%m-%d}): create a new one and store it "
                   "in Key Vault before then" if days < SECRET_WARNING_DAYS else "")
        return Check("client_secret", title, True, detail, warning=warning, aadsts=(7000222,) if warning else (),
                     data=data)

    fix = (f"Store the {what} in Key Vault under the name the settings give, and grant the app's managed "
           "identity the 'Key Vault Secrets User' role (the identity must be on: the Function App's Identity > "
           "System assigned, which scripts/deploy turns on)." if settings.key_vault_url else
           f"Give the {what} itself in {setting} (local development only"
           + (", a PEM certificate with its private key" if certificate else "")
           + "), then restart the host; or set KEY_VAULT_URL and keep it there.")
    return _run("client_secret", title, probe, fix, (7000215,))


def check_signing_key(runtime) -> Check:
    def probe() -> Check:
        signer = runtime.signer()
        kids = [key.kid for key in signer.keys]
        serving = f"kid {signer.current.kid} ({signer.current.alg}); {len(kids)} key(s) in the JWKS"
        data = {"kid": signer.current.kid, "alg": signer.current.alg, "keys": len(kids)}
        unusable = runtime.signer_unusable()
        if unusable is not None:  # red as on a cold start, though the signer built before serves (vault.py)
            data["unusable_since"] = unusable.since.isoformat()
            retry = runtime.signing_key_secret.STALE_RETRY_SECONDS
            return Check("signing_key", "Session signing key", False,
                         f"version {unusable.version} cannot be used: {failure_text('', unusable.error)} Still "
                         f"signing with the version read before: {serving}",
                         f"Store a new version of the secret whose every key is {SIGNING_KEY_FORM}; the app "
                         f"reads it within {retry:.0f} s, no restart needed.", data=data)
        return _stale(runtime.signing_key_secret, Check("signing_key", "Session signing key", True, serving,
                                                        data=data))

    if runtime.settings.key_vault_url:
        fix = (f"Store the session-signing private key ({SIGNING_KEY_FORM}) in Key Vault under "
               "SESSION_SIGNING_KEY_NAME (default session-signing-key); the app reads it within "
               "SECRET_CACHE_SECONDS, no restart needed.")
    else:  # local development: the key is the setting's own value, no vault is read
        fix = (f"Give the session-signing private key itself in SESSION_SIGNING_KEY ({SIGNING_KEY_FORM}), "
               "then restart the host; or set KEY_VAULT_URL and keep it there.")
    return _run("signing_key", "Session signing key", probe, fix)


def check_tables(runtime) -> Check:
    def probe() -> Check:
        runtime.tables.ping(*LOGIN_TABLES)
        return Check("tables", "Table Storage", True, f"{', '.join(LOGIN_TABLES)} readable and writable")

    return _run("tables", "Table Storage", probe,
                "Check TABLES_CONNECTION_STRING or TABLES_ENDPOINT, that the storage account is running, and "
                "that the app's managed identity has 'Storage Table Data Contributor' on each of the app's tables "
                "(scripts/deploy grants it).")


def health_checks(runtime, now: datetime | None = None) -> tuple[Check, list[Check]]:
    """(settings check, the dependency checks); the dependency checks are not run (not ok, not
    checked) when the settings do not load."""
    now = now or datetime.now(UTC)
    settings_check, settings = check_settings(runtime)
    if settings is None:
        skipped = {"idp_metadata": "Identity provider metadata", "client_secret": "Client secret",
                   "signing_key": "Session signing key", "tables": "Table Storage"}
        return settings_check, [Check(name, title, False, "not checked: the settings have problems", checked=False)
                                for name, title in skipped.items()]
    return settings_check, [check_idp_metadata(runtime), check_client_secret(runtime, settings, now),
                            check_signing_key(runtime), check_tables(runtime)]


def last_sign_ins(runtime, unavailable: str = "") -> list[Check]:
    """The newest sign-in of each kind (last 7 days): its outcome, and whether its ID token carried
    the email claim. With `unavailable` (why the events cannot be read), nothing is read."""
    checks = []
    for kind in KINDS:
        title = f"Last {kind} sign-in"
        if unavailable:
            checks.append(Check(f"last_{kind}", title, False, f"not checked: {unavailable}", checked=False))
            continue
        try:
            row = runtime.events.latest(kind)
        except Exception as exc:
            checks.append(_failure(f"last_{kind}", title, exc))
            continue
        if row is None:
            checks.append(Check(f"last_{kind}", title, True, "no sign-in in the last 7 days", checked=False))
            continue
        at = row.get("At")
        when = at.strftime("%Y-%m-%d %H:%M UTC") if isinstance(at, datetime) else "unknown time"
        had_email = row.get("HadEmailClaim")
        email_text = {True: "yes", False: "no"}.get(had_email, "not reached")
        reason = str(row.get("Reason") or "")
        detail = f"{when}: {row.get('Outcome', '?')} ({reason or '?'}), HTTP {row.get('Status', '?')}; " \
                 f"email claim in the token: {email_text}"
        data = {"outcome": row.get("Outcome"), "reason": reason, "had_email_claim": had_email, "at": when}
        if row.get("Outcome") == "success":
            checks.append(Check(f"last_{kind}", title, True, detail, data=data))
        elif _persons_own(reason, str(row.get("Detail") or "")):
            checks.append(Check(f"last_{kind}", title, True, f"{detail}. The person's own mistake (an old tab, "
                                "the other kind's door, a cancelled sign-in): nothing to fix here", data=data))
        elif had_email is False or reason in ("no_email_claim", "client_credential_rejected"):
            fix, codes = REASON_FIXES.get(reason, REASON_FIXES["no_email_claim"])
            fix = fix.format(credential=_credential_named(runtime)) if reason == "client_credential_rejected" \
                else fix
            checks.append(Check(f"last_{kind}", title, False, detail, fix, aadsts=codes, data=data))
        else:  # a person without an account, a cancelled login...: worth a look, not a broken setup
            fix, codes = REASON_FIXES.get(reason, ("", ()))
            checks.append(Check(f"last_{kind}", title, True, detail, warning=f"the last {kind} sign-in failed: "
                                f"{reason}" + (f". {fix}" if fix else ""), aadsts=codes, data=data))
    return checks


# ---- what the routes answer --------------------------------------------------------------------------


def health(runtime, now: datetime | None = None) -> pages.Reply:
    """`{"status": "ready"|"unavailable", "checks": {...}}`: 200 when every check is ok (warnings
    included), else 503."""
    settings_check, checks = health_checks(runtime, now)
    ready = settings_check.ok and all(c.ok for c in checks)
    payload = {"status": "ready" if ready else "unavailable",
               "checks": {c.name: c.as_json() for c in (settings_check, *checks)}}
    reply = pages.json_reply(payload, 200 if ready else 503)
    if not ready:
        reply.headers["Retry-After"] = "30"
    return reply


@dataclass
class SetupReport:
    redirect_uris: dict[str, str | None]
    signed_out_uris: dict[str, str | None]
    redirect_note: str
    client_id: str
    settings_rows: list[tuple[str, str, str]]  # (name, value as shown, problem or "")
    settings_check: Check
    checks: list[Check]
    sign_ins: list[Check]
    hints: Mapping[int, str]
    app_roles_required: bool | None = None  # None: not known while the settings do not load

    @property
    def all_checks(self) -> list[Check]:
        return [self.settings_check, *self.checks, *self.sign_ins]

    @property
    def problem_count(self) -> int:
        """Bad settings, each counted."""
        return len(self.settings_check.data.get("problems", []))


def _shown_value(info: SettingInfo, env: Mapping[str, str], settings: Settings | None) -> str:
    raw = (env.get(info.name) or "").strip()
    if info.secret:
        return "set (value hidden)" if raw else "not set"
    if may_hold_a_credential(info.name, raw):
        return "set (value hidden: it looks like a secret, which this setting must not hold)"
    if raw:
        return raw
    in_force = getattr(settings, info.field, None) if settings is not None and info.field else None
    if isinstance(in_force, frozenset):
        in_force = ", ".join(sorted(in_force))
    return f"not set (using {in_force})" if in_force not in (None, "") else "not set"


def _redirect_uris(env: Mapping[str, str], settings: Settings | None) -> tuple[str, str]:
    """The base URL the redirect URIs are built from ("" when there is none yet), and a note."""
    if settings is not None:
        return settings.public_base_url, ""
    # The settings do not load, but the URIs need only the base URL: show them if it is usable.
    base = public_base_url(env)
    if base and valid_public_base(base):
        return base, "Built from PUBLIC_BASE_URL; other settings still have problems (below)."
    return "", "Set PUBLIC_BASE_URL (the app's https:// address) to get them."


def setup_report(runtime, now: datetime | None = None, sync_problems: Sequence[Problem] = ()) -> SetupReport:
    """`sync_problems`: directory sync's, which it reads itself (scim/auth.py: they never stop sign-in),
    shown in its settings' rows too."""
    env = runtime.env
    settings_check, checks = health_checks(runtime, now)
    settings = None if not settings_check.ok else runtime.settings
    problems = [Problem(**p) for p in settings_check.data.get("problems", [])]
    rows = [(info.name, _shown_value(info, env, settings),
             " ".join(f"{p.text} {p.fix}".strip() for p in (*problems, *sync_problems) if p.setting == info.name))
            for info in SETTINGS_TABLE]
    known = {info.name for info in SETTINGS_TABLE}
    rows += [("", "", str(p)) for p in problems if p.setting not in known]
    tables_ok = next((c.ok for c in checks if c.name == "tables"), False)
    unavailable = ("the settings have problems" if settings is None else
                   "" if tables_ok else "Table Storage is unreachable")
    base, note = _redirect_uris(env, settings)
    client_id = (env.get("OIDC_CLIENT_ID") or "").strip()
    if not looks_like_client_id(client_id):
        client_id = ""  # a placeholder, a typo or a secret pasted there: its Settings row says which
    if settings is not None and settings.allow_query_response_mode:
        checks = [*checks, Check("response_mode", "Callback response mode", True, "GET callbacks carrying a code "
                                 "are accepted", warning="ALLOW_QUERY_RESPONSE_MODE is true: codes may arrive in "
                                 "URLs (browser history, request logs); turn it off unless the IdP ignores form_post.")]
    return SetupReport(redirect_uris={kind: redirect_uri(base, kind) if base else None for kind in KINDS},
                       signed_out_uris={kind: signed_out_uri(base, kind) if base else None for kind in KINDS},
                       redirect_note=note, client_id=client_id,
                       settings_rows=rows, settings_check=settings_check, checks=checks,
                       sign_ins=last_sign_ins(runtime, unavailable), hints=HINTS,
                       app_roles_required=None if settings is None else settings.app_roles_required)


def setup(runtime, now: datetime | None = None, correlation_id: str = "") -> pages.Reply:
    from .scim.status import setup_section, sync_status  # directory sync's own section (shared/scim/status.py)

    sync = sync_status(runtime, correlation_id)
    # Its setting error (a short token: every SCIM route answers 503) is a problem of the page's summary.
    return pages.setup_page(setup_report(runtime, now, sync.problems),
                            extra_html=setup_section(runtime, correlation_id, sync),
                            extra_problems=int(sync.state == "error"))
