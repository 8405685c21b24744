"""Portal accounts in the `PortalAccounts` table: PartitionKey = the email key, RowKey = kind."""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from .config import KIND_ROLES, KINDS, ascii_lower, log_value
from .errors import AccountDisabled, DependencyUnavailable, IdentityMismatch, MalformedEmail, NoAccount
from .tables import (
    SCIM_EMAIL_PARTITION,
    SCIM_PERSON_PARTITION,
    SCIM_REMOVED_PARTITION,
    delete_existed,
    storage_errors,
    table_row,
)

log = logging.getLogger("portal_sso")

# Characters Table Storage forbids in keys (and '%', our escape character). Control characters are
# refused before escaping; they stay here so that no key can ever hold one.
_FORBIDDEN_IN_KEYS = r"/\\#?\x00-\x1f\x7f-\x9f"
KEY_FORBIDDEN = re.compile(f"[{_FORBIDDEN_IN_KEYS}]")  # what no stored key can hold (Azurite refuses them too)
_KEY_UNSAFE = re.compile(f"[%{_FORBIDDEN_IN_KEYS}]")
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a path
# Table Storage keeps a PartitionKey or RowKey of up to 1 KiB of UTF-16: 512 code units (Azurite refuses
# a longer one with a 400). An address under MAX_EMAIL_LENGTH can still make a longer key, since each
# character table_key escapes takes three, so every key is measured (key_problem).
MAX_KEY_UNITS = 512
# An account id is the session token's `sub`, which OpenID Connect Core (section 2) limits to 255
# characters, and the portal's key for its person: a far tighter bound than what the row could hold.
MAX_ACCOUNT_ID_LENGTH = 255
# How fresh LastLoginAt is kept: a login within this time of the last recorded one writes nothing.
LAST_LOGIN_PRECISION = timedelta(hours=1)
WRITE_ATTEMPTS = 5  # of an etag-checked read-modify-write that keeps meeting concurrent changes
def directory_sync_account_id(scim_id: str, kind: str, object_id: str = "") -> str:
    """A provisioned account's AccountId: `scim-{kind}-{SCIM id}`, the identity's the person's ids were
    minted for; `scim-{kind}-{SCIM id}-{object id}` for another Entra object id the same SCIM User
    names later (the person re-created in Entra: never the old identity's account). Unique (SCIM ids
    are random UUIDs never reused), stable (kept across email moves, and the same when a removed role
    comes back to the same identity)."""
    return f"scim-{kind}-{scim_id}" + (f"-{object_id}" if object_id else "")


def directory_sync_minted(account_id, scim_id: str, kind: str) -> bool:
    """Whether `account_id` is one directory_sync_account_id gives that person for `kind`."""
    return isinstance(account_id, str) and account_id.startswith(directory_sync_account_id(scim_id, kind))


# The Entra object id directory sync provisioned a row for (the person's GUID externalId), written
# even where it cannot link the row (several ALLOWED_TENANT_IDS: no tenant): until an admin unlinks
# the row, no other object id signs in to it, nor does directory sync carry it to one (shared/scim/sync.py).
SCIM_OBJECT_ID = "ScimObjectId"
HANDED_OVER = "HandedOver"  # set by `accounts unlink` on a provisioned row: the admin's "the same person"
# On a provisioned person's row (directory sync's ScimUsers): the AccountIds an admin's `accounts remove`
# took, kind by kind ({kind: [AccountId, ...]}, JSON); directory sync never makes one again for "no object
# id" (shared/scim/store.py account_ids_of).
REMOVED_ACCOUNT_IDS = "RemovedAccountIds"
# ...and which AccountId each identity holds, kind by kind ({kind: {holder: AccountId}}, JSON): the holder
# NO_OBJECT_ID's is the id directory sync gives the next row it makes for an externalId that is no object
# id (shared/scim/sync.py Desired.account_ids).
ACCOUNT_IDS, NO_OBJECT_ID = "AccountIds", "no-object-id"


def removed_account_ids(stored: object) -> dict[str, list[str]]:
    """REMOVED_ACCOUNT_IDS as a person row holds it ({} for none, or a value not of that form)."""
    try:
        removed = json.loads(stored) if isinstance(stored, str) and stored else {}
    except (ValueError, RecursionError):
        return {}
    if not isinstance(removed, dict):
        return {}
    return {kind: [i for i in ids if isinstance(i, str)] for kind, ids in removed.items() if isinstance(ids, list)}


def no_object_id_of(stored: object, kind: str) -> str:
    """The AccountId ACCOUNT_IDS (as a person row holds it) gives NO_OBJECT_ID for `kind`, "" for none."""
    try:
        record = json.loads(stored) if isinstance(stored, str) and stored else {}
    except (ValueError, RecursionError):
        return ""
    held = record.get(kind) if isinstance(record, dict) else None
    account_id = held.get(NO_OBJECT_ID) if isinstance(held, dict) else None
    return account_id if isinstance(account_id, str) else ""


def object_id_in(link: str | None) -> str:
    """The object id of a LinkedIdpSubject ({tid}:{oid}: after the last ':'); "" for none."""
    return (link or "").rpartition(":")[2].lower()


# Directory sync's AccountIds: a provisioned person's own, given back with the person's email when a
# removed role returns (so no other email may take one).
DIRECTORY_SYNC_ID_PREFIXES = tuple(directory_sync_account_id("", kind) for kind in KINDS)
# What an import's scan reads of each stored row (stored_accounts) and what `add` reads of the rows
# holding an account id (AccountStore.holders); DisplayName, so that a write taken back (take_back)
# puts the name it replaced back.
STORED_FIELDS = ["PartitionKey", "RowKey", "AccountId", "LinkedIdpSubject", SCIM_OBJECT_ID, "Email", "MovedTo",
                 "MovedFrom", "ScimId", "Enabled", "DisplayName"]


def _char(c: str) -> str:
    return f"U+{ord(c):04X}" + (f" {unicodedata.name(c, '')}".rstrip())


def _blank(c: str) -> bool:
    """Unicode White_Space, and the separators (Zs/Zl/Zp)."""
    return c.isspace() or unicodedata.category(c) in ("Zs", "Zl", "Zp")


NOT_NFC = ("is not in Unicode normalization form C (NFC): a character is written in a decomposed or non-canonical "
           "form (e.g. an accent as a separate mark, the Kelvin sign for K)")


def _character_problem(c: str, position: int) -> str | None:
    """Why `c` may not be in an account's email, id or name (None when it may): a lone surrogate (no
    request can carry it: a URL and a JSON body are UTF-8), or a control, format or line-separator
    character (a forged log line, a terminal driven or text reversed where it is shown)."""
    category = unicodedata.category(c)
    if category == "Cs":
        return f"holds a lone surrogate (U+{ord(c):04X}) at character {position}"
    if category in ("Cc", "Cf", "Zl", "Zp"):
        kind = {"Cc": "a control character", "Cf": "an invisible format character"}.get(category, "a line separator")
        return f"holds {kind} ({_char(c)}) at character {position}"
    return None


def text_problem(text: str, allowed: frozenset[str] = frozenset()) -> str | None:
    """The first character of `text` (but those `allowed`) _character_problem refuses, said as it says it."""
    return next((problem for position, c in enumerate(text, 1)
                 if c not in allowed and (problem := _character_problem(c, position))), None)


# A name may hold the joiners Persian, Indic scripts and emoji sequences are written with; no other
# format character (a bidi override such as U+202E, a zero-width space).
NAME_JOINERS = frozenset("\u200c\u200d")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an account's DisplayName, by its characters (None when it can): the rule
    of `add`, `import` and directory sync alike (a name is the session token's `name` when the ID
    token has none, log text, and what `list` prints)."""
    return text_problem(name, NAME_JOINERS)


MAX_SHOWN_NAME = 256  # characters: Entra's displayName limit


def shown_name_problem(name: str) -> str | None:
    """Why `name` cannot be a name the portal shows (None when it can): name_problem's characters and
    at most MAX_SHOWN_NAME characters. The rule of directory sync's DisplayName and of the session
    token's `name`, whether that came from the ID token or the account."""
    if problem := name_problem(name):
        return problem
    return f"longer than {MAX_SHOWN_NAME} characters" if len(name) > MAX_SHOWN_NAME else None


def email_problem(raw: object) -> str | None:
    """Why `raw` cannot be an account's email (None when it can). The text never holds the address
    itself, so it is safe in a log line; it names the offending character by code point."""
    if not isinstance(raw, str):
        return f"is a {type(raw).__name__}, not text"
    if len(raw) > MAX_EMAIL_LENGTH:
        return f"is {len(raw)} characters long, over the {MAX_EMAIL_LENGTH} an address may have"
    # One search for the first invisible character, not a range test per character (this runs at every
    # login and SCIM request); a whitespace, control or format character up to it (itself included: the
    # tags are Cf) is named first, as a check of each character in turn would.
    invisible = _IGNORABLE.search(raw)
    for position, c in enumerate(raw[:invisible.end()] if invisible else raw, 1):
        if _blank(c):
            return f"holds whitespace ({_char(c)}) at character {position}"
        if problem := _character_problem(c, position):
            return problem
    if invisible:
        return f"holds an invisible character ({_char(invisible.group())}) at character {invisible.start() + 1}"
    if not unicodedata.is_normalized("NFC", raw):
        return NOT_NFC
    local, at, domain = raw.partition("@")
    if not at:
        return "has no '@'"
    if "@" in domain:
        return "has more than one '@'"
    if not local or not domain:
        return "has nothing before the '@'" if not local else "has nothing after the '@'"
    if problem := _second_spelling(local, domain):
        return problem
    return key_problem(table_key(raw))  # ASCII lowercasing (canonical_email) keeps the key's length


# Unicode's Default_Ignorable_Code_Point characters that are not Cf (those _character_problem refuses):
# rendered as nothing, so an address holding one lists exactly like the one without it.
_IGNORABLE = re.compile("[\u034f\u115f-\u1160\u17b4-\u17b5\u180b-\u180f\u2065\u3164\ufe00-\ufe0f\uffa0"
                        "\ufff0-\ufff8\U000e0000-\U000e0fff]")
# Dots IDNA takes for '.' between labels: `contoso。test` would be contoso.test written another way.
_OTHER_DOTS = frozenset("\u3002\uff0e\uff61")


def _second_spelling(local: str, domain: str) -> str | None:
    """Why the address is one another address also spells (so one mailbox would get two keys, two
    accounts of a kind): a quoted local part (`"ann"@x` is `ann@x`), an empty domain label (a trailing
    dot: `x.test.` is `x.test`), a non-ASCII domain label IDNA2008 does not take as it stands (upper-case,
    full-width letters, `。`: mail maps them onto another spelling). None when it is the only spelling."""
    if '"' in local:
        return "has a double quote ('\"') in the part before the '@': quoted addresses are not taken, since " \
               "'\"ann\"@x' and 'ann@x' are one mailbox"
    if dot := next((c for c in domain if c in _OTHER_DOTS), None):
        return f"has a dot other than '.' ({_char(dot)}) in its domain: write the domain with '.'"
    labels = domain.split(".")
    if "" in labels:
        return "has an empty label in its domain (a leading, trailing or doubled dot): write the domain without it"
    for label in labels:
        if not label.isascii():
            import idna  # here, not at the top: only a non-ASCII domain needs it

            try:
                idna.encode(ascii_lower(label))  # IDNA2008, no UTS 46 mapping; A-Z is folded anyway
            except idna.IDNAError:
                return ("has a domain label that is not a valid internationalized label (IDNA2008: no upper-case or "
                        "full-width letters, no dot but '.'): write the domain as it is registered")
    return None


def utf16_units(text: str) -> int:
    """The length Table Storage counts: UTF-16 code units (an astral character is two)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def key_problem(key: str) -> str | None:
    """Why Table Storage would refuse `key` (a table_key) for its length, as email_problem says it."""
    units = utf16_units(key)
    if units > MAX_KEY_UNITS:
        return f"makes a table key of {units} UTF-16 units (each / \\ # ? % takes three), over the " \
               f"{MAX_KEY_UNITS} Table Storage keeps"
    return None


def canonical_email(raw: str) -> str:
    """The address as an account stores it and the session token carries it: `raw` with ASCII `A`-`Z`
    lowercased and nothing else changed (casefold and NFKC would merge distinct mailboxes: 'straße'
    and 'strasse', the Kelvin sign and 'k'). Raises MalformedEmail (403 `email_malformed`) for an
    address `email_problem` refuses. Nothing is trimmed: a caller that trims (the CLI trims ASCII
    spaces around a CSV field) does so first."""
    problem = email_problem(raw)
    if problem:
        raise MalformedEmail(f"email {problem}")
    return ascii_lower(raw)


def email_key(raw: str) -> str:
    """The `PortalAccounts` PartitionKey of an email: `canonical_email(raw)` (so it raises
    MalformedEmail for a refused address) with the characters Table keys forbid (`/ \\ # ?`, control
    characters) and `%` itself percent-encoded as UTF-8 bytes, so every address has exactly one key,
    no two addresses share one, and ASCII addresses keep the keys they had."""
    return table_key(canonical_email(raw))


def table_key(value: str) -> str:
    """A Table key for any string: the characters keys forbid, and '%', percent-encoded."""
    return _KEY_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), value)


def _unescape(key: str) -> str:
    """The address a key was made from (a key that is not our escaping is returned as it is)."""
    try:
        return re.sub(r"(?:%[0-9A-F]{2})+", lambda m: bytes.fromhex(m.group().replace("%", "")).decode("utf-8"), key)
    except UnicodeDecodeError:
        return key


def found_by_login(key: str, moved_to: str, moved_from: str, moved_to_of: Callable[[str], str]) -> bool:
    """Login's rule for a row at `key` that directory sync may be moving (shared/scim/sync.py): a row
    that says `MovedTo` counts as gone; one that says `MovedFrom` counts only once its source says
    `MovedTo` = `key` (`moved_to_of(source key)`: the source's MovedTo, '' when it has none or is not
    there; asked only then). So at every moment exactly one row of a move is found (the old row's
    single write is the commit), and a move that stopped midway is finished by the next sync. The one
    rule of AccountStore (login, the CLI) and AccountSync."""
    if moved_to:
        return False
    return not moved_from or moved_to_of(moved_from) == key


class AccountConflict(Exception):
    """An administrative write that was refused: it would re-point a linked person to another account,
    or the row kept changing under it. The message says which account and what to do."""

    def __init__(self, message: str, existing: Account | None = None):
        super().__init__(message)
        self.existing = existing


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
    scim_id: str = ""  # the person directory sync made or adopted it for (shared/scim/sync.py sets ScimId)
    scim_object_id: str = ""  # the Entra object id it was provisioned for (SCIM_OBJECT_ID)
    key: str = ""  # the stored PartitionKey: every write goes to the row that was read
    # The stored `Enabled` when it is not a real boolean ('false', 0: what `az storage entity merge
    # Enabled=false` stores), text in quotes but unescaped (printable and log_value escape it where it
    # is shown: repr's escapes were escaped again); such an account counts as disabled.
    invalid_enabled: str | None = None
    # Directory sync's move markers (shared/scim/sync.py): the stored keys this row moves to / from.
    moved_to: str = ""
    moved_from: str = ""

    def __post_init__(self):
        if not self.key:  # made by hand, not read: the key its email gives
            self.key = email_key(self.email)

    @property
    def provisioned(self) -> bool:
        """Managed by directory sync: Entra owns its name and enabled state."""
        return bool(self.scim_id)

    @classmethod
    def from_entity(cls, entity) -> Account:
        stored = entity.get("Enabled")
        if stored is None:  # none stored (a $select of a property a row lacks answers it as null)
            stored = True
        return cls(
            email=str(entity.get("Email") or _unescape(entity["PartitionKey"])),
            kind=entity["RowKey"],
            account_id=str(entity.get("AccountId") or ""),
            display_name=str(entity.get("DisplayName") or ""),
            enabled=stored is True,  # fail closed: only a real boolean true (or none stored) enables
            linked_idp_subject=entity.get("LinkedIdpSubject") or None,
            # Another tool may store it as text: no time, as if none (the next login writes a real one).
            last_login_at=last if isinstance(last := entity.get("LastLoginAt"), datetime) else None,
            etag=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
            key=entity["PartitionKey"],
            invalid_enabled=None if isinstance(stored, bool) else _as_stored(stored)[:40],
            scim_id=str(entity.get("ScimId") or ""),
            scim_object_id=str(entity.get(SCIM_OBJECT_ID) or "").lower(),
            moved_to=str(entity.get("MovedTo") or ""),
            moved_from=str(entity.get("MovedFrom") or ""),
        )


def _as_stored(value: object) -> str:
    """A stored value as Python writes it, but text unescaped: `'false'`, `0`."""
    return f"'{value}'" if isinstance(value, str) else repr(value)


class AccountStore:
    def __init__(self, table: TableClient, people: TableClient | None = None):
        self._table = table
        # Directory sync's ScimUsers table (shared/scim/store.py: a person is row `P`/{SCIM id}, its
        # `Active` what Entra last said), read by `enable`, and by `add` and import before they make a
        # row (entra_refusal); None: not read.
        self._people = people

    def get(self, email: str, kind: str) -> Account | None:
        """The account of this kind for this email, or None; raises MalformedEmail for a refused address."""
        return self.get_by_key(email_key(email), kind)

    def get_by_key(self, key: str, kind: str) -> Account | None:
        with storage_errors():
            try:
                entity = table_row(self._table.get_entity(key, kind))
            except ResourceNotFoundError:
                return None
        return self._found(Account.from_entity(entity))  # directory sync may be moving it (found_by_login)

    def find_account(self, email: str, kind: str) -> Account:
        """The enabled account of this kind for this email; raises MalformedEmail, NoAccount or
        AccountDisabled (403)."""
        account = self.get(email, kind)
        if account is None or not account.account_id:
            raise NoAccount(f"no {kind} account for this email")
        if not account.enabled:
            _refuse_disabled(account, f"{kind} account {account.account_id} is disabled")
        if problem := account_id_problem(account.account_id):
            # A row another tool wrote (add and import refuse such an id): it would be the session
            # token's `sub`, a newline in it a forged line in the portal's logs. `check` lists it.
            raise NoAccount(f"the {kind} account's AccountId {problem}: sign-in refuses it")
        return account

    def link_and_record_login(self, account: Account, idp_sub: str, now: datetime | None = None) -> Account:
        """Links an unlinked account to this person (first login) and records the login time, writing
        only when something changed: the link once, LastLoginAt at most once per LAST_LOGIN_PRECISION
        (every login is in SignInEvents anyway). Raises IdentityMismatch (403) when the account is
        linked to someone else; the write is etag-checked, so of two people racing for one unlinked
        account only the first gets it, and a login racing an admin's change re-reads and decides again."""
        now = now or datetime.now(UTC)
        for _ in range(3):
            if other := held_by_another(account, idp_sub):
                raise IdentityMismatch(f"account {account.account_id} {other}")
            # A login time after our `now` (a racing login of the same person wrote it) is recent too.
            if account.linked_idp_subject == idp_sub and account.last_login_at is not None \
                    and now - account.last_login_at < LAST_LOGIN_PRECISION:
                return account  # linked to this person, login time recent enough: nothing to write
            patch = {"PartitionKey": account.key, "RowKey": account.kind, "LinkedIdpSubject": idp_sub,
                     "LastLoginAt": now}
            with storage_errors():
                try:
                    self._table.update_entity(patch, mode=UpdateMode.MERGE, etag=account.etag,
                                              match_condition=MatchConditions.IfNotModified)
                    account.linked_idp_subject, account.last_login_at = idp_sub, now
                    return account
                except (ResourceModifiedError, ResourceNotFoundError):
                    fresh = self.get_by_key(account.key, account.kind)
            if fresh is None or account_id_problem(fresh.account_id):  # as find_account: no usable id, no account
                raise NoAccount("account removed during login")
            if not fresh.enabled:
                _refuse_disabled(fresh, "account disabled during login")
            account = fresh
        raise IdentityMismatch("account kept changing during login")

    # Administration (tools/accounts.py). Every read-modify-write is etag-checked: a change made
    # between our read and our write (a login linking, an admin disabling) makes the write fail, and
    # it is decided again on a fresh read, so nothing another writer did is lost.
    def add(self, email: str, kind: str, account_id: str, name: str = "", enabled: bool = True,
            force: bool = False) -> Account | None:
        """Creates the account, or updates the existing one (its link and last login kept; one
        directory sync manages keeps its name and enabled state but for a disable: AccountRow.entity);
        returns the account as it was before (None when it is new). Raises MalformedEmail, and
        AccountConflict when another email's row holds this account id and kind (sharing_problem:
        never overridden by `force`; asked again after the write, which is taken back if one does:
        _hold_alone; a storage failure there is a DependencyUnavailable with `unchecked_write` set), or
        when the existing row is linked to a person and has another AccountId (that person would
        silently sign in to `account_id` from then on) unless `force`, and when a new row would make an
        account Entra took away or does not give (entra_refusal) unless `force`."""
        row = AccountRow(canonical_email(email), kind, account_id, name, enabled)
        for _ in range(WRITE_ATTEMPTS):
            existing = self._unhidden(row.key, kind)
            # Read on every attempt: a write that failed because the row moved away finds it moved.
            problem = sharing_problem(row, self.holders(account_id, kind), existing)
            if problem:
                raise AccountConflict(problem, existing)
            with storage_errors():
                try:
                    if existing is None:
                        if not force and (refused := entra_refusal(row, self.entra_record(row.key))):
                            raise AccountConflict(f"{refused}. Make it --disabled, or use --force to make it enabled "
                                                  "anyway (directory sync then leaves it alone).", None)
                        written = self._table.create_entity(row.entity())
                    elif repoints(row.account_id, existing) and not force:
                        raise AccountConflict(f"{repoint_text(existing, account_id)}. Use --force to do that, or "
                                              "unlink first so that whoever signs in next is linked.", existing)
                    else:
                        written = self._table.update_entity(row.entity(existing), mode=UpdateMode.MERGE,
                                                            etag=existing.etag,
                                                            match_condition=MatchConditions.IfNotModified)
                except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                    continue  # created, changed or removed since our read: decide again
            if gives_id(row, existing):
                try:
                    self._hold_alone(row, existing, written["etag"])
                except DependencyUnavailable as err:
                    err.unchecked_write = True  # the row is written; whether it shares its account is not known
                    raise
            return existing
        raise AccountConflict(f"the {kind} account of {row.email} kept changing; try again")

    def _hold_alone(self, row: AccountRow, before: Account | None, etag: str) -> None:
        """The check after the write (write-then-verify): another admin's add or import of this id at
        another email may have checked before our write and written after our check. Each writer reads
        the id's holders again after its own write, so of two that overlap at least one sees the other
        (at worst both yield, never both stay); one that sees another email's row takes its own write
        back (take_back) and is refused, naming that email."""
        if shared := yield_if_shared(self._table, row, before, etag, self.holders(row.account_id, row.kind),
                                     "while this add ran"):
            raise AccountConflict(shared[1], before)

    def update(self, email: str, kind: str, check: Callable[[Account], None] | None = None, **properties) -> bool:
        """Merges properties into an account (etag-checked on the row as read; nothing else in it is
        touched); False when there is no such account. `check(account)`, on each row read, may refuse
        the write (raising): what it decided on is what gets written, or the write fails and both are
        done again. Raises AccountConflict for a row login does not find because directory sync is
        moving it (see `_unhidden`)."""
        key = email_key(email)
        for _ in range(WRITE_ATTEMPTS):
            existing = self._unhidden(key, kind)
            if existing is None:
                return False
            if check is not None:
                check(existing)
            with storage_errors():
                try:
                    self._table.update_entity({"PartitionKey": key, "RowKey": kind, **properties},
                                              mode=UpdateMode.MERGE, etag=existing.etag,
                                              match_condition=MatchConditions.IfNotModified)
                    return True
                except ResourceModifiedError:
                    continue
                except ResourceNotFoundError:
                    return False
        raise AccountConflict(f"the {kind} account of {canonical_email(email)} kept changing; try again")

    def enable(self, email: str, kind: str) -> bool:
        """`update(Enabled=True)`, refused (AccountConflict) for an account directory sync manages
        whose person Entra has disabled, or is changing (PendingActive: a write of Entra's that sets
        `active` is under way, or stopped midway, and may already have written the accounts):
        directory sync writes `Enabled` only when `active` changes, so an enable here would outlast
        every later write of Entra's; Entra's own re-enable enables the account. The person is read
        after the account row, and the write is on that row's etag: an `active` change of Entra's
        always writes the row (shared/scim/sync.py), so one that lands after the read fails the write,
        and it is decided again. Disabling is never refused (the safe direction)."""
        return self.update(email, kind, check=self._refuse_enable_against_entra, Enabled=True)

    def _refuse_enable_against_entra(self, account: Account) -> None:
        if not account.provisioned or self._people is None:
            return
        with storage_errors():
            try:
                person = self._people.get_entity(SCIM_PERSON_PARTITION, account.scim_id,
                                                 select=["Active", "PendingActive"])
            except ResourceNotFoundError:
                return  # no such person (a leftover row): nothing of Entra's to outlast
        what = f"the {account.kind} account of {account.email} is managed by directory sync, and"
        if person.get("PendingActive"):
            raise AccountConflict(f"{what} a change of Entra's to the person's active state is under way: try again "
                                  "in a minute", account)
        if person.get("Active") is False:
            raise AccountConflict(f"{what} Entra has the person disabled: enable the person in Entra (or assign them "
                                  "again); its next write enables the account", account)

    def unlink(self, email: str, kind: str) -> bool:
        """Forgets the linked person, and the object id directory sync provisioned the account for (the
        next login, or directory sync's next write, binds it anew); False when there is no such account.
        A property can only be dropped by replacing the row, so the replace is etag-checked: a `disable`
        (or a login) between our read and our write is kept, never overwritten with what we read."""
        key = email_key(email)
        for _ in range(WRITE_ATTEMPTS):
            with storage_errors():
                try:
                    entity = self._table.get_entity(key, kind)
                except ResourceNotFoundError:
                    return False
                self._refuse_moving(Account.from_entity(entity))
                # A provisioned row is marked as the admin's word "the same person": directory sync then
                # gives this row's AccountId (this kind's alone) to the identity its next write names
                # (shared/scim/sync.py); a row merely unbound (an older version's) never hands one over.
                handing_over = bool(entity.get("ScimId")) and entity.get(HANDED_OVER) is not True
                if "LinkedIdpSubject" not in entity and SCIM_OBJECT_ID not in entity and not handing_over:
                    return True
                etag = entity.metadata["etag"]
                entity.pop("LinkedIdpSubject", None)
                entity.pop(SCIM_OBJECT_ID, None)
                if entity.get("ScimId"):
                    entity[HANDED_OVER] = True
                try:
                    self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                              match_condition=MatchConditions.IfNotModified)
                    return True
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue
        raise AccountConflict(f"the {kind} account of {canonical_email(email)} kept changing; try again")

    def remove(self, email: str, kind: str) -> bool:
        """Deletes the account (remove_key at its email's key)."""
        return self.remove_key(email_key(email), kind)

    def remove_key(self, key: str, kind: str) -> bool:
        """Deletes the row with this stored PartitionKey (also one whose key no address gives any more:
        see `key_problems`); False when there was none. Raises AccountConflict when the row is the old
        row of a committed move whose new row still names it (deleting it would hide the moved
        account), by email or by stored key alike. The delete is on the etag read, so a move that
        commits after the check fails it, and it is decided again."""
        for _ in range(WRITE_ATTEMPTS):
            row = _read(self._table, key, kind)
            if row is None:
                return False
            if row.moved_to:
                target = _read(self._table, row.moved_to, kind)
                if target is not None and target.moved_from == key:
                    raise AccountConflict(f"{self.move_problem(row)} (deleting this row now would hide the account "
                                          f"at {_unescape(row.moved_to)})", row)
            self._note_removed(row)
            try:
                return delete_existed(self._table, key, kind, etag=row.etag)
            except ResourceModifiedError:
                continue
        raise AccountConflict(f"the {kind} row at the stored key {key} kept changing; try again")

    def _note_removed(self, account: Account) -> None:
        """Before a provisioned row's delete: its AccountId noted on the person row (REMOVED_ACCOUNT_IDS).
        For a person whose externalId is no object id, directory sync's next write (any: a rename) made
        the row again with that id, unlinked, and the next login by the email linked it: the admin's
        "a different person" (operating.md) gave that person the account removed. Noted first, so a
        write of Entra's between the two cannot make the row again from a record without it (that write
        replaces the person row on its etag, which this changes: it starts over). The id the record
        gives "no object id" for the kind is noted too: a row an admin repointed (`accounts add
        --account-id --force`) holds another, and the next write would make that one again."""
        if self._people is None or not account.scim_id:
            return
        for _ in range(WRITE_ATTEMPTS):
            with storage_errors():
                try:
                    person = self._people.get_entity(SCIM_PERSON_PARTITION, account.scim_id,
                                                     select=[REMOVED_ACCOUNT_IDS, ACCOUNT_IDS])
                except ResourceNotFoundError:
                    return  # no such person (a leftover row): no write of Entra's makes it again
                removed = removed_account_ids(person.get(REMOVED_ACCOUNT_IDS))
                noted = removed.setdefault(account.kind, [])
                taken = [i for i in dict.fromkeys((account.account_id,
                                                   no_object_id_of(person.get(ACCOUNT_IDS), account.kind)))
                         if directory_sync_minted(i, account.scim_id, account.kind) and i not in noted]
                if not taken:
                    return
                noted += taken
                try:
                    self._people.update_entity({"PartitionKey": SCIM_PERSON_PARTITION, "RowKey": account.scim_id,
                                                REMOVED_ACCOUNT_IDS: json.dumps(removed, sort_keys=True)},
                                               mode=UpdateMode.MERGE, etag=person.metadata["etag"],
                                               match_condition=MatchConditions.IfNotModified)
                    return
                except ResourceNotFoundError:
                    return
                except ResourceModifiedError:
                    continue
        raise AccountConflict(f"directory sync's record of {account.email} kept changing; try again", account)

    def stored_accounts(self) -> dict[tuple[str, str], Account]:
        """See `stored_accounts` below."""
        return stored_accounts(self._table)

    def entra_record(self, key: str) -> EntraRecord | None:
        """Directory sync's record of the mailbox at this email key (EntraRecord), by point reads: the
        person its email pointer names, when that person still holds it, else Entra's deletion of one;
        None when directory sync has never had a person there (or its table is not there)."""
        if self._people is None:
            return None
        with storage_errors():
            try:
                pointer = self._people.get_entity(SCIM_EMAIL_PARTITION, key, select=["Id"])
                person = self._people.get_entity(SCIM_PERSON_PARTITION, str(pointer.get("Id") or "-"),
                                                 select=["EmailKey", "Kinds", "Active"])
                if person.get("EmailKey") == key:
                    return EntraRecord.of_person(person)
            except ResourceNotFoundError:
                pass  # no pointer, or one left by a person since deleted (or a write that stopped)
            try:
                return EntraRecord.of_removal(self._people.get_entity(SCIM_REMOVED_PARTITION, key))
            except ResourceNotFoundError:
                return None

    def entra_records(self) -> dict[str, EntraRecord]:
        """entra_record of every mailbox directory sync has had, by email key, in two paged scans: what
        an import checks the rows it would make against."""
        if self._people is None:
            return {}
        with storage_errors():
            try:
                records = {str(row.get("RowKey")): EntraRecord.of_removal(row) for row in self._people.query_entities(
                    "PartitionKey eq @p", parameters={"p": SCIM_REMOVED_PARTITION})}
                records.update({str(row["EmailKey"]): EntraRecord.of_person(row) for row in self._people.query_entities(
                    "PartitionKey eq @p", parameters={"p": SCIM_PERSON_PARTITION},
                    select=["EmailKey", "Kinds", "Active"]) if row.get("EmailKey")})
            except ResourceNotFoundError:  # no ScimUsers table: directory sync never ran
                return {}
        return records

    def holders(self, account_id: str, kind: str) -> list[Account]:
        """The stored rows of this kind whose AccountId is `account_id`, wherever they are (one
        filtered query: Table Storage scans for a property that is not a key, which an admin's `add`
        can afford and a login never does)."""
        return holders_of(self._table, account_id, kind)

    def import_rows(self, rows, progress=None, workers: int = 16, *, stored, force: bool = False) -> Imported:
        """See `import_rows` below."""
        return import_rows(self._table, rows, progress, workers, stored=stored, force=force)

    def list(self, kind: str | None = None) -> Iterator[Account]:
        """The rows sign-in finds (found_by_login): of a move directory sync is making, the old row until
        its commit, the copy from then on; never both, one account id at two mailboxes."""
        with storage_errors():
            query = self._table.query_entities("RowKey eq @kind", parameters={"kind": kind}) if kind \
                else self._table.list_entities()
            stored = [Account.from_entity(entity) for entity in query]  # a move's two rows: in any order
        yield from found_in_scan(stored)

    # ---- Directory sync (shared/scim/sync.py moves a provisioned account to a new email) ----
    def _found(self, account: Account, known: dict[str, str | None] | None = None, *,
               again: bool = True) -> Account | None:
        """The row login finds at this stored row's key (found_by_login), or None; a read only for a
        `MovedFrom` row whose source is not in `known` (key -> MovedTo of rows already read, None for
        one not there). A `MovedFrom` row whose source is gone is read once more, and the fresh row
        decides: a move ends by clearing MovedFrom and then deleting its source, so a reader that read
        the copy before the one and the source after the other would find neither row (RELIABILITY.md
        "never neither"). So it is `account`, or that fresh read of it."""
        gone = []

        def moved_to_of(source: str) -> str:
            if known is not None and source in known:
                moved_to = known[source]
            else:
                old = _read(self._table, source, account.kind)
                moved_to = old.moved_to if old is not None else None
            if moved_to is None:
                gone.append(source)
            return moved_to or ""
        if found_by_login(account.key, account.moved_to, account.moved_from, moved_to_of):
            return account
        fresh = _read(self._table, account.key, account.kind) if gone and again else None
        return self._found(fresh, again=False) if fresh is not None else None

    def move_problem(self, account: Account) -> str | None:
        """Why login does not find this stored row although it is there (directory sync is moving it),
        and what to do, said for an admin; None when login finds it (no marker: no read; or the copy
        of a committed move). It names the address where sign-in finds the account now, since a
        command there works at once (an urgent disable need not wait for Entra); "let Entra finish"
        only when sign-in finds it at neither address."""
        other_key = account.moved_to or account.moved_from
        if not other_key:
            return None
        other = _read(self._table, other_key, account.kind)  # the other row of the move, read once
        known = {account.key: account.moved_to, other_key: other.moved_to if other is not None else None}
        if self._found(account, known):
            return None
        if account.moved_to:
            what = (f"directory sync has moved the {account.kind} account of {account.email} to "
                    f"{_unescape(account.moved_to)} and has not finished")
        else:
            what = (f"directory sync is moving the {account.kind} account of {_unescape(account.moved_from)} "
                    f"to {account.email} and has not finished")
        if other is not None and self._found(other, known):
            return f"{what}; sign-in finds it at {other.email}, not here: run the command on {other.email}"
        return f"{what}; sign-in finds it at neither address now: {MOVE_ADVICE}"

    def _refuse_moving(self, account: Account) -> None:
        problem = self.move_problem(account)
        if problem:
            raise AccountConflict(problem, account)

    def _unhidden(self, key: str, kind: str) -> Account | None:
        """The stored row as an administrative write sees it: None when there is none; AccountConflict
        when login does not find it because directory sync is moving it (writing it would report a
        change no sign-in sees, or fight the move)."""
        account = _read(self._table, key, kind)
        if account is None:
            return None
        found = self._found(account)  # no marker: no read; a move that just ended: the row as it is now
        if found is None:
            self._refuse_moving(account)
        return found or account

    def key_problems(self) -> Iterator[tuple[Account, str, str]]:
        """Stored rows that the email-key rule does not find as they are: (account, problem, what).
        "refused": the stored address is one the rule refuses, so no login can reach the row; "key": the
        row's key is not its address's key (written by another tool, or by a rule that folded more);
        "review": a non-ASCII address, which the old rule had case-folded (a directory that says
        'Ärzte@' no longer finds 'ärzte@'); "kind": a RowKey that is not a kind, "no-id": no AccountId
        (both written by another tool: no login finds them); "enabled": `Enabled` is not a real
        boolean, so the account counts as disabled; "moving": a row login does not find because
        directory sync is moving it (move_problem); "shared": an account id rows at two or more
        addresses hold (two admin writers at once, or an import stopped before its end check); "entra": an
        enabled account made by hand at a mailbox directory sync provisions that Entra took away or does
        not give (entra_refusal: made before `add` and import refused it, or with --force)."""
        with storage_errors():
            stored = [Account.from_entity(entity) for entity in self._table.list_entities()]
        entra = self.entra_records()
        for account in stored:
            if stuck := unaddressable(account.key, account.kind):
                yield account, "unaddressable", stuck
                continue
            if moving := self.move_problem(account):
                yield account, "moving", moving
                continue
            problem = email_problem(account.email)
            if problem:
                yield account, "refused", f"the address {problem}"
            elif (expected := email_key(account.email)) != account.key:
                yield account, "key", f"its key is not the address's key {expected}"
            elif not account.email.isascii() and not account.provisioned:  # directory sync's own spelling
                yield account, "review", "non-ASCII: the old rule case-folded it; is it the address as the " \
                                         "directory sends it?"
            if account.kind not in KINDS:
                yield account, "kind", f"its kind '{account.kind}' is not user or agent"
            elif not account.account_id:
                yield account, "no-id", "it has no AccountId: sign-in refuses it"
            elif problem := account_id_problem(account.account_id):
                yield account, "bad-id", f"its AccountId {problem}: sign-in refuses it"
            if account.invalid_enabled is not None:
                yield account, "enabled", f"Enabled is {account.invalid_enabled}, not a boolean: counts as disabled"
            elif account.kind in KINDS and not account.provisioned and \
                    (refused := entra_refusal(account, entra.get(account.key))):
                yield account, "entra", refused
        yield from self._shared(stored)

    def _shared(self, stored: list[Account]) -> Iterator[tuple[Account, str, str]]:
        """key_problems' "shared": each row of an (AccountId, kind) that rows at two or more keys sign-in
        reaches hold (login_reaches, found_by_login: the other row of a move does not count), decided on
        the scan, then read again (a move under way while the scan ran can look like two holders)."""
        found = [a for a in found_in_scan(stored) if a.account_id and a.kind in KINDS and login_reaches(a.key)]
        for (account_id, kind), held in by_account_id(found).items():
            if len(held) < 2:
                continue
            again = [now for a in held if (now := _read(self._table, a.key, kind)) is not None
                     and now.account_id == account_id and self._found(now) is not None]
            if len(again) < 2:
                continue
            # A take-back that found its old id taken leaves its row disabled (_hold_restored): still a finding.
            signs_in = "two mailboxes sign in to it" if sum(a.enabled for a in again) > 1 else \
                "two mailboxes hold it (a disabled one signs in once enabled)"
            for account in again:
                also = ", ".join(sorted(other.email for other in again if other is not account))
                yield account, "shared", f"its account id is also held at {also}: {signs_in}"


def found_in_scan(stored: list[Account]) -> list[Account]:
    """The rows of a scan sign-in finds (found_by_login, each move's source read from the scan itself, a
    move's two rows being of one kind): of a move directory sync is making, the old row until its commit,
    the copy from then on; never both."""
    moved_to = {(a.key, a.kind): a.moved_to for a in stored}
    return [a for a in stored if found_by_login(a.key, a.moved_to, a.moved_from,
                                                lambda source, kind=a.kind: moved_to.get((source, kind)) or "")]


def holders_of(table: TableClient, account_id: str, kind: str) -> list[Account]:
    """AccountStore.holders: the stored rows of this kind whose AccountId is `account_id`."""
    with storage_errors():
        return [Account.from_entity(e) for e in table.query_entities(
            "RowKey eq @kind and AccountId eq @id", parameters={"kind": kind, "id": account_id}, select=STORED_FIELDS)]


def unaddressable(key: str, kind: str) -> str | None:
    """Why no request can name the row at (`key`, `kind`), None when one can: a lone surrogate, which
    another tool can POST in a row's JSON (Azurite keeps it) but no request URL (UTF-8) can carry, so
    the row can never be read, changed or removed by its key, nor found by a sign-in."""
    for what, value in (("key", key), ("kind", kind)):
        if surrogate := next((c for c in value if unicodedata.category(c) == "Cs"), None):
            return f"its stored {what} holds a lone surrogate (U+{ord(surrogate):04X})"
    return None


def printable(text: str) -> str:
    """`text` with every unprintable character (controls, format characters, separators but the space,
    lone surrogates) and the backslash escaped as \\xNN, \\uNNNN or \\UNNNNNNNN: safe to print on a
    terminal, and exact (see `unprintable`), so a shown key can be typed back."""
    def one(c: str) -> str:
        if c != "\\" and c.isprintable():
            return c
        o = ord(c)
        return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"
    return "".join(map(one, text))


def unprintable(text: str) -> str:
    """The inverse of `printable`."""
    return re.sub(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))",
                  lambda m: chr(int(next(g for g in m.groups() if g), 16)), text)


def _refuse_disabled(account: Account, detail: str) -> None:
    """Raises AccountDisabled; an `Enabled` that is not a real boolean is said in the log, since to the
    admin who wrote 'false' (or to the one who wrote 'true' as text) it must be visible why."""
    if account.invalid_enabled is not None:
        # Every value is the stored row's, which another tool may have written: escaped (log_value).
        log.warning("accounts.enabled_not_boolean kind=%s account_id=%s stored=%s: counts as disabled; "
                    "store a real boolean with portal-sso accounts enable or disable",
                    log_value(account.kind), log_value(account.account_id), log_value(account.invalid_enabled))
    disabled = AccountDisabled(detail + (" (Enabled is not a boolean)" if account.invalid_enabled else ""))
    disabled.account_id = account.account_id  # for the audit row
    raise disabled


MOVE_ADVICE = ("let Entra finish the move (its next provisioning cycle, or Provision on demand for this person), "
               "then change the account at the address sign-in finds it under")


# Bulk import (tools/accounts.py import). Rows are checked by the caller first (check_account); this
# only writes.
ENABLED_WORDS = {"": True, "true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class AccountRow:
    email: str  # canonical (canonical_email)
    kind: str
    account_id: str
    name: str = ""
    enabled: bool = True
    line: int = 0  # where it came from (a CSV line), for messages
    # What an existing row keeps as stored ("DisplayName", "Enabled"): an import file without that
    # column says nothing of it (one without `enabled` re-enabled every account `disable` had turned off).
    kept: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        return table_key(self.email)

    def entity(self, before: Account | None = None) -> dict:
        """The row to create, or to merge over `before` (the stored row). An account directory sync
        manages (`before.provisioned`) keeps Entra's name, email and enabled state: an import run
        again must not re-enable a person Entra disabled. A disable still lands (the safe direction,
        as `accounts disable`). A row created gets `name` and `enabled` whatever `kept` says."""
        keys = {"PartitionKey": self.key, "RowKey": self.kind, "AccountId": self.account_id}
        if before is not None and before.provisioned:
            return {**keys, **({} if self.enabled else {"Enabled": False})}
        given = {"Email": self.email, "DisplayName": self.name, "Enabled": self.enabled}
        return {**keys, **{name: value for name, value in given.items() if before is None or name not in self.kept}}

    def undo_entity(self, before: Account) -> dict:
        """What `entity(before)` replaced in `before`, to merge back (take_back). An `Enabled` that was
        not a boolean comes back as false: it counted as disabled, and still does."""
        written = self.entity(before)
        was = {"AccountId": before.account_id, "Email": before.email, "DisplayName": before.display_name,
               "Enabled": before.enabled}
        return {name: was.get(name, value) for name, value in written.items()}


def parse_enabled(raw: str | None) -> bool | None:
    """true/false/1/0/yes/no (any case) or empty (= true); None for anything else."""
    return ENABLED_WORDS.get((raw or "").strip().lower())


def id_form_problem(account_id: str) -> str | None:
    """Why `account_id` has a form two ids could share once a portal trims or normalizes its keys (it is
    the session token's `sub`): whitespace at either end, or not NFC. Two mailboxes never share an
    account, not even downstream."""
    for end, c in (("starts", account_id[:1]), ("ends", account_id[-1:])):
        if c and _blank(c):
            return f"{end} with whitespace ({_char(c)})"
    if not unicodedata.is_normalized("NFC", account_id):
        return NOT_NFC
    return None


def account_id_problem(account_id: str) -> str | None:
    """Why `account_id` cannot be a session token's `sub` (None: it can), said after "account_id": the
    rule `add` and `import` write by, and sign-in reads by (a row another tool wrote)."""
    if not (account_id or "").strip():
        return "is empty"
    if len(account_id) > MAX_ACCOUNT_ID_LENGTH:
        return f"is {len(account_id)} characters long, over the {MAX_ACCOUNT_ID_LENGTH} a session token's sub may have"
    if problem := text_problem(account_id) or id_form_problem(account_id):  # the token's `sub`, and log text
        return f"'{printable(account_id)}' is refused: it {problem}"
    return None


def held_by_another(account: Account, idp_sub: str) -> str | None:
    """Why `account` is another person's than the one signing in as `idp_sub` (None: it may be theirs):
    linked to another identity, or, not linked yet, provisioned for another Entra object id."""
    if account.linked_idp_subject and account.linked_idp_subject != idp_sub:
        return "is linked to another idp_sub"
    if not account.linked_idp_subject and account.scim_object_id and object_id_in(idp_sub) != account.scim_object_id:
        return "is provisioned for another object id"
    return None


def check_account(email: str, kind: str, account_id: str, name: str = "") -> list[str]:
    """What is wrong with these values (empty when nothing): the rules `add` and `import` share, so
    that nothing storage would refuse is found only once rows are being written."""
    problems = []
    problem = email_problem(email)
    if problem:
        problems.append(f"email '{printable(str(email or ''))}' is refused: it {problem}")
    if kind not in KINDS:
        problems.append(f"kind {kind!r} must be user or agent")
    if problem := account_id_problem(account_id):
        problems.append(f"account_id {problem}")
    if problem := name_problem(name or ""):
        problems.append(f"name '{printable(name)}' is refused: it {problem}")
    elif len(name or "") > MAX_SHOWN_NAME:  # the rule of every name the portal shows (shown_name_problem)
        problems.append(f"name is {len(name)} characters long, over the {MAX_SHOWN_NAME} a session token's name "
                        "may hold")
    return problems


def repoints(account_id: str, before: Account | None) -> bool:
    """Writing `account_id` over `before` would sign the person it belongs to in to another account id:
    the one linked to it, or (several ALLOWED_TENANT_IDS: directory sync cannot link) the object id it
    was provisioned for, whose first login links it."""
    return before is not None and bool(bound_to(before)) and before.account_id != account_id


def bound_to(account: Account) -> str:
    """Who `account` belongs to, said for an admin; empty when no one yet (the next login by the email
    links it)."""
    if account.linked_idp_subject:
        return f"linked to {account.linked_idp_subject}"
    return f"provisioned for the Entra object id {account.scim_object_id}" if account.scim_object_id else ""


def repoint_text(before: Account, account_id: str) -> str:
    return (f"the {before.kind} account of {before.email} is {before.account_id}, {bound_to(before)}: making it "
            f"{account_id} would sign that person in to {account_id}")


def refusal_text(before: Account | None, row: AccountRow) -> str:
    """Why an import did not write `row` over `before`, the row as read again (_import_partition)."""
    if before is None:
        return (f"the {row.kind} account of {row.email} was removed during the import (directory sync may have moved "
                "it to another email, or an admin removed it): not made again; import again to decide it afresh")
    if before.moved_to:
        moved = _unescape(before.moved_to)  # the commit just landed: its copy is what sign-in finds
        return (f"directory sync moved the {before.kind} account of {before.email} to {moved} during the import; "
                f"sign-in finds it at {moved}, not here: write it under {moved}")
    return repoint_text(before, row.account_id)


def login_reaches(key: str) -> bool:
    """Whether a sign-in can ever read the row at `key`: some address's key is `key` (not so for the
    rows `check` calls `refused` or `key`)."""
    address = _unescape(key)
    return email_problem(address) is None and email_key(address) == key


@dataclass(frozen=True)
class EntraRecord:
    """What directory sync last heard from Entra about a mailbox: the kinds its person's app roles give
    and whether Entra has them active, or when Entra deleted the person who held it."""

    kinds: frozenset[str] = frozenset()
    active: bool = True
    removed_at: datetime | None = None

    @classmethod
    def of_person(cls, row) -> EntraRecord:
        return cls(kinds=frozenset(str(row.get("Kinds") or "").split()), active=row.get("Active") is not False)

    @classmethod
    def of_removal(cls, row) -> EntraRecord:
        removed_at = row.get("RemovedAt")
        return cls(removed_at=removed_at if isinstance(removed_at, datetime) else datetime.min.replace(tzinfo=UTC))


def entra_refusal(row: AccountRow | Account, record: EntraRecord | None) -> str | None:
    """Why `row` should not be made by hand (None when nothing says so): Entra provisions its mailbox
    (directory sync), and has taken that account away or never given it. Made by hand and enabled, it
    would be a CLI account directory sync leaves alone (SPEC): no later change in Entra would disable or
    remove it, and the unassigned person, or the mailbox's next holder, would sign in to it. A disabled
    row lets no one in: an admin may make one to give the person an AccountId of their own, which
    directory sync adopts once Entra gives the kind, enabling it as Entra has the person."""
    if record is None or not row.enabled:
        return None
    email, kind = row.email, row.kind
    what = f"Entra provisions {email} (directory sync)"
    if record.removed_at is not None:
        return (f"{what} and deleted its person on {record.removed_at:%Y-%m-%d}: directory sync removed their "
                f"accounts, and a {kind} account made by hand would let the mailbox's next holder in")
    if not record.active:
        return f"{what} and has its person disabled: a {kind} account made by hand would let them in"
    if kind not in record.kinds:
        return (f"{what} and gives its person no {kind} account (no {KIND_ROLES[kind]} app role): assign the "
                "role in Entra and directory sync makes the account")
    return None


def sharing_problem(row: AccountRow, holders: Iterable[Account], before: Account | None) -> str | None:
    """Why writing `row` would give a second mailbox an account (SPEC: two mailboxes never share one),
    None when it would not. `holders`: the stored rows of row's AccountId and kind; `before`: the
    stored row at row's key. One at another key holds it (directory sync moved it there when Entra
    changed the email, say: made again at the old email, unlinked, it would sign in whoever has that
    mailbox now); the other row of that account's own move between the two keys, and a row no
    sign-in reaches, do not count. Directory sync's ids (scim-{kind}-...) are the provisioned
    person's even while no row holds them. When `before` already holds the id too (written before: two
    writers at once, or an import stopped before its end check), it says so and to remove one of the
    two. `--force` never overrides this (a security property)."""
    if problem := held_elsewhere(row, holders):
        if before is not None and before.account_id == row.account_id and login_reaches(row.key):
            held = _other_holder(row, holders)  # written before: two writers at once, or an import cut short
            return (f"account id {row.account_id} is already held by both {row.email} and {held.email} (written at "
                    f"both before: two writers at once, or an import stopped before its end check), so two mailboxes "
                    f"sign in to it: remove one of the two (`remove EMAIL --kind {row.kind}`)")
        return problem
    if row.account_id.startswith(DIRECTORY_SYNC_ID_PREFIXES) and gives_id(row, before):
        return (f"account id {row.account_id} has the form of directory sync's own (scim-{{kind}}-{{SCIM id}}), which "
                "stay the provisioned person's and come back with that person's email: choose another")
    return None


def held_elsewhere(row: AccountRow, holders: Iterable[Account]) -> str | None:
    """sharing_problem's first rule alone: why a row of `holders` (the stored rows of row's AccountId
    and kind) at another key holds row's account, None when none does. Also the check after a write
    (`add`, an import's end), when row's own row is among the holders."""
    held = _other_holder(row, holders)
    if held is None:
        return None
    moving = held.moved_to or held.moved_from
    where = f", which directory sync is moving to or from {_unescape(moving)}" if moving else ""
    advice = (f"directory sync manages it, and moves it when Entra changes the person's email: write it under "
              f"{held.email}, or leave this row out") if held.provisioned else \
        f"to give it to {row.email} instead, remove it at {held.email} first"
    return (f"account id {row.account_id} is the {held.kind} account of {held.email}{where}: writing it "
            f"under {row.email} would let a second mailbox sign in to it ({advice})")


def _other_holder(row: AccountRow, holders: Iterable[Account]) -> Account | None:
    """The row of `holders` at another key that holds row's account (the one not mid-move, if any):
    the other row of that account's own move, and a row no sign-in reaches, do not count."""
    others = [held for held in holders if held.key != row.key and row.key not in (held.moved_to, held.moved_from)
              and login_reaches(held.key)]
    return min(others, key=lambda a: bool(a.moved_to or a.moved_from)) if others else None


def gives_id(row: AccountRow, before: Account | None) -> bool:
    """Writing `row` over `before` (None: no row) makes its key a new holder of row's AccountId: only
    such a write can make two mailboxes share an account, and only it is checked again after it lands."""
    return before is None or before.account_id != row.account_id


def take_back(table: TableClient, row: AccountRow, before: Account | None, etag: str) -> tuple[bool, str]:
    """Undoes our own write of `row` over `before` (None: we created the row), found to share its
    account after it landed: deletes the row we created, or merges back what our write replaced, on
    the condition that the row is as our write left it (`etag`). A row changed since (a login linked
    it, an admin disabled or renamed it) is read again: if it still holds row's AccountId, a created
    row is deleted, and of an updated one each field our write set that still holds what it set is
    merged back (so the later change is kept, and nothing of our write stays but what another writer
    wrote over), but for an `Enabled` true: a changed row is never enabled again (our write's disable
    and another's, an admin's or Entra's, look alike; a disable is the safe direction), and that is
    said. A row directory sync took over since (it adopted it for a provisioned person, or is moving
    it) is that person's account now: never deleted nor reverted. A merge back gives the row its old
    account id again, so it is checked again after it (_hold_restored). (True, what to add to the
    message) when the row no longer holds row's AccountId; else (False, why our write stays)."""
    written = row.entity(before) if before is not None else None
    undo = full_undo = row.undo_entity(before) if before is not None else None
    left_disabled = False
    for _ in range(WRITE_ATTEMPTS):
        with storage_errors():
            try:
                if undo is None:
                    if not delete_existed(table, row.key, row.kind, etag=etag):
                        return _carried_away(table, row)  # gone before our delete
                    return True, ""
                etag = table.update_entity(undo, mode=UpdateMode.MERGE, etag=etag,
                                           match_condition=MatchConditions.IfNotModified)["etag"]
                break
            except ResourceNotFoundError:
                return _carried_away(table, row)
            except ResourceModifiedError:
                pass
            try:
                now = table.get_entity(row.key, row.kind)
            except ResourceNotFoundError:
                return _carried_away(table, row)
        if now.get("AccountId") != row.account_id:
            return _carried_away(table, row)
        if taken := _taken_over(Account.from_entity(now), before):
            return False, taken
        etag = now.metadata["etag"]
        if written is not None:
            undo = {name: value for name, value in full_undo.items()
                    if name in ("PartitionKey", "RowKey") or _same(now.get(name), written[name])}
            if left_disabled := undo.get("Enabled") is True and now.get("Enabled") is not True:
                del undo["Enabled"]
    else:
        return False, "kept changing while it was being taken back"
    kept = (f"; the row was changed meanwhile, so it was left disabled rather than enabled again: `accounts enable "
            f"{row.email} --kind {row.kind}` if it should be enabled") if left_disabled else ""
    return True, kept + _hold_restored(table, replace(row, account_id=before.account_id), etag)


def _hold_restored(table: TableClient, back: AccountRow, etag: str) -> str:
    """The check after a take-back's merge (`etag`: what it left) that gave the row at back's key its
    old account id, back's, again: another email's add or import of that id may have passed its own
    check while our write had moved the id off this row. If one holds it, the row is disabled (kept,
    id, name and link and all, so nothing is lost, but no second mailbox signs in to the account), and
    what to add to the message says so; "" when none does (or the row no longer holds the id)."""
    if not back.account_id or (held := _other_holder(back, holders_of(table, back.account_id, back.kind))) is None:
        return ""
    taken = f"; but {held.email} took its old account id {back.account_id} meanwhile, so the row at {back.email}, " \
            f"which holds {back.account_id} again,"
    for _ in range(WRITE_ATTEMPTS):
        with storage_errors():
            try:
                table.update_entity({"PartitionKey": back.key, "RowKey": back.kind, "Enabled": False},
                                    mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified)
                return (f"{taken} was disabled (no second mailbox signs in to the account): remove one of the two, "
                        f"then `accounts enable {back.email} --kind {back.kind}` if {back.email} keeps it")
            except ResourceNotFoundError:
                return ""  # removed since: it holds nothing
            except ResourceModifiedError:
                try:
                    now = table.get_entity(back.key, back.kind)
                except ResourceNotFoundError:
                    return ""
        if now.get("AccountId") != back.account_id:
            return ""  # given another id since: it no longer shares this one
        etag = now.metadata["etag"]
    return f"{taken} kept changing while it was being disabled: remove one of the two"


def _carried_away(table: TableClient, row: AccountRow) -> tuple[bool, str]:
    """After our write's row was found gone or holding another id (an admin removed or changed it, or
    directory sync moved it to another email, account id and all): (True, "") when our write no longer
    stands, else (False, why it does). One query of the id's holders, only on this path: two or more
    other keys sign-in reaches that hold it mean a move carried it away."""
    held = sorted(a.email for a in holders_of(table, row.account_id, row.kind)
                  if a.key != row.key and not a.moved_to and login_reaches(a.key))
    if len(held) < 2:
        return True, ""
    return False, (f"was moved or changed while it was being taken back, and {' and '.join(held)} now hold the "
                   "account id (directory sync may have moved the row, account id and all, to another email)")


def _taken_over(now: Account, before: Account | None) -> str | None:
    """Why directory sync has made the row `now` its own since our write over `before` (None: we
    created it), None when it has not: a ScimId it did not have (adopted for a provisioned person), or
    a move marker it did not have (directory sync is moving it to or from another email)."""
    was = (before.scim_id, before.moved_to, before.moved_from) if before is not None else ("", "", "")
    if now.scim_id != was[0]:
        return "was adopted by directory sync for a provisioned person while it was being taken back (it is " \
               "that person's account now, so it was left as it is)"
    if (now.moved_to, now.moved_from) != was[1:]:
        moving = _unescape(now.moved_to or now.moved_from)
        return f"is being moved by directory sync to or from {moving} (so it was left as it is)"
    return None


def _same(stored, value) -> bool:
    """A stored property still holds `value`, type and all (`1 == True` in Python; not in a row)."""
    return type(stored) is type(value) and stored == value


def yield_if_shared(table: TableClient, row: AccountRow, before: Account | None, etag: str,
                    holders: Iterable[Account], during: str) -> tuple[bool, str] | None:
    """The check after a write of `row` over `before` that left `etag` (write-then-verify): None when
    no other email's row among `holders` (row's id and kind, read after the write) holds the account;
    else our write is taken back (take_back) and (taken back?, why) says what became of it: a write
    that stays says "written, but" and to remove one of the two."""
    problem = held_elsewhere(row, holders)
    if problem is None:
        return None
    taken_back, said = take_back(table, row, before, etag)
    if taken_back:
        return True, f"{problem}; that row was written {during}, so this write was taken back{said}"
    return False, (f"written, but {problem}; that row was written {during}, and this write's row at {row.email} "
                   f"{said}: remove one of the two")


def by_account_id(accounts: Iterable[Account]) -> dict[tuple[str, str], list[Account]]:
    """Stored rows by (AccountId, kind): the holders of each account, from one scan."""
    holders: dict[tuple[str, str], list[Account]] = {}
    for account in accounts:
        holders.setdefault((account.account_id, account.kind), []).append(account)
    return holders


def sharing_problems(rows: Iterable[AccountRow], stored: dict[tuple[str, str], Account]
                     ) -> list[tuple[AccountRow, str]]:
    """sharing_problem for each row against an import's scan (stored_accounts): (row, why)."""
    holders = by_account_id(stored.values())
    return [(row, problem) for row in rows if (problem := sharing_problem(
        row, holders.get((row.account_id, row.kind), ()), stored.get((row.key, row.kind))))]


@dataclass
class Imported:
    written: int = 0
    # Rows not written: (row, why). Checked up front by the caller, so only what changed during the
    # import: a stored row that became linked to a person under another account id (a login), moved
    # or removed, or that kept changing; or one whose account id another email took meanwhile (its
    # write taken back: _hold_alone).
    refused: list[tuple[AccountRow, str]] = field(default_factory=list)
    # Rows written that share their account with another email's, and kept changing while being taken
    # back: (row, why). Still stored: for the admin to remove.
    stuck: list[tuple[AccountRow, str]] = field(default_factory=list)
    # Rows written that made their key a new holder of their account id (gives_id): (row, the row as
    # it was before, the etag our write left), checked again once every row is written.
    gave: list[tuple[AccountRow, Account | None, str]] = field(default_factory=list)


def _read(table: TableClient, key: str, kind: str) -> Account | None:
    with storage_errors():
        try:
            return Account.from_entity(table.get_entity(key, kind))
        except ResourceNotFoundError:
            return None


def _write_partition(table: TableClient, rows: list[AccountRow], known: dict[tuple[str, str], Account | None]
                     ) -> list[str]:
    """One email's rows (a user and an agent row at most): created where none was stored, else merged
    (link and last login kept) on the condition that the row is still as it was read. Returns the
    etag each row was left with, in order."""
    ops = [("create", row.entity(), {}) if (before := known[(row.key, row.kind)]) is None else
           ("update", row.entity(before), {"mode": UpdateMode.MERGE, "etag": before.etag,
                                           "match_condition": MatchConditions.IfNotModified})
           for row in rows]
    if len(ops) > 1:
        return [done["etag"] for done in table.submit_transaction(ops)]
    if ops[0][0] == "create":
        return [table.create_entity(ops[0][1])["etag"]]
    return [table.update_entity(ops[0][1], **ops[0][2])["etag"]]


def _import_partition(table: TableClient, rows: list[AccountRow], stored: dict[tuple[str, str], Account],
                      force: bool) -> Imported:
    """Writes one partition's rows, etag-checked against what was stored when the import began; a row
    changed since (a login linked it, an admin disabled it) is read again and decided again; rows that
    keep changing (WRITE_ATTEMPTS) are refused."""
    known = {(row.key, row.kind): stored.get((row.key, row.kind)) for row in rows}
    scanned = {key for key, before in known.items() if before is not None}
    for _ in range(WRITE_ATTEMPTS):
        # A row directory sync moved away since the scan (login no longer finds it) is never written,
        # nor made again once gone: its AccountId may be another email's now (sharing_problem).
        refused = [(row, refusal_text(before, row)) for row in rows
                   if ((before := known[(row.key, row.kind)]) is None and (row.key, row.kind) in scanned)
                   or (before is not None and (before.moved_to or (not force and repoints(row.account_id, before))))]
        todo = [row for row in rows if all(row is not r for r, _ in refused)]
        if not todo:
            return Imported(0, refused)
        with storage_errors():
            try:
                etags = _write_partition(table, todo, known)
                gave = [(row, before, etag) for row, etag in zip(todo, etags, strict=True)
                        if gives_id(row, before := known[(row.key, row.kind)])]
                return Imported(len(todo), refused, gave=gave)
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError, TableTransactionError):
                pass  # changed since it was read: read it again
        known = {(row.key, row.kind): _read(table, row.key, row.kind) for row in rows}
    # Refused, not raised: raised, it cancelled every partition not yet written, and the import could
    # not say which rows were written. The other emails' rows are written as usual.
    why = f"the accounts of {rows[0].email} kept changing during the import ({WRITE_ATTEMPTS} tries); import again"
    return Imported(0, refused + [(row, why) for row in todo])


def _hold_alone(table: TableClient, result: Imported) -> None:
    """The import's check after its writes (AccountStore._hold_alone's, for many rows): another admin's
    add or import of one of its account ids at another email may have checked before our write and
    written after our check. Once every row is written, one scan (not a query per row) finds the rows
    of ours that now share their account with another email's; each is taken back (take_back) and
    refused, naming that email. Of two writers that overlap at least one sees the other."""
    if not result.gave:
        return  # no row made its key a new holder of its id: nothing it wrote can share an account
    holders = by_account_id(stored_accounts(table).values())
    for row, before, etag in result.gave:
        shared = yield_if_shared(table, row, before, etag, holders.get((row.account_id, row.kind), ()),
                                 "during the import")
        if shared is None:
            continue
        taken_back, why = shared
        if taken_back:
            result.written -= 1
            result.refused.append((row, why))
        else:
            result.stuck.append((row, why))


def stored_accounts(table: TableClient) -> dict[tuple[str, str], Account]:
    """Every stored row's key, kind, account id, link, move markers, whether directory sync manages it,
    and etag, in one paged scan (1000 rows a request): what an import checks its rows against before
    it writes any."""
    with storage_errors():
        return {(a.key, a.kind): a for a in map(Account.from_entity, table.list_entities(select=STORED_FIELDS))}


def import_rows(table: TableClient, rows: list[AccountRow], progress: Callable[[int], None] | None = None,
                workers: int = 16, *, stored: dict[tuple[str, str], Account], force: bool = False) -> Imported:
    """Writes every row, etag-checked against `stored` (stored_accounts(), which the caller read to
    check the rows first: tools/accounts.py cmd_import refuses, against it, a row that would share an
    account with another email, sharing_problems, and one that would re-point a linked person to another
    account id unless `force`). A row that became so during the import, or kept changing, comes back in
    `refused`, unwritten,
    and so does one whose account id another email took during the import (checked again once every row is
    written: _hold_alone; taken back), or in `stuck` where it could not be taken back.
    Each email is its own partition, so a transaction can only group one email's user and agent rows: the
    speed comes from `workers` requests in flight at once. `progress(n)` is called (on this thread) as each
    n rows land. Raises DependencyUnavailable on the first storage failure, after the requests in flight
    end, its `imported` what the import got to (the rows written and refused until then); rows written
    stay (an import is idempotent, so running it again finishes it)."""
    result, counted = Imported(), set()
    partitions: dict[str, list[AccountRow]] = {}
    for row in rows:
        partitions.setdefault(row.key, []).append(row)

    def count(done) -> None:
        part = done.result()
        counted.add(done)
        result.written += part.written
        result.refused += part.refused
        result.gave += part.gave
        if progress:
            progress(part.written + len(part.refused))
    pending = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="import") as pool:
            pending = [pool.submit(_import_partition, table, group, stored, force) for group in partitions.values()]
            try:
                for done in as_completed(pending):
                    count(done)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        _hold_alone(table, result)
    except DependencyUnavailable as err:
        for future in pending:  # the pool has ended: each partition that was not cancelled has finished
            if future not in counted and not future.cancelled() and future.exception() is None:
                count(future)
        err.imported = result
        raise
    return result
