"""GET /api/sso/jwks.json failing (shared/login.py `session_jwks`): a JWKS client gets a JSON error,
not an HTML page, never cached, with Retry-After, and the correlation id it names is in a log line."""

from __future__ import annotations

import json
import logging

from shared.errors import DependencyUnavailable
from shared.login import SsoService
from tests.unit.test_logout import Deps


class VaultDown(Deps):
    def signer(self):
        raise DependencyUnavailable("key_vault", "reading 'session-signing-key': ServiceRequestError")


def test_a_jwks_failure_is_a_json_503_whose_correlation_id_a_log_line_holds(caplog):
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        reply = SsoService(VaultDown()).session_jwks("cid-jwks-1")
    assert (reply.status, reply.content_type) == (503, "application/json")
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["Retry-After"] == "30"
    body = json.loads(reply.body)
    assert body == {"error": "key_vault_unavailable", "error_description": body["error_description"],
                    "correlation_id": "cid-jwks-1"}
    assert "ServiceRequestError" not in reply.body, "the detail goes to the log, not to the client"
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sso.jwks ")]
    assert line.startswith("sso.jwks outcome=failure reason=key_vault_unavailable status=503 "), line
    assert "correlation_id=cid-jwks-1 " in line and "ServiceRequestError" in line and "kind" not in line


def test_a_bug_behind_the_jwks_is_a_json_500_logged_with_its_traceback(caplog):
    class Broken(Deps):
        def signer(self):
            raise RuntimeError("bug")

    with caplog.at_level(logging.INFO, logger="portal_sso"):
        reply = SsoService(Broken()).session_jwks("cid-jwks-2")
    assert (reply.status, reply.content_type) == (500, "application/json")
    assert json.loads(reply.body)["correlation_id"] == "cid-jwks-2" and "bug" not in reply.body
    assert any(r.exc_info and "cid-jwks-2" in r.getMessage() for r in caplog.records)
    assert any(r.getMessage().startswith("sso.jwks ") and "cid-jwks-2" in r.getMessage() for r in caplog.records)
