"""Requests directory sync must refuse cleanly, and what it answers when a dependency fails under it:
a body nested too deep (with and without a token), Key Vault down while the token is cached (the
last good token serves, also while the vault answers a page; a wrong one is still a 401 with its
row), and a DirectoryEvents row storage refuses (the write is not acknowledged, the whole event goes to
the log). Through tools.host against Azurite; Key Vault is the stub read by the real SecretClient."""

from __future__ import annotations

import json
import logging
import time

import pytest

from shared.scim import auth
from shared.tables import DIRECTORY_EVENTS_TABLE
from tests.scim import entra
from tests.scim.conftest import TOKEN, Scim, oid, unique

DEEP = b"[" * 100_000 + b"]" * 100_000  # 200 KB, under the size limit: json.loads recurses too deep
VAULT_TOKEN = "V" * 40


def scim_error(response, status: int, scim_type: str | None = None) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/scim+json"), response.headers
    body = response.json()
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == str(status)
    assert body.get("scimType") == scim_type, body
    return body


def row_of(scim: Scim, response) -> dict:
    correlation_id = response.headers["X-Correlation-Id"]
    rows = [e for e in scim.events() if e["CorrelationId"] == correlation_id]
    assert len(rows) == 1, f"one DirectoryEvents row for {correlation_id}: {rows}"
    return rows[0]


# ---- a body nested too deep ----

def test_a_deeply_nested_body_without_a_token_is_a_401_with_its_row_never_a_500(scim, caplog):
    response = scim.request("POST", "/Users", raw=DEEP, headers={"Authorization": ""})
    scim_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    row = row_of(scim, response)
    assert (row["Status"], row["Reason"], row["UserName"]) == (401, "no_token", "")
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_a_deeply_nested_body_with_the_token_is_400_invalid_syntax_with_its_row(scim, caplog):
    user_name = f"{unique()}@contoso.test"
    user = scim.post("/Users", entra.create_user(user_name, user_name, oid())).json()
    for method, path in (("POST", "/Users"), ("PUT", f"/Users/{user['id']}"), ("PATCH", f"/Users/{user['id']}")):
        response = scim.request(method, path, raw=DEEP)
        scim_error(response, 400, "invalidSyntax")
        assert row_of(scim, response)["Reason"] == "invalidSyntax"
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


# ---- Key Vault down ----

@pytest.fixture
def vault_scim(stub, vault_app) -> Scim:
    """Directory sync with its token in Key Vault, the secrets cache one second."""
    stub.set_secret("scim-token", VAULT_TOKEN)
    return Scim(vault_app(SCIM_TOKEN=None, SECRET_CACHE_SECONDS="1"), token=VAULT_TOKEN)


@pytest.mark.usefixtures("loopback_only")
def test_key_vault_down_after_the_token_was_read_keeps_entra_in(stub, vault_scim, caplog):
    assert vault_scim.get("/Users").status_code == 200
    stub.stop_vault()
    time.sleep(1.2)  # the token's cache expires during the outage
    for _ in range(3):
        response = vault_scim.get("/Users")
        assert response.status_code == 200, f"the last good token serves: {response.text[:300]}"
    assert "vault.stale secret=scim-token" in caplog.text
    created = vault_scim.post("/Users", entra.create_user(f"{unique()}@contoso.test", f"{unique()}@contoso.test",
                                                          oid()))
    assert created.status_code == 201, created.text[:300]

    reads = stub.reads("scim-token")
    stub.start_vault()
    time.sleep(1.2)
    assert vault_scim.get("/Users").status_code == 200
    assert stub.reads("scim-token") == reads + 1, "read again once the vault is back"


GATEWAY_PAGE = (200, "text/html", "<html><body><h1>Service temporarily unavailable</h1></body></html>")


@pytest.mark.usefixtures("loopback_only")
def test_a_vault_answering_a_page_after_the_token_was_read_keeps_entra_in(stub, vault_scim, caplog):
    """A 200 HTML page in the vault's place is the vault unavailable, not an admin's refusal: on old
    main every SCIM request was a 500 until the vault answered again."""
    assert vault_scim.get("/Users").status_code == 200
    stub.answer_raw(GATEWAY_PAGE)
    time.sleep(1.2)  # the token's cache expires while the vault answers a page
    for _ in range(3):
        response = vault_scim.get("/Users")
        assert response.status_code == 200, f"the last good token serves: {response.text[:300]}"
    assert "vault.stale secret=scim-token" in caplog.text
    stub.answer_raw(None)
    reads = stub.reads("scim-token")
    time.sleep(1.2)
    assert vault_scim.get("/Users").status_code == 200
    assert stub.reads("scim-token") == reads + 1, "read again once the vault answers"


@pytest.mark.usefixtures("loopback_only")
def test_a_vault_answering_a_page_before_the_token_was_read_is_a_503(stub, vault_scim):
    stub.answer_raw(GATEWAY_PAGE)
    response = vault_scim.get("/Users")
    scim_error(response, 503)
    assert response.headers["Retry-After"] == "30"
    stub.answer_raw(None)
    assert vault_scim.get("/Users").status_code == 200, "the next request reads the vault again"


@pytest.mark.usefixtures("loopback_only")
def test_a_wrong_or_missing_token_with_key_vault_down_is_a_401_with_its_row(stub, vault_scim, monkeypatch):
    monkeypatch.setattr(auth, "REREAD_SECONDS", 0.0)  # every wrong token tries the (unreachable) vault
    assert vault_scim.get("/Users").status_code == 200
    stub.stop_vault()
    for token, reason in (("w" * 40, "unauthorized"), ("", "no_token")):
        headers = {"Authorization": ""} if not token else None
        response = vault_scim.get("/Users", token=token or None, headers=headers)
        scim_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert row_of(vault_scim, response)["Reason"] == reason
    time.sleep(1.2)  # and once the cache has expired too
    scim_error(vault_scim.get("/Users", token="w" * 40), 401)
    assert vault_scim.get("/Users").status_code == 200


# ---- the DirectoryEvents row refused ----

def test_a_write_whose_row_storage_refuses_is_a_503_and_the_whole_event_is_logged(scim, caplog):
    assert scim.get("/Users").status_code == 200  # warm: the tables are made sure of
    table = scim.runtime.tables.client(DIRECTORY_EVENTS_TABLE)
    table.delete_table()  # storage now refuses every DirectoryEvents row (404 TableNotFound)
    try:
        user_name = f"{unique()}@contoso.test"
        with caplog.at_level(logging.ERROR, logger="portal_sso"):
            created = scim.post("/Users", entra.create_user(user_name, user_name, oid()))
            refused = scim.get("/Users", token="w" * 40)
        scim_error(created, 503)
        assert int(created.headers["Retry-After"]) > 0
        scim_error(refused, 401)  # a refusal keeps its answer: only its row is lost, to the log
    finally:
        table.create_table()
    logged = [json.loads(r.getMessage().split(" event=", 1)[1]) for r in caplog.records
              if r.getMessage().startswith("scim.audit_failed ")]
    by_id = {e["correlation_id"]: e for e in logged}
    event = by_id[created.headers["X-Correlation-Id"]]
    assert (event["operation"], event["status"], event["outcome"], event["user_name"]) == \
        ("POST /Users", 201, "success", user_name)
    assert event["scim_id"] and event["at"]
    assert by_id[refused.headers["X-Correlation-Id"]]["reason"] == "unauthorized"
    assert TOKEN not in caplog.text
    listed = scim.get("/Users", params=entra.by_user_name(user_name)).json()
    assert [u["id"] for u in listed["Resources"]] == [event["scim_id"]], "the write itself is done: a retry finds it"


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD"])
def test_head_and_options_are_refused_by_the_scim_service_after_its_bearer_check(scim, method):
    """Not the app's HTML 405 before the token is even read: a SCIM answer, with its row."""
    refused = scim.request(method, "/Users", token="")
    assert refused.status_code == 401 and refused.headers["Content-Type"].startswith("application/scim+json")
    assert refused.headers.get("WWW-Authenticate", "").startswith("Bearer")
    answered = scim.request(method, "/ServiceProviderConfig")
    assert answered.status_code == 405, answered.status_code
    assert answered.headers["Content-Type"].startswith("application/scim+json"), answered.headers
    assert "POST" not in answered.headers.get("Allow", ""), "no write is allowed on a discovery endpoint"
