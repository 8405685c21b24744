"""The SCIM side of directory sync, from scim2-models: the User as the portal keeps it, and what the
discovery endpoints announce. Imported on the first SCIM request only (pydantic and lark are not
cheap to import).

The User model declares only what the portal keeps (/Schemas lists exactly that); other attributes,
and the enterprise extension Entra sends, are accepted and dropped (the policy's `unknown=ignore`).
The policy also takes Entra's documented deviations: `"op": "Replace"`, `"active": "False"`, a
`Remove` whose value names the entries to remove, and a filtered path matching no entry (which Entra
expects to add it)."""

from __future__ import annotations

from typing import Annotated

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

MAX_RESULTS = 200
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# Schemas a request may name without the portal keeping them (their attributes are dropped).
IGNORED_SCHEMAS = {ENTERPRISE_SCHEMA.lower()}


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

    active: bool | None = None
    """false disables every portal account of the person."""

    emails: list[Email] | None = None
    """The work one, else the primary, else the first, is the portal accounts' email."""

    roles: list[Role] | None = None
    """App role values: Portal.User gives a user account, Portal.Agent an agent account."""


POLICY = ScimPolicy(unknown=ScimPolicy.Unknown.ignore,
                    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
                    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create)

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
