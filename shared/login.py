"""The login itself: start it, complete it at the callback, log out. One code path for both kinds:
a user and an agent differ only by their kind's portal URL and redirect URI."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from . import pages
from .aadsts import hint_for
from .accounts import canonical_email
from .admission import check_admission
from .audit import SignInEvent
from .background import BACKGROUND
from .callback import Callback, CallbackRequest
from .config import KINDS, origin_of
from .errors import (
    DependencyUnavailable,
    IdpError,
    InternalError,
    InvalidParameter,
    IssuerMismatch,
    MissingParameters,
    NoEmailClaim,
    NotFound,
    ReturnToNotAllowed,
    SsoError,
)
from .flows import StoredFlow, new_binding
from .id_token import verify_id_token
from .oidc_client import expected_nonce

if TYPE_CHECKING:
    from .accounts import AccountStore
    from .audit import SignInEvents
    from .config import Settings
    from .flows import FlowStore
    from .jwks import JwksCache
    from .oidc_client import OidcClient
    from .provider import ProviderMetadata
    from .session_token import SessionSigner

log = logging.getLogger("portal_sso")

# Input bounds, checked before any outbound call or table read.
MAX_CODE = 4096
MAX_STATE = 200
MAX_RETURN_TO = 2048
MAX_ERROR_TEXT = 1000
MAX_DETAIL = 500  # of a failure's detail in its audit row and log line


def flow_cookie_name(kind: str) -> str:
    return f"__Host-portal-sso-{kind}"


def flow_cookie(kind: str, value: str, max_age: int) -> str:
    """__Host-: Secure, Path=/, no Domain. SameSite=None: the form_post callback is a cross-site POST,
    which would drop a Lax cookie; HttpOnly and the server-side hash keep it useless to anyone else."""
    return f"{flow_cookie_name(kind)}={value}; Path=/; Secure; HttpOnly; SameSite=None; Max-Age={max_age}"


def check_return_to(value: str, allowed_origins: frozenset[str]) -> str:
    """The return_to, if it points exactly (scheme, host, port) at an allowed origin; else
    ReturnToNotAllowed. Backslashes, control characters, user info and protocol-relative URLs are
    refused outright: browsers and parsers disagree about them (open-redirect tricks)."""
    if len(value) > MAX_RETURN_TO or any(ord(c) < 0x21 or ord(c) == 0x7F or c == "\\" for c in value):
        raise ReturnToNotAllowed("return_to has forbidden characters or is too long")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ReturnToNotAllowed("return_to is not a URL") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname or "@" in parts.netloc:
        raise ReturnToNotAllowed("return_to must be an absolute http(s) URL without user info")
    default_port = {"https": 443, "http": 80}[parts.scheme]
    origin = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port and port != default_port else "")
    allowed = {origin_of(o) for o in allowed_origins}
    allowed |= {o.removesuffix(":443") for o in allowed if o.startswith("https://")}
    allowed |= {o.removesuffix(":80") for o in allowed if o.startswith("http://")}
    if origin.lower() not in allowed:
        raise ReturnToNotAllowed(f"return_to origin {origin!r} is not allowed")
    return value


def _as_error(exc: Exception, where: str, correlation_id: str) -> SsoError:
    """An SsoError as it is; anything else is a bug: logged with its traceback, shown as a 500."""
    if isinstance(exc, SsoError):
        return exc
    log.exception("%s internal error correlation_id=%s", where, correlation_id)
    return InternalError(type(exc).__name__)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _log_attempt(event: SignInEvent) -> None:
    """The one log line of a login attempt (sso.login / sso.callback), as text and as flat `extra`
    fields, which OpenTelemetry carries to Application Insights as attributes (the worker's own
    forwarding keeps only the text). It holds what the audit row holds, never a token, code or secret.
    `kind` comes from the route: it is a field only once checked; an unknown one goes last, quoted,
    as `raw_kind`, so no request text can put a field before the real ones."""
    checked = event.kind in KINDS
    fields = {"kind": event.kind if checked else "", "outcome": event.outcome, "reason": event.reason,
              "status": event.status, "elapsed_ms": event.elapsed_ms, "correlation_id": event.correlation_id}
    shown = {k: v for k, v in fields.items() if checked or k != "kind"}
    if not checked:
        shown["raw_kind"] = fields["raw_kind"] = event.kind
    if event.detail:
        shown["detail"] = event.detail
    text = " ".join(f"{name}={_log_value(value, quote=name == 'raw_kind')}" for name, value in shown.items())
    level = logging.WARNING if event.outcome == "failure" else logging.INFO
    log.log(level, "sso.%s %s", event.stage, text, extra=fields)


def _log_value(value: object, *, quote: bool = False) -> str:
    """A value as one token of `name=value` text: backslashes and quotes escaped, then control and
    other unprintable characters (a raw newline would let a caller forge log lines), and quoted when
    it holds a space, `=`, a quote or a backslash, or is empty."""
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped if escaped.isprintable() else "".join(
        c if c.isprintable() else repr(c)[1:-1] for c in escaped)
    if quote or not text or escaped != text or any(c in text for c in " ="):
        return f'"{escaped}"'
    return escaped


class LoginDeps(Protocol):
    """What the login needs. `runtime.Runtime` is the real one (each collaborator built on first use,
    then shared by the worker); unit tests hand in their own."""

    @property
    def settings(self) -> Settings: ...
    @property
    def flows(self) -> FlowStore: ...
    @property
    def accounts(self) -> AccountStore: ...
    @property
    def events(self) -> SignInEvents: ...
    @property
    def oidc(self) -> OidcClient: ...
    def metadata(self) -> ProviderMetadata: ...
    def idp_keys(self) -> JwksCache: ...
    def signer(self) -> SessionSigner: ...
    def warm_up(self) -> None: ...


class SsoService:
    """The login: start it, complete it, log out, publish our keys."""

    def __init__(self, deps: LoginDeps, clock=time.time):
        self.deps = deps
        self.clock = clock

    # GET /api/sso/{kind}/login
    def start_login(self, kind: str, return_to: str | None, correlation_id: str) -> pages.Reply:
        started = time.monotonic()
        try:
            # 1. the kind and the settings
            if kind not in KINDS:
                raise NotFound(f"unknown kind {kind!r}")
            settings = self.deps.settings
            # 2. return_to, only to an allowed origin
            if return_to:
                check_return_to(return_to, settings.allowed_return_origins)
            # 3. MSAL's flow (state, nonce, PKCE), stored server-side and bound to this browser
            flow = self.deps.oidc.start(settings.redirect_uri(kind))
            binding = new_binding()
            self.deps.flows.save(flow, kind, binding, return_to, correlation_id)
            _log_attempt(SignInEvent(correlation_id=correlation_id, kind=kind, outcome="redirect", reason="ok",
                                     status=302, stage="login", elapsed_ms=_ms_since(started)))
            # 4. off to the IdP; meanwhile, on a cold worker, the callback's caches fill
            self.deps.warm_up()
            return pages.redirect(flow["auth_uri"], [flow_cookie(kind, binding, self.deps.flows.ttl)])
        except Exception as exc:  # a refused start gets its audit row too
            err = _as_error(exc, "sso.login", correlation_id)
            reply = pages.error(err, correlation_id, portal_url=self._portal_url(kind))
            event = SignInEvent(correlation_id=correlation_id, kind=kind, outcome="failure", reason=err.reason,
                                status=reply.status, stage="login", elapsed_ms=_ms_since(started),
                                detail=err.detail[:MAX_DETAIL])
            reply = self._audit(event, reply, correlation_id)
            _log_attempt(event)
            return reply

    # POST|GET /api/sso/{kind}/callback
    def complete_login(self, kind: str, request: CallbackRequest, correlation_id: str) -> pages.Reply:
        """Every outcome leaves through here: one audit row and one log line, written before the reply."""
        started = time.monotonic()
        event = SignInEvent(correlation_id=correlation_id, kind=kind, outcome="failure", reason="", status=0)
        callback: Callback | None = None
        try:
            if kind not in KINDS:
                raise NotFound(f"unknown kind {kind!r}")
            callback = Callback.parse(request)
            reply = self._complete(kind, callback, event)
            event.outcome, event.reason = "success", "ok"
        except Exception as exc:  # every outcome gets its audit row, a bug's too
            err = _as_error(exc, "sso.callback", correlation_id)
            event.reason = err.reason
            event.account_id = event.account_id or getattr(err, "account_id", "")
            reply = pages.error(err, correlation_id, portal_url=self._portal_url(kind))
            event.detail = err.detail[:MAX_DETAIL]
        if callback is not None and callback.consumed:
            # The flow is over, whatever the outcome. Only a callback that consumed the flow clears the
            # cookie: a stranger's bogus callback (SameSite=None lets other sites send one) must not
            # cancel a login the browser has under way.
            reply.cookies.append(flow_cookie(kind, "", 0))
        event.status, event.elapsed_ms = reply.status, _ms_since(started)
        reply = self._audit(event, reply, correlation_id)
        _log_attempt(event)
        return reply

    def _complete(self, kind: str, callback: Callback, event: SignInEvent) -> pages.Reply:
        settings = self.deps.settings
        params = callback.params
        # 1. the authorization response: bounded, an IdP error, the RFC 9207 issuer
        code, state = params.get("code", ""), params.get("state", "")
        if len(code) > MAX_CODE or len(state) > MAX_STATE:
            raise InvalidParameter("code or state too long")
        if params.get("error"):
            error = params["error"][:100]
            description = params.get("error_description", "")[:MAX_ERROR_TEXT]
            raise IdpError(f"IdP error {error}", shown=f"{error}: {description}" if description else error,
                           hint=hint_for(description))
        if not code or not state:
            raise MissingParameters("no code or no state in the authorization response")
        metadata = self.deps.metadata()
        iss = params.get("iss")
        if iss is not None or metadata.iss_parameter_supported:
            self._check_iss_parameter(iss, metadata, settings)
        # 2. the flow: known, started by this browser, unexpired
        stored = self.deps.flows.find(state, kind, callback.cookies.get(flow_cookie_name(kind)))
        # 3. the flow consumed (single use) while MSAL prepares the code's redemption (PKCE verifier);
        #    the code goes to the IdP only once the flow is ours. The pinned MSAL also checks the
        #    nonce, but newer MSAL no longer does: our own check in step 4 (id_token.py) is the defence.
        result = self._take_and_redeem(stored, code, state, callback)
        # 4. the ID token, validated by us
        claims = verify_id_token(result["id_token"], metadata=metadata, jwks=self.deps.idp_keys(),
                                 client_id=settings.client_id, expected_nonce=expected_nonce(stored.flow))
        tid = claims.get("tid") if isinstance(claims.get("tid"), str) else ""
        oid = claims.get("oid") if isinstance(claims.get("oid"), str) else ""
        idp_sub = f"{tid}:{oid}" if tid and oid else claims["sub"]
        event.idp_subject, event.tenant_id = idp_sub, tid
        # 5. may this person enter: tenant, verified email, the kind's app role
        check_admission(claims, kind, settings)
        email = claims.get("email")
        event.had_email_claim = isinstance(email, str) and bool(email.strip())
        if not event.had_email_claim:
            raise NoEmailClaim("no email claim in the ID token")
        email = canonical_email(email)  # raises MalformedEmail (403 email_malformed)
        event.email = email
        # 6. the portal account of this kind, linked to this person
        account = self.deps.accounts.find_account(email, kind)
        event.account_id = account.account_id
        self.deps.accounts.link_and_record_login(account, idp_sub)
        # 7. the session token, delivered by form_post to this kind's portal
        token = self.deps.signer().issue_session_token(
            issuer=settings.session_issuer, audience=settings.session_audience, subject=account.account_id,
            email=email, name=str(claims.get("name") or account.display_name or ""), account_type=kind,
            idp_iss=claims["iss"], idp_sub=idp_sub, now=int(self.clock()), ttl=settings.session_ttl)
        fields = {"session_token": token}
        if stored.return_to:
            fields["return_to"] = stored.return_to
        portal = settings.portal_urls[kind]
        return pages.form_post(portal, fields, origin_of(portal))

    def _take_and_redeem(self, stored: StoredFlow, code: str, state: str, callback: Callback) -> dict:
        """Consumes the flow (raising UnknownState when another callback took it, FlowExpired when it
        is out of time) and redeems the code, overlapped: the delete's round trip runs while MSAL
        builds the token request, which waits for the delete before it goes out. Both are joined
        before anything is trusted; a lost race is what gets reported, whatever the redemption did."""
        taken = BACKGROUND.submit(self.deps.flows.take, stored)
        try:
            stored.check_unexpired(datetime.fromtimestamp(self.clock(), UTC))
            return self.deps.oidc.redeem(stored.flow, code, state, before_token_request=taken.result)
        finally:
            taken.result()  # re-raises a lost race (UnknownState) or an unreachable table, ahead of the rest
            callback.consumed = True

    @staticmethod
    def _check_iss_parameter(iss: str | None, metadata, settings) -> None:
        """RFC 9207: an authorization response's `iss` must be our issuer (mix-up defence); an IdP that
        advertises the parameter must send it."""
        if iss is None:
            raise IssuerMismatch("the IdP advertises the iss parameter but sent none")
        if "{tenantid}" in metadata.issuer:
            allowed = {metadata.expected_issuer(t) for t in settings.allowed_tenant_ids or ()}
        else:
            allowed = {metadata.issuer}
        if iss not in allowed:
            raise IssuerMismatch("iss parameter is not the issuer", shown=iss[:300])

    def _audit(self, event: SignInEvent, reply: pages.Reply, correlation_id: str) -> pages.Reply:
        """Writes the audit row before the reply goes out. If it cannot be written, a success becomes
        a 503 (no unaudited session); a failure keeps its page and the row goes to the log."""
        try:
            self.deps.events.record(event)
        except SsoError as err:
            # The full event, so the log holds what the row would have (nothing in it is secret).
            fields = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(event).items()}
            log.error("sso.audit_failed correlation_id=%s reason=%s event=%s", correlation_id, err.reason,
                      json.dumps(fields, sort_keys=True))
            if event.outcome == "success":
                unavailable = DependencyUnavailable("table_storage", "audit row could not be written")
                return pages.error(unavailable, correlation_id, portal_url=self._portal_url(event.kind))
        return reply

    # GET /api/sso/{kind}/logout
    def logout(self, kind: str, correlation_id: str) -> pages.Reply:
        try:
            if kind not in KINDS:
                raise NotFound(f"unknown kind {kind!r}")
            portal = self.deps.settings.portal_urls[kind]
            metadata = self.deps.metadata()
            if not metadata.end_session_endpoint:
                return pages.redirect(portal)
            return pages.redirect(self.deps.oidc.logout_url(metadata.end_session_endpoint, portal))
        except SsoError as err:
            return pages.error(err, correlation_id, portal_url=self._portal_url(kind))

    # GET /api/sso/jwks.json
    def session_jwks(self, correlation_id: str) -> pages.Reply:
        """Our own public keys, which verify the session tokens we issue."""
        try:
            return pages.json_reply(self.deps.signer().jwks(), cache="public, max-age=300")
        except SsoError as err:
            return pages.error(err, correlation_id)

    def _portal_url(self, kind: str) -> str | None:
        try:
            return self.deps.settings.portal_urls.get(kind)
        except SsoError:
            return None
