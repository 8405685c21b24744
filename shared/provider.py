"""The IdP's OpenID Connect metadata (discovery), fetched from the URL the settings name."""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from .errors import ConfigurationError, DependencyUnavailable, IdpMetadataInvalid

# Algorithms an ID token may be signed with. Never "none" nor HS* (a symmetric key would be our
# client secret, which the IdP and we share: a token "signed" with it proves nothing about the IdP).
ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str  # may hold Entra's "{tenantid}" template (multi-tenant issuers)
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    id_token_algs: frozenset[str]
    iss_parameter_supported: bool
    discovered_from: str
    # OpenID Discovery's default when the document is silent: client_secret_basic.
    token_auth_methods: frozenset[str] = frozenset({"client_secret_basic"})
    document: str = field(default="", repr=False, compare=False)  # the JSON as fetched (MSAL reads it too)

    @property
    def secret_in_basic_auth(self) -> bool:
        """RFC 6749 2.3.1: the client secret goes in an Authorization: Basic header when the IdP does
        not take it in the body (MSAL always puts it in the body)."""
        return "client_secret_post" not in self.token_auth_methods and "client_secret_basic" in self.token_auth_methods

    def expected_issuer(self, tid: str | None) -> str:
        """OIDC Core 3.1.3.7 step 2: the `iss` an ID token must carry; Entra's multi-tenant metadata
        names the issuer with a `{tenantid}` placeholder that the token's own `tid` fills."""
        if "{tenantid}" in self.issuer:
            return self.issuer.replace("{tenantid}", tid or "{missing tid}")
        return self.issuer


def discover(metadata_url: str, issuer_base: str, session: requests.Session, *, multi_tenant: bool,
             held: bool = False) -> ProviderMetadata:
    """Fetches and checks the metadata document. Raises DependencyUnavailable when the IdP cannot be
    reached (503, retried on the next request), ConfigurationError when the URL answers with no metadata
    (our setting is wrong), IdpMetadataInvalid when the IdP's metadata is unusable or unsafe (the IdP's
    fault: the page names it, not our settings); each says which URL was tried and what came back.
    `held`: a document from this URL is held (the daily refresh). The URL then worked, so an answer that
    is no usable document (a gateway's page, a 404, cut-off JSON, a member missing) is the IdP not
    itself: DependencyUnavailable, and the document held serves on (refreshing.py), not a setting to fix."""
    try:
        response = session.get(metadata_url)  # the IdP session applies its timeouts
    except requests.RequestException as exc:
        raise DependencyUnavailable("idp", f"GET {metadata_url} failed: {type(exc).__name__}") from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise DependencyUnavailable("idp", f"GET {metadata_url} answered HTTP {response.status_code}")
    try:
        return _checked(response, metadata_url, issuer_base, multi_tenant=multi_tenant)
    except ConfigurationError as err:  # IdpMetadataInvalid too
        if not held:
            raise
        why = f": {err}" if isinstance(err, IdpMetadataInvalid) else ""  # the IdP's fault, named (not a setting)
        raise DependencyUnavailable("idp", f"GET {metadata_url} answered HTTP {response.status_code}, no usable "
                                    f"metadata document{why}") from err


def _checked(response: requests.Response, metadata_url: str, issuer_base: str, *,
             multi_tenant: bool) -> ProviderMetadata:
    """The metadata document of an answer that is no outage; raises ConfigurationError or IdpMetadataInvalid."""
    what = f"OIDC_ISSUER_URL: tried {metadata_url}"
    if response.status_code != 200:
        raise ConfigurationError([f"{what} and it answered HTTP {response.status_code}. Check the URL: paste "
                                  "the app registration's 'OpenID Connect metadata document' URL."])
    try:
        doc = response.json()
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise ConfigurationError([f"{what} and it answered HTTP 200 but not a JSON metadata document."])
    fault = f"The identity provider at {metadata_url}"
    missing = [k for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
               if not isinstance(doc.get(k), str) or not doc[k]]
    if missing:
        raise IdpMetadataInvalid([f"{fault} answered a metadata document without {', '.join(missing)} "
                                  "(or not as text)."])
    issuer = doc["issuer"]
    # OpenID Discovery 4.3: the issuer must be the one we asked. Entra's multi-tenant documents are the
    # documented exception: their issuer is a template for the tenant-specific issuers.
    same = issuer.rstrip("/") == issuer_base.rstrip("/")
    if not same and not (multi_tenant and "{tenantid}" in issuer):
        raise IdpMetadataInvalid([f"{fault} says its issuer is {issuer[:200]!r}, not {issuer_base!r} (OpenID "
                                  "Discovery 4.3): tokens it signs would not be from the issuer asked. Use the "
                                  "metadata document of the issuer that signs your tokens."])
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
        if key in doc and doc[key] is not None and (not isinstance(doc[key], str) or
                                                    not doc[key].startswith("https://")):
            raise IdpMetadataInvalid([f"{fault} gives a {key} that is not an https:// URL."])
    advertised = _strings(doc.get("id_token_signing_alg_values_supported")) or ["RS256"]
    algs = frozenset(a for a in advertised if a in ASYMMETRIC_ALGS)
    if not algs:
        raise IdpMetadataInvalid([f"{fault} signs ID tokens only with {', '.join(advertised)[:200]}: none of "
                                  "them is an asymmetric algorithm, so its tokens could be forged by anyone "
                                  "holding the key (HS256) or by anyone at all (none). The identity provider "
                                  "must sign ID tokens with RS256 or ES256."])
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        jwks_uri=doc["jwks_uri"],
        end_session_endpoint=doc.get("end_session_endpoint") or None,
        id_token_algs=algs,
        iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
        discovered_from=metadata_url,
        token_auth_methods=frozenset(_strings(doc.get("token_endpoint_auth_methods_supported"))
                                     or ["client_secret_basic"]),
        document=response.text,
    )


def _strings(value: object) -> list[str]:
    """A metadata member that should be a list of strings: the strings in it, else nothing."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
