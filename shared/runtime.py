"""The per-worker wiring: settings and long-lived clients, each built on first use and then shared
(Azure Functions "manage connections"). Nothing here runs at import time."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from functools import cached_property

import requests

from .accounts import AccountStore
from .audit import SignInEvents
from .background import BACKGROUND
from .config import Settings, load_settings
from .errors import DependencyUnavailable
from .flows import FlowStore
from .jwks import MAX_STALE_SECONDS, STALE_RETRY_SECONDS, JwksCache
from .oidc_client import OidcClient
from .provider import ProviderMetadata, discover
from .refreshing import Refreshing
from .session_token import SessionSigner, load_signing_keys, readable_kids
from .tables import ACCOUNTS_TABLE, EVENTS_TABLE, FLOWS_TABLE, Tables
from .transport import IdpSession, credential_options
from .vault import CachedSecret, DerivedFromSecret, KeyVaultReader, SettingsReader, Unusable

log = logging.getLogger("portal_sso")
METADATA_MAX_AGE = 24 * 3600


class Runtime:
    """`credential_factory` makes the Azure credential (DefaultAzureCredential unless a test hands
    in another)."""

    def __init__(self, env: Mapping[str, str] | None = None, *, credential_factory: Callable[[], object] | None = None):
        self._env = env if env is not None else os.environ
        self._credential_factory = credential_factory or _default_credential
        # Guards building settings and clients (no I/O); the IdP caches have their own single-flight
        # (refreshing.py), so a request that never needs the IdP never waits on it.
        self._lock = threading.RLock()
        self._settings: Settings | None = None
        self._credential = None
        self._metadata = Refreshing(self._discover, "idp", "metadata", fresh_for=METADATA_MAX_AGE,
                                    retry_seconds=STALE_RETRY_SECONDS, max_stale_seconds=MAX_STALE_SECONDS)
        self._jwks = JwksCache(self._fetch_jwks)
        self._oidc: OidcClient | None = None
        self._warming = False

    @property
    def env(self) -> Mapping[str, str]:
        """The raw settings (the setup page shows the non-secret ones even when they do not load)."""
        return self._env

    @property
    def settings(self) -> Settings:
        """Loaded once; a ConfigurationError is not kept, so a fixed setting works on the next request."""
        if self._settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = load_settings(self._env)
        return self._settings

    def credential(self):
        with self._lock:
            if self._credential is None:
                self._credential = self._credential_factory()
            return self._credential

    @cached_property
    def session(self) -> IdpSession:
        """The session of every IdP call: timeouts on each, CA bundle and proxies read once."""
        return IdpSession(self.settings.idp_timeout_seconds)

    @cached_property
    def tables(self) -> Tables:
        s = self.settings
        return Tables.from_settings(s.tables_connection_string, s.tables_endpoint, self.credential)

    @property
    def flows(self) -> FlowStore:
        return self._store("_flows", FlowStore, FLOWS_TABLE)

    @property
    def accounts(self) -> AccountStore:
        return self._store("_accounts", AccountStore, ACCOUNTS_TABLE)

    @property
    def events(self) -> SignInEvents:
        return self._store("_events", SignInEvents, EVENTS_TABLE)

    def _store(self, key: str, store: Callable, table: str):
        """Built once, with no lock held. Not a cached_property: Python 3.11's holds a lock per property
        while it computes, and this waits on the tables being made sure of (a network call): concurrent
        cold requests queued, and each started a new attempt after the one before failed (503s at 6, 12,
        18, 24 s). The tables share one attempt among their first uses (tables.py); two built at once
        here keep the first."""
        found = self.__dict__.get(key)
        if found is None:
            found = self.__dict__.setdefault(key, store(self.tables.client(table)))
        return found

    @cached_property
    def secrets(self):
        s = self.settings
        if s.key_vault_url:
            return KeyVaultReader.from_url(s.key_vault_url, self.credential())
        return SettingsReader({
            s.client_secret_name: ("OIDC_CLIENT_SECRET", s.client_secret),
            s.signing_key_name: ("SESSION_SIGNING_KEY", s.signing_key),
            "client-certificate": ("OIDC_CLIENT_CERTIFICATE", s.client_certificate),
        })

    @cached_property
    def cached_client_credential(self) -> CachedSecret:
        s = self.settings
        if s.uses_certificate:
            name = s.client_certificate_name or "client-certificate"
        else:
            name = s.client_secret_name
        return CachedSecret(self.secrets, name, s.secret_cache_seconds)

    @cached_property
    def signing_key_secret(self) -> CachedSecret:
        return CachedSecret(self.secrets, self.settings.signing_key_name, self.settings.secret_cache_seconds)

    @cached_property
    def _signer(self) -> DerivedFromSecret[SessionSigner]:
        def build(secret) -> SessionSigner:
            where = "SESSION_SIGNING_KEY" if secret.source != "key vault" else \
                f"Key Vault secret '{self.settings.signing_key_name}'"
            return SessionSigner(load_signing_keys(secret.value, where))

        def fallback(signer: SessionSigner, secret) -> SessionSigner | None:
            # A new version the app cannot use (a rotation's new key pasted encrypted, cut short) leaves
            # the signer built before serving, sign-in and the JWKS with it, while health is red: it is
            # what the vault held a moment ago and no admin revoked it. Less any key the new version no
            # longer holds readably: an admin who took a key out (a compromised one, replaced by a key
            # pasted wrong) must not have it sign or be published on. So when the key it signs with is
            # not readable in the new version it is the outage (the login's 500, as on a cold start):
            # a key taken out cannot be told apart from one mangled in place, and signing on with a
            # compromised key is worse than not signing.
            readable = readable_kids(secret.value)
            if signer.current.kid not in readable:
                return None
            kept = [key for key in signer.keys if key.kid in readable]
            return signer if len(kept) == len(signer.keys) else SessionSigner(kept)

        return DerivedFromSecret(self.signing_key_secret, build, fallback=fallback)

    def signer(self) -> SessionSigner:
        """The session signer, rebuilt when the signing-key secret changes (rotation); a new version
        it cannot use leaves the one built before serving (`signer_unusable`)."""
        return self._signer.get()

    def signer_unusable(self) -> Unusable | None:
        """The signing key's version that could not be used while the signer built before serves."""
        return self._signer.unusable

    def metadata(self) -> ProviderMetadata:
        """The IdP's metadata, discovered on first use and refreshed daily. A failed first discovery is
        not kept, so the next request tries again; a failed daily refresh keeps what we hold, as the
        IdP's keys do (refreshing.py)."""
        return self._metadata.get()

    def metadata_held(self) -> ProviderMetadata | None:
        """The IdP's metadata as held, without reading or waiting (None: not discovered yet)."""
        return self._metadata.peek()

    def _discover(self) -> ProviderMetadata:
        s = self.settings
        # Held: this URL gave a good document, so a refresh that gets none is an outage (provider.py).
        return discover(s.metadata_url, s.issuer_base, self.session, multi_tenant=s.multi_tenant,
                        held=self._metadata.peek() is not None)

    def idp_held(self) -> dict[str, Refreshing]:
        """The IdP's metadata and signing keys as held, by what the health check calls them: whether a
        refresh of either is failing while what is held serves on."""
        return {"metadata": self._metadata, "signing keys": self._jwks.held}

    def idp_keys(self) -> JwksCache:
        """The IdP's ID-token signing keys (its JWKS), cached."""
        return self._jwks

    def _fetch_jwks(self) -> dict:
        uri = self.metadata().jwks_uri
        try:
            response = self.session.get(uri)
            response.raise_for_status()
            return response.json()
        except (requests.RequestException, ValueError, RecursionError) as exc:  # RecursionError: deep JSON
            raise DependencyUnavailable("idp", f"GET {uri}: {type(exc).__name__}") from exc

    def warm_up(self) -> None:
        """Once per worker, in the background: fetches the IdP's keys and loads the signing key, which
        the first callback would otherwise wait for (the person is at the IdP meanwhile). A failure
        costs nothing: the callback fetches or loads again."""
        with self._lock:
            if self._warming:
                return
            self._warming = True
        BACKGROUND.submit(self._warm)

    def _warm(self) -> None:
        for step in (lambda: self.idp_keys().warm(), self.signer):
            try:
                step()
            except Exception as exc:  # the callback will meet it again, and report it
                log.info("runtime.warm_up skipped a step: %s", type(exc).__name__)

    @property
    def oidc(self) -> OidcClient:
        """Built once. Not a cached_property: Python 3.11's holds a lock while it computes, and this
        waits on the IdP (concurrent cold requests would each wait for it in turn)."""
        if self._oidc is None:
            self.metadata()  # fail with our clear discovery message before MSAL tries with its own
            s, credential, session = self.settings, self.cached_client_credential, self.session
            with self._lock:  # only the build: the properties above take locks of their own
                if self._oidc is None:
                    self._oidc = OidcClient(client_id=s.client_id, authority=s.issuer_base, credential=credential,
                                            certificate=s.uses_certificate, session=session, metadata=self.metadata)
        return self._oidc


def _default_credential():
    from azure.identity import DefaultAzureCredential

    # Interactive and shared-cache sources make no sense in a function app; the managed identity (or
    # a developer's az login) is what signs us in to Key Vault and Table Storage. Few, quick retries
    # within a budget that a Retry-After cannot stretch (transport.credential_options): a browser is
    # waiting, and a 503 with Retry-After serves it better than a long stall. The token is cached once
    # obtained, so this matters only when the identity endpoint is failing.
    return DefaultAzureCredential(exclude_interactive_browser_credential=True,
                                  exclude_shared_token_cache_credential=True, **credential_options())


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime


def reset_runtime(runtime: Runtime | None = None) -> None:
    """Tests hand in their own runtime (or drop the cached one after changing the environment)."""
    global _runtime
    with _runtime_lock:
        _runtime = runtime

