"""The login's one log line (shared/login.py `_log_attempt`, issue 13 item 13): a route segment or an
IdP's text can neither put a field before the real ones nor break a value out of its quotes."""

from __future__ import annotations

import logging
import re

import pytest

from shared.audit import SignInEvent
from shared.login import _log_attempt

# name=value where value is bare (no space, quote or '=') or "quoted" with \\ and \" escapes.
TOKEN = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "=]*)(?: |$)')


def logged(caplog, **event) -> tuple[str, list[tuple[str, str]]]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="portal_sso"):
        _log_attempt(SignInEvent(**{"correlation_id": "cid-1", "kind": "user", "outcome": "failure",
                                    "reason": "not_found", "status": 404, **event}))
    (record,) = caplog.records
    line = record.getMessage()
    _, _, rest = line.partition(" ")
    fields, at = [], 0
    while at < len(rest):
        match = TOKEN.match(rest, at)
        assert match, f"not a name=value line at {rest[at:]!r}: {line!r}"
        fields.append((match[1], match[2]))
        at = match.end()
    return line, fields


@pytest.mark.parametrize("kind", [
    "x\n... kind=user outcome=success",
    "x kind=user outcome=success",
    'x" kind=user outcome=success "',
    'x\\" kind=user outcome=success',
    "x=user",
    "",
])  # fmt: skip
def test_an_unchecked_kind_goes_last_quoted_and_forges_no_field(caplog, kind):
    line, fields = logged(caplog, kind=kind)
    names = [name for name, _ in fields]
    assert "\n" not in line
    assert "kind" not in names, f"an unchecked kind is no `kind` field: {line!r}"
    assert names == ["outcome", "reason", "status", "elapsed_ms", "correlation_id", "raw_kind"], line
    assert dict(fields)["outcome"] == "failure"
    assert fields[-1][1].startswith('"'), "the raw value is quoted"
    assert caplog.records[0].kind == "" and caplog.records[0].raw_kind == kind, "extra fields: checked and raw"


def test_a_checked_kind_is_the_first_field_and_a_detail_with_spaces_is_quoted(caplog):
    line, fields = logged(caplog, kind="agent", detail='IdP error x kind=user "outcome=success" \\ \n end')
    assert line.startswith("sso.callback kind=agent outcome=failure reason=not_found status=404 ")
    assert [name for name, _ in fields][-1] == "detail" and fields[-1][1].startswith('"')
    assert "\n" not in line and "\\n end" in line, "a newline is escaped, visibly"
