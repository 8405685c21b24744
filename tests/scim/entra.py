"""Request bodies as Entra's provisioning service sends them, each from Microsoft's own documents:

- TUTORIAL: "Tutorial: Develop and plan provisioning for a SCIM endpoint in Microsoft Entra ID"
  (learn.microsoft.com/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups),
  section "User Operations": Create User, Get User by query, Update User [Multi-valued properties],
  Update User [Single-valued properties], Disable User, Delete User.
- KNOWN_ISSUES: "Known issues and resolutions with SCIM 2.0 protocol compliance of the Microsoft Entra
  user provisioning service" (.../application-provisioning-config-problem-scim-compatibility): `op`
  values capitalized ("Add", "Replace", "Remove"), `"active": "False"` as a string, a PATCH without
  `path` whose value is an object of attributes, filtered paths such as `emails[type eq "work"].value`.
- ROLES: "Customize user provisioning attribute-mappings for SaaS applications in Microsoft Entra ID"
  (.../customize-application-attributes), "Provisioning a role to a SCIM app": AppRoleAssignmentsComplex
  sends `roles` as `{"primary": false, "type": "WindowsAzureActiveDirectoryRole", "display", "value"}`
  entries on POST, and a PATCH `Add` of `roles` whose value entries hold a JSON string;
  AssertiveAppRoleAssignmentsComplex (what `register-app provisioning` maps, since the other "does PATCH
  add only and therefore does not remove any existing roles") sends the same POST, and a PATCH
  `"op": "replace", "path": "roles"` whose value is every role the person holds now, in the POST shape.
"""

from __future__ import annotations

import json

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
# ROLES' page, "Provisioning a custom extension attribute to a SCIM compliant application": an
# attribute the admin adds to a non-gallery app is sent under this extension schema.
CUSTOM = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
ROLE_VALUES = {"user": "Portal.User", "agent": "Portal.Agent"}


def role(kind: str) -> dict:
    """ROLES, POST shape."""
    return {"primary": False, "type": "WindowsAzureActiveDirectoryRole", "display": kind.title(),
            "value": ROLE_VALUES[kind]}


def create_user(user_name: str, email: str, external_id: str, kinds=("user",), *, given="Ann", family="Lee",
                active: bool = True) -> dict:
    """TUTORIAL "Create User" (core + enterprise schemas, externalId, emails with type work, name,
    meta.resourceType), with ROLES' `roles`."""
    return {
        "schemas": [USER, ENTERPRISE],
        "externalId": external_id,
        "userName": user_name,
        "active": active,
        "displayName": f"{given} {family}",
        "emails": [{"primary": True, "type": "work", "value": email}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": f"{given} {family}", "familyName": family, "givenName": given},
        "title": "Agent",  # an attribute the portal does not keep: accepted and dropped
        ENTERPRISE: {"department": "Contact center", "employeeNumber": "100009"},
        "roles": [role(k) for k in kinds],
    }


def by_user_name(user_name: str) -> dict:
    """TUTORIAL "Get User by query" (also what "Test connection" sends, with a random value)."""
    return {"filter": f'userName eq "{user_name}"'}


def patch(*operations: dict) -> dict:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def replace_work_email(email: str, op: str = "Replace") -> dict:
    """TUTORIAL "Update User [Multi-valued properties]": a filtered path; KNOWN_ISSUES: capitalized op."""
    return {"op": op, "path": 'emails[type eq "work"].value', "value": email}


def replace_family_name(name: str) -> dict:
    """TUTORIAL "Update User [Multi-valued properties]"."""
    return {"op": "Replace", "path": "name.familyName", "value": name}


def disable(as_string: bool = True) -> dict:
    """TUTORIAL "Disable User" (`"active": false`); KNOWN_ISSUES: Entra's `"False"` string."""
    return {"op": "Replace", "path": "active", "value": "False" if as_string else False}


def enable_without_path() -> dict:
    """KNOWN_ISSUES: a PATCH with no path and a value object (and `"True"` as a string)."""
    return {"op": "Replace", "value": {"active": "True", "displayName": "Ann Lee-Back"}}


def add_role_complex(kind: str, op: str = "Add") -> dict:
    """ROLES, PATCH shape: each value entry holds the assignment as a JSON string."""
    return {"op": op, "path": "roles", "value": [{"value": json.dumps(
        {"id": "06b07648-ecfe-589f-9d2f-6325724a46ee", "value": ROLE_VALUES[kind], "displayName": kind.title()})}]}


def remove_role(kind: str) -> dict:
    """SPEC (from KNOWN_ISSUES' Remove with a value): a Remove of roles naming the roles to remove."""
    return {"op": "Remove", "path": "roles", "value": [{"value": ROLE_VALUES[kind]}]}


def remove_with_value(path: str, value) -> dict:
    """A Remove naming, as a plain value, the value it removes: the shape Microsoft's reference SCIM
    server handles (AzureAD/SCIMReferenceCode pull request #87: `{"op":"Remove","path":
    "emails[type eq \\"work\\"].value","value":"..."}`)."""
    return {"op": "Remove", "path": path, "value": value}


def replace_roles_assertive(*kinds: str, op: str = "replace") -> dict:
    """ROLES, AssertiveAppRoleAssignmentsComplex's PATCH: a `replace` of `roles` (lowercase in ROLES'
    example; KNOWN_ISSUES: "Replace" where the compliance flag is off) listing every role the person
    holds now, each in the POST shape."""
    return {"op": op, "path": "roles", "value": [role(k) for k in kinds]}
