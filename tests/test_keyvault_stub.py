"""The Key Vault stub does what the app's tests rely on, read by the real SecretClient through the real
DefaultAzureCredential (its managed-identity endpoint), with outbound connections limited to loopback:
secrets with versions and expiry, the 401 challenge, outages, read counts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

pytestmark = pytest.mark.usefixtures("loopback_only")


def client(stub, credential=None) -> SecretClient:
    # verify_challenge_resource: the challenge names vault.azure.net, which 127.0.0.1 is not a subdomain of.
    return SecretClient(stub.url, credential or DefaultAzureCredential(), verify_challenge_resource=False,
                        retry_total=0)


def test_secret_client_reads_through_the_challenge_and_the_managed_identity(stub):
    expires = datetime(2031, 1, 2, tzinfo=UTC)
    version = stub.set_secret("oidc-client-secret", "s3cret", expires_on=expires)
    secret = client(stub).get_secret("oidc-client-secret")
    assert (secret.value, secret.properties.version, secret.properties.expires_on) == ("s3cret", version, expires)
    assert [(r.server, r.status) for r in stub.log] == [("vault", 401), ("identity", 200), ("vault", 200)], \
        "the SDK meets the 401 challenge, gets a token from the identity endpoint, then reads"
    assert stub.reads("oidc-client-secret") == 1


def test_a_new_version_becomes_the_latest_and_old_versions_stay_readable(stub):
    first = stub.set_secret("s", "one")
    second = stub.set_secret("s", "two", content_type="application/x-pem-file")
    reader = client(stub)
    assert reader.get_secret("s").value == "two" and reader.get_secret("s").properties.content_type == \
        "application/x-pem-file"
    assert reader.get_secret("s", first).value == "one"
    assert stub.versions("s") == [first, second]


def test_a_missing_secret_is_404(stub):
    with pytest.raises(ResourceNotFoundError):
        client(stub).get_secret("nope")


def test_a_token_the_stub_did_not_issue_is_refused(stub):
    class Forged:
        def get_token(self, *scopes, **kwargs):
            return AccessToken("not-from-the-stub", int(time.time()) + 3600)

        def get_token_info(self, *scopes, **kwargs):
            return AccessTokenInfo("not-from-the-stub", int(time.time()) + 3600)

    stub.set_secret("s", "v")
    with pytest.raises(ClientAuthenticationError):
        client(stub, Forged()).get_secret("s")
    assert stub.reads("s") == 0


def test_the_vault_goes_down_and_comes_back_on_the_same_url(stub):
    stub.set_secret("s", "v")
    reader = client(stub)
    assert reader.get_secret("s").value == "v"
    url = stub.url
    stub.stop_vault()
    with pytest.raises(ServiceRequestError):
        reader.get_secret("s")  # the pooled connection was cut and new ones are refused
    stub.start_vault()
    assert stub.url == url and reader.get_secret("s").value == "v"


def test_answer_raw_answers_every_vault_request_with_its_body_until_cleared(stub):
    stub.set_secret("s", "v")
    reader = client(stub)
    reader.get_secret("s")
    stub.answer_raw((200, "text/html", "<html>gateway</html>"))
    with pytest.raises(ValueError):  # json.JSONDecodeError: the SDK cannot make a secret of a page
        reader.get_secret("s")
    stub.answer_raw(None)
    assert reader.get_secret("s").value == "v"
    assert (stub.reads("s"), stub.requests_for("s")) == (2, 4), "a raw answer reached the vault, handed out nothing"


def test_fail_next_answers_errors_then_serves_again(stub):
    stub.set_secret("s", "v", expires_on=datetime.now(UTC) + timedelta(days=1))
    reader = client(stub)
    reader.get_secret("s")
    stub.fail_next(1, 503)
    with pytest.raises(HttpResponseError) as failed:
        reader.get_secret("s")
    assert failed.value.status_code == 503
    assert reader.get_secret("s").value == "v"
    assert stub.reads("s") == 2
