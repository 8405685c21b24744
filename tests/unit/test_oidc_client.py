"""The pure parts of the MSAL glue (shared/oidc_client.py): the nonce MSAL sends, and the client
credential built from a secret or a PEM certificate with its key."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from shared.errors import ConfigurationError
from shared.oidc_client import expected_nonce, msal_client_credential
from shared.vault import SecretValue


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
