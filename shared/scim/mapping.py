"""What a SCIM User means for the portal: its account email (and that email's key), its kinds, its
link. Plain values in, plain values out: no SCIM library here."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from .. import accounts
from ..accounts import ascii_lower, table_key
from ..config import GUID, KIND_ROLES, KINDS

ROLE_KINDS = {role.lower(): kind for kind, role in KIND_ROLES.items()}  # Entra sends any case
MAX_USER_NAME = accounts.MAX_SHOWN_NAME  # a userName is held to a shown name's length
MAX_EXTERNAL_ID = 256


class MappingError(ValueError):
    """A value the portal cannot keep; the message names the attribute (it becomes invalidValue)."""


def email_key(raw: str, attribute: str = "emails") -> str:
    """The PortalAccounts key of an email, or MappingError when the SPEC's email-key rule refuses it:
    THE one place directory sync turns an email into its key. It is shared.accounts' own rule (the
    one login and tools.accounts use), so directory sync and login always find the same row."""
    if not isinstance(raw, str) or not raw:
        raise MappingError(f"{attribute}: empty")
    problem = accounts.email_problem(raw)
    if problem:
        raise MappingError(f"{attribute}: the address {problem}")
    return table_key(stored_email(raw))  # accounts.email_key, with MappingError for MalformedEmail


def stored_email(checked: str) -> str:
    """The email as PortalAccounts keeps it in `Email` (what `tools.accounts` writes) of an address
    email_key has accepted: accounts.canonical_email without checking it again."""
    return ascii_lower(checked)


def user_name_key(user_name: str) -> str:
    """userName is unique without regard to (ASCII) case. MappingError when the key is too long."""
    return _checked_key(table_key(ascii_lower(user_name)), "userName")


def external_id_key(external_id: str) -> str:
    """externalId's pointer key (exact: Entra's object id, or whatever the admin mapped)."""
    return _checked_key(table_key(external_id), "externalId")


def _surrogate(c: str) -> bool:
    return 0xD800 <= ord(c) <= 0xDFFF


def _checked_key(key: str, attribute: str) -> str:
    """check_text's character limit counts code points; escaped ('/' takes three), the key can still be
    longer than Table Storage keeps, which it refuses with a 400 (a 503 to Entra, which retries)."""
    problem = accounts.key_problem(key)
    if problem:
        raise MappingError(f"{attribute}: {problem}")
    if any(map(_surrogate, key)):  # a filter's `\ud800`: no Table key holds one
        raise MappingError(f"{attribute}: holds a lone surrogate (U+D800 to U+DFFF), which no key can hold")
    return key


def check_text(value: str | None, attribute: str, limit: int) -> None:
    if value is None:
        return
    if len(value) > limit:
        raise MappingError(f"{attribute}: longer than {limit} characters")
    if any(_surrogate(c) or unicodedata.category(c) == "Cc" for c in value):
        raise MappingError(f"{attribute}: holds control characters or a lone surrogate")


def given_name(display: str | None, formatted: str | None) -> tuple[str, str]:
    """The name a User gives its accounts, and the attribute that gave it: displayName, else name.formatted."""
    return (display, "displayName") if display else (formatted or "", "name.formatted")


def display_name(display: str | None, formatted: str | None, kept: str | None = None) -> str:
    """The accounts' DisplayName: displayName, else name.formatted, held to the accounts' own rule
    for a shown name (accounts.shown_name_problem) whichever it came from; MappingError
    names that attribute. A name equal to `kept` (the person's as stored, which an earlier version
    accepted) is not refused again: every later write of the person, Entra's disable included, would be."""
    name, attribute = given_name(display, formatted)
    if name != kept:
        if problem := accounts.shown_name_problem(name):
            raise MappingError(f"{attribute}: {problem}")
    return name


def chosen_email(emails: list[dict]) -> str | None:
    """The portal account's email: the `work` one (of several, the primary), else the primary, else
    the first. An Add of a new primary work email leaves the old one beside it, primary: false."""
    values = [e for e in emails or [] if e.get("value")]

    def work(e):
        return (e.get("type") or "").lower() == "work"

    def primary(e):
        return e.get("primary") is True

    for pick in (lambda e: work(e) and primary(e), work, primary, lambda e: True):
        found = next((e["value"] for e in values if pick(e)), None)
        if found is not None:
            return found
    return None


def kinds_of(roles: list[dict], default_kind: str | None) -> tuple[str, ...]:
    """Portal.User gives a user account, Portal.Agent an agent account, both give both; no portal
    role gives SCIM_DEFAULT_KIND (or nothing). Role values are compared without regard to ASCII case:
    Entra sends the app role's value as defined, and a role is not a login key."""
    kinds = {ROLE_KINDS[value] for value in map(role_value, roles or []) if value in ROLE_KINDS}
    if not kinds and default_kind:
        kinds = {default_kind}
    return tuple(k for k in KINDS if k in kinds)


def has_portal_role(roles: list[dict]) -> bool:
    return any(role_value(r) in ROLE_KINDS for r in roles or [])


def plain_role(entry: Any, selecting: bool = False) -> Any:
    """Entra's AppRoleAssignmentsComplex PATCH sends a role with its assignment as a JSON string in
    `value` ('{"id":"...","value":"Portal.Agent","displayName":"Agent"}'), its POST the plain value:
    this is the plain form ({"value", "display"}), so roles are kept and compared in one form and a
    Remove in either form removes a role added in the other. A Remove selects by value alone (the
    display stored may be another's). Anything else is returned as it came."""
    value = entry.get("value") if isinstance(entry, dict) else None
    if not isinstance(value, str):
        return entry
    if not value.lstrip().startswith("{"):
        return {"value": value} if selecting else entry
    try:
        inner = json.loads(value)
    except ValueError:
        return entry
    if not isinstance(inner, dict) or not isinstance(inner.get("value"), str):
        return entry
    plain = {"value": inner["value"]}
    if isinstance(inner.get("displayName"), str) and not selecting:
        plain["display"] = inner["displayName"]
    return plain


def role_value(role: dict) -> str:
    """A role's app role value, ASCII-lowercased, in either of Entra's forms (plain_role)."""
    value = plain_role(role).get("value") if isinstance(role, dict) else None
    return ascii_lower(value) if isinstance(value, str) else ""


def link_tenant(settings) -> str | None:
    """The tenant a GUID externalId (Entra's object id) is linked in: the issuer's own tenant, or the
    only entry of ALLOWED_TENANT_IDS for a multi-tenant issuer; None (no link until the first login)
    when that is not one tenant."""
    allowed = settings.allowed_tenant_ids or frozenset()
    if settings.multi_tenant:
        return next(iter(allowed)) if len(allowed) == 1 else None
    from ..config import issuer_tenant_segment

    segment = issuer_tenant_segment(settings.issuer_base).lower()
    return segment if GUID.match(segment) else None


def object_id_of(external_id: str | None) -> str | None:
    """Entra's object id (lowercased) when externalId is a GUID, whatever the tenant setting: the
    identity a person's accounts are provisioned for, even where no link can be made (several tenants)."""
    return external_id.lower() if external_id and GUID.match(external_id) else None


def link_of(external_id: str | None, tenant: str | None) -> str | None:
    """The LinkedIdpSubject a login of this person will carry ({tid}:{oid}, as shared/login.py forms
    it), when externalId is Entra's object id."""
    object_id = object_id_of(external_id)
    return f"{tenant}:{object_id}" if object_id and tenant else None
