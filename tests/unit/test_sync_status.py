"""The setup page's directory sync section (shared/scim/status.py) when reading its state fails in a way
no SsoError names: the section says so with a correlation id that a log line holds, and the page stays up."""

from __future__ import annotations

import logging
import re

from shared.scim.status import setup_section


class Runtime:
    env = {"SCIM_TOKEN": "t" * 40, "PUBLIC_BASE_URL": "https://sso.test"}

    @property
    def tables(self):
        raise ValueError("Connection string is either blank or malformed.")


def test_an_unexpected_error_reading_the_sync_state_is_shown_with_a_logged_correlation_id(caplog):
    with caplog.at_level(logging.ERROR):
        html = setup_section(Runtime(), "cid-setup-1")
    assert "<h2>Directory sync (SCIM)</h2>" in html and "unexpected error (ValueError)" in html
    assert "cid-setup-1" in html and "malformed" not in html, "the type and the id, not the exception's text"
    logged = [r for r in caplog.records if "correlation_id=cid-setup-1" in r.getMessage()]
    assert logged and logged[0].exc_info, "the traceback is in the log, under the id the page shows"


def test_without_a_request_id_the_page_and_the_log_share_a_fresh_one(caplog):
    with caplog.at_level(logging.ERROR):
        html = setup_section(Runtime())
    shown = re.search(r"correlation id ([0-9a-f-]{36})", html)
    assert shown, html
    assert any(f"correlation_id={shown.group(1)}" in r.getMessage() for r in caplog.records)
