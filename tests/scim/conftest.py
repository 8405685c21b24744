"""Directory sync under test: the real function_app.py served by tools.host (tests/conftest.py's
app_server, HTTPS with the test CA) against Azurite, with SCIM_TOKEN set."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import pytest
import requests

from shared.runtime import Runtime
from shared.tables import DIRECTORY_EVENTS_TABLE, SCIM_USERS_TABLE
from tests.conftest import APP_BASE, IDP_TENANT

SCIM_BASE = f"{APP_BASE}/api/scim/v2"
TIMEOUT = 20
SCIM_JSON = "application/scim+json"
TOKEN = secrets.token_urlsafe(32)


class Scim:
    """Requests to the SCIM routes with the token (or another), as Entra sends them."""

    def __init__(self, runtime: Runtime, token: str = TOKEN):
        self.runtime = runtime
        self.token = token
        self.session = requests.Session()

    def request(self, method: str, path: str, body=None, *, token: str | None = None, headers=None,
                raw: bytes | None = None, params=None) -> requests.Response:
        sent = {"Authorization": f"Bearer {self.token if token is None else token}", "Accept": SCIM_JSON,
                **({"Content-Type": SCIM_JSON} if body is not None or raw is not None else {}), **(headers or {})}
        import json

        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        return self.session.request(method, f"{SCIM_BASE}{path}", data=data, headers=sent, params=params,
                                    timeout=TIMEOUT)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def patch(self, path, body, **kw):
        return self.request("PATCH", path, body, **kw)

    def put(self, path, body, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def events(self, correlation_ids=None) -> list[dict]:
        table = self.runtime.tables.client(DIRECTORY_EVENTS_TABLE)
        return list(table.list_entities())

    def person_rows(self) -> list[dict]:
        return list(self.runtime.tables.client(SCIM_USERS_TABLE).query_entities("PartitionKey eq 'P'"))


@pytest.fixture
def scim(use_settings) -> Iterator[Scim]:
    """The app with directory sync on (SCIM_TOKEN), single-tenant issuer of tenant IDP_TENANT."""
    runtime = use_settings(SCIM_TOKEN=TOKEN)
    yield Scim(runtime)


def unique(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def oid() -> str:
    return str(uuid.uuid4())


TENANT = IDP_TENANT
