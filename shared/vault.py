"""Secrets: from Key Vault (managed identity in Azure) or, for local development only, from settings.
Each secret is read once per worker and re-read after `ttl` seconds or on demand (rotation without a
restart: a new Key Vault version is picked up by the next read)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from .config import LOOPBACK_HOSTS
from .errors import ConfigurationError, DependencyUnavailable
from .refreshing import Refreshing
from .transport import BudgetedRetryPolicy, azure_client_options

log = logging.getLogger("portal_sso")


@dataclass(frozen=True)
class SecretValue:
    value: str
    expires_on: datetime | None
    version: str | None
    source: str  # "key vault" or the setting's name
    content_type: str | None = None  # Key Vault's: a certificate's secret is PEM or PKCS#12 (base64)


class KeyVaultReader:
    def __init__(self, client):
        self._client = client
        self.vault_url = client.vault_url

    @classmethod
    def from_url(cls, vault_url: str, credential, **options) -> KeyVaultReader:
        from azure.keyvault.secrets import SecretClient

        if (urlsplit(vault_url).hostname or "").lower() in LOOPBACK_HOSTS:
            # A vault on this machine is a test or dev stand-in: its 401 challenge names the real
            # resource (https://vault.azure.net), which the SDK would refuse because the vault's host
            # is not a subdomain of it. A real vault (*.vault.azure.net) keeps the check, which stops
            # a lookalike URL from collecting a Key Vault token.
            options.setdefault("verify_challenge_resource", False)
        options = {**azure_client_options(), **options}
        options.setdefault("retry_policy", BudgetedRetryPolicy(**options))  # with the retry options given
        return cls(SecretClient(vault_url=vault_url, credential=credential, **options))

    def read(self, name: str) -> SecretValue:
        """Raises ConfigurationError (no such secret, disabled, no permission) or DependencyUnavailable."""
        try:
            secret = self._client.get_secret(name)
        except DecodeError as exc:
            raise _no_secret(name, exc) from exc
        except ClientAuthenticationError as exc:
            raise DependencyUnavailable("key_vault", f"authenticating to read {name!r}: {type(exc).__name__}") from exc
        except HttpResponseError as exc:
            if exc.status_code in (403, 404) and not _key_vaults_own(exc):
                # A gateway's or proxy's page with that status, in the vault's place (as discovery
                # treats the same pages): no admin said it, so what is held serves on.
                raise DependencyUnavailable("key_vault", f"reading '{name}': HTTP {exc.status_code}, not Key "
                                            "Vault's own answer (no Key Vault error in it)") from exc
            if isinstance(exc, ResourceNotFoundError):
                raise ConfigurationError([f"Key Vault secret '{name}' does not exist in {self.vault_url}: "
                                          "create it, or fix the setting that names it (OIDC_CLIENT_SECRET_NAME, "
                                          "SESSION_SIGNING_KEY_NAME or SCIM_TOKEN_NAME)."]) from exc
            if exc.status_code == 403:
                raise ConfigurationError([f"Key Vault secret '{name}': the app may not read it (HTTP 403), or it is "
                                          "disabled. Grant the app's managed identity the 'Key Vault Secrets "
                                          "User' role, and check the secret is enabled."]) from exc
            raise DependencyUnavailable("key_vault", f"reading '{name}': HTTP {exc.status_code}") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise DependencyUnavailable("key_vault", f"reading '{name}': {type(exc).__name__}") from exc
        except (ValueError, AttributeError, RecursionError) as exc:
            # The SDK could not make a secret of a 200 (json.JSONDecodeError, DeserializationError, a
            # JSON that is no object): a gateway's page or a cut-off answer, not the vault's own word.
            # Logged with its traceback: a bug of ours in that call would look the same.
            log.warning("vault.unreadable secret=%s %s", name, type(exc).__name__, exc_info=True)
            raise _no_secret(name, exc) from exc
        if secret.id is None:  # Key Vault's every secret has its id: this 200 ({}, null members) is not one
            raise _no_secret(name)
        if not secret.value:
            raise ConfigurationError([f"Key Vault secret '{name}' is empty."])
        return SecretValue(secret.value, secret.properties.expires_on, secret.properties.version, "key vault",
                           secret.properties.content_type)


def _key_vaults_own(exc: HttpResponseError) -> bool:
    """Whether the error answer is Key Vault's: its JSON error body with a code (SecretNotFound,
    Forbidden with ForbiddenByRbac inside, ...), which azure-core parses into `exc.error`."""
    code = getattr(exc.error, "code", None)
    return isinstance(code, str) and bool(code)


def _no_secret(name: str, exc: BaseException | None = None) -> DependencyUnavailable:
    """Key Vault unavailable: it answered something that is no secret. The answer is never quoted
    (a page may echo anything), only what the SDK made of it."""
    why = f" ({type(exc).__name__})" if exc is not None else ""
    return DependencyUnavailable("key_vault", f"reading '{name}': the answer is no secret{why}")


class SettingsReader:
    """Local development: secrets given directly in settings, keyed by the secret's name."""

    def __init__(self, values: Mapping[str, tuple[str, str | None]]):
        self._values = values  # secret name -> (setting name, value)

    def read(self, name: str) -> SecretValue:
        setting, value = self._values.get(name, (name, None))
        if not value:
            raise ConfigurationError([f"{setting}: missing."])
        return SecretValue(value, None, None, setting)


class CachedSecret(Refreshing[SecretValue]):
    """A secret read once and re-read after `ttl_seconds` (refreshing.py's rules: one read at a time,
    the others served meanwhile). When Key Vault cannot be reached at a re-read, the last good value
    keeps serving (`unavailable_since` says so, the health check turns amber) and the vault is tried
    again every min(ttl, STALE_RETRY_SECONDS). A secret that was never read, or a vault that answers
    "no such secret" or "forbidden" (an admin's doing, not an outage), fails."""

    STALE_RETRY_SECONDS = 30.0

    def __init__(self, reader, name: str, ttl_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.name = name
        super().__init__(lambda: reader.read(name), "vault", f"secret={name}", fresh_for=ttl_seconds,
                         retry_seconds=self.STALE_RETRY_SECONDS, clock=clock)
    # refresh() (Refreshing's, keep=False): when the IdP said our secret is wrong (maybe just rotated)
    # the last good value is no fallback, the IdP has just refused it.


T = TypeVar("T")


@dataclass(frozen=True)
class Unusable:
    """A version of a secret that could not be made into its value, while the one built before serves."""
    version: str | None
    error: ConfigurationError
    since: datetime


class DerivedFromSecret(Generic[T]):
    """A value built from a secret (the MSAL app, the session signer), rebuilt only when the secret
    changes: a rotation is picked up, and nothing is rebuilt on reads that find the same secret.
    `also`: something else the value is built from (the MSAL app copies the IdP's endpoints from its
    metadata), rebuilt too when it gives one not equal to the last (a re-read that moved an endpoint).

    `fallback(previous, secret)`: what serves when a new version cannot be built (ConfigurationError:
    an admin's value), made from the last value built, or None. When it gives one, that version is
    remembered (built once, logged once, `unusable` says why for the health check) and the secret is
    re-read within CachedSecret.STALE_RETRY_SECONDS until a version builds. Without `fallback`, with
    nothing built before (a cold start), or when it gives None, the error is raised on every call."""

    def __init__(self, secret: CachedSecret, build: Callable[[SecretValue], T],
                 also: Callable[[], object] | None = None,
                 fallback: Callable[[T, SecretValue], T | None] | None = None):
        self._secret, self._build, self._also, self._fallback = secret, build, also, fallback
        self._built: tuple[tuple, object, T] | None = None
        # The (key, also) that could not be built and what serves meanwhile.
        self._refused: tuple[tuple, object, T] | None = None
        self.unusable: Unusable | None = None
        self._lock = threading.Lock()

    def get(self, *, refresh: bool = False) -> T:
        """The value for the current secret; `refresh` re-reads the secret first."""
        secret = self._secret.refresh() if refresh else self._secret.get()
        key = (secret.version, secret.value)
        also = self._also() if self._also is not None else None
        with self._lock:
            # Kept for the same secret and the same or an equal `also` (a daily re-read that changed nothing:
            # its fields, not its text; a tuple compares by identity, then equality). A rebuild parses the
            # credential again (a PKCS#12 certificate) on the next login.
            built, refused = self._built, self._refused
            if built is not None and built[:2] == (key, also):
                if refused is not None:  # back at the version built (the bad one withdrawn): health green
                    self._usable(secret)
                return built[2]
            if refused is not None and refused[:2] == (key, also):
                # Read again soon: a no-op until a re-read gave the same version again (due at TTL then).
                self._secret.due_within(self._secret.STALE_RETRY_SECONDS)
                return refused[2]
            try:
                value = self._build(secret)
            except ConfigurationError as exc:  # an admin's value; any other error is a bug, never hidden
                if self._fallback is None:
                    raise
                self._secret.due_within(self._secret.STALE_RETRY_SECONDS)  # an admin's fix, looked for soon
                serving = self._fallback(built[2], secret) if built is not None else None
                if serving is None:
                    self._refused, self.unusable = None, None
                    raise
                self._refused = (key, also, serving)
                self.unusable = Unusable(secret.version, exc, datetime.now(UTC))
                log.error("vault.unusable secret=%s version=%s serving the version built before, next read within "
                          "%ds: %s", self._secret.name, secret.version, self._secret.STALE_RETRY_SECONDS, exc)
                return serving
            self._built = (key, also, value)
            self._usable(secret)
            return value

    def _usable(self, secret: SecretValue) -> None:
        if self.unusable is not None:
            log.info("vault.usable secret=%s version=%s", self._secret.name, secret.version)
        self._refused, self.unusable = None, None
