"""A provisioned person's portal accounts: the `PortalAccounts` rows that directory sync creates,
adopts, moves, enables, disables and removes. Plain values in (a `Desired` state), no SCIM library.

Which rows are the person's: those whose `ScimId` is the person's SCIM id. A row without `ScimId`
(made by the CLI or an import) is adopted only when it has exactly the person's email and a kind the
person gets; a row of another person, or linked to another identity, is never taken (409).

The email move (RELIABILITY.md "Directory sync"): the two rows are in different partitions, so no
transaction covers both. The row at the new email is written first with `MovedFrom` = the old key,
and is invisible to login until the old row says `MovedTo` = the new key (one single-row write: the
commit point; shared/accounts.py `AccountStore.get` reads rows this way). Before the commit, only the
old email signs in; after it, only the new. Then `MovedFrom` is cleared and the old row deleted. A
failure anywhere leaves one live row, and the next write of the person (Entra retries) finishes the
move from wherever it stopped."""

from __future__ import annotations

from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from ..config import KINDS
from ..tables import storage_errors

ATTEMPTS = 4  # a row changed under us (a login recording its time) is re-read and tried again
LOGIN_FIELDS = ("LinkedIdpSubject", "LastLoginAt")  # what login writes on a row


class Conflict(Exception):
    """The write would give an email or an account of one person to another (409 uniqueness)."""


@dataclass(frozen=True)
class Desired:
    scim_id: str
    email_key: str | None  # None: no email, so no account
    email: str
    kinds: tuple[str, ...]
    active: bool
    link: str | None  # LinkedIdpSubject to set on the person's accounts (GUID externalId), or None
    display_name: str


def account_id(scim_id: str, kind: str) -> str:
    """A provisioned account's AccountId: `scim-{kind}-{SCIM id}`. Unique (SCIM ids are random UUIDs
    never reused), stable (kept across email moves, and the same when a removed role comes back)."""
    return f"scim-{kind}-{scim_id}"


class Guarded:
    """A TableClient whose calls raise DependencyUnavailable (503) for outages, and let the answers a
    caller expects (not found, exists, modified) through as themselves."""

    EXPECTED = (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError)

    def __init__(self, table: TableClient):
        self._table = table

    def __getattr__(self, name):
        method = getattr(self._table, name)

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except self.EXPECTED:
                raise
            except Exception:
                with storage_errors():
                    raise
        return call


class AccountSync:
    def __init__(self, accounts: TableClient, person_exists):
        self._table = Guarded(accounts)
        self._person_exists = person_exists  # scim id -> bool: is that SCIM User still there?

    # ---- reads ----
    def _read(self, key: str, kind: str):
        try:
            return self._table.get_entity(key, kind)
        except ResourceNotFoundError:
            return None

    def _ours(self, row, scim_id: str) -> bool:
        return row is not None and row.get("ScimId") == scim_id

    def _taken_by_other(self, row, desired: Desired) -> bool:
        """A row another person owns or another identity is linked to. A person without a link (no
        GUID externalId, or no single tenant to link in) cannot show a linked row is theirs: taken."""
        owner = row.get("ScimId") or ""
        if owner and owner != desired.scim_id and self._person_exists(owner):
            return True
        linked = row.get("LinkedIdpSubject") or ""
        return bool(linked and linked != desired.link)

    # ---- the one entry point ----
    def apply(self, desired: Desired, old_key: str | None, created: bool = False) -> None:
        """Makes the person's rows what `desired` says: for each kind it gets, one row at its email
        key (moved from `old_key` when the email changed); for each other kind, none. Raises Conflict
        before writing when a row it needs belongs to someone else."""
        wanted = set(desired.kinds) if desired.email_key else set()
        keys = [k for k in dict.fromkeys((old_key, desired.email_key)) if k]
        for kind in KINDS:
            if kind in wanted:
                self._ensure(desired, kind, old_key if old_key != desired.email_key else None)
        for kind in KINDS:
            if kind not in wanted and not created:  # a new person owns no row yet
                for key in keys:
                    self._remove_ours(key, kind, desired.scim_id)

    def remove_all(self, scim_id: str, keys: list[str]) -> None:
        for key in dict.fromkeys(k for k in keys if k):
            for kind in KINDS:
                self._remove_ours(key, kind, scim_id)

    # ---- steps ----
    def _fields(self, desired: Desired) -> dict:
        return {"Email": desired.email, "DisplayName": desired.display_name, "Enabled": desired.active,
                "ScimId": desired.scim_id}

    def _ensure(self, desired: Desired, kind: str, old_key: str | None) -> None:
        for _ in range(ATTEMPTS):
            try:
                return self._ensure_once(desired, kind, old_key)
            except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError):
                continue  # a row changed between our read and write: read again
        raise Conflict(f"{kind} account at the new email kept changing")

    def _ensure_once(self, desired: Desired, kind: str, old_key: str | None) -> None:
        new_key = desired.email_key
        target = self._read(new_key, kind)
        source = self._read(old_key, kind) if old_key else None
        if target is not None and not self._ours(target, desired.scim_id):
            if self._taken_by_other(target, desired) or self._ours(source, desired.scim_id):
                # Another person's account, or an account the person's own would be merged into.
                raise Conflict(f"the {kind} account of this email belongs to someone else")
            self._merge(target, {**self._fields(desired), **self._link_fields(target, desired), "MovedFrom": ""})
            return  # adopted: its AccountId (and login history) kept
        if target is not None:  # ours already: maybe the end of a move that stopped midway
            wanted = {**self._fields(desired), **self._link_fields(target, desired)}
            moving = self._ours(source, desired.scim_id)
            if moving and not source.get("MovedTo"):
                # Not committed: bring the copy up to date with the old row (a login may have
                # written it since the copy), then commit on the old row's current etag.
                wanted.update({k: source[k] for k in LOGIN_FIELDS if source.get(k) is not None})
                self._merge(target, {**wanted, "MovedFrom": target.get("MovedFrom") or ""})
                self._commit_move(source, new_key)
                target = self._read(new_key, kind)
            if target.get("MovedFrom") or any(target.get(k) != v for k, v in wanted.items()):
                self._merge(target, {**wanted, "MovedFrom": ""})
            if moving:
                self._delete_moved(old_key, kind, desired)
            return
        if source is not None and self._ours(source, desired.scim_id) and not source.get("MovedTo"):
            # Move: copy (invisible: MovedFrom), commit on the old row, then tidy up.
            copy = {k: v for k, v in source.items() if k not in ("PartitionKey", "RowKey", "MovedTo")}
            copy.update(self._fields(desired), **self._link_fields(source, desired),
                        PartitionKey=new_key, RowKey=kind, MovedFrom=old_key)
            self._table.create_entity(copy)
            self._commit_move(source, new_key)
            target = self._read(new_key, kind)
            self._merge(target, {"MovedFrom": ""})
            self._delete_moved(old_key, kind, desired)
            return
        row = {"PartitionKey": new_key, "RowKey": kind, "AccountId": account_id(desired.scim_id, kind),
               **self._fields(desired)}
        if desired.link:
            row["LinkedIdpSubject"] = desired.link
        self._table.create_entity(row)

    def _link_fields(self, row, desired: Desired) -> dict:
        """A GUID externalId links an unlinked account at once; a linked one keeps its link (a row
        linked to another identity never gets here: _taken_by_other)."""
        if desired.link and not row.get("LinkedIdpSubject"):
            return {"LinkedIdpSubject": desired.link}
        return {}

    def _commit_move(self, source, new_key: str) -> None:
        """The commit point: one etag-checked write on the old row. A login that changed the old row
        meanwhile (its LastLoginAt) fails this with ResourceModifiedError, and _ensure starts over,
        copying the fresh row."""
        self._table.update_entity({"PartitionKey": source["PartitionKey"], "RowKey": source["RowKey"],
                                   "MovedTo": new_key}, mode=UpdateMode.MERGE,
                                  etag=source.metadata["etag"], match_condition=MatchConditions.IfNotModified)

    def _delete_moved(self, old_key: str, kind: str, desired: Desired) -> None:
        """The old row of a committed move goes (etag-checked: only as it was when committed)."""
        source = self._read(old_key, kind)
        if self._ours(source, desired.scim_id) and source.get("MovedTo") == desired.email_key:
            self._table.delete_entity(old_key, kind, etag=source.metadata["etag"],
                                      match_condition=MatchConditions.IfNotModified)

    def _merge(self, row, fields: dict) -> None:
        self._table.update_entity({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], **fields},
                                  mode=UpdateMode.MERGE, etag=row.metadata["etag"],
                                  match_condition=MatchConditions.IfNotModified)

    def _remove_ours(self, key: str, kind: str, scim_id: str) -> None:
        for _ in range(ATTEMPTS):
            row = self._read(key, kind)
            if not self._ours(row, scim_id):
                return  # not there, or not the person's: accounts never provisioned are left alone
            try:
                self._table.delete_entity(key, kind, etag=row.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                return
            except ResourceModifiedError:
                continue
