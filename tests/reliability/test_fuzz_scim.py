"""Hypothesis sends random SCIM bodies (Users, PatchOps, unknown schemas, broken JSON), filters,
userNames and emails to the SCIM routes of the real app (function_app as tools.host serves it, in
process), with Azurite behind: the answer is always a SCIM answer of a status the protocol has, a
SCIM error body for every failure with its DirectoryEvents row; never a 500, never a 503 (Azurite is
up), never a traceback. Derandomized and bounded, like tests/reliability/test_fuzz.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from shared.audit import day_key
from shared.tables import DIRECTORY_EVENTS_TABLE
from tests.scim import entra
from tests.scim.conftest import TOKEN

ALLOWED = {200, 201, 204, 400, 404, 405, 409, 412, 413, 501}
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}

text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text)
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(text, inner, max_size=4)), max_leaves=12)
attribute = st.sampled_from(["userName", "externalId", "active", "displayName", "name", "emails", "roles", "id",
                             "meta", "schemas", "title", "emails[type eq \"work\"].value", "name.familyName",
                             "roles[value eq \"Portal.User\"]", "urn:ietf:params:scim:schemas:core:2.0:User:active"])
user_body = st.fixed_dictionaries({"schemas": st.one_of(st.just([entra.USER]), st.just([entra.USER, entra.ENTERPRISE]),
                                                        st.lists(text, max_size=2), json_value),
                                   "userName": st.one_of(text, json_value)},
                                  optional={"emails": st.one_of(st.lists(st.fixed_dictionaries(
                                      {"type": st.sampled_from(["work", "home", "other"]), "value": text}),
                                      max_size=2), json_value),
                                      "active": st.one_of(st.booleans(), st.sampled_from(["False", "True", "yes"]),
                                                          json_value),
                                      "roles": st.one_of(st.lists(st.fixed_dictionaries(
                                          {"value": st.one_of(st.sampled_from(["Portal.User", "Portal.Agent"]),
                                                              text)}), max_size=2), json_value),
                                      "externalId": st.one_of(st.uuids().map(str), text, json_value)})
operation = st.fixed_dictionaries({"op": st.one_of(st.sampled_from(["add", "Replace", "REMOVE", "remove"]), text)},
                                  optional={"path": st.one_of(attribute, text), "value": json_value})
patch_body = st.fixed_dictionaries({"schemas": st.one_of(st.just([entra.PATCH_OP]), st.lists(text, max_size=1)),
                                    "Operations": st.one_of(st.lists(operation, max_size=4), json_value)})


@pytest.fixture(scope="module")
def fuzzed(app_server, function_host, app_env):
    from shared.runtime import Runtime, reset_runtime

    runtime = Runtime({**app_env, "SCIM_TOKEN": TOKEN})
    reset_runtime(runtime)
    client = Client(function_host)
    created = client.post("/api/scim/v2/Users", headers=HEADERS, data=json.dumps(
        entra.create_user("fuzz-target@contoso.test", "fuzz-target@contoso.test",
                          "0e0f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", kinds=("user", "agent"))))
    target = created.json["id"] if created.status_code == 201 else client.get(
        "/api/scim/v2/Users", headers=HEADERS, query_string={"filter": 'userName eq "fuzz-target@contoso.test"'}
    ).json["Resources"][0]["id"]
    yield client, runtime, target
    reset_runtime(Runtime(app_env))


def check(runtime, response) -> None:
    assert response.status_code in ALLOWED, f"{response.status_code}: {response.get_data(as_text=True)[:400]}"
    body = response.get_data(as_text=True)
    assert "Traceback" not in body
    assert response.headers["Content-Type"].startswith("application/scim+json")
    if response.status_code >= 400:
        error = json.loads(body)
        assert error["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
        assert error["status"] == str(response.status_code)
        cid = response.headers["X-Correlation-Id"]
        rows = list(runtime.tables.client(DIRECTORY_EVENTS_TABLE).query_entities(
            "PartitionKey eq @pk and CorrelationId eq @cid", parameters={"pk": day_key(datetime.now(UTC)), "cid": cid}))
        assert rows and rows[0]["Status"] == response.status_code, "a refused request has its audit row"


@FUZZ
@given(body=st.one_of(user_body, json_value))
def test_post_users_with_any_body(fuzzed, body):
    client, runtime, _ = fuzzed
    check(runtime, client.post("/api/scim/v2/Users", headers=HEADERS, data=json.dumps(body)))


@FUZZ
@given(body=st.one_of(patch_body, json_value), method=st.sampled_from(["PATCH", "PUT"]))
def test_patch_or_put_with_any_body(fuzzed, body, method):
    client, runtime, target = fuzzed
    check(runtime, client.open(f"/api/scim/v2/Users/{target}", method=method, headers=HEADERS, data=json.dumps(body)))


@FUZZ
@given(raw=st.binary(max_size=300), flt=text, start=st.one_of(text, st.integers().map(str)),
       count=st.one_of(text, st.integers().map(str)), segment=text)
def test_broken_json_any_filter_any_paging_any_id(fuzzed, raw, flt, start, count, segment):
    client, runtime, _ = fuzzed
    check(runtime, client.post("/api/scim/v2/Users", headers=HEADERS, data=raw))
    check(runtime, client.get("/api/scim/v2/Users", headers=HEADERS,
                              query_string={"filter": flt, "startIndex": start, "count": count}))
    combined = f'userName eq "{flt}" and emails[type eq "work"].value eq "{flt}"'
    check(runtime, client.get("/api/scim/v2/Users", headers=HEADERS, query_string={"filter": combined}))
    response = client.get(f"/api/scim/v2/Users/{quote(segment, safe='')}", headers=HEADERS)
    if "/" in segment:  # a deeper path: no SCIM route matches, the host's own 404
        assert response.status_code == 404
    else:
        check(runtime, response)


def test_bodies_at_and_past_the_limit(fuzzed):
    client, runtime, _ = fuzzed
    limit = 256 * 1024
    padded = json.dumps({"schemas": [entra.USER], "userName": "x", "displayName": "d" * (limit - 200)})
    padded += " " * (limit - len(padded.encode()))
    assert len(padded.encode()) == limit
    check(runtime, at := client.post("/api/scim/v2/Users", headers=HEADERS, data=padded))
    assert at.status_code != 413
    over = client.post("/api/scim/v2/Users", headers=HEADERS, data=padded + " ")
    check(runtime, over)
    assert over.status_code == 413
