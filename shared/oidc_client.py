"""The authorization-code flow, through MSAL: start it, and redeem the code (with PKCE and nonce).

One ConfidentialClientApplication per worker (each one does a discovery GET when built), rebuilt only
when the client credential changes. MSAL does not validate the ID token: `id_token.py` does."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .aadsts import hint_for
from .errors import ConfigurationError, DependencyUnavailable, InvalidIdToken, RedemptionFailed
from .vault import CachedSecret, DerivedFromSecret, SecretValue

SCOPES = ["email"]  # MSAL adds openid, profile and offline_access itself
INVALID_CLIENT_CODES = {7000215, 7000222, 7000216}


class _NoTokenCache(msal.TokenCache):
    """We need each ID token once, right away. MSAL's default cache would keep every person's tokens
    in the worker's memory forever; this one keeps nothing."""

    def add(self, event, now=None):
        return None


def expected_nonce(flow: dict) -> str:
    """The nonce MSAL put in the authorization request: sha256-hex of the flow's secret nonce."""
    return hashlib.sha256(flow["nonce"].encode("ascii")).hexdigest()


def msal_client_credential(secret: SecretValue, *, certificate: bool):
    """MSAL's client_credential: the secret string, or for a certificate (PEM with its private key,
    as Key Vault returns a PEM certificate's secret) the private_key_jwt material."""
    if not certificate:
        return secret.value
    pem = secret.value.encode()
    try:
        cert = x509.load_pem_x509_certificate(pem)
        key = serialization.load_pem_private_key(pem, password=None)  # finds the key block among the PEM's
    except (ValueError, TypeError) as exc:
        raise ConfigurationError([f"client certificate ({secret.source}): must be PEM holding the certificate "
                                  "and its unencrypted private key."]) from exc
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {"private_key": key_pem, "thumbprint": cert.fingerprint(hashes.SHA1()).hex(),  # noqa: S303 - x5t is SHA-1 by RFC 7515
            "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}



class _GatedHttpClient:
    """MSAL's http_client: the IdP session, with an optional gate run on this thread just before a
    POST goes out (the token request). The login starts the flow's single-use delete, lets MSAL
    prepare the token request meanwhile, and only lets the code go to the IdP once the delete has
    won: a replayed callback never reaches the token endpoint."""

    def __init__(self, session: requests.Session):
        self._session = session
        self._local = threading.local()

    def get(self, *args, **kwargs):
        return self._session.get(*args, **kwargs)

    def post(self, *args, **kwargs):
        gate = getattr(self._local, "gate", None)
        if gate is not None:
            gate()  # raises when the request must not go out
        return self._session.post(*args, **kwargs)

    def close(self):
        return self._session.close()

    @contextlib.contextmanager
    def gated(self, gate: Callable[[], object] | None):
        self._local.gate = gate
        try:
            yield
        finally:
            self._local.gate = None


class OidcClient:
    def __init__(self, *, client_id: str, authority: str, credential: CachedSecret, certificate: bool,
                 session: requests.Session):
        self.client_id = client_id
        self.authority = authority
        self._certificate = certificate
        self._http = _GatedHttpClient(session)
        self._app = DerivedFromSecret(credential, self._build)

    def _application(self, *, refresh_credential: bool = False) -> msal.ConfidentialClientApplication:
        return self._app.get(refresh=refresh_credential)

    def _build(self, secret: SecretValue) -> msal.ConfidentialClientApplication:
        host = (urlsplit(self.authority).hostname or "").lower()
        # Entra's own hosts use MSAL's Entra authority; any other IdP is an OIDC authority (this also
        # keeps MSAL from asking login.microsoftonline.com about a host it does not know).
        where = ({"authority": self.authority} if host in msal.authority.WELL_KNOWN_AUTHORITY_HOSTS
                 else {"oidc_authority": self.authority})
        try:
            return msal.ConfidentialClientApplication(
                self.client_id, client_credential=msal_client_credential(secret, certificate=self._certificate),
                http_client=self._http, token_cache=_NoTokenCache(),
                exclude_scopes=["offline_access"], **where)
        except requests.RequestException as exc:
            raise DependencyUnavailable("idp", f"MSAL discovery: {type(exc).__name__}") from exc
        except ValueError as exc:
            raise DependencyUnavailable("idp", f"MSAL could not use the authority: {exc}") from exc

    def start(self, redirect_uri: str, prompt: str | None = None) -> dict:
        """MSAL's auth code flow (state, nonce, PKCE S256) asking for form_post; holds `auth_uri`.
        `prompt` (select_account or login, checked by the caller) goes to the IdP as given."""
        return self._application().initiate_auth_code_flow(SCOPES, redirect_uri=redirect_uri,
                                                           response_mode="form_post", prompt=prompt)

    def redeem(self, flow: dict, code: str, state: str, *, before_token_request: Callable[[], object] | None = None
               ) -> dict:
        """Redeems the code; returns MSAL's result holding `id_token`. `before_token_request` runs
        just before the token request goes out, and whatever it raises ends the redemption there.
        Raises RedemptionFailed (401)
        with the AADSTS fix when the IdP refuses, InvalidIdToken('nonce') when MSAL's nonce check
        fails, DependencyUnavailable when the token endpoint cannot be reached. When the IdP says our
        client secret is wrong or expired, the secret is re-read once (it may have been rotated) and
        the redemption retried once: the code is still unused, since client authentication failed."""
        with self._http.gated(before_token_request):
            result = self._redeem_once(self._application(), flow, code, state)
            if _invalid_client(result):
                result = self._redeem_once(self._application(refresh_credential=True), flow, code, state)
        if "error" in result:
            raise RedemptionFailed(f"token endpoint: {result.get('error')} {result.get('error_codes') or ''}",
                                   hint=hint_for(result.get("error_codes"), result.get("error_description")))
        if not result.get("id_token"):
            raise RedemptionFailed("token endpoint returned no id_token")
        return result

    @staticmethod
    def _redeem_once(app, flow: dict, code: str, state: str) -> dict:
        try:
            return app.acquire_token_by_auth_code_flow(dict(flow), {"code": code, "state": state})
        except RuntimeError as exc:  # MSAL's nonce check; its message holds claims, so it is not logged
            raise InvalidIdToken("nonce", "MSAL: nonce in the ID token does not match this login") from exc
        except requests.RequestException as exc:
            raise DependencyUnavailable("idp", f"token endpoint: {type(exc).__name__}") from exc
        except ValueError as exc:
            raise RedemptionFailed("MSAL refused the authorization response") from exc

    def logout_url(self, end_session_endpoint: str, post_logout_redirect_uri: str) -> str:
        from urllib.parse import urlencode

        separator = "&" if "?" in end_session_endpoint else "?"
        return end_session_endpoint + separator + urlencode(
            {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri})


def _invalid_client(result: dict) -> bool:
    return result.get("error") == "invalid_client" or bool(INVALID_CLIENT_CODES & set(result.get("error_codes") or []))
