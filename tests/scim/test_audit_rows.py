"""The DirectoryEvents row names the person of every write (SPEC "Record"; SECURITY.md: after a leak,
review DirectoryEvents for writes you do not recognize), also where no body does: Entra's Disable
User (a PATCH, answered 204), a refused PATCH, its Delete User (no body). Through tools.host against
Azurite."""

from __future__ import annotations

import json
import logging

from shared.tables import DIRECTORY_EVENTS_TABLE
from tests.scim import entra
from tests.scim.conftest import oid, unique


def row_of(scim, response) -> dict:
    correlation_id = response.headers["X-Correlation-Id"]
    rows = [e for e in scim.events() if e["CorrelationId"] == correlation_id]
    assert len(rows) == 1, rows
    return rows[0]


def person(scim) -> tuple[str, str]:
    user_name = f"{unique('who')}@contoso.test"
    created = scim.post("/Users", entra.create_user(user_name, user_name, oid()))
    assert created.status_code == 201, created.text
    return created.json()["id"], user_name


def test_a_patch_and_a_delete_name_the_person_in_their_rows(scim):
    scim_id, user_name = person(scim)
    disabled = scim.patch(f"/Users/{scim_id}", entra.patch(entra.disable()))  # TUTORIAL "Disable User"
    assert disabled.status_code == 204, disabled.text
    _, other = person(scim)
    refused = scim.patch(f"/Users/{scim_id}", entra.patch({"op": "Replace", "path": "userName", "value": other}))
    assert refused.status_code == 409, refused.text
    unread = scim.patch(f"/Users/{scim_id}", entra.patch({"op": "Replace", "path": "id", "value": "mine"}))
    assert unread.status_code == 400, unread.text
    renamed_to = f"{unique('renamed')}@contoso.test"
    renamed = scim.patch(f"/Users/{scim_id}", entra.patch({"op": "Replace", "path": "userName", "value": renamed_to}))
    assert renamed.status_code == 204, renamed.text
    deleted = scim.delete(f"/Users/{scim_id}")  # TUTORIAL "Delete User"
    assert deleted.status_code == 204, deleted.text
    unknown = scim.delete(f"/Users/{scim_id}")
    assert unknown.status_code == 404, unknown.text

    rows = [row_of(scim, r) for r in (disabled, refused, unread, renamed, deleted, unknown)]
    assert [(r["Operation"], r["Status"], r["ScimId"], r["UserName"]) for r in rows] == [
        ("PATCH /Users/{id}", 204, scim_id, user_name),
        ("PATCH /Users/{id}", 409, scim_id, user_name),
        ("PATCH /Users/{id}", 400, scim_id, ""),  # refused before the person is read: the id alone names them
        ("PATCH /Users/{id}", 204, scim_id, renamed_to),  # the name the person has now
        ("DELETE /Users/{id}", 204, scim_id, renamed_to),
        ("DELETE /Users/{id}", 404, scim_id, ""),  # no one is there to name
    ]


def test_a_patch_whose_row_storage_refuses_logs_the_person_with_the_event(scim, caplog):
    scim_id, user_name = person(scim)
    table = scim.runtime.tables.client(DIRECTORY_EVENTS_TABLE)
    table.delete_table()  # storage now refuses every DirectoryEvents row
    try:
        with caplog.at_level(logging.ERROR, logger="portal_sso"):
            response = scim.patch(f"/Users/{scim_id}", entra.patch(entra.disable()))
    finally:
        table.create_table()
    assert response.status_code == 503, response.text
    logged = [json.loads(r.getMessage().split(" event=", 1)[1]) for r in caplog.records
              if r.getMessage().startswith("scim.audit_failed ")]
    assert [(e["operation"], e["scim_id"], e["user_name"]) for e in logged] == \
        [("PATCH /Users/{id}", scim_id, user_name)]
