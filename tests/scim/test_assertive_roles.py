"""Entra's AssertiveAppRoleAssignmentsComplex, the roles mapping `register-app provisioning` sets up
(tests/scim/entra.py ROLES): its PATCH replaces `roles` with the roles the person holds now, so a role
unassigned in Entra is a role missing from the list, and that kind's account goes."""

from __future__ import annotations

import pytest

from tests.scim import entra
from tests.scim.conftest import oid, unique
from tests.scim.test_entra_sequence import accounts_of


@pytest.mark.parametrize("op", ["replace", "Replace"])
def test_a_replace_of_roles_that_drops_a_role_removes_that_kinds_account(scim, op):
    name = unique("assertive")
    email = f"{name}@contoso.test"
    created = scim.post("/Users", entra.create_user(f"{name}@contoso.test", email, oid(), kinds=("user", "agent")))
    assert created.status_code == 201, created.text
    scim_id = created.json()["id"]
    agent_id = accounts_of(scim, email)["agent"].account_id
    assert set(accounts_of(scim, email)) == {"user", "agent"}

    # Portal.Agent unassigned in Entra: the replace lists Portal.User alone.
    dropped = scim.patch(f"/Users/{scim_id}", entra.patch(entra.replace_roles_assertive("user", op=op)))
    assert dropped.status_code in (200, 204), dropped.text
    assert set(accounts_of(scim, email)) == {"user"}, "the dropped role's account is gone"
    assert [r["value"] for r in scim.get(f"/Users/{scim_id}").json()["roles"]] == ["Portal.User"]

    # Swapped in one replace: the agent account is back (its AccountId too), the user account goes.
    swapped = scim.patch(f"/Users/{scim_id}", entra.patch(entra.replace_roles_assertive("agent", op=op)))
    assert swapped.status_code in (200, 204), swapped.text
    assert set(accounts_of(scim, email)) == {"agent"}
    assert accounts_of(scim, email)["agent"].account_id == agent_id

    # The same replace again (Entra's next cycle) changes nothing.
    version = scim.get(f"/Users/{scim_id}").json()["meta"]["version"]
    again = scim.patch(f"/Users/{scim_id}", entra.patch(entra.replace_roles_assertive("agent", op=op)))
    assert again.status_code in (200, 204)
    assert scim.get(f"/Users/{scim_id}").json()["meta"]["version"] == version
    assert set(accounts_of(scim, email)) == {"agent"}


def test_an_add_of_roles_never_removes_one_which_is_why_the_mapping_is_assertive(scim):
    """AppRoleAssignmentsComplex (the mapping before) sends an Add of the roles held now: an
    unassigned role is simply not in it, and the account it gave stays. The server is right to keep
    it (an Add adds); only the assertive mapping's replace can remove it."""
    name = unique("additive")
    email = f"{name}@contoso.test"
    created = scim.post("/Users", entra.create_user(f"{name}@contoso.test", email, oid(), kinds=("user", "agent")))
    assert created.status_code == 201, created.text
    scim_id = created.json()["id"]
    assert scim.patch(f"/Users/{scim_id}", entra.patch(entra.add_role_complex("user"))).status_code in (200, 204)
    assert set(accounts_of(scim, email)) == {"user", "agent"}, "an Add removes nothing"


def _capitalized(operation: dict) -> dict:
    return {name.title(): value for name, value in operation.items()}


@pytest.mark.parametrize("spelled", [dict, _capitalized], ids=["path-value", "Path-Value"])
def test_a_remove_of_a_role_in_entras_string_form_removes_it_however_its_members_are_spelled(scim, spelled):
    """Members of a PatchOp's operation are read in any case (as the library reads them): a Remove of
    a role written as Entra's JSON string under `Path`/`Value` must remove it like one under
    `path`/`value` does, not answer 204 and leave the role and its account in place."""
    name = unique("spelled")
    email = f"{name}@contoso.test"
    created = scim.post("/Users", entra.create_user(f"{name}@contoso.test", email, oid(), kinds=("user",)))
    assert created.status_code == 201, created.text
    scim_id = created.json()["id"]
    added = scim.patch(f"/Users/{scim_id}", entra.patch(spelled(entra.add_role_complex("agent"))))
    assert added.status_code in (200, 204), added.text
    assert set(accounts_of(scim, email)) == {"user", "agent"}

    removed = scim.patch(f"/Users/{scim_id}", entra.patch(spelled(entra.add_role_complex("agent", op="Remove"))))
    assert removed.status_code in (200, 204), removed.text
    assert set(accounts_of(scim, email)) == {"user"}, "the removed role's account is gone"
    assert [r["value"] for r in scim.get(f"/Users/{scim_id}").json()["roles"]] == ["Portal.User"]
