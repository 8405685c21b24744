"""Hypothesis sends random query strings, form bodies (up to the size limit and past it), cookies, header
values and route segments to every route of the real app, as tools.host serves it, with Azurite and the
dev IdP behind: the answer is always a 4xx page, a 302, a 200 of a route that has one, or a 503 for a
dependency; never a 500, never an unescaped echo of the input, never a table key built from unchecked
input. Derandomized, so a CI run is repeatable; bounded in examples and time."""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from shared.callback import MAX_BODY
from shared.flows import STATE_SYNTAX

MARK = '<zq"\'>'  # put into inputs; may come back only escaped
ROUTES = ["sso/{kind}/login", "sso/{kind}/callback", "sso/{kind}/logout", "sso/jwks.json", "sso/setup", "health"]
ALLOWED = {200, 302, 400, 403, 404, 405, 503}
TABLE_KEY_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
FUZZ = settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

text = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FF, exclude_categories=("Cs",)), max_size=40)
marked = st.builds(lambda a, b: a + MARK + b, text, text)
header_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                       max_size=80).map(lambda v: v + MARK)
state = st.one_of(st.from_regex(STATE_SYNTAX, fullmatch=True), marked)
params = st.dictionaries(st.sampled_from(["code", "state", "iss", "error", "error_description", "return_to",
                                          "session_state", "x"]), st.one_of(marked, state), max_size=5)


class CheckedKeys:
    """Wraps the app's real TableClient: every key it is handed must be one a table may hold and one
    the app built (a flow's state matches STATE_SYNTAX), never raw input."""

    def __init__(self, table, pattern: re.Pattern | None):
        self._table, self._pattern = table, pattern
        self.seen: list[str] = []

    def _check(self, key: str) -> None:
        self.seen.append(key)
        assert not TABLE_KEY_FORBIDDEN.search(key), f"a table key with a forbidden character: {key!r}"
        assert self._pattern is None or self._pattern.fullmatch(key), f"a table key from unchecked input: {key!r}"

    def get_entity(self, partition_key, row_key, **kwargs):
        self._check(partition_key)
        return self._table.get_entity(partition_key, row_key, **kwargs)

    def delete_entity(self, partition_key, row_key, **kwargs):
        self._check(partition_key)
        return self._table.delete_entity(partition_key, row_key, **kwargs)

    def create_entity(self, entity, **kwargs):
        self._check(entity["PartitionKey"])
        return self._table.create_entity(entity, **kwargs)

    def upsert_entity(self, entity, **kwargs):
        self._check(entity["PartitionKey"])
        self._check(entity["RowKey"])
        return self._table.upsert_entity(entity, **kwargs)

    def __getattr__(self, name):
        return getattr(self._table, name)


@pytest.fixture(scope="module")
def fuzzed(app_server, function_host, app_env):
    """The app in-process (werkzeug's test client on tools.host's WSGI app), its table clients checked."""
    from shared.runtime import Runtime, reset_runtime

    runtime = Runtime(app_env)
    flows = runtime.flows._table = CheckedKeys(runtime.flows._table, STATE_SYNTAX)
    events = runtime.events._table = CheckedKeys(runtime.events._table, None)
    reset_runtime(runtime)
    client = Client(function_host)
    # The checkers are in the app's path: a login start stores a flow, a bare callback its audit row.
    assert client.get("/api/sso/user/login").status_code == 302 and client.post("/api/sso/user/callback")
    assert flows.seen and events.seen, "the app's table calls pass through the key checks"
    yield client
    reset_runtime(Runtime(app_env))


def check(response, sent: str) -> None:
    body = response.get_data(as_text=True)
    assert response.status_code in ALLOWED, f"{response.status_code} for {sent!r}: {body[:300]}"
    assert response.status_code != 500 and "Traceback" not in body
    assert MARK not in body, f"the input came back unescaped for {sent!r}"
    assert MARK not in str(response.headers), f"the input came back in a header for {sent!r}"


@FUZZ
@given(route=st.sampled_from(ROUTES), kind=st.one_of(st.sampled_from(["user", "agent"]), marked),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]), query=params)
def test_any_route_with_any_query(fuzzed, route, kind, method, query):
    path = "/api/" + route.format(kind=quote(kind, safe=""))
    response = fuzzed.open(f"{path}?{urlencode(query)}", method=method)
    check(response, f"{method} {path} {query}")


@FUZZ
@given(kind=st.sampled_from(["user", "agent"]), form=params, cookie=header_value, content_type=st.one_of(
    st.just("application/x-www-form-urlencoded"), header_value),
       size=st.sampled_from([0, 1000, MAX_BODY, MAX_BODY + 1]))
def test_callback_with_any_body_cookie_and_content_type(fuzzed, kind, form, cookie, content_type, size):
    body = urlencode(form).encode()
    if size > len(body) + 5:  # padded to exactly `size` bytes: at the limit, and one past it
        body += b"&pad=" + b"a" * (size - len(body) - 5)
    response = fuzzed.post(f"/api/sso/{kind}/callback", data=body,
                           headers={"Content-Type": content_type, "Cookie": f"__Host-portal-sso-{kind}={cookie}"})
    check(response, f"{form} cookie={cookie!r} type={content_type!r} {len(body)} bytes")
    assert response.status_code in (400, 503), "a forged callback never signs anyone in"


@FUZZ
@given(name=st.sampled_from(["X-Forwarded-Host", "Host", "Referer", "Origin", "User-Agent", "X-Forwarded-Proto"]),
       value=header_value, route=st.sampled_from(ROUTES))
def test_any_header_value(fuzzed, name, value, route):
    response = fuzzed.get("/api/" + route.format(kind="user"), headers={name: value})
    check(response, f"{name}: {value!r}")
    if response.status_code == 302:
        host = response.headers["Location"].split("/")[2]
        assert "zq" not in host and MARK not in response.headers["Location"], \
            "redirects are built from settings, never from request headers"


# ---- a hostile IdP's ID tokens: any JSON type in any header member or claim (issue 13 item 14) ----

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(exclude_categories=()), max_size=12),  # lone surrogates (Cs) included
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
HEADER_MEMBERS = ["alg", "kid", "typ", "crit", "b64", "cty", "jku", "x5t", "zip"]
CLAIMS = ["iss", "aud", "azp", "sub", "exp", "iat", "nbf", "nonce", "tid", "oid", "email", "name",
          "xms_edov", "email_verified", "roles", "preferred_username", "ver"]
TOKEN_FUZZ = settings(FUZZ, max_examples=100)  # each example is a whole login: ~0.2 s
# Who answers what: a forged header or claim is 401 (validation) or 403 (may not enter); 200 when the
# changes happen to leave a valid token. Never a 500, never a session for a changed identity.
TOKEN_ALLOWED = {200, 401, 403}


@pytest.fixture(scope="module")
def token_fuzz(hostile, app_server, app_env, account_store):
    from shared.runtime import Runtime, reset_runtime
    from tests.support.hostile_flow import new_person, switch_to

    hostile.reset()
    person = new_person(account_store)
    runtime = switch_to(hostile, lambda **env: Runtime({**app_env, **env}))
    reset_runtime(runtime)
    yield hostile, person
    reset_runtime(Runtime(app_env))


def _sign_in_with(token_fuzz, **script):
    from tests.support.hostile_flow import sign_in

    hostile, person = token_fuzz
    hostile.answer(**{**script, "claims": {**person.claims, **script.get("claims", {})}})
    response = sign_in(hostile)
    body = response.text
    assert response.status_code in TOKEN_ALLOWED, f"{response.status_code} for {script!r}: {body[:300]}"
    assert "Traceback" not in body
    if response.status_code != 200:
        assert "Correlation ID" in body and "Reason: <code>" in body, "a 4xx page with its reason"
    return response


@TOKEN_FUZZ
@example(header={"alg": ["RS256"]})  # the 500 of issue 13 item 14
@example(header={"kid": {"k": 1}})
@given(header=st.dictionaries(st.sampled_from(HEADER_MEMBERS) | st.text(max_size=5), json_value, min_size=1,
                              max_size=3))
def test_any_json_in_the_id_tokens_header(token_fuzz, header):
    response = _sign_in_with(token_fuzz, header=header)
    if response.status_code == 200:
        assert header.get("alg", "RS256") == "RS256", "a token verifies only under the IdP's own algorithm"


@TOKEN_FUZZ
@example(claims={"email": "p\ud800@contoso.test"})  # the other 500 of issue 13 item 14
@example(claims={"xms_edov": "0"})
@given(claims=st.dictionaries(st.sampled_from(CLAIMS), json_value, min_size=1, max_size=4))
def test_any_json_in_the_id_tokens_claims(token_fuzz, claims):
    response = _sign_in_with(token_fuzz, claims=claims)
    if response.status_code == 200:  # random JSON never equals the one value (or absence) these allow
        changed = set(claims) & {"iss", "aud", "nonce", "tid", "oid", "email", "exp", "iat"}
        assert not changed, f"a token with a changed {changed} must not sign anyone in"


@settings(TOKEN_FUZZ, max_examples=50)
@example(payload=[], header={"alg": "RS256"})  # payloads MSAL crashed on (issue 13 item 14)
@example(payload=None, header={"alg": "RS256"})
@given(payload=json_value, header=json_value)
def test_any_json_as_the_id_tokens_whole_header_or_payload(token_fuzz, payload, header):
    import base64
    import json

    def part(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    response = _sign_in_with(token_fuzz, mangle=lambda token: f"{part(header)}.{part(payload)}.{token.rsplit('.')[-1]}")
    assert response.status_code == 401, "no such token verifies"
