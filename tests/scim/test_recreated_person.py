"""A person re-created in Entra (a new object id, the same userName) with a multi-tenant issuer and
several ALLOWED_TENANT_IDS, where directory sync cannot pre-link (it does not know the tenant): the
accounts provisioned for the old object id are never handed to the new one, whether the old one has
signed in (linked by its login) or not. Through tools.host against Azurite, with real logins through
MSAL and the hostile IdP (Entra-shaped tokens; the login runs single-tenant, as the hostile IdP
signs in one tenant: the row it links is what matters)."""

from __future__ import annotations

import pytest
from azure.data.tables import UpdateMode

from shared.accounts import SCIM_OBJECT_ID
from shared.tables import ACCOUNTS_TABLE, SCIM_USERS_TABLE
from tests.scim import entra
from tests.scim.conftest import TOKEN, Scim, oid, unique
from tests.scim.test_login_agreement import login, signed_in_as
from tests.scim.test_protocol import error_of
from tests.support.hostile_flow import Person, switch_to
from tests.support.hostile_idp import CLIENT_ID, CLIENT_SECRET, TENANT
from tests.support.portal import assert_error_page

OTHER_TENANT = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"


def multi_tenant(hostile, use_settings) -> Scim:
    """Directory sync under a multi-tenant issuer allowing two tenants: no tenant to link in."""
    return Scim(use_settings(SCIM_TOKEN=TOKEN, OIDC_ISSUER_URL=f"{hostile.origin}/organizations/v2.0",
                             OIDC_CLIENT_ID=CLIENT_ID, OIDC_CLIENT_SECRET=CLIENT_SECRET,
                             ALLOWED_TENANT_IDS=f"{TENANT},{OTHER_TENANT}"))


def provisioned(hostile, use_settings) -> tuple[Scim, dict, str, str]:
    """Olivia, provisioned with her object id as externalId under multi_tenant: unlinked."""
    hostile.reset()
    scim = multi_tenant(hostile, use_settings)
    email, object_id = f"{unique('olivia')}@contoso.test", oid()
    response = scim.post("/Users", entra.create_user(email, email, object_id))
    assert response.status_code == 201, response.text
    return scim, response.json(), email, object_id


def recreate_ops(new_oid: str, new_email: str | None) -> list[dict]:
    """What Entra sends the old SCIM User (found by userName) for the re-created person: the new object
    id, active, and (moving) the new person's own work mailbox."""
    ops = [{"op": "Replace", "path": "externalId", "value": new_oid},
           {"op": "Replace", "path": "active", "value": "True"}]
    return ops + ([entra.replace_work_email(new_email)] if new_email else [])


@pytest.mark.parametrize("signed_in", [False, True], ids=["never_signed_in", "linked_at_login"])
@pytest.mark.parametrize("moving", [False, True], ids=["in_place", "moving"])
def test_a_re_created_person_is_409_and_the_account_stays_the_old_identitys(hostile, use_settings, moving,
                                                                             signed_in):
    """It was a 204 that gave the new object id the account provisioned for the old one (moved to the
    new person's mailbox, or kept at the shared one), or (linked at login) changed the person row
    alone, the new identity refused at every login with nothing saying why."""
    scim, user, email, old_oid = provisioned(hostile, use_settings)
    new_oid = oid()
    accounts = scim.runtime.accounts
    assert accounts.get(email, "user").linked_idp_subject is None, "several tenants: no link until a login"
    if signed_in:
        accounts.link_and_record_login(accounts.get(email, "user"), f"{TENANT}:{old_oid}")  # as its login does
    people, rows = scim.runtime.tables.client(SCIM_USERS_TABLE), scim.runtime.tables.client(ACCOUNTS_TABLE)
    person, account_row = people.get_entity("P", user["id"]), rows.get_entity(email, "user")
    new_email = f"{unique('newhire')}@contoso.test" if moving else None

    response = scim.patch(f"/Users/{user['id']}", entra.patch(*recreate_ops(new_oid, new_email)))
    body = error_of(response, 409, "uniqueness")
    assert f"accounts unlink {email} --kind user" in body["detail"], body
    assert people.get_entity("P", user["id"]).metadata["etag"] == person.metadata["etag"], "person row written"
    assert scim.get(f"/Users/{user['id']}").json()["externalId"] == old_oid
    assert rows.get_entity(email, "user").metadata["etag"] == account_row.metadata["etag"], "account written"
    if moving:
        assert accounts.get(new_email, "user") is None, "the account moved to the new person's mailbox"
    event = next(e for e in scim.events() if e["CorrelationId"] == response.headers["X-Correlation-Id"])
    assert (event["Status"], event["Reason"]) == (409, "uniqueness") and "another Entra identity" in event["Detail"]

    # The admin's resolution when it is the same person, then Entra's retry: the account follows.
    assert accounts.unlink(email, "user")
    assert scim.patch(f"/Users/{user['id']}", entra.patch(*recreate_ops(new_oid, new_email))).status_code == 204
    account = accounts.get(new_email or email, "user")
    assert account.account_id == f"scim-user-{user['id']}" and account.linked_idp_subject is None
    assert scim.get(f"/Users/{user['id']}").json()["externalId"] == new_oid
    # ...and is the new object id's from then on: re-creating once more is refused again.
    third = scim.patch(f"/Users/{user['id']}", entra.patch(*recreate_ops(oid(), None)))
    error_of(third, 409, "uniqueness")


@pytest.mark.parametrize("moving", [False, True], ids=["in_place", "moving"])
def test_the_new_identity_never_signs_in_to_the_account_provisioned_for_the_old_one(hostile, use_settings,
                                                                                   moving):
    """End to end, as the hunt found it: the new object id signed in (200) as the account provisioned
    for the old one. Now the re-creation is refused, and the new identity's login finds no account at
    its own mailbox (moving), or is refused the old one's (in place: the account is bound to the old
    object id before anyone signed in, as a pre-link is)."""
    scim, user, email, old_oid = provisioned(hostile, use_settings)
    new_oid = oid()
    new_email = f"{unique('newhire')}@contoso.test" if moving else None
    error_of(scim.patch(f"/Users/{user['id']}", entra.patch(*recreate_ops(new_oid, new_email))), 409, "uniqueness")

    app = switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN)
    newcomer = Person(email=new_email or email, oid=new_oid, account_id="")
    assert_error_page(login(hostile, newcomer, "user"), 403, app, "no_account" if moving else "identity_mismatch")
    assert app.accounts.get(email, "user").linked_idp_subject is None, "the refused login linked nothing"
    claims = signed_in_as(login(hostile, Person(email=email, oid=old_oid, account_id=""), "user"), "user")
    assert (claims["sub"], claims["idp_sub"]) == (f"scim-user-{user['id']}", f"{TENANT}:{old_oid}")


def test_a_row_provisioned_before_it_recorded_its_object_id_gets_it_at_the_persons_next_write(hostile,
                                                                                             use_settings):
    """An older version left the row unlinked with nothing naming the object id: the person's next write
    of any kind (a name, here) records it, and a re-creation after that is refused."""
    scim, user, email, old_oid = provisioned(hostile, use_settings)
    rows = scim.runtime.tables.client(ACCOUNTS_TABLE)
    row = rows.get_entity(email, "user")
    rows.update_entity({k: v for k, v in row.items() if k != SCIM_OBJECT_ID}, mode=UpdateMode.REPLACE)
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_family_name("Long"))).status_code == 204
    assert rows.get_entity(email, "user")[SCIM_OBJECT_ID] == old_oid
    error_of(scim.patch(f"/Users/{user['id']}", entra.patch(*recreate_ops(oid(), None))), 409, "uniqueness")
