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
