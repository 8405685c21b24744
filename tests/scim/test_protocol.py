"""The SCIM protocol's edges through tools.host against Azurite: on/off and token errors, SCIM error
bodies with their status and scimType (each with its DirectoryEvents row), attributes and
excludedAttributes, If-Match, the accounts rules (adoption, conflicts, accounts never provisioned),
two PATCHes at once, a PATCH racing a DELETE or an email move, and a storage outage."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import urllib3.connectionpool

from shared.scim import store
from shared.scim.mapping import user_name_key
from shared.tables import ACCOUNTS_TABLE, SCIM_USERS_TABLE
from tests.scim import entra
from tests.scim.conftest import TENANT, TIMEOUT, TOKEN, Scim, oid, unique
from tests.scim.test_setup_page import section as setup_section
from tests.support.fault_proxy import FaultProxy
from tools.stack import azurite_connection_string


def new_user(scim, kinds=("user",), email=None, external_id=None, **kw):
    name = unique("p")
    email = email or f"{name}@contoso.test"
    response = scim.post("/Users", entra.create_user(f"{name}@contoso.test", email, external_id or oid(),
                                                     kinds=kinds, **kw))
    assert response.status_code == 201, response.text
    return response.json(), email


def error_of(response, status: int, scim_type: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == str(status)
    if scim_type:
        assert body.get("scimType") == scim_type, body
    return body


def event_for(scim, status: int, reason: str | None = None) -> dict:
    rows = [e for e in scim.events() if e.get("Status") == status and (reason is None or e.get("Reason") == reason)]
    assert rows, f"no DirectoryEvents row with status {status} reason {reason}"
    return rows[0]


# ---- on, off, tokens ----

@pytest.mark.parametrize("kind", [None, "users"])
def test_without_a_token_directory_sync_is_off_and_every_route_is_404(use_settings, kind):
    """SPEC: no token configured, directory sync is off (404), whatever SCIM_DEFAULT_KIND holds: a bad
    one turned it on, every route a 503 "fix SCIM_DEFAULT_KIND" with its row, the setup page red."""
    off = Scim(use_settings(SCIM_TOKEN=None, SCIM_DEFAULT_KIND=kind))
    before = len(off.events())
    for path in ("/Users", "/ServiceProviderConfig", "/Schemas", "/Users/x", "/"):
        error_of(off.get(path), 404)
    for method in ("OPTIONS", "DELETE"):  # whatever the method: nothing here
        error_of(off.request(method, "/Users"), 404)
    assert len(off.events()) == before, "an app with sync off records nothing for strangers"


def test_a_short_token_is_a_setting_error_naming_the_setting_not_its_value(use_settings):
    short = "s" * 31
    broken = Scim(use_settings(SCIM_TOKEN=short), token=short)
    body = error_of(broken.get("/Users"), 503)
    assert "SCIM_TOKEN" in body["detail"] and short not in body["detail"]
    assert short not in str(event_for(broken, 503, "configuration_error"))


def test_an_unresolved_key_vault_reference_as_the_token_is_a_setting_error_never_accepted(use_settings):
    """App Service gives the app a reference it could not resolve as its text, whose vault and secret
    names are derivable defaults: that text was the token, `Bearer <the reference>` let anyone in."""
    reference = "@Microsoft.KeyVault(SecretUri=https://contoso-sso-kv.vault.azure.net/secrets/scim-token/)"
    broken = Scim(use_settings(SCIM_TOKEN=reference), token=reference)
    body = error_of(broken.get("/Users"), 503)
    assert "SCIM_TOKEN" in body["detail"] and "contoso-sso-kv" not in str(body), body
    assert "contoso-sso-kv" not in str(event_for(broken, 503, "configuration_error"))
    shown = setup_section()
    assert "setting error" in shown and "Key Vault Secrets User" in shown and "contoso-sso-kv" not in shown, shown


def test_two_tokens_one_per_line_are_both_accepted_and_no_third(use_settings):
    new, old = "n" * 40, "o" * 40
    both = Scim(use_settings(SCIM_TOKEN=f"{new}\n{old}\n"))
    for token in (new, old):
        assert both.get("/Users", token=token).status_code == 200
    for token in ("x" * 40, new + "x", new[:-1], "", f"{new} {old}"):
        error_of(both.get("/Users", token=token), 401)
    error_of(both.get("/Users", headers={"Authorization": f"Basic {new}"}), 401)
    assert both.get("/Users", headers={"Authorization": f"bearer {new}"}).status_code == 200, "scheme any case"


# ---- errors: status, scimType, audit row, never a 500 ----

def test_a_bug_met_in_a_scim_request_is_a_scim_500_with_its_row_and_log_not_the_hosts_html(scim, monkeypatch, caplog):
    """Only an outage or a settings problem was caught: anything else (storage answering JSON that is no
    table data, a bug of ours) left through the HTTP glue as an HTML 500 with no SCIM body, no
    X-Correlation-Id, no DirectoryEvents row and no scim.request line."""
    from shared.scim import mapping

    def broken(*args, **kwargs):
        raise KeyError("PartitionKey")  # what reading a row that is no table row raised

    monkeypatch.setattr(mapping, "kinds_of", broken)
    response = scim.post("/Users", entra.create_user(unique(), f"{unique()}@contoso.test", oid()))
    body = error_of(response, 500)
    assert "PartitionKey" not in body.get("detail", "") and "Traceback" not in response.text
    correlation_id = response.headers["X-Correlation-Id"]
    (row,) = [e for e in scim.events() if e["CorrelationId"] == correlation_id]
    assert (row["Status"], row["Reason"]) == (500, "internal_error"), row
    assert any(correlation_id in r.getMessage() and r.exc_info for r in caplog.records), "a traceback, logged"


def test_bad_requests_get_scim_errors_with_scim_type_and_an_audit_row(scim):
    user, _ = new_user(scim)
    cases = [
        (scim.request("POST", "/Users", raw=b'{"userName": '), 400, "invalidSyntax"),
        (scim.post("/Users", {"schemas": ["urn:example:unknown"], "userName": unique()}), 400, "invalidSyntax"),
        (scim.post("/Users", entra.create_user("u" * 257, f"{unique()}@contoso.test", oid())), 400, "invalidValue"),
        (scim.post("/Users", entra.create_user(unique(), "a b@contoso.test", oid())), 400, "invalidValue"),
        (scim.post("/Users", entra.create_user(unique(), "Cafe\u0301@contoso.test", oid())), 400, "invalidValue"),
        (scim.post("/Users", entra.create_user(unique(), f"{'e' * 250}@contoso.test", oid())), 400, "invalidValue"),
        (scim.post("/Users", entra.create_user(unique(), "no-at-sign", oid())), 400, "invalidValue"),
        (scim.post("/Users", entra.create_user(user["userName"].upper(), f"{unique()}@contoso.test", oid())),
         409, "uniqueness"),
        (scim.get("/Users", params={"filter": 'title eq "x"'}), 400, "invalidFilter"),
        (scim.get("/Users", params={"filter": 'userName eq'}), 400, "invalidFilter"),
        (scim.patch(f"/Users/{user['id']}", entra.patch({"op": "Replace", "path": "id", "value": "mine"})),
         400, "mutability"),
        (scim.patch(f"/Users/{user['id']}", entra.patch({"op": "Jump", "path": "active", "value": True})),
         400, None),
        (scim.get("/Users/0b7c9f47-0000-4000-8000-000000000000"), 404, None),
        (scim.get("/Groups"), 404, None),
        (scim.get(f"/Users/{user['id']}/manager"), 404, None),  # deeper than a resource: SCIM's 404, not the host's
        (scim.get("//Groups"), 404, None),  # an empty first segment: the service's 404 too, not tools.host's page
        (scim.get("//Users", token="wrong-token-" * 4), 401, None),
        (scim.post("/Schemas", {"schemas": []}), 405, None),
        (scim.put("/ServiceProviderConfig", {}), 405, None),
        # a method no trigger list named: the SCIM service's own 405 and row (Azure's host answered its empty 404)
        (scim.request("TRACE", "/Users"), 405, None), (scim.request("PROPFIND", f"/Users/{user['id']}"), 405, None),
        (scim.post("/Users/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}), 501, None),
        (scim.request("POST", "/Users", raw=b"x" * (256 * 1024 + 1)), 413, None),
        (scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable()), headers={"If-Match": 'W/"999"'}), 412, None),
    ]
    for response, status, scim_type in cases:
        body = error_of(response, status, scim_type)
        assert "Traceback" not in body.get("detail", "")
    statuses = {e["Status"] for e in scim.events()}
    assert {400, 404, 405, 409, 412, 413, 501} <= statuses, "every refused request has its row"


@pytest.mark.parametrize("extension", [entra.CUSTOM, entra.CUSTOM.lower(),
                                       "urn:ietf:params:scim:schemas:extension:contoso:hr:2.0:User"])
def test_a_custom_user_extension_is_accepted_and_dropped_in_a_create_a_put_and_a_patch(scim, extension):
    """An admin's first custom attribute mapping (ROLES' page) put its extension in every POST, which
    was 400 "unknown schema" (while its PATCHes were accepted): no new person was provisioned."""
    name = unique("cx")
    email = f"{name}@contoso.test"
    body = entra.create_user(f"{name}@contoso.test", email, oid())
    body["schemas"].append(extension)
    body[extension] = {"costCenter": "CC-17", "badge": {"id": 9}}
    response = scim.post("/Users", body)
    assert response.status_code == 201, response.text
    user = response.json()
    assert user["schemas"] == [entra.USER] and extension not in user and entra.CUSTOM not in user
    assert scim.runtime.accounts.get(email, "user").enabled
    replaced = scim.put(f"/Users/{user['id']}", {**body, "displayName": "Ann Put"})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["schemas"] == [entra.USER] and replaced.json()["displayName"] == "Ann Put"
    for op in ({"op": "Add", "path": f"{extension}:costCenter", "value": "CC-18"},
               {"op": "Replace", "value": {f"{extension}:costCenter": "CC-19", "displayName": "Ann Patched"}}):
        assert scim.patch(f"/Users/{user['id']}", entra.patch(op)).status_code == 204
    got = scim.get(f"/Users/{user['id']}").json()
    assert got["displayName"] == "Ann Patched" and extension not in got and "costCenter" not in str(got)
    assert scim.get("/Schemas").json()["totalResults"] == 1, "/Schemas lists only what the portal keeps"


@pytest.mark.parametrize("schema", ["urn:example:unknown", "urn:ietf:params:scim:schemas:extension:contoso:2.0:Group",
                                    "urn:ietf:params:scim:schemas:core:2.0:Group",
                                    "urn:ietf:params:scim:schemas:extension::2.0:User",
                                    "urn:ietf:params:scim:schemas:extension:contoso:1.0:User",
                                    "urn:ietf:params:scim:schemas:extension:con toso:2.0:User",
                                    "urn:ietf:params:scim:schemas:extension:contoso:2.0:User:costCenter"])
def test_a_schema_that_is_not_a_user_extension_is_still_refused(scim, schema):
    name = unique("cx")
    body = entra.create_user(f"{name}@contoso.test", f"{name}@contoso.test", oid())
    body["schemas"].append(schema)
    error_of(scim.post("/Users", body), 400, "invalidSyntax")
    assert scim.runtime.accounts.get(f"{name}@contoso.test", "user") is None


def test_if_match_with_the_current_version_applies(scim):
    user, email = new_user(scim)
    current = scim.get(f"/Users/{user['id']}")
    assert current.headers["ETag"] == user["meta"]["version"]
    applied = scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable()),
                         headers={"If-Match": current.headers["ETag"]})
    assert applied.status_code in (200, 204)
    assert scim.runtime.accounts.get(email, "user").enabled is False


def test_attributes_and_excluded_attributes_are_honoured(scim):
    user, _ = new_user(scim)
    only = scim.get(f"/Users/{user['id']}", params={"attributes": "userName"}).json()
    assert set(only) <= {"schemas", "id", "userName", "meta"} and only["userName"] == user["userName"]
    without = scim.get(f"/Users/{user['id']}", params={"excludedAttributes": "emails,name"}).json()
    assert "emails" not in without and "name" not in without and without["userName"] == user["userName"]
    listed = scim.get("/Users", params={"filter": f'userName eq "{user["userName"]}"', "attributes": "active"}).json()
    assert listed["Resources"] and set(listed["Resources"][0]) <= {"schemas", "id", "active", "meta"}


def test_every_email_of_a_person_is_found_by_the_email_filters(scim):
    name = unique("two")
    work, home = f"{name}@contoso.test", f"{name}-home@contoso.test"
    body = entra.create_user(f"{name}@contoso.test", work, oid())
    body["emails"].append({"type": "home", "value": home})
    user = scim.post("/Users", body).json()
    for flt in (f'emails.value eq "{home}"', f'emails[type eq "home"].value eq "{home}"', f'emails[value eq "{home}"]',
                f'emails.value eq "{work}"', f'emails[type eq "work"].value eq "{work}"'):
        listed = scim.get("/Users", params={"filter": flt}).json()
        assert [u["id"] for u in listed["Resources"]] == [user["id"]], flt
    assert scim.get("/Users", params={"filter": f'emails[type eq "work"].value eq "{home}"'}
                    ).json()["totalResults"] == 0, "the filter itself still decides"


def test_an_email_filter_finds_everyone_holding_the_address_not_only_its_account_holder(scim):
    """Only the account's (work) email is one person's; another person may list it as a home or
    other email, and `emails.value eq` finds both of them."""
    holder, email = new_user(scim)
    name = unique("lister")
    body = entra.create_user(f"{name}@contoso.test", f"{name}@contoso.test", oid())
    body["emails"].append({"type": "other", "value": email})
    lister = scim.post("/Users", body).json()
    for flt, expected in ((f'emails.value eq "{email}"', {holder["id"], lister["id"]}),
                          (f'emails[value eq "{email}"]', {holder["id"], lister["id"]}),
                          (f'emails[type eq "other"].value eq "{email}"', {lister["id"]}),
                          (f'emails[type eq "work"].value eq "{email}"', {holder["id"]})):
        listed = scim.get("/Users", params={"filter": flt}).json()
        assert {u["id"] for u in listed["Resources"]} == expected, flt


@pytest.mark.parametrize("stored, asked", [("\u00c4rzte", "\u00e4rzte"), ("kim", "\u212aim")],
                         ids=["umlaut-case", "kelvin-sign"])
def test_every_filter_shape_compares_names_and_emails_as_the_email_key_does(scim, stored, asked):
    """Only ASCII A-Z are folded (SPEC's email key): 'Ä'/'ä' and the Kelvin sign/'k' are other mailboxes.
    A filter the pointers answer agreed; one answered by a scan (an `or`, an email that is not the work
    one) compared like Unicode (scim2-models' default), so one mailbox's lookup found another's person,
    whom Entra then PATCHes."""
    email = f"{unique(stored)}@contoso.test"
    created = scim.post("/Users", entra.create_user(email, email, oid()))
    assert created.status_code == 201, created.text
    holder, other = created.json(), email.replace(stored, asked, 1)
    user_name = other
    for flt in (f'userName eq "{user_name}"', f'userName eq "{user_name}" or userName eq "nobody"',
                f'emails[type eq "work" and value eq "{other}"]', f'emails[value eq "{other}"]',
                f'emails.value eq "{other}"'):
        listed = scim.get("/Users", params={"filter": flt}).json()
        assert listed["totalResults"] == 0, f"{flt} found {[u['userName'] for u in listed['Resources']]}"
    found = scim.get("/Users", params={"filter": f'userName eq "{holder["userName"].upper()}" or userName eq "x"'})
    assert [u["id"] for u in found.json()["Resources"]] == [holder["id"]], "ASCII case still folds in a scan"


def test_paging_with_start_index_and_count(scim):
    for _ in range(3):
        new_user(scim)
    page = scim.get("/Users", params={"startIndex": "2", "count": "2"}).json()
    assert page["startIndex"] == 2 and page["itemsPerPage"] == len(page["Resources"]) <= 2
    assert page["totalResults"] >= 3


# ---- accounts: adoption, conflicts, accounts never provisioned ----

def test_an_existing_account_is_adopted_keeping_its_account_id(scim):
    email = f"{unique('imported')}@contoso.test"
    scim.runtime.accounts.add(email, "agent", "A-77001", "Imported")
    user, _ = new_user(scim, kinds=("agent",), email=email)
    account = scim.runtime.accounts.get(email, "agent")
    assert account.account_id == "A-77001" and account.linked_idp_subject == f"{TENANT}:{user['externalId']}"
    row = scim.runtime.tables.client(ACCOUNTS_TABLE).get_entity(email.lower(), "agent")
    assert row["ScimId"] == user["id"], "provisioned from now on"


def test_an_adoptee_linked_to_another_person_is_409_and_left_as_it_was(scim):
    email = f"{unique('linked')}@contoso.test"
    scim.runtime.accounts.add(email, "user", "U-88001")
    scim.runtime.accounts.update(email, "user", LinkedIdpSubject=f"{TENANT}:{oid()}")
    before = scim.runtime.tables.client(ACCOUNTS_TABLE).get_entity(email.lower(), "user")
    name = unique()
    response = scim.post("/Users", entra.create_user(f"{name}@contoso.test", email, oid(), kinds=("user",)))
    error_of(response, 409, "uniqueness")
    after = scim.runtime.tables.client(ACCOUNTS_TABLE).get_entity(email.lower(), "user")
    assert after.metadata["etag"] == before.metadata["etag"], "never re-pointed"
    assert scim.get("/Users", params=entra.by_user_name(f"{name}@contoso.test")).json()["totalResults"] == 0



@pytest.mark.parametrize("external_id", ["mallory", None], ids=["not-a-guid", "absent"])
def test_a_linked_account_is_not_adopted_by_a_person_without_that_link(scim, external_id):
    """SECURITY.md: a stolen token cannot take an account someone has signed in to. Without a GUID
    externalId the person has no link, so a linked row is someone else's (409, untouched)."""
    email, account_id = f"{unique('alice')}@contoso.test", unique("U")  # each parameter its own account
    scim.runtime.accounts.add(email, "user", account_id)
    alice = f"{TENANT}:{oid()}"
    scim.runtime.accounts.update(email, "user", LinkedIdpSubject=alice)  # as her first login does
    table = scim.runtime.tables.client(ACCOUNTS_TABLE)
    before = table.get_entity(email.lower(), "user")
    body = entra.create_user(f"{unique('mallory')}@contoso.test", email, external_id or "", kinds=("user",))
    if external_id is None:
        body.pop("externalId")
    error_of(scim.post("/Users", body), 409, "uniqueness")
    after = table.get_entity(email.lower(), "user")
    assert after.metadata["etag"] == before.metadata["etag"] and "ScimId" not in after
    account = scim.runtime.accounts.get(email, "user")
    assert (account.account_id, account.linked_idp_subject, account.enabled) == (account_id, alice, True)


def test_a_linked_account_is_adopted_by_the_person_it_is_linked_to(scim):
    email = f"{unique('alice')}@contoso.test"
    object_id = oid()
    scim.runtime.accounts.add(email, "user", "U-88003")
    scim.runtime.accounts.update(email, "user", LinkedIdpSubject=f"{TENANT}:{object_id}")
    user, _ = new_user(scim, kinds=("user",), email=email, external_id=object_id)
    account = scim.runtime.accounts.get(email, "user")
    assert (account.account_id, account.linked_idp_subject) == ("U-88003", f"{TENANT}:{object_id}")
    row = scim.runtime.tables.client(ACCOUNTS_TABLE).get_entity(email.lower(), "user")
    assert row["ScimId"] == user["id"]


@pytest.mark.parametrize("how", ["in_place", "moving", "linked_at_login"])
def test_a_changed_external_id_is_409_while_the_account_is_linked_to_the_old_identity(scim, how):
    """Entra matches a re-created (or rehired) Entra user to the old SCIM User by userName and PATCHes
    the new object id into externalId. The accounts stay linked to the old identity (never
    re-pointed: SPEC), so a 204 would hide that the new one can never sign in (IdentityMismatch):
    409 uniqueness, nothing written, its DirectoryEvents row saying why; once the admin unlinks the
    account, Entra's retry links it to the new identity."""
    old_oid, new_oid = oid(), oid()
    user, email = new_user(scim, external_id=old_oid if how != "linked_at_login" else f"alias-{unique()}")
    accounts, table = scim.runtime.accounts, scim.runtime.tables.client(SCIM_USERS_TABLE)
    linked = f"{TENANT}:{old_oid}"
    if how == "linked_at_login":  # no GUID externalId: the first login linked it
        accounts.link_and_record_login(accounts.get(email, "user"), linked)
    person = table.get_entity("P", user["id"])
    account_row = scim.runtime.tables.client(ACCOUNTS_TABLE).get_entity(email, "user")
    ops = [{"op": "Replace", "path": "externalId", "value": new_oid}, {"op": "Replace", "path": "active",
                                                                       "value": "True"}]
    new_email = email.replace("@", ".moved@")
    if how == "moving":
        ops.append(entra.replace_work_email(new_email))
    response = scim.patch(f"/Users/{user['id']}", entra.patch(*ops))
    body = error_of(response, 409, "uniqueness")
    assert "unlink" in body["detail"], body
    after = table.get_entity("P", user["id"])
    assert after.metadata["etag"] == person.metadata["etag"], "the person row was written"
    assert scim.get(f"/Users/{user['id']}").json()["externalId"] == user["externalId"]
    assert scim.runtime.tables.client(ACCOUNTS_TABLE).get_entity(email, "user").metadata["etag"] == \
        account_row.metadata["etag"], "the account was written"
    assert accounts.get(new_email, "user") is None
    row = next(e for e in scim.events() if e["CorrelationId"] == response.headers["X-Correlation-Id"])
    assert (row["Status"], row["Reason"]) == (409, "uniqueness") and "another Entra identity" in row["Detail"], row
    assert f"accounts unlink {email} --kind user" in setup_section(), "the setup page says what to do"
    assert accounts.unlink(email, "user")  # the admin's resolution (accounts unlink), then Entra's retry
    assert scim.patch(f"/Users/{user['id']}", entra.patch(*ops)).status_code == 204
    account = accounts.get(new_email if how == "moving" else email, "user")
    assert account.linked_idp_subject == f"{TENANT}:{new_oid}"
    assert scim.get(f"/Users/{user['id']}").json()["externalId"] == new_oid


def test_a_filtered_key_inside_a_path_less_value_is_applied_as_its_own_operation(scim):
    """A value object's keys are attribute names: a filtered one (`emails[type eq "work"].value`) was
    dropped as unknown, so the PATCH was a 204 whose email move never happened. Refusing it (400) would
    refuse the `active: False` beside it too, so a leaver stayed enabled: it is the operation it names."""
    user, email = new_user(scim)
    new_email = email.replace("@", ".new@")
    body = entra.patch({"op": "Replace", "value": {'emails[type eq "work"].value': new_email, "active": "False"}})
    assert scim.patch(f"/Users/{user['id']}", body).status_code == 204
    assert scim.runtime.accounts.get(email, "user") is None, "the account moved"
    moved = scim.runtime.accounts.get(new_email, "user")
    assert moved is not None and moved.enabled is False, "and the disable beside it applied"


def test_one_persons_email_or_account_is_never_given_to_another(scim):
    first, first_email = new_user(scim, kinds=("user",))
    error_of(scim.post("/Users", entra.create_user(f"{unique()}@contoso.test", first_email.upper(), oid())),
             409, "uniqueness")
    second, second_email = new_user(scim, kinds=("user",))
    error_of(scim.patch(f"/Users/{second['id']}", entra.patch(entra.replace_work_email(first_email))),
             409, "uniqueness")
    assert scim.runtime.accounts.get(second_email, "user").account_id == f"scim-user-{second['id']}", "unchanged"
    assert scim.runtime.accounts.get(first_email, "user").account_id == f"scim-user-{first['id']}"
    # An unprovisioned account at the email a person moves to is not merged into theirs.
    taken = f"{unique('cli')}@contoso.test"
    scim.runtime.accounts.add(taken, "user", "U-99001")
    error_of(scim.patch(f"/Users/{second['id']}", entra.patch(entra.replace_work_email(taken))), 409, "uniqueness")
    assert scim.runtime.accounts.get(taken, "user").account_id == "U-99001"


def test_accounts_never_provisioned_are_untouched(scim):
    email = f"{unique('mixed')}@contoso.test"
    other = f"{unique('bystander')}@contoso.test"
    scim.runtime.accounts.add(email, "user", "U-55001", "By hand")  # same email, a kind the person does not get
    scim.runtime.accounts.add(other, "agent", "A-55002", "Bystander")
    table = scim.runtime.tables.client(ACCOUNTS_TABLE)
    before = {(pk, k): table.get_entity(pk, k).metadata["etag"] for pk, k in ((email, "user"), (other, "agent"))}
    user, _ = new_user(scim, kinds=("agent",), email=email)
    for op in (entra.disable(), entra.enable_without_path(), entra.remove_role("agent")):
        assert scim.patch(f"/Users/{user['id']}", entra.patch(op)).status_code in (200, 204)
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    after = {(pk, k): table.get_entity(pk, k).metadata["etag"] for pk, k in before}
    assert after == before


def test_no_email_gives_no_account_and_default_kind_applies_without_a_role(use_settings):
    scim = Scim(use_settings(SCIM_TOKEN=TOKEN, SCIM_DEFAULT_KIND="agent"))
    user, email = new_user(scim, kinds=())
    assert scim.runtime.accounts.get(email, "agent").account_id == f"scim-agent-{user['id']}"
    assert scim.runtime.accounts.get(email, "user") is None
    body = entra.create_user(f"{unique()}@contoso.test", "x@contoso.test", oid(), kinds=("user",))
    body.pop("emails")
    assert scim.post("/Users", body).status_code == 201
    assert scim.runtime.accounts.get("x@contoso.test", "user") is None


# ---- concurrency and faults ----

def test_concurrent_patches_to_one_person_lose_nothing(scim):
    user, _ = new_user(scim)
    writers = 6
    barrier = threading.Barrier(writers)
    statuses = []

    def add_email(i: int) -> None:
        client = Scim(scim.runtime)
        barrier.wait()
        address = f"alt{i}-{user['id'][:8]}@contoso.test"
        op = {"op": "Add", "path": "emails", "value": [{"type": "other", "value": address}]}
        statuses.append(client.patch(f"/Users/{user['id']}", entra.patch(op)).status_code)

    threads = [threading.Thread(target=add_email, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s in (200, 204) for s in statuses), statuses
    emails = {e["value"] for e in scim.get(f"/Users/{user['id']}").json()["emails"]}
    assert {f"alt{i}-{user['id'][:8]}@contoso.test" for i in range(writers)} <= emails, "every PATCH landed"
    assert scim.get(f"/Users/{user['id']}").json()["meta"]["version"] == f'W/"{1 + writers}"'


def test_many_patches_of_a_few_people_at_once_leave_each_account_as_its_person_is(scim):
    """48 PATCHes of 4 people from 6 clients at once, mixing email moves and `active` changes (the soak
    that found RELIABILITY.md's race rows): whatever order they land in, each person has one account
    row, at the email it has, `Enabled` as it is `active`. Before, a retry whose change was no longer
    news (another request had made it) wrote nothing, leaving what its lost attempt had written from a
    stale view: in 4 of 5 runs a stray row at an earlier email, or `Enabled` unlike `active`."""
    people = [new_user(scim)[0] for _ in range(4)]
    choose = random.Random(7)  # the same interleaving of requests each run; their timing is the machine's
    enable = {"op": "Replace", "path": "active", "value": "True"}
    jobs = [(person, choose.choice([entra.replace_work_email(f"soak{i}-{person['id'][:8]}@contoso.test"),
                                    entra.replace_work_email(f"soak{i}-{person['id'][:8]}@contoso.test"),
                                    entra.disable(), enable]))
            for i, person in enumerate(choose.choice(people) for _ in range(48))]
    statuses: list[int] = []
    queue = iter(jobs)
    lock = threading.Lock()

    def client() -> None:
        scim_client = Scim(scim.runtime)
        while (job := next_job()) is not None:
            statuses.append(scim_client.patch(f"/Users/{job[0]['id']}", entra.patch(job[1])).status_code)

    def next_job():
        with lock:
            return next(queue, None)
    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 48 and set(statuses) <= {200, 204, 412}, statuses  # 412: gave up on the races
    for person in people:
        now = scim.get(f"/Users/{person['id']}").json()
        email = now["emails"][0]["value"]
        assert rows_of(scim, person["id"]) == [(email, "user")], f"{person['id']}: rows beside {email}"
        assert scim.runtime.accounts.get(email, "user").enabled is now["active"], f"{person['id']}: Enabled"


class PausedAt:
    """The first call of one TableClient method on `table_name` after this is made (with these first
    arguments, on the thread `after` paused, when given) waits, on the app's thread serving that
    request, until `resume`: one request paused at a chosen step while the test sends another. Every
    other call is the real one."""

    def __init__(self, monkeypatch, method: str, table_name: str = ACCOUNTS_TABLE, args: tuple = (),
                 after: PausedAt | None = None):
        from azure.data.tables import TableClient

        self.paused, self.resume, self.thread = threading.Event(), threading.Event(), None
        real, armed = getattr(TableClient, method), [True]

        def call(table, *given, **kwargs):
            if armed[0] and table.table_name == table_name and given[:len(args)] == args and \
                    (after is None or (after.thread is threading.current_thread())):
                armed[0], self.thread = False, threading.current_thread()
                self.paused.set()
                assert self.resume.wait(TIMEOUT), "the paused request was never resumed"
            return real(table, *given, **kwargs)
        monkeypatch.setattr(TableClient, method, call)


def paused_patch(scim, monkeypatch, user: dict, step: str, operation: dict, meanwhile, then=None,
                 made: list | None = None, headers: dict | None = None) -> int:
    """Request B (`operation`) paused at `step` of its accounts (its first read of them: "plan", or
    its first write: "write"), `meanwhile()` run whole, then B resumed: B's status. With `then`: B
    paused again at its retry's read of the person (after it lost the race), `then()` run whole, and
    B resumed. `made` gets the keys of the account rows B created."""
    from azure.data.tables import TableClient

    pause = PausedAt(monkeypatch, {"plan": "get_entity", "write": "update_entity"}[step])
    real_create = TableClient.create_entity

    def create_entity(table, entity, **kwargs):
        if made is not None and table.table_name == ACCOUNTS_TABLE and pause.thread is threading.current_thread():
            made.append(entity["PartitionKey"])
        return real_create(table, entity, **kwargs)
    monkeypatch.setattr(TableClient, "create_entity", create_entity)
    retry = PausedAt(monkeypatch, "get_entity", SCIM_USERS_TABLE, ("P", user["id"]), after=pause) if then else None
    answer = {}
    b = threading.Thread(target=lambda: answer.setdefault(
        "status", Scim(scim.runtime).patch(f"/Users/{user['id']}", entra.patch(operation),
                                           headers=headers).status_code))
    b.start()
    assert pause.paused.wait(TIMEOUT), "B never reached the step"
    meanwhile()
    pause.resume.set()
    if retry is not None:
        assert retry.paused.wait(TIMEOUT), "B did not start over"
        then()
        retry.resume.set()
    b.join(TIMEOUT)
    return answer["status"]


def rows_of(scim, scim_id: str) -> list[tuple[str, str]]:
    table = scim.runtime.tables.client(ACCOUNTS_TABLE)
    return [(r["PartitionKey"], r["RowKey"]) for r in table.query_entities("ScimId eq @id", parameters={"id": scim_id})]


RENAME = {"op": "Replace", "path": "displayName", "value": "Dana Renamed"}


def entra_writes(scim, user: dict, new_email: str = "") -> dict:
    """Request A, sent whole while B is paused: the person's email moved to `new_email`, or the person
    deleted."""
    def move():
        r = Scim(scim.runtime).patch(f"/Users/{user['id']}", entra.patch(entra.replace_work_email(new_email)))
        assert r.status_code in (200, 204), r.text

    def delete():
        assert Scim(scim.runtime).delete(f"/Users/{user['id']}").status_code == 204
    return {"move": move, "delete": delete}


@pytest.mark.parametrize("step", ["plan", "write"])
def test_a_patch_racing_a_delete_of_the_same_person_leaves_no_account(scim, monkeypatch, step):
    """B (a name change) read the person; A's DELETE then removed the accounts and the person (204).
    B's write of the account it planned found the row gone (or B planned on no row at all), and made
    the account again, enabled and linked, which no later SCIM write could reach: the person is gone.
    SPEC: DELETE removes them; SECURITY.md: a deleted person keeps no live account."""
    user, email = new_user(scim)
    assert rows_of(scim, user["id"]) == [(email, "user")]
    delete = entra_writes(scim, user)["delete"]
    made = []
    status = paused_patch(scim, monkeypatch, user, step, RENAME, delete, made=made)
    assert status == 404, "the person B wrote to is gone"
    assert rows_of(scim, user["id"]) == [], "B made an account for a deleted person"
    if step == "write":  # B saw the row it planned on go: it never makes one (live until B's end)
        assert made == [], "B turned the vanished row into a create"
    assert scim.runtime.accounts.get(email, "user") is None


@pytest.mark.parametrize("step", ["plan", "write"])
def test_a_patch_racing_an_email_move_leaves_no_account_at_the_old_email(scim, monkeypatch, step):
    """B (a name change) read the person at the old email; A then moved the account to a new email
    (its last step deletes the old row). B made the account again at the old email, lost the race on
    the person row, and its retry (from the person at the new email) never looked at the old one: the
    old mailbox kept the person's AccountId, unlinked (externalId not a GUID), through a later
    disable and DELETE. SPEC: two mailboxes never share an account; the old email then finds nothing."""
    user, old = new_user(scim, external_id=unique("EMP"))
    new = f"{unique('moved')}@contoso.test"
    move = entra_writes(scim, user, new)["move"]
    made = []
    assert paused_patch(scim, monkeypatch, user, step, RENAME, move, made=made) in (200, 204)
    if step == "write":
        assert old not in made, "B turned the vanished row into a create at the old email"
    assert rows_of(scim, user["id"]) == [(new, "user")], "one account, at the new email"
    assert scim.runtime.accounts.get(old, "user") is None, "the old mailbox signs in to the person's account"
    person = scim.get(f"/Users/{user['id']}").json()
    assert person["displayName"] == "Dana Renamed" and person["emails"][0]["value"] == new, "both changes landed"
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert rows_of(scim, user["id"]) == [], "a row of the person's outlived the DELETE"


def test_a_patch_that_lost_to_an_email_move_and_then_finds_the_person_deleted_leaves_no_account(scim, monkeypatch):
    """As above, B made the account again at the old email and lost the race on the person row; before
    its retry, a DELETE removed the person and the account at the new email (the person row named no
    other). B's retry finds no person: what its lost attempt wrote goes too."""
    user, old = new_user(scim, external_id=unique("EMP"))
    new = f"{unique('moved')}@contoso.test"
    move = entra_writes(scim, user, new)["move"]
    delete = entra_writes(scim, user)["delete"]
    assert paused_patch(scim, monkeypatch, user, "plan", RENAME, move, then=delete) == 404
    assert rows_of(scim, user["id"]) == [], "the account B made at the old email outlived the person"
    assert scim.runtime.accounts.get(old, "user") is None


def test_a_delete_landing_as_a_retry_records_what_its_lost_attempt_wrote_leaves_no_account(scim, monkeypatch):
    """As above, B made the account again at the old email and lost; its retry read the person, and a
    DELETE landed before the retry recorded that row as pending: the retry's 404 removes it too."""
    user, old = new_user(scim, external_id=unique("EMP"))
    move = entra_writes(scim, user, f"{unique('moved')}@contoso.test")["move"]
    delete = entra_writes(scim, user)["delete"]
    first = PausedAt(monkeypatch, "get_entity")  # B's first read of its accounts
    retry = PausedAt(monkeypatch, "get_entity", SCIM_USERS_TABLE, ("P", user["id"]), after=first)
    recording = PausedAt(monkeypatch, "update_entity", SCIM_USERS_TABLE, after=retry)
    answer = {}
    b = threading.Thread(target=lambda: answer.setdefault(
        "status", Scim(scim.runtime).patch(f"/Users/{user['id']}", entra.patch(RENAME)).status_code))
    b.start()
    for pause, meanwhile in ((first, move), (retry, None), (recording, delete)):
        assert pause.paused.wait(TIMEOUT), "B never reached the step"
        if meanwhile:
            meanwhile()
        pause.resume.set()
    b.join(TIMEOUT)
    assert answer["status"] == 404
    assert rows_of(scim, user["id"]) == [], "the account B made at the old email outlived the DELETE"
    assert scim.runtime.accounts.get(old, "user") is None


def test_a_retry_that_stops_before_removing_what_its_lost_attempt_wrote_leaves_it_to_the_next_write(
        scim, monkeypatch):
    """B's retry (after it made the account again at the old email and lost) stops on an outage just
    before deleting that row (503): the person row records the old email's key as a stopped move's
    would, so the next write, a DELETE, removes the row there too."""
    from tests.scim.test_stopped_move import stop_at

    user, old = new_user(scim, external_id=unique("EMP"))
    new = f"{unique('moved')}@contoso.test"
    move = entra_writes(scim, user, new)["move"]

    def outage_at_the_old_row():
        stop_at(monkeypatch, "delete_entity", ACCOUNTS_TABLE, lambda key: key == old)
    assert paused_patch(scim, monkeypatch, user, "plan", RENAME, move, then=outage_at_the_old_row) == 503
    assert (old, "user") in rows_of(scim, user["id"]), "the stop left B's row at the old email"
    monkeypatch.undo()
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert rows_of(scim, user["id"]) == [], "a row at the old email outlived the DELETE"


def test_a_patch_that_gives_up_after_losing_races_settles_what_it_wrote_before_answering(scim, monkeypatch):
    """B (a name change) made the account again at the old email and lost the race to an email move on
    its last attempt (a 412 after RACE_ATTEMPTS; one here): before answering, B records the old email's
    key on the person row as a stopped move's and rewrites the person, which removes the row there.
    Before, the engine dropped the keys its lost attempts wrote when it answered: a live row at the
    old mailbox that no later write reached (RELIABILITY.md's known gap of 2026-12-03)."""
    from shared.scim import engine

    monkeypatch.setattr(engine, "RACE_ATTEMPTS", 1)
    user, old = new_user(scim, external_id=unique("EMP"))
    new = f"{unique('moved')}@contoso.test"
    move = entra_writes(scim, user, new)["move"]
    made = []
    assert paused_patch(scim, monkeypatch, user, "plan", RENAME, move, made=made) == 412
    assert old in made, "B's lost attempt never made the row again"
    assert rows_of(scim, user["id"]) == [(new, "user")], "B answered leaving the row its lost attempt made"
    assert scim.runtime.accounts.get(old, "user") is None
    monkeypatch.undo()
    assert scim.patch(f"/Users/{user['id']}", entra.patch(RENAME)).status_code in (200, 204)
    assert rows_of(scim, user["id"]) == [(new, "user")]


def test_a_patch_refused_after_losing_a_race_settles_what_it_wrote_before_answering(scim, monkeypatch):
    """As above, but B (a name change sent with If-Match) lost its first attempt and its retry was
    refused (412: the person is no longer the version B named): the row B's lost attempt made at the
    old email is settled before the refusal is answered, not dropped with it."""
    user, old = new_user(scim, external_id=unique("EMP"))
    new = f"{unique('moved')}@contoso.test"
    move = entra_writes(scim, user, new)["move"]
    headers = {"If-Match": user["meta"]["version"]}
    made = []
    assert paused_patch(scim, monkeypatch, user, "plan", RENAME, move, made=made, headers=headers) == 412
    assert old in made, "B's lost attempt never made the row again"
    assert rows_of(scim, user["id"]) == [(new, "user")], "B answered leaving the row its lost attempt made"


def test_a_delete_after_a_patch_gave_up_removes_what_its_lost_attempts_wrote(scim, monkeypatch):
    from shared.scim import engine

    monkeypatch.setattr(engine, "RACE_ATTEMPTS", 1)
    user, _old = new_user(scim, external_id=unique("EMP"))
    move = entra_writes(scim, user, f"{unique('moved')}@contoso.test")["move"]
    assert paused_patch(scim, monkeypatch, user, "plan", RENAME, move) == 412
    monkeypatch.undo()
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert rows_of(scim, user["id"]) == [], "the row B's lost attempt made outlived the person's DELETE"


def test_an_enable_that_gave_up_after_losing_to_a_disable_leaves_the_account_disabled(scim, monkeypatch):
    """B (an enable) recorded its change and was writing the account when A (a disable) landed whole;
    B wrote `Enabled` true, lost on the person row and gave up (412). The person is disabled, and so is
    its account when B answers; a later write that does not change `active` keeps it so."""
    from shared.scim import engine

    monkeypatch.setattr(engine, "RACE_ATTEMPTS", 1)
    user, email = new_user(scim)
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code in (200, 204)

    def disable():
        r = Scim(scim.runtime).patch(f"/Users/{user['id']}", entra.patch(entra.disable()))
        assert r.status_code in (200, 204), r.text
    enable = {"op": "Replace", "path": "active", "value": "True"}
    assert paused_patch(scim, monkeypatch, user, "write", enable, disable) == 412
    assert scim.get(f"/Users/{user['id']}").json()["active"] is False
    assert not scim.runtime.accounts.get(email, "user").enabled, "B answered leaving a disabled person enabled"
    monkeypatch.undo()
    assert scim.patch(f"/Users/{user['id']}", entra.patch(RENAME)).status_code in (200, 204)
    assert not scim.runtime.accounts.get(email, "user").enabled, "a disabled person's account stayed enabled"


def posted_at_once(scim, body: dict, writers: int) -> list[tuple[int, dict]]:
    """`writers` clients POST the same User at the same moment: their statuses and bodies."""
    barrier = threading.Barrier(writers)
    answers: list[tuple[int, dict]] = []

    def create() -> None:
        client = Scim(scim.runtime)
        barrier.wait()
        response = client.post("/Users", body)
        answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=create) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_concurrent_identical_posts_make_one_person_and_keep_user_name_unique(scim):
    """Entra (or two provisioning cycles) sending the same create at once: one 201, the others 409,
    and afterwards the filter finds that one person and no one else may take the userName."""
    writers, rounds = 6, 4
    for _ in range(rounds):
        name = unique("race")
        body = entra.create_user(f"{name}@contoso.test", f"{name}@contoso.test", oid(), kinds=("user",))
        answers = posted_at_once(scim, body, writers)
        statuses = sorted(status for status, _ in answers)
        assert statuses == [201] + [409] * (writers - 1), answers
        assert all(a.get("scimType") == "uniqueness" for status, a in answers if status == 409), answers
        winner = next(a["id"] for status, a in answers if status == 201)
        listed = scim.get("/Users", params=entra.by_user_name(body["userName"])).json()
        assert [u["id"] for u in listed["Resources"]] == [winner], listed
        other = entra.create_user(body["userName"].upper(), f"{unique()}@contoso.test", oid(), kinds=("agent",))
        error_of(scim.post("/Users", other), 409, "uniqueness")
        assert [p["RowKey"] for p in scim.person_rows() if p["UserName"].lower() == body["userName"]] == [winner]


def test_a_pointer_left_by_a_create_that_stopped_is_taken_over_once_it_is_old(scim, monkeypatch):
    """A userName pointer naming no person: recent, it may be a create in progress (409, Entra
    retries); older than store.CLAIM_GRACE it was left by a create that stopped, and is taken over."""
    user_name = f"{unique('left')}@contoso.test"
    users = scim.runtime.tables.client(SCIM_USERS_TABLE)
    users.create_entity({"PartitionKey": "U", "RowKey": user_name_key(user_name), "Id": oid()})
    body = entra.create_user(user_name, user_name, oid(), kinds=("user",))
    error_of(scim.post("/Users", body), 409, "uniqueness")
    monkeypatch.setattr(store, "CLAIM_GRACE", timedelta(0))
    created = scim.post("/Users", body)
    assert created.status_code == 201, created.text
    assert scim.get("/Users", params=entra.by_user_name(user_name)).json()["Resources"][0]["id"] == \
        created.json()["id"]


def test_a_create_refused_midway_leaves_its_values_free(scim):
    """A POST that claimed its userName and then met a conflict (another person's email) lets go of
    the userName, so the corrected retry is not blocked by its own earlier attempt."""
    _, taken = new_user(scim)
    user_name = f"{unique('retry')}@contoso.test"
    error_of(scim.post("/Users", entra.create_user(user_name, taken, oid())), 409, "uniqueness")
    retried = scim.post("/Users", entra.create_user(user_name, user_name, oid()))
    assert retried.status_code == 201, retried.text


@pytest.mark.parametrize("refusal", ["email_taken", "account_linked"])
@pytest.mark.parametrize("how", ["patch", "put"])
def test_a_change_refused_midway_leaves_its_new_values_free(scim, how, refusal):
    """A PATCH or PUT giving the person a free userName and externalId that is then refused (409:
    another person's email, or their account linked to the old identity) lets go of both, as a
    refused create does: the person keeps their own, and Entra creating someone else with those
    values is not blocked for CLAIM_GRACE by a "being given to another User" the filter cannot see."""
    old_oid = oid()
    user, email = new_user(scim, external_id=old_oid)
    if refusal == "account_linked":
        scim.runtime.accounts.link_and_record_login(scim.runtime.accounts.get(email, "user"), f"{TENANT}:{old_oid}")
        given_email = email
    else:
        _, given_email = new_user(scim)
    user_name, external_id = f"{unique('wanted')}@contoso.test", oid()
    if how == "patch":
        response = scim.patch(f"/Users/{user['id']}", entra.patch(
            {"op": "Replace", "path": "userName", "value": user_name},
            {"op": "Replace", "path": "externalId", "value": external_id}, entra.replace_work_email(given_email)))
    else:
        response = scim.put(f"/Users/{user['id']}", entra.create_user(user_name, given_email, external_id))
    error_of(response, 409, "uniqueness")
    kept = scim.get(f"/Users/{user['id']}").json()
    assert (kept["userName"], kept["externalId"]) == (user["userName"], old_oid), kept
    assert scim.get("/Users", params=entra.by_user_name(user["userName"])).json()["Resources"][0]["id"] == user["id"]
    other = scim.post("/Users", entra.create_user(user_name, f"{unique('other')}@contoso.test", external_id))
    assert other.status_code == 201, other.text
    assert scim.get("/Users", params=entra.by_user_name(user_name)).json()["Resources"][0]["id"] == other.json()["id"]


def test_a_change_that_lost_to_the_same_change_keeps_the_pointer_that_write_relies_on(scim, monkeypatch):
    """B (userName -> X) claimed X's pointer and paused; A, the same change of the same person, found
    the pointer naming them and wrote the person row. B's write then lost the race (412, retried): it
    keeps the pointer, which A's person row now relies on, so X stays theirs alone."""
    user, _ = new_user(scim)
    user_name = f"{unique('both')}@contoso.test"
    rename = {"op": "Replace", "path": "userName", "value": user_name}

    def same_change():
        assert Scim(scim.runtime).patch(f"/Users/{user['id']}", entra.patch(rename)).status_code in (200, 204)
    assert paused_patch(scim, monkeypatch, user, "plan", rename, same_change) in (200, 204)
    assert scim.get(f"/Users/{user['id']}").json()["userName"] == user_name
    error_of(scim.post("/Users", entra.create_user(user_name, f"{unique('other')}@contoso.test", oid())),
             409, "uniqueness")
    assert [u["id"] for u in scim.get("/Users", params=entra.by_user_name(user_name)).json()["Resources"]] == \
        [user["id"]]


@contextlib.contextmanager
def scim_behind_a_fault_proxy(use_settings, azurite) -> Iterator[tuple[FaultProxy, Scim, dict]]:
    """Directory sync reaching Azurite through a FaultProxy, warm (tables made, connections pooled),
    with one user: (proxy, scim, that user)."""
    port = urlsplit(azurite.url).port or int(azurite.url.rsplit(":", 1)[1])
    with FaultProxy(port) as proxy:
        runtime = use_settings(SCIM_TOKEN=TOKEN,
                               TABLES_CONNECTION_STRING=azurite_connection_string(proxy.port, azurite.account_key))
        scim = Scim(runtime)
        user, _ = new_user(scim)
        yield proxy, scim, user


def assert_storage_503(call, method: str, caplog) -> None:
    """What a request storage failed under answers: SCIM's 503 with Retry-After, and its log line."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        response = call()
    error_of(response, 503)
    assert response.headers["Retry-After"] == "30"
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"scim.request op={method} ") and " status=503 reason=table_storage_unavailable "
               in m for m in lines), lines


def test_a_storage_outage_is_a_503_with_retry_after_never_a_500(use_settings, azurite, caplog):
    with scim_behind_a_fault_proxy(use_settings, azurite) as (proxy, scim, user):
        proxy.refusing = True
        proxy.cut_all()
        calls = {"GET": lambda: scim.get("/Users", params=entra.by_user_name(user["userName"])),
                 "PATCH": lambda: scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())),
                 "POST": lambda: scim.post("/Users", entra.create_user(f"{unique()}@contoso.test",
                                                                       f"{unique()}@contoso.test", oid()))}
        for method, call in calls.items():
            assert_storage_503(call, method, caplog)
        proxy.refusing = False
        assert scim.get(f"/Users/{user['id']}").status_code == 200, "heals without a restart"


def test_storage_answering_a_page_to_a_read_is_a_503_with_retry_after_never_a_500(use_settings, azurite, caplog):
    """A 200 text/html where rows should be (a gateway before storage): the SDK's DeserializationError
    is storage unavailable, for SCIM's reads of its own table and of the accounts alike (once a 500)."""
    with scim_behind_a_fault_proxy(use_settings, azurite) as (proxy, scim, user):
        calls = [(SCIM_USERS_TABLE, "GET", lambda: scim.get("/Users", params=entra.by_user_name(user["userName"]))),
                 (SCIM_USERS_TABLE, "GET", lambda: scim.get(f"/Users/{user['id']}")),
                 (SCIM_USERS_TABLE, "GET", lambda: scim.get("/Users")),
                 (SCIM_USERS_TABLE, "PATCH", lambda: scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable()))),
                 (ACCOUNTS_TABLE, "PATCH", lambda: scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())))]
        for table, method, call in calls:
            proxy.decide = lambda e, table=table: "page" if e.method == "GET" and f"/{table}" in e.path else ""
            since = len(proxy.exchanges)
            assert_storage_503(call, method, caplog)
            assert any(e.fault == "page" for e in proxy.exchanges[since:]), (table, method)
        proxy.decide = None
        assert scim.get(f"/Users/{user['id']}").status_code == 200, "heals without a restart"


@pytest.mark.parametrize("value", ["False", "false", False])
def test_active_false_in_every_form_disables(scim, value):
    user, email = new_user(scim)
    assert scim.patch(f"/Users/{user['id']}", entra.patch({"op": "replace", "path": "active", "value": value})
                      ).status_code in (200, 204)
    assert scim.runtime.accounts.get(email, "user").enabled is False


def test_values_whose_table_keys_would_be_too_long_are_400_invalid_value_not_503(scim):
    """An address, userName or externalId is a Table key, escaped ('/' takes three): over 512 UTF-16
    units, storage refused it with a 400, which became 503 "storage unreachable" and a retrying Entra."""
    long_value = "/" * 200  # 200 characters, a 600-unit key
    cases = [("emails", entra.create_user(f"{unique()}@contoso.test", f"{long_value}@contoso.test", oid())),
             ("userName", entra.create_user(f"{long_value}{unique()}", f"{unique()}@contoso.test", oid())),
             ("externalId", entra.create_user(f"{unique()}@contoso.test", f"{unique()}@contoso.test", long_value))]
    for attribute, body in cases:
        error = error_of(scim.post("/Users", body), 400, "invalidValue")
        assert error["detail"].startswith(f"{attribute}:") and "512" in error["detail"], error
    assert not [p for p in scim.person_rows() if long_value in p["Resource"]], "no person was written"
    for attribute in ("userName", "externalId"):
        found = scim.get("/Users", params={"filter": f'{attribute} eq "{long_value}"'})
        assert found.status_code == 200 and found.json()["totalResults"] == 0, found.text


def test_a_work_email_filter_that_finds_no_one_reads_one_pointer_and_scans_no_person(scim, monkeypatch):
    """Entra sends this filter before creating each person when email is the matching attribute: a
    miss that scanned every person row would make a first cycle quadratic."""
    for _ in range(3):
        new_user(scim)
    queries = []
    real = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def urlopen(pool, method, url, *args, **kwargs):  # observes what goes to Azurite, then sends it
        if SCIM_USERS_TABLE in url and "$filter" in url:
            queries.append(url)
        return real(pool, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "urlopen", urlopen)
    listed = scim.get("/Users", params={"filter": f'emails[type eq "work"].value eq "{unique("nobody")}@contoso.test"'})
    assert listed.status_code == 200 and listed.json()["totalResults"] == 0
    assert queries == [], f"a miss scanned the person rows: {queries}"
    scim.get("/Users", params={"filter": f'emails.value eq "{unique("nobody")}@contoso.test"'})
    assert queries, "the control: emails.value eq, which any person may hold as any type, does scan"


def test_a_user_too_large_in_utf16_units_is_400_before_any_account_or_pointer_is_written(scim, account_store):
    """A Table string property holds 32,768 UTF-16 units; an emoji is two. Refused before the claims
    and the accounts: nothing to sign in with, and the corrected retry is not 409."""
    name = unique("big")
    email = f"{name}@contoso.test"
    body = entra.create_user(email, email, oid(), given="\U0001F600" * 15_100)  # 15,1xx characters, 30,2xx units
    raw = json.dumps(body, ensure_ascii=False).encode()  # UTF-8 (61 KB), as Entra sends it
    error_of(scim.request("POST", "/Users", raw=raw), 400, "invalidValue")
    assert account_store.get(email, "user") is None, "no account made for a refused User"
    assert scim.post("/Users", entra.create_user(email, email, oid())).status_code == 201, "nothing left claimed"
    user = scim.get("/Users", params={"filter": f'userName eq "{email}"'}).json()["Resources"][0]
    patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
             "Operations": [{"op": "replace", "path": "name.givenName", "value": "\U0001F600" * 15_100}]}
    patched = scim.request("PATCH", f"/Users/{user['id']}", raw=json.dumps(patch, ensure_ascii=False).encode())
    error_of(patched, 400, "invalidValue")
    assert account_store.get(email, "user").enabled, "the account is as it was"


def test_an_id_longer_than_any_of_ours_is_404_without_asking_storage(scim, monkeypatch):
    """A key over Table Storage's limit is a 400 on Azure (an outage to us), a 404 on Azurite: an id no
    uuid4 could be is answered without a read."""
    reads = []
    real = urllib3.connectionpool.HTTPConnectionPool.urlopen

    def urlopen(pool, method, url, *args, **kwargs):
        if f"/{SCIM_USERS_TABLE}(" in url:  # the people's rows (not the table list)
            reads.append(url)
        return real(pool, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "urlopen", urlopen)
    for method in ("GET", "DELETE"):
        error_of(scim.request(method, "/Users/" + "a" * 5000), 404)
    assert reads == [], reads


def test_a_filter_value_holding_a_lone_surrogate_finds_no_one_and_is_audited(scim):
    """A filter's JSON-style escape (`\\ud800`: plain ASCII in the URL) decodes to a lone surrogate,
    which no Table key can hold: it reached the SDK's URL quoting, a bare HTML 500 (with no
    DirectoryEvents row, which every refused request has). It is a value no one holds: an empty list."""
    for flt in ('userName eq "\\ud800"', 'externalId eq "\\udbff"', 'id eq "\\ud800"',
                'userName eq "a" and externalId eq "\\udc00"'):
        found = scim.get("/Users", params={"filter": flt})
        assert found.status_code == 200 and found.json()["totalResults"] == 0, (flt, found.status_code, found.text)


def test_a_member_named_twice_in_two_cases_is_invalid_syntax_with_its_row_not_a_500(scim):
    """Names are case-insensitive: `operations` beside `Operations` was read from the first by our steps
    and the last by the library, so a Remove's value went back onto another operation (or none: an
    IndexError, a 500 page, no row)."""
    user, _ = new_user(scim)
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "operations": [{"op": "Remove", "path": "displayName", "value": "Ann Lee"}] * 2,
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}
    error_of(scim.patch(f"/Users/{user['id']}", body), 400, "invalidSyntax")
    error_of(scim.patch(f"/Users/{user['id']}", entra.patch({"op": "Replace", "path": "active", "value": False,
                                                            "VALUE": True})), 400, "invalidSyntax")
    error_of(scim.post("/Users", {**entra.create_user(unique(), f"{unique()}@contoso.test", oid()),
                                  "USERNAME": unique()}), 400, "invalidSyntax")
    assert [e["Status"] for e in scim.events() if e.get("ScimId") == user["id"]].count(400) == 2, "each has its row"
    assert scim.get(f"/Users/{user['id']}").json()["active"] is True, "nothing of a refused PATCH applied"


@pytest.mark.parametrize("value", [False, None, True])
@pytest.mark.parametrize("disabled", [True, False])
def test_active_left_unset_by_a_remove_changes_no_account(scim, value, disabled):
    """`active` removed was read as enabled: a Remove naming false re-enabled a leaver. SPEC: active
    false disables, true enables; an unset one now leaves the accounts as they are."""
    user, email = new_user(scim)
    if disabled:
        assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204
    op = {"op": "Remove", "path": "active", **({} if value is None else {"value": value})}
    assert scim.patch(f"/Users/{user['id']}", entra.patch(op)).status_code == 204
    (account,) = [a for a in scim.runtime.tables.client(ACCOUNTS_TABLE).query_entities(
        "PartitionKey eq @pk", parameters={"pk": email})]
    assert account["Enabled"] is (not disabled), account
    assert scim.patch(f"/Users/{user['id']}", entra.patch(entra.disable())).status_code == 204
    assert not [a for a in scim.runtime.tables.client(ACCOUNTS_TABLE).query_entities(
        "PartitionKey eq @pk", parameters={"pk": email}) if a["Enabled"]], "a disable after it still disables"
