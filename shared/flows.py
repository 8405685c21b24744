"""Started logins in the `SsoFlows` table, one row per `state`, each usable once.

The browser that started a login is bound to it by a random cookie; the row keeps only the cookie's
SHA-256, so a table reader cannot forge the binding."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient

from .config import FLOW_TTL_SECONDS
from .errors import BindingMismatch, FlowExpired, InvalidParameter, UnknownState
from .tables import delete_matching, storage_errors

# MSAL makes states of ~16 url-safe characters; anything else cannot be ours, and must never become a
# table key (Table keys forbid / \ # ? and control characters).
STATE_SYNTAX = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
FLOW_ROW = "flow"


def new_binding() -> str:
    return secrets.token_urlsafe(32)


def binding_hash(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode()).hexdigest()


@dataclass
class StoredFlow:
    state: str
    kind: str
    flow: dict  # MSAL's auth code flow (holds the PKCE verifier and nonce: server-side only)
    return_to: str | None
    expires_at: datetime
    correlation_id: str
    etag: str | None = None  # the row's, as read: the single-use delete is checked against it

    def check_unexpired(self, now: datetime) -> None:
        if self.expires_at <= now:
            raise FlowExpired(f"flow expired at {self.expires_at.isoformat()}")


class FlowStore:
    def __init__(self, table: TableClient, ttl_seconds: int = FLOW_TTL_SECONDS):
        self._table = table
        self.ttl = ttl_seconds

    def save(self, flow: dict, kind: str, binding: str, return_to: str | None, correlation_id: str,
             now: datetime | None = None) -> StoredFlow:
        now = now or datetime.now(UTC)
        stored = StoredFlow(state=flow["state"], kind=kind, flow=flow, return_to=return_to,
                            expires_at=now + timedelta(seconds=self.ttl), correlation_id=correlation_id)
        entity = {"PartitionKey": stored.state, "RowKey": FLOW_ROW, "Kind": kind, "Flow": json.dumps(flow),
                  "BindingHash": binding_hash(binding), "ReturnTo": return_to or "",
                  "ExpiresAt": stored.expires_at, "CorrelationId": correlation_id}
        with storage_errors():
            self._table.create_entity(entity)
        return stored

    def find(self, state: str, kind: str, binding: str | None) -> StoredFlow:
        """The flow of this state, started by this browser (its cookie's hash matches). Raises
        InvalidParameter (a state we could never have made), UnknownState (unknown, used, purged, or
        of the other kind), BindingMismatch (cookie missing or of another flow; the flow is left in
        place so a stranger's request cannot cancel a real login)."""
        if not STATE_SYNTAX.match(state):
            raise InvalidParameter("state has an impossible form")
        with storage_errors():
            try:
                entity = self._table.get_entity(state, FLOW_ROW)
            except ResourceNotFoundError as exc:
                raise UnknownState("no such state (unknown, used or purged)") from exc
        if entity.get("Kind") != kind:
            raise UnknownState(f"state belongs to a {entity.get('Kind')} login, not {kind}")
        if not binding or not hmac.compare_digest(binding_hash(binding), str(entity.get("BindingHash", ""))):
            raise BindingMismatch("browser-binding cookie missing" if not binding else "cookie of another flow")
        return StoredFlow(state=state, kind=kind, flow=json.loads(entity["Flow"]),
                          return_to=entity.get("ReturnTo") or None, expires_at=entity["ExpiresAt"],
                          correlation_id=str(entity.get("CorrelationId", "")), etag=entity.metadata["etag"])

    def take(self, stored: StoredFlow) -> None:
        """Deletes the flow found by `find`, if it is still as found: of callbacks racing for one
        state exactly one takes it; the others get UnknownState. A plain etag-checked DELETE: its
        412 (changed) and its 404 (gone) both mean another callback took it. The SDK reports a 404
        delete as success, so the status is read from the response itself."""
        statuses: list[int] = []
        with storage_errors():
            try:
                self._table.delete_entity(stored.state, FLOW_ROW, etag=stored.etag,
                                          match_condition=MatchConditions.IfNotModified,
                                          raw_response_hook=lambda r: statuses.append(r.http_response.status_code))
            except ResourceModifiedError as exc:
                raise UnknownState("state already consumed by another callback") from exc
        if not statuses or statuses[-1] == 404:
            raise UnknownState("state already consumed by another callback")

    def purge_expired(self, now: datetime | None = None) -> int:
        """Deletes flows that expired (abandoned logins). Returns how many rows went."""
        return delete_matching(self._table, "ExpiresAt lt @now", {"now": now or datetime.now(UTC)})
