"""Portal accounts in the `PortalAccounts` table: PartitionKey = normalized email, RowKey = kind."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from .config import KINDS
from .errors import AccountDisabled, IdentityMismatch, NoAccount
from .tables import storage_errors

# Characters Table Storage forbids in keys (and '%', our escape character).
_KEY_UNSAFE = re.compile(r"[%/\\#?\x00-\x1f\x7f-\x9f]")
# How fresh LastLoginAt is kept: a login within this time of the last recorded one writes nothing.
LAST_LOGIN_PRECISION = timedelta(hours=1)
EMAIL_SYNTAX = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(raw: str) -> str:
    """Trimmed and case-folded, so 'Ann@Contoso.COM ' and 'ann@contoso.com' are one account."""
    return raw.strip().casefold()


def email_key(normalized_email: str) -> str:
    """The PartitionKey of an email: forbidden characters and '%' itself percent-encoded, so every
    email maps to a valid, distinct key (a '/' would make Table Storage answer 500)."""
    return _KEY_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), normalized_email)


@dataclass
class Account:
    email: str
    kind: str
    account_id: str
    display_name: str
    enabled: bool
    linked_idp_subject: str | None
    last_login_at: datetime | None
    etag: str | None = None
    provisioned: bool = False  # made or adopted by directory sync (shared/scim/sync.py sets ScimId)

    @classmethod
    def from_entity(cls, entity) -> Account:
        return cls(
            email=entity.get("Email") or entity["PartitionKey"],
            kind=entity["RowKey"],
            account_id=str(entity.get("AccountId") or ""),
            display_name=str(entity.get("DisplayName") or ""),
            enabled=entity.get("Enabled") is not False,
            linked_idp_subject=entity.get("LinkedIdpSubject") or None,
            last_login_at=entity.get("LastLoginAt"),
            etag=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
            provisioned=bool(entity.get("ScimId")),
        )


class AccountStore:
    def __init__(self, table: TableClient):
        self._table = table

    def get(self, email: str, kind: str) -> Account | None:
        with storage_errors():
            try:
                entity = self._table.get_entity(email_key(normalize_email(email)), kind)
            except ResourceNotFoundError:
                return None
        if entity.get("MovedTo") or entity.get("MovedFrom"):
            return self._after_move(entity)
        return Account.from_entity(entity)

    def find_account(self, email: str, kind: str) -> Account:
        """The enabled account of this kind for this email; raises NoAccount or AccountDisabled (403)."""
        account = self.get(email, kind)
        if account is None or not account.account_id:
            raise NoAccount(f"no {kind} account for this email")
        if not account.enabled:
            disabled = AccountDisabled(f"{kind} account {account.account_id} is disabled")
            disabled.account_id = account.account_id  # for the audit row
            raise disabled
        return account

    def link_and_record_login(self, account: Account, idp_sub: str, now: datetime | None = None) -> Account:
        """Links an unlinked account to this person (first login) and records the login time, writing
        only when something changed: the link once, LastLoginAt at most once per LAST_LOGIN_PRECISION
        (every login is in SignInEvents anyway). Raises IdentityMismatch (403) when the account is
        linked to someone else; the write is etag-checked, so of two people racing for one unlinked
        account only the first gets it, and a login racing an admin's change re-reads and decides again."""
        now = now or datetime.now(UTC)
        for _ in range(3):
            if account.linked_idp_subject and account.linked_idp_subject != idp_sub:
                raise IdentityMismatch(f"account {account.account_id} is linked to another idp_sub")
            # A login time after our `now` (a racing login of the same person wrote it) is recent too.
            if account.linked_idp_subject == idp_sub and account.last_login_at is not None \
                    and now - account.last_login_at < LAST_LOGIN_PRECISION:
                return account  # linked to this person, login time recent enough: nothing to write
            patch = {"PartitionKey": email_key(normalize_email(account.email)), "RowKey": account.kind,
                     "LinkedIdpSubject": idp_sub, "LastLoginAt": now}
            with storage_errors():
                try:
                    self._table.update_entity(patch, mode=UpdateMode.MERGE, etag=account.etag,
                                              match_condition=MatchConditions.IfNotModified)
                    account.linked_idp_subject, account.last_login_at = idp_sub, now
                    return account
                except (ResourceModifiedError, ResourceNotFoundError):
                    fresh = self.get(account.email, account.kind)
            if fresh is None:
                raise NoAccount("account removed during login")
            if not fresh.enabled:
                raise AccountDisabled("account disabled during login")
            account = fresh
        raise IdentityMismatch("account kept changing during login")

    # Administration (tools/accounts.py)
    def add(self, email: str, kind: str, account_id: str, name: str = "", enabled: bool = True) -> None:
        row = AccountRow(normalize_email(email), kind, account_id, name, enabled)
        with storage_errors():
            self._table.upsert_entity(row.entity(), mode=UpdateMode.MERGE)

    def update(self, email: str, kind: str, **properties) -> bool:
        """Merges properties into an account; False when there is no such account."""
        entity = {"PartitionKey": email_key(normalize_email(email)), "RowKey": kind, **properties}
        with storage_errors():
            try:
                self._table.update_entity(entity, mode=UpdateMode.MERGE)
            except ResourceNotFoundError:
                return False
        return True

    def unlink(self, email: str, kind: str) -> bool:
        with storage_errors():
            try:
                entity = self._table.get_entity(email_key(normalize_email(email)), kind)
            except ResourceNotFoundError:
                return False
            entity.pop("LinkedIdpSubject", None)
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return True

    def remove(self, email: str, kind: str) -> bool:
        if self.get(email, kind) is None:
            return False
        with storage_errors():
            self._table.delete_entity(email_key(normalize_email(email)), kind)
        return True

    def import_rows(self, rows, progress=None, workers: int = 16) -> int:
        """See `import_rows` below."""
        return import_rows(self._table, rows, progress, workers)

    def list(self, kind: str | None = None):
        with storage_errors():
            query = self._table.query_entities("RowKey eq @kind", parameters={"kind": kind}) if kind \
                else self._table.list_entities()
            for entity in query:
                if not entity.get("MovedTo"):  # the old row of a committed move counts as gone
                    yield Account.from_entity(entity)

    # ---- Directory sync (shared/scim/sync.py moves a provisioned account to a new email) ----
    def _after_move(self, entity) -> Account | None:
        """A row that directory sync is moving: the old row counts as gone once it says `MovedTo`;
        the new row (`MovedFrom` = the old key) counts only once the old row says `MovedTo` = its key.
        So at every moment exactly one of the two is found (the old row's single write is the commit),
        and a move that stopped midway is finished by the next sync."""
        if entity.get("MovedTo"):
            return None
        with storage_errors():
            try:
                old = self._table.get_entity(entity["MovedFrom"], entity["RowKey"])
            except ResourceNotFoundError:
                return None
        return Account.from_entity(entity) if old.get("MovedTo") == entity["PartitionKey"] else None


# Bulk import (tools/accounts.py import). Rows are checked by the caller first (check_account); this
# only writes.
ENABLED_WORDS = {"": True, "true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
BATCH_LIMIT = 100  # Table Storage's maximum operations per transaction (all in one partition)


@dataclass(frozen=True)
class AccountRow:
    email: str  # normalized
    kind: str
    account_id: str
    name: str = ""
    enabled: bool = True

    def entity(self) -> dict:
        return {"PartitionKey": email_key(self.email), "RowKey": self.kind, "Email": self.email,
                "AccountId": self.account_id, "DisplayName": self.name, "Enabled": self.enabled}


def parse_enabled(raw: str | None) -> bool | None:
    """true/false/1/0/yes/no (any case) or empty (= true); None for anything else."""
    return ENABLED_WORDS.get((raw or "").strip().lower())


def check_account(email: str, kind: str, account_id: str) -> list[str]:
    """What is wrong with these values (empty when nothing): the rules `add` and `import` share."""
    problems = []
    if not EMAIL_SYNTAX.match(normalize_email(email or "")):
        problems.append(f"email {email!r} is not an email address")
    if kind not in KINDS:
        problems.append(f"kind {kind!r} must be user or agent")
    if not (account_id or "").strip():
        problems.append("account_id is empty")
    return problems


def _import_partition(table: TableClient, rows: list[AccountRow]) -> int:
    """Upserts (merge: an existing link and last login are kept) one partition's rows: one request for
    a single row, else transactions of up to BATCH_LIMIT rows."""
    with storage_errors():
        if len(rows) == 1:
            table.upsert_entity(rows[0].entity(), mode=UpdateMode.MERGE)
        else:
            for start in range(0, len(rows), BATCH_LIMIT):
                table.submit_transaction([("upsert", row.entity(), {"mode": UpdateMode.MERGE})
                                          for row in rows[start:start + BATCH_LIMIT]])
    return len(rows)


def import_rows(table: TableClient, rows: list[AccountRow], progress: Callable[[int], None] | None = None,
                workers: int = 16) -> int:
    """Writes every row; returns how many were written. Each email is its own partition, so a
    transaction can only group one email's user and agent rows: the speed comes from `workers`
    requests in flight at once. `progress(n)` is called (on this thread) as each n rows land.
    Raises DependencyUnavailable on the first storage failure, after the requests in flight end;
    rows written until then stay (an import is idempotent, so running it again finishes it)."""
    partitions: dict[str, list[AccountRow]] = {}
    for row in rows:
        partitions.setdefault(email_key(row.email), []).append(row)
    written = 0
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="import") as pool:
        pending = [pool.submit(_import_partition, table, group) for group in partitions.values()]
        try:
            for done in as_completed(pending):
                count = done.result()
                written += count
                if progress:
                    progress(count)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return written
