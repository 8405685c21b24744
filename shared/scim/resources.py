"""The SCIM side of directory sync, from scim2-models: the User as the portal keeps it, and what the
discovery endpoints announce. Imported on the first SCIM request only (pydantic and lark are not
cheap to import).

The User model declares only what the portal keeps (/Schemas lists exactly that); other attributes,
the enterprise extension Entra sends and any other User extension (a custom attribute mapping's), are
accepted and dropped (the policy's `unknown=ignore`, and engine.py for a whole extension).
The policy also takes Entra's documented deviations: `"op": "Replace"`, `"active": "False"`, a
`Remove` whose value names the entries to remove, and a filtered path matching no entry (which Entra
expects to add it). A `Remove` whose value is a plain value (`"path": "name.familyName", "value":
"Lee"`), which the library refuses, is engine.py's: it removes that value where the person holds it."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator
from scim2_models import (
    URN,
    AnyExtension,
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ComplexAttribute,
    ETag,
    External,
    Filter,
    Name,
    Patch,
    Reference,
    Required,
    Resource,
    ResourceType,
    Role,
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
    Uniqueness,
)

from ..accounts import ascii_lower
from .mapping import plain_role

MAX_RESULTS = 200
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
# The User extensions a request may name without the portal keeping them (their attributes are
# dropped), `urn:ietf:params:scim:schemas:extension:{name}:2.0:User`: the enterprise one Entra sends,
# and the one a custom attribute mapping of a non-gallery app puts in Entra's every POST and PUT
# ("Provisioning a custom extension attribute to a SCIM compliant application"). Another URN is
# still refused.
USER_EXTENSION = re.compile(r"urn:ietf:params:scim:schemas:extension:[A-Za-z0-9][\w.-]{0,99}"
                            r"(?::[A-Za-z0-9][\w.-]{0,99}){0,4}:2\.0:User\Z", re.ASCII | re.IGNORECASE)


def ignored_schema(urn: str) -> bool:
    """A schema a request may name whose attributes the portal drops: the enterprise extension, or
    another extension of the User."""
    return USER_EXTENSION.match(urn) is not None
ROLES_ATTRIBUTE = {"roles", f"{USER_SCHEMA.lower()}:roles"}  # as a key of a User or a PATCH path


class Email(ComplexAttribute):
    """scim2-models' own Email holds an EmailStr, which refuses addresses the portal keeps (the
    `.test` domain of the dev stack, for one): the SPEC's email-key rule decides (mapping.email_key)."""

    value: str | None = None
    """The email address."""

    type: str | None = None
    """work, home or other."""

    primary: bool | None = None
    """The primary address."""


class User(Resource[AnyExtension]):
    __schema__ = URN(USER_SCHEMA)

    user_name: Annotated[str | None, Uniqueness.server, Required.true] = None
    """Unique identifier of the person (Entra: userPrincipalName), unique without regard to case."""

    display_name: str | None = None
    """The name shown for the person; the portal account's DisplayName."""

    name: Name | None = None
    """The person's name parts."""

    active: Annotated[bool | None, BeforeValidator(lambda value: strict_boolean(value, "active"))] = None
    """false disables every portal account of the person."""

    emails: list[Email] | None = None
    """The work one (of several, the primary), else the primary, else the first, is the accounts' email."""

    roles: list[Role] | None = None
    """App role values: Portal.User gives a user account, Portal.Agent an agent account."""


def strict_boolean(value: Any, name: str) -> Any:
    """A boolean as JSON gives it, or as Entra sends one in a PATCH (`"True"`, `"False"`, in any case);
    anything else is refused (invalidValue). pydantic's lax bool took 1, "1", "y", "yes", "on" and "t"
    for true, so any of them re-enabled a person whom Entra had disabled: only Entra's own `true`
    gives a leaver the portal back."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"{name} must be true or false, not {str(value)[:20]!r}")


def comparison_key(binding: Any, value: str) -> str:
    """What filters, PATCH value paths and uniqueness compare: the value, with only ASCII A-Z folded
    where the attribute is not caseExact. The email key's rule (SPEC), so that a filter answered by a
    scan agrees with one answered by the pointers: scim2-models' default (NFC, then str.lower) made
    the Kelvin sign equal k and 'Ä' equal 'ä', two mailboxes one person."""
    return value if binding.case_exact else ascii_lower(value)


POLICY = ScimPolicy(unknown=ScimPolicy.Unknown.ignore,
                    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
                    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
                    comparison_key=comparison_key)

BEARER = AuthenticationScheme(type=AuthenticationScheme.Type.oauthbearertoken, name="OAuth Bearer Token",
                              description="Authentication with the directory sync token (Authorization: Bearer)",
                              spec_uri=Reference[External]("https://datatracker.ietf.org/doc/html/rfc6750"),
                              primary=True)

CONFIG = ServiceProviderConfig(
    patch=Patch(supported=True),
    bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
    filter=Filter(supported=True, max_results=MAX_RESULTS),
    change_password=ChangePassword(supported=False),
    sort=Sort(supported=False),
    etag=ETag(supported=True),
    authentication_schemes=[BEARER],
)


def provider() -> ScimProvider:
    return ScimProvider(models=[User], resource_types=[ResourceType.from_resource(User)], config=CONFIG,
                        policy=POLICY)


def _plain_roles(value: Any, selecting: bool = False) -> Any:
    if isinstance(value, list):
        return [plain_role(entry, selecting) for entry in value]
    return plain_role(value, selecting)


def member(obj: dict, name: str) -> Any:
    """A member by name, in any case (as the library reads a PatchOp's `Operations` and their members)."""
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == name), None)


def plain_roles_in(payload: dict) -> dict:
    """A User, or a PatchOp's every operation (a `roles` path, or no path and a value object), with
    its roles in the plain form (plain_role); changed in place, and returned."""
    for key in [k for k in payload if isinstance(k, str) and k.lower() in ROLES_ATTRIBUTE]:
        payload[key] = _plain_roles(payload[key])
    operations = member(payload, "operations")
    for operation in operations if isinstance(operations, list) else []:
        if not isinstance(operation, dict):
            continue
        # In any case, as the library reads them: `Path`/`Value` left as written would reach it unconverted,
        # and a Remove of Entra's JSON-string role would match no role held (a 204 that removes nothing).
        path, value = member(operation, "path"), member(operation, "value")
        if path is None and isinstance(value, dict):
            plain_roles_in(value)
        elif isinstance(path, str) and path.lower() in ROLES_ATTRIBUTE:
            for key in [k for k in operation if isinstance(k, str) and k.lower() == "value"]:
                operation[key] = _plain_roles(value, str(member(operation, "op")).lower() == "remove")
    return payload
