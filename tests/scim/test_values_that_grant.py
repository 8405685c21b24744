"""PATCH values that would give a person what Entra never gave them: a role (and with it that kind's
account) named only by a filter, an email address named only by a filter, or `active` from a value
that is not true. Each is refused, and what Entra does send still works."""

from __future__ import annotations

import pytest

from tests.scim import entra
from tests.scim.conftest import oid, unique


def new_person(scim, kinds=("user",)):
    name = unique("grant")
    email = f"{name}@contoso.test"
    created = scim.post("/Users", entra.create_user(f"{name}@contoso.test", email, oid(), kinds=kinds))
    assert created.status_code == 201, created.text
    return created.json()["id"], email


def roles_of(scim, scim_id: str) -> list[str]:
    return [r.get("value") for r in scim.get(f"/Users/{scim_id}").json().get("roles", [])]


@pytest.mark.parametrize("operation", [
    {"op": "Replace", "path": 'roles[value eq "Portal.Agent"].display', "value": "Agent"},
    {"op": "Replace", "path": 'roles[value eq "Portal.Agent"].primary', "value": False},
    {"op": "Add", "path": 'roles[value eq "Portal.Agent"].display', "value": "Agent"},
    {"op": "Replace", "path": 'roles[value eq "Portal.Agent" and type eq "x"]', "value": {"display": "Agent"}},
    {"op": "Replace", "value": {'roles[value eq "Portal.Agent"].primary': False}},  # no path: engine.py splits it
], ids=["replace-display", "replace-primary", "add-display", "entry-without-value", "pathless-primary"])
def test_a_change_to_a_role_the_person_does_not_hold_is_no_target_and_grants_nothing(scim, operation):
    """RFC 7644 3.5.2.3: a filter matching no entry is noTarget. The policy makes such a filter add the
    entry it describes (Entra's `emails[type eq "work"].value`), which here would take the role's value
    from the filter alone: a change of a role's display or primary flag made an agent account."""
    scim_id, email = new_person(scim, kinds=("user",))
    answer = scim.patch(f"/Users/{scim_id}", entra.patch(operation))
    assert answer.status_code == 400, answer.text
    assert answer.json()["scimType"] == "noTarget"
    assert roles_of(scim, scim_id) == ["Portal.User"]
    assert scim.runtime.accounts.get(email, "agent") is None
    assert scim.runtime.accounts.get(email, "user").enabled is True


def test_an_email_named_only_by_a_filter_is_not_added_and_the_account_stays(scim):
    scim_id, email = new_person(scim)
    other = f"{unique('other')}@contoso.test"
    answer = scim.patch(f"/Users/{scim_id}", entra.patch(
        {"op": "Replace", "path": f'emails[value eq "{other}"].primary', "value": True}))
    assert answer.status_code == 400 and answer.json()["scimType"] == "noTarget", answer.text
    assert [e["value"] for e in scim.get(f"/Users/{scim_id}").json()["emails"]] == [email]
    assert scim.runtime.accounts.get(other, "user") is None
    assert scim.runtime.accounts.get(email, "user") is not None


def test_a_change_to_a_role_the_person_holds_is_made_even_after_an_add_in_the_same_patch(scim):
    """The entry must be held when the operation comes, not when the PATCH began: an Add of the role
    followed by a change of its display, in one PATCH, is two steps that both apply."""
    scim_id, email = new_person(scim, kinds=("user",))
    held = scim.patch(f"/Users/{scim_id}", entra.patch(
        {"op": "Replace", "path": 'roles[value eq "Portal.User"].display', "value": "Portal user"}))
    assert held.status_code in (200, 204), held.text
    assert [r.get("display") for r in scim.get(f"/Users/{scim_id}").json()["roles"]] == ["Portal user"]

    both = scim.patch(f"/Users/{scim_id}", entra.patch(
        {"op": "Add", "path": "roles", "value": [entra.role("agent")]},
        {"op": "Replace", "path": 'roles[value eq "Portal.Agent"].display', "value": "Portal agent"}))
    assert both.status_code in (200, 204), both.text
    roles = {r["value"]: r.get("display") for r in scim.get(f"/Users/{scim_id}").json()["roles"]}
    assert roles == {"Portal.User": "Portal user", "Portal.Agent": "Portal agent"}
    assert scim.runtime.accounts.get(email, "agent").enabled is True


def test_a_filter_that_gives_the_value_itself_still_adds_the_entry_as_entra_expects(scim):
    """`roles[primary eq "True"].value` (Entra's single-role mapping) and `emails[type eq "work"].value`
    name the entry by something else and give its value: the policy still adds what they describe."""
    scim_id, email = new_person(scim, kinds=("user",))
    answer = scim.patch(f"/Users/{scim_id}", entra.patch(
        {"op": "Replace", "path": 'roles[primary eq "True"].value', "value": "Portal.Agent"}))
    assert answer.status_code in (200, 204), answer.text
    assert "Portal.Agent" in roles_of(scim, scim_id)
    assert scim.runtime.accounts.get(email, "agent") is not None


@pytest.mark.parametrize("value", [1, "1", "y", "on", "t", "yes", "", "True ", [True], {"value": True}])
def test_active_from_a_value_that_is_not_a_boolean_is_invalid_and_a_leaver_stays_disabled(scim, value):
    """pydantic's lax bool took 1, "1", "y", "on", "t" and "yes" for true: any of them re-enabled a
    person Entra had disabled."""
    scim_id, email = new_person(scim)
    assert scim.patch(f"/Users/{scim_id}", entra.patch(entra.disable(as_string=False))).status_code in (200, 204)
    answer = scim.patch(f"/Users/{scim_id}", entra.patch({"op": "Replace", "path": "active", "value": value}))
    assert answer.status_code == 400, answer.text
    assert answer.json()["scimType"] == "invalidValue"
    assert scim.runtime.accounts.get(email, "user").enabled is False
    assert scim.get(f"/Users/{scim_id}").json()["active"] is False


def test_active_in_a_new_person_must_be_a_boolean_too(scim):
    name = unique("grant")
    body = {**entra.create_user(f"{name}@contoso.test", f"{name}@contoso.test", oid()), "active": "yes"}
    answer = scim.post("/Users", body)
    assert answer.status_code == 400, answer.text
    assert scim.runtime.accounts.get(f"{name}@contoso.test", "user") is None


@pytest.mark.parametrize("value, enabled", [(True, True), ("True", True), ("TRUE", True), ("true", True),
                                            (False, False), ("False", False), ("false", False)])
def test_active_as_json_or_as_entras_strings_in_any_case_still_works(scim, value, enabled):
    scim_id, email = new_person(scim)
    if enabled:
        assert scim.patch(f"/Users/{scim_id}", entra.patch(entra.disable())).status_code in (200, 204)
    answer = scim.patch(f"/Users/{scim_id}", entra.patch({"op": "Replace", "path": "active", "value": value}))
    assert answer.status_code in (200, 204), answer.text
    assert scim.runtime.accounts.get(email, "user").enabled is enabled
