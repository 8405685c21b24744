"""A provisioned person's portal accounts: the `PortalAccounts` rows that directory sync creates,
adopts, moves, enables, disables and removes. Plain values in (a `Desired` state), no SCIM library.

Which rows are the person's: those whose `ScimId` is the person's SCIM id, at the keys the person
row names (its email key, and the keys of a move that stopped: store.py PendingEmailKeys) and where
their move markers lead. A row without `ScimId` (made by the CLI or an import) is adopted only when
it has exactly the person's email and a kind the person gets; a row of another person, or linked to
another identity, is never taken (409), and a row of the person's own linked to (or provisioned for:
SCIM_OBJECT_ID) another identity than the person's GUID externalId names (Entra re-created the
person) is never re-pointed (409), with one tenant to link in or several; every row of the person's
at the keys read counts, of a kind still wanted or not (deleting it would let the kind's return make
it again for the new identity). Which AccountId each identity holds, kind by kind, the person row
records (Desired.account_ids): a row made for an identity gets the id that identity holds, else the
plain `scim-{kind}-{P}` when no identity holds that, else one of the identity's own; an admin's
`accounts unlink` (the row's HandedOver mark) gives that row's id, and that row's alone, to the
identity the next write names; an unbound row whose id another object id holds is refused as a bound
one is. A row whose `ScimId`
names a person who no longer exists is a leftover: replaced by a fresh row of the new person's
(never adopted with its AccountId or link).

The email move (RELIABILITY.md "Directory sync"): the two rows are in different partitions, so no
transaction covers both. The row at the new email is written first with `MovedFrom` = the old key,
and is invisible to login until the old row says `MovedTo` = the new key (one single-row write: the
commit point; shared/accounts.py `found_by_login`, the rule login reads rows by). Before the commit, only the
old email signs in; after it, only the new. Then `MovedFrom` is cleared and the old row deleted. A
failure anywhere leaves one live row, and whatever write of the person comes next (Entra's retry, a
DELETE, a disable, another email) finds that live row by login's own rule and carries on from it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from ..accounts import (
    HANDED_OVER,
    NO_OBJECT_ID,
    SCIM_OBJECT_ID,
    directory_sync_account_id,
    directory_sync_minted,
    found_by_login,
    object_id_in,
)
from ..config import KINDS
from ..tables import storage_errors, table_row


def _bound(row) -> str:
    """The Entra object id a row was provisioned for (SCIM_OBJECT_ID), as the accounts store reads it."""
    return str(row.get(SCIM_OBJECT_ID) or "").lower()


def _identity(row) -> str:
    """The Entra object id a row belongs to: the one it was provisioned for, else (a row made before that
    was written, or unlinked by an admin and linked by a login since) the one a login linked it to."""
    return _bound(row) or object_id_in(row.get("LinkedIdpSubject"))


ATTEMPTS = 4  # a row changed under us (a login recording its time) is re-read and tried again
MAX_FOLLOWED = 4  # rows read beyond the recorded keys by following move markers
# NO_OBJECT_ID (shared/accounts.py): who holds the ids of rows made for no object id (externalId not a
# GUID) in Desired.account_ids: not an object id's accounts (the first login by email links them).
# Who holds every plain id of a person whose AccountIds record is missing (an older version's) or
# unreadable (store.py account_ids_of): no one who may have it, so no identity is given one.
UNREADABLE = "unreadable"
# Who holds an id "no object id" held until an admin's `accounts remove` of its row (store.py
# account_ids_of: "removed-by-admin:{the id}", one entry each): no one; the next row made for "no object
# id" is a new account.
REMOVED_BY_ADMIN = "removed-by-admin"


def removed_by_admin(account_id: str) -> str:
    """The record's holder of an id an admin's `accounts remove` took (REMOVED_BY_ADMIN, one per id)."""
    return f"{REMOVED_BY_ADMIN}:{account_id}"


def _taken_by_admin(held: Mapping[str, str], account_id: str | None) -> bool:
    """Whether one kind's record (`held`) says an admin's `accounts remove` took `account_id`."""
    return removed_by_admin(account_id) in held


@dataclass(frozen=True)
class _Plan:
    """What AccountSync._plan decided for one kind, from the rows it read."""
    kind: str
    rows: dict  # key -> row or None, as read
    ours: list  # the keys of the person's rows among them
    found: dict  # of those, the rows login finds (_found): what is checked for another identity
    step: str  # adopt, in_place, move, replace (a gone person's leftover) or create
    source: object  # the row that carries on (adopted, in place, or moved), or None


class Conflict(Exception):
    """The write would give an email or an account of one person to another (409 uniqueness)."""


class Vanished(Exception):
    """A row of the person's that this write planned to carry on from went away before it was
    written, and the rows read again offer nothing to carry on from: another write of the person (a
    DELETE, an email move) got there first. Making the account again from this write's view of the
    person would give a deleted person a live account, or the old mailbox of a move one that nothing
    of the person's names any more: the write loses, and starts over from a fresh read of the person
    (store.py raises Raced). So does a write that made a row again with an id an admin's `accounts
    remove` took after the write read the person (AccountSync._not_removed_meanwhile)."""


@dataclass(frozen=True)
class Desired:
    scim_id: str
    email_key: str | None  # None: no email, so no account
    email: str
    kinds: tuple[str, ...]
    active: bool
    link: str | None  # LinkedIdpSubject to set on the person's accounts (GUID externalId), or None
    display_name: str
    # Whether `active` is news: it changed since the person's rows were last settled (or a write that
    # changed it may have stopped midway: store.py PendingActive). Only then is `Enabled` written on
    # a row already the person's, so an admin's urgent `accounts disable` holds until Entra's own
    # `active` changes; a row new to the person (created, adopted) always gets `active`.
    active_changed: bool = True
    # Whether the User names `active` at all: one that leaves it unset (a mapping without it) adopts a
    # row with the row's own Enabled (an admin's disable), where it read as enabled.
    active_given: bool = True
    # Entra's object id (a GUID externalId), whatever the tenant setting: the identity the person's
    # rows are provisioned for (SCIM_OBJECT_ID), so a row is never carried to another one even where
    # `link` is None (several ALLOWED_TENANT_IDS).
    object_id: str | None = None
    # Which AccountId each identity holds, kind by kind ({kind: {object id or NO_OBJECT_ID: AccountId}}),
    # as the person row records it (store.py AccountIds): a row made for an identity gets the one it
    # holds (the same each time the role comes back), and never one another identity holds.
    account_ids: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # The kinds whose row an admin had disabled (`accounts disable`) when directory sync removed it (a
    # role or the email went): made again disabled while `active` is not news (AccountSync.held).
    held: tuple[str, ...] = ()


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
    def __init__(self, accounts: TableClient, person_exists, removed_ids=None):
        self._table = Guarded(accounts)
        self._person_exists = person_exists  # scim id -> bool: is that SCIM User still there?
        # (scim id, kind) -> the ids an admin's `accounts remove` has noted for the person now (read at
        # the call, not from the record the write began with): _not_removed_meanwhile.
        self._removed_ids = removed_ids or (lambda scim_id, kind: ())
        # The email keys this instance wrote (or tried to write) a row of the person's at: a write
        # that then loses the person row (Raced, 404) wrote them from a view of the person no longer
        # true, and leaves them to its retry to read, or removes the person's rows there (store.py).
        self.written: list[str] = []
        # What the person row records after `apply`: which AccountId each identity holds, kind by kind
        # (Desired.account_ids, with the ids this write gave), and the kinds held disabled.
        self.account_ids: dict[str, dict[str, str]] = {}
        self.held: tuple[str, ...] = ()
        self._recorded: Mapping[str, Mapping[str, str]] = {}  # Desired.account_ids, as `apply` began

    @property
    def ids_changed(self) -> bool:
        """Whether the record `apply` leaves (account_ids) differs from the one it began with."""
        return self.account_ids != self._recorded

    # ---- reads ----
    def _read(self, key: str, kind: str):
        try:
            return table_row(self._table.get_entity(key, kind))
        except ResourceNotFoundError:
            return None

    def _ours(self, row, scim_id: str) -> bool:
        return row is not None and row.get("ScimId") == scim_id

    def _taken_by_other(self, row, desired: Desired) -> bool:
        """For a row neither the person's nor a leftover (`_leftover` has read its owner, so a ScimId
        here names another person who exists): one another person owns or another identity is linked
        to. A person without a link (no GUID externalId, or no single tenant to link in) cannot show a
        linked row is theirs: taken."""
        linked = row.get("LinkedIdpSubject") or ""
        bound = _bound(row)
        return bool(row.get("ScimId")) or bool(linked and linked != desired.link) or \
            bool(bound and bound != desired.object_id)

    @staticmethod
    def _foreign(row, desired: Desired) -> bool:
        """A row of the person's that is another Entra identity's (_identity) than externalId now names."""
        linked = row.get("LinkedIdpSubject") or ""
        bound = _identity(row)
        return bool(desired.object_id and bound and bound != desired.object_id) or \
            bool(desired.link and linked and linked != desired.link)

    # ---- the one entry point ----
    def apply(self, desired: Desired, old_keys: Sequence[str] = (), created: bool = False,
              before_writing: Callable[[], None] | None = None) -> None:
        """Makes the person's rows what `desired` says: for each kind it gets, one row at its email
        key (moved from wherever it lives among `old_keys`, the keys the person row says its
        accounts may be at); for each other kind, none; and no other row of the person's at any of
        those keys. Reads every kind's rows and raises Conflict before writing any (nor calling
        `before_writing`, the caller's first write) when a row it needs belongs to someone else or is
        linked to another identity."""
        wanted = set(desired.kinds) if desired.email_key else set()
        keys = [k for k in dict.fromkeys((desired.email_key, *old_keys)) if k]
        others = [k for k in keys if k != desired.email_key]
        plans = {kind: self._plan(desired, kind, others) for kind in KINDS if kind in wanted}
        # The rows of the kinds no longer wanted are the person's too: one of another identity's is
        # never deleted by a write naming a new object id (the role or the email coming back would
        # make it again for that one), as it is never re-pointed.
        leaving = {kind: self._rows(keys, kind, desired.scim_id) for kind in KINDS
                   if kind not in wanted and not created}  # a new person owns no row yet
        self._recorded = desired.account_ids
        self.account_ids = {kind: dict(ids) for kind, ids in desired.account_ids.items()}
        if desired.object_id:  # externalId names identities now: "no object id" shares no one's account
            for held in self.account_ids.values():
                if held.get(NO_OBJECT_ID) in {v for k, v in held.items() if k not in (NO_OBJECT_ID, UNREADABLE)}:
                    del held[NO_OBJECT_ID]
        found = {kind: plan.found for kind, plan in plans.items()}
        for kind, rows in leaving.items():
            found[kind] = self._found(rows, desired.scim_id)
            self._refuse_foreign(desired, found[kind])
        for kind, rows in found.items():
            for row in rows.values():
                # A row bound or linked to an identity says who holds its id, whatever the record (a
                # person row from before it, whose externalId may name another identity by now): the
                # rows carried on that are this identity's already among them.
                if _identity(row):
                    # A row a login linked and no write bound (this one names no object id: externalId
                    # not a GUID) stays "no object id"'s too: made again by such a write, it is the same
                    # account (unlinked again: SECURITY.md known limit), not a new, empty one.
                    self._record(desired.scim_id, kind, _identity(row), row.get("AccountId"),
                                 shared=not desired.object_id and not _bound(row))
        # ...and the ids this write mints are in the record before any row holds one (store.py writes
        # it first when it changed): a write that stops after its rows leaves them recorded. A row
        # handed over is recorded for this identity once it is (bound, after the write: _write):
        # recorded before, a bind that never landed (an outage, a login's race, then a 409) would
        # stay a hand-over the admin may since have refused.
        for kind, plan in plans.items():
            if plan.source is None:
                self._holds(desired, kind, self._account_id(desired, kind))
        disabled = {row["RowKey"] for kind, rows in leaving.items() for row in rows.values()
                    if self._ours(row, desired.scim_id) and row.get("Enabled", True) is not True}  # 'false' too
        # Entra's own word on `active` ends an admin's disable, as it does on a row that stays.
        self.held = () if desired.active_changed else tuple(k for k in KINDS if k in {*desired.held, *disabled})
        if before_writing is not None:
            before_writing()
        for kind, plan in plans.items():
            self._ensure(desired, kind, others, plan)
        self.held = tuple(k for k in self.held if k not in wanted)  # each such row holds its own now
        for kind, rows in leaving.items():
            self._remove_rows(rows, kind, desired.scim_id, desired)
            # A kind coming back returns the account its identity had: a hand-over recorded once its
            # row is gone as it was read (recorded before, a delete that never landed, or a login that
            # took the row back meanwhile, would leave one the admin may since have refused).
            for row in found[kind].values():
                if self._given(row, desired):
                    self._holds(desired, kind, row["AccountId"])

    def remove_all(self, scim_id: str, keys: Sequence[str]) -> None:
        keys = [k for k in dict.fromkeys(keys) if k]
        for kind in KINDS:
            self._remove_rows(self._rows(keys, kind, scim_id), kind, scim_id)

    def _given(self, row, desired: Desired) -> bool:
        """Whether a row of the person's carries an AccountId the identity `desired` names holds by it:
        the row is that identity's (bound or linked to it), or the admin unlinked it (HandedOver) and no
        identity has taken it since."""
        if row.get(HANDED_OVER) is True and not _identity(row):
            return True
        return bool(desired.object_id) and _identity(row) == desired.object_id

    def _holds(self, desired: Desired, kind: str, account_id, row=None) -> None:
        """Records that the identity `desired` names holds `account_id` for `kind` (carried on from
        `row`, if given): only an id directory sync mints (unique to the person), never an admin's own
        (adopted), which the admin may give another email once the row is gone; and never the id of a
        row that stays another identity's (a write naming no object id keeps it as it is)."""
        if row is not None and _identity(row) and _identity(row) != desired.object_id:
            return
        self._record(desired.scim_id, kind, desired.object_id or NO_OBJECT_ID, account_id)

    def _record(self, scim_id: str, kind: str, holder: str, account_id, shared: bool = False) -> None:
        """`holder` (an object id or NO_OBJECT_ID) holds `account_id` for `kind`, if it is one of the
        person's own ids. An object id's account is never also "no object id"'s, whose rows any login
        by the email links, unless `shared`: a row only a login linked, which "no object id" holds too
        (whatever an older person row's record says: it may name no one). An id an admin's `accounts
        remove` took (REMOVED_BY_ADMIN) is no one's from then on: a row left holding it (a stopped
        move's other copy, a raced write's re-made row, linked by a login since) gives it no one."""
        held = self.account_ids.setdefault(kind, {})
        if not directory_sync_minted(account_id, scim_id, kind) or _taken_by_admin(held, account_id):
            return
        if holder == NO_OBJECT_ID:
            if account_id not in held.values():
                held[NO_OBJECT_ID] = account_id
            return
        if shared:
            held.setdefault(NO_OBJECT_ID, account_id)
        elif held.get(NO_OBJECT_ID) == account_id:
            del held[NO_OBJECT_ID]
        held[holder] = account_id

    def _held_by_another(self, row, desired: Desired) -> bool:
        """A row of the person's bound and linked to no identity (an older version's, never signed in),
        not handed over, whose AccountId the person row records as another object id's: binding it
        would give that identity's id to this one."""
        if not desired.object_id or _identity(row) or row.get(HANDED_OVER) is True:
            return False  # a write naming no object id binds nothing
        holders = {who for who, held in desired.account_ids.get(row["RowKey"], {}).items()
                   if held == row.get("AccountId")}
        # UNREADABLE (no record, from an older version) names no identity that ever held the row: one
        # no login linked was never signed in to, so binding it gives no one another's account.
        return bool(holders - {NO_OBJECT_ID, UNREADABLE}) and desired.object_id not in holders

    # ---- the person's rows of one kind ----
    def _rows(self, keys: Sequence[str], kind: str, scim_id: str) -> dict:
        """{key: row or None} for `keys`, and for every key a row of the person's names in `MovedTo`
        or `MovedFrom` (a move the person row does not know of, left by an older version)."""
        rows: dict = {}
        todo = list(keys)
        while todo and len(rows) < len(keys) + MAX_FOLLOWED:
            key = todo.pop(0)
            if key in rows:
                continue
            rows[key] = row = self._read(key, kind)
            if self._ours(row, scim_id):
                todo += [k for k in (row.get("MovedTo"), row.get("MovedFrom")) if k and k not in rows]
        return rows

    @staticmethod
    def _live(key: str, rows: dict) -> bool:
        """Whether login finds the row at `key`, by its rule (found_by_login) on the rows read."""
        row = rows.get(key)
        return row is not None and found_by_login(key, row.get("MovedTo") or "", row.get("MovedFrom") or "",
                                                  lambda source: (rows.get(source) or {}).get("MovedTo") or "")

    # ---- steps ----
    def _fields(self, desired: Desired, joining: bool = False) -> dict:
        """What directory sync writes on a row; `joining`: the row becomes the person's now."""
        fields = {"Email": desired.email, "DisplayName": desired.display_name, "ScimId": desired.scim_id}
        if joining or desired.active_changed:
            fields["Enabled"] = desired.active
        return fields

    def _ensure(self, desired: Desired, kind: str, old_keys: list[str], plan: _Plan) -> None:
        for attempt in range(ATTEMPTS):
            try:
                return self._write(desired, plan)
            except (ResourceModifiedError, ResourceExistsError, ResourceNotFoundError) as exc:
                if attempt < ATTEMPTS - 1:  # a row changed between our read and write: read again
                    again = self._plan(desired, kind, old_keys)
                    if plan.step in ("in_place", "move") and again.source is None:  # never a create
                        raise Vanished(f"the {kind} account was removed or moved by another write of "
                                       "the person") from exc
                    plan = again
        raise Conflict(f"{kind} account at the new email kept changing")

    def _plan(self, desired: Desired, kind: str, old_keys: list[str]) -> _Plan:
        """Reads the person's rows of `kind` and decides what becomes of them: the live row (at most
        one: login's rule) is made the row at the new key, in place or by a move; a row without an
        owner there is adopted; a gone person's leftover is replaced. Raises Conflict for a row that
        is someone else's, and for a row of the person's own linked to another identity than the
        person's link (externalId changed: Entra re-created the person, and matched the new one by
        userName), which is never re-pointed, as an adoptee is not."""
        new_key = desired.email_key
        rows = self._rows([new_key, *old_keys], kind, desired.scim_id)
        ours = [k for k, row in rows.items() if self._ours(row, desired.scim_id)]
        live = [k for k in ours if self._live(k, rows)]
        target = rows[new_key]
        mine = self._ours(target, desired.scim_id)
        leftover = target is not None and not mine and self._leftover(target, desired)
        if target is not None and not mine and not leftover:
            if self._taken_by_other(target, desired) or live:
                # Another person's account, or an account the person's own would be merged into.
                raise Conflict(f"the {kind} account of this email belongs to someone else")
            step, source = "adopt", target
        elif new_key in live or (mine and not live):
            step, source = "in_place", target  # (or only a dead copy is here, whose source is gone: revived)
        elif live:
            step, source = "move", rows[live[0]]
        else:
            step, source = ("replace" if leftover else "create"), None
        if step in ("in_place", "move") and _taken_by_admin(desired.account_ids.get(kind, {}), source.get("AccountId")):
            # A row of the person's holding an id an admin's `accounts remove` took can only be left over:
            # made again from a record read before the remove (a write racing it), or the other copy of a
            # move that stopped. Linked by a login since or not, never that account again, but a new one.
            step, source = ("create" if target is None else "replace"), None
        found = self._found(rows, desired.scim_id)
        self._refuse_foreign(desired, found)
        return _Plan(kind, rows, ours, found, step, source)

    def _found(self, rows: dict, scim_id: str) -> dict:
        """The person's rows among `rows` that login finds (or, when it finds none, every one of the
        person's): the dead old row of a move that stopped after its commit is no one's account, and
        refusing for it would leave a re-created person with no admin step that clears the 409."""
        ours = {k: row for k, row in rows.items() if self._ours(row, scim_id)}
        live = {k: row for k, row in ours.items() if self._live(k, rows)}
        return live or ours

    def _refuse_foreign(self, desired: Desired, found: dict) -> None:
        """Conflict for any of the person's rows `found` (_found) that is another identity's (_foreign)."""
        for row in found.values():
            if self._foreign(row, desired) or self._held_by_another(row, desired):
                email, kind = str(row.get("Email") or desired.email), row["RowKey"]
                raise Conflict(f"the {kind} account of {email} belongs to another Entra identity than externalId "
                               "now names (linked to it, or provisioned for its object id: was the person re-created "
                               "in Entra?) and is never re-pointed: if this is the same person, unlink it "
                               f"(portal-sso accounts unlink {email} --kind {kind}), and Entra's retry (or Provision "
                               "on demand) gives it to this one; if another, remove it (portal-sso accounts remove "
                               f"{email} --kind {kind}), and the retry makes this one an account of its own")

    def _write(self, desired: Desired, plan: _Plan) -> None:
        """Carries out `plan`, then deletes every other row of the person's (all dead by then)."""
        new_key, kind, target = desired.email_key, plan.kind, plan.rows[desired.email_key]
        etags = {}  # the rows written here: their etags, from the writes' answers
        if new_key not in self.written:  # before the write: one that fails may still have landed
            self.written.append(new_key)
        if plan.step == "adopt":  # its AccountId (and login history) kept; its Enabled too, `active` unset
            fields = self._fields(desired, joining=True)
            if not desired.active_given:  # both must say enabled: the person as stored, the row (an admin's disable)
                fields["Enabled"] = desired.active and target.get("Enabled", True) is True
            self._merge(target, {**fields, **self._link_fields(target, desired), "MovedFrom": ""})
        elif plan.step == "in_place":
            wanted = {**self._fields(desired), **self._link_fields(target, desired)}
            # An `active` change writes even a row that holds it already (an admin's disable): the new
            # etag fails an `accounts enable` that read the person before the change (accounts.py enable).
            if desired.active_changed or target.get("MovedFrom") or target.get("MovedTo") or \
                    any(target.get(k) != v for k, v in wanted.items()):
                written = self._merge(target, {**wanted, "MovedFrom": "", "MovedTo": ""})
                if not self._live(new_key, plan.rows):  # a dead copy revived: made visible again, as made
                    self._not_removed_meanwhile(desired, target, written)
        elif plan.step == "move":  # over an earlier copy or a gone person's leftover if any
            etags[plan.source["PartitionKey"]] = self._move(desired, plan.source, target)
        elif plan.step == "replace":  # as a whole: nothing of the gone person's (AccountId, link) is kept
            self._not_removed_meanwhile(desired, made := self._new_row(desired, kind), self._replace(target, made))
        else:
            self._not_removed_meanwhile(desired, made := self._new_row(desired, kind), self._table.create_entity(made))
        # What this step gave, now that it landed: a row handed over (bound here), or what _ensure
        # re-planned after a race (apply recorded the rest before the write); the person row keeps it.
        self._holds(desired, kind, (plan.source if plan.source is not None else made).get("AccountId"), row=plan.source)
        for key in plan.ours:
            if key != new_key:
                self._delete_if_ours(key, kind, desired.scim_id, etags.get(key) or plan.rows[key].metadata["etag"])

    def _not_removed_meanwhile(self, desired: Desired, made, written: dict) -> None:
        """A row just made (or a dead copy made live) for "no object id" with the id its record names
        (`written`: the write's answer): an admin's remove of that id's row may have landed after this
        write read the record (accounts.py notes the id, then deletes the row). Made again, the removed
        account would be live for the next login by the email (or the one linked to a copy) until the
        person row's write fails on its etag and the retry replaces it, or, when that write meets an
        outage, until Entra's next cycle. So the note is read once the row is there; if the id is in
        it, the row goes at once and the write starts over from a fresh read (Vanished), which makes a
        new account."""
        kind, account_id = made["RowKey"], made["AccountId"]
        if desired.object_id or desired.account_ids.get(kind, {}).get(NO_OBJECT_ID) != account_id:
            return  # an id no one held yet, or an object id's own: no admin's remove of it to race
        if account_id in self._removed_ids(desired.scim_id, kind):
            self._delete_if_ours(made["PartitionKey"], kind, desired.scim_id, written["etag"])
            raise Vanished(f"an admin removed the {kind} account while this write made it again")

    def _move(self, desired: Desired, source, target) -> str:
        """Copy (invisible: MovedFrom), commit on the old row, then clear MovedFrom (the caller
        deletes the old row, on the etag returned: the commit's). The copy is the source as it is now,
        every field but directory sync's own: a login's LastLoginAt, an admin's AccountId or urgent
        disable since an earlier copy is kept (`Enabled` is written only when `active` changed)."""
        new_key, kind = desired.email_key, source["RowKey"]
        etag = source.metadata["etag"]
        if source.get("MovedFrom"):
            # Live only through its own source's MovedTo, which may be the row about to be copied
            # over (a move back): made live on its own first, so some row is live at every step.
            etag = self._merge(source, {"MovedFrom": ""})["etag"]
        copy = {k: v for k, v in source.items() if k not in ("PartitionKey", "RowKey", "MovedTo")}
        copy.update(self._fields(desired), **self._link_fields(source, desired),
                    PartitionKey=new_key, RowKey=kind, MovedFrom=source["PartitionKey"])
        if target is None:
            written = self._table.create_entity(copy)
        else:  # an earlier copy of the person's (or a dead row of theirs): replaced as a whole
            written = self._replace(target, copy)
        committed = self._commit_move(source, new_key, etag)
        self._merge(copy, {"MovedFrom": ""}, etag=written["etag"])
        return committed["etag"]

    def _account_id(self, desired: Desired, kind: str) -> str:
        """The AccountId of a row made for the identity `desired` names: the one it holds, else the
        plain `scim-{kind}-{P}` if no identity holds that, else one of its own (the same each time)."""
        holder = desired.object_id or NO_OBJECT_ID
        held = self.account_ids.get(kind, {})
        if held.get(holder):
            return held[holder]
        own = directory_sync_account_id(desired.scim_id, kind, holder)
        # (own-2, own-3...: "no object id" again after an admin removed its own, which stays held)
        candidates = itertools.chain([directory_sync_account_id(desired.scim_id, kind), own],
                                     (f"{own}-{n}" for n in itertools.count(2)))
        return next(c for c in candidates if c not in held.values())

    def _new_row(self, desired: Desired, kind: str) -> dict:
        """A row made for the person (_account_id), disabled while an admin's disable of the row
        removed before holds (`held`)."""
        row = {"PartitionKey": desired.email_key, "RowKey": kind, "AccountId": self._account_id(desired, kind),
               **self._fields(desired, joining=True)}
        if kind in self.held:
            row["Enabled"] = False
        return {**row, **self._link_fields({}, desired)}

    def _leftover(self, row, desired: Desired) -> bool:
        """A row provisioned for a person who no longer exists (deleted, or a create that stopped
        before its person row): not an account to adopt, since its AccountId, link and history are
        that person's. The email pointer our write holds means no write of that person is under way."""
        owner = row.get("ScimId") or ""
        return bool(owner) and owner != desired.scim_id and not self._person_exists(owner)

    def _link_fields(self, row, desired: Desired) -> dict:
        """A GUID externalId binds an unbound account to its object id, and links it at once where the
        tenant is known; a linked or bound one keeps what it has (a row of another identity's never gets
        here: _plan, _taken_by_other)."""
        fields = {}
        if desired.link and not row.get("LinkedIdpSubject"):
            fields["LinkedIdpSubject"] = desired.link
        if desired.object_id and not row.get(SCIM_OBJECT_ID):
            fields[SCIM_OBJECT_ID] = desired.object_id
        return fields

    def _commit_move(self, source, new_key: str, etag: str) -> dict:
        """The commit point: one etag-checked write on the old row. A login that changed the old row
        meanwhile (its LastLoginAt) fails this with ResourceModifiedError, and _ensure starts over,
        copying the fresh row."""
        return self._table.update_entity({"PartitionKey": source["PartitionKey"], "RowKey": source["RowKey"],
                                          "MovedTo": new_key}, mode=UpdateMode.MERGE,
                                         etag=etag, match_condition=MatchConditions.IfNotModified)

    def _merge(self, row, fields: dict, etag: str | None = None) -> dict:
        """Etag-checked on the row as read, or on `etag` (a write's answer: no read back)."""
        return self._table.update_entity({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], **fields},
                                         mode=UpdateMode.MERGE, etag=etag or row.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)

    def _replace(self, row, entity: dict) -> dict:
        return self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=row.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)

    def _delete_if_ours(self, key: str, kind: str, scim_id: str, etag: str, desired: Desired | None = None) -> None:
        """Deletes the person's row at `key`, etag-checked on the row as last read or written (gone
        already is fine); read again only when it changed since. For a write naming an identity
        (`desired`), a row that became another identity's meanwhile (a login linked it) is never
        deleted: Vanished, and the write starts over from a fresh read (which refuses it)."""
        for _ in range(ATTEMPTS):
            try:
                self._table.delete_entity(key, kind, etag=etag, match_condition=MatchConditions.IfNotModified)
                return
            except ResourceModifiedError as exc:
                row = self._read(key, kind)
                if not self._ours(row, scim_id):
                    return  # gone, or not the person's now: accounts never provisioned are left alone
                if desired is not None and self._foreign(row, desired):
                    raise Vanished(f"the {kind} account became another identity's while it was being "
                                   "removed") from exc
                etag = row.metadata["etag"]

    def _remove_rows(self, rows: dict, kind: str, scim_id: str, desired: Desired | None = None) -> None:
        """Deletes the person's rows of this kind among `rows` (_rows: at the keys given and wherever
        their move markers lead). Each delete only hides: nothing becomes visible that was not,
        whatever the order."""
        for key, row in rows.items():
            if self._ours(row, scim_id):
                self._delete_if_ours(key, kind, scim_id, row.metadata["etag"], desired)
