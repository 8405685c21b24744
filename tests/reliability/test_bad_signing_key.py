"""A new version of the session-signing key the app cannot use (a rotation's step with a key pasted
encrypted, in OpenSSH form, cut short) on a running app: the version read before serves on (sign-in,
flows in flight, the JWKS), health is red naming the key, the bad version is logged and parsed once,
and a corrected version heals it without a restart. The real app through tools.host, its secrets in
the Key Vault stub read by the real SecretClient."""

from __future__ import annotations

import logging
import re
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import shared.runtime
from shared.vault import CachedSecret
from tests.conftest import APP_BASE, CLIENT_SECRET, CLIENT_SECRET_NAME, DEMO_USER, PORTAL_ORIGIN, SIGNING_KEY_NAME
from tests.support.portal import delivered, idp_answer, sign_in, verify_session_token

pytestmark = pytest.mark.usefixtures("loopback_only")

TIMEOUT = 20
RETRY_SECONDS = 1.0  # CachedSecret.STALE_RETRY_SECONDS for these tests: a bad version is re-read this soon


def get(path: str) -> requests.Response:
    return requests.get(f"{APP_BASE}{path}", timeout=TIMEOUT, allow_redirects=False)


def pem(key, encryption=None) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption or serialization.NoEncryption()).decode()


def published() -> list[str]:
    jwks = get("/api/sso/jwks.json")
    assert jwks.status_code == 200, jwks.text[:400]
    return [key["kid"] for key in jwks.json()["keys"]]


def signed_kid(response: requests.Response) -> str:
    assert response.status_code == 200, response.text[:600]
    token = delivered(response)[1]["session_token"]
    verify_session_token(token, APP_BASE, PORTAL_ORIGIN)
    return jwt.get_unverified_header(token)["kid"]


@pytest.fixture
def parses(monkeypatch) -> list[str]:
    """Every bundle the signer is built from (what shared.runtime hands load_signing_keys)."""
    seen: list[str] = []
    real = shared.runtime.load_signing_keys

    def counting(bundle: str, *args):
        seen.append(bundle)
        return real(bundle, *args)

    monkeypatch.setattr(shared.runtime, "load_signing_keys", counting)
    return seen


@pytest.fixture
def running(stub, vault_app, demo_accounts, monkeypatch):
    """An app that has signed someone in with the key held in the vault (cached for an hour)."""
    monkeypatch.setattr(CachedSecret, "STALE_RETRY_SECONDS", RETRY_SECONDS)
    stub.set_secret(CLIENT_SECRET_NAME, CLIENT_SECRET)
    runtime = vault_app()
    kid = signed_kid(sign_in(requests.Session(), APP_BASE, "user", DEMO_USER))
    assert published() == [kid]
    return runtime, kid


def test_a_bad_new_key_at_step_one_keeps_the_running_app_signing_in_and_health_names_it(
        stub, running, signing_key_pem, parses, caplog):
    runtime, old_kid = running
    in_flight = requests.Session()
    action, fields = idp_answer(in_flight, APP_BASE, "user", DEMO_USER)  # signed in at the IdP, not back yet

    bad = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048),
              serialization.BestAvailableEncryption(b"pass phrase"))
    stub.set_secret(SIGNING_KEY_NAME, signing_key_pem + bad)  # step 1: the old key first, the new one after
    bad_version = stub.versions(SIGNING_KEY_NAME)[-1]
    runtime.signing_key_secret.expire()  # as SECRET_CACHE_SECONDS passing
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        back = in_flight.post(action, data=fields, allow_redirects=False, timeout=TIMEOUT)
        assert signed_kid(back) == old_kid, "the login in flight completes, signed with the key held"
        assert signed_kid(sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)) == old_kid
        assert published() == [old_kid], "the JWKS serves on"
        health = get("/api/health")
        assert get("/api/sso/user/login").status_code == 302
    assert health.status_code == 503, health.text
    check = health.json()["checks"]["signing_key"]
    assert check["ok"] is False, check
    detail = check["detail"]
    assert "Key Vault secret 'session-signing-key'" in detail and "key #2" in detail and "encrypted" in detail, detail
    assert bad_version in detail and old_kid in detail, "which version is refused, which key signs meanwhile"
    assert "unencrypted" in check["fix"], check
    setup = get("/api/sso/setup").text
    [row] = [row for row in re.findall(r"<tr>.*?</tr>", setup, flags=re.S) if "<th>Session signing key</th>" in row]
    assert 'class="st fail"' in row and f"version {bad_version} cannot be used" in row and "key #2" in row, row
    for line in bad.splitlines()[1:-1]:
        assert line not in health.text and line not in setup, "the bundle's content is never shown"

    assert parses == [signing_key_pem + bad], "the bad version is parsed once, not on every request"
    refused = [r.getMessage() for r in caplog.records if "unusable" in r.getMessage()]
    assert len(refused) == 1 and bad_version in refused[0] and "key #2" in refused[0], refused
    assert refused[0].startswith("vault.unusable secret=session-signing-key"), refused
    assert all(line not in refused[0] for line in bad.splitlines()[1:-1])


def test_a_corrected_version_heals_it_within_the_retry_interval(stub, running, signing_key_pem, caplog):
    runtime, old_kid = running
    stub.set_secret(SIGNING_KEY_NAME, signing_key_pem + "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC")
    runtime.signing_key_secret.expire()
    assert published() == [old_kid]
    assert get("/api/health").status_code == 503

    new = ec.generate_private_key(ec.SECP256R1())
    stub.set_secret(SIGNING_KEY_NAME, signing_key_pem + pem(new))  # the fix, read without a restart
    reads = stub.reads(SIGNING_KEY_NAME)
    time.sleep(RETRY_SECONDS + 0.2)  # far short of SECRET_CACHE_SECONDS (an hour here)
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        keys = published()
    assert stub.reads(SIGNING_KEY_NAME) == reads + 1, "re-read once the retry interval passed"
    assert keys[0] == old_kid and len(keys) == 2, "step 1 done: the old key signs, the new one is published"
    health = get("/api/health")
    assert health.status_code == 200 and health.json()["checks"]["signing_key"]["ok"] is True, health.text
    assert any(r.getMessage().startswith("vault.usable secret=session-signing-key") for r in caplog.records)
    assert signed_kid(sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)) == old_kid


def test_the_key_held_is_not_kept_once_the_admin_took_it_out(stub, running, signing_key_pem):
    """A bundle without the key the app signs with (a compromised key replaced by one pasted
    encrypted): signing on with the key taken out would be worse than the outage, so it is the
    cold start's 500, as before, and the fix is looked for as soon."""
    runtime, old_kid = running
    stub.set_secret(SIGNING_KEY_NAME, pem(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                          serialization.BestAvailableEncryption(b"pass phrase")))
    runtime.signing_key_secret.expire()
    login = get("/api/sso/user/login")
    assert login.status_code == 500 and "key #1" in login.text, login.text[:600]
    assert get("/api/sso/jwks.json").status_code == 500
    check = get("/api/health").json()["checks"]["signing_key"]
    assert check["ok"] is False and "encrypted" in check["detail"], check

    new = ec.generate_private_key(ec.SECP256R1())
    stub.set_secret(SIGNING_KEY_NAME, pem(new))  # the fix: looked for within the retry interval too
    time.sleep(RETRY_SECONDS + 0.2)
    assert len(published()) == 1 and published() != [old_kid]
    assert get("/api/health").status_code == 200


def test_a_key_taken_out_along_with_a_bad_one_put_in_is_no_longer_published(stub, running, signing_key_pem):
    """The key the app signs with stays; a key the new version no longer holds is not kept published
    (nor opens flows) by the fallback: an admin may have taken it out for a reason."""
    runtime, old_kid = running
    second = pem(ec.generate_private_key(ec.SECP256R1()))
    stub.set_secret(SIGNING_KEY_NAME, signing_key_pem + second)  # a good step 1
    runtime.signing_key_secret.expire()
    assert published()[0] == old_kid and len(published()) == 2
    stub.set_secret(SIGNING_KEY_NAME, signing_key_pem + "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n"
                    "-----END OPENSSH PRIVATE KEY-----\n")  # the second key replaced by one in OpenSSH form
    runtime.signing_key_secret.expire()
    assert published() == [old_kid]
    assert signed_kid(sign_in(requests.Session(), APP_BASE, "user", DEMO_USER)) == old_kid
    check = get("/api/health").json()["checks"]["signing_key"]
    assert check["ok"] is False and "key #2" in check["detail"] and "OPENSSH" in check["detail"], check
