"""The pure parts of the MSAL glue (shared/oidc_client.py): the nonce MSAL sends, and the client
credential built from a secret or a PEM certificate with its key."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shared.config import load_settings
from shared.errors import ConfigurationError
from shared.oidc_client import OidcClient, expected_nonce, msal_client_credential
from shared.provider import discover
from shared.vault import CachedSecret, SecretValue, SettingsReader
from tests.conftest import SM2_KEY_PEM


def secret(value: str) -> SecretValue:
    return SecretValue(value=value, expires_on=None, version="v1", source="OIDC_CLIENT_SECRET")


def test_expected_nonce_is_the_sha256_hex_of_the_flow_nonce():
    flow = {"nonce": "AbcDef123_-"}
    assert expected_nonce(flow) == hashlib.sha256(b"AbcDef123_-").hexdigest(), \
        "step 11: the ID token carries sha256-hex of the flow's nonce (what MSAL sends)"


def test_client_credential_of_a_secret_is_the_secret_string():
    assert msal_client_credential(secret("s3cret"), certificate=False) == "s3cret"


@pytest.fixture(scope="module")
def certificate_pem() -> tuple[str, rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portal-sso-unit")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    # Key Vault returns a PEM certificate's secret as the key followed by the certificate.
    return key_pem + cert.public_bytes(serialization.Encoding.PEM).decode(), key, cert


def test_client_credential_of_a_certificate_is_msals_private_key_jwt_material(certificate_pem):
    text, key, cert = certificate_pem
    credential = msal_client_credential(secret(text), certificate=True)
    sha1 = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - x5t is SHA-1 by RFC 7515
    assert credential["thumbprint"] == sha1, "the thumbprint is the certificate's SHA-1 (x5t), hex, as MSAL wants it"
    loaded = serialization.load_pem_private_key(credential["private_key"].encode(), password=None)
    assert loaded.private_numbers() == key.private_numbers(), "the private key is the certificate's own"
    assert x509.load_pem_x509_certificate(credential["public_certificate"].encode()) == cert


def test_client_credential_of_a_certificate_without_its_key_is_refused_without_echoing_it(certificate_pem):
    _, _, cert = certificate_pem
    cert_only = cert.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(ConfigurationError) as caught:
        msal_client_credential(secret(cert_only), certificate=True)
    message = "\n".join(map(str, caught.value.problems))
    assert "OIDC_CLIENT_SECRET" in message, "the error names where the credential came from"
    assert cert_only.splitlines()[1] not in message, "the error never contains the PEM"


def test_a_certificates_key_on_a_curve_cryptography_does_not_support_is_refused(certificate_pem):
    """SM2: cryptography raises UnsupportedAlgorithm, which was no ConfigurationError but a 500."""
    _, _, cert = certificate_pem
    with pytest.raises(ConfigurationError) as caught:
        msal_client_credential(secret(SM2_KEY_PEM + cert.public_bytes(serialization.Encoding.PEM).decode()),
                               certificate=True)
    message = "\n".join(map(str, caught.value.problems))
    assert "OIDC_CLIENT_SECRET" in message and "unencrypted private key" in message, message
    assert SM2_KEY_PEM.splitlines()[1] not in message, "the error never contains the PEM"


ENTRA_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ENTRA_HOST = "https://login.microsoftonline.com"


class EntraDocument(requests.Session):
    """login.microsoftonline.com as far as discovery goes: the v2.0 metadata document at its URL and
    nothing else (a 404, as for any path Entra does not serve); every GET recorded."""

    def __init__(self):
        super().__init__()
        self.gets: list[str] = []
        self.document = {"issuer": f"{ENTRA_HOST}/{ENTRA_TENANT}/v2.0",
                         "authorization_endpoint": f"{ENTRA_HOST}/{ENTRA_TENANT}/oauth2/v2.0/authorize",
                         "token_endpoint": f"{ENTRA_HOST}/{ENTRA_TENANT}/oauth2/v2.0/token",
                         "jwks_uri": f"{ENTRA_HOST}/{ENTRA_TENANT}/discovery/v2.0/keys",
                         "id_token_signing_alg_values_supported": ["RS256"],
                         "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"]}

    def request(self, method, url, *args, **kwargs):
        self.gets.append(url)
        answer = requests.Response()
        answer.url, answer.encoding = url, "utf-8"
        if url == f"{ENTRA_HOST}/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration":
            answer.status_code, answer._content = 200, json.dumps(self.document).encode()
        else:
            answer.status_code, answer._content = 404, b'{"error":"not_found"}'
        return answer


@pytest.mark.parametrize("raw", [f"{ENTRA_HOST}/{ENTRA_TENANT}/v2.0/.well-known/openid-configuration",
                                 f"{ENTRA_HOST}/{ENTRA_TENANT}/v2.0", f"{ENTRA_HOST}/{ENTRA_TENANT}/v2.0/"])
def test_msal_is_given_an_entra_authority_it_discovers_as_the_document_we_fetched(raw):
    """MSAL adds /v2.0/.well-known/openid-configuration to an Entra authority's path: given the issuer
    itself it looked for /<tenant>/v2.0/v2.0/..., which Entra does not serve, and every login start was
    a 503. The real MSAL, over a session that serves what Entra serves."""
    settings = load_settings({"OIDC_ISSUER_URL": raw, "OIDC_CLIENT_ID": "11111111-2222-4333-8444-555555555555",
                              "OIDC_CLIENT_SECRET": "s", "SESSION_SIGNING_KEY": "k",
                              "TABLES_CONNECTION_STRING": "UseDevelopmentStorage=true",
                              "PORTAL_USER_URL": "https://portal.test/u", "PORTAL_AGENT_URL": "https://portal.test/a",
                              "PUBLIC_BASE_URL": "https://sso.test"})
    session = EntraDocument()
    metadata = discover(settings.metadata_url, settings.issuer_base, session, multi_tenant=settings.multi_tenant)
    client = OidcClient(client_id=settings.client_id, authority=settings.issuer_base, certificate=False,
                        credential=CachedSecret(SettingsReader({"s": ("OIDC_CLIENT_SECRET", "s")}), "s", 900),
                        session=session, metadata=lambda: metadata)
    flow = client.start("https://sso.test/api/sso/user/callback")
    assert flow["auth_uri"].startswith(session.document["authorization_endpoint"] + "?")
    assert session.gets == [settings.metadata_url], "one discovery per worker: MSAL was answered from ours"


def test_a_certificate_in_key_vaults_default_pkcs12_form_is_msals_material_too(certificate_pem):
    """Key Vault's default certificate policy stores the secret as a base64 PFX (application/x-pkcs12)."""
    from cryptography.hazmat.primitives.serialization import pkcs12

    _, key, cert = certificate_pem
    pfx = pkcs12.serialize_key_and_certificates(b"portal-sso", key, cert, None, serialization.NoEncryption())
    value = SecretValue(value=base64.b64encode(pfx).decode(), expires_on=None, version="v1", source="key vault",
                        content_type="application/x-pkcs12")
    credential = msal_client_credential(value, certificate=True)
    assert credential["thumbprint"] == cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - x5t is SHA-1
    loaded = serialization.load_pem_private_key(credential["private_key"].encode(), password=None)
    assert loaded.private_numbers() == key.private_numbers()
    with pytest.raises(ConfigurationError) as caught:
        msal_client_credential(SecretValue("bm90IGEgcGZ4", None, "v1", "key vault", "application/x-pkcs12"),
                               certificate=True)
    assert "PKCS#12" in str(caught.value.problems) and "PEM" in str(caught.value.problems)


@pytest.mark.parametrize("form", ["pem", "pkcs12"])
def test_the_health_check_reads_a_client_certificates_expiry_in_either_form(certificate_pem, form):
    """The check read the date with the PEM loader only: a certificate in Key Vault's default PKCS#12
    form showed no expiry (green, days_to_expiry null) until Entra refused it."""
    from types import SimpleNamespace

    from cryptography.hazmat.primitives.serialization import pkcs12

    from shared import diagnostics

    text, key, cert = certificate_pem
    if form == "pkcs12":
        pfx = pkcs12.serialize_key_and_certificates(b"portal-sso", key, cert, None, serialization.NoEncryption())
        value = SecretValue(base64.b64encode(pfx).decode(), None, "v1", "key vault", "application/x-pkcs12")
    else:
        value = SecretValue(text, None, "v1", "key vault", "application/x-pem-file")
    held = SimpleNamespace(name="oidc-client-cert", get=lambda: value, unavailable_since=None, unavailable_detail="")
    runtime = SimpleNamespace(cached_client_credential=held, metadata_held=lambda: object(), oidc=SimpleNamespace(
        credential_check=lambda: SimpleNamespace(accepted=True, hint=None, detail="the IdP issued a token")))
    settings = SimpleNamespace(uses_certificate=True, key_vault_url="https://contoso.vault.azure.net")
    check = diagnostics.check_client_secret(runtime, settings, dt.datetime.now(dt.UTC))
    assert check.data["days_to_expiry"] == 0, check.data  # the fixture's certificate lasts a day
    assert check.warning and "expires in" in check.warning, check


def test_the_msal_app_is_rebuilt_when_the_metadata_re_read_changed_it_not_when_it_is_the_same():
    """MSAL keeps the endpoints it was built with: a re-read that moved one rebuilds it; the daily
    re-read of the same document (another object, equal) does not parse the credential again."""
    from dataclasses import replace

    from shared.provider import ProviderMetadata
    from shared.vault import DerivedFromSecret

    value = SecretValue("s", None, "v1", "key vault")
    held = type("Held", (), {"get": lambda self: value, "refresh": lambda self: value})()
    first = ProviderMetadata("https://idp.test", "https://idp.test/a", "https://idp.test/t", "https://idp.test/k",
                             None, frozenset({"RS256"}), False, "https://idp.test/m")
    metadata, builds = [first], []
    derived = DerivedFromSecret(held, lambda secret: builds.append(metadata[0]) or object(), also=lambda: metadata[0])
    app = derived.get()
    metadata[0] = replace(first)  # re-read, the same document
    assert derived.get() is app and len(builds) == 1
    metadata[0] = replace(first, token_endpoint="https://idp.test/moved")
    assert derived.get() is not app and len(builds) == 2
