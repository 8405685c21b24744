"""The display name directory sync gives an account (displayName, else name.formatted) is held to the
accounts' own rule for a name, the one `tools.accounts add` and `import` apply (SECURITY.md: no
control, format or line-separator character but the joiners U+200C/U+200D): it becomes the session
token's `name` when the ID token has none, a log's text and what `accounts list` prints. Through
tools.host against Azurite."""

from __future__ import annotations

import json

import pytest

from shared.accounts import check_account
from shared.tables import ACCOUNTS_TABLE, SCIM_USERS_TABLE
from tests.scim import entra
from tests.scim.conftest import oid, unique

TERMINAL = "Evil\x1b[2J\x1b]0;pwned\x07\nNAME" + "y" * 5000
REFUSED = [TERMINAL, "\u0000NUL\u0085", "Ann\u202eeciffo", "Ann\u2028Lee", "Ann\u200bLee", "Ann\u200eLee"]


def new_body(display_name: str | None, formatted: str | None = "Ann Lee") -> tuple[dict, str]:
    email = f"{unique('dn')}@contoso.test"
    body = entra.create_user(email, email, oid())
    body.pop("displayName")
    if display_name is not None:
        body["displayName"] = display_name
    body["name"]["formatted"] = formatted
    return body, email


def nothing_made(scim, email: str) -> None:
    assert list(scim.runtime.tables.client(ACCOUNTS_TABLE).query_entities(
        "PartitionKey eq @pk", parameters={"pk": email})) == []
    assert [p for p in scim.person_rows() if p["UserName"] == email] == []


def invalid_value(response, attribute: str) -> None:
    assert response.status_code == 400, response.text[:300]
    body = response.json()
    assert body["scimType"] == "invalidValue" and body["detail"].startswith(f"{attribute}: "), body


def test_the_names_refused_here_are_those_the_accounts_cli_refuses():
    for name in REFUSED:
        assert check_account("a@contoso.test", "user", "A-1", name), repr(name)


@pytest.mark.parametrize("name", REFUSED, ids=lambda name: repr(name[:12]))
@pytest.mark.parametrize("attribute", ["displayName", "name.formatted"])
def test_a_create_whose_display_name_the_accounts_rule_refuses_is_invalid_value_and_makes_nothing(
        scim, attribute, name):
    body, email = new_body(name, None) if attribute == "displayName" else new_body(None, name)
    invalid_value(scim.post("/Users", body), attribute)
    nothing_made(scim, email)
    assert scim.get("/Users", params=entra.by_user_name(email)).json()["totalResults"] == 0


def test_a_name_over_256_characters_is_refused_from_either_attribute(scim):
    for body, attribute in (new_body(None, "y" * 257), "name.formatted"), (new_body("y" * 257), "displayName"):
        invalid_value(scim.post("/Users", body[0]), attribute)
        nothing_made(scim, body[1])


@pytest.mark.parametrize("path", ["displayName", "name.formatted"])
def test_a_patch_to_a_refused_name_is_invalid_value_and_keeps_the_name(scim, path):
    body, email = new_body(None, "Ann Lee")
    created = scim.post("/Users", body)
    assert created.status_code == 201, created.text
    for name in REFUSED:
        refused = scim.patch(f"/Users/{created.json()['id']}", entra.patch({"op": "Replace", "path": path,
                                                                           "value": name}))
        invalid_value(refused, "displayName" if path == "displayName" else "name.formatted")
        assert scim.runtime.accounts.get(email, "user").display_name == "Ann Lee"


def test_names_with_the_joiners_scripts_and_emoji_need_are_kept(scim):
    for name in ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\U0001f469\u200d\U0001f4bb Ann", "Ann L\u00e9e"):
        body, email = new_body(name)
        assert scim.post("/Users", body).status_code == 201, name
        assert scim.runtime.accounts.get(email, "user").display_name == name


def test_a_person_stored_with_a_refused_name_before_the_rule_can_still_be_disabled(scim):
    """A name this rule now refuses, stored by an earlier version, is not refused again while it is
    unchanged: else every write of that person, Entra's disable and a role's removal too, would be
    refused until the name changes in Entra."""
    body, email = new_body(None, "Ann Lee")
    scim_id = scim.post("/Users", body).json()["id"]
    users = scim.runtime.tables.client(SCIM_USERS_TABLE)
    row = users.get_entity("P", scim_id)
    resource = json.loads(row["Resource"])
    resource["name"]["formatted"] = "Ann\u202eeciffo"  # as an earlier version stored it
    users.update_entity({"PartitionKey": "P", "RowKey": scim_id, "Resource": json.dumps(resource)})

    disabled = scim.patch(f"/Users/{scim_id}", entra.patch(entra.disable()))
    assert disabled.status_code == 204, disabled.text
    assert scim.runtime.accounts.get(email, "user").enabled is False
    invalid_value(scim.patch(f"/Users/{scim_id}", entra.patch(
        {"op": "Replace", "path": "name.formatted", "value": "Ann\u200bLee"})), "name.formatted")
    fixed = scim.patch(f"/Users/{scim_id}", entra.patch({"op": "Replace", "path": "name.formatted",
                                                         "value": "Ann Lee"}))
    assert fixed.status_code == 204, fixed.text
    assert scim.runtime.accounts.get(email, "user").display_name == "Ann Lee"
