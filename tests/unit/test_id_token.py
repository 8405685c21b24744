"""ID-token validation (shared/id_token.py) against tokens minted here with real keys. Each check is
named after its step in OpenID Connect Core 1.0, section 3.1.3.7."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, replace

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.errors import DependencyUnavailable, InvalidIdToken
from shared.id_token import LEEWAY_SECONDS, MAX_TOKEN_AGE_SECONDS, verify_id_token
from shared.jwks import JwksCache
from shared.provider import ProviderMetadata
from tests.support.hostile_idp import reencoded

TENANT = "3f0c9a52-6d1e-4b7a-9c2f-8e5d41a7b0c6"
OTHER_TENANT = "11111111-2222-4333-8444-555555555555"
ISSUER = f"https://idp.test/{TENANT}/v2.0"
CLIENT_ID = "6b1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e"
NONCE = "expected-nonce-value"
NOW = 1_700_000_000
KID = "key-1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rsa_jwk(private_key, kid: str | None, **extra) -> dict:
    jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(extra)
    return jwk


def metadata_for(issuer: str = ISSUER, algs: frozenset[str] = frozenset({"RS256"})) -> ProviderMetadata:
    return ProviderMetadata(issuer=issuer, authorization_endpoint="https://idp.test/authorize",
                            token_endpoint="https://idp.test/token", jwks_uri="https://idp.test/jwks",
                            end_session_endpoint=None, id_token_algs=algs, iss_parameter_supported=False,
                            discovered_from=f"{issuer}/.well-known/openid-configuration")


@dataclass
class Idp:
    key: rsa.RSAPrivateKey
    jwks: dict
    metadata: ProviderMetadata

    def cache(self) -> JwksCache:
        return JwksCache(fetch=lambda: self.jwks)

    def claims(self, **overrides) -> dict:
        claims = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "person-sub", "iat": NOW, "exp": NOW + 3600,
                  "nonce": NONCE, "tid": TENANT}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not DROP}

    def mint(self, key=None, *, alg: str = "RS256", kid: str | None = KID, **overrides) -> str:
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(self.claims(**overrides), key or self.key, algorithm=alg, headers=headers)

    def verify(self, token: str, *, metadata: ProviderMetadata | None = None, jwks: JwksCache | None = None,
               nonce: str | None = NONCE, now: float = NOW, **checks) -> dict:
        return verify_id_token(token, metadata=metadata or self.metadata, jwks=jwks or self.cache(),
                               client_id=CLIENT_ID, expected_nonce=nonce, now=now, **checks)


DROP = object()  # a claim override that removes the claim


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def idp(rsa_key) -> Idp:
    return Idp(key=rsa_key, jwks={"keys": [rsa_jwk(rsa_key, KID, use="sig")]}, metadata=metadata_for())


def refused(idp: Idp, token: str, check: str, **verify_kwargs) -> InvalidIdToken:
    with pytest.raises(InvalidIdToken) as caught:
        idp.verify(token, **verify_kwargs)
    err = caught.value
    assert err.check == check, f"expected the '{check}' check to refuse the token, got '{err.check}' ({err.detail})"
    assert err.reason == f"id_token_{check}", "the audit reason names the failed check"
    assert err.status == 401, "an ID token that fails validation is a 401"
    return err


def hand_built(header: dict, claims: dict, signature: bytes = b"") -> str:
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(signature)


# Happy path

def test_valid_id_token_passes_and_returns_its_claims(idp):
    claims = idp.verify(idp.mint())
    assert claims["sub"] == "person-sub", "the verified claims are returned"
    assert claims["iss"] == ISSUER and claims["aud"] == CLIENT_ID and claims["nonce"] == NONCE


def test_es256_id_token_passes_when_the_idp_advertises_es256():
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "ec-1"}
    idp = Idp(key=key, jwks={"keys": [jwk]}, metadata=metadata_for(algs=frozenset({"ES256"})))
    claims = idp.verify(idp.mint(alg="ES256", kid="ec-1"))
    assert claims["sub"] == "person-sub", "an ES256-signed token from an ES256 IdP verifies"


# Step 6: signature

def test_id_token_signed_by_another_key_with_the_same_kid_fails_the_signature_check(idp, other_rsa_key):
    refused(idp, idp.mint(other_rsa_key), "signature")


def test_id_token_with_a_tampered_payload_fails_the_signature_check(idp):
    header, _, signature = idp.mint().split(".")
    forged = b64url(json.dumps(idp.claims(sub="someone-else")).encode())
    refused(idp, f"{header}.{forged}.{signature}", "signature")


def test_id_token_that_is_not_a_jws_is_refused(idp):
    refused(idp, "not-a-jwt", "format")


# Steps 6/7: alg allowlist

def test_id_token_with_alg_none_is_refused(idp):
    token = hand_built({"alg": "none", "kid": KID, "typ": "JWT"}, idp.claims())
    refused(idp, token, "alg")


def test_id_token_with_alg_none_is_refused_even_if_metadata_lists_none(idp):
    metadata = metadata_for(algs=frozenset({"RS256", "none"}))
    token = hand_built({"alg": "none", "kid": KID}, idp.claims())
    refused(idp, token, "alg", metadata=metadata)


def test_id_token_hs256_signed_with_the_public_key_pem_is_refused(idp):
    # The classic algorithm-confusion forgery: HMAC keyed with the IdP's public key, which anyone has.
    public_pem = idp.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": KID, "typ": "JWT"}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(idp.claims()).encode())
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    refused(idp, signing_input + "." + b64url(signature), "alg")


def test_id_token_hs256_is_refused_even_if_metadata_lists_hs256(idp):
    metadata = metadata_for(algs=frozenset({"RS256", "HS256"}))
    token = jwt.encode(idp.claims(), CLIENT_ID * 2, algorithm="HS256", headers={"kid": KID})
    refused(idp, token, "alg", metadata=metadata)


def test_id_token_rs256_is_refused_when_the_idp_advertises_only_es256(idp):
    refused(idp, idp.mint(), "alg", metadata=metadata_for(algs=frozenset({"ES256"})))


def test_id_token_with_a_critical_header_extension_is_refused(idp):
    # PyJWT itself already refuses unknown critical extensions while reading the header ('format');
    # our own 'alg' check is the second line. Either way the token must not pass.
    token = jwt.encode(idp.claims(), idp.key, algorithm="RS256", headers={"kid": KID, "crit": ["exp"], "exp": 1})
    with pytest.raises(InvalidIdToken) as caught:
        idp.verify(token)
    assert caught.value.check in ("format", "alg"), "a token with critical header extensions we do not know is refused"
    assert caught.value.status == 401


# Step 2: iss

def test_id_token_from_another_issuer_fails_the_iss_check(idp):
    refused(idp, idp.mint(iss="https://evil.test/v2.0"), "iss")


def test_id_token_iss_with_a_trailing_slash_fails_the_iss_check(idp):
    refused(idp, idp.mint(iss=ISSUER + "/"), "iss")


def test_id_token_without_iss_fails_the_iss_check(idp):
    refused(idp, idp.mint(iss=DROP), "iss")


ENTRA_TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"


def test_entra_multi_tenant_issuer_is_filled_from_the_token_tid(idp):
    metadata = metadata_for(issuer=ENTRA_TEMPLATE)
    token = idp.mint(iss=f"https://login.microsoftonline.com/{TENANT}/v2.0", tid=TENANT)
    claims = idp.verify(token, metadata=metadata)
    assert claims["tid"] == TENANT, "step 2: {tenantid} in the metadata issuer is filled from the token's tid"


def test_entra_multi_tenant_issuer_with_a_tid_not_matching_iss_fails_the_iss_check(idp):
    metadata = metadata_for(issuer=ENTRA_TEMPLATE)
    token = idp.mint(iss=f"https://login.microsoftonline.com/{TENANT}/v2.0", tid=OTHER_TENANT)
    refused(idp, token, "iss", metadata=metadata)


def test_entra_multi_tenant_issuer_without_tid_fails_the_iss_check(idp):
    metadata = metadata_for(issuer=ENTRA_TEMPLATE)
    token = idp.mint(iss=f"https://login.microsoftonline.com/{TENANT}/v2.0", tid=DROP)
    refused(idp, token, "iss", metadata=metadata)


def test_entra_multi_tenant_template_issuer_itself_is_not_accepted_as_iss(idp):
    metadata = metadata_for(issuer=ENTRA_TEMPLATE)
    refused(idp, idp.mint(iss=ENTRA_TEMPLATE, tid=DROP), "iss", metadata=metadata)


# Steps 3-5: aud, azp

def test_id_token_for_another_client_fails_the_aud_check(idp):
    refused(idp, idp.mint(aud="some-other-client"), "aud")


def test_id_token_without_aud_fails_the_aud_check(idp):
    refused(idp, idp.mint(aud=DROP), "aud")


def test_id_token_with_an_audience_besides_us_is_refused_whatever_its_azp(idp):
    """Step 3: "MUST be rejected if ... it contains additional audiences not trusted by the Client". We trust
    none but our own client id (Entra's ID tokens carry exactly one), so azp naming us does not help."""
    for azp in (CLIENT_ID, DROP):
        refused(idp, idp.mint(aud=[CLIENT_ID, "other-client"], azp=azp), "aud")


def test_id_token_aud_list_of_us_alone_passes(idp):
    assert idp.verify(idp.mint(aud=[CLIENT_ID]))["aud"] == [CLIENT_ID]
    assert idp.verify(idp.mint(aud=[CLIENT_ID, CLIENT_ID], azp=CLIENT_ID))["sub"] == "person-sub"


def test_id_token_with_an_azp_of_another_client_fails_the_azp_check(idp):
    refused(idp, idp.mint(azp="other-client"), "azp")


# Step 9: exp

def test_id_token_expired_beyond_the_leeway_fails_the_exp_check(idp):
    refused(idp, idp.mint(iat=NOW - 600, exp=NOW - LEEWAY_SECONDS - 1), "exp")


def test_id_token_expired_within_the_leeway_passes(idp):
    claims = idp.verify(idp.mint(iat=NOW - 600, exp=NOW - LEEWAY_SECONDS + 5))
    assert claims["exp"] < NOW, "step 9: a token that expired within the clock-skew leeway is still accepted"


def test_id_token_without_exp_fails_the_exp_check(idp):
    refused(idp, idp.mint(exp=DROP), "exp")


@pytest.mark.parametrize("exp", [str(NOW + 3600), True, None, [NOW + 3600], {"v": 1}], ids=repr)
def test_id_token_with_a_non_numeric_exp_fails_the_exp_check(idp, exp):
    refused(idp, idp.mint(exp=exp), "exp")


@pytest.mark.parametrize("exp", [float("nan"), float("inf")], ids=repr)
def test_id_token_with_a_non_finite_exp_fails_the_exp_check(idp, exp):
    # Python's json (used by PyJWT) accepts the non-JSON literals NaN and Infinity; every comparison
    # with NaN is False, so "now > exp + leeway" never fires, and Infinity never expires.
    token = idp.mint(exp=exp)
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==").decode()
    assert '"exp":NaN' in payload or '"exp":Infinity' in payload, "the signed payload carries the literal"
    refused(idp, token, "exp")


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
def test_a_time_claim_too_large_for_a_float_fails_its_check_not_with_a_crash(idp, name):
    # JSON integers have no bound; math.isfinite(10**400) raises OverflowError (was a 500, internal_error).
    refused(idp, idp.mint(**{name: 10**400}), name)


# Step 10: iat, nbf

@pytest.mark.parametrize("name", ["iat", "nbf"])
def test_id_token_with_a_nan_iat_or_nbf_fails_its_check(idp, name):
    refused(idp, idp.mint(**{name: float("nan")}), name)


def test_id_token_without_iat_fails_the_iat_check(idp):
    refused(idp, idp.mint(iat=DROP), "iat")


def test_id_token_issued_in_the_future_beyond_the_leeway_fails_the_iat_check(idp):
    refused(idp, idp.mint(iat=NOW + LEEWAY_SECONDS + 60, exp=NOW + 7200), "iat")


def test_id_token_issued_too_long_ago_fails_the_iat_check(idp):
    refused(idp, idp.mint(iat=NOW - MAX_TOKEN_AGE_SECONDS - LEEWAY_SECONDS - 1), "iat")


def test_id_token_with_a_string_iat_fails_the_iat_check(idp):
    refused(idp, idp.mint(iat=str(NOW)), "iat")


def test_id_token_with_nbf_in_the_future_fails_the_nbf_check(idp):
    refused(idp, idp.mint(nbf=NOW + LEEWAY_SECONDS + 60), "nbf")


def test_id_token_with_nbf_within_the_leeway_passes(idp):
    claims = idp.verify(idp.mint(nbf=NOW + 30))
    assert claims["nbf"] == NOW + 30, "step 10: nbf a little ahead of our clock is within the leeway"


# sub (Core 2)

@pytest.mark.parametrize("sub", [DROP, "", 42, None], ids=["missing", "empty", "number", "null"])
def test_id_token_without_a_non_empty_string_sub_fails_the_sub_check(idp, sub):
    refused(idp, idp.mint(sub=sub), "sub")


# Step 11: nonce

def test_id_token_with_another_nonce_fails_the_nonce_check(idp):
    refused(idp, idp.mint(nonce="some-other-nonce"), "nonce")


def test_id_token_without_nonce_fails_the_nonce_check_when_one_was_sent(idp):
    refused(idp, idp.mint(nonce=DROP), "nonce")


@pytest.mark.parametrize("nonce", ["n\u00e9", 42, ["expected-nonce-value"]], ids=["non-ascii", "number", "list"])
def test_a_nonce_that_is_not_an_ascii_string_fails_the_nonce_check_not_with_a_crash(idp, nonce):
    # hmac.compare_digest refuses non-ASCII str with TypeError: MSAL's own nonce check hides it today,
    # ours is the defence once MSAL drops that check.
    refused(idp, idp.mint(nonce=nonce), "nonce")


# Key selection (kid)

def test_id_token_with_an_unknown_kid_is_refused(idp):
    refused(idp, idp.mint(kid="no-such-kid"), "kid")


def test_id_token_without_kid_passes_when_the_jwks_holds_one_key(idp):
    claims = idp.verify(idp.mint(kid=None))
    assert claims["sub"] == "person-sub", "with a single key in the JWKS, a token without kid uses that key"


def test_id_token_without_kid_is_refused_when_the_jwks_holds_two_keys(idp, other_rsa_key):
    two = replace(idp, jwks={"keys": [*idp.jwks["keys"], rsa_jwk(other_rsa_key, "key-2")]})
    refused(two, two.mint(kid=None), "kid")


def test_id_token_rs256_is_refused_by_a_jwk_that_declares_rs384(rsa_key):
    # A key whose JWK pins another algorithm never verifies this one (no algorithm confusion).
    idp = Idp(key=rsa_key, jwks={"keys": [rsa_jwk(rsa_key, KID, alg="RS384")]},
              metadata=metadata_for(algs=frozenset({"RS256", "RS384"})))
    refused(idp, idp.mint(), "kid")


def test_id_token_is_verified_with_a_jwk_that_declares_its_own_alg(rsa_key):
    idp = Idp(key=rsa_key, jwks={"keys": [rsa_jwk(rsa_key, KID, alg="RS256")]}, metadata=metadata_for())
    assert idp.verify(idp.mint())["sub"] == "person-sub", "a JWK declaring RS256 verifies an RS256 token"


def test_id_token_signed_by_a_jwk_marked_for_encryption_is_refused(rsa_key, other_rsa_key):
    idp = Idp(key=rsa_key, jwks={"keys": [rsa_jwk(rsa_key, KID, use="enc"), rsa_jwk(other_rsa_key, "sig-key")]},
              metadata=metadata_for())
    refused(idp, idp.mint(), "kid")


def test_id_token_signed_by_a_jwk_whose_key_ops_do_not_verify_is_refused(rsa_key, other_rsa_key):
    """RFC 7517 4.3: key_ops names what a key is for; one published for ["encrypt", "wrapKey"] (no `use`)
    is an encryption key as much as `use: enc` is."""
    for ops in (["encrypt", "wrapKey"], "verify"):  # a string is no list of operations
        idp = Idp(key=rsa_key, jwks={"keys": [rsa_jwk(rsa_key, KID, key_ops=ops), rsa_jwk(other_rsa_key, "sig-key")]},
                  metadata=metadata_for())
        refused(idp, idp.mint(), "kid")
    idp = Idp(key=rsa_key, jwks={"keys": [rsa_jwk(rsa_key, KID, key_ops=["verify"])]}, metadata=metadata_for())
    assert idp.verify(idp.mint())["sub"] == "person-sub", "a key for verify verifies"


def test_a_jwks_of_encryption_keys_only_is_the_idp_unavailable_not_a_key_to_use(rsa_key):
    idp = Idp(key=rsa_key, jwks={"keys": [rsa_jwk(rsa_key, KID, use="enc")]}, metadata=metadata_for())
    with pytest.raises(DependencyUnavailable):
        idp.verify(idp.mint())


# ---- clock skew: each time check exactly at its bound passes, one second past it fails


@pytest.mark.parametrize(("claims", "check"), [
    ({"iat": NOW - 600, "exp": NOW - LEEWAY_SECONDS}, None),
    ({"iat": NOW - 600, "exp": NOW - LEEWAY_SECONDS - 1}, "exp"),
    ({"iat": NOW + LEEWAY_SECONDS, "exp": NOW + 3600}, None),
    ({"iat": NOW + LEEWAY_SECONDS + 1, "exp": NOW + 3600}, "iat"),
    ({"nbf": NOW + LEEWAY_SECONDS}, None),
    ({"nbf": NOW + LEEWAY_SECONDS + 1}, "nbf"),
    ({"iat": NOW - MAX_TOKEN_AGE_SECONDS - LEEWAY_SECONDS}, None),
    ({"iat": NOW - MAX_TOKEN_AGE_SECONDS - LEEWAY_SECONDS - 1}, "iat"),
], ids=["exp-at-bound", "exp-past", "iat-future-at-bound", "iat-future-past", "nbf-at-bound", "nbf-past",
        "age-at-bound", "age-past"])
def test_time_claims_exactly_at_the_leeway_bound_pass_and_one_second_past_fail(idp, claims, check):
    token = idp.mint(**claims)
    if check is None:
        assert idp.verify(token)["sub"] == "person-sub", f"{claims} is within the leeway"
    else:
        refused(idp, token, check)



# prompt=login (authenticated_since: the login's start): auth_time must show a sign-in since then

STARTED = NOW - 60  # the login started a minute before its callback


@pytest.mark.parametrize(("auth_time", "check"), [
    (STARTED, None), (STARTED + 30, None),
    (STARTED - LEEWAY_SECONDS, None),  # the IdP's clock may be behind ours by the skew
    (STARTED - LEEWAY_SECONDS - 1, "auth_time"),  # a sign-in before this login: prompt=login not honoured
    (NOW - 3600, "auth_time"),
    (DROP, "auth_time"),  # no auth_time: nothing shows the password was asked again
    (None, "auth_time"), (float(STARTED), None), (STARTED + 0.5, "auth_time"), (str(STARTED), "auth_time"),
    (True, "auth_time"), (-1, "auth_time"), (2**60, "auth_time"), (float("nan"), "auth_time"),
    (10**400, "auth_time"),  # math.isfinite raises OverflowError for it: was a 500, as for exp once
    (NOW + LEEWAY_SECONDS, None), (NOW + LEEWAY_SECONDS + 1, "auth_time"),  # a sign-in in the future
], ids=["at-start", "after-start", "at-skew-bound", "past-skew-bound", "an-hour-old", "missing", "null",
        "integral-float", "fraction", "string", "boolean", "negative", "huge", "nan", "past-any-float",
        "future-at-bound",
        "future-past"])
def test_after_prompt_login_auth_time_must_be_an_integral_numericdate_since_the_logins_start(idp, auth_time, check):
    token = idp.mint(auth_time=auth_time)
    if check is None:
        assert idp.verify(token, authenticated_since=STARTED)["auth_time"] == auth_time
    else:
        err = refused(idp, token, check, authenticated_since=STARTED)
        assert "password again" in err.message, "the page says what the token did not show"


def test_without_prompt_login_any_past_auth_time_or_none_passes_but_a_malformed_one_does_not(idp):
    assert idp.verify(idp.mint(auth_time=NOW - 86400))["auth_time"] == NOW - 86400, "an old sign-in is fine"
    assert "auth_time" not in idp.verify(idp.mint(auth_time=DROP))
    for bad in ("1700000000", 1.5, -1, False, [NOW], NOW + LEEWAY_SECONDS + 1, 10**400):
        refused(idp, idp.mint(auth_time=bad), "auth_time")


@pytest.mark.parametrize(("override", "check"), [({"sub": ""}, "sub"), ({"oid": "é"}, "oid"),
                                                 ({"nonce": "other"}, "nonce")])
def test_a_token_failing_identity_or_nonce_is_refused_for_that_not_for_an_old_auth_time(idp, override, check):
    """The audit row's reason names the worse fault: a token not of this person or login, not a stale sign-in."""
    refused(idp, idp.mint(auth_time=NOW - 3600, **override), check, authenticated_since=STARTED)

# Conformance (issue 13): candidates by key type for a token without kid; a mangled signature is a
# signature failure; any JSON type in a header member or a claim is a 401 with its reason, never a crash.

def test_id_token_without_kid_picks_the_one_rsa_key_beside_an_ec_key(idp):
    ec_jwk = {**ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True), "use": "sig"}
    idp.jwks = {"keys": [ec_jwk, rsa_jwk(idp.key, None)]}
    assert idp.verify(idp.mint(kid=None))["sub"] == "person-sub"


def test_id_token_es256_without_kid_picks_the_p256_key_beside_p384_and_rsa(rsa_key):
    key = ec.generate_private_key(ec.SECP256R1())
    p384 = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
    jwks = {"keys": [p384, rsa_jwk(rsa_key, None), ECAlgorithm.to_jwk(key.public_key(), as_dict=True)]}
    idp = Idp(key=key, jwks=jwks, metadata=metadata_for(algs=frozenset({"ES256", "RS256"})))
    assert idp.verify(idp.mint(alg="ES256", kid=None))["sub"] == "person-sub"


@pytest.mark.parametrize("mangle", [
    pytest.param(lambda sig: sig[:-1], id="one-character-short"),
    pytest.param(lambda sig: sig[:10] + "*" + sig[11:], id="not-base64url"),
    pytest.param(lambda sig: sig + "==", id="padded"),
    pytest.param(lambda sig: "", id="empty"),
    pytest.param(lambda sig: sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB"), id="flipped"),
])  # fmt: skip
def test_a_mangled_signature_is_a_signature_failure(idp, mangle):
    header, payload, signature = idp.mint().split(".")
    refused(idp, f"{header}.{payload}.{mangle(signature)}", "signature")


@pytest.mark.parametrize("alg", [["RS256"], {"RS256": 1}, 256, None, True, "rs256", ""], ids=repr)
def test_an_alg_of_any_other_json_type_is_refused(idp, alg):
    _, payload, signature = idp.mint().split(".")
    forged = b64url(json.dumps({"alg": alg, "kid": KID}).encode())
    refused(idp, f"{forged}.{payload}.{signature}", "alg")


@pytest.mark.parametrize("kid", [[KID], {"k": KID}, 1, True, ""], ids=repr)
def test_a_kid_that_is_not_a_string_is_refused(idp, kid):
    refused(idp, hand_built({"alg": "RS256", "kid": kid}, idp.claims()), "kid")


@pytest.mark.parametrize("name", ["sub", "tid", "oid"])
@pytest.mark.parametrize("value", ["\ud800", "a\nb", "é", "x" * 256, 5, ["s"], {"s": 1}], ids=repr)
def test_a_subject_claim_of_another_type_or_odd_characters_is_refused(idp, name, value):
    refused(idp, idp.mint(**{name: value}), name)


def test_a_payload_that_is_not_json_is_a_format_failure(idp):
    header = b64url(json.dumps({"alg": "RS256", "kid": KID}).encode())
    payload = b64url(b"[" * 100000)  # deeper than the parser goes
    signature = idp.key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    refused(idp, f"{header}.{payload}.{b64url(signature)}", "format")


MSA_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"  # Entra's consumer (personal account) tenant


def test_a_multi_tenant_token_must_be_signed_by_a_key_that_vouches_for_its_issuer(idp, other_rsa_key):
    """Entra's tenant-independent JWKS names each key's issuer: a key scoped to the consumer tenant
    (Storm-0558's kind) must not sign a work tenant's token, though the token's iss and tid agree."""
    jwks = {"keys": [rsa_jwk(idp.key, "work-key", issuer=ENTRA_TEMPLATE),
                     rsa_jwk(other_rsa_key, "msa-key", issuer=f"https://login.microsoftonline.com/{MSA_TENANT}/v2.0")]}
    entra = Idp(key=idp.key, jwks=jwks, metadata=metadata_for(ENTRA_TEMPLATE))
    iss = ENTRA_TEMPLATE.replace("{tenantid}", TENANT)
    assert entra.verify(entra.mint(kid="work-key", iss=iss))["tid"] == TENANT, "the templated key vouches for it"
    refused(entra, entra.mint(other_rsa_key, kid="msa-key", iss=iss), "iss")
    msa_iss = f"https://login.microsoftonline.com/{MSA_TENANT}/v2.0"
    assert entra.verify(entra.mint(other_rsa_key, kid="msa-key", iss=msa_iss, tid=MSA_TENANT))["tid"] == MSA_TENANT, \
        "the consumer key still vouches for its own tenant's tokens (whether they may enter is admission's call)"


def test_a_key_whose_issuer_is_not_text_vouches_for_no_tenant(idp):
    """A key scoped by an `issuer` we cannot read (a list naming the consumer tenant) is skipped, never taken
    for an unscoped key, which would vouch for every tenant."""
    msa_iss = f"https://login.microsoftonline.com/{MSA_TENANT}/v2.0"
    entra = Idp(key=idp.key, jwks={"keys": [rsa_jwk(idp.key, KID, issuer=[msa_iss])]},
                metadata=metadata_for(ENTRA_TEMPLATE))
    with pytest.raises(DependencyUnavailable):  # the IdP's only key unusable: its keys are unavailable
        entra.verify(entra.mint(iss=ENTRA_TEMPLATE.replace("{tenantid}", TENANT)))


@pytest.mark.parametrize(("header_encoding", "payload_encoding"), [
    ("utf-16", "utf-8"), ("utf-8", "utf-16"), ("utf-8", "utf-32"), ("utf-8", "utf-8-sig")],
    ids=["header-utf-16", "payload-utf-16", "payload-utf-32", "payload-utf-8-with-bom"])
def test_a_header_or_payload_that_is_not_utf8_json_is_a_format_failure(idp, header_encoding, payload_encoding):
    """RFC 7519 7.2 step 10, RFC 8259 8.1 (UTF-8, no BOM): json.loads of bytes took UTF-16/32 and a BOM,
    which MSAL's decoder does not, so the two read one token differently."""
    token = reencoded(idp.mint(), idp.key, header_encoding=header_encoding, payload_encoding=payload_encoding)
    refused(idp, token, "format")


def test_a_token_without_nbf_passes_since_openid_connect_does_not_require_it(idp):
    assert idp.verify(idp.mint(nbf=DROP))["sub"] == "person-sub"
