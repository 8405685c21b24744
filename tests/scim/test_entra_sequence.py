"""Entra's provisioning sequence, as Entra sends it (shapes in tests/scim/entra.py, each naming its
Microsoft document), through tools.host against Azurite: Test connection, create, PATCH in all its
documented forms, PUT, DELETE, and a second cycle that changes nothing."""

from __future__ import annotations

import logging
import re
import uuid

from shared.tables import ACCOUNTS_TABLE
from tests.scim import entra
from tests.scim.conftest import TENANT, TOKEN, oid, unique


def accounts_of(scim, email: str) -> dict:
    """The PortalAccounts rows login would find for this email, by kind."""
    found = {}
    for kind in ("user", "agent"):
        account = scim.runtime.accounts.get(email, kind)
        if account is not None:
            found[kind] = account
    return found


def raw_rows(scim, email: str) -> list[dict]:
    table = scim.runtime.tables.client(ACCOUNTS_TABLE)
    return list(table.query_entities("PartitionKey eq @pk", parameters={"pk": email.lower()}))


def test_test_connection_answers_an_empty_list_and_refuses_a_wrong_token(scim, caplog):
    # TUTORIAL "Get User by query": Test connection queries a userName that does not exist.
    response = scim.get("/Users", params=entra.by_user_name(str(uuid.uuid4())))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/scim+json")
    body = response.json()
    assert body["totalResults"] == 0 and body["Resources"] == []
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]

    wrong = "w" * 43
    refused = scim.get("/Users", params=entra.by_user_name("x"), token=wrong)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    error = refused.json()
    assert error["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and error["status"] == "401"
    rows = [e for e in scim.events() if e.get("Status") == 401]
    assert rows and rows[0]["Reason"] == "unauthorized"
    for text in [refused.text, caplog.text, *map(str, scim.events())]:
        assert wrong not in text and TOKEN not in text, "a token never reaches a body, a log or a row"
    assert "scim.request op=GET /Users status=401" in caplog.text


def test_create_then_update_then_delete_as_entra_sends_them(scim):
    person, email, object_id = unique("ann"), f"{unique('ann')}@contoso.test", oid()
    user_name = f"{person}@contoso.test"
    # Create: query first (TUTORIAL "Get User by query"), then POST (TUTORIAL "Create User", ROLES).
    assert scim.get("/Users", params=entra.by_user_name(user_name)).json()["totalResults"] == 0
    created = scim.post("/Users", entra.create_user(user_name, email, object_id, kinds=("agent",)))
    assert created.status_code == 201, created.text
    user = created.json()
    scim_id = user["id"]
    assert created.headers["Location"].endswith(f"/api/scim/v2/Users/{scim_id}")
    assert created.headers["ETag"] == user["meta"]["version"]
    assert user["userName"] == user_name and user["externalId"] == object_id and user["active"] is True
    assert "title" not in user and entra.ENTERPRISE not in user, "what the portal does not keep is dropped"
    assert user["meta"]["resourceType"] == "User" and user["meta"]["created"] and user["meta"]["lastModified"]
    agent = accounts_of(scim, email)
    assert set(agent) == {"agent"}, "Portal.Agent gives an agent account, no user account"
    assert agent["agent"].account_id == f"scim-agent-{scim_id}" and agent["agent"].enabled
    assert agent["agent"].linked_idp_subject == f"{TENANT}:{object_id}", "a GUID externalId links at once"

    # Every filter Entra uses finds the person (userName without regard to case).
    for flt in (f'userName eq "{user_name.upper()}"', f'externalId eq "{object_id}"',
                f'emails[type eq "work"].value eq "{email}"',
                f'userName eq "{user_name}" and externalId eq "{object_id}"'):
        listed = scim.get("/Users", params={"filter": flt}).json()
        assert listed["totalResults"] == 1 and listed["Resources"][0]["id"] == scim_id, flt
    assert scim.get("/Users", params={"filter": f'externalId eq "{object_id.upper()}"'}).json()["totalResults"] == 0, \
        "externalId is case-exact"

    # PATCH, TUTORIAL "Update User [Multi-valued properties]": the work email through a filtered path.
    new_email = f"{unique('ann.lee')}@contoso.test"
    moved = scim.patch(f"/Users/{scim_id}", entra.patch(entra.replace_work_email(new_email),
                                                        entra.replace_family_name("Lee-Smith")))
    assert moved.status_code in (200, 204), moved.text
    assert accounts_of(scim, email) == {}, "the old email finds nothing"
    after = accounts_of(scim, new_email)["agent"]
    assert (after.account_id, after.linked_idp_subject, after.enabled) == \
        (f"scim-agent-{scim_id}", f"{TENANT}:{object_id}", True), "AccountId, link and state kept"
    assert [r for r in raw_rows(scim, email)] == [], "no row left at the old email"
    got = scim.get(f"/Users/{scim_id}").json()
    assert got["name"]["familyName"] == "Lee-Smith" and got["emails"][0]["value"] == new_email

    # KNOWN_ISSUES: lowercase ops too, and "active": "False" as a string; then a boolean.
    for op in (entra.disable(as_string=True), entra.disable(as_string=False)):
        response = scim.patch(f"/Users/{scim_id}", entra.patch(op))
        assert response.status_code in (200, 204), response.text
        assert accounts_of(scim, new_email)["agent"].enabled is False
        assert scim.get(f"/Users/{scim_id}").json()["active"] is False
    # KNOWN_ISSUES: no path, a value object, "True" as a string.
    assert scim.patch(f"/Users/{scim_id}", entra.patch(entra.enable_without_path())).status_code in (200, 204)
    assert accounts_of(scim, new_email)["agent"].enabled is True
    assert scim.get(f"/Users/{scim_id}").json()["displayName"] == "Ann Lee-Back"

    # ROLES: an Add of roles whose value is a JSON string gives the user account too.
    assert scim.patch(f"/Users/{scim_id}", entra.patch(entra.add_role_complex("user"))).status_code in (200, 204)
    both = accounts_of(scim, new_email)
    assert set(both) == {"user", "agent"} and both["user"].account_id == f"scim-user-{scim_id}"
    # SPEC: a Remove of roles naming the role; lowercase op.
    removal = entra.remove_role("agent") | {"op": "remove"}
    assert scim.patch(f"/Users/{scim_id}", entra.patch(removal)).status_code in (200, 204)
    assert set(accounts_of(scim, new_email)) == {"user"}, "a role removed removes that kind's account"

    # PUT: the whole User again, with the agent role back and the user role gone.
    replacement = entra.create_user(user_name, new_email, object_id, kinds=("agent",), family="Lee-Smith")
    put = scim.put(f"/Users/{scim_id}", replacement)
    assert put.status_code == 200, put.text
    assert set(accounts_of(scim, new_email)) == {"agent"}
    assert accounts_of(scim, new_email)["agent"].account_id == f"scim-agent-{scim_id}", "the same AccountId back"

    # DELETE (TUTORIAL "Delete User"): the accounts go, the id is gone.
    assert scim.delete(f"/Users/{scim_id}").status_code == 204
    assert accounts_of(scim, new_email) == {}
    assert scim.get(f"/Users/{scim_id}").status_code == 404
    assert scim.get("/Users", params=entra.by_user_name(user_name)).json()["totalResults"] == 0
    again = scim.post("/Users", entra.create_user(user_name, new_email, object_id, kinds=("agent",)))
    assert again.status_code == 201 and again.json()["id"] != scim_id, "an id is never reused"

    operations = [(e["Operation"], e["Status"]) for e in scim.events() if e.get("ScimId") == scim_id]
    assert ("POST /Users", 201) in operations and ("DELETE /Users/{id}", 204) in operations
    assert sum(1 for op, _ in operations if op == "PATCH /Users/{id}") >= 6, "every write has its row"


def test_a_second_identical_cycle_changes_nothing(scim):
    people = []
    for kinds in (("user",), ("agent",), ("user", "agent")):
        name = unique("cycle")
        email = f"{name}@contoso.test"
        created = scim.post("/Users", entra.create_user(f"{name}@contoso.test", email, oid(), kinds=kinds))
        assert created.status_code == 201
        people.append((created.json(), email))

    def snapshot():
        return {email: sorted((r["RowKey"], r.metadata["etag"]) for r in raw_rows(scim, email))
                for _, email in people}

    before = snapshot()
    for user, email in people:
        # Entra's cycle: query, compare, and (here) send the same values again.
        found = scim.get("/Users", params=entra.by_user_name(user["userName"])).json()["Resources"][0]
        assert found["id"] == user["id"] and found["meta"]["version"] == user["meta"]["version"]
        same = scim.patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(email),
                                                               {"op": "Replace", "path": "active", "value": "True"}))
        assert same.status_code in (200, 204)
        assert scim.get(f"/Users/{user['id']}").json()["meta"]["version"] == user["meta"]["version"], \
            "a PATCH that changes nothing keeps the version"
        assert scim.put(f"/Users/{user['id']}", {k: v for k, v in found.items() if k not in ("id", "meta")}
                        ).json()["meta"]["version"] == user["meta"]["version"], "so does a PUT of the same User"
    assert snapshot() == before, "no account row was written in the second cycle"


def test_a_request_path_cannot_write_fields_into_the_log_line(scim, caplog):
    """Issue 13 item 13's rule for directory sync: a refused request's path (anyone may send one) is
    shown as its shape, and a user id from it is one quoted token, so neither can pose as a field."""
    caplog.set_level(logging.INFO, logger="portal_sso")
    assert scim.get("/x status=200 correlation_id=forged", token="w" * 43).status_code == 401
    assert scim.get("/Users/id status=200 correlation_id=forged", token="w" * 43).status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scim.request")][-2:]
    assert lines[0].startswith("scim.request op=GET /{other} status=401 ")
    assert lines[1].startswith('scim.request op=GET /Users/{id} status=401 reason=unauthorized '
                               'scim_id="id status=200 correlation_id=forged" correlation_id=')
    for line in lines:
        outside_quotes = re.sub(r'"[^"]*"', "", line)
        assert outside_quotes.count("correlation_id=") == 1 and outside_quotes.count("status=") == 1, line


def test_a_role_removed_in_either_form_removes_the_account_whichever_form_added_it(scim):
    """ROLES' Add carries the role as a JSON string, the SPEC's Remove (and a POST) as the plain value:
    each form removes a role the other added, so the kind's account goes."""
    name = unique("roles")
    email = f"{name}@contoso.test"
    created = scim.post("/Users", entra.create_user(f"{name}@contoso.test", email, oid(), kinds=("user",)))
    assert created.status_code == 201, created.text
    scim_id = created.json()["id"]

    assert scim.patch(f"/Users/{scim_id}", entra.patch(entra.add_role_complex("agent"))).status_code in (200, 204)
    assert set(accounts_of(scim, email)) == {"user", "agent"}
    assert scim.patch(f"/Users/{scim_id}", entra.patch(entra.remove_role("agent"))).status_code in (200, 204)
    assert set(accounts_of(scim, email)) == {"user"}, "added as a JSON string, removed by its plain value"
    roles = scim.get(f"/Users/{scim_id}").json().get("roles") or []
    assert [r["value"] for r in roles] == ["Portal.User"], roles

    # The POST's plain role, removed with ROLES' JSON-string form (by its value: the role's display
    # name may have been renamed in Entra since).
    removal = entra.add_role_complex("user", op="Remove")
    removal["value"][0]["value"] = removal["value"][0]["value"].replace('"User"', '"Renamed"')
    assert scim.patch(f"/Users/{scim_id}", entra.patch(removal)).status_code in (200, 204)
    assert accounts_of(scim, email) == {}, "added plain, removed as a JSON string"
    assert not scim.get(f"/Users/{scim_id}").json().get("roles")


def test_a_plain_role_removed_with_more_than_its_value_still_removes_it(scim):
    """A Remove selects a role by its value alone: one naming another display (renamed in Entra) or
    carrying the POST shape's `type`/`primary` was matched on every field and the role (and its
    account) stayed behind a 204."""
    name = unique("roles")
    email = f"{name}@contoso.test"
    created = scim.post("/Users", entra.create_user(email, email, oid(), kinds=("user", "agent")))
    assert created.status_code == 201, created.text
    scim_id = created.json()["id"]
    renamed = {"op": "Remove", "path": "roles", "value": [{"value": "Portal.User", "display": "Renamed"}]}
    assert scim.patch(f"/Users/{scim_id}", entra.patch(renamed)).status_code in (200, 204)
    assert set(accounts_of(scim, email)) == {"agent"}
    shaped = {"op": "Remove", "path": "roles", "value": [{**entra.role("agent"), "primary": True}]}
    assert scim.patch(f"/Users/{scim_id}", entra.patch(shaped)).status_code in (200, 204)
    assert accounts_of(scim, email) == {}
    assert not scim.get(f"/Users/{scim_id}").json().get("roles")


def test_a_json_string_role_is_kept_as_its_plain_value_from_post_put_and_patch(scim):
    name = unique("roles")
    email = f"{name}@contoso.test"
    body = entra.create_user(f"{name}@contoso.test", email, oid(), kinds=())
    body["roles"] = entra.add_role_complex("agent")["value"]
    created = scim.post("/Users", body)
    assert created.status_code == 201, created.text
    assert created.json()["roles"] == [{"value": "Portal.Agent", "display": "Agent"}]
    scim_id = created.json()["id"]
    body["roles"] = entra.add_role_complex("user")["value"]
    assert scim.put(f"/Users/{scim_id}", body).json()["roles"] == [{"value": "Portal.User", "display": "User"}]
    no_path = {"op": "Add", "value": {"roles": entra.add_role_complex("agent")["value"]}}
    assert scim.patch(f"/Users/{scim_id}", entra.patch(no_path)).status_code in (200, 204)
    assert [r["value"] for r in scim.get(f"/Users/{scim_id}").json()["roles"]] == ["Portal.User", "Portal.Agent"]
    assert set(accounts_of(scim, email)) == {"user", "agent"}


# ---- a Remove naming its value as a plain value (entra.remove_with_value) ----

WORK_EMAIL = 'emails[type eq "work"].value'


def created(scim, kinds=("user",)) -> tuple[str, str]:
    name = unique("rv")
    email = f"{name}@contoso.test"
    response = scim.post("/Users", entra.create_user(f"{name}@contoso.test", email, oid(), kinds=kinds))
    assert response.status_code == 201, response.text
    return response.json()["id"], email


def test_a_remove_naming_the_current_value_removes_it_as_a_remove_without_value_does(scim):
    """It was a 400 (the library takes only entries as a Remove's value), and the PATCH's other
    operations went with it. The value is compared as the attribute compares (the email's ASCII case
    folded), and the email removed so leaves the person as a Remove without value does: no account."""
    with_value, email = created(scim)
    without_value, other = created(scim)
    named = entra.patch(entra.remove_with_value(WORK_EMAIL, email.upper()),
                        entra.remove_with_value("name.familyName", "Lee"),
                        entra.remove_with_value("displayName", "Ann Lee"),
                        entra.remove_with_value('phoneNumbers[type eq "work"].value', "+1 555 0100"),
                        entra.remove_with_value(f"{entra.ENTERPRISE}:department", "Contact center"))
    response = scim.patch(f"/Users/{with_value}", named)
    assert response.status_code == 204, response.text
    plain = entra.patch(*({"op": "Remove", "path": p} for p in (WORK_EMAIL, "name.familyName", "displayName")))
    assert scim.patch(f"/Users/{without_value}", plain).status_code == 204
    got, reference = scim.get(f"/Users/{with_value}").json(), scim.get(f"/Users/{without_value}").json()
    for user in (got, reference):
        assert "displayName" not in user and "familyName" not in user["name"] and user["name"]["givenName"] == "Ann"
        assert all("value" not in e for e in user.get("emails") or []), user
    assert got.get("emails") == reference.get("emails")
    assert accounts_of(scim, email) == {} and accounts_of(scim, other) == {}, "no email, no account (SPEC)"


def test_a_remove_naming_a_value_the_person_does_not_hold_changes_nothing(scim):
    """The value selects what goes (RFC 7644 3.5.2.2 removes the values a filter matches; the fix
    proposed for Microsoft's reference server, its pull request #87, keeps an email a Remove names
    wrongly): another value removes nothing, and the PATCH still succeeds."""
    scim_id, email = created(scim)
    before = scim.get(f"/Users/{scim_id}").json()
    stale = entra.patch(entra.remove_with_value(WORK_EMAIL, f"someone-else-{email}"),
                        entra.remove_with_value("displayName", "Ann Leigh"),
                        entra.remove_with_value("name.familyName", "Le"),
                        entra.remove_with_value("emails", f"x{email}"))
    response = scim.patch(f"/Users/{scim_id}", stale)
    assert response.status_code == 204, response.text
    after = scim.get(f"/Users/{scim_id}").json()
    assert {k: after[k] for k in ("emails", "displayName", "name")} == \
        {k: before[k] for k in ("emails", "displayName", "name")}
    assert after["meta"]["version"] == before["meta"]["version"], "nothing changed, nothing written"
    assert accounts_of(scim, email)["user"].enabled


def test_a_remove_with_a_value_no_longer_refuses_the_disable_sent_with_it(scim):
    """A leaver: [Remove name.familyName "Lee", Replace active "False"] was a 400, the account enabled."""
    scim_id, email = created(scim)
    response = scim.patch(f"/Users/{scim_id}", entra.patch(entra.remove_with_value("name.familyName", "Lee"),
                                                           entra.disable()))
    assert response.status_code == 204, response.text
    assert accounts_of(scim, email)["user"].enabled is False


def test_a_remove_with_a_value_reads_the_value_the_earlier_operations_left(scim):
    """Operations apply in order: a value set by an earlier operation of the same PATCH is the one a
    Remove compares, and the value it replaced is no longer there to remove."""
    scim_id, _ = created(scim)
    response = scim.patch(f"/Users/{scim_id}", entra.patch({"op": "Replace", "path": "displayName", "value": "Zed"},
                                                           entra.remove_with_value("displayName", "Zed")))
    assert response.status_code == 204, response.text
    assert "displayName" not in scim.get(f"/Users/{scim_id}").json()
    response = scim.patch(f"/Users/{scim_id}", entra.patch(entra.replace_family_name("Moe"),
                                                           entra.remove_with_value("name.familyName", "Lee")))
    assert response.status_code == 204, response.text
    assert scim.get(f"/Users/{scim_id}").json()["name"]["familyName"] == "Moe"


def test_a_remove_with_a_value_under_a_stale_if_match_is_412_before_its_value_is_read(scim):
    """The precondition comes first, as for any PATCH: a stale If-Match is 412 and changes nothing,
    whether the value names what the person holds or is one the selection refuses (a 400 without
    If-Match: the value was read first, so a stale writer was told its value was bad)."""
    scim_id, email = created(scim)
    before = scim.get(f"/Users/{scim_id}").json()
    stale = {"If-Match": 'W/"999"'}
    bad = entra.patch(entra.remove_with_value("emails", float("nan")))  # json.dumps sends NaN
    assert scim.patch(f"/Users/{scim_id}", bad).status_code == 400
    for body in (bad, entra.patch(entra.remove_with_value("displayName", before["displayName"]))):
        response = scim.patch(f"/Users/{scim_id}", body, headers=stale)
        assert response.status_code == 412, response.text
    after = scim.get(f"/Users/{scim_id}").json()
    assert after["displayName"] == before["displayName"] and after["meta"]["version"] == before["meta"]["version"]
    assert accounts_of(scim, email)["user"].enabled


def test_a_remove_with_a_value_on_a_multi_valued_path_removes_only_the_matching_entry(scim):
    scim_id, email = created(scim)
    home = f"{unique('home')}@contoso.test"
    added = scim.patch(f"/Users/{scim_id}", entra.patch({"op": "Add", "path": "emails",
                                                         "value": [{"type": "home", "value": home}]}))
    assert added.status_code == 204, added.text
    response = scim.patch(f"/Users/{scim_id}", entra.patch(entra.remove_with_value("emails", home)))
    assert response.status_code == 204, response.text
    assert [e["value"] for e in scim.get(f"/Users/{scim_id}").json()["emails"]] == [email]
    assert accounts_of(scim, email)["user"].enabled


def test_a_new_primary_work_email_added_beside_the_old_one_moves_the_accounts_to_it(scim):
    """The Add leaves two work emails, the old one made primary: false by the library; the account
    followed the first (the old mailbox)."""
    scim_id, email = created(scim, kinds=("user", "agent"))
    before = accounts_of(scim, email)
    new = f"{unique('new')}@contoso.test"
    added = {"op": "Add", "path": "emails", "value": [{"type": "work", "value": new, "primary": True}]}
    response = scim.patch(f"/Users/{scim_id}", entra.patch(added))
    assert response.status_code == 204, response.text
    emails = scim.get(f"/Users/{scim_id}").json()["emails"]
    assert [(e["value"], e.get("primary")) for e in emails] == [(email, False), (new, True)]
    assert accounts_of(scim, email) == {}, "the old mailbox finds nothing"
    moved = accounts_of(scim, new)
    assert {k: a.account_id for k, a in moved.items()} == {k: a.account_id for k, a in before.items()}
