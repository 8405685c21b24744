"""Directory sync's bearer tokens: where they come from, whether sync is on, and the check.

The tokens are `SCIM_TOKEN` (local development) or the Key Vault secret `SCIM_TOKEN_NAME` (default
`scim-token`): one or two tokens, one per line, the new one first, both accepted, so a rotation has no
gap. None configured: directory sync is off (every SCIM route 404). A token under MIN_TOKEN_LENGTH
characters, `SCIM_TOKEN` holding a Key Vault reference App Service could not resolve, `SCIM_TOKEN`
beside `KEY_VAULT_URL`, or a bad `SCIM_DEFAULT_KIND`: a setting error (SCIM routes 503 naming it). No
SCIM library is imported here (the setup page uses this module)."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from ..config import KINDS, SECRET_CACHE_SECONDS, secret_name_problem, unresolved_reference
from ..errors import ConfigurationError, Problem
from ..refreshing import Refreshing
from ..vault import CachedSecret

MIN_TOKEN_LENGTH = 32
MAX_TOKENS = 2
DEFAULT_SECRET_NAME = "scim-token"  # noqa: S105 - the name of a Key Vault secret, not a secret
# How long a read of the token secret is reused. "Off" (no secret) and a setting error are re-checked
# sooner, so a token put into Key Vault by `register-app provisioning`, or an admin's fix of a bad
# one, takes effect within a minute (the setup page reads afresh: it said "on" while SCIM went on
# answering 503); a presented token that matches none re-reads the secret at most every
# REREAD_SECONDS (a rotation that reached Entra before this worker's cache).
OFF_RECHECK_SECONDS = 60.0
REREAD_SECONDS = 30.0


@dataclass(frozen=True)
class SyncConfig:
    """What one read of the settings and the secret gave: `tokens` empty means off; `problems`
    non-empty means a setting error (the tokens are then not used)."""

    tokens: tuple[str, ...]
    source: str  # "SCIM_TOKEN", "Key Vault secret 'scim-token'", or "" when off
    default_kind: str | None
    problems: tuple[Problem, ...] = ()

    @property
    def on(self) -> bool:
        return bool(self.tokens) or bool(self.problems)

    def accepts(self, authorization: str | None) -> bool:
        """True when the header is `Bearer <one of the tokens>`. Every token is compared, each in
        constant time, whichever matches: the time says nothing about which one or how much."""
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        given = presented.strip().encode("utf-8", "surrogatepass")
        matched = False
        for token in self.tokens:
            matched |= hmac.compare_digest(given, token.encode("utf-8"))
        return matched


SETTINGS_FIRST = "the app's settings have problems (see Settings): the token is read once they load."


def parse_tokens(raw: str, source: str) -> tuple[tuple[str, ...], list[Problem]]:
    """The secret's lines (blank lines and surrounding spaces dropped), at most MAX_TOKENS."""
    tokens = tuple(line.strip() for line in raw.splitlines() if line.strip())
    problems = []
    setting = "SCIM_TOKEN" if source == "SCIM_TOKEN" else "SCIM_TOKEN_NAME"
    # A Problem is said after its setting ("SCIM_TOKEN: ..."): the source again only when it is another
    # (the Key Vault secret SCIM_TOKEN_NAME names).
    of = f"{source} " if source != setting else ""
    if not tokens:  # a secret of blanks exists, as an empty one does (Key Vault's "is empty"): not off
        problems.append(Problem(setting, f"{of}is empty."))
    if len(tokens) > MAX_TOKENS:
        problems.append(Problem(setting, f"{of}holds {len(tokens)} tokens;",
                                "keep at most two, one per line, the new one first."))
    short = [i + 1 for i, t in enumerate(tokens) if len(t) < MIN_TOKEN_LENGTH]
    if short:
        problems.append(Problem(setting, f"{of.rstrip() + ': ' if of else ''}token on line "
                                f"{', '.join(map(str, short))} is shorter than "
                                f"{MIN_TOKEN_LENGTH} characters;", "generate one with "
                                "`python -c \"import secrets; print(secrets.token_urlsafe(32))\"`."))
    return tokens, problems


def default_kind(env) -> tuple[str | None, list[Problem]]:
    raw = (env.get("SCIM_DEFAULT_KIND") or "").strip().lower()
    if raw and raw not in KINDS:
        return None, [Problem("SCIM_DEFAULT_KIND", "must be user, agent or empty.")]
    return raw or None, []


def secret_name(env) -> str:
    return (env.get("SCIM_TOKEN_NAME") or "").strip() or DEFAULT_SECRET_NAME


def read_config(runtime) -> SyncConfig:
    """Reads the settings and (with KEY_VAULT_URL) the secret, afresh. Raises DependencyUnavailable
    when Key Vault cannot be reached."""
    env = runtime.env
    kind, problems = default_kind(env)
    vault = (env.get("KEY_VAULT_URL") or "").strip()
    direct = env.get("SCIM_TOKEN") or ""
    if vault:
        # Each of these stops the read, and each is named (not only the first).
        unreadable = [Problem("SCIM_TOKEN", "not allowed together with KEY_VAULT_URL (local development only);",
                              "remove it and keep the token in Key Vault.")] if direct.strip() else []
        named = (env.get("SCIM_TOKEN_NAME") or "").strip()
        if problem := secret_name_problem("SCIM_TOKEN_NAME", named):
            unreadable.append(problem)
        if unreadable:
            return SyncConfig((), "", kind, (*problems, *unreadable))
        name = secret_name(env)
        source = f"Key Vault secret '{name}'"
        try:
            reader = runtime.secrets
        except ConfigurationError:
            # The sign-in settings do not load (the vault's reader is built from them): their own rows name
            # each problem; taken as directory sync's, each was named twice and its 503 said to fix them.
            return SyncConfig((), source, kind, (*problems, Problem("", SETTINGS_FIRST)))
        try:
            raw = reader.read(name).value
        except ConfigurationError as exc:
            cause = exc.__cause__
            # No secret: directory sync is off. Key Vault answers a secret the app holds no role on with
            # a 403 whether or not it exists, and scripts/deploy grants roles per secret: under the
            # default name, which no one set up (register-app provisioning names the secret and
            # grants its role), a 403 is that secret not existing yet.
            if isinstance(cause, ResourceNotFoundError) or (
                    not named and isinstance(cause, HttpResponseError) and cause.status_code == 403):
                return SyncConfig((), "", kind)  # off: SCIM_DEFAULT_KIND, even a bad one, is of no use yet
            # The vault's problems (empty, forbidden) are about this secret: the 503 names its setting.
            located = (Problem(p.setting or "SCIM_TOKEN_NAME", p.text, p.fix) for p in exc.problems)
            return SyncConfig((), source, kind, (*problems, *located))
    elif problem := unresolved_reference("SCIM_TOKEN", direct):
        # The reference's text, not a token: as the settings take it, a setting error (sync on, 503).
        return SyncConfig((), "SCIM_TOKEN", kind, (*problems, problem))
    elif direct.strip():
        raw, source = direct, "SCIM_TOKEN"
    else:
        return SyncConfig((), "", kind)  # off (SPEC: its routes 404), whatever SCIM_DEFAULT_KIND holds
    tokens, token_problems = parse_tokens(raw, source)
    problems += token_problems
    return SyncConfig(() if problems else tokens, source, kind, tuple(problems))


class TokenCache:
    """One SyncConfig per worker, re-read after the secret cache time (SECRET_CACHE_SECONDS, which
    the settings give; 900 s when they do not load), after OFF_RECHECK_SECONDS when sync was off or
    had a setting error, and on `reread_for_mismatch` at most every REREAD_SECONDS. Reads are
    single-flight, and a vault outage at a re-read keeps the last good config (refreshing.py, the
    login's secrets' rule: Entra keeps provisioning, a wrong token is still a 401); the vault is
    tried again every min(cache time, STALE_RETRY_SECONDS)."""

    def __init__(self, runtime, clock=time.monotonic):
        self._runtime = runtime
        self._config = Refreshing(lambda: read_config(runtime), "vault", f"secret={secret_name(runtime.env)}",
                                  fresh_for=self._ttl, retry_seconds=CachedSecret.STALE_RETRY_SECONDS, clock=clock)

    def _ttl(self, config: SyncConfig) -> float:
        if not config.on or config.problems:
            return OFF_RECHECK_SECONDS
        try:
            return float(self._runtime.settings.secret_cache_seconds)  # one parse of the setting, config's
        except ConfigurationError:
            return float(SECRET_CACHE_SECONDS)  # the login's settings do not load: sync still runs

    def get(self) -> SyncConfig:
        return self._config.get()

    def reread_for_mismatch(self) -> SyncConfig:
        """A token matched none: maybe the secret was rotated since this worker read it. With Key
        Vault down the last good config serves, so the token meets a proper 401."""
        return self._config.refresh(keep=True, not_within=REREAD_SECONDS)
