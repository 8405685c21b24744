"""Secrets from Key Vault (the stub, read by the real SecretClient with the real DefaultAzureCredential
through a managed-identity endpoint): read once and cached; a rotated client secret is picked up
without a restart; Key Vault down is a quick 503."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from shared import diagnostics
from tests.conftest import APP_BASE, CERT_CLIENT_ID, CLIENT_SECRET, CLIENT_SECRET_NAME, DEMO_USER, SIGNING_KEY_NAME
from tests.support.portal import assert_error_page, correlation_id, delivered, idp_answer, sign_in, start_login

pytestmark = pytest.mark.usefixtures("loopback_only")


def test_login_with_secrets_from_key_vault_reads_the_secret_once(stub, vault_app, demo_accounts):
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET, expires_on=datetime.now(UTC) + timedelta(days=200))
    vault_app()
    for _ in range(2):
        response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
        assert response.status_code == 200, response.text[:800]
        assert delivered(response)[1]["session_token"]
    assert stub.reads(CLIENT_SECRET_NAME) == 1, "the client secret is cached, not read per login"
    assert stub.reads(SIGNING_KEY_NAME) == 1, "the signing key is cached, not read per login"


def test_a_token_pasted_as_the_client_secrets_name_never_reaches_a_key_vault_url(stub, vault_app, app_server):
    """Key Vault takes a hex token for a secret's name: read, it would sit in the request's URL (the
    vault's logs, any proxy's). It is a setting error naming OIDC_CLIENT_SECRET_NAME, never shown."""
    pasted = "c0ffee" * 8 + "0123456789abcdef"
    stub.set_secret(pasted, CLIENT_SECRET)
    vault_app(OIDC_CLIENT_SECRET_NAME=pasted)
    response = start_login(requests.Session(), APP_BASE, "user")
    assert response.status_code == 500 and "configuration_error" in response.text, response.text[:800]
    health = requests.get(f"{APP_BASE}/api/health", timeout=10)
    assert "OIDC_CLIENT_SECRET_NAME" in health.text, health.text[:800]
    for text in (response.text, health.text):
        assert pasted not in text and pasted[:16] not in text
    assert stub.requests_for(pasted) == 0, "the token was put in a Key Vault URL"


def test_a_rotated_client_secret_is_picked_up_without_a_restart(stub, vault_app, demo_accounts):
    stub.set_secret(CLIENT_SECRET_NAME, "the-old-secret-that-entra-no-longer-accepts")
    runtime = vault_app()
    session = requests.Session()
    # The login starts with the old secret read and cached (for an hour) ...
    redirect_uri, fields = idp_answer(session, APP_BASE, "user", DEMO_USER)
    assert stub.reads(CLIENT_SECRET_NAME) == 1
    # ... then an admin stores the new secret as a new version while the person signs in.
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)

    response = session.post(redirect_uri, data=fields, allow_redirects=False, timeout=20)

    assert response.status_code == 200, f"the IdP's invalid_client made the app re-read: {response.text[:800]}"
    assert stub.reads(CLIENT_SECRET_NAME) == 2, "exactly one re-read, on invalid_client"
    assert runtime.cached_client_credential.get().value == CLIENT_SECRET
    # The next login uses the new secret straight away: no more reads.
    assert sign_in(requests.Session(), APP_BASE, "user", DEMO_USER).status_code == 200
    assert stub.reads(CLIENT_SECRET_NAME) == 2


def test_a_wrong_secret_still_fails_after_one_re_read(stub, vault_app, demo_accounts):
    stub.set_secret(CLIENT_SECRET_NAME, "wrong-and-never-rotated")
    vault_app()
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
    assert response.status_code == 401, response.text[:800]
    assert stub.reads(CLIENT_SECRET_NAME) == 2, "one re-read, then the failure stands (no loop)"


def test_key_vault_down_answers_503_quickly(stub, vault_app, app_server):
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    stub.stop_vault()
    runtime = vault_app()  # a fresh runtime: nothing cached
    started = time.monotonic()
    response = start_login(requests.Session(), APP_BASE, "user")
    elapsed = time.monotonic() - started
    assert_error_page(response, 503, runtime, "key_vault_unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert CLIENT_SECRET not in response.text
    assert elapsed < 5, f"Key Vault down took {elapsed:.1f} s to become a 503"


@pytest.mark.parametrize("outage", ["stopped", "answering 500"])
def test_identity_endpoint_down_answers_503_quickly(stub, vault_app, app_server, outage):
    """The SDK's default retries would stall a failing identity endpoint ~5 s; the runtime's credential
    retries twice, quickly (shared.transport.CREDENTIAL_RETRIES): three requests reach the endpoint."""
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    if outage == "stopped":
        stub.stop()  # the vault and the managed-identity endpoint
    else:
        stub.fail_next(50, 500, server="identity")
    runtime = vault_app()
    started = time.monotonic()
    response = start_login(requests.Session(), APP_BASE, "user")
    elapsed = time.monotonic() - started
    assert_error_page(response, 503, runtime, "key_vault_unavailable")
    assert "Retry-After" in response.headers
    assert elapsed < 3, f"the identity endpoint {outage} took {elapsed:.1f} s to become a 503"
    if outage == "answering 500":  # a stopped endpoint refuses the connection: nothing reaches it to count
        asked = [r.status for r in stub.log if r.server == "identity"]
        assert asked == [500] * 3, f"the credential retries twice (RELIABILITY.md), no more, no fewer: {asked}"


def test_client_certificate_from_key_vault_signs_the_client_in(stub, vault_app, demo_accounts, client_certificate):
    # Key Vault hands a PEM certificate's secret out as the certificate plus its private key.
    stub.set_secret("oidc-client-certificate", client_certificate.certificate_pem + client_certificate.private_key_pem,
                    content_type="application/x-pem-file")
    vault_app(OIDC_CLIENT_ID=CERT_CLIENT_ID, OIDC_CLIENT_CERTIFICATE_NAME="oidc-client-certificate")
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
    assert response.status_code == 200, response.text[:800]
    assert stub.reads("oidc-client-certificate") == 1
    assert stub.reads(CLIENT_SECRET_NAME) == 0, "with a certificate configured, no client secret is read"


def test_the_correlation_id_on_the_page_is_the_client_request_id_of_its_key_vault_reads(stub, vault_app,
                                                                                          demo_accounts):
    """What a person quotes from an error page finds the vault calls of that request in Key Vault's
    logs (x-ms-client-request-id): the callback's re-read after invalid_client carries the callback's id."""
    stub.set_secret(CLIENT_SECRET_NAME, "wrong-and-never-rotated")
    runtime = vault_app()
    response = sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)
    assert_error_page(response, 401, runtime, "client_credential_rejected")
    reads = [r for r in stub.log if r.server == "vault" and r.status == 200 and CLIENT_SECRET_NAME in r.path]
    assert len(reads) == 2, reads
    assert reads[1].client_request_id == correlation_id(response), (reads, correlation_id(response))
    assert reads[0].client_request_id not in ("", reads[1].client_request_id), \
        "the login start's read carries the login start's own id"
    (last_user,) = [c for c in diagnostics.last_sign_ins(runtime) if c.name == "last_user"]
    assert "Key Vault" in last_user.fix and "OIDC_CLIENT_SECRET_NAME" in last_user.fix, last_user.fix
