"""Directory sync's token cache (shared/scim/auth.py TokenCache) keeps a read for SECRET_CACHE_SECONDS
as config.py parses it, the default when the login's settings do not load, and re-checks "off" sooner."""

from __future__ import annotations

from shared.config import SECRET_CACHE_SECONDS as DEFAULT_SECRET_CACHE_SECONDS
from shared.runtime import Runtime
from shared.scim.auth import OFF_RECHECK_SECONDS, TokenCache
from tests.unit.test_config import env

TOKEN = "T" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reads(environment: dict[str, str], after: float) -> int:
    """How many reads of the token the cache made for two lookups `after` seconds apart, when the
    token changed in between."""
    clock, environment = Clock(), dict(environment)
    cache = TokenCache(Runtime(environment), clock=clock)
    first = cache.get()
    environment["SCIM_TOKEN"] = "U" * 40
    clock.now += after
    second = cache.get()
    return 1 + (second is not first)


def test_the_read_is_kept_for_secret_cache_seconds():
    settings = env(SCIM_TOKEN=TOKEN, SECRET_CACHE_SECONDS="60")
    assert reads(settings, 59) == 1
    assert reads(settings, 60) == 2


def test_a_value_config_refuses_falls_back_to_the_default_as_the_settings_do_not_load():
    broken = env(SCIM_TOKEN=TOKEN, SECRET_CACHE_SECONDS="1e3")  # config.py refuses it: settings fail
    assert reads(broken, DEFAULT_SECRET_CACHE_SECONDS - 1) == 1
    assert reads(broken, DEFAULT_SECRET_CACHE_SECONDS) == 2
    assert reads(env(SCIM_TOKEN=TOKEN, SECRET_CACHE_SECONDS=None), DEFAULT_SECRET_CACHE_SECONDS - 1) == 1
    # Above config's bound (a day) it is a setting error, not a cache of 100,000 s read on the side.
    assert reads(env(SCIM_TOKEN=TOKEN, SECRET_CACHE_SECONDS="100000"), DEFAULT_SECRET_CACHE_SECONDS) == 2


def test_off_is_re_checked_sooner():
    clock, environment = Clock(), env(SCIM_TOKEN=None)
    cache = TokenCache(Runtime(environment), clock=clock)
    assert not cache.get().on
    environment["SCIM_TOKEN"] = TOKEN
    clock.now += OFF_RECHECK_SECONDS
    assert cache.get().accepts(f"Bearer {TOKEN}")


def test_a_setting_error_is_re_checked_as_soon_as_off_so_a_fix_shows_within_a_minute():
    clock, environment = Clock(), env(SCIM_TOKEN="s" * 31, SECRET_CACHE_SECONDS="900")
    cache = TokenCache(Runtime(environment), clock=clock)
    assert cache.get().problems, "a short token is a setting error"
    environment["SCIM_TOKEN"] = TOKEN  # the admin fixes it
    clock.now += OFF_RECHECK_SECONDS - 1
    assert cache.get().problems, "kept until the re-check"
    clock.now += 1
    assert not cache.get().problems and cache.get().accepts(f"Bearer {TOKEN}")


def test_every_configured_token_is_compared_in_constant_time_whichever_matches(monkeypatch):
    """SECURITY.md: each token with hmac.compare_digest, all of them every time, so the answer's time
    says neither which token matched nor how much of one."""
    import hmac

    from shared.scim import auth

    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    config = auth.SyncConfig(("first-token", "second-token", "third-token"), "SCIM_TOKEN", None)
    for header, expected in (("Bearer first-token", True), ("Bearer third-token", True), ("Bearer nope", False)):
        compared.clear()
        assert config.accepts(header) is expected
        assert compared == [b"first-token", b"second-token", b"third-token"], header


def test_an_unresolved_key_vault_reference_in_scim_token_is_a_setting_error_never_a_token():
    """App Service passes a reference it could not resolve as its text, which is no secret (the vault's
    and the secret's names are derivable): it turned directory sync on with that text as the token."""
    from shared.scim.auth import read_config
    from tests.unit.test_config import KEY_VAULT_REFERENCES

    for reference in KEY_VAULT_REFERENCES.values():
        config = read_config(Runtime(env(SCIM_TOKEN=reference)))
        assert config.on and config.tokens == (), "a setting error (503), not on with that token, nor off"
        (problem,) = config.problems
        assert problem.setting == "SCIM_TOKEN" and "Key Vault Secrets User" in str(problem), problem
        assert not config.accepts(f"Bearer {reference.strip()}")
