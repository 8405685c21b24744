"""A callback whose HTTP request is not an authorization response is a 400 invalid_request, with its
real cause in the audit row's reason and the log line's detail (never a fake IdP error)."""

from __future__ import annotations

import logging

import pytest
import requests

from shared.runtime import get_runtime
from tests.conftest import APP_BASE
from tests.support.portal import assert_error_page, correlation_id

CALLBACK = f"{APP_BASE}/api/sso/user/callback"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(("body", "headers", "cause"), [
    (b'{"code": "x", "state": "abcdefgh12345678"}', {"Content-Type": "application/json"},
     "callback body of type application/json"),
    (b"code=" + b"a" * (70 * 1024) + b"&state=abcdefgh12345678", FORM, f"callback body of {70 * 1024 + 28} bytes"),
    (b"code=\xff\xfe&state=abcdefgh12345678", FORM, "callback body is not UTF-8"),
    (b"code=x&state=abcdefgh12345678", {}, "callback body of type none"),
], ids=["json", "70KB", "bad-utf8", "no-content-type"])
def test_malformed_callback_body_is_400_invalid_request_with_its_real_cause(app_server, caplog, body, headers,
                                                                              cause):
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        response = requests.post(CALLBACK, data=body, headers=headers, timeout=20)
    row = assert_error_page(response, 400, get_runtime(), "invalid_request")
    assert row["Kind"] == "user", "the audit row names the kind of the callback"
    assert cause in row["Detail"], f"the audit row names the real cause {cause!r}: {row['Detail']}"
    cid = correlation_id(response)
    lines = [r.getMessage() for r in caplog.records if cid in r.getMessage()]
    assert len(lines) == 1 and "reason=invalid_request" in lines[0], f"one log line per attempt: {lines}"
    assert cause in lines[0], f"the log line names the real cause {cause!r}: {lines[0]}"
    assert "identity provider did not sign you in" not in response.text, "not dressed up as an IdP error"


def test_request_text_cannot_forge_a_log_line(app_server, caplog, idp):
    forged = "access_denied\nsso.callback kind=user outcome=success reason=ok status=200"
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        response = requests.post(f"{APP_BASE}/api/sso/user%0Aforged/callback", data={"error": forged}, timeout=20)
        requests.post(CALLBACK, data={"error": forged, "state": "abcdefgh12345678", "iss": idp.issuer}, timeout=20)
    assert response.status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sso.")]
    assert lines and all("\n" not in line for line in lines), f"one physical line per attempt: {lines}"
    assert any("access_denied\\nsso.callback" in line for line in lines), "the newline is escaped, visibly"
