"""Started logins. A flow's contents (MSAL's nonce and PKCE verifier, the portal's return_to, nonce and
prompt, its expiry) travel in the browser, in a `__Host-` cookie of their own, sealed with
AES-GCM under a key every worker derives from the session-signing key; the `SsoFlows` table keeps only
the flow's single-use marker (state, kind, expiry, correlation id), which the callback consumes with
one unconditional DELETE.

Why this keeps every property of a table-held flow (SECURITY.md, "The flow in a cookie"): the cookie is
the binding (only the browser that started the login holds it, and it opens only for its own state and
kind, which are its associated data); the verifier and nonce are sealed, so neither the browser, nor a
table reader, nor a network observer of the IdP leg sees them; single use is the marker's delete (the
first DELETE gets 204, every later one 404)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .config import FLOW_TTL_SECONDS, KINDS
from .errors import BindingMismatch, FlowExpired, InvalidParameter, UnknownState
from .tables import delete_existed, delete_matching, storage_errors

FLOW_PURGE_GRACE = timedelta(hours=1)  # how long an expired marker stays before the purge takes it
# MSAL makes states of ~22 url-safe characters; anything else cannot be ours, and must never become a
# table key (Table keys forbid / \ # ? and control characters).
STATE_SYNTAX = re.compile(r"^[A-Za-z0-9_-]{8,128}\Z")
COOKIE_PREFIX = "__Host-portal-sso-"
# One cookie per login in flight: a new login never overwrites another's. Beyond this many per browser
# (both doors together) the oldest goes: browsers keep ~180 cookies of 4 KB per site, and every request
# to the app carries them all.
MAX_IN_FLIGHT = 5
# The cookie value's version: "{version}.{expiry in epoch ms}.{IV + ciphertext, base64url}", the version
# also in the associated data. What each seals (MEMBERS): "2" added the portal's prompt. A version the
# code does not know is malformed (a 400 that still consumes the marker), never a 500: so a cookie of a
# newer version reaching an older worker (a deploy's overlap, a rollback) is refused cleanly, and this
# one still opens what the version before sealed.
FORMAT = "2"
MEMBERS = {"1": 6, "2": 7}
_KEY_INFO = b"portal-sso flow cookie v1"
_NAME = re.compile(rf"{re.escape(COOKIE_PREFIX)}(?:{'|'.join(KINDS)})-[A-Za-z0-9_-]{{12}}\Z")
# One spelling per sealed value: the expiry in ASCII digits without a leading zero (`\d` and int() also
# take other scripts' digits, and "0" + the expiry gives the same associated data), the blob in the
# base64url _b64 writes (_unb64 refuses the other last characters a lenient decoder maps to the same bytes).
_VALUE = re.compile(r"^([12])\.([1-9][0-9]{0,14})\.([A-Za-z0-9_-]{40,6000})\Z")


def flow_keys(private_keys_der: list[bytes]) -> list[AESGCM]:
    """The flow cookie's AES-256-GCM keys, one per session-signing key (current first): HKDF-SHA256 of
    the private key, so every worker holds the same key and nothing new is stored. Rotating the signing
    key rotates these: a cookie sealed under a key still in the bundle opens, one under a key removed
    from it does not (a clean 400, RELIABILITY.md)."""
    return [AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(der))
            for der in private_keys_der]


def cookie_name(kind: str, state: str) -> str:
    """`__Host-portal-sso-{kind}-{12 characters of the state's SHA-256}`: the callback finds its login's
    cookie by the state it carries, and the logins of one browser never share a cookie."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(state.encode()).digest()[:9]).decode()
    return f"{COOKIE_PREFIX}{kind}-{digest}"


def set_cookie(name: str, value: str, max_age: int) -> str:
    """__Host-: Secure, Path=/, no Domain. SameSite=None: the form_post callback is a cross-site POST,
    which would drop a Lax cookie; HttpOnly, and the seal, keep it useless to anyone else."""
    return f"{name}={value}; Path=/; Secure; HttpOnly; SameSite=None; Max-Age={max_age}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """The bytes `text` encodes, only if _b64 of them is `text` (ValueError otherwise)."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical base64url of its bytes")
    return data


@dataclass(frozen=True)
class Flow:
    """One login in flight, as its cookie holds it."""

    state: str
    kind: str
    nonce: str  # MSAL's secret nonce: the authorization request carried its SHA-256
    code_verifier: str  # PKCE
    scope: tuple[str, ...]
    return_to: str | None
    portal_nonce: str | None
    expires_at: float  # epoch seconds (the cookie holds milliseconds: the oldest login goes first)
    correlation_id: str
    # The portal's prompt: it travels to the IdP in a URL the person can edit, so prompt=login is
    # enforced at the callback (auth_time since the start: expires_at less the flow's TTL) from what the
    # cookie sealed. A cookie sealed before it held one opens without.
    prompt: str | None = None

    def msal_flow(self, redirect_uri: str) -> dict:
        """The auth code flow as MSAL's acquire_token_by_auth_code_flow reads it."""
        return {"state": self.state, "redirect_uri": redirect_uri, "scope": list(self.scope),
                "code_verifier": self.code_verifier, "nonce": self.nonce}

    def check_unexpired(self, now: float) -> None:
        if self.expires_at <= now:
            raise FlowExpired(f"flow expired at {datetime.fromtimestamp(self.expires_at, UTC).isoformat()}")


class FlowCookies:
    """Seals a flow into its cookie and opens it again; `keys` from flow_keys (the first seals)."""

    def __init__(self, keys: list[AESGCM]):
        self._keys = keys

    @staticmethod
    def _aad(kind: str, state: str, expires_ms: int, version: str = FORMAT) -> bytes:
        return f"{version}\n{kind}\n{state}\n{expires_ms}".encode()

    def seal(self, flow: Flow) -> str:
        # UTF-8, as check_return_to counts it, not 6-byte \u escapes
        plain = json.dumps([flow.nonce, flow.code_verifier, " ".join(flow.scope), flow.return_to or "",
                            flow.portal_nonce or "", flow.correlation_id, flow.prompt or ""],
                           separators=(",", ":"), ensure_ascii=False).encode()
        iv, expires_ms = os.urandom(12), int(flow.expires_at * 1000)
        sealed = self._keys[0].encrypt(iv, plain, self._aad(flow.kind, flow.state, expires_ms))
        return f"{FORMAT}.{expires_ms}.{_b64(iv + sealed)}"

    def open(self, kind: str, state: str, value: str | None) -> Flow:
        """The flow of this state and kind, from its cookie's value; BindingMismatch when the cookie is
        missing, altered, truncated, of another state or kind, or sealed under a key we no longer hold."""
        if not value:
            raise BindingMismatch("browser-binding cookie missing")
        found = _VALUE.match(value)
        if not found:
            raise BindingMismatch("browser-binding cookie malformed")
        version = found.group(1)
        try:
            expires_ms, blob = int(found.group(2)), _unb64(found.group(3))
        except ValueError as exc:  # binascii.Error: a cut that leaves 4n+1 base64 characters
            raise BindingMismatch("browser-binding cookie malformed") from exc
        aad = self._aad(kind, state, expires_ms, version)
        for key in self._keys:
            try:
                plain = key.decrypt(blob[:12], blob[12:], aad)
                break
            except InvalidTag:
                continue
        else:
            raise BindingMismatch("browser-binding cookie does not open for this state (altered, other flow, "
                                  "or an old key)")
        members = json.loads(plain)
        if len(members) != MEMBERS[version]:  # authenticated, so only a sealing bug could get here
            raise BindingMismatch("browser-binding cookie malformed")
        nonce, verifier, scope, return_to, portal_nonce, correlation_id, *later = members
        prompt = later[0] if later else ""  # version 1 (a deploy's overlap): no prompt
        return Flow(state=state, kind=kind, nonce=nonce, code_verifier=verifier, scope=tuple(scope.split()),
                    return_to=return_to or None, portal_nonce=portal_nonce or None, expires_at=expires_ms / 1000,
                    correlation_id=correlation_id, prompt=prompt or None)


def flows_in_flight(cookies: dict[str, str]) -> list[tuple[int, str]]:
    """(expiry, name) of the flow cookies a request carries, oldest first; the expiry is read from the
    value's clear (authenticated, not secret) part, so nothing is opened."""
    found = []
    for name, value in cookies.items():
        # Only names of cookie_name's form: a clearing cookie is sent back under the name, and Azure's
        # worker refuses (a bare 500) or drops names http.cookies cannot take ('a,0', a space, a quote).
        if _NAME.match(name):
            matched = _VALUE.match(value)
            found.append((int(matched.group(2)) if matched else 0, name))
    return sorted(found)


class FlowStore:
    """The single-use markers: one `SsoFlows` row per started login, PartitionKey the state and RowKey
    the kind. No secret of the flow is in it."""

    def __init__(self, table: TableClient, ttl_seconds: int = FLOW_TTL_SECONDS):
        self._table = table
        self.ttl = ttl_seconds

    def save(self, state: str, kind: str, correlation_id: str, now: datetime | None = None) -> datetime:
        """Writes the marker; returns its expiry."""
        expires_at = (now or datetime.now(UTC)) + timedelta(seconds=self.ttl)
        with storage_errors():
            self._table.create_entity({"PartitionKey": state, "RowKey": kind, "ExpiresAt": expires_at,
                                       "CorrelationId": correlation_id})
        return expires_at

    @staticmethod
    def check_state(state: str) -> None:
        if not STATE_SYNTAX.match(state):
            raise InvalidParameter("state has an impossible form")

    def take(self, state: str, kind: str) -> None:
        """Consumes the marker with one unconditional DELETE, whose status says who won: 204 for the
        first, 404 for every later one (a replay, a lost race, a purged or unknown state, or the other
        kind's door), which raises UnknownState (tables.delete_existed reads the status)."""
        self.check_state(state)
        if not delete_existed(self._table, state, kind):
            raise UnknownState("no such state (unknown, used, purged, or of the other kind)")

    def expired(self, state: str, kind: str, now: datetime) -> bool:
        """Whether this marker is there and past its expiry: one point read, for a callback that came
        back without its cookie only (the browser drops the cookie when the flow expires)."""
        self.check_state(state)
        with storage_errors():
            try:
                marker = self._table.get_entity(state, kind, select=["ExpiresAt"])
            except ResourceNotFoundError:
                return False
        expires_at = marker.get("ExpiresAt")
        return isinstance(expires_at, datetime) and expires_at <= now

    def purge_expired(self, now: datetime | None = None) -> int:
        """Deletes markers that expired more than FLOW_PURGE_GRACE ago (abandoned logins). Returns how
        many rows went. Kept that long after expiring (refused all the same), a marker still tells a
        person back late without the cookie (the browser dropped it) "expired", not "unknown"."""
        cutoff = (now or datetime.now(UTC)) - FLOW_PURGE_GRACE
        return delete_matching(self._table, "ExpiresAt lt @cutoff", {"cutoff": cutoff})
