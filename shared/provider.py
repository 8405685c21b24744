"""The IdP's OpenID Connect metadata (discovery), fetched from the URL the settings name."""

from __future__ import annotations

from dataclasses import dataclass

import requests

from .errors import ConfigurationError, DependencyUnavailable

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

    def expected_issuer(self, tid: str | None) -> str:
        """OIDC Core 3.1.3.7 step 2: the `iss` an ID token must carry; Entra's multi-tenant metadata
        names the issuer with a `{tenantid}` placeholder that the token's own `tid` fills."""
        if "{tenantid}" in self.issuer:
            return self.issuer.replace("{tenantid}", tid or "{missing tid}")
        return self.issuer


def discover(metadata_url: str, issuer_base: str, session: requests.Session, *, multi_tenant: bool) -> ProviderMetadata:
    """Fetches and checks the metadata document. Raises DependencyUnavailable when the IdP cannot be
    reached (503, retried on the next request), ConfigurationError when it answers with something that
    is not this issuer's metadata; both say which URL was tried and what came back."""
    try:
        response = session.get(metadata_url)  # the IdP session applies its timeouts
    except requests.RequestException as exc:
        raise DependencyUnavailable("idp", f"GET {metadata_url} failed: {type(exc).__name__}") from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise DependencyUnavailable("idp", f"GET {metadata_url} answered HTTP {response.status_code}")
    what = f"OIDC_ISSUER_URL: tried {metadata_url}"
    if response.status_code != 200:
        raise ConfigurationError([f"{what} and it answered HTTP {response.status_code}. Check the URL: paste "
                                  "the app registration's 'OpenID Connect metadata document' URL."])
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ConfigurationError([f"{what} and it answered HTTP 200 but not a JSON metadata document."])
    missing = [k for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri") if not doc.get(k)]
    if missing:
        raise ConfigurationError([f"{what}; the document lacks {', '.join(missing)}."])
    issuer = str(doc["issuer"])
    # OpenID Discovery 4.3: the issuer must be the one we asked. Entra's multi-tenant documents are the
    # documented exception: their issuer is a template for the tenant-specific issuers.
    same = issuer.rstrip("/") == issuer_base.rstrip("/")
    if not same and not (multi_tenant and "{tenantid}" in issuer):
        raise ConfigurationError([f"{what}; its issuer is {issuer}, not {issuer_base}. Use the metadata "
                                  "document of the issuer that signs your tokens."])
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
        if doc.get(key) and not str(doc[key]).startswith("https://"):
            raise ConfigurationError([f"{what}; its {key} is not https://."])
    advertised = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
    algs = frozenset(a for a in advertised if a in ASYMMETRIC_ALGS)
    if not algs:
        raise ConfigurationError([f"{what}; it signs ID tokens only with {advertised}, none of which is an "
                                  "asymmetric algorithm we accept."])
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        jwks_uri=doc["jwks_uri"],
        end_session_endpoint=doc.get("end_session_endpoint") or None,
        id_token_algs=algs,
        iss_parameter_supported=bool(doc.get("authorization_response_iss_parameter_supported")),
        discovered_from=metadata_url,
    )
