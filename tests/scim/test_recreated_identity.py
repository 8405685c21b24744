"""A person re-created in Entra (a new object id O2 for the same SCIM User P) never receives the old
identity's AccountIds (`scim-{kind}-{P}`) without an admin's word, whatever order Entra's writes
come in: a role or email change sent with the new externalId is 409 like a plain externalId change
(every row of the person's is checked, not only the kinds still wanted), and a row made for O2 when
none of the person's rows was left to refuse (roles removed first, or an admin's `accounts remove`)
gets an AccountId of O2's own, the same each time. An admin's `accounts unlink` says "the same
person": the rows keep their AccountIds and the ids are O2's from then on. Single tenant (rows
linked at once) and several ALLOWED_TENANT_IDS (bound to the object id only); real logins through
MSAL and the hostile IdP, through tools.host against Azurite."""

from __future__ import annotations

import json

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient, UpdateMode

from shared.accounts import SCIM_OBJECT_ID, AccountStore
from shared.scim import mapping
from shared.tables import ACCOUNTS_TABLE, SCIM_USERS_TABLE
from tests.scim import entra
from tests.scim.conftest import TOKEN, Scim, oid, unique
from tests.scim.test_login_agreement import login, signed_in_as
from tests.scim.test_protocol import error_of
from tests.scim.test_recreated_person import multi_tenant
from tests.support.hostile_flow import Person, switch_to
from tests.support.portal import assert_error_page

TENANTS = ["single", "multi"]


class Setup:
    """Olivia, provisioned (user kind) for object id `old_oid`, signed in once as her account."""

    def __init__(self, hostile, use_settings, tenants: str):
        hostile.reset()
        self.hostile, self.use_settings, self.tenants = hostile, use_settings, tenants
        scim = self.scim()
        self.email, self.old_oid = f"{unique('olivia')}@contoso.test", oid()
        response = scim.post("/Users", entra.create_user(self.email, self.email, self.old_oid))
        assert response.status_code == 201, response.text
        self.id = response.json()["id"]
        self.old_account = f"scim-user-{self.id}"
        assert self.signs_in(self.old_oid) == self.old_account

    def scim(self) -> Scim:
        if self.tenants == "multi":
            return multi_tenant(self.hostile, self.use_settings)
        return Scim(switch_to(self.hostile, self.use_settings, SCIM_TOKEN=TOKEN))

    def patch(self, *ops: dict):
        return self.scim().patch(f"/Users/{self.id}", entra.patch(*ops))

    def login(self, object_id: str):
        self.app = switch_to(self.hostile, self.use_settings, SCIM_TOKEN=TOKEN)
        return login(self.hostile, Person(email=self.email, oid=object_id, account_id=""), "user")

    def signs_in(self, object_id: str) -> str:
        return signed_in_as(self.login(object_id), "user")["sub"]

    def row(self, kind: str = "user"):
        rows = self.scim().runtime.tables.client(ACCOUNTS_TABLE)
        try:
            return rows.get_entity(self.email, kind)
        except Exception:
            return None


def older(person) -> dict:
    """A person row as a version before AccountIds (and MintedFor) wrote it."""
    return {k: v for k, v in person.items() if k not in ("AccountIds", "MintedFor")}


def external_id(value: str) -> dict:
    return {"op": "Replace", "path": "externalId", "value": value}


NO_WORK_EMAIL = {"op": "Remove", "path": 'emails[type eq "work"]'}


def work_email(email: str) -> dict:
    return {"op": "Add", "path": "emails", "value": [{"type": "work", "primary": True, "value": email}]}


@pytest.mark.parametrize("tenants", TENANTS)
@pytest.mark.parametrize("dance", ["roles", "email"])
def test_a_new_object_id_sent_with_a_role_or_email_change_is_409(hostile, use_settings, tenants, dance):
    """It was a 204 that deleted the old identity's row (its kind no longer wanted, or no email), so
    the role or email coming back minted `scim-user-P` again, bound to the new object id."""
    olivia, new_oid = Setup(hostile, use_settings, tenants), oid()
    before = olivia.row()
    step = entra.replace_roles_assertive("agent") if dance == "roles" else NO_WORK_EMAIL
    body = error_of(olivia.patch(external_id(new_oid), step), 409, "uniqueness")
    assert "another Entra identity" in body["detail"], body
    assert olivia.row().metadata["etag"] == before.metadata["etag"], "the old identity's row was written"
    assert olivia.row("agent") is None
    back = entra.replace_roles_assertive("user") if dance == "roles" else work_email(olivia.email)
    assert olivia.patch(back).status_code == 204  # (the person still has externalId old_oid)
    assert_error_page(olivia.login(new_oid), 403, olivia.app, "identity_mismatch")
    assert olivia.signs_in(olivia.old_oid) == olivia.old_account


def away_and_back(dance: str, email: str) -> tuple[dict, dict]:
    if dance == "roles":
        return entra.replace_roles_assertive(), entra.replace_roles_assertive("user")
    return NO_WORK_EMAIL, work_email(email)


@pytest.mark.parametrize("tenants", TENANTS)
@pytest.mark.parametrize("dance", ["roles", "email"])
def test_a_new_object_id_arriving_while_the_person_has_no_account_gets_an_account_of_its_own(hostile, use_settings,
                                                                                             tenants, dance):
    """The split dance: roles (or the email) removed (no rows), the new externalId (no row to refuse:
    204), the role (or email) back. It minted `scim-user-P` for the new object id, who signed in as
    the old person."""
    olivia, new_oid = Setup(hostile, use_settings, tenants), oid()
    away, back = away_and_back(dance, olivia.email)
    assert olivia.patch(away).status_code == 204
    assert olivia.row() is None
    assert olivia.patch(external_id(new_oid)).status_code == 204
    assert olivia.patch(back).status_code == 204
    fresh = olivia.row()["AccountId"]
    assert fresh.startswith("scim-user-") and fresh != olivia.old_account
    assert olivia.signs_in(new_oid) == fresh
    # ...the same one each time the new identity's role comes back (its own account, stable).
    assert olivia.patch(away).status_code == 204
    assert olivia.patch(back).status_code == 204
    assert olivia.row()["AccountId"] == fresh
    assert olivia.signs_in(new_oid) == fresh


@pytest.mark.parametrize("tenants", TENANTS)
def test_remove_then_entras_retry_gives_the_new_identity_a_fresh_account(hostile, use_settings, tenants):
    """The "different person" path: the admin removes the old identity's account after the 409, and
    Entra's retry made `scim-user-P` again for the new object id."""
    olivia, new_oid = Setup(hostile, use_settings, tenants), oid()
    error_of(olivia.patch(external_id(new_oid)), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.remove(olivia.email, "user")
    assert olivia.patch(external_id(new_oid)).status_code == 204
    fresh = olivia.signs_in(new_oid)
    assert fresh.startswith("scim-user-") and fresh != olivia.old_account


@pytest.mark.parametrize("tenants", TENANTS)
def test_unlink_then_entras_retry_keeps_the_account_and_makes_its_ids_the_new_identitys(hostile, use_settings,
                                                                                        tenants):
    """The "same person" path: unlink, Entra's retry rebinds the row in place (same AccountId); a role
    removed and given back returns it; and a later re-creation is again the admin's to decide (the
    split dance for a third object id gets an account of its own, not this one)."""
    olivia, new_oid = Setup(hostile, use_settings, tenants), oid()
    error_of(olivia.patch(external_id(new_oid)), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.unlink(olivia.email, "user")
    assert olivia.row().get("HandedOver") is True, "the admin's word, on the row"
    assert olivia.patch(external_id(new_oid)).status_code == 204
    assert olivia.signs_in(new_oid) == olivia.old_account
    assert olivia.patch(entra.replace_roles_assertive()).status_code == 204
    assert olivia.patch(entra.replace_roles_assertive("user")).status_code == 204
    assert olivia.signs_in(new_oid) == olivia.old_account
    third = oid()
    assert olivia.patch(entra.replace_roles_assertive()).status_code == 204
    assert olivia.patch(external_id(third)).status_code == 204
    assert olivia.patch(entra.replace_roles_assertive("user")).status_code == 204
    assert olivia.signs_in(third) != olivia.old_account


@pytest.mark.parametrize("tenants", TENANTS)
def test_unlink_of_a_row_whose_kind_the_retry_removes_still_keeps_the_persons_ids(hostile, use_settings, tenants):
    """The new externalId came with a role change (user to agent): 409; the admin unlinks the user row,
    "the same person"; Entra's retry removes it (its kind is no longer wanted). The ids are still hers:
    the agent row is scim-agent-P, and the user role given back is scim-user-P again."""
    olivia, new_oid = Setup(hostile, use_settings, tenants), oid()
    retry = (external_id(new_oid), entra.replace_roles_assertive("agent"))
    error_of(olivia.patch(*retry), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.unlink(olivia.email, "user")
    assert olivia.patch(*retry).status_code == 204
    assert olivia.row("agent")["AccountId"] == f"scim-agent-{olivia.id}"
    assert olivia.patch(entra.replace_roles_assertive("user")).status_code == 204
    assert olivia.row("user")["AccountId"] == olivia.old_account
    assert olivia.signs_in(new_oid) == olivia.old_account


@pytest.mark.parametrize("tenants", TENANTS)
def test_a_person_row_from_before_it_recorded_whose_ids_they_are(hostile, use_settings, tenants):
    """A person row an older version wrote (no AccountIds, no MintedFor): its next write works the
    owner out from the rows it reads (bound to the old identity), so the split dance still gives the
    new identity an account of its own."""
    olivia, new_oid = Setup(hostile, use_settings, tenants), oid()
    people = olivia.scim().runtime.tables.client(SCIM_USERS_TABLE)
    person = people.get_entity("P", olivia.id)
    people.update_entity(older(person), mode=UpdateMode.REPLACE)
    assert olivia.patch(entra.replace_roles_assertive()).status_code == 204
    assert json.loads(people.get_entity("P", olivia.id)["AccountIds"])["user"][olivia.old_oid] == olivia.old_account
    assert olivia.patch(external_id(new_oid)).status_code == 204
    assert olivia.patch(entra.replace_roles_assertive("user")).status_code == 204
    assert olivia.signs_in(new_oid) != olivia.old_account


def test_a_legacy_person_row_without_rows_gives_no_one_a_plain_id(hostile, use_settings):
    """No AccountIds and no row to read an object id from: no one may have a plain id (the externalId
    the person row holds may name another identity than the accounts': an older version changed it
    alone), so the new identity's row is its own."""
    olivia, new_oid = Setup(hostile, use_settings, "multi"), oid()
    assert olivia.patch(entra.replace_roles_assertive()).status_code == 204
    people = olivia.scim().runtime.tables.client(SCIM_USERS_TABLE)
    person = people.get_entity("P", olivia.id)
    people.update_entity(older(person), mode=UpdateMode.REPLACE)
    assert olivia.patch(external_id(new_oid)).status_code == 204
    assert olivia.patch(entra.replace_roles_assertive("user")).status_code == 204
    assert olivia.row()["AccountId"] != olivia.old_account
    assert olivia.row()[SCIM_OBJECT_ID] == new_oid


@pytest.mark.parametrize("dance", ["roles", "email"])
def test_an_admins_disable_survives_the_role_or_email_going_and_coming_back(hostile, use_settings, dance):
    """docs/operating.md: an `accounts disable` holds until Entra changes the person's `active`. The
    row made again when the role (or the email) came back was enabled."""
    olivia = Setup(hostile, use_settings, "single")
    accounts = olivia.scim().runtime.accounts
    assert accounts.update(olivia.email, "user", Enabled=False)  # what `accounts disable` writes
    away, back = away_and_back(dance, olivia.email)
    assert olivia.patch(away).status_code == 204 and olivia.row() is None
    assert olivia.patch(back).status_code == 204
    assert olivia.row()["Enabled"] is False and olivia.row()["AccountId"] == olivia.old_account
    assert_error_page(olivia.login(olivia.old_oid), 403, olivia.app, "account_disabled")
    # ...held by the row itself from then on: the admin's `enable` is not undone by the next dance.
    assert accounts.enable(olivia.email, "user")
    assert olivia.patch(away).status_code == 204 and olivia.patch(back).status_code == 204
    assert olivia.row()["Enabled"] is True
    assert accounts.update(olivia.email, "user", Enabled=False)
    # Entra's own word on `active` is what ends it.
    assert olivia.patch(entra.disable()).status_code == 204
    assert olivia.patch({"op": "Replace", "path": "active", "value": "True"}).status_code == 204
    assert olivia.signs_in(olivia.old_oid) == olivia.old_account


def test_an_account_made_for_an_externalid_that_is_no_object_id_is_not_the_old_identitys(hostile, use_settings):
    """The roles go, externalId becomes a value that is no object id (an attribute mapping changed),
    the role comes back: that row, unbound, is linked by the first login with the email, so it must
    not be the account of the identity the person's ids were minted for."""
    olivia = Setup(hostile, use_settings, "single")
    assert olivia.patch(entra.replace_roles_assertive()).status_code == 204
    assert olivia.patch(external_id(f"hr-{unique()}")).status_code == 204
    assert olivia.patch(entra.replace_roles_assertive("user")).status_code == 204
    made = olivia.row()
    assert made["AccountId"].startswith("scim-user-") and made["AccountId"] != olivia.old_account
    assert made.get(SCIM_OBJECT_ID) is None
    assert olivia.signs_in(oid()) != olivia.old_account


# ---- holes a red team found in the first version of the rules above: each is closed now


@pytest.mark.parametrize("made", ["legacy-rows", "non-guid-externalid"])
def test_an_admins_remove_never_hands_the_old_identitys_id_over_through_a_merely_unbound_row(
        hostile, use_settings, made):
    """Two kinds; the old identity signed in to the agent account only, the user row stays unbound.
    The new object id is 409 for the agent row; the admin removes it ("another person"); Entra's retry
    made the agent row again as scim-agent-P for the new identity: an unbound row counted as the admin's
    "same person". Only `accounts unlink` says that now."""
    from tests.scim.conftest import Scim

    hostile.reset()
    email, old_oid = f"{unique('olivia')}@contoso.test", oid()
    scim = multi_tenant(hostile, use_settings) if made == "legacy-rows" else \
        Scim(switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN))
    external = old_oid if made == "legacy-rows" else f"hr-{unique()}"
    created = scim.post("/Users", entra.create_user(email, email, external, kinds=("user", "agent")))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    rows, people = (scim.runtime.tables.client(t) for t in (ACCOUNTS_TABLE, SCIM_USERS_TABLE))
    if made == "legacy-rows":  # as an older version left them: no object id on the rows, no AccountIds
        for kind in ("user", "agent"):
            row = rows.get_entity(email, kind)
            rows.update_entity({k: v for k, v in row.items() if k != SCIM_OBJECT_ID}, mode=UpdateMode.REPLACE)
        person = people.get_entity("P", pid)
        people.update_entity(older(person), mode=UpdateMode.REPLACE)
    switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN)
    old = signed_in_as(login(hostile, Person(email=email, oid=old_oid, account_id=""), "agent"), "agent")
    assert old["sub"] == f"scim-agent-{pid}"
    scim = multi_tenant(hostile, use_settings) if made == "legacy-rows" else \
        Scim(switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN))
    new_oid = oid()
    error_of(scim.patch(f"/Users/{pid}", entra.patch(external_id(new_oid))), 409, "uniqueness")
    assert scim.runtime.accounts.remove(email, "agent")
    # The user row, unbound (an older version's, or a non-GUID externalId's) and never signed in: no
    # identity ever held it (the person row from before the record names no one), so the retry binds
    # it to the new identity; the agent account the old identity used is never handed over by that.
    assert scim.patch(f"/Users/{pid}", entra.patch(external_id(new_oid))).status_code == 204
    assert rows.get_entity(email, "agent")["AccountId"] != f"scim-agent-{pid}"
    switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN)
    new = signed_in_as(login(hostile, Person(email=email, oid=new_oid, account_id=""), "agent"), "agent")
    assert new["sub"] != f"scim-agent-{pid}", "the new identity got the old identity's agent AccountId"
    # The retry bound (or made) the user row for the new identity; that gave it no claim to the agent
    # id: a role dance after it makes the agent row again as the new identity's own, never the old id.
    scim = multi_tenant(hostile, use_settings) if made == "legacy-rows" else \
        Scim(switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN))
    for kinds in (("user",), ("user", "agent")):
        assert scim.patch(f"/Users/{pid}", entra.patch(entra.replace_roles_assertive(*kinds))).status_code == 204
    assert rows.get_entity(email, "agent")["AccountId"] == new["sub"], "the new identity's own, stable"


def test_a_person_re_created_during_a_stopped_email_move_has_a_way_out(hostile, use_settings, monkeypatch):
    """The move stopped after its commit (the old row says MovedTo, the copy MovedFrom). The dead old row,
    bound to the old identity, made every retry a 409 that no unlink or remove could clear."""
    from tests.scim.conftest import Scim
    from tests.scim.test_stopped_move import stopped_move

    hostile.reset()
    scim = Scim(switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN))
    old, old_oid = f"{unique('p')}@contoso.test", oid()
    created = scim.post("/Users", entra.create_user(old, old, old_oid, kinds=("user",)))
    assert created.status_code == 201, created.text
    user, new = created.json(), f"{unique('p')}@contoso.test"
    stopped_move(scim, monkeypatch, user, new, "clear_moved_from")
    retry = entra.patch(external_id(oid()))
    error_of(scim.patch(f"/Users/{user['id']}", retry), 409, "uniqueness")
    assert scim.runtime.accounts.unlink(new, "user"), "the admin unlinks the account login finds"
    assert scim.patch(f"/Users/{user['id']}", retry).status_code == 204
    found = [a for a in (scim.runtime.accounts.get(e, "user") for e in (old, new)) if a is not None]
    assert [a.account_id for a in found] == [f"scim-user-{user['id']}"], "one account, the person's own id"


def test_a_disable_stored_as_text_survives_the_role_going_and_coming_back(hostile, use_settings):
    """`az storage entity merge ... Enabled=false` stores the text 'false', which counts as disabled;
    the role dance remembered only a boolean False, so the row came back enabled."""
    olivia = Setup(hostile, use_settings, "single")
    rows = olivia.scim().runtime.tables.client(ACCOUNTS_TABLE)
    rows.update_entity({"PartitionKey": olivia.email, "RowKey": "user", "Enabled": "false"}, mode=UpdateMode.MERGE)
    assert olivia.patch(entra.replace_roles_assertive()).status_code == 204
    assert olivia.patch(entra.replace_roles_assertive("user")).status_code == 204
    assert_error_page(olivia.login(olivia.old_oid), 403, olivia.app, "account_disabled")


# ---- a second red team's holes: the admin's word is about one row, and stays with the ids it gave


def two_kinds(hostile, use_settings, tenants: str):
    """Olivia with a user and an agent account for `old_oid`, signed in once to the agent one."""
    hostile.reset()
    email, old_oid = f"{unique('olivia')}@contoso.test", oid()
    scim = session(hostile, use_settings, tenants)
    created = scim.post("/Users", entra.create_user(email, email, old_oid, kinds=("user", "agent")))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert sign_in(hostile, use_settings, email, old_oid, "agent") == f"scim-agent-{pid}"
    return email, pid


def session(hostile, use_settings, tenants: str) -> Scim:
    return multi_tenant(hostile, use_settings) if tenants == "multi" else \
        Scim(switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN))


def sign_in(hostile, use_settings, email: str, object_id: str, kind: str) -> str:
    switch_to(hostile, use_settings, SCIM_TOKEN=TOKEN)
    return signed_in_as(login(hostile, Person(email=email, oid=object_id, account_id=""), kind), kind)["sub"]


@pytest.mark.parametrize("tenants", TENANTS)
def test_an_unlink_of_the_user_account_never_hands_the_agent_account_over(hostile, use_settings, tenants):
    """The agent role went, the admin unlinked the user account (about the old identity), then Entra
    named a new object id and gave the agent role back: the unlinked user row is the new identity's
    (the admin's word), but the agent account the old identity used is not: the unlink was about the
    user row alone."""
    email, pid = two_kinds(hostile, use_settings, tenants)
    scim = session(hostile, use_settings, tenants)
    users = f"/Users/{pid}"
    assert scim.patch(users, entra.patch(entra.replace_roles_assertive("user"))).status_code == 204
    assert scim.runtime.accounts.unlink(email, "user")
    new_oid = oid()
    assert scim.patch(users, entra.patch(external_id(new_oid))).status_code == 204
    assert scim.patch(users, entra.patch(entra.replace_roles_assertive("user", "agent"))).status_code == 204
    assert sign_in(hostile, use_settings, email, new_oid, "agent") == f"scim-agent-{pid}-{new_oid}"
    assert sign_in(hostile, use_settings, email, new_oid, "user") == f"scim-user-{pid}"


@pytest.mark.parametrize("tenants", TENANTS)
def test_unlink_for_one_kind_and_remove_for_the_other_give_each_kind_its_own_answer(hostile, use_settings,
                                                                                      tenants):
    """The admin said "the same person" for the user account (unlink) and "another person" for the
    agent one (remove, as the 409 advises): the retry gives the new identity the user account and an
    agent account of its own, never the old identity's agent AccountId."""
    email, pid = two_kinds(hostile, use_settings, tenants)
    scim = session(hostile, use_settings, tenants)
    assert scim.runtime.accounts.unlink(email, "user")
    new_oid = oid()
    error_of(scim.patch(f"/Users/{pid}", entra.patch(external_id(new_oid))), 409, "uniqueness")
    assert scim.runtime.accounts.remove(email, "agent")
    assert scim.patch(f"/Users/{pid}", entra.patch(external_id(new_oid))).status_code == 204
    assert sign_in(hostile, use_settings, email, new_oid, "agent") == f"scim-agent-{pid}-{new_oid}"
    assert sign_in(hostile, use_settings, email, new_oid, "user") == f"scim-user-{pid}"


def test_an_account_handed_over_keeps_its_id_when_the_role_goes_and_comes_back(hostile, use_settings):
    """The second identity had an account of its own (scim-user-P-O2); re-created again (O3), the admin
    unlinked it (the same person) and O3 signed in to it; the role gone and given back makes that
    account again, not one of O3's own: the person row records which id each identity holds."""
    olivia, second = Setup(hostile, use_settings, "single"), oid()
    for op in (entra.replace_roles_assertive(), external_id(second), entra.replace_roles_assertive("user")):
        assert olivia.patch(op).status_code == 204
    own = f"scim-user-{olivia.id}-{second}"
    assert olivia.signs_in(second) == own
    third = oid()
    error_of(olivia.patch(external_id(third)), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.unlink(olivia.email, "user")
    assert olivia.patch(external_id(third)).status_code == 204
    assert olivia.signs_in(third) == own
    for op in (entra.replace_roles_assertive(), entra.replace_roles_assertive("user")):
        assert olivia.patch(op).status_code == 204
    assert olivia.signs_in(third) == own


# ---- a red team on the record itself: what it says, when it is written, and what it is when unreadable


@pytest.mark.parametrize("tenants", TENANTS)
@pytest.mark.parametrize("dance", ["roles", "email"])
@pytest.mark.parametrize("gone", ["hr-id", "removed"])
def test_an_externalid_that_names_no_object_id_never_takes_the_old_identitys_account(hostile, use_settings, tenants,
                                                                                      dance, gone):
    """externalId became a value that is no object id (or was removed) while the old identity's row
    stood: the write kept that row (bound to the old identity) and recorded "no object id" as holding
    its id, so the role (or email) going and coming back made it again, unbound, with the old id, and
    the next login by the email entered the old identity's account."""
    olivia = Setup(hostile, use_settings, tenants)
    change = external_id(f"hr-{unique()}") if gone == "hr-id" else {"op": "Remove", "path": "externalId"}
    assert olivia.patch(change).status_code == 204
    away, back = away_and_back(dance, olivia.email)
    assert olivia.patch(away).status_code == 204 and olivia.patch(back).status_code == 204
    assert olivia.row()["AccountId"] != olivia.old_account
    assert olivia.signs_in(oid()) != olivia.old_account


def test_an_id_given_by_a_write_that_stopped_before_the_person_row_is_recorded_first(hostile, use_settings,
                                                                                      monkeypatch):
    """The agent role's write made scim-agent-P for the old identity, then stopped (an outage) before
    the person row, which holds the record, was written; the old identity signed in to it. Re-created,
    the admin removed both accounts (another person): the retry gave the new identity scim-agent-P,
    the kind missing from the record counting as held by no one. The record is written before the
    rows that hold a new id."""
    olivia = Setup(hostile, use_settings, "single")
    replace_person = TableClient.update_entity

    def outage(self, entity, *args, **kwargs):
        if entity.get("PartitionKey") == "P" and kwargs.get("mode") == UpdateMode.REPLACE:
            raise ServiceRequestError("storage went away")
        return replace_person(self, entity, *args, **kwargs)
    with monkeypatch.context() as patched:
        patched.setattr(TableClient, "update_entity", outage)
        assert olivia.patch(entra.replace_roles_assertive("user", "agent")).status_code == 503
    old_agent = sign_in(hostile, use_settings, olivia.email, olivia.old_oid, "agent")
    assert old_agent == f"scim-agent-{olivia.id}"
    new_oid = oid()
    retry = (external_id(new_oid), entra.replace_roles_assertive("user", "agent"))
    error_of(olivia.patch(*retry), 409, "uniqueness")
    accounts = olivia.scim().runtime.accounts
    assert accounts.remove(olivia.email, "user") and accounts.remove(olivia.email, "agent")
    assert olivia.patch(*retry).status_code == 204
    assert sign_in(hostile, use_settings, olivia.email, new_oid, "agent") == f"scim-agent-{olivia.id}-{new_oid}"


@pytest.mark.parametrize("stored", [5, True, "[" * 3000, "{", '{"user": "x"}', '{"agent": {"o": 7}}'])
def test_an_unreadable_record_is_a_scim_answer_and_gives_no_one_a_plain_id(hostile, use_settings, stored):
    """A record no longer JSON of the right shape (edited by hand, say) was a bare 500 for some values
    (an int, a deep nesting) and, for others, fell back to "the externalId holds every plain id":
    after a hand-over of the user account that gave the new identity the agent account the old one
    had. Unreadable, no identity holds a plain id: rows carried on keep theirs, new ones are their
    identity's own."""
    email, pid = two_kinds(hostile, use_settings, "single")
    scim = session(hostile, use_settings, "single")
    users = f"/Users/{pid}"
    assert scim.patch(users, entra.patch(entra.replace_roles_assertive("user"))).status_code == 204
    assert scim.runtime.accounts.unlink(email, "user")
    new_oid = oid()
    assert scim.patch(users, entra.patch(external_id(new_oid))).status_code == 204
    people = scim.runtime.tables.client(SCIM_USERS_TABLE)
    people.update_entity({"PartitionKey": "P", "RowKey": pid, "AccountIds": stored}, mode=UpdateMode.MERGE)
    assert scim.patch(users, entra.patch(entra.replace_roles_assertive("user", "agent"))).status_code == 204
    assert sign_in(hostile, use_settings, email, new_oid, "agent") == f"scim-agent-{pid}-{new_oid}"
    assert sign_in(hostile, use_settings, email, new_oid, "user") == f"scim-user-{pid}"


def test_a_recorded_id_that_is_not_the_persons_own_is_never_given(hostile, use_settings):
    """The record is directory sync's: an id in it that is not one of the person's own (written by
    hand: another person's account) is ignored, never made a row's AccountId past the CLI's checks."""
    olivia = Setup(hostile, use_settings, "single")
    people = olivia.scim().runtime.tables.client(SCIM_USERS_TABLE)
    assert olivia.patch(entra.replace_roles_assertive()).status_code == 204
    forged = json.dumps({"user": {olivia.old_oid: "acct-of-someone-else"}})
    people.update_entity({"PartitionKey": "P", "RowKey": olivia.id, "AccountIds": forged}, mode=UpdateMode.MERGE)
    assert olivia.patch(entra.replace_roles_assertive("user")).status_code == 204
    assert olivia.row()["AccountId"].startswith(f"scim-user-{olivia.id}")


# ---- a third red team: what the record may say before a write lands, and who may share an id


@pytest.mark.parametrize("tenants", TENANTS)
@pytest.mark.parametrize("dance", ["roles", "email"])
def test_an_id_an_object_id_took_is_never_no_object_ids_again(hostile, use_settings, tenants, dance):
    """Made for a non-GUID externalId, then bound to O1 (the mapping fixed to objectId) and signed in
    to: the record said both "no object id" and O1 held scim-user-P, so externalId made non-GUID again
    and a role (or email) dance made the row again unbound as scim-user-P for the next login by email."""
    hostile.reset()
    email = f"{unique('olivia')}@contoso.test"
    scim = session(hostile, use_settings, tenants)
    created = scim.post("/Users", entra.create_user(email, email, f"hr-{unique()}", kinds=("user",)))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    first = oid()
    assert scim.patch(f"/Users/{pid}", entra.patch(external_id(first))).status_code == 204
    assert sign_in(hostile, use_settings, email, first, "user") == f"scim-user-{pid}"
    scim = session(hostile, use_settings, tenants)
    away, back = away_and_back(dance, email)
    for op in (external_id(f"hr-{unique()}"), away, back):
        assert scim.patch(f"/Users/{pid}", entra.patch(op)).status_code == 204
    assert sign_in(hostile, use_settings, email, oid(), "user") != f"scim-user-{pid}"


def signed_in_without_object_id(hostile, use_settings) -> tuple[Scim, str, str, str]:
    """Olivia provisioned (user kind) for an externalId that is no object id, signed in once by object id
    `me`: (a fresh SCIM session, her email, her SCIM id, me)."""
    hostile.reset()
    email = f"{unique('olivia')}@contoso.test"
    scim = session(hostile, use_settings, "single")
    created = scim.post("/Users", entra.create_user(email, email, f"hr-{unique()}", kinds=("user",)))
    assert created.status_code == 201, created.text
    pid, me = created.json()["id"], oid()
    assert sign_in(hostile, use_settings, email, me, "user") == f"scim-user-{pid}"
    return session(hostile, use_settings, "single"), email, pid, me


@pytest.mark.parametrize("dance", ["roles", "email"])
def test_a_row_a_login_linked_for_no_object_id_comes_back_with_its_id(hostile, use_settings, dance):
    """externalId not a GUID (Entra's default mailNickname mapping): the row made for "no object id",
    then linked by its first login, was recorded as that object id's alone, so a role (or email) going
    and coming back gave the same person a new, empty `scim-user-P-no-object-id` account, and no
    admin command could give the old one back."""
    scim, email, pid, me = signed_in_without_object_id(hostile, use_settings)
    for op in away_and_back(dance, email):
        assert scim.patch(f"/Users/{pid}", entra.patch(op)).status_code == 204
    assert sign_in(hostile, use_settings, email, me, "user") == f"scim-user-{pid}"


@pytest.mark.parametrize("era", ["no-record", "minted-for-no-one"])
@pytest.mark.parametrize("dance", ["roles", "email"])
def test_a_row_a_login_linked_for_no_object_id_comes_back_with_its_id_from_an_older_person_row(
        hostile, use_settings, dance, era):
    """...also when the person row is an older version's (no AccountIds; or MintedFor "" for a non-GUID
    externalId): "no object id" held nothing in the record read, so the first write recorded the row's
    id for the linking object id alone, and the dance made a new, empty account."""
    scim, email, pid, me = signed_in_without_object_id(hostile, use_settings)
    people = scim.runtime.tables.client(SCIM_USERS_TABLE)
    person = older(people.get_entity("P", pid))
    if era == "minted-for-no-one":
        person["MintedFor"] = ""
    people.update_entity(person, mode=UpdateMode.REPLACE)
    for op in away_and_back(dance, email):
        assert scim.patch(f"/Users/{pid}", entra.patch(op)).status_code == 204
    assert sign_in(hostile, use_settings, email, me, "user") == f"scim-user-{pid}"


@pytest.mark.parametrize("written_since", [False, True])
def test_an_admins_remove_of_a_no_object_id_row_is_not_undone_by_the_next_write(hostile, use_settings, written_since):
    """externalId not a GUID, A signed in; B at the same mailbox refused (identity_mismatch), and the admin,
    as operating.md says for "a different person", removed the account: Entra's next write (any: a
    rename) made it again as A's scim-user-P, unlinked, and B's login linked it: A's account."""
    scim, email, pid, _ = signed_in_without_object_id(hostile, use_settings)
    if written_since:
        assert scim.patch(f"/Users/{pid}", rename("Olivia")).status_code == 204
    assert cli_accounts(scim).remove(email, "user")
    assert scim.patch(f"/Users/{pid}", rename("Olivia B")).status_code == 204
    assert sign_in(hostile, use_settings, email, oid(), "user") != f"scim-user-{pid}"


def cli_accounts(scim) -> AccountStore:
    """The accounts store as the admin's CLI has it (it reads and writes directory sync's person rows)."""
    tables = scim.runtime.tables
    return AccountStore(tables.client(ACCOUNTS_TABLE), people=tables.client(SCIM_USERS_TABLE))


def rename(value: str) -> dict:
    return entra.patch({"op": "Replace", "path": "displayName", "value": value})


def test_each_admins_remove_of_a_no_object_id_row_makes_the_next_one_new(hostile, use_settings):
    """Removed twice ("a different person" each time): the record held one removed id, the second
    overwrote the first, and the third person to sign in got the first one's account back."""
    scim, email, pid, _ = signed_in_without_object_id(hostile, use_settings)
    admin, seen = cli_accounts(scim), [f"scim-user-{pid}"]
    for name in ("B", "C", "D"):
        assert admin.remove(email, "user")
        assert scim.patch(f"/Users/{pid}", rename(name)).status_code == 204
        got = sign_in(hostile, use_settings, email, oid(), "user")
        assert got not in seen, (name, got, seen)
        seen.append(got)


def test_an_admins_remove_landing_during_an_entra_write_is_not_undone_by_its_retry(hostile, use_settings,
                                                                                  monkeypatch):
    """The remove noted its id and deleted the row after a rename had read the person row and before it
    read the account rows: the rename made the row again from its stale record (scim-user-P, unlinked),
    lost its person-row write (412) and, retried, kept that row in place, id and all."""
    scim, email, pid, _ = signed_in_without_object_id(hostile, use_settings)
    with monkeypatch.context() as patched:
        removed = removed_mid_write(scim, email, patched)
        assert scim.patch(f"/Users/{pid}", rename("B")).status_code == 204
    assert removed == [True]
    assert sign_in(hostile, use_settings, email, oid(), "user") != f"scim-user-{pid}"


def removed_mid_write(scim, email: str, monkeypatch) -> list:
    """The admin's remove of `email`'s user account lands once Entra's next write has read the person
    row, before it reads the rows (it makes the row again from a record without the remove in it)."""
    from shared.scim import sync

    admin, real, removed = cli_accounts(scim), sync.AccountSync._plan, []

    def plan(self, desired, kind, old_keys):
        if not removed:
            removed.append(admin.remove(email, "user"))
        return real(self, desired, kind, old_keys)
    monkeypatch.setattr(sync.AccountSync, "_plan", plan)
    return removed


def test_a_no_object_id_row_a_login_linked_is_not_no_object_ids_once_another_identity_came(hostile, use_settings):
    """...and that shared entry ends once a write names an object id: made for "no object id", linked
    by A's login, its role gone; then externalId named B (another identity: an account of its own),
    was made non-GUID again and the role came back: the row made then for the next login by the email
    must not be A's account."""
    scim, email, pid, _ = signed_in_without_object_id(hostile, use_settings)
    away, back = away_and_back("roles", email)
    for op in (away, external_id(oid()), back, external_id(f"hr-{unique()}"), away, back):
        assert scim.patch(f"/Users/{pid}", entra.patch(op)).status_code == 204
    assert sign_in(hostile, use_settings, email, oid(), "user") != f"scim-user-{pid}"


def outage_on_rows_of(email: str, monkeypatch):
    """Every write to `email`'s account rows fails as an outage (the person row's still lands)."""
    real = TableClient.update_entity

    def outage(self, entity, *args, **kwargs):
        if entity.get("PartitionKey") == email:
            raise ServiceRequestError("storage went away")
        return real(self, entity, *args, **kwargs)
    monkeypatch.setattr(TableClient, "update_entity", outage)


@pytest.mark.parametrize("tenants", TENANTS)
@pytest.mark.parametrize("then", ["removed", "signed-in-then-removed"])
def test_a_hand_over_that_never_landed_is_not_in_the_record(hostile, use_settings, tenants, then, monkeypatch):
    """The admin unlinked (the same person); Entra's retry recorded the new identity as holding the
    row's id before binding the row, and the bind failed (an outage); the admin then decided it is
    another person (or the old identity signed in again, and the next retry was 409), removed the
    row, and the retry gave the new identity the old AccountId from that record."""
    olivia, new_oid = Setup(hostile, use_settings, tenants), oid()
    error_of(olivia.patch(external_id(new_oid)), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.unlink(olivia.email, "user")
    with monkeypatch.context() as patched:
        outage_on_rows_of(olivia.email, patched)
        assert olivia.patch(external_id(new_oid)).status_code == 503
    if then == "signed-in-then-removed":
        assert olivia.signs_in(olivia.old_oid) == olivia.old_account
        error_of(olivia.patch(external_id(new_oid)), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.remove(olivia.email, "user")
    assert olivia.patch(external_id(new_oid)).status_code == 204
    assert olivia.signs_in(new_oid) == f"scim-user-{olivia.id}-{new_oid}"


# ---- a fourth red team: person rows an older version wrote, whose externalId no longer names the
# identity the accounts are bound to


def as_an_older_version_left_it(olivia: Setup, external: str) -> None:
    """The person row with no AccountIds (nor MintedFor) and `external` as its externalId, its rows
    untouched: what a version before 853f059 left after a changed externalId (a 204 that changed the
    person row alone)."""
    people = olivia.scim().runtime.tables.client(SCIM_USERS_TABLE)
    row = older(people.get_entity("P", olivia.id))
    resource = json.loads(row["Resource"])
    resource["externalId"] = external
    row.update(Resource=json.dumps(resource), ExternalId=external, ExternalIdKey=mapping.external_id_key(external))
    people.update_entity(row, mode=UpdateMode.REPLACE)


@pytest.mark.parametrize("tenants", TENANTS)
def test_an_older_person_rows_externalid_is_not_who_holds_the_ids_then_remove(hostile, use_settings, tenants):
    """The fallback gave every plain id to the externalId the person row holds now (O2), so after the
    409 and the admin's remove ("another person") the retry made scim-user-P for O2, who signed in as
    O1. A person row without a record says no one may have a plain id, but its rows' identities."""
    olivia, new_oid = Setup(hostile, use_settings, tenants), oid()
    as_an_older_version_left_it(olivia, new_oid)
    rename = {"op": "Replace", "path": "displayName", "value": "Olivia N"}
    error_of(olivia.patch(rename), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.remove(olivia.email, "user")
    assert olivia.patch(rename).status_code == 204
    assert olivia.signs_in(new_oid) == f"scim-user-{olivia.id}-{new_oid}"


@pytest.mark.parametrize("tenants", TENANTS)
def test_an_older_person_rows_non_guid_externalid_never_takes_the_bound_account(hostile, use_settings, tenants):
    """The rows stayed bound to O1; a write naming no object id deleted the row (roles gone) and the
    fallback recorded "no object id" as holding the plain id, so the role back made it unbound for
    the next login by email. The rows read say who holds their ids: O1."""
    olivia = Setup(hostile, use_settings, tenants)
    as_an_older_version_left_it(olivia, f"hr-{unique()}")
    for op in (entra.replace_roles_assertive(), entra.replace_roles_assertive("user")):
        assert olivia.patch(op).status_code == 204
    assert olivia.signs_in(oid()) != olivia.old_account


@pytest.mark.parametrize("tenants", TENANTS)
def test_an_older_person_row_whose_rows_are_its_identitys_keeps_its_ids(hostile, use_settings, tenants):
    """The same person's role dance on a person row from before the record: its row, bound to the
    identity the externalId names, is read at the first write, so the role back is its own account."""
    olivia = Setup(hostile, use_settings, tenants)
    as_an_older_version_left_it(olivia, olivia.old_oid)
    for op in (entra.replace_roles_assertive(), entra.replace_roles_assertive("user")):
        assert olivia.patch(op).status_code == 204
    assert olivia.signs_in(olivia.old_oid) == olivia.old_account


# ---- a fifth red team: a hand-over of a kind that is leaving, and an older version's unbound rows


def deletes_of_rows_at(email: str, monkeypatch, before=None):
    """Every delete of `email`'s account rows fails as an outage; or, given `before`, runs it just
    before each such delete (another writer landing in the window)."""
    real = TableClient.delete_entity

    def delete(self, *args, **kwargs):
        if (args[0] if args else kwargs.get("partition_key")) == email:
            if before is None:
                raise ServiceRequestError("storage went away")
            before()
        return real(self, *args, **kwargs)
    monkeypatch.setattr(TableClient, "delete_entity", delete)


@pytest.mark.parametrize("tenants", TENANTS)
@pytest.mark.parametrize("then", ["removed", "signed-in-then-removed"])
def test_a_hand_over_of_a_kind_leaving_is_recorded_only_once_its_row_is_gone(hostile, use_settings, tenants, then,
                                                                              monkeypatch):
    """The new externalId came with the user role gone; the admin unlinked the user row; the retry
    recorded the hand-over before deleting the row, and the delete failed (an outage). The admin then
    removed it as another person's (or the old identity signed in again first, and the retry was a
    409): the user role back gave the new identity the account the old one used."""
    olivia, new_oid = Setup(hostile, use_settings, tenants), oid()
    retry = (external_id(new_oid), entra.replace_roles_assertive("agent"))
    error_of(olivia.patch(*retry), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.unlink(olivia.email, "user")
    with monkeypatch.context() as patched:
        deletes_of_rows_at(olivia.email, patched)
        assert olivia.patch(*retry).status_code == 503
    if then == "signed-in-then-removed":
        assert olivia.signs_in(olivia.old_oid) == olivia.old_account
        error_of(olivia.patch(*retry), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.remove(olivia.email, "user")
    assert olivia.patch(*retry).status_code == 204
    assert olivia.patch(entra.replace_roles_assertive("user", "agent")).status_code == 204
    assert olivia.signs_in(new_oid) == f"scim-user-{olivia.id}-{new_oid}"


def test_a_row_the_old_identity_links_while_it_is_being_removed_is_not_deleted(hostile, use_settings, monkeypatch):
    """The old identity's login linked the unlinked row between the retry's read and its delete: the
    delete's etag failed, the row was read again, still the person's, and deleted anyway, the hand-over
    recorded: the role back gave the new identity the account the old one had just used."""
    olivia, new_oid = Setup(hostile, use_settings, "single"), oid()
    link = olivia.row()["LinkedIdpSubject"]
    retry = (external_id(new_oid), entra.replace_roles_assertive("agent"))
    error_of(olivia.patch(*retry), 409, "uniqueness")
    assert olivia.scim().runtime.accounts.unlink(olivia.email, "user")
    rows = olivia.scim().runtime.tables.client(ACCOUNTS_TABLE)
    landed = []

    def login() -> None:
        if not landed:
            landed.append(rows.update_entity({"PartitionKey": olivia.email, "RowKey": "user",
                                              "LinkedIdpSubject": link}, mode=UpdateMode.MERGE))
    with monkeypatch.context() as patched:
        deletes_of_rows_at(olivia.email, patched, before=login)
        error_of(olivia.patch(*retry), 409, "uniqueness")
    assert landed and olivia.row()["LinkedIdpSubject"] == link, "the old identity's account stays"
    assert olivia.signs_in(olivia.old_oid) == olivia.old_account


@pytest.mark.parametrize("tenants", TENANTS)
@pytest.mark.parametrize("external", ["guid", "hr-id"])
def test_an_older_versions_unbound_row_never_signed_in_takes_the_persons_next_writes(hostile, use_settings,
                                                                                      tenants, external):
    """A person row from before the record and a row no one has signed in to, bound to no one (an older
    version's, or a non-GUID externalId's): every write was a 409, the disable included, so offboarding
    never reached the account. No identity ever held it: the write binds it (or, without an object id,
    leaves it unbound) and lands."""
    hostile.reset()
    email = f"{unique('olivia')}@contoso.test"
    scim = session(hostile, use_settings, tenants)
    created = scim.post("/Users", entra.create_user(email, email, oid() if external == "guid" else f"hr-{unique()}"))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    rows, people = (scim.runtime.tables.client(t) for t in (ACCOUNTS_TABLE, SCIM_USERS_TABLE))
    row = rows.get_entity(email, "user")
    rows.update_entity({k: v for k, v in row.items() if k not in (SCIM_OBJECT_ID, "LinkedIdpSubject")},
                       mode=UpdateMode.REPLACE)
    people.update_entity(older(people.get_entity("P", pid)), mode=UpdateMode.REPLACE)
    assert scim.patch(f"/Users/{pid}", entra.patch({"op": "Replace", "path": "displayName",
                                                     "value": "Olivia N"})).status_code == 204
    assert scim.patch(f"/Users/{pid}", entra.patch(entra.disable())).status_code == 204
    assert rows.get_entity(email, "user")["Enabled"] is False
