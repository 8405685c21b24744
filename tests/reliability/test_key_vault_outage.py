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
from shared.errors import ConfigurationError, DependencyUnavailable
from shared.runtime import _default_credential
from shared.vault import KeyVaultReader
from tests.conftest import APP_BASE, CLIENT_SECRET, CLIENT_SECRET_NAME, DEMO_USER
from tests.support.portal import assert_error_page, sign_in

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


# What a gateway or captive proxy in front of the vault answers in its place: a page, cut-off JSON, JSON
# that is no secret. The SDK cannot make a secret of any of them; on old main each was taken for an
# admin's refusal (the held secrets served no one: every login a 500).
NOT_A_SECRET = {
    "html-200": (200, "text/html", "<html><body><h1>Service temporarily unavailable</h1></body></html>"),
    "truncated-json": (200, "application/json", '{"value": "s3cr'),
    "json-not-an-object": (200, "application/json", '["value"]'),
    "json-without-a-secret": (200, "application/json", "{}"),
    # A gateway's own 403 or 404 page: no Key Vault error in it, so no admin's word (once "the secret does
    # not exist" or "the app may not read it", and the held secrets served no one).
    "html-403": (403, "text/html", "<html><body><h1>403 Forbidden</h1><p>Request blocked.</p></body></html>"),
    "html-404": (404, "text/html", "<html><body><h1>404 Not Found</h1></body></html>"),
}


@pytest.mark.parametrize("answer", NOT_A_SECRET.values(), ids=NOT_A_SECRET.keys())
def test_a_vault_answering_what_is_no_secret_after_the_secrets_were_read_is_an_outage(
        stub, vault_app, demo_accounts, caplog, answer):
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    cache = 3  # the retry interval is min(cache, 30 s): two sign-ins fit in it
    runtime = vault_app(SECRET_CACHE_SECONDS=str(cache))
    assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200

    stub.answer_raw(answer)
    time.sleep(cache + 0.2)  # the cache expires while the vault answers garbage
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
    assert response.status_code == 200, f"the last good secrets keep serving: {response.status_code} " \
                                         f"{response.text[:400]}"
    asked = stub.requests_for(CLIENT_SECRET_NAME)
    assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200
    assert stub.requests_for(CLIENT_SECRET_NAME) == asked, "not asked again before the retry interval"
    amber = health(runtime)
    assert (amber["http_status"], amber["status"]) == (200, "ready"), amber
    for check in ("client_secret", "signing_key"):
        assert "Key Vault unreachable" in (amber["checks"][check]["warning"] or ""), amber["checks"][check]
    assert "vault.stale secret=oidc-client-secret" in caplog.text
    assert answer[2] not in caplog.text, "what the vault answered is never quoted"
    if answer is NOT_A_SECRET["json-not-an-object"]:  # the SDK's AttributeError: a bug of ours would look alike
        assert any(r.exc_info and "vault.unreadable" in r.getMessage() for r in caplog.records), \
            "an error the SDK raised reading the answer is logged with its traceback, so a bug still shows"

    stub.answer_raw(None)
    time.sleep(cache + 0.2)
    assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200
    assert health(runtime)["checks"]["client_secret"]["warning"] is None, "green again"


def test_a_vault_answering_a_page_before_a_secret_was_ever_read_is_a_503(stub, vault_app, app_server):
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    stub.answer_raw(NOT_A_SECRET["html-200"])
    runtime = vault_app()
    response = requests.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False, timeout=20)
    assert_error_page(response, 503, runtime, "key_vault_unavailable")
    assert response.headers.get("Retry-After") == "30"
    stub.answer_raw(None)
    started = requests.get(f"{APP_BASE}/api/sso/user/login", allow_redirects=False, timeout=20)
    assert started.status_code == 302, "the next request reads the vault again"


# Key Vault's own refusals: a JSON error with its code (an RBAC refusal names ForbiddenByRbac inside).
KEY_VAULT_REFUSALS = {
    "forbidden-by-rbac": (403, "application/json", '{"error": {"code": "Forbidden", "message": "Caller is not '
                          'authorized to perform action on resource.", "innererror": {"code": "ForbiddenByRbac"}}}'),
    "secret-not-found": (404, "application/json", '{"error": {"code": "SecretNotFound", "message": "A secret with '
                         '(name/id) s was not found in this key vault."}}'),
}


@pytest.mark.parametrize("answer", [*KEY_VAULT_REFUSALS.values(), NOT_A_SECRET["html-403"], NOT_A_SECRET["html-404"]],
                         ids=[*KEY_VAULT_REFUSALS, "html-403", "html-404"])
def test_only_key_vaults_own_error_is_a_refusal_a_gateways_page_with_its_status_is_an_outage(stub, answer):
    stub.set_secret("s", "v1")
    reader = KeyVaultReader.from_url(stub.url, _default_credential())
    reader.read("s")
    stub.answer_raw(answer)
    with pytest.raises((ConfigurationError, DependencyUnavailable)) as raised:
        reader.read("s")
    if answer in KEY_VAULT_REFUSALS.values():
        assert isinstance(raised.value, ConfigurationError), raised.value  # the admin's word: fix it
    else:
        assert isinstance(raised.value, DependencyUnavailable), raised.value  # the held secret serves on
        assert f"HTTP {answer[0]}" in raised.value.detail and "not Key Vault" in raised.value.detail, raised.value
        assert answer[2] not in str(raised.value), "the page is never quoted"


@pytest.mark.parametrize("refusal", KEY_VAULT_REFUSALS.values(), ids=KEY_VAULT_REFUSALS.keys())
def test_a_refusal_a_forced_re_read_meets_ends_the_fresh_secret_at_once(stub, vault_app, app_server, refusal):
    """The IdP said invalid_client, so the secret read moments ago is re-read, and Key Vault answers that
    it is deleted or no longer ours to read: the held secret, though fresh, serves no one from then on
    (it did until SECRET_CACHE_SECONDS was up, and health showed it readable)."""
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    runtime = vault_app()  # cached an hour
    assert health(runtime)["checks"]["client_secret"]["ok"] is True
    stub.answer_raw(refusal)
    with pytest.raises(ConfigurationError):
        runtime.cached_client_credential.refresh()
    with pytest.raises(ConfigurationError):
        runtime.cached_client_credential.get()
    red = health(runtime)
    assert red["http_status"] == 503 and red["checks"]["client_secret"]["ok"] is False, red["checks"]["client_secret"]
    assert CLIENT_SECRET_NAME in red["checks"]["client_secret"]["detail"], red["checks"]["client_secret"]
    stub.answer_raw(None)
    assert runtime.cached_client_credential.get().value == CLIENT_SECRET, "a good read serves again"
