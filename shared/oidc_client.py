"""The authorization-code flow, through MSAL: start it, and redeem the code (with PKCE and nonce).

One ConfidentialClientApplication per worker, rebuilt only when the client credential changes; its
discovery GET is answered from the metadata the worker already fetched. MSAL does not validate the
ID token: `id_token.py` does."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from urllib.parse import quote_plus, urlsplit

import msal
import requests
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from .aadsts import hint_for, hinted_code
from .errors import (
    ClientCredentialRejected,
    ConfigurationError,
    DependencyUnavailable,
    InvalidIdToken,
    RedemptionFailed,
    SsoError,
)
from .vault import CachedSecret, DerivedFromSecret, SecretValue

if TYPE_CHECKING:
    from .provider import ProviderMetadata

SCOPES = ["email"]  # MSAL adds openid, profile and offline_access itself
INVALID_CLIENT_CODES = {7000215, 7000222, 7000216, 700016, 700027}
PKCS12 = "application/x-pkcs12"  # Key Vault's content type for a PFX certificate
CLIENT_ERRORS = {"invalid_client", "unauthorized_client"}


class _NoTokenCache(msal.TokenCache):
    """We need each ID token once, right away. MSAL's default cache would keep every person's tokens
    in the worker's memory forever; this one keeps nothing."""

    def add(self, event, now=None):
        return None


def expected_nonce(flow: dict) -> str:
    """The nonce MSAL put in the authorization request: sha256-hex of the flow's secret nonce."""
    return hashlib.sha256(flow["nonce"].encode("ascii")).hexdigest()


def client_certificate(secret: SecretValue):
    """(private key, certificate) of a client certificate's secret, in either form Key Vault hands it out:
    PEM (the key and the certificate), or PKCS#12, base64 and without a password, its default."""
    try:
        if (secret.content_type or "").lower() == PKCS12:
            key, cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(secret.value), None)
            if key is None or cert is None:
                raise ValueError("no key or no certificate in the PKCS#12")
        else:
            pem = secret.value.encode()
            cert = x509.load_pem_x509_certificate(pem)
            key = serialization.load_pem_private_key(pem, password=None)  # finds the key block among the PEM's
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # the last: a curve cryptography lacks (SM2)
        raise ConfigurationError([f"client certificate ({secret.source}): must be a certificate with its "
                                  "unencrypted private key, content type PEM (application/x-pem-file) or PKCS#12 "
                                  "(application/x-pkcs12) without a password."]) from exc
    return key, cert


def msal_client_credential(secret: SecretValue, *, certificate: bool):
    """MSAL's client_credential: the secret string, or for a certificate the private_key_jwt material.
    Key Vault hands a certificate's secret out in the certificate's content type: PEM (the key and the
    certificate), or PKCS#12, base64 and without a password, which is its default."""
    if not certificate:
        return secret.value
    key, cert = client_certificate(secret)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {"private_key": key_pem, "thumbprint": cert.fingerprint(hashes.SHA1()).hex(),  # noqa: S303 - x5t is SHA-1 by RFC 7515
            "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode()}



class _NoHttpCache(MutableMapping):
    """MSAL's http_cache, keeping nothing. MSAL wraps every http_client in its throttling cache
    (msal/throttled_http_client.py), which replays a token-endpoint answer that is a 429, a 5xx or
    carries Retry-After (up to an hour) to every later request of the same key, and a confidential
    client's auth-code redemptions all share one key (the code is not in it). So one IdP hiccup
    failed every login of the worker for as long as the IdP's Retry-After said, and a 200 carrying
    Retry-After handed one person's tokens to the next login. MSAL has no switch to turn it off; its
    public `http_cache` argument takes "any dict-like object", and this one stores nothing: every
    request goes to the IdP. (We need no cache of MSAL's: discovery is answered from our metadata.)"""

    def __getitem__(self, key):
        raise KeyError(key)

    def __setitem__(self, key, value):
        pass

    def __delitem__(self, key):
        pass

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


class _IdpHttpClient:
    """MSAL's http_client: the IdP session, with four things MSAL cannot do itself.
    - Discovery: MSAL GETs the IdP's metadata document when it is built; the one we fetched and
      checked (provider.py) answers it, so a worker asks the IdP once, not twice.
    - Client authentication: MSAL always puts the client secret in the token request's body; an
      IdP that takes only `client_secret_basic` (its `token_endpoint_auth_methods_supported`) gets it
      in an Authorization: Basic header instead, form-encoded first as RFC 6749 2.3.1 says.
    - The IdP unavailable: a token answer that is a 5xx or a 429 is raised as an HTTPError (MSAL
      would raise its own exception for a 5xx, and take a 429's body for a refusal of the code).
      Never retried: a 5xx may come after the IdP saw the single-use code.
    - An ID token MSAL cannot read is refused before MSAL decodes it (_check_msal_can_read)."""

    def __init__(self, session: requests.Session, metadata: Callable[[], ProviderMetadata] | None = None):
        self._session = session
        self._metadata = metadata

    def get(self, url, *args, **kwargs):
        metadata = self._metadata() if self._metadata is not None else None
        if metadata is not None and metadata.document and _without_query(url) == _without_query(
                metadata.discovered_from) and not kwargs.get("params"):
            return _answer(url, metadata.document)
        return self._session.get(url, *args, **kwargs)

    def post(self, url, *args, data=None, headers=None, **kwargs):
        metadata = self._metadata() if self._metadata is not None else None
        if (metadata is not None and metadata.secret_in_basic_auth and url == metadata.token_endpoint
                and isinstance(data, dict) and "client_secret" in data):
            data = dict(data)
            secret = data.pop("client_secret")
            client_id = data.get("client_id", "")
            headers = {**(headers or {}), "Authorization": "Basic " + base64.b64encode(
                f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode("ascii")}
        response = self._session.post(url, *args, data=data, headers=headers, **kwargs)
        if metadata is not None and url == metadata.token_endpoint:
            if response.status_code >= 500 or response.status_code == 429:
                retry_after = response.headers.get("Retry-After")
                raise requests.HTTPError(f"answered HTTP {response.status_code}" + (
                    f" (Retry-After: {retry_after[:20]})" if retry_after else ""), response=response)
            _check_msal_can_read(response)
        return response

    def close(self):
        return self._session.close()


def _check_msal_can_read(response: requests.Response) -> None:
    """MSAL decodes the ID token's payload before we validate anything, and a payload that is not a
    JSON object (or a token with no dots) crashes it. Such a token is refused here, as ours to name."""
    if response.status_code != 200:
        return
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return  # MSAL says the token endpoint's answer is not JSON
    token = body.get("id_token") if isinstance(body, dict) else None
    if token is None:
        return
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode("utf-8"))
    except (AttributeError, IndexError, ValueError, RecursionError, TypeError) as exc:
        raise InvalidIdToken("format", "the token endpoint's ID token is not a JWS with a JSON payload") from exc
    if not isinstance(claims, dict):
        raise InvalidIdToken("format", "the ID token's payload is not a JSON object")


def _without_query(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/")


def _answer(url: str, text: str) -> requests.Response:
    """A 200 answer to `url` holding `text` (JSON), as `requests` would have built it."""
    response = requests.Response()
    response.status_code, response.url, response.encoding = 200, url, "utf-8"
    response.headers["Content-Type"] = "application/json"
    response._content = text.encode("utf-8")
    return response


TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})

CREDENTIAL_CHECK_SECONDS = 600  # an accepted credential is asked about again after this
CREDENTIAL_RECHECK_SECONDS = 60  # a refused or unanswered one, sooner: the admin is fixing it


@dataclass(frozen=True)
class CredentialCheck:
    """The IdP's word on our client credential: `accepted` True, False (it refuses it), or None (no
    answer that says either way); `at` is this worker's monotonic clock."""

    accepted: bool | None
    detail: str
    at: float
    hint: str | None = None
    code: int | None = None  # the AADSTS code `hint` is the fix of (aadsts.hinted_code)
    # The MSAL app (one per credential: DerivedFromSecret) the IdP answered: the verdict is that
    # credential's, and a new one (a rotation, a wrong version stored) is asked about at once.
    asked_with: object = field(default=None, compare=False, repr=False)


class OidcClient:
    def __init__(self, *, client_id: str, authority: str, credential: CachedSecret, certificate: bool,
                 session: requests.Session, metadata: Callable[[], ProviderMetadata] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.client_id = client_id
        self.authority = authority
        self._certificate = certificate
        self._http = _IdpHttpClient(session, metadata)
        self._check_lock = threading.Lock()
        self._last_check: CredentialCheck | None = None
        self._clock = clock
        # Rebuilt on a new secret, and on a re-read of the metadata: MSAL keeps the endpoints it was built with.
        self._app = DerivedFromSecret(credential, self._build, also=metadata)

    def _application(self, *, refresh_credential: bool = False) -> msal.ConfidentialClientApplication:
        return self._app.get(refresh=refresh_credential)

    def _build(self, secret: SecretValue) -> msal.ConfidentialClientApplication:
        host = (urlsplit(self.authority).hostname or "").lower()
        # Entra's own hosts use MSAL's Entra authority, which is the tenant without "/v2.0": MSAL adds
        # "/v2.0/.well-known/openid-configuration" to its path, so the issuer itself (settings keep
        # Entra's to the v2.0 form) would have it look for /<tenant>/v2.0/v2.0/..., which Entra does
        # not serve, instead of the document we fetched. Any other IdP is an OIDC authority (this also
        # keeps MSAL from asking login.microsoftonline.com about a host it does not know).
        where = ({"authority": self.authority.removesuffix("/v2.0")}
                 if host in msal.authority.WELL_KNOWN_AUTHORITY_HOSTS else {"oidc_authority": self.authority})
        try:
            return msal.ConfidentialClientApplication(
                self.client_id, client_credential=msal_client_credential(secret, certificate=self._certificate),
                http_client=self._http, http_cache=_NoHttpCache(), token_cache=_NoTokenCache(),
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

    def redeem(self, flow: dict, code: str, state: str) -> dict:
        """Redeems the code; returns MSAL's result holding `id_token`. Raises RedemptionFailed (401)
        with the AADSTS fix when the IdP refuses, InvalidIdToken('nonce') when MSAL's nonce check
        fails, DependencyUnavailable when the token endpoint cannot be reached. When the IdP says our
        client secret is wrong or expired, the secret is re-read once (it may have been rotated) and
        the redemption retried once: the code is still unused, since client authentication failed."""
        result = self._with_fresh_credential(lambda app: self._redeem_once(app, flow, code, state))
        if result.get("error") in TRANSIENT_ERRORS:
            # RFC 6749's "try later", which Entra also sends in a 400 (AADSTS90033 and the like): the
            # IdP's outage, not a refusal of the person's code.
            raise DependencyUnavailable("idp", f"token endpoint: {result['error']} {result.get('error_codes') or ''}")
        if _invalid_client(result) or "error" in result:
            # Our credential (ClientCredentialRejected), else the code (invalid_grant: expired, used,
            # forged...): the person's, not ours.
            failure = ClientCredentialRejected if _invalid_client(result) else RedemptionFailed
            if failure is ClientCredentialRejected:
                self._last_check = None  # the IdP's word at a login: health asks again, not "accepted"
            raise failure(f"token endpoint: {result.get('error')} {result.get('error_codes') or ''}",
                          hint=hint_for(result.get("error_codes"), result.get("error_description")))
        if not result.get("id_token"):
            raise RedemptionFailed("token endpoint returned no id_token")
        return result

    def _with_fresh_credential(self, call):
        """`call(app)` with the worker's MSAL app; when the IdP refuses our client credential, once more
        with the credential read again (it may have been rotated in Key Vault meanwhile)."""
        result = call(self._application())
        if _invalid_client(result):
            result = call(self._application(refresh_credential=True))
        return result

    @staticmethod
    def _redeem_once(app, flow: dict, code: str, state: str) -> dict:
        try:
            result = app.acquire_token_by_auth_code_flow(dict(flow), {"code": code, "state": state})
        except RuntimeError as exc:  # MSAL's nonce check; its message holds claims, so it is not logged
            raise InvalidIdToken("nonce", "MSAL: nonce in the ID token does not match this login") from exc
        except requests.RequestException as exc:
            raise DependencyUnavailable("idp", f"token endpoint: {_unanswered(exc)}") from exc
        except json.JSONDecodeError as exc:  # MSAL's json.loads of the token answer
            raise RedemptionFailed("the token endpoint's answer is not JSON") from exc
        except ValueError as exc:
            raise RedemptionFailed("MSAL refused the authorization response") from exc
        if not isinstance(result, dict):
            raise RedemptionFailed("token endpoint answered JSON that is not an object")
        return result

    def credential_check(self) -> CredentialCheck:
        """Whether the IdP accepts our client credential, asked with a client-credentials token request
        (a token for this app itself, scope `{client_id}/.default`) so that health and the setup page
        see a wrong or expired secret before a person does. For them only, never on the login path;
        one request at a time, its answer reused for CREDENTIAL_CHECK_SECONDS (a refusal or no answer
        for CREDENTIAL_RECHECK_SECONDS, so a fix shows soon), whatever the number of probes."""
        with self._check_lock:
            now = self._clock()
            last = self._last_check
            if last is not None and now - last.at < (CREDENTIAL_CHECK_SECONDS if last.accepted
                                                     else CREDENTIAL_RECHECK_SECONDS) \
                    and last.asked_with is self._current_application():
                return last
            self._last_check = self._ask_idp(now)
            return self._last_check

    def _current_application(self) -> msal.ConfidentialClientApplication | None:
        try:
            return self._application()
        except Exception:  # the check itself says why (_ask_idp)
            return None

    def _ask_idp(self, now: float) -> CredentialCheck:
        scopes = [f"{self.client_id}/.default"]
        used: list[msal.ConfidentialClientApplication] = []

        def ask(app):
            used.append(app)
            return app.acquire_token_for_client(scopes)

        try:
            verdict = self._verdict(self._with_fresh_credential(ask), now)
        except requests.RequestException as exc:
            verdict = CredentialCheck(None, f"the token endpoint {_unanswered(exc)}", now)
        except SsoError as exc:  # the secret or the IdP's metadata could not be had: said by their own checks
            verdict = CredentialCheck(None, f"not asked: {exc.detail[:200]}", now)
        except ValueError:  # MSAL: the token endpoint's answer is not JSON
            verdict = CredentialCheck(None, "the token endpoint's answer is not JSON", now)
        return replace(verdict, asked_with=used[-1] if used else None)

    @staticmethod
    def _verdict(result: object, now: float) -> CredentialCheck:
        if not isinstance(result, dict):
            return CredentialCheck(None, "the token endpoint answered JSON that is not an object", now)
        if result.get("access_token"):
            return CredentialCheck(True, "the IdP issued a client-credentials token", now)
        error = f"{str(result.get('error'))[:60]} {result.get('error_codes') or ''}".strip()
        said = (result.get("error_codes"), result.get("error_description"))
        hint, code = hint_for(*said), hinted_code(*said)
        if _invalid_client(result) and not _grant_not_allowed(result):
            return CredentialCheck(False, f"the IdP refuses it: {error}", now, hint, code)
        return CredentialCheck(None, f"the IdP answered {error}, which does not say", now, hint, code)

    def logout_url(self, end_session_endpoint: str, post_logout_redirect_uri: str) -> str:
        from urllib.parse import urlencode

        separator = "&" if "?" in end_session_endpoint else "?"
        return end_session_endpoint + separator + urlencode(
            {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri})


def _unanswered(exc: requests.RequestException) -> str:
    """Why the token endpoint gave no answer of the IdP's: what it answered (a 5xx, a 429), or the
    failure's type (ReadTimeout, ConnectionError). Never the body: it may hold anything."""
    return str(exc) if isinstance(exc, requests.HTTPError) else f"could not be reached ({type(exc).__name__})"


def _grant_not_allowed(result: dict) -> bool:
    """RFC 6749 5.2's unauthorized_client, "the authenticated client is not authorized to use this grant
    type", without an Entra code that it is our credential: what an IdP answers the credential check's
    client-credentials request when the app may use the code grant alone (least privilege)."""
    return result.get("error") == "unauthorized_client" and not _invalid_client_code(result)


def _invalid_client(result: dict) -> bool:
    """The IdP refused our client credential, not the code (RFC 6749 5.2)."""
    error = result.get("error")
    return (isinstance(error, str) and error in CLIENT_ERRORS) or _invalid_client_code(result)


def _invalid_client_code(result: dict) -> bool:
    """Whether Entra's error_codes hold one that says our credential is wrong (INVALID_CLIENT_CODES)."""
    codes = result.get("error_codes")
    return bool(isinstance(codes, list) and INVALID_CLIENT_CODES & {c for c in codes if isinstance(c, int)})
