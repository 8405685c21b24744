"""The Key Vault stub, read by the real SecretClient with the real DefaultAzureCredential.

Every test runs with outbound connections limited to loopback, so a probe of IMDS (169.254.169.254) or a
call to login.microsoftonline.com would fail the test instead of leaving the machine.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest
import requests
import trustme
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from tests.support.keyvault_stub import KEY_VAULT_RESOURCE, KeyVaultStub, write_ca_bundle

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Refuse (and report) any connection or name lookup that is not loopback."""
    attempts: list[object] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(address)
            raise OSError(f"test guard: connection to non-loopback {address!r} refused")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host.decode() if isinstance(host, bytes) else host):
            attempts.append(host)
            raise socket.gaierror(f"test guard: lookup of non-loopback name {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert not attempts, f"non-loopback network use: {attempts}"


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A trustme CA and a server certificate for 127.0.0.1/localhost, as files."""
    directory = tmp_path_factory.mktemp("kv-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca_path = directory / "ca.pem"
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    ca.cert_pem.write_to_path(str(ca_path))
    with open(cert_path, "wb") as out:
        for blob in server.cert_chain_pems:
            out.write(blob.bytes())
    server.private_key_pem.write_to_path(str(key_path))
    return {"ca": ca, "ca_path": str(ca_path), "cert": str(cert_path), "key": str(key_path), "dir": directory}


@pytest.fixture
def stub(tls):
    with KeyVaultStub(tls["cert"], tls["key"]) as running:
        yield running


@pytest.fixture
def mi_env(stub, monkeypatch):
    """The environment Azure Functions gives an app with a system-assigned managed identity."""
    stub.apply_env(monkeypatch)
    return stub.managed_identity_env()


def _client(stub, tls, credential=None, **kwargs) -> SecretClient:
    return SecretClient(
        vault_url=stub.url,
        credential=credential or DefaultAzureCredential(),
        verify_challenge_resource=False,
        connection_verify=tls["ca_path"],
        **kwargs,
    )


class _ForeignCredential:
    """A credential holding a token some other issuer minted."""

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken("eyJ0eXAiOiJKV1QifQ.not-from-the-stub.sig", int(time.time()) + 3600)

    def get_token_info(self, *scopes, options=None) -> AccessTokenInfo:
        return AccessTokenInfo("eyJ0eXAiOiJKV1QifQ.not-from-the-stub.sig", int(time.time()) + 3600)


# ---------------------------------------------------------------------------------------------- reads
def test_default_credential_reads_value_and_expiry(stub, tls, mi_env):
    expires = datetime(2031, 5, 17, 8, 30, tzinfo=UTC)
    version = stub.set_secret("oidc-client-secret", "s3cr3t-value", expires_on=expires, content_type="text/plain")

    secret = _client(stub, tls).get_secret("oidc-client-secret")

    assert secret.value == "s3cr3t-value"
    assert secret.properties.expires_on == expires
    assert secret.properties.version == version
    assert secret.properties.enabled is True
    assert secret.properties.content_type == "text/plain"
    assert secret.properties.vault_url == stub.url
    assert secret.id == f"{stub.url}/secrets/oidc-client-secret/{version}"
    # The challenge dance of the real SDK: an anonymous try (401), a managed-identity token, the read.
    assert [(r.server, r.path, r.status) for r in stub.log] == [
        ("vault", "/secrets/oidc-client-secret/", 401),
        ("identity", "/msi/token", 200),
        ("vault", "/secrets/oidc-client-secret/", 200),
    ]
    assert parse_qs(stub.log[1].query) == {"api-version": ["2019-08-01"], "resource": [KEY_VAULT_RESOURCE]}
    assert stub.reads("oidc-client-secret") == 1
    assert stub.requests[0] == ("GET", "/secrets/oidc-client-secret/")


def test_token_is_reused_and_names_are_case_insensitive(stub, tls, mi_env):
    stub.set_secret("Session-Signing-Key", "pem")
    client = _client(stub, tls)
    assert client.get_secret("session-signing-key").value == "pem"
    assert client.get_secret("SESSION-SIGNING-KEY").name == "Session-Signing-Key"
    assert stub.issued_tokens() == 1
    assert stub.reads() == 2


def test_expired_secret_is_still_served_like_the_real_service(stub, tls, mi_env):
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    stub.set_secret("old", "still-here", expires_on=past)
    secret = _client(stub, tls).get_secret("old")
    assert (secret.value, secret.properties.expires_on) == ("still-here", past)


def test_naive_datetime_is_refused(stub):
    with pytest.raises(ValueError, match="timezone-aware"):
        stub.set_secret("x", "y", expires_on=datetime(2030, 1, 1))


def test_new_version_is_latest_and_previous_is_listed(tls, mi_env, stub):
    first = stub.set_secret("rotating", "one")
    second = stub.set_secret("rotating", "two")
    client = _client(stub, tls)

    latest = client.get_secret("rotating")
    assert (latest.value, latest.properties.version) == ("two", second)
    assert client.get_secret("rotating", first).value == "one"

    listed = {p.version: p for p in client.list_properties_of_secret_versions("rotating")}
    assert set(listed) == {first, second}
    assert all(p.name == "rotating" and p.enabled for p in listed.values())


def test_version_list_pages_with_next_link(tls, mi_env, stub):
    stub.page_size = 2
    made = {stub.set_secret("many", str(i)) for i in range(5)}
    listed = {p.version for p in _client(stub, tls).list_properties_of_secret_versions("many")}
    assert listed == made
    pages = [r for r in stub.log if r.path == "/secrets/many/versions" and r.status == 200]
    assert len(pages) == 3
    assert "$skiptoken" in pages[-1].query


# --------------------------------------------------------------------------------------------- errors
def test_unknown_secret_is_not_found(stub, tls, mi_env):
    with pytest.raises(ResourceNotFoundError) as caught:
        _client(stub, tls).get_secret("nope")
    assert caught.value.status_code == 404
    assert caught.value.error.code == "SecretNotFound"


def test_disabled_secret_is_forbidden_but_older_version_readable(stub, tls, mi_env):
    older = stub.set_secret("flag", "old")
    stub.set_secret("flag", "new")
    stub.disable("flag")
    client = _client(stub, tls)
    with pytest.raises(HttpResponseError) as caught:
        client.get_secret("flag")
    assert caught.value.status_code == 403
    assert caught.value.error.code == "Forbidden"
    assert caught.value.message.startswith("(Forbidden) Operation get is not allowed on a disabled secret.")
    assert client.get_secret("flag", older).value == "old"
    versions = {p.version: p.enabled for p in client.list_properties_of_secret_versions("flag")}
    assert sorted(versions.values()) == [False, True]


def test_token_not_issued_by_the_stub_is_refused(stub, tls):
    stub.set_secret("guarded", "v")
    with pytest.raises(ClientAuthenticationError) as caught:
        _client(stub, tls, credential=_ForeignCredential()).get_secret("guarded")
    assert caught.value.status_code == 401
    assert stub.reads() == 0
    assert {r.status for r in stub.log} == {401}


def test_anonymous_request_gets_key_vault_challenge(stub, tls):
    response = requests.get(
        f"{stub.url}/secrets/anything/", params={"api-version": "7.6"}, verify=tls["ca_path"], timeout=5
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.microsoftonline.com/{stub.tenant_id}", resource="https://vault.azure.net"'
    )
    assert response.json()["error"]["code"] == "Unauthorized"


def test_identity_endpoint_checks_header_and_vault_checks_audience(stub, tls):
    params = {"api-version": "2019-08-01", "resource": KEY_VAULT_RESOURCE}
    assert stub.identity_endpoint.startswith("http://127.0.0.1:")
    assert requests.get(stub.identity_endpoint, params=params, timeout=5).status_code == 401
    wrong = requests.get(stub.identity_endpoint, params=params, headers={"X-IDENTITY-HEADER": "guess"}, timeout=5)
    assert wrong.status_code == 401

    good = requests.get(
        stub.identity_endpoint, params=params, headers={"X-IDENTITY-HEADER": stub.identity_header}, timeout=5
    )
    assert good.status_code == 200
    body = good.json()
    assert body["token_type"] == "Bearer" and body["resource"] == KEY_VAULT_RESOURCE
    assert body["client_id"] == stub.client_id
    assert int(body["expires_on"]) > time.time() + 3000

    stub.set_secret("s", "v")
    kv = f"{stub.url}/secrets/s/"
    ok = requests.get(
        kv,
        params={"api-version": "7.6"},
        verify=tls["ca_path"],
        timeout=5,
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert ok.json()["value"] == "v"

    storage = requests.get(
        stub.identity_endpoint,
        timeout=5,
        params={"api-version": "2019-08-01", "resource": "https://storage.azure.com"},
        headers={"X-IDENTITY-HEADER": stub.identity_header},
    ).json()
    refused = requests.get(
        kv,
        params={"api-version": "7.6"},
        verify=tls["ca_path"],
        timeout=5,
        headers={"Authorization": f"Bearer {storage['access_token']}"},
    )
    assert refused.status_code == 401
    assert "AKV10022" in refused.json()["error"]["message"]


def test_user_assigned_identity(stub, tls, monkeypatch):
    stub.apply_env(monkeypatch, user_assigned=True)
    stub.set_secret("s", "v")
    assert _client(stub, tls).get_secret("s").value == "v"
    identity_calls = [parse_qs(r.query) for r in stub.log if r.server == "identity"]
    assert identity_calls[0]["client_id"] == [stub.client_id]
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(client_id="00000000-0000-0000-0000-000000000000").get_token(
            f"{KEY_VAULT_RESOURCE}/.default"
        )


# ----------------------------------------------------------------------------------------------- trust
def test_requests_ca_bundle_alone_is_enough(stub, tls, mi_env, monkeypatch):
    """How the product trusts the stub: no connection_verify, only REQUESTS_CA_BUNDLE."""
    bundle = write_ca_bundle(tls["dir"] / "bundle.pem", tls["ca"].cert_pem.bytes())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    stub.set_secret("s", "v")
    client = SecretClient(stub.url, DefaultAzureCredential(), verify_challenge_resource=False)
    assert client.get_secret("s").value == "v"


def test_connection_verify_wins_over_requests_ca_bundle(stub, tls, mi_env, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    stub.set_secret("s", "v")
    assert _client(stub, tls).get_secret("s").value == "v"
    untrusting = SecretClient(stub.url, DefaultAzureCredential(), verify_challenge_resource=False, retry_total=0)
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.get_secret("s")


# ---------------------------------------------------------------------------------------------- outage
def test_unreachable_vault_fails_fast(stub, tls, mi_env):
    stub.set_secret("s", "v")
    client = _client(stub, tls, retry_total=0)
    assert client.get_secret("s").value == "v"  # leaves a pooled keep-alive connection and a cached token
    stub.stop_vault()

    started = time.monotonic()
    with pytest.raises(ServiceRequestError):
        client.get_secret("s")
    assert time.monotonic() - started < 2

    fresh = _client(stub, tls, retry_total=0)  # new credential: fetches a token, then finds no vault
    started = time.monotonic()
    with pytest.raises(ServiceRequestError):
        fresh.get_secret("s")
    assert time.monotonic() - started < 2

    stub.start_vault()  # back on the same port
    assert client.get_secret("s").value == "v"


def test_stopped_stub_with_cached_challenge_fails_in_the_credential(stub, tls, mi_env):
    """azure-keyvault caches a vault's challenge process-wide, so once a vault was read, a new client asks
    its credential for a token before contacting the vault: with the identity endpoint down as well, the
    error is the credential's (ClientAuthenticationError), not ServiceRequestError. The credential retries
    an unreachable identity endpoint for about 5 s by default; ``retry_total=0`` makes it fail at once."""
    stub.set_secret("s", "v")
    assert _client(stub, tls, retry_total=0).get_secret("s").value == "v"
    stub.stop()
    started = time.monotonic()
    with pytest.raises(ClientAuthenticationError, match="ManagedIdentityCredential"):
        _client(stub, tls, DefaultAzureCredential(retry_total=0), retry_total=0).get_secret("s")
    assert time.monotonic() - started < 2


def test_fail_next_simulates_outage(stub, tls, mi_env):
    stub.set_secret("s", "v")
    client = _client(stub, tls, retry_total=0)
    assert client.get_secret("s").value == "v"

    stub.fail_next(1, 503, retry_after=1)
    with pytest.raises(HttpResponseError) as caught:
        client.get_secret("s")
    assert caught.value.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "1"

    stub.fail_next(1, status=0)
    with pytest.raises((ServiceResponseError, ServiceRequestError)):
        client.get_secret("s")

    assert client.get_secret("s").value == "v"


def test_default_retries_ride_out_a_blip(stub, tls, mi_env):
    stub.set_secret("s", "v")
    stub.fail_next(1, 503)
    assert _client(stub, tls, retry_backoff_factor=0.01).get_secret("s").value == "v"
