"""The IdP hangs or dies while the app is warm: a person gets a clear 503 in bounded time, the worker
thread is free again, cached keys keep logins going, and the app heals without a restart. Real HTTPS
IdP (tests/support/hostile_idp.py), the real app (tools.host, MSAL, Azurite)."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback

import pytest
import requests

from shared.jwks import MAX_STALE_SECONDS
from shared.oidc_client import OidcClient
from tests.conftest import APP_BASE, REDIRECT_URIS
from tests.reliability.test_key_vault_outage import health
from tests.support.hostile_flow import (
    assert_signed_in,
    begin,
    new_person,
    post_callback,
    sign_in,
    switch_to,
)
from tests.support.hostile_idp import HostileIdp
from tests.support.portal import assert_error_page, correlation_id, start_login

READ_TIMEOUT = 1  # IDP_TIMEOUT_SECONDS for these tests: a hung IdP costs the person about this long


def threads_redeeming() -> list[str]:
    """The threads of this process (tools.host serves the app in it) inside a code redemption now."""
    return [str(ident) for ident, frame in sys._current_frames().items()
            if any(f.f_code is OidcClient._redeem_once.__code__ for f, _ in traceback.walk_stack(frame))]


@pytest.fixture
def hostile_idp(test_ca):
    """A hostile IdP of its own (these tests stop and restart it)."""
    with HostileIdp(test_ca, redirect_uris=REDIRECT_URIS.values()) as hostile:
        yield hostile


@pytest.fixture
def app(hostile_idp, use_settings):
    return switch_to(hostile_idp, use_settings, IDP_TIMEOUT_SECONDS=str(READ_TIMEOUT))


def test_a_token_endpoint_that_never_answers_gives_503_within_the_read_timeout(hostile_idp, app, account_store):
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims, hang=READ_TIMEOUT + 9)  # holds the request far past our timeout
    session, fields = begin(hostile_idp)
    started = time.monotonic()
    response = post_callback(session, fields)
    elapsed = time.monotonic() - started
    assert_error_page(response, 503, app, "idp_unavailable")
    assert response.headers.get("Retry-After"), "a 503 says when to try again"
    assert elapsed < READ_TIMEOUT + 2, f"the callback gave up after the read timeout, not the IdP's: {elapsed:.1f} s"
    assert not threads_redeeming(), "no worker thread is left waiting on the token endpoint"
    # The worker thread is free again, and the next login goes through once the IdP answers.
    hostile_idp.answer(claims=person.claims)
    assert_signed_in(sign_in(hostile_idp), person)


def test_a_refused_connection_to_the_token_endpoint_gives_503_at_once(hostile_idp, app, account_store):
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims)
    session, fields = begin(hostile_idp)
    port = hostile_idp.port
    hostile_idp.stop()  # the IdP dies between the login page and the callback
    started = time.monotonic()
    response = post_callback(session, fields)
    assert_error_page(response, 503, app, "idp_unavailable")
    assert time.monotonic() - started < 2, "a refused connection is not waited on"
    hostile_idp.start(port)  # back on the same address: the next login works without a restart
    assert_signed_in(sign_in(hostile_idp), person)


def test_a_jwks_endpoint_that_is_down_does_not_stop_logins_while_the_keys_are_cached(hostile_idp, app, account_store):
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims)
    assert_signed_in(sign_in(hostile_idp), person)  # keys fetched and cached
    fetches = hostile_idp.jwks_fetches
    hostile_idp.down.add("jwks")
    assert_signed_in(sign_in(hostile_idp), person)
    assert hostile_idp.jwks_fetches == fetches, "the cached keys served; the JWKS endpoint was not needed"


@pytest.mark.parametrize("body", ['{"keys": null}', '{"keys": []}', "[" * 100_000 + "]" * 100_000],
                         ids=["keys-null", "no-keys", "nested-too-deep"])
def test_a_jwks_that_is_no_key_set_is_the_idp_unavailable_not_a_crash(hostile_idp, app, account_store, body):
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims)
    hostile_idp.jwks_body = body
    try:
        assert_error_page(sign_in(hostile_idp), 503, app, "idp_unavailable")
    finally:
        hostile_idp.jwks_body = None
    assert_signed_in(sign_in(hostile_idp), person)  # the next login fetches a good key set


def test_an_idp_down_when_its_metadata_and_keys_are_due_for_their_daily_refresh_does_not_stop_logins(
        hostile_idp, app, account_store):
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims)
    assert_signed_in(sign_in(hostile_idp), person)  # metadata and keys fetched and cached
    # A day on, for both caches (their clocks are time.monotonic: the entries are made due instead).
    app._metadata.expire()
    app.idp_keys()._keys.expire()
    hostile_idp.down.update({"discovery", "jwks"})
    assert_signed_in(sign_in(hostile_idp), person)
    started = time.monotonic()
    assert_signed_in(sign_in(hostile_idp), person)
    assert time.monotonic() - started < READ_TIMEOUT, "the next login does not wait for the IdP's refresh again"
    amber = health(app)  # sign-in works, and the admin is told what is being served past its refresh
    assert amber["http_status"] == 200
    for what in ("metadata", "signing keys"):
        assert f"could not refresh its {what}" in (amber["checks"]["idp_metadata"]["warning"] or ""), amber
    hostile_idp.down.clear()



@pytest.mark.parametrize("fault", ["down", "no-usable-key"])
def test_signing_keys_a_cold_worker_cannot_have_are_red_in_health_before_anyone_signs_in(hostile_idp, app, fault):
    """Health read the metadata only: with the JWKS down, or holding no key we can use, it answered 200
    "ready" while every callback got 503, before a login and after one."""
    if fault == "down":
        hostile_idp.down.add("jwks")
    else:
        hostile_idp.jwks_body = '{"keys": []}'
    try:
        red = health(app)
        check = red["checks"]["idp_metadata"]
        assert red["http_status"] == 503 and check["ok"] is False and "signing keys" in check["detail"], red
        assert "jwks_uri" in check["fix"] and hostile_idp.origin in check["fix"], check
    finally:
        hostile_idp.down.clear()
        hostile_idp.jwks_body = None
    assert health(app)["checks"]["idp_metadata"]["ok"], "green at the first fetch that gives a key"


def test_keys_past_their_stale_limit_are_red_in_health_not_amber(hostile_idp, app, account_store):
    """A week past their refresh the keys held stop serving (signing_key refuses every callback): the
    health check then says so in red, where it stayed amber, "serving the ones read before"."""
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims)
    assert_signed_in(sign_in(hostile_idp), person)
    hostile_idp.down.add("jwks")
    try:
        app.idp_keys()._keys.expire()  # due: the refresh fails, the keys held serve on, amber
        assert_signed_in(sign_in(hostile_idp), person)
        amber = health(app)
        assert amber["http_status"] == 200 and amber["checks"]["idp_metadata"]["ok"], amber
        assert "could not refresh its signing keys" in amber["checks"]["idp_metadata"]["warning"], amber
        app.idp_keys()._keys.expire(by=MAX_STALE_SECONDS)  # and a week on: no longer served
        assert_error_page(sign_in(hostile_idp), 503, app, "idp_unavailable")
        red = health(app)
        check = red["checks"]["idp_metadata"]
        assert red["http_status"] == 503 and check["ok"] is False, red
        assert "signing keys" in check["detail"] and "no longer" in check["detail"], check
        assert check.get("fix"), check
    finally:
        hostile_idp.down.clear()
    assert_signed_in(sign_in(hostile_idp), person)
    assert health(app)["checks"]["idp_metadata"]["ok"], "green again at the first good refresh"


def test_endpoints_a_metadata_re_read_moves_are_the_ones_used_and_guarded(hostile_idp, app, account_store):
    """MSAL copied the endpoints when it was built and was rebuilt only with a new secret: after the
    daily re-read moved the token endpoint, its POSTs went to the old one, and our guard (keyed by
    the new one) let a 5xx through as a 500."""
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims)
    assert_signed_in(sign_in(hostile_idp), person)
    moved = f"{hostile_idp.origin}/{hostile_idp.tenant}/oauth2/moved/token"
    hostile_idp.metadata_overrides = {"token_endpoint": moved}
    app._metadata.expire()
    try:
        assert_signed_in(sign_in(hostile_idp), person)
        assert hostile_idp.requests[-1] == ("POST", f"/{hostile_idp.tenant}/oauth2/moved/token"), \
            hostile_idp.requests[-3:]
        hostile_idp.answer(claims=person.claims, raw=UNAVAILABLE_503)
        assert_error_page(sign_in(hostile_idp), 503, app, "idp_unavailable")
    finally:
        hostile_idp.metadata_overrides = {}
        app._metadata.expire()


# What discovery may answer at its daily refresh when the IdP (or a gateway before it) is not itself. The
# URL gave a good document before, so none of them is the admin's setting: on old main each was a 500
# "fix OIDC_ISSUER_URL" on every callback, and every callback fetched discovery again.
GARBAGE_DISCOVERY = {
    "html-200": ((200, "text/html", "<html><body>Down for maintenance</body></html>"), {}),
    "html-404": ((404, "text/html", "<html><body>Not Found</body></html>"), {}),
    "html-403": ((403, "text/html", "<html><body>Forbidden</body></html>"), {}),
    "truncated-json": ((200, "application/json", '{"issuer": "https://log'), {}),
    "no-jwks-uri": (None, {"jwks_uri": None}),
}


def discovery_fetches(idp: HostileIdp) -> int:
    return sum(1 for method, path in idp.requests if path.endswith("/.well-known/openid-configuration"))


@pytest.mark.parametrize(("raw", "overrides"), GARBAGE_DISCOVERY.values(), ids=GARBAGE_DISCOVERY.keys())
def test_discovery_answering_garbage_at_its_daily_refresh_is_an_outage_and_the_held_metadata_serves(
        hostile_idp, app, account_store, caplog, raw, overrides):
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims)
    assert_signed_in(sign_in(hostile_idp), person)  # metadata held
    session, fields = begin(hostile_idp)  # a login in flight, at the IdP
    app._metadata.expire()  # a day on
    hostile_idp.discovery_raw, hostile_idp.metadata_overrides = raw, overrides
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        assert_signed_in(post_callback(session, fields), person)
        fetches = discovery_fetches(hostile_idp)
        assert_signed_in(sign_in(hostile_idp), person)
        assert discovery_fetches(hostile_idp) == fetches, "not fetched again before the retry interval"
        assert "idp.stale metadata serving the last good value" in caplog.text, caplog.text
        assert "could not refresh its metadata" in health(app)["checks"]["idp_metadata"]["warning"]
        hostile_idp.discovery_raw, hostile_idp.metadata_overrides = None, {}
        app._metadata.expire()  # the retry interval over
        assert_signed_in(sign_in(hostile_idp), person)
        assert "idp.recovered metadata" in caplog.text


def test_discovery_answering_a_page_at_a_cold_start_is_still_the_settings_error(hostile_idp, app):
    """Nothing held: the URL never gave a document, so it is the admin's to fix (the page says which URL
    was tried and what came back), as test_callback_errors.py's wrong issuer URL."""
    hostile_idp.discovery_raw = GARBAGE_DISCOVERY["html-404"][0]
    response = start_login(requests.Session(), APP_BASE, "user")
    assert_error_page(response, 500, app, "configuration_error")
    assert "OIDC_ISSUER_URL" in response.text and "HTTP 404" in response.text
    hostile_idp.discovery_raw = None
    assert start_login(requests.Session(), APP_BASE, "user").status_code == 302, "the next request tries again"


def test_discovery_down_at_a_cold_start_gives_503_and_the_next_request_after_it_returns_works(hostile_idp, app):
    hostile_idp.down.add("discovery")
    refused = start_login(requests.Session(), APP_BASE, "user")
    assert_error_page(refused, 503, app, "idp_unavailable")
    hostile_idp.down.discard("discovery")
    started = start_login(requests.Session(), APP_BASE, "user")
    assert started.status_code == 302, f"the app healed without a restart: {started.status_code}"


# What a token endpoint answers when it is not itself: a gateway's page, Entra's own "try later", a
# throttle. Retry-After 3600 is the most MSAL's throttling cache honoured: on old main one such answer
# was handed to every login of the worker for an hour, and the code never reached the IdP.
GATEWAY_502 = (502, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>")
UNAVAILABLE_503 = (503, "application/json", json.dumps({
    "error": "temporarily_unavailable", "error_codes": [50196],
    "error_description": "AADSTS50196: The server terminated an operation because it encountered a loop."}))
THROTTLED_429 = (429, "application/json", json.dumps({"error": "too_many_requests"}))
UNAVAILABLE = {
    "html-502": (GATEWAY_502, {}),
    "json-503": (UNAVAILABLE_503, {}),
    "json-503-retry-after-an-hour": (UNAVAILABLE_503, {"Retry-After": "3600"}),
    "429-retry-after-an-hour": (THROTTLED_429, {"Retry-After": "3600"}),
}


def codes_posted(idp: HostileIdp) -> list[str]:
    return [r["code"] for r in idp.token_requests if r.get("grant_type") == "authorization_code"]


@pytest.mark.parametrize(("answer", "headers"), UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
def test_a_token_endpoint_answering_5xx_or_429_is_that_logins_503_and_the_next_login_asks_the_idp(
        hostile_idp, app, account_store, answer, headers):
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims, raw=answer, headers=headers)
    session, fields = begin(hostile_idp)
    refused = post_callback(session, fields)
    row = assert_error_page(refused, 503, app, "idp_unavailable")
    assert refused.headers.get("Retry-After") == "30"
    assert f"answered HTTP {answer[0]}" in row["Detail"], row["Detail"]
    assert codes_posted(hostile_idp) == [fields["code"]], "posted once: a 5xx may come after the IdP saw the code"
    hostile_idp.answer(claims=person.claims)  # the IdP is itself again
    for _ in range(2):
        session, fields = begin(hostile_idp)
        assert_signed_in(post_callback(session, fields), person)  # at once, whatever the Retry-After said
        assert codes_posted(hostile_idp)[-1] == fields["code"], "each login's own code reached the IdP"
    assert len(codes_posted(hostile_idp)) == 3, "one code POST per login"


# Entra says "try later" in a 400 too: RFC 6749's transient codes, with an AADSTS code of the kind
# (90033: its directory service unavailable). The person's code was never refused: a 401 "the
# identity provider did not accept this sign-in" would send them and the admin after a wrong cause.
TRANSIENT_400 = {
    "temporarily_unavailable": (400, "application/json", json.dumps({
        "error": "temporarily_unavailable", "error_codes": [90033],
        "error_description": "AADSTS90033: A transient error has occurred. Please try again."})),
    "server_error": (400, "application/json", json.dumps({"error": "server_error", "error_codes": [90006]})),
}


@pytest.mark.parametrize("answer", TRANSIENT_400.values(), ids=TRANSIENT_400.keys())
def test_a_token_endpoint_saying_try_later_in_a_400_is_that_logins_503(hostile_idp, app, account_store, answer):
    person = new_person(account_store)
    hostile_idp.answer(claims=person.claims, raw=answer)
    refused = sign_in(hostile_idp)
    row = assert_error_page(refused, 503, app, "idp_unavailable")
    assert refused.headers.get("Retry-After") == "30"
    assert json.loads(answer[2])["error"] in row["Detail"], row["Detail"]
    hostile_idp.answer(claims=person.claims)
    assert_signed_in(sign_in(hostile_idp), person)


def test_a_token_answer_carrying_retry_after_is_its_own_logins_only(hostile_idp, app, account_store):
    """On old main, MSAL kept Alice's whole token answer for its Retry-After and handed it to Bob's
    redemption: only our nonce check stopped Bob entering as Alice, and Bob's code was never sent."""
    alice, bob = new_person(account_store), new_person(account_store)
    hostile_idp.answer(claims=alice.claims, headers={"Retry-After": "120"})
    assert_signed_in(sign_in(hostile_idp), alice)
    hostile_idp.answer(claims=bob.claims, headers={"Retry-After": "120"})
    session, fields = begin(hostile_idp)
    assert_signed_in(post_callback(session, fields), bob)
    assert len(codes_posted(hostile_idp)) == 2 and codes_posted(hostile_idp)[-1] == fields["code"]


def test_msal_logs_no_token_answer_and_our_own_line_records_the_failure(hostile_idp, app, account_store, caplog):
    """An IdP answering its tokens form-encoded: MSAL logged the body whole at ERROR (tokens in the
    log, which SECURITY.md forbids). Now MSAL is kept out of the log and our sso.callback line says it."""
    person = new_person(account_store)
    tokens = "token_type=Bearer&access_token=AT-FORM-ENCODED-SECRET&id_token=ID-FORM-ENCODED-SECRET"
    hostile_idp.answer(claims=person.claims, raw=(200, "application/x-www-form-urlencoded", tokens))
    with caplog.at_level(logging.INFO):
        response = sign_in(hostile_idp)
    row = assert_error_page(response, 401, app, "code_redemption_failed")
    assert "not JSON" in row["Detail"]
    assert not [r for r in caplog.records if r.name.startswith("msal")], "MSAL writes nothing to the log"
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "FORM-ENCODED-SECRET" not in logged, "no token in any log record"
    ours = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sso.callback ")]
    assert any(f"correlation_id={correlation_id(response)}" in line and "reason=code_redemption_failed" in line
               for line in ours), ours
