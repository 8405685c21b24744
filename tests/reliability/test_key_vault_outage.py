"""Key Vault dies after the secrets are cached: logins go on; when the cache expires during the
outage the last good secret keeps serving (health amber, not a 503 for everyone); once the vault is
back, the next refresh reads the new version. The Key Vault stub over HTTPS, read by the real
SecretClient through the real DefaultAzureCredential (managed-identity endpoint)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from shared.diagnostics import health as health_reply
from tests.conftest import APP_BASE, CLIENT_SECRET, CLIENT_SECRET_NAME, DEMO_USER
from tests.support.portal import sign_in

pytestmark = pytest.mark.usefixtures("loopback_only")

CACHE_SECONDS = 1


def health(runtime) -> dict:
    """/api/health's JSON, with its HTTP status as `http_status`."""
    reply = health_reply(runtime)
    return {"http_status": reply.status, **json.loads(reply.body)}


def test_vault_down_after_the_secrets_are_cached_keeps_logins_going_and_heals(stub, vault_app, demo_accounts):
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    runtime = vault_app(SECRET_CACHE_SECONDS=str(CACHE_SECONDS))
    assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200
    assert health(runtime)["checks"]["client_secret"]["warning"] is None, "fresh secrets: green"

    stub.stop_vault()
    time.sleep(CACHE_SECONDS + 0.2)  # the cache expires during the outage
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
    assert response.status_code == 200, f"the last good secret keeps serving: {response.status_code} " \
                                         f"{response.text[:400]}"
    amber = health(runtime)
    assert (amber["http_status"], amber["status"]) == (200, "ready"), "amber is still ready: sign-in works"
    assert "Key Vault unreachable" in amber["checks"]["client_secret"]["warning"], amber["checks"]["client_secret"]
    assert "Key Vault unreachable" in amber["checks"]["signing_key"]["warning"], amber["checks"]["signing_key"]

    reads = stub.reads(CLIENT_SECRET_NAME)
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)  # a new version, written while the app cannot see it
    new_version = stub.versions(CLIENT_SECRET_NAME)[-1]
    stub.start_vault()
    time.sleep(CACHE_SECONDS + 0.2)
    assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200
    assert stub.reads(CLIENT_SECRET_NAME) == reads + 1, "the vault is read again once it is back"
    assert runtime.cached_client_credential.get().version == new_version, "the refresh read the new version"
    assert health(runtime)["checks"]["client_secret"]["warning"] is None, "green again"


def test_a_secret_never_read_is_still_a_503_when_the_vault_is_down(stub, vault_app, app_server):
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    stub.stop_vault()
    vault_app()
    response = requests.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False, timeout=20)
    assert response.status_code == 503, "there is no last good secret to fall back on"
