"""What a refusal tells the person and records: the audit row of an app-role refusal names the person,
and the no_account page sends no one to the other door when the account there is another person's."""

from __future__ import annotations

import uuid

import pytest

from shared.runtime import get_runtime
from tests.support.hostile_flow import new_person, sign_in, switch_to
from tests.support.portal import assert_error_page


@pytest.fixture
def app(hostile, use_settings):
    hostile.reset()
    return switch_to(hostile, use_settings)


@pytest.fixture
def roles_app(hostile, use_settings):
    hostile.reset()
    return switch_to(hostile, use_settings, APP_ROLES_REQUIRED="true")


def test_a_role_not_assigned_refusal_records_the_email_it_refused(hostile, roles_app, account_store):
    """SPEC: each SignInEvents row carries the email. The role check comes after the email's checks
    passed, yet the row said no email and no HadEmailClaim, so an admin looking a person's refusals up
    by email (operating.md "When a sign-in fails") never found this one."""
    person = new_person(account_store)
    hostile.answer(claims={**person.claims, "roles": ["Portal.Agent"]})
    row = assert_error_page(sign_in(hostile), 403, roles_app, "role_not_assigned")
    assert row.get("Email") == person.email, row
    assert row.get("HadEmailClaim") is True, row


@pytest.mark.parametrize("held", ["linked", "provisioned"])
def test_the_no_account_page_never_sends_a_person_to_another_persons_account_at_the_other_door(
        hostile, app, account_store, held):
    """The agent account of a reassigned mailbox is the previous holder's (linked to them, or provisioned
    for their object id): the user door's page told the new holder "You have a portal agent account",
    which the agent door then refused (identity_mismatch), and so told them the account exists."""
    tag = uuid.uuid4().hex[:12]
    email = f"reassigned-{tag}@contoso.test"
    account_store.add(email, "agent", f"A-{tag}", "Previous Holder")
    previous_oid = str(uuid.uuid4())
    if held == "linked":
        account_store.link_and_record_login(account_store.find_account(email, "agent"),
                                            f"{hostile.tenant}:{previous_oid}")
    else:
        account_store._table.update_entity({"PartitionKey": email, "RowKey": "agent", "ScimObjectId": previous_oid})
    hostile.answer(claims={"email": email, "oid": str(uuid.uuid4()), "name": "New Holder",
                           "preferred_username": email})
    response = sign_in(hostile, "user")
    assert_error_page(response, 403, get_runtime(), "no_account")
    assert_error_page(sign_in(hostile, "agent"), 403, get_runtime(), "identity_mismatch")
    assert "You have a portal agent account" not in response.text


def test_the_no_account_page_still_sends_the_person_to_their_own_account_at_the_other_door(
        hostile, app, account_store):
    """Their own: unlinked, or linked to them (the advice the page exists for)."""
    person = new_person(account_store, kind="agent")
    hostile.answer(claims=person.claims)
    for _ in ("unlinked", "linked to them"):
        response = sign_in(hostile, "user")
        assert_error_page(response, 403, get_runtime(), "no_account")
        assert "You have a portal agent account" in response.text
        account_store.link_and_record_login(account_store.find_account(person.email, "agent"),
                                            f"{hostile.tenant}:{person.oid}")
