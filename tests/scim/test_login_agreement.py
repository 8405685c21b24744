"""Provisioning and login agree, end to end: accounts made and changed over SCIM, then real logins
through MSAL and the hostile IdP (an Entra-shaped IdP whose tokens the test scripts; tenant and object
id as Entra's), through tools.host, against Azurite."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import APP_BASE, PORTAL_URLS
from tests.scim import entra
from tests.scim.conftest import TOKEN, Scim, unique
from tests.support.hostile_flow import PORTAL_ORIGIN, Person, begin, post_callback, switch_to
from tests.support.hostile_idp import TENANT
from tests.support.portal import assert_error_page, delivered, verify_session_token


@pytest.fixture
def app(hostile, use_settings):
    hostile.reset()
    return switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN)


@pytest.fixture
def scim(app) -> Scim:
    return Scim(app)


def provision(scim: Scim, kinds=("user",), email: str | None = None) -> tuple[dict, Person]:
    object_id = str(uuid.uuid4())
    email = email or f"{unique('sync')}@contoso.test"
    response = scim.post("/Users", entra.create_user(email, email, object_id, kinds=kinds))
    assert response.status_code == 201, response.text
    user = response.json()
    return user, Person(email=email, oid=object_id, account_id="")


def login(hostile, person: Person, kind: str, **claims):
    hostile.answer(claims={**person.claims, **claims})
    session, fields = begin(hostile, kind)
    return post_callback(session, fields, kind)


def signed_in_as(response, kind: str) -> dict:
    assert response.status_code == 200, f"{response.status_code} {response.text[:600]}"
    action, fields = delivered(response)
    assert action == PORTAL_URLS[kind]
    return verify_session_token(fields["session_token"], APP_BASE, audience=PORTAL_ORIGIN)


def test_an_agent_signs_in_at_the_agent_door_and_not_the_user_door(hostile, app, scim):
    user, person = provision(scim, kinds=("agent",))
    claims = signed_in_as(login(hostile, person, "agent"), "agent")
    assert claims["sub"] == f"scim-agent-{user['id']}" and claims["account_type"] == "agent"
    assert claims["idp_sub"] == f"{TENANT}:{person.oid}"
    assert_error_page(login(hostile, person, "user"), 403, app, "no_account")


def test_after_active_false_the_next_login_is_account_disabled(hostile, app, scim):
    user, person = provision(scim)
    signed_in_as(login(hostile, person, "user"), "user")
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code in (200, 204)
    assert_error_page(login(hostile, person, "user"), 403, app, "account_disabled")
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.enable_without_path())).status_code in (200, 204)
    signed_in_as(login(hostile, person, "user"), "user")


def test_after_an_email_change_the_new_email_signs_in_and_the_old_finds_nothing(hostile, app, scim):
    user, person = provision(scim)
    before = signed_in_as(login(hostile, person, "user"), "user")
    new_email = f"{unique('renamed')}@contoso.test"
    moved = scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new_email)))
    assert moved.status_code in (200, 204)
    after = signed_in_as(login(hostile, person, "user", email=new_email, preferred_username=new_email), "user")
    assert after["sub"] == before["sub"] == f"scim-user-{user['id']}", "AccountId kept"
    assert after["email"] == new_email
    assert_error_page(login(hostile, person, "user"), 403, app, "no_account")
    assert app.accounts.get(new_email, "user").linked_idp_subject == f"{TENANT}:{person.oid}", "link kept"


def test_a_pre_linked_account_refuses_another_object_id_before_anyone_signed_in(hostile, app, scim):
    user, person = provision(scim)
    account = app.accounts.get(person.email, "user")
    assert account.last_login_at is None and account.account_id == f"scim-user-{user['id']}", "no one signed in yet"
    intruder = str(uuid.uuid4())
    row = assert_error_page(login(hostile, person, "user", oid=intruder), 403, app, "identity_mismatch")
    assert row["IdpSubject"] == f"{TENANT}:{intruder}", "the audit row names who tried"
    signed_in_as(login(hostile, person, "user"), "user")  # the right person still gets in


def test_an_imported_account_is_adopted_with_its_account_id(hostile, app, scim):
    email = f"{unique('imported')}@contoso.test"
    app.accounts.add(email, "user", "U-IMPORTED-1", "Imported")
    _, person = provision(scim, email=email)
    assert signed_in_as(login(hostile, person, "user"), "user")["sub"] == "U-IMPORTED-1"


def test_a_role_removed_removes_that_kinds_account(hostile, app, scim):
    user, person = provision(scim, kinds=("user", "agent"))
    signed_in_as(login(hostile, person, "user"), "user")
    signed_in_as(login(hostile, person, "agent"), "agent")
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.remove_role("user"))).status_code in (200, 204)
    assert_error_page(login(hostile, person, "user"), 403, app, "no_account")
    signed_in_as(login(hostile, person, "agent"), "agent")


def test_accounts_never_provisioned_still_sign_in_after_a_whole_cycle(hostile, app, scim):
    bystander = Person(email=f"{unique('cli')}@contoso.test", oid=str(uuid.uuid4()), account_id="U-CLI-1")
    app.accounts.add(bystander.email, "user", bystander.account_id, "By hand")
    user, _ = provision(scim, kinds=("agent",), email=bystander.email)  # same email, the other kind
    for op in (entra.disable(), entra.remove_role("agent")):
        scim.patch(f"/Users/{user['id']}", entra.patch(op))
    scim.delete(f"/Users/{user['id']}")
    assert signed_in_as(login(hostile, bystander, "user"), "user")["sub"] == "U-CLI-1"
