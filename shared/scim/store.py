"""SCIM Users in Table Storage (the `ScimUsers` table), as scim2-server's storage.

Rows (one table, a partition per purpose):
- `P` / {id}: the person, the source of truth: the SCIM resource as JSON, its Version (meta.version
  is W/"{Version}"), and what its accounts were made from (EmailKey, Kinds, Link).
- `U` / {userName key}, `X` / {externalId key}, `E` / {email key}: pointers to the person's id, so
  the filters Entra sends (`userName eq`, `externalId eq`, `emails[type eq "work"].value eq`) are
  point reads, and a userName, externalId or account email is held by one person. A pointer counts
  while the person it names holds that value, or while it is recent (CLAIM_GRACE: that person's
  write may be under way, so a concurrent claim is 409 and Entra retries); one left behind by a write
  that stopped is taken over once older. A create or change refused midway (409, 400) lets go of
  the pointers it claimed, so the values are free again at once (TableScimStorage._claims). A search
  checks every candidate against the filter itself.
- `R` / {email key}: Entra deleted the person who held that email (when, and the SCIM id), written
  by a DELETE before it removes anything; read by the accounts CLI alone (shared/accounts.py
  entra_refusal: what Entra took away is not made again by hand).

A write claims the pointers of its new values, then makes the accounts (sync.py), then writes the
person row, etag-checked: a write that fails midway leaves the person row as it was, Entra retries
(or sends the change again at its next cycle), and the retry finishes it. The person row last also
means a concurrent write to the same person fails with 412 here, which service.py retries from a
fresh read: two PATCHes at once lose nothing. A write that loses so (or whose person is deleted
meanwhile) has written accounts from a view of the person no longer true: its retry is handed their
keys (TableScimStorage.carry) and settles them by the person as it is, or removes them once the
person is gone; and a row it planned on that vanished is never made again (sync.py Vanished)."""

from __future__ import annotations

import contextlib
import functools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode
from scim2_models import (
    InvalidValueException,
    Meta,
    NotFoundException,
    PreconditionFailedException,
    ResourceType,
    SCIMException,
    SearchRequest,
    UniquenessException,
)
from scim2_models.path.expressions import CompareOperator, Comparison, LogicalExpr, LogicalOperator, ValuePath
from scim2_server.storage import ScimStorage, SearchPage

from ..accounts import (
    ACCOUNT_IDS,
    REMOVED_ACCOUNT_IDS,
    directory_sync_account_id,
    directory_sync_minted,
    removed_account_ids,
    utf16_units,
)
from ..config import KINDS
from ..tables import (
    SCIM_EMAIL_PARTITION,
    SCIM_PERSON_PARTITION,
    SCIM_REMOVED_PARTITION,
    storage_errors,
    table_row,
)
from . import mapping
from .resources import User, plain_roles_in
from .sync import NO_OBJECT_ID, UNREADABLE, AccountSync, Conflict, Desired, Guarded, Vanished, removed_by_admin

PERSON, BY_USER_NAME, BY_EXTERNAL_ID, BY_EMAIL = SCIM_PERSON_PARTITION, "U", "X", SCIM_EMAIL_PARTITION
# Ours are uuid4s (36 characters): a longer id is no one's and is not sent (a key over Table Storage's
# limit is a 400 on Azure, which would read as an outage, where Azurite answers 404).
MAX_SCIM_ID = 64
MAX_STORED = 30_000  # UTF-16 units of a person's JSON (a Table string property holds 32,768)
# A pointer whose person does not (yet) hold its value is a write in progress while it is younger
# than this (the person row is written last), and left behind by a write that stopped once older.
CLAIM_GRACE = timedelta(minutes=5)
LEAVE_PENDING_ATTEMPTS = 5


class Raced(PreconditionFailedException):
    """Another write to this person landed between our read and our write: engine.py starts over,
    handing `keys` (the email keys this attempt wrote accounts at, from its stale view of person
    `scim_id`) to the next attempt's storage (TableScimStorage.carry), which reads them too; `active`:
    whether it wrote their `Enabled`. A request that answers without settling them records them on the
    person row (TableScimStorage.leave_pending)."""

    def __init__(self, *, detail: str, keys=(), scim_id: str = "", active: bool = False):
        super().__init__(detail=detail)
        self.keys, self.scim_id, self.active = list(keys), scim_id, active and bool(keys)


def version_tag(version: int) -> str:
    return f'W/"{version}"'


def stored_account_ids(ids: dict[str, dict[str, str]]) -> str:
    """The AccountIds record as the person row stores it (account_ids_of reads it)."""
    return json.dumps(ids, sort_keys=True, separators=(",", ":"))


def account_ids_of(scim_id: str, row) -> dict[str, dict[str, str]]:
    """Which AccountId each identity holds, kind by kind, as the person row records it (AccountIds,
    sync.py Desired.account_ids), keeping only the person's own ids (the record is directory sync's:
    another id in it was written by hand). A row written before the record but with MintedFor names
    the one owner of every kind's plain id; one without either, or a record that is there but
    unreadable, no one who may have one (UNREADABLE holds every kind's plain id): the identities the
    person's rows are bound or linked to hold theirs (sync.py apply reads them), new rows are their
    identity's own. Not the externalId the person row holds: a version before 853f059 changed it
    alone (a 204), so it may name another identity than the accounts'."""
    def plain(kind: str) -> str:
        return directory_sync_account_id(scim_id, kind)
    stored = row.get(ACCOUNT_IDS)
    if stored is None or stored == "":
        owner = row.get("MintedFor") or UNREADABLE
        return {kind: {owner: plain(kind)} for kind in KINDS}
    try:
        recorded = json.loads(stored) if isinstance(stored, str) else None
    except (ValueError, RecursionError):
        recorded = None
    if not isinstance(recorded, dict) or not all(
            isinstance(held, dict) and all(isinstance(value, str) for value in held.values())
            for held in recorded.values()):
        return {kind: {UNREADABLE: plain(kind)} for kind in KINDS}  # one part wrong: none of it is trusted
    ids = {kind: {who: value for who, value in recorded.get(kind, {}).items()
                  if directory_sync_minted(value, scim_id, kind)} for kind in KINDS}
    # An id an admin removed the row of is "no object id"'s no more (accounts.py _note_removed): still
    # held (by no one), so it is never minted again either.
    removed = removed_account_ids(row.get(REMOVED_ACCOUNT_IDS))
    for kind, held in ids.items():
        if held.get(NO_OBJECT_ID) in removed.get(kind, ()):
            removed_id = held.pop(NO_OBJECT_ID)
            held[removed_by_admin(removed_id)] = removed_id  # one entry per id: each stays held
    return ids


class Person:
    """A person row, read: the resource and what the accounts were made from."""

    def __init__(self, row):
        self.row = row
        self.id: str = row["RowKey"]
        self.version: int = int(row.get("Version") or 1)
        self.etag: str = row.metadata["etag"]

    @classmethod
    def written(cls, row: dict, answer: dict) -> Person:
        """The person as just written (the write's answer carries the new etag): no read back."""
        from azure.data.tables import TableEntity

        entity = TableEntity(row)
        entity._metadata = {"etag": answer["etag"]}
        return cls(entity)

    @functools.cached_property
    def stored(self) -> dict:
        """The stored resource, parsed once for resource() and display_name()."""
        return json.loads(self.row["Resource"])

    def resource(self) -> User:
        # plain_roles_in: a row written before roles were read in one form may hold JSON strings
        # (it changes its argument: a copy, so `stored` stays as stored).
        user = User.model_validate(plain_roles_in(dict(self.stored)))
        user.id = self.id
        user.meta = Meta(resource_type="User", created=self.row["Created"], last_modified=self.row["LastModified"],
                         version=version_tag(self.version))
        return user

    def display_name(self) -> str:
        """The accounts' name as the stored resource gives it (mapping.display_name), not checked again."""
        return mapping.given_name(self.stored.get("displayName"), (self.stored.get("name") or {}).get("formatted"))[0]

    def keys(self) -> dict[str, str]:
        return {BY_USER_NAME: self.row.get("UserNameKey") or "", BY_EXTERNAL_ID: self.row.get("ExternalIdKey") or "",
                BY_EMAIL: self.row.get("EmailKey") or ""}

    def account_keys(self) -> list[str]:
        """Every email key the person's accounts may be at: the account email, and the keys of moves
        that stopped before this row recorded their end (PendingEmailKeys: email keys hold no spaces)."""
        keys = [self.row.get("EmailKey") or "", *(self.row.get("PendingEmailKeys") or "").split()]
        return [k for k in dict.fromkeys(keys) if k]


class Facts:
    """What a SCIM User gives the portal (mapping.py), checked: MappingError -> invalidValue. `kept`:
    the display name the person has as stored (mapping.display_name), for an update; `kept_active`:
    whether they are active as stored, what a User leaving `active` unset keeps (a Remove of active, a
    PUT without it: unset read as enabled re-enabled a leaver; SPEC: false disables, true enables)."""

    def __init__(self, user: User, default_kind: str | None, tenant: str | None, kept: str | None = None,
                 kept_active: bool = True):
        try:
            mapping.check_text(user.user_name, "userName", mapping.MAX_USER_NAME)
            mapping.check_text(user.external_id, "externalId", mapping.MAX_EXTERNAL_ID)
            self.display_name = mapping.display_name(user.display_name, user.name.formatted if user.name else None,
                                                     kept)
            if not user.user_name or not user.user_name.strip():
                raise mapping.MappingError("userName: required")
            emails = [e.model_dump() for e in user.emails or []]
            self.email = mapping.chosen_email(emails) or ""
            self.email_key = mapping.email_key(self.email, "emails") if self.email else ""
            self.user_name_key = mapping.user_name_key(user.user_name)
            self.external_id_key = mapping.external_id_key(user.external_id) if user.external_id else ""
        except mapping.MappingError as exc:
            raise InvalidValueException(detail=str(exc)) from exc
        roles = [r.model_dump() for r in user.roles or []]
        self.kinds = mapping.kinds_of(roles, default_kind)
        self.has_portal_role = mapping.has_portal_role(roles)
        self.active = kept_active if user.active is None else user.active is not False
        self.active_given = user.active is not None
        self.link = mapping.link_of(user.external_id, tenant)
        self.object_id = mapping.object_id_of(user.external_id)

    def keys(self) -> dict[str, str]:
        return {BY_USER_NAME: self.user_name_key, BY_EXTERNAL_ID: self.external_id_key, BY_EMAIL: self.email_key}


class TableScimStorage(ScimStorage):
    """One per request (it remembers the etags it read)."""

    def __init__(self, users: TableClient, accounts: TableClient, default_kind: str | None, tenant: str | None):
        self._users = Guarded(users)
        self._raw_users = users
        self._sync = AccountSync(accounts, self._exists, self._removed_ids)
        self._default_kind, self._tenant = default_kind, tenant
        self._read: dict[str, Person] = {}
        self._carried: list[str] = []
        self._carried_active = False

    def carry(self, keys, active: bool = False) -> None:
        """Email keys an earlier attempt of this request wrote the person's accounts at before it lost
        the race (Raced): it wrote them from a view of the person no longer true (at the old email of
        a move that landed meanwhile, say), and the person row may name none of them. This attempt
        reads them beside the keys the person row names, so every row of the person's there is moved,
        kept or removed by what the person is now; and when the person is gone, removes them. This
        attempt writes the person even when its change is no longer news (settle), since only a write
        settles them; and with `active` (an earlier attempt wrote their `Enabled` from its stale view)
        writes their `Enabled` by what the person is now."""
        self._carried = [k for k in dict.fromkeys([*self._carried, *keys]) if k]
        self._carried_active = self._carried_active or active

    # ---- reads ----
    def _person(self, scim_id: str) -> Person | None:
        if not scim_id or not isinstance(scim_id, str) or len(scim_id) > MAX_SCIM_ID or not scim_id.isascii() or \
                mapping.table_key(scim_id) != scim_id:  # ours are uuid4s: another is no one's (a surrogate, say)
            return None
        try:
            person = Person(table_row(self._users.get_entity(PERSON, scim_id)))
        except ResourceNotFoundError:
            return None
        self._read[scim_id] = person
        return person

    def user_name(self, scim_id: str) -> str:
        """The userName of person `scim_id` as this request last read or wrote it, "" when it read no
        such person: the audit row's, where no body names one (a PATCH answers 204 with a PatchOp
        sent, a DELETE has no body), with no read of its own."""
        person = self._read.get(scim_id)
        return str(person.row.get("UserName") or "") if person is not None else ""

    def _exists(self, scim_id: str) -> bool:
        return self._person(scim_id) is not None

    def _removed_ids(self, scim_id: str, kind: str) -> list[str]:
        """The ids of `kind` an admin's `accounts remove` has noted on the person row, as it is now."""
        try:
            row = self._users.get_entity(PERSON, scim_id, select=[REMOVED_ACCOUNT_IDS])
        except ResourceNotFoundError:
            return []
        return removed_account_ids(row.get(REMOVED_ACCOUNT_IDS)).get(kind, [])

    def get(self, resource_type: ResourceType, resource_id: str, *, response_parameters=None) -> User:
        person = self._person(resource_id)
        if person is None:
            raise self._gone(resource_id)
        return person.resource()

    def _gone(self, scim_id: str, written=()) -> NotFoundException:
        """The 404 for a person who is not there, once the rows this request wrote for them (`written`,
        and those an earlier attempt carried) are removed: a deleted person keeps no account, and the
        DELETE that removed theirs never knew of these."""
        keys = [*self._carried, *written]
        if keys:
            self._sync.remove_all(scim_id, keys)
        return NotFoundException(detail=f"no User {scim_id}")

    def _pointed(self, partition: str, key: str) -> Person | None:
        """The person a pointer names, if that person still holds the value."""
        if not key:
            return None
        try:
            pointer = table_row(self._users.get_entity(partition, key))
        except ResourceNotFoundError:
            return None
        person = self._person(pointer.get("Id") or "")
        return person if person is not None and person.keys()[partition] == key else None

    def search(self, resource_types: list[ResourceType], search_request: SearchRequest[Any], *,
               position: Any = None) -> SearchPage:
        flt = search_request.filter
        candidates = self._candidates(flt.ast) if flt is not None else None
        if candidates is None:  # no filter, or none of the indexed ones: the whole partition
            with storage_errors():
                rows = list(self._raw_users.query_entities("PartitionKey eq @p", parameters={"p": PERSON}))
            candidates = [Person(row) for row in rows]
        found = [u for u in (p.resource() for p in candidates) if flt is None or flt.match(u)]
        start = max(1, search_request.start_index or 1)
        count = search_request.count if search_request.count is not None else len(found)
        return SearchPage(total=len(found), resources=found[start - 1:start - 1 + max(0, count)])

    def _candidates(self, node) -> list[Person] | None:
        """The people an indexed term of the filter names (a point read); None when the filter has no
        such term (then every person is a candidate). The filter itself decides among them."""
        terms = node.terms if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_ else (node,)
        for term in terms:
            found = self._indexed(term)
            if found is not None:
                return found
        return None

    def _indexed(self, term) -> list[Person] | None:
        if isinstance(term, ValuePath) and term.attr_path.attr.lower() == "emails":
            # Only a work email is (nearly always) the account's email, which the E pointer holds;
            # any person may list an address as another type, so other email filters scan.
            inner = term.val_filter.terms if isinstance(term.val_filter, LogicalExpr) and \
                term.val_filter.op == LogicalOperator.and_ else (term.val_filter,)
            compared = {part.attr_path.attr.lower(): part.value for part in inner if isinstance(part, Comparison)
                        and part.op == CompareOperator.eq and isinstance(part.value, str)}
            if compared.get("type", "").lower() == "work" and "value" in compared:
                return self._by_email(compared["value"])
            return None
        if not isinstance(term, Comparison) or term.op != CompareOperator.eq or not isinstance(term.value, str):
            return None
        attr, sub = term.attr_path.attr.lower(), (term.attr_path.sub_attr or "").lower()
        if attr == "username" and not sub:
            return self._by_pointer(BY_USER_NAME, mapping.user_name_key, term.value)
        elif attr == "externalid" and not sub:
            return self._by_pointer(BY_EXTERNAL_ID, mapping.external_id_key, term.value)
        elif attr == "id" and not sub:
            person = self._person(term.value)
        else:
            return None
        return [person] if person else []

    def _by_email(self, value: str) -> list[Person]:
        """The person whose account email this is (the `E` pointer: one point read). A miss is no one,
        not a scan: Entra sends this filter before creating each person when email is the matching
        attribute, and a scan per person would make a first cycle quadratic. A person's second work
        email is not found by it (their account email is)."""
        return self._by_pointer(BY_EMAIL, mapping.email_key, value)

    def _by_pointer(self, partition: str, key_of, value: str) -> list[Person]:
        try:
            key = key_of(value)
        except mapping.MappingError:
            return []  # a value the portal cannot hold (no key Table Storage keeps) is no one's
        person = self._pointed(partition, key)
        return [person] if person else []

    # ---- writes ----
    def _claim(self, partition: str, key: str, scim_id: str) -> bool:
        """Points `key` at the person: True when this call wrote the pointer (made it, or took over one
        left behind), False when it named them already; UniquenessException when another person holds it."""
        if not key:
            return False
        for _ in range(3):
            try:
                self._users.create_entity({"PartitionKey": partition, "RowKey": key, "Id": scim_id})
                return True
            except ResourceExistsError:
                pass
            try:
                pointer = table_row(self._users.get_entity(partition, key))
            except ResourceNotFoundError:
                continue
            holder = pointer.get("Id") or ""
            if holder == scim_id:
                return False
            other = self._person(holder)
            what = {BY_USER_NAME: "userName", BY_EXTERNAL_ID: "externalId", BY_EMAIL: "email"}[partition]
            if other is not None and other.keys()[partition] == key:
                raise UniquenessException(detail=f"this {what} belongs to another User")
            if datetime.now(UTC) - pointer.metadata["timestamp"] < CLAIM_GRACE:
                # The holder's row comes last: it may be creating (or changing to) this value now.
                raise UniquenessException(detail=f"this {what} is being given to another User; try again")
            try:  # left behind by a write that stopped midway: take it over
                self._users.update_entity({"PartitionKey": partition, "RowKey": key, "Id": scim_id},
                                          mode=UpdateMode.REPLACE, etag=pointer.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                return True
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        raise UniquenessException(detail="a unique value kept changing hands; try again")

    @contextlib.contextmanager
    def _claims(self, scim_id: str, *, existing: bool = False):
        """Yields claim(partition, key), _claim's. A write refused inside (a SCIMException: 409, 400,
        404) lets go of the pointers claim wrote: left, they would turn away the corrected retry, or
        another person given the value meanwhile, for CLAIM_GRACE ("being given to another User")
        while no filter finds anyone holding it. It keeps those that named the person already (a
        concurrent write of theirs may be giving them the value) and, for a person who exists
        (`existing`), all of them once another write of theirs landed (Raced: that write may have
        given them the value; the retry reads it so, and claims nothing). After an outage they stay:
        the person row may have been written."""
        claimed = []

        def claim(partition: str, key: str) -> None:
            if self._claim(partition, key, scim_id):
                claimed.append((partition, key))
        try:
            yield claim
        except SCIMException as exc:
            if not (existing and isinstance(exc, Raced)):
                for partition, key in claimed:
                    self._release(partition, key, scim_id)
            raise

    def _release(self, partition: str, key: str, scim_id: str) -> None:
        if not key:
            return
        try:
            pointer = table_row(self._users.get_entity(partition, key))
        except ResourceNotFoundError:
            return
        if pointer.get("Id") == scim_id:
            try:
                self._users.delete_entity(partition, key, etag=pointer.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                pass

    def _desired(self, scim_id: str, facts: Facts, active_changed: bool, person: Person | None) -> Desired:
        row = person.row if person is not None else {}
        return Desired(scim_id=scim_id, email_key=facts.email_key or None,
                       email=mapping.stored_email(facts.email), kinds=facts.kinds,
                       active=facts.active, link=facts.link, display_name=facts.display_name,
                       active_changed=active_changed, active_given=facts.active_given, object_id=facts.object_id,
                       account_ids=account_ids_of(scim_id, row) if person is not None else {},
                       held=tuple((row.get("DisabledKinds") or "").split()))

    def _row(self, scim_id: str, user: User, facts: Facts, version: int, created: datetime) -> dict:
        body = user.model_dump(mode="json", exclude={"id", "meta"})
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        if utf16_units(text) > MAX_STORED:  # as Table Storage counts: an emoji is two
            raise InvalidValueException(detail=f"the User is larger than the {MAX_STORED} UTF-16 units kept")
        return {"PartitionKey": PERSON, "RowKey": scim_id, "Resource": text, "UserName": user.user_name,
                "UserNameKey": facts.user_name_key, "ExternalId": user.external_id or "",
                "ExternalIdKey": facts.external_id_key, "Email": facts.email, "EmailKey": facts.email_key,
                "Kinds": " ".join(facts.kinds), "Active": facts.active, "Link": facts.link or "",
                "HasPortalRole": facts.has_portal_role, "Version": version, "Created": created,
                "LastModified": datetime.now(UTC)}

    def _apply_accounts(self, scim_id: str, facts: Facts, old_keys: list[str], row: dict, created: bool = False,
                        active_changed: bool = True, before_writing=None, person: Person | None = None) -> None:
        """Makes the accounts, and puts on the person row (`row`, written after) what they leave it
        to remember: AccountIds (sync.py Desired.account_ids) and DisabledKinds (Desired.held)."""
        try:
            self._sync.apply(self._desired(scim_id, facts, active_changed, person), old_keys, created=created,
                             before_writing=before_writing)
        except Conflict as exc:
            raise UniquenessException(detail=str(exc)) from exc
        except Vanished as exc:
            raise Raced(detail=str(exc), keys=self._sync.written, scim_id=scim_id, active=active_changed) from exc
        row.update(AccountIds=stored_account_ids(self._sync.account_ids), DisabledKinds=" ".join(self._sync.held))

    def create(self, resource_type: ResourceType, resource: User) -> User:
        facts = Facts(resource, self._default_kind, self._tenant)
        scim_id = str(uuid.uuid4())  # random: never reused
        row = self._row(scim_id, resource, facts, 1, datetime.now(UTC))  # refused (too large) before any write
        with self._claims(scim_id) as claim:  # a refused create lets go of them
            for partition, key in facts.keys().items():
                claim(partition, key)
            self._apply_accounts(scim_id, facts, [], row, created=True)
            return Person.written(row, self._users.create_entity(row)).resource()

    def update(self, resource_type: ResourceType, resource: User, *, expected_version: str | None = None) -> User:
        scim_id = resource.id or ""
        person = self._read.get(scim_id) or self._person(scim_id)
        if person is None:
            raise self._gone(scim_id)
        if expected_version is not None and expected_version != version_tag(person.version):
            raise PreconditionFailedException(detail="the User changed since it was read")
        facts = Facts(resource, self._default_kind, self._tenant, person.display_name(),
                      kept_active=person.row.get("Active") is not False)
        row = self._row(scim_id, resource, facts, person.version + 1, person.row["Created"])  # before any write
        old = person.keys()
        recorded = person.account_keys()
        moving = bool(facts.email_key) and facts.email_key not in recorded
        carried = [k for k in self._carried if k not in recorded and k != facts.email_key]
        # `Enabled` is written only when `active` is news (sync.py Desired.active_changed), so an
        # admin's urgent disable survives a name change; a stopped write that changed it is news still.
        active_changed = person.row.get("Active") is not facts.active or bool(person.row.get("PendingActive")) \
            or self._carried_active

        def record_pending():  # once the accounts are read and none refused (a 409 writes nothing)
            # A carried key is recorded as a stopped move's is: if this write stops too, the next
            # one still finds the rows an earlier attempt left there. A disabled row about to be
            # removed is recorded first too: its disable would be lost with it.
            # An id this write gives (a role added, a hand-over) is recorded before a row holds it.
            held = " ".join(self._sync.held)
            if moving or carried or (active_changed and not person.row.get("PendingActive")) or \
                    held != (person.row.get("DisabledKinds") or "") or self._sync.ids_changed:
                self._record_pending(person, [*recorded, *carried, *([facts.email_key] if moving else [])],
                                     active_changed, held, self._sync.account_ids)
        with self._claims(scim_id, existing=True) as claim:  # a refused change lets go of them
            for partition, key in facts.keys().items():
                if key != old[partition]:
                    claim(partition, key)
            self._apply_accounts(scim_id, facts, [*recorded, *carried], row, active_changed=active_changed,
                                 before_writing=record_pending, person=person)
            try:
                written = self._users.update_entity(row, mode=UpdateMode.REPLACE, etag=person.etag,
                                                    match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError as exc:
                raise Raced(detail="the User changed while it was written", keys=self._sync.written,
                            scim_id=scim_id, active=active_changed) from exc
            except ResourceNotFoundError as exc:
                raise self._gone(scim_id, self._sync.written) from exc
        for partition, key in old.items():
            if key and key != facts.keys()[partition]:
                self._release(partition, key, scim_id)
        self._read[scim_id] = Person.written(row, written)
        self._carried, self._carried_active = [], False  # settled: settle need not write again
        return self._read[scim_id].resource()

    def settle(self, resource_type: ResourceType, user: User) -> User:
        """`user` as the handler's write left it; when that write changed nothing (so it did not call
        update) and an email move or an `active` change of the person stopped midway, or an earlier
        attempt of this request lost a race after writing accounts (carry), rewritten as it is, which
        settles them."""
        person = self._read.get(user.id or "")
        if person is None or not (person.row.get("PendingEmailKeys") or person.row.get("PendingActive")
                                  or self._carried):
            return user
        return self.update(resource_type, user, expected_version=version_tag(person.version))

    def leave_pending(self, scim_id: str, keys: list[str], active: bool) -> None:
        """For a request that answers without settling what its lost attempts wrote (it gave up on the
        races, or its last attempt was refused): `keys`, the email keys they wrote person `scim_id`'s
        accounts at, and whether they wrote `Enabled` (`active`), recorded on the person row as a
        stopped write's are (PendingEmailKeys, PendingActive), so that the next write of the person,
        Entra's retry of this one or any other, moves, keeps or removes those rows, and writes their
        `Enabled` again, by what the person is then. A person gone meanwhile keeps none of them."""
        for _ in range(LEAVE_PENDING_ATTEMPTS):  # a small merge: it loses only to another write landing
            person = self._person(scim_id)
            if person is None:
                self._sync.remove_all(scim_id, keys)
                return
            email_key = person.row.get("EmailKey") or ""
            pending = [k for k in dict.fromkeys([*person.account_keys(), *keys]) if k and k != email_key]
            fields = {"PendingEmailKeys": " ".join(pending),
                      **({"PendingActive": True} if active else {})}
            if all(person.row.get(name) == value for name, value in fields.items()):
                return
            try:
                self._users.update_entity({"PartitionKey": PERSON, "RowKey": scim_id, **fields},
                                          mode=UpdateMode.MERGE, etag=person.etag,
                                          match_condition=MatchConditions.IfNotModified)
                return
            except ResourceModifiedError:
                continue
            except ResourceNotFoundError:
                self._sync.remove_all(scim_id, keys)
                return

    def settle_pending(self, scim_id: str) -> None:
        """Person `scim_id` written again as it is, when its row records a stopped write (as
        leave_pending leaves it): that moves, keeps or removes the rows and writes their `Enabled` now,
        so a disabled person's account is not left enabled until Entra's next write. Called on a fresh
        storage. A write that beats this one read the pending fields and settles them itself; what this
        one wrote before losing is recorded again (once: a second loss in a row waits for the next write)."""
        person = self._person(scim_id)
        if person is None or not (person.row.get("PendingEmailKeys") or person.row.get("PendingActive")):
            return
        try:
            self.update(None, person.resource(), expected_version=version_tag(person.version))
        except Raced as exc:
            self.leave_pending(scim_id, exc.keys, exc.active)
        except SCIMException:
            pass  # another write landed first (it settles them), or the person is gone (with its rows)

    def _record_pending(self, person: Person, keys: list[str], active_changed: bool, held: str,
                        ids: dict[str, dict[str, str]]) -> None:
        """Before the accounts move to a new email, or take a changed `active`, the person row says so
        (etag-checked, one write for both), so that whatever write of the person comes next (a DELETE,
        a disable, another email, a PATCH that changes nothing) finds its accounts there and writes
        their `Enabled` again even when this one stops after writing accounts (the accounts would hold
        the new state, the person row the old: without PendingActive, Entra's next word, equal to the
        old, would leave them so). The person row's write clears both. The kinds held disabled and the
        AccountIds record (`ids`) are written with them, as they will be after this write."""
        pending = " ".join(k for k in keys if k != (person.row.get("EmailKey") or ""))
        fields = {"PendingEmailKeys": pending, "DisabledKinds": held, ACCOUNT_IDS: stored_account_ids(ids),
                  **({"PendingActive": True} if active_changed else {})}
        try:
            answer = self._users.update_entity({"PartitionKey": PERSON, "RowKey": person.id, **fields},
                                               mode=UpdateMode.MERGE,
                                               etag=person.etag, match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise Raced(detail="the User changed while it was written") from exc
        except ResourceNotFoundError as exc:  # a DELETE landed since the read: the carried rows go too
            raise self._gone(person.id) from exc
        person.row.update(fields)
        person.etag = answer["etag"]

    def delete(self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None) -> None:
        person = self._read.get(resource_id) or self._person(resource_id)
        if person is None:
            raise self._gone(resource_id)
        if expected_version is not None and expected_version != version_tag(person.version):
            raise PreconditionFailedException(detail="the User changed since it was read")
        # First the record that Entra deleted the person at these mailboxes (R/{email key}), so that an
        # admin's old HR file imported again does not make the accounts again by hand (shared/accounts.py
        # entra_refusal); written before anything goes, a DELETE that stops midway is retried by Entra.
        removed_at = datetime.now(UTC)
        for key in person.account_keys():
            self._users.upsert_entity({"PartitionKey": SCIM_REMOVED_PARTITION, "RowKey": key, "Id": resource_id,
                                       "RemovedAt": removed_at}, mode=UpdateMode.REPLACE)
        self._sync.remove_all(resource_id, [*person.account_keys(), *self._carried])
        try:
            self._users.delete_entity(PERSON, resource_id, etag=person.etag,
                                      match_condition=MatchConditions.IfNotModified)
        except ResourceModifiedError as exc:
            raise Raced(detail="the User changed while it was deleted") from exc
        for partition, key in person.keys().items():
            self._release(partition, key, resource_id)
