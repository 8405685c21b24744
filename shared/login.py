"""The login itself: start it, complete it at the callback, log out. One code path for both kinds:
a user and an agent differ only by their kind's portal URL and redirect URI."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlencode, urlsplit

from . import pages
from .aadsts import hint_for
from .accounts import account_id_problem, canonical_email, held_by_another, shown_name_problem
from .admission import check_admission
from .audit import SignInEvent
from .callback import Callback, CallbackRequest, parse_cookies
from .config import KINDS, ascii_host, home_urls, log_value, origin_of
from .daylog import event_json
from .errors import (
    WRONG_DOOR,
    BindingMismatch,
    DependencyUnavailable,
    FlowExpired,
    IdpError,
    InternalError,
    InvalidParameter,
    IssuerMismatch,
    LoginNotNavigation,
    MalformedEmail,
    MissingParameters,
    NoAccount,
    NoEmailClaim,
    NotFound,
    ResponseModeNotAllowed,
    ReturnToNotAllowed,
    RoleNotAssigned,
    SsoError,
    UnknownState,
)
from .flows import (
    MAX_IN_FLIGHT,
    STATE_SYNTAX,
    Flow,
    cookie_name,
    flows_in_flight,
    set_cookie,
)
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
# The error codes an IdP sends in an authorization response (RFC 6749 4.1.2.1, OIDC Core 3.1.2.6, and
# Entra's invalid_resource): only these are shown as they are.
IDP_ERROR_CODES = frozenset({
    "invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type", "invalid_scope",
    "server_error", "temporarily_unavailable", "interaction_required", "login_required",
    "account_selection_required", "consent_required", "invalid_request_uri", "invalid_request_object",
    "request_not_supported", "request_uri_not_supported", "registration_not_supported", "invalid_resource"})
MAX_DETAIL = 500  # of a failure's detail in its audit row and log line
PORTAL_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,128}\Z")  # \Z: "$" would let a final newline in
PROMPTS = ("select_account", "login")
# Of a return_to's characters: controls (C0, DEL and C1: U+0085 is a line break to many parsers), format
# characters (a right-to-left override, a zero-width space) and line or paragraph separators.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def check_return_to(value: str, allowed_origins: frozenset[str]) -> str:
    """The return_to, if it points exactly (scheme, host, port) at an allowed origin (as `origin_of`
    gives them, which is how the settings hold them); else
    ReturnToNotAllowed. Backslashes, control characters, user info and protocol-relative URLs are
    refused outright: browsers and parsers disagree about them (open-redirect tricks). So is a host that
    is not ASCII, as no setting holds one (str.lower would make the Kelvin sign a 'k'). The length is
    counted as the flow cookie holds it (JSON, UTF-8): counted in characters, 2,048 non-ASCII ones would
    seal into a cookie over the 4 KB browsers keep, and the person would come back to a 400."""
    try:
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8")) - 2  # less the quotes
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise ReturnToNotAllowed("return_to is not valid text") from exc
    if size > MAX_RETURN_TO or any(c in " \\" or unicodedata.category(c) in FORBIDDEN_CATEGORIES for c in value):
        raise ReturnToNotAllowed("return_to has forbidden characters or is too long")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError as exc:
        raise ReturnToNotAllowed("return_to is not a URL") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname or "@" in parts.netloc:
        raise ReturnToNotAllowed("return_to must be an absolute http(s) URL without user info")
    if not ascii_host(parts):  # as the settings hold hosts; and Location and the CSP are ASCII headers
        raise ReturnToNotAllowed("return_to host is not ASCII (an internationalised domain goes in its xn-- form)")
    origin = origin_of(value)
    if origin not in allowed_origins:  # the settings hold them as origin_of gives them
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
    kindless = event.stage == "jwks"  # the session keys belong to no kind: no kind field at all
    fields = {"kind": event.kind if checked else "", "outcome": event.outcome, "reason": event.reason,
              "status": event.status, "elapsed_ms": event.elapsed_ms, "correlation_id": event.correlation_id}
    shown = {k: v for k, v in fields.items() if checked or k != "kind"}
    if not checked and not kindless:
        shown["raw_kind"] = fields["raw_kind"] = event.kind
    if event.detail:
        shown["detail"] = event.detail
    text = " ".join(f"{name}={log_value(value, quote=name == 'raw_kind')}" for name, value in shown.items())
    level = logging.WARNING if event.outcome == "failure" else logging.INFO
    log.log(level, "sso.%s %s", event.stage, text, extra=fields)


def _shown_name(claimed: object, display_name: str) -> str:
    """The session token's `name`, which portals show: the ID token's when it is text the rule for a
    shown name takes (no control, format or line-separator character: a right-to-left override would
    spoof a name in a supervisor's list), else the account's own held to the same rule (a row kept from
    before the rule, or written by another tool, may break it), else none."""
    if isinstance(claimed, str) and claimed.strip() and shown_name_problem(claimed) is None:
        return claimed
    return display_name if display_name and shown_name_problem(display_name) is None else ""


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
    def metadata_held(self) -> ProviderMetadata | None: ...
    def idp_keys(self) -> JwksCache: ...
    def signer(self) -> SessionSigner: ...
    def warm_up(self) -> None: ...


class SsoService:
    """The login: start it, complete it, log out, publish our keys."""

    def __init__(self, deps: LoginDeps, clock=time.time):
        self.deps = deps
        self.clock = clock

    # GET /api/sso/{kind}/login
    def start_login(self, kind: str, return_to: str | None, correlation_id: str, *, nonce: str | None = None,
                    prompt: str | None = None, cookie_header: str = "", fetch_dest: str = "") -> pages.Reply:
        """`nonce` and `prompt` are the portal's optional parameters (an empty one counts as absent);
        `cookie_header` tells which logins this browser has in flight; `fetch_dest` is the request's
        Sec-Fetch-Dest header, when the browser sends one."""
        started = time.monotonic()
        try:
            # 1. the kind, the settings, and a top-level navigation: an <img> or a fetch could never
            #    show the IdP's page, and must not push a login in progress out of the browser's cookies
            if kind not in KINDS:
                raise NotFound(f"unknown kind {kind!r}")
            if fetch_dest and fetch_dest != "document":
                raise LoginNotNavigation(f"login start with Sec-Fetch-Dest {fetch_dest[:40]!r}")
            settings = self.deps.settings
            # 2. the portal's parameters: return_to only to an allowed origin, its nonce, the prompt
            return_to, nonce, prompt = return_to or None, nonce or None, prompt or None
            if return_to:
                check_return_to(return_to, settings.allowed_return_origins)
            if nonce is not None and not PORTAL_NONCE.match(nonce):
                raise InvalidParameter("nonce must be 16 to 128 characters of A-Za-z0-9-_",
                                       shown="nonce must be 16 to 128 characters of A-Za-z0-9-_")
            if prompt is not None and prompt not in PROMPTS:
                raise InvalidParameter("prompt is not select_account or login",
                                       shown="prompt must be select_account or login")
            # 3. MSAL's flow (state, nonce, PKCE): its single-use marker in the table, its contents
            #    sealed in a cookie of its own, beside the browser's other logins in flight
            #    (with the prompt and the start, against which the callback checks prompt=login)
            seal = self.deps.signer().flow_cookies
            started_flow = self.deps.oidc.start(settings.redirect_uri(kind), prompt=prompt)
            now = self.clock()
            expires = self.deps.flows.save(started_flow["state"], kind, correlation_id,
                                           now=datetime.fromtimestamp(now, UTC))
            flow = Flow(state=started_flow["state"], kind=kind, nonce=started_flow["nonce"],
                        code_verifier=started_flow["code_verifier"], scope=tuple(started_flow["scope"]),
                        return_to=return_to, portal_nonce=nonce, expires_at=expires.timestamp(),
                        correlation_id=correlation_id, prompt=prompt)
            cookies = [set_cookie(cookie_name(kind, flow.state), seal.seal(flow), self.deps.flows.ttl)]
            in_flight = flows_in_flight(parse_cookies(cookie_header))
            cookies += [set_cookie(name, "", 0) for _, name in in_flight[:max(0, len(in_flight) + 1 - MAX_IN_FLIGHT)]]
            _log_attempt(SignInEvent(correlation_id=correlation_id, kind=kind, outcome="redirect", reason="ok",
                                     status=302, stage="login", elapsed_ms=_ms_since(started)))
            # 4. off to the IdP; meanwhile, on a cold worker, the callback's caches fill
            self.deps.warm_up()
            return pages.redirect(started_flow["auth_uri"], cookies)
        except Exception as exc:  # a refused start gets its audit row too
            return self._failed(exc, "login", kind, correlation_id, started, audit=True)

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
            if isinstance(err, DependencyUnavailable) and callback is not None and callback.finished:
                err.message = err.message_flow_spent  # a refresh would be refused (unknown_state)
            event.reason = err.reason
            event.account_id = event.account_id or getattr(err, "account_id", "")
            # An empty GET is where a response in the URL's fragment lands: its page reports the state.
            reply = pages.error(err, correlation_id, portal_url=self._portal_url(kind),
                                report_fragment=isinstance(err, MissingParameters) and callback is not None
                                and callback.query_mode and not callback.params)
            event.detail = err.detail[:MAX_DETAIL]
        if callback is not None and callback.finished:
            # The flow is over, whatever the outcome. Only a callback that consumed the flow, whose flow
            # the IdP ended, or whose cookie opened for a flow already gone clears its cookie: a
            # stranger's bogus callback (SameSite=None lets other sites send one) must not cancel a login
            # the browser has under way.
            reply.cookies.append(set_cookie(cookie_name(kind, callback.params.get("state", "")), "", 0))
        event.status, event.elapsed_ms = reply.status, _ms_since(started)
        audited = self._audit(event, reply, correlation_id)
        if audited is not reply:  # a success whose row could not be written went out as a 503: say so
            event.outcome, event.reason, event.status = "failure", "table_storage_unavailable", audited.status
        reply = audited
        _log_attempt(event)
        return reply

    def _complete(self, kind: str, callback: Callback, event: SignInEvent) -> pages.Reply:
        settings = self.deps.settings
        params = callback.params
        # 1. the authorization response: bounded, an IdP error, no code in a URL, the RFC 9207 issuer
        code, state = params.get("code", ""), params.get("state", "")
        if len(code) > MAX_CODE or len(state) > MAX_STATE:
            raise InvalidParameter("code or state too long")
        if params.get("error"):
            # RFC 9207 2.4: the issuer first, error responses included (a mix-up's error is not our IdP's).
            self._check_iss_of(params, settings)
            raise self._idp_error(kind, callback)
        if not code or not state:
            # A state that came back without its code was in other hands on the way (the person's
            # browser reporting a response it got in the URL's fragment, which no request carries: an
            # attacker who started the login rewrote its response_mode to lend his flow to the person):
            # its flow dies with it, as a query-mode one does.
            if STATE_SYNTAX.match(state):
                self._consume(state, kind, callback, quietly=True)
            if params.get("response_mode") == "fragment":
                raise ResponseModeNotAllowed("authorization response in the URL's fragment (response_mode=fragment), "
                                             "its state reported by the callback's page")
            raise MissingParameters("no code or no state in the authorization response")
        if callback.query_mode and not settings.allow_query_response_mode:
            # The code is in a URL (history, request logs): its flow dies with it, so whoever reads
            # the URL cannot redeem it with the flow's own cookie.
            if STATE_SYNTAX.match(state):
                self._consume(state, kind, callback, quietly=True)
            raise ResponseModeNotAllowed("GET callback carrying a code while ALLOW_QUERY_RESPONSE_MODE is off")
        metadata = self._check_iss_of(params, settings)
        # 2. the binding: this state's cookie opens under our key, for this state and kind only. A
        #    wrong browser (no cookie, another flow's, altered, an old key) still consumes the marker:
        #    no later request can complete a flow a wrong browser has presented.
        self.deps.flows.check_state(state)
        cookie = callback.cookies.get(cookie_name(kind, state))
        try:
            flow = self.deps.signer().flow_cookies.open(kind, state, cookie)
        except BindingMismatch:
            # The browser drops the cookie when the flow expires (its Max-Age is the flow's): no cookie
            # and an expired marker is a person who took too long, not another browser.
            late = not cookie and self.deps.flows.expired(state, kind, datetime.fromtimestamp(self.clock(), UTC))
            self._consume(state, kind, callback)  # UnknownState (reported instead) when it was gone already
            if late:
                raise FlowExpired("no browser-binding cookie: the browser dropped it with the expired flow") from None
            raise
        # 3. the marker consumed (single use), then the code redeemed with the PKCE verifier: the code
        #    goes to the IdP only once the flow is ours. The pinned MSAL also checks the
        #    nonce, but newer MSAL no longer does: our own check in step 4 (id_token.py) is the defence.
        msal_flow = flow.msal_flow(settings.redirect_uri(kind))
        result = self._take_and_redeem(flow, msal_flow, code, callback)
        # 4. the ID token, validated by us; after prompt=login, its auth_time must show a sign-in since the
        #    start: the prompt went to the IdP in a URL the person can edit, so only the token can show it
        claims = verify_id_token(result["id_token"], metadata=metadata, jwks=self.deps.idp_keys(),
                                 client_id=settings.client_id, expected_nonce=expected_nonce(msal_flow),
                                 authenticated_since=int(flow.expires_at) - self.deps.flows.ttl
                                 if flow.prompt == "login" else None)
        tid = claims.get("tid") if isinstance(claims.get("tid"), str) else ""
        oid = claims.get("oid") if isinstance(claims.get("oid"), str) else ""
        idp_sub = f"{tid}:{oid}" if tid and oid else claims["sub"]
        event.idp_subject, event.tenant_id = idp_sub, tid
        # 5. may this person enter: tenant, an email claim and its verification, the kind's app role. The
        #    row says whether the token had an email only once that check was reached (a stranger's
        #    tenant says nothing of our registration's claims: the setup page stays green for it).
        try:
            check_admission(claims, kind, settings)
        except NoEmailClaim:
            event.had_email_claim = False
            raise
        except RoleNotAssigned:
            # Refused after the email's checks passed: the row names whom (an admin looks a person's
            # refusals up by email), and the setup page does not read the email claim as unreached.
            event.had_email_claim = True
            with contextlib.suppress(MalformedEmail):
                event.email = canonical_email(claims["email"])
            raise
        event.had_email_claim = True
        email = canonical_email(claims["email"])  # raises MalformedEmail (403 email_malformed)
        event.email = email
        # 6. the portal account of this kind, linked to this person
        try:
            account = self.deps.accounts.find_account(email, kind)
        except NoAccount as err:
            raise self._no_account(err, email, kind, flow, idp_sub) from None
        event.account_id = account.account_id
        # The row linked: after a race (the row removed and added again meanwhile) it is a fresh read.
        account = self.deps.accounts.link_and_record_login(account, idp_sub)
        event.account_id = account.account_id
        # 7. the session token, delivered by form_post to this kind's portal
        token = self.deps.signer().issue_session_token(
            issuer=settings.session_issuer, audience=settings.session_audience, subject=account.account_id,
            email=email, name=_shown_name(claims.get("name"), account.display_name), account_type=kind,
            idp_iss=claims["iss"], idp_sub=idp_sub, now=int(self.clock()), ttl=settings.session_ttl,
            nonce=flow.portal_nonce, return_to=flow.return_to,
            auth_time=int(claims["auth_time"]) if "auth_time" in claims else None)
        portal = settings.portal_urls[kind]
        # The token alone: return_to and the portal's nonce are claims in it, never fields to trust.
        return pages.form_post(portal, {"session_token": token}, then=flow.return_to)

    def _take_and_redeem(self, flow: Flow, msal_flow: dict, code: str, callback: Callback) -> dict:
        """Consumes the marker (raising UnknownState when another callback took it, FlowExpired when the
        flow is out of time), then redeems the code: the code goes to the IdP only once the flow is
        ours. One after the other on purpose: overlapping the delete with MSAL's preparation of the
        token request (a background thread, gated) measured slower, both being Python work under one
        GIL (BENCHMARKS.md, issue 15)."""
        try:
            self.deps.flows.take(flow.state, flow.kind)
        except UnknownState:
            # The cookie opened, so it is this browser's, and its flow can never complete (a replay, or
            # another browser presented it first): it goes too, not left holding a slot of those in flight.
            callback.finished = True
            raise
        callback.finished = True
        flow.check_unexpired(self.clock())
        return self.deps.oidc.redeem(msal_flow, code, flow.state)

    def _consume(self, state: str, kind: str, callback: Callback, *, quietly: bool = False) -> None:
        """Consumes the marker of a flow that must not complete, at whichever door it was started (a
        flow presented at the other door's callback dies too: else it would still complete at its own,
        with only the IdP's redirect-URI check in the way); `quietly`: whether it was still there does
        not change the answer."""
        try:
            self.deps.flows.take(state, kind)
        except UnknownState:
            for other in KINDS:
                if other != kind:
                    with contextlib.suppress(UnknownState):
                        self.deps.flows.take(state, other)
            if not quietly:
                raise
            return
        callback.finished = True

    def _idp_error(self, kind: str, callback: Callback) -> IdpError:
        """The IdP's error, escaped on the page with our AADSTS hint. Anyone can put text in a URL, and
        our origin must not show a stranger's: the error only when it is a code an IdP sends, its
        error_description only when the state is a live flow bound to this browser (its cookie opens
        for it). That flow is over: its marker is consumed and its cookie goes."""
        params = callback.params
        error, state = params["error"][:100], params.get("state", "")
        description = params.get("error_description", "")[:MAX_ERROR_TEXT]
        shown = error if error in IDP_ERROR_CODES else "an error code this app does not know"
        bound = False
        if STATE_SYNTAX.match(state):
            try:
                flow = self.deps.signer().flow_cookies.open(kind, state, callback.cookies.get(cookie_name(kind, state)))
                callback.finished = True  # its cookie goes, even when the marker was gone already
                self._consume(state, kind, callback, quietly=True)
                flow.check_unexpired(self.clock())
                bound = True
            except SsoError:  # not bound, expired, or a dependency down: the text is not shown
                pass
        return IdpError(f"IdP error {error}", shown=f"{shown}: {description}" if bound and description else shown,
                        hint=hint_for(description))

    def _check_iss_of(self, params: dict[str, str], settings) -> ProviderMetadata:
        """The response's RFC 9207 `iss`, when it has one or the IdP advertises it; the IdP's metadata."""
        metadata = self.deps.metadata()
        iss = params.get("iss")
        if iss is not None or metadata.iss_parameter_supported:
            self._check_iss_parameter(iss, metadata, settings)
        return metadata

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
            # Not shown: anyone can put text in a link, and our origin must not show a stranger's (the
            # detail, escaped, goes to the log and the audit row).
            raise IssuerMismatch(f"iss parameter {iss[:300]!r} is not the issuer")

    def _audit(self, event: SignInEvent, reply: pages.Reply, correlation_id: str) -> pages.Reply:
        """Writes the audit row before the reply goes out. If it cannot be written, a success becomes
        a 503 (no unaudited session); a failure keeps its page and the row goes to the log. Whatever
        the store raised: an audit store unusable in a way no SsoError names (a bug) loses no line."""
        try:
            self.deps.events.record(event)
        except Exception as exc:
            err = _as_error(exc, "sso.audit", correlation_id)
            # The full event, so the log holds what the row would have (nothing in it is secret).
            log.error("sso.audit_failed correlation_id=%s reason=%s event=%s", correlation_id, err.reason,
                      event_json(event))
            if event.outcome == "success":
                unavailable = DependencyUnavailable("table_storage", "audit row could not be written")
                unavailable.message = unavailable.message_flow_spent  # a success spent its flow
                refused = pages.error(unavailable, correlation_id, portal_url=self._portal_url(event.kind))
                refused.cookies = reply.cookies  # the consumed flow's cookie goes all the same
                return refused
        return reply

    def _no_account(self, err: NoAccount, email: str, kind: str, flow: Flow, idp_sub: str) -> NoAccount:
        """The 403 page names the kind, says when the person has an account of the other kind (one
        more read, on this failure path only) and offers to sign in with another account: a login
        with the portal's own nonce and return_to, which its landing checks (neither is secret, and
        the return_to is checked again at that login start)."""
        other = next(k for k in KINDS if k != kind)
        try:
            # An account login would let this person into (find_account's rule, then the link's): a
            # disabled row, one without a usable AccountId, or another person's (linked to, or provisioned
            # for, another identity: a mailbox's previous holder) would send them to a door that refuses
            # them too, and tell a mailbox's new holder what the previous one holds.
            found = self.deps.accounts.get(email, other)
            has_other = found is not None and not account_id_problem(found.account_id) and found.enabled \
                and not held_by_another(found, idp_sub)
        except SsoError:  # storage failing now: the page simply says less
            has_other = False
        err.message = f"There is no portal {kind} account for {email}."
        err.notes = ((f"You have a portal {other} account: sign in from the {other} portal instead.",) if has_other
                     else ("If you should have one, ask your portal administrator, or sign in with another "
                           "account.",))
        # After prompt=login the step-up holds for the next account too (Entra's login prompt lets one
        # pick another account as well): a select_account login, with the portal's nonce, would give the
        # portal a token for its step-up from an account still signed in at the IdP, no password asked.
        again = {"prompt": "login" if flow.prompt == "login" else "select_account", "nonce": flow.portal_nonce,
                 "return_to": flow.return_to}
        err.actions = [("Sign in with another account",
                        f"/api/sso/{kind}/login?{urlencode({k: v for k, v in again.items() if v})}")]
        if has_other:
            if self.deps.settings.home_url(other) != self.deps.settings.home_url(kind):
                err.actions.append((f"Go to the {other} portal", self.deps.settings.home_url(other)))
            err.detail = f"{err.detail}; {WRONG_DOOR} ({other})"
        return err

    # GET /api/sso/{kind}/logout
    def logout(self, kind: str, correlation_id: str) -> pages.Reply:
        """RP-initiated logout: back to our signed-out page, a registered redirect URI (Entra returns to
        no other), never to the portal's landing URL, which takes POSTs only."""
        started = time.monotonic()
        try:
            if kind not in KINDS:
                raise NotFound(f"unknown kind {kind!r}")
            signed_out = self.deps.settings.signed_out_uri(kind)
            metadata = self.deps.metadata()
            if not metadata.end_session_endpoint:
                return pages.redirect(signed_out)
            return pages.redirect(self.deps.oidc.logout_url(metadata.end_session_endpoint, signed_out))
        except Exception as exc:
            return self._failed(exc, "logout", kind, correlation_id, started)

    # GET /api/sso/{kind}/signed-out
    def signed_out(self, kind: str, correlation_id: str) -> pages.Reply:
        if kind not in KINDS:
            return self._failed(NotFound(f"unknown kind {kind!r}"), "signed_out", kind, correlation_id,
                                time.monotonic(), answer=lambda err: pages.error(err, correlation_id,
                                                                                 homes=self.home_urls()))
        try:  # the metadata logout used, as held (never read here: a static page waits on no IdP)
            held = self.deps.metadata_held()
        except SsoError:
            held = None
        # Not known (nothing held, or the settings do not load): Entra's own logout may well have sent
        # the person here, so the page claims no sign-out it cannot know is absent.
        idp_asked = held is None or bool(held.end_session_endpoint)
        return pages.signed_out(self._portal_url(kind), idp_asked=idp_asked)

    # GET /api/sso/jwks.json
    def session_jwks(self, correlation_id: str) -> pages.Reply:
        """Our own public keys, which verify the session tokens we issue. A JWKS client reads a failure
        too: it gets JSON, not a page."""
        started = time.monotonic()
        try:
            return pages.json_reply(self.deps.signer().jwks(), cache="public, max-age=300")
        except Exception as exc:
            return self._failed(exc, "jwks", "", correlation_id, started,
                                answer=lambda err: pages.json_error(err, correlation_id))

    def _failed(self, exc: Exception, stage: str, kind: str, correlation_id: str, started: float, *,
                answer=None, audit: bool = False) -> pages.Reply:
        """A failed login start, logout or JWKS request: `answer`(the error) (default: the kind's error
        page), its audit row when `audit` (no one signs in at a logout or the JWKS), and its one log
        line, which holds the correlation id the answer names."""
        err = _as_error(exc, f"sso.{stage}", correlation_id)
        reply = answer(err) if answer else pages.error(err, correlation_id, portal_url=self._portal_url(kind))
        event = SignInEvent(correlation_id=correlation_id, kind=kind, outcome="failure", reason=err.reason,
                            status=reply.status, stage=stage, elapsed_ms=_ms_since(started),
                            detail=err.detail[:MAX_DETAIL])
        if audit:
            reply = self._audit(event, reply, correlation_id)
        _log_attempt(event)
        return reply

    def _portal_url(self, kind: str) -> str | None:
        """Where "Back to the portal" goes: the kind's portal home (never the landing URL, which takes
        POSTs only); for an unknown kind, the home both kinds share, if they do. None while the
        portal's own settings do not load."""
        homes = self.home_urls()
        if kind not in KINDS:
            shared = set(homes.values())
            return shared.pop() if len(shared) == 1 else None
        return homes.get(kind)

    def home_urls(self) -> dict[str, str]:
        """Each kind's portal home (none while the settings do not load): the way back from a page
        that belongs to no kind (a 404, a 500)."""
        try:
            return home_urls(lambda: self.deps.settings, getattr(self.deps, "env", None) or {})
        except Exception:  # it serves the failure pages: it must not fail itself
            return {}
