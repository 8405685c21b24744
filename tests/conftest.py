"""Session fixtures: the local test CA, Azurite and the dev IdP (real processes, stopped at the end)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

from shared.accounts import AccountStore
from shared.runtime import Runtime, reset_runtime
from tests.support.hostile_idp import HostileIdp
from tests.support.keyvault_stub import KeyVaultStub
from tools.host import ServerHandle, build_wsgi_app, serve_in_thread
from tools.stack import (
    RunningIdp,
    Service,
    TestCA,
    entra_person,
    free_port,
    idp_config,
    make_ca,
    start_azurite,
    start_idp,
    trust_env,
)

IDP_TENANT = "3f0c9a52-6d1e-4b7a-9c2f-8e5d41a7b0c6"
CLIENT_ID = "6b1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
CLIENT_SECRET = "local-test-client-secret"
CERT_CLIENT_ID = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
# The app's port is chosen before the IdP starts, which must know the redirect URIs.
APP_PORT = free_port()
APP_BASE = f"https://127.0.0.1:{APP_PORT}"
REDIRECT_URIS = {kind: f"{APP_BASE}/api/sso/{kind}/callback" for kind in ("user", "agent")}
SIGNED_OUT_URIS = {kind: f"{APP_BASE}/api/sso/{kind}/signed-out" for kind in ("user", "agent")}
# The app over plain HTTP on loopback, as `func start` serves it (the plain-HTTP browser test).
HTTP_APP_PORT, HTTP_PORTAL_PORT = free_port(), free_port()
HTTP_APP_BASE = f"http://127.0.0.1:{HTTP_APP_PORT}"
HTTP_REDIRECT_URIS = {kind: f"{HTTP_APP_BASE}/api/sso/{kind}/callback" for kind in ("user", "agent")}
PORTAL_PORT = free_port()
PORTAL_ORIGIN = f"https://127.0.0.1:{PORTAL_PORT}"  # the demo portal serves here in the browser test
PORTAL_URLS = {"user": f"{PORTAL_ORIGIN}/user", "agent": f"{PORTAL_ORIGIN}/agent"}
DEMO_USER = entra_person(
    "user@contoso.test", "user-password", name="Demo User",
    oid="0c1f6b0e-2b8e-4f5a-9d51-7a3e1f2c9b01", tenant=IDP_TENANT,
)  # fmt: skip
DEMO_AGENT = entra_person(
    "agent@contoso.test", "agent-password", name="Demo Agent",
    oid="5e2d9c4a-8b7f-4e1d-a3c6-0f9b8a7d6c02", tenant=IDP_TENANT,
)  # fmt: skip

# Entra marks an email it has not verified: xms_edov false (and the OIDC standard's email_verified).
UNVERIFIED_USER = entra_person(
    "unverified@contoso.test", "unverified-password", name="Unverified Email",
    oid="9a8b7c6d-5e4f-4a3b-9c2d-1e0f2a3b4c03", tenant=IDP_TENANT,
    xms_edov=False, email_verified=False,
)  # fmt: skip


NO_ACCOUNT = entra_person(
    "nobody@contoso.test", "nobody-password", name="No Account",
    oid="7b6a5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c04", tenant=IDP_TENANT,
)  # fmt: skip
DISABLED_USER = entra_person(
    "Disabled@Contoso.test", "disabled-password", name="Disabled User",
    oid="6c5b4a3d-2e1f-4b0a-9d8c-7e6f5a4b3c05", tenant=IDP_TENANT,
)  # fmt: skip


@dataclass
class ClientCertificate:
    """An RSA key and self-signed certificate a private_key_jwt client authenticates with."""

    private_key_pem: str
    certificate_pem: str
    sha1_thumbprint: str  # hex, as MSAL's client_credential["thumbprint"] wants it
    public_jwk: dict


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCA]:
    """The local test CA. For the session, REQUESTS_CA_BUNDLE and SSL_CERT_FILE name a bundle that
    trusts it, and CURL_CA_BUNDLE is unset."""
    ca = make_ca(tmp_path_factory.mktemp("ca"))
    with pytest.MonkeyPatch.context() as mp:
        for name, value in trust_env(ca).items():
            mp.setenv(name, value)
        mp.delenv("CURL_CA_BUNDLE", raising=False)
        yield ca


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Azurite's Table service; ``azurite.connection_string`` connects to it."""
    service = start_azurite(workdir=tmp_path_factory.mktemp("azurite"))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def client_certificate() -> ClientCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portal-sso-test-client")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return ClientCertificate(
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        sha1_thumbprint=cert.fingerprint(hashes.SHA1()).hex(),  # noqa: S303 - x5t is SHA-1 by definition
        public_jwk=jwk,  # no kid: MSAL's assertion carries x5t, not kid
    )


@pytest.fixture(scope="session")
def idp(
    test_ca: TestCA, client_certificate: ClientCertificate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningIdp]:
    """The dev IdP (Entra-shaped) with a client_secret_post client (first), a private_key_jwt
    client, the demo user and agent, and a person whose email is marked unverified."""
    common = {
        "redirect_uris": [*REDIRECT_URIS.values(), *HTTP_REDIRECT_URIS.values()],
        "post_logout_redirect_uris": [*PORTAL_URLS.values(), *SIGNED_OUT_URIS.values()],
    }
    clients = [
        {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token_endpoint_auth_method": "client_secret_post",
            **common,
        },
        {
            "client_id": CERT_CLIENT_ID,
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [client_certificate.public_jwk]},
            **common,
        },
    ]
    config = idp_config(
        test_ca,
        port=free_port(),
        tenant=IDP_TENANT,
        clients=clients,
        people=[DEMO_USER, DEMO_AGENT, UNVERIFIED_USER, NO_ACCOUNT, DISABLED_USER],
    )
    service = start_idp(config, workdir=tmp_path_factory.mktemp("idp"))
    try:
        yield RunningIdp(service=service, config=config)
    finally:
        service.stop()


# ---- the function app, served by tools.host over HTTPS, with a Runtime the tests can swap ----


def _pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# An EC key on SM2, a curve cryptography parses but does not support (it raises UnsupportedAlgorithm,
# neither ValueError nor TypeError), and cannot generate: a throwaway key, made once with openssl.
SM2_KEY_PEM = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqBHM9VAYItBG0wawIBAQQgsxKmpt/enUN67uZR
EzAu+2r+QjL2BBa5+pbPMw5rtQqhRANCAAS/c8bXv10Me/AzzEoW/KUy7TiSHtMb
j7d0KlO7qEBTmbtFuthrpU/md9Qw67MUxciJxThjBrb1dl5RT1HTINZN
-----END PRIVATE KEY-----
"""


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    """An RSA key for the unit tests that sign or verify with one."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def signing_key_pem() -> str:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def app_env(idp: RunningIdp, azurite: Service, signing_key_pem: str) -> dict[str, str]:
    """The settings of the app under test, local-development style (secrets given directly)."""
    return {
        "OIDC_ISSUER_URL": f"{idp.issuer}/.well-known/openid-configuration",
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "SESSION_SIGNING_KEY": signing_key_pem,
        "TABLES_CONNECTION_STRING": azurite.connection_string,
        "PORTAL_USER_URL": PORTAL_URLS["user"],
        "PORTAL_AGENT_URL": PORTAL_URLS["agent"],
        "PUBLIC_BASE_URL": APP_BASE,
    }


@pytest.fixture(scope="session")
def function_host():
    """The real function_app.py as tools.host serves it (a WSGI app); indexed once per session."""
    import function_app

    return build_wsgi_app(function_app.app)


@pytest.fixture(scope="session")
def app_server(test_ca: TestCA, app_env: dict[str, str], function_host) -> Iterator[ServerHandle]:
    """The real function_app.py, as tools.host serves it, at APP_BASE."""
    reset_runtime(Runtime(app_env))
    handle = serve_in_thread(
        function_host, port=APP_PORT,
        ssl_context=(str(test_ca.server_cert), str(test_ca.server_key)),
    )  # fmt: skip
    try:
        yield handle
    finally:
        handle.stop()
        reset_runtime(None)


@pytest.fixture
def use_settings(app_server: ServerHandle, app_env: dict[str, str]) -> Iterator:
    """`use_settings(**changes)` serves the app with changed settings (None removes one) for one
    test; returns the new Runtime. The default runtime comes back afterwards."""
    made: list[Runtime] = []

    def apply(credential_factory=None, **changes: str | None) -> Runtime:
        env = {**app_env, **changes}
        runtime = Runtime({k: v for k, v in env.items() if v is not None}, credential_factory=credential_factory)
        reset_runtime(runtime)
        made.append(runtime)
        return runtime

    yield apply
    reset_runtime(Runtime(app_env))


@pytest.fixture(scope="session")
def account_store(app_env: dict[str, str]) -> AccountStore:
    """The PortalAccounts table of the app under test, for seeding accounts."""
    return Runtime(app_env).accounts


@pytest.fixture(scope="session")
def demo_accounts(account_store: AccountStore) -> dict[str, str]:
    """The demo user's user account and the demo agent's agent account; returns kind -> account id."""
    account_store.add(DEMO_USER["claims"]["email"], "user", "U-1001", "Demo User")
    account_store.add(DEMO_AGENT["claims"]["email"], "agent", "A-2001", "Demo Agent")
    account_store.add("disabled@contoso.test", "user", "U-1002", "Disabled User", enabled=False)
    return {"user": "U-1001", "agent": "A-2001"}


@pytest.fixture(scope="module")
def hostile(test_ca: TestCA) -> Iterator[HostileIdp]:
    """The hostile IdP (tests/support/hostile_idp.py), one per test module; `hostile.reset()` makes it
    honest again."""
    with HostileIdp(test_ca, redirect_uris=REDIRECT_URIS.values()) as idp:
        yield idp


# ---- Key Vault: the stub, read by the real SecretClient through the real DefaultAzureCredential ----

CLIENT_SECRET_NAME = "oidc-client-secret"
SIGNING_KEY_NAME = "session-signing-key"


@pytest.fixture
def stub(test_ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeyVaultStub]:
    """A fresh vault per test (a new URL, so no challenge cached for it), its managed identity in the
    environment the way App Service sets it."""
    with KeyVaultStub(test_ca.server_cert, test_ca.server_key) as running:
        running.apply_env(monkeypatch)
        yield running


@pytest.fixture
def vault_app(stub: KeyVaultStub, use_settings, signing_key_pem: str):
    """`vault_app(**changes)` serves the app with its secrets in Key Vault only (the signing key
    stored there), cached for an hour unless `changes` say otherwise; returns the new Runtime."""
    stub.set_secret(SIGNING_KEY_NAME, signing_key_pem)

    def apply(**changes: str | None) -> Runtime:
        return use_settings(**{"KEY_VAULT_URL": stub.url, "OIDC_CLIENT_SECRET": None, "SESSION_SIGNING_KEY": None,
                               "SECRET_CACHE_SECONDS": "3600", **changes})

    return apply


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


@pytest.fixture
def loopback_only(monkeypatch):
    """Refuses (and reports) any connection or name lookup that is not loopback: a credential falling
    through its chain must not reach IMDS or login.microsoftonline.com. Modules that use Azure
    credentials turn it on for every test with `pytestmark = pytest.mark.usefixtures("loopback_only")`."""
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
