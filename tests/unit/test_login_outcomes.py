"""SsoService end to end in-process, with real tokens and keys made here and test doubles only for
the stores and the IdP client (our own seams, not the SDKs): what a callback delivers when the
audit row cannot be written."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import logging
import re
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from shared.accounts import Account
from shared.callback import CallbackRequest
from shared.config import FLOW_TTL_SECONDS, load_settings
from shared.errors import WRONG_DOOR, DependencyUnavailable, NoAccount
from shared.flows import Flow, FlowStore, cookie_name
from shared.jwks import JwksCache
from shared.login import SsoService
from shared.provider import ProviderMetadata
from shared.session_token import SessionSigner, load_signing_keys

TENANT = "3f0c9a52-6d1e-4b7a-9c2f-8e5d41a7b0c6"
ISSUER = f"https://idp.test/{TENANT}/v2.0"
CLIENT_ID = "6b1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
STATE, NONCE = "state-1234567890", "nonce-secret"
ENV = {"OIDC_ISSUER_URL": ISSUER, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": "s",
       "SESSION_SIGNING_KEY": "unused here", "TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true",
       "PORTAL_USER_URL": "https://portal.test/user", "PORTAL_AGENT_URL": "https://portal.test/agent",
       "PUBLIC_BASE_URL": "https://sso.test"}


class Flows:
    check_state = staticmethod(FlowStore.check_state)
    taken = 0
    ttl = FLOW_TTL_SECONDS

    def take(self, state, kind):
        self.taken += 1


class Oidc:
    def __init__(self, id_token: str):
        self.id_token = id_token

    def redeem(self, flow, code, state):
        return {"id_token": self.id_token}


class Accounts:
    def find_account(self, email, kind):
        return Account(email, kind, "U-1", "Ann", True, None, None, "etag")

    def link_and_record_login(self, account, idp_sub):
        return account


class FailingEvents:
    def __init__(self):
        self.attempts = 0

    def record(self, event):
        self.attempts += 1
        raise DependencyUnavailable("table_storage", "insert refused")


def id_token(idp_key, **changes) -> str:
    """A valid ID token of this login (Entra's claims), with `changes` to its claims."""
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": CLIENT_ID, "sub": "s", "iat": now, "exp": now + 600, "tid": TENANT,
                       "oid": "o", "email": "ann@contoso.test", "xms_edov": True,
                       "nonce": hashlib.sha256(NONCE.encode()).hexdigest(), **changes},
                      idp_key, algorithm="RS256", headers={"kid": "k1"})


class Deps:
    def __init__(self, idp_key, events):
        self.settings = load_settings(ENV)
        self.flows, self.accounts, self.events = Flows(), Accounts(), events
        jwk = RSAAlgorithm.to_jwk(idp_key.public_key(), as_dict=True) | {"kid": "k1", "alg": "RS256"}
        self._keys = JwksCache(lambda: {"keys": [jwk]})
        self.oidc = Oidc(id_token(idp_key))
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        self._signer = SessionSigner(load_signing_keys(pem))

    def metadata(self):
        return ProviderMetadata(issuer=ISSUER, authorization_endpoint="https://idp.test/a",
                                token_endpoint="https://idp.test/t", jwks_uri="https://idp.test/k",
                                end_session_endpoint=None, id_token_algs=frozenset({"RS256"}),
                                iss_parameter_supported=False, discovered_from="https://idp.test/m")

    def metadata_held(self):
        return self.metadata()

    def idp_keys(self):
        return self._keys

    def signer(self):
        return self._signer


@pytest.fixture(scope="module")
def idp_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def callback_request(deps: Deps, expires_at: int | None = None, *, return_to: str | None = None,
                     portal_nonce: str | None = None, prompt: str | None = None) -> CallbackRequest:
    """The callback of a login this browser started: its flow sealed in its cookie with the deps' key."""
    flow = Flow(state=STATE, kind="user", nonce=NONCE, code_verifier="v" * 43, scope=("email", "openid"),
                return_to=return_to, portal_nonce=portal_nonce, expires_at=expires_at or int(time.time()) + 300,
                correlation_id="c", prompt=prompt)
    cookie = f"{cookie_name('user', STATE)}={deps.signer().flow_cookies.seal(flow)}"
    return CallbackRequest("POST", "application/x-www-form-urlencoded", f"code=c0de&state={STATE}".encode(),
                           cookie_header=cookie)


def test_a_success_whose_audit_row_cannot_be_written_is_a_503_without_a_token(idp_key):
    events = FailingEvents()
    deps = Deps(idp_key, events)
    reply = SsoService(deps).complete_login("user", callback_request(deps), "cid-1")
    assert events.attempts >= 1, "the audit row was attempted"
    assert reply.status == 503, f"no unaudited session: {reply.status}"
    assert reply.headers.get("Retry-After"), "a 503 says when to try again"
    body = reply.body if isinstance(reply.body, str) else reply.body.decode()
    assert "session_token" not in body and "eyJ" not in body, "no session token is delivered"
    assert "cid-1" in body, "the page names the correlation id"
    assert any(c.startswith(f"{cookie_name('user', STATE)}=;") for c in reply.cookies), \
        "the consumed flow's cookie is cleared on the 503 too"


def test_the_same_callback_with_a_working_audit_store_delivers_the_token(idp_key):
    """The control: the only difference from the test above is the events store."""
    class Events:
        rows = []

        def record(self, event):
            self.rows.append(event)

    events = Events()
    deps = Deps(idp_key, events)
    reply = SsoService(deps).complete_login("user", callback_request(deps), "cid-2")
    body = reply.body if isinstance(reply.body, str) else reply.body.decode()
    assert reply.status == 200 and 'name="session_token"' in body, body[:400]
    assert [e.outcome for e in events.rows] == ["success"]


def test_a_flow_that_expires_as_its_callback_arrives_is_consumed_and_refused(idp_key):
    """The cookie says the flow expires now; the callback comes one millisecond later: a 400
    flow_expired, the marker is consumed all the same, and the code is never redeemed."""
    expires_at = int(time.time()) + 300

    class NeverRedeems(Oidc):
        def redeem(self, *args, **kwargs):
            raise AssertionError("an expired flow's code must not be redeemed")

    deps = Deps(idp_key, events := type("Events", (), {"rows": [], "record": lambda self, e: self.rows.append(e)})())
    deps.oidc = NeverRedeems("")
    clock = lambda: expires_at + 0.001  # noqa: E731 - the moment after
    reply = SsoService(deps, clock=clock).complete_login("user", callback_request(deps, expires_at), "cid-3")
    assert reply.status == 400 and [e.reason for e in events.rows] == ["flow_expired"]
    assert deps.flows.taken == 1, "the expired flow is consumed, so it cannot be tried again"
    assert any(c.startswith(f"{cookie_name('user', STATE)}=;") for c in reply.cookies), "the flow cookie is cleared"


class Events:
    def __init__(self):
        self.rows = []

    def record(self, event):
        self.rows.append(event)


@pytest.mark.parametrize("cut", range(1, 9))
def test_a_truncated_flow_cookie_is_a_400_that_consumes_the_flow_never_a_500(idp_key, cut):
    """Whatever the cut (a base64 tail of 4n+1 characters cannot even be decoded), the cookie does not
    open: 400 browser_binding_mismatch, and the marker is consumed (SECURITY.md)."""
    deps = Deps(idp_key, Events())
    request = callback_request(deps)
    truncated = CallbackRequest(request.method, request.content_type, request.body,
                                cookie_header=request.cookie_header[:-cut])
    reply = SsoService(deps).complete_login("user", truncated, "cid-t")
    assert reply.status == 400, (cut, reply.status)
    assert [e.reason for e in deps.events.rows] == ["browser_binding_mismatch"]
    assert deps.flows.taken == 1, "the marker is consumed"


@pytest.mark.parametrize("field", ["nonce", "state"])
def test_a_final_newline_does_not_slip_past_the_syntax_of_the_portal_nonce_or_the_state(idp_key, field):
    deps = Deps(idp_key, Events())
    service = SsoService(deps)
    if field == "nonce":
        reply = service.start_login("user", None, "cid-n", nonce="a" * 16 + "\n")
    else:
        reply = service.complete_login("user", CallbackRequest(
            "POST", "application/x-www-form-urlencoded", b"code=c0de&state=abcdefgh%0A"), "cid-s")
        assert deps.flows.taken == 0, "a state that cannot be ours never becomes a table key"
    assert reply.status == 400, reply.status
    assert deps.events.rows and deps.events.rows[-1].reason == "invalid_parameter", deps.events.rows


class BrokenEvents:
    """An audit store that fails in a way no SsoError describes (a bug, a misbuilt client)."""

    def record(self, event):
        raise ValueError("Connection string is either blank or malformed.")


def test_an_audit_store_failing_unexpectedly_still_leaves_the_page_and_the_log_lines(idp_key, caplog):
    deps = Deps(idp_key, BrokenEvents())
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        refused = SsoService(deps).start_login("user", "https://evil.test/", "cid-login")
        delivered = SsoService(deps).complete_login("user", callback_request(deps), "cid-callback")
    assert refused.status == 400 and "cid-login" in refused.body, "a refused start keeps its own page"
    assert delivered.status == 503 and "session_token" not in delivered.body, "no unaudited session"
    lines = [r.getMessage() for r in caplog.records]
    for cid, stage in (("cid-login", "sso.login"), ("cid-callback", "sso.callback")):
        assert any(m.startswith(f"sso.audit_failed correlation_id={cid} ") and "event={" in m for m in lines), lines
        assert any(m.startswith(f"{stage} ") and f"correlation_id={cid}" in m for m in lines), lines


class NoAccounts(Accounts):
    """No account for anyone (of either kind)."""

    def find_account(self, email, kind):
        raise NoAccount(f"no {kind} account for this email")

    def get(self, email, kind):
        return None


class AgentRowOnly(NoAccounts):
    """No user account; an agent row as `row` says."""

    def __init__(self, row: Account | None):
        self.row = row

    def get(self, email, kind):
        return self.row if kind == "agent" else None


@pytest.mark.parametrize(("row", "sent_on"), [
    (Account("ann@contoso.test", "agent", "A-1", "Ann", True, None, None, "e"), True),
    (Account("ann@contoso.test", "agent", "A-1", "Ann", False, None, None, "e"), False),
    (Account("ann@contoso.test", "agent", "", "Ann", True, None, None, "e"), False),
], ids=["enabled-agent-account", "disabled-agent-account", "agent-row-without-account-id"])
def test_the_user_doors_403_sends_the_person_to_the_agent_door_only_for_an_account_that_signs_in(idp_key, row,
                                                                                                 sent_on):
    """A disabled agent row, or one without an AccountId (which sign-in refuses: no_account), had the
    page say "You have a portal agent account: sign in from the agent portal instead", to a door that
    refuses them too, and the audit row called it the person's own mistake (the setup page green)."""
    deps = Deps(idp_key, Events())
    deps.accounts = AgentRowOnly(row)
    reply = SsoService(deps).complete_login("user", callback_request(deps), "cid-door")
    assert reply.status == 403
    assert ("You have a portal agent account" in reply.body) is sent_on, reply.body
    assert (WRONG_DOOR in deps.events.rows[-1].detail) is sent_on


def test_sign_in_with_another_account_keeps_the_portals_nonce_and_return_to(idp_key):
    """The portal's landing checks the nonce its browser holds: a new login without it could never
    get the person in."""
    deps = Deps(idp_key, Events())
    deps.accounts = NoAccounts()
    nonce, return_to = "portal-nonce-0123456789", "https://portal.test/user/inbox?tab=1&x=y"
    reply = SsoService(deps).complete_login("user", callback_request(deps, return_to=return_to, portal_nonce=nonce),
                                            "cid-a")
    assert reply.status == 403
    (href,) = [html.unescape(h) for h in re.findall(r'href="(/api/sso/user/login\?[^"]*)"', reply.body)]
    assert parse_qs(urlsplit(href).query) == {"prompt": ["select_account"], "nonce": [nonce], "return_to": [return_to]}


def test_sign_in_with_another_account_after_prompt_login_asks_for_the_password_again(idp_key):
    """The 403 page's link started a select_account login with the portal's nonce: on a shared desk,
    picking an account still signed in at the IdP gave the portal a token for its step-up without any
    password. After prompt=login the link keeps prompt=login (Entra's login prompt lets one choose
    another account too), so the next callback checks auth_time again."""
    deps = Deps(idp_key, Events())
    deps.accounts = NoAccounts()
    now = int(time.time())
    deps.oidc = Oidc(id_token(idp_key, auth_time=now))
    reply = SsoService(deps).complete_login("user", callback_request(deps, now + FLOW_TTL_SECONDS, prompt="login",
                                                                     portal_nonce="portal-nonce-0123456789"), "cid-p")
    assert reply.status == 403
    (href,) = [html.unescape(h) for h in re.findall(r'href="(/api/sso/user/login\?[^"]*)"', reply.body)]
    assert parse_qs(urlsplit(href).query)["prompt"] == ["login"]


def test_the_token_names_the_account_the_login_linked_when_the_row_changed_meanwhile(idp_key):
    """Between the read and the link, the row was removed and added again under another id: the link
    went to the fresh row, and so do the token's sub and the audit row."""
    class Replaced(Accounts):
        def link_and_record_login(self, account, idp_sub):
            return Account(account.email, account.kind, "A-NEW", "Ann", True, idp_sub, None, "etag-2")

    events = Events()
    deps = Deps(idp_key, events)
    deps.accounts = Replaced()
    reply = SsoService(deps).complete_login("user", callback_request(deps), "cid-r")
    (token,) = re.findall(r'name="session_token" value="([^"]+)"', reply.body)
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "A-NEW"
    assert [e.account_id for e in events.rows] == ["A-NEW"]


def test_our_own_nonce_check_refuses_a_token_of_another_login_when_the_idp_client_checks_nothing(idp_key):
    """Newer MSAL no longer compares the nonce: the IdP client here (like it) hands back whatever the
    token endpoint sent, and our check alone must refuse an ID token minted for another login."""
    deps = Deps(idp_key, Events())
    deps.oidc = Oidc(id_token(idp_key, nonce=hashlib.sha256(b"another login's nonce").hexdigest()))
    reply = SsoService(deps).complete_login("user", callback_request(deps), "cid-n")
    assert reply.status == 401 and "session_token" not in str(reply.body)
    assert [e.reason for e in deps.events.rows] == ["id_token_nonce"]


def test_a_flow_cookie_sealed_for_one_door_does_not_open_at_the_other_for_the_same_state(idp_key):
    """The kind is in the cookie's associated data: the other door's cookie fails its tag, even where
    the state is the same (the marker's RowKey is not what refuses it here)."""
    from shared.errors import BindingMismatch

    cookies = Deps(idp_key, FailingEvents()).signer().flow_cookies
    flow = Flow(state=STATE, kind="agent", nonce=NONCE, code_verifier="v" * 43, scope=("email", "openid"),
                return_to=None, portal_nonce=None, expires_at=int(time.time()) + 300, correlation_id="c")
    sealed = cookies.seal(flow)
    assert cookies.open("agent", STATE, sealed).kind == "agent"
    with pytest.raises(BindingMismatch):
        cookies.open("user", STATE, sealed)



def test_a_flow_cookie_keeps_the_prompt_the_callback_checks_auth_time_for(idp_key):
    """prompt=login is enforced at the callback from what the cookie sealed (the IdP's URL, where the
    prompt travels, is the person's to edit). The cookie's version says what it holds: version 1 (sealed
    before the prompt was) still opens, without one; a version this code does not know, or members that
    are not its version's, is malformed (a 400), never a 500. So an older worker, whose pattern knows
    version 1 alone, refuses a version-2 cookie as malformed too: it unpacked exactly six members, and
    a seventh sealed under version 1 was a 500 there."""
    import json
    import os

    from shared.errors import BindingMismatch
    from shared.flows import _b64

    cookies = Deps(idp_key, FailingEvents()).signer().flow_cookies
    started = int(time.time())
    flow = Flow(state=STATE, kind="user", nonce=NONCE, code_verifier="v" * 43, scope=("email", "openid"),
                return_to=None, portal_nonce=None, expires_at=started + 600, correlation_id="c",
                prompt="login")
    sealed_now = cookies.seal(flow)
    assert sealed_now.startswith("2.")
    opened = cookies.open("user", STATE, sealed_now)
    assert (opened.prompt, opened.expires_at) == ("login", started + 600)
    plain = dataclasses.replace(flow, prompt=None)
    assert cookies.open("user", STATE, cookies.seal(plain)).prompt is None
    expires_ms = (started + 600) * 1000

    def sealed_as(version: str, members: list) -> str:
        iv = os.urandom(12)
        blob = cookies._keys[0].encrypt(iv, json.dumps(members).encode(), cookies._aad("user", STATE, expires_ms,
                                                                                        version))
        return f"{version}.{expires_ms}.{_b64(iv + blob)}"
    six = [NONCE, "v" * 43, "email openid", "", "", "c"]
    old = cookies.open("user", STATE, sealed_as("1", six))
    assert (old.nonce, old.prompt) == (NONCE, None)
    for version, members in (("1", [*six, "login"]), ("2", six), ("3", [*six, "login"])):
        with pytest.raises(BindingMismatch, match="malformed"):
            cookies.open("user", STATE, sealed_as(version, members))


def test_a_callback_of_a_prompt_login_whose_token_has_an_old_auth_time_is_a_401_with_its_row(idp_key):
    deps = Deps(idp_key, Events())
    now = int(time.time())
    deps.oidc = Oidc(id_token(idp_key, auth_time=now - 3600))
    reply = SsoService(deps).complete_login("user", callback_request(deps, now - 5 + FLOW_TTL_SECONDS, prompt="login"),
                                            "cid-pl")
    assert reply.status == 401 and "session_token" not in str(reply.body) and "cid-pl" in reply.body
    assert [(e.reason, e.status) for e in deps.events.rows] == [("id_token_auth_time", 401)]
    assert "password again" in reply.body


def test_the_signed_out_page_says_the_organizations_sign_in_is_still_active_when_the_idp_has_no_logout(idp_key):
    """With no end_session_endpoint, logout comes straight to the signed-out page and the IdP's session
    lives on: the page said it had ended, so on a shared computer the next person got in as this one."""
    deps = Deps(idp_key, FailingEvents())
    body = SsoService(deps).signed_out("user", "cid-o").body
    assert "still active" in body and "Close the browser" in body
    assert "and of your organization's sign-in" not in body



def test_the_signed_out_page_never_says_the_organizations_sign_in_ended(idp_key):
    """RP-initiated logout lets the person decline at the IdP ("No, stay signed in") and still be sent to
    the signed-out page: it cannot know the IdP's session ended, so it says only what it knows, and what
    to do on a shared computer."""
    deps = Deps(idp_key, FailingEvents())
    deps.metadata = lambda: dataclasses.replace(Deps.metadata(deps), end_session_endpoint="https://idp.test/logout")
    body = " ".join(html.unescape(SsoService(deps).signed_out("user", "cid-o").body).split())
    assert "You have signed out of the portal." in body
    assert "and of your organization's sign-in" not in body, "the IdP may have been told no"
    assert "If you also chose to sign out at your organization's sign-in, that ended too" in body
    assert "still active in this browser" in body and "Close the browser if it is a shared computer" in body


@pytest.mark.parametrize(("name", "shown"), [
    ("Ann Lee", "Ann Lee"), ("Ann\u200dLee", "Ann\u200dLee"),  # a joiner (Persian, emoji) is a name's
    ("Ann\u202eeciffo", "Ann"), ("Ann\nLee\x1b[2J", "Ann"), ("Ann\u2028Lee", "Ann"),  # the account's instead
    ({"x": 1}, "Ann"), (["Ann"], "Ann"), ("", "Ann"), ("x" * 257, "Ann"),
])
def test_the_tokens_name_is_the_id_tokens_only_when_the_accounts_rule_takes_it(idp_key, name, shown):
    """Portals show `name`: the ID token's went in unchecked (a right-to-left override spoofing a name in
    a supervisor's list, control characters, a JSON object's repr), where add, import and directory sync
    refuse such a name for the account."""
    deps = Deps(idp_key, Events())
    deps.oidc = Oidc(id_token(idp_key, name=name))
    reply = SsoService(deps).complete_login("user", callback_request(deps), "cid-name")
    (token,) = re.findall(r'name="session_token" value="([^"]+)"', reply.body)
    assert jwt.decode(html.unescape(token), options={"verify_signature": False})["name"] == shown


@pytest.mark.parametrize(("kept", "shown"), [
    ("Ann Lee", "Ann Lee"), ("Ann\u202eeciffo", ""), ("Ann\nLee\x1b[2J", ""), ("Ann\u2028Lee", ""), ("x" * 257, ""),
])
def test_the_tokens_name_from_the_account_is_held_to_the_same_rule(idp_key, kept, shown):
    """With no name in the ID token the account's DisplayName is the token's `name`: a row kept from
    before the rule, or written by another tool, holds what the rule refuses, so README's promise (never
    a control, line-separator or bidi-override character) is kept by checking it there too."""
    deps = Deps(idp_key, Events())
    deps.accounts.find_account = lambda email, kind: Account(email, kind, "U-1", kept, True, None, None, "etag")
    reply = SsoService(deps).complete_login("user", callback_request(deps), "cid-kept-name")
    (token,) = re.findall(r'name="session_token" value="([^"]+)"', reply.body)
    assert jwt.decode(html.unescape(token), options={"verify_signature": False})["name"] == shown


class AccountsDown(Accounts):
    def find_account(self, email, kind):
        raise DependencyUnavailable("table_storage", "read refused")


class FlowsDown(Flows):
    def take(self, state, kind):
        raise DependencyUnavailable("table_storage", "delete refused")


@pytest.mark.parametrize(("where", "spent"), [("account", True), ("audit", True), ("marker", False)])
def test_a_503_says_to_start_again_from_the_portal_once_the_flow_is_spent(idp_key, where, spent):
    """After the marker's delete the same callback can never complete (a refresh, the obvious retry, is
    400 unknown_state): "try again in a minute" there sent the person round a refusal. Before it (the
    marker's own delete failing) the same callback may still complete, and the page says so."""
    deps = Deps(idp_key, FailingEvents() if where == "audit" else Events())
    if where == "account":
        deps.accounts = AccountsDown()
    if where == "marker":
        deps.flows = FlowsDown()
    reply = SsoService(deps).complete_login("user", callback_request(deps), "cid-503")
    body = " ".join(html.unescape(reply.body).split())
    assert reply.status == 503 and reply.headers.get("Retry-After")
    assert ("start again from the portal" in body) is spent and ("Please try again in a minute" in body) is not spent
