"""shared/vault.py's DerivedFromSecret when a new version of its secret cannot be built: with a
fallback the value built before serves (built once, logged once, re-read soon), without one (the
MSAL app), on a cold start, or when the fallback says no, the error is raised as before. The real
CachedSecret over a reader the test writes to, and a fake clock; shared/runtime.py's signer with its
real keys."""

from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.errors import ConfigurationError
from shared.runtime import Runtime
from shared.vault import CachedSecret, DerivedFromSecret, SecretValue

TTL = 900.0
RETRY = CachedSecret.STALE_RETRY_SECONDS


class Vault:
    """The secret's versions, newest last; `reads` counts the reads that reached it."""

    def __init__(self, value: str) -> None:
        self.versions: list[str] = []
        self.reads = 0
        self.store(value)

    def store(self, value: str) -> None:
        self.versions.append(value)

    def read(self, name: str) -> SecretValue:
        self.reads += 1
        return SecretValue(self.versions[-1], None, f"v{len(self.versions)}", "key vault")


def build(secret: SecretValue) -> str:
    if secret.value.startswith("bad"):
        raise ConfigurationError([f"secret: version {secret.version} holds no key."])
    return f"built from {secret.value}"


@pytest.fixture
def t() -> list[float]:
    return [0.0]


def derived(vault: Vault, t: list[float], builds: list[str], fallback=lambda previous, secret: previous):
    secret = CachedSecret(vault, "the-secret", TTL, clock=lambda: t[0])

    def counted(value: SecretValue) -> str:
        builds.append(value.value)
        return build(value)

    return DerivedFromSecret(secret, counted, fallback=fallback), secret


def serving_past_a_bad_version(t: list[float]):
    """"good" built, then a bad version read once: the value built before serves, `unusable` set."""
    vault, builds = Vault("good"), []
    value, secret = derived(vault, t, builds)
    value.get()
    vault.store("bad one")
    secret.expire()
    value.get()
    return vault, builds, value


def test_a_version_that_cannot_be_built_leaves_the_one_built_before_serving_built_and_logged_once(t, caplog):
    vault, builds = Vault("good"), []
    value, secret = derived(vault, t, builds)
    assert value.get() == "built from good" and value.unusable is None
    vault.store("bad one")
    secret.expire()
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        for _ in range(5):
            assert value.get() == "built from good", "the value built before serves on"
    assert builds == ["good", "bad one"], "the bad version is built once, not on every call"
    assert value.unusable is not None and value.unusable.version == "v2", value.unusable
    assert "holds no key" in str(value.unusable.error)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and logged[0].startswith("vault.unusable secret=the-secret version=v2 "), logged
    assert "holds no key" in logged[0] and "bad one" not in logged[0], "why, never the value"


def test_the_bad_version_is_re_read_within_the_retry_interval_and_a_fix_heals_it(t, caplog):
    vault, builds, value = serving_past_a_bad_version(t)
    assert vault.reads == 2
    t[0] += RETRY - 1
    value.get()
    assert vault.reads == 2, "not before the retry interval"
    t[0] += 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        assert value.get() == "built from good" and vault.reads == 3, "re-read at the retry interval, not TTL"
        assert builds == ["good", "bad one"] and not caplog.records, "the same version again: not rebuilt, not logged"
        t[0] += RETRY
        value.get()
        assert vault.reads == 4, "and again, while the version stays bad"
        vault.store("fixed")
        t[0] += RETRY
        assert value.get() == "built from fixed" and value.unusable is None
    assert [r.getMessage() for r in caplog.records] == ["vault.usable secret=the-secret version=v3"]
    t[0] += RETRY
    value.get()
    assert vault.reads == 5, "healed: back to the secret's own re-read time"
    t[0] += TTL
    value.get()
    assert vault.reads == 6


def test_the_secret_back_at_the_version_built_clears_the_unusable_one(t, caplog):
    """The bad version withdrawn (the vault's newest is the one built again): what serves is the value
    built for it, so health is no longer red for a version no one reads."""
    vault, builds, value = serving_past_a_bad_version(t)
    assert value.unusable is not None
    vault.versions.pop()
    t[0] += RETRY
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        assert value.get() == "built from good" and vault.reads == 3
    assert value.unusable is None and builds == ["good", "bad one"], "served as built, not rebuilt"
    assert [r.getMessage() for r in caplog.records] == ["vault.usable secret=the-secret version=v1"]
    t[0] += RETRY
    value.get()
    assert vault.reads == 3, "back to the secret's own re-read time"


def test_a_cold_start_raises_as_before_and_looks_for_a_fix_soon(t):
    vault, builds = Vault("bad from the start"), []
    value, _ = derived(vault, t, builds)
    for _ in range(2):
        with pytest.raises(ConfigurationError):
            value.get()
    assert value.unusable is None and vault.reads == 1
    vault.store("fixed")
    t[0] += RETRY
    assert value.get() == "built from fixed" and vault.reads == 2


def test_when_the_fallback_says_no_the_error_stands_on_every_call(t):
    vault, builds = Vault("good"), []
    value, secret = derived(vault, t, builds, fallback=lambda previous, secret: None)
    value.get()
    vault.store("bad one")
    secret.expire()
    for _ in range(2):
        with pytest.raises(ConfigurationError):
            value.get()
    assert value.unusable is None


def test_a_bug_in_the_build_is_raised_not_hidden_by_the_fallback(t):
    vault, calls = Vault("good"), []

    def buggy(secret: SecretValue) -> str:
        calls.append(secret.value)
        if len(calls) > 1:
            raise KeyError("a bug")
        return "built"

    secret = CachedSecret(vault, "the-secret", TTL, clock=lambda: t[0])
    value = DerivedFromSecret(secret, buggy, fallback=lambda previous, secret: previous)
    value.get()
    vault.store("other")
    secret.expire()
    with pytest.raises(KeyError):
        value.get()


def test_without_a_fallback_nothing_changes(t):
    """The MSAL app (shared/oidc_client.py): its error is raised, and its secret keeps its own re-read."""
    vault = Vault("good")
    secret = CachedSecret(vault, "the-secret", TTL, clock=lambda: t[0])
    value = DerivedFromSecret(secret, build)
    value.get()
    vault.store("bad one")
    secret.expire()
    with pytest.raises(ConfigurationError):
        value.get()
    t[0] += RETRY
    with pytest.raises(ConfigurationError):
        value.get()
    assert vault.reads == 2, "re-read at TTL, as before"


# ---- the signer's fallback (shared/runtime.py): what the new version still holds readably ----


def pem(key, encryption=None) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption or serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    made = {name: pem(ec.generate_private_key(ec.SECP256R1())) for name in ("a", "b", "c")}
    made["bad"] = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                      serialization.BestAvailableEncryption(b"pass phrase"))
    return made


def signer_over(vault: Vault, t: list[float]):
    runtime = Runtime({})
    runtime.__dict__["signing_key_secret"] = CachedSecret(vault, "session-signing-key", TTL, clock=lambda: t[0])
    runtime._settings = type("Settings", (), {"signing_key_name": "session-signing-key"})()
    return runtime


def kids(signer) -> list[str]:
    return [key.kid for key in signer.keys]


@pytest.mark.parametrize("held, new, serves", [
    # step 1, the new key pasted encrypted: the old key signs on, alone
    (["a"], ["a", "bad"], ["a"]),
    # step 2 (the new key first) with the new key mangled as it was pasted again: the old key signs on
    (["a", "b"], ["bad", "a"], ["a"]),
    # a key taken out along with a bad one put in: the key taken out is no longer published
    (["a", "b"], ["a", "bad", "c"], ["a"]),
    # the key the app signs with taken out (a compromised key, its replacement pasted wrong): no fallback
    (["a"], ["bad"], None),
    (["a", "b"], ["b", "bad"], None),
])
def test_the_signer_serves_on_with_the_keys_the_new_version_still_holds(t, keys, held, new, serves):
    vault = Vault("".join(keys[name] for name in held))
    runtime = signer_over(vault, t)
    before = runtime.signer()
    vault.store("".join(keys[name] for name in new))
    runtime.signing_key_secret.expire()
    if serves is None:
        with pytest.raises(ConfigurationError):
            runtime.signer()
        assert runtime.signer_unusable() is None
        return
    signer = runtime.signer()
    assert kids(signer) == [before.keys[held.index(name)].kid for name in serves]
    assert signer.current.kid == before.current.kid, "the key it signed with signs on"
    assert runtime.signer_unusable() is not None and "key #" in str(runtime.signer_unusable().error)
