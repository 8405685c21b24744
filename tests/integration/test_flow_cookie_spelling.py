"""One spelling per sealed flow cookie (shared/flows.py). SPEC: "an altered, truncated, foreign or stale
cookie is a 400"; SECURITY.md: "any change fails the tag". The expiry went into the associated data as
int() of the cookie's text (so "0" + the expiry, or the same number in another script's digits, which
`\\d` and int() take, gave the same data) and the blob was decoded leniently (up to 15 other last base64
characters decode to the same bytes): such altered cookies opened and signed the person in. No content
could change, but the guarantee the binding, fuzz and 'altered' tests rely on was false."""

from __future__ import annotations

import base64
import time

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.errors import BindingMismatch
from shared.flows import Flow, FlowCookies, flow_keys
from shared.runtime import get_runtime
from tests.integration.test_flow_binding import at_idp, flow_cookies, post
from tests.support.portal import assert_error_page

STATE = "abcdefghijklmnopqrstuv"
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.fixture
def browser(app_server, demo_accounts) -> requests.Session:
    return requests.Session()


def test_a_flow_cookie_whose_expiry_was_given_a_leading_zero_is_refused_and_consumes_the_flow(browser):
    """Against the real app: the browser's own cookie with one `0` put before its expiry is an
    altered cookie (SPEC: a 400 that consumes the marker). It opened (200, signed in): the
    associated data held int(expiry)."""
    action, fields = at_idp(browser, "user")
    name, value = next(iter(flow_cookies(browser).items()))
    version, expiry, blob = value.split(".")
    altered = f"{version}.0{expiry}.{blob}"
    assert altered != value
    response = post(action, fields, {name: altered})
    assert_error_page(response, 400, get_runtime(), "browser_binding_mismatch")
    assert_error_page(post(action, fields, session=browser), 400, get_runtime(), "unknown_state")


def _seal(return_to_len: int) -> tuple[FlowCookies, str]:
    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cookies = FlowCookies(flow_keys([der]))
    flow = Flow(state=STATE, kind="user", nonce="n" * 32, code_verifier="v" * 43, scope=("openid",),
                return_to="https://portal.example/" + "x" * return_to_len, portal_nonce=None,
                expires_at=time.time() + 600, correlation_id="c")
    return cookies, cookies.seal(flow)


def _alterations(value: str) -> list[str]:
    version, expiry, blob = value.split(".")
    padded = blob + "=" * (-len(blob) % 4)
    pad = "=" * (-len(blob) % 4)
    same_bytes = [blob[:-1] + c for c in B64URL if c != blob[-1]
                  and base64.urlsafe_b64decode(blob[:-1] + c + pad) == base64.urlsafe_b64decode(padded)]
    arabic_indic = "".join(chr(0x660 + int(d)) for d in expiry)
    return ([f"{version}.0{expiry}.{blob}", f"{version}.{arabic_indic}.{blob}"]
            + [f"{version}.{expiry}.{b}" for b in same_bytes])


@pytest.mark.parametrize("return_to_len", [0, 1, 2])  # the three blob lengths mod 4
def test_no_other_spelling_of_a_sealed_flow_cookie_opens(return_to_len):
    """Every alteration of the cookie's text must fail to open (BindingMismatch: a 400 at the callback).
    A leading zero or Arabic-Indic digits in the expiry, and (for a blob whose length is not a multiple
    of four) another last base64 character with the same significant bits, opened as the original flow."""
    cookies, value = _seal(return_to_len)
    assert cookies.open("user", STATE, value).state == STATE
    opened = []
    for altered in _alterations(value):
        assert altered != value
        try:
            cookies.open("user", STATE, altered)
        except BindingMismatch:
            continue
        opened.append(altered)
    assert opened == [], f"{len(opened)} altered spellings of one cookie open as the sealed flow"
