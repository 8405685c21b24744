"""Plain-language fixes for Entra's AADSTS errors (shared/aadsts.py), found in error descriptions
and in error_codes lists."""

from __future__ import annotations

import pytest

from shared.aadsts import HINTS, aadsts_codes, hint_for

KNOWN = [50011, 50105, 65001, 700016, 7000215, 7000222, 90102, 90094, 700027, 7000112, 500011]


@pytest.mark.parametrize("code", KNOWN)
def test_hint_is_found_in_an_error_description(code):
    description = (f"AADSTS{code}: The redirect URI 'https://x.test/cb' specified in the request does not match. "
                   "Trace ID: 0f1e Correlation ID: 2d3c Timestamp: 2024-01-01 00:00:00Z")
    hint = hint_for(description)
    assert hint == f"AADSTS{code}: {HINTS[code]}", f"AADSTS{code} in a description gives its fix"


@pytest.mark.parametrize("code", KNOWN)
def test_hint_is_found_in_an_error_codes_list(code):
    assert hint_for([code], None) == f"AADSTS{code}: {HINTS[code]}", f"error_codes [{code}] gives its fix"


def test_hint_is_found_when_description_and_codes_come_together():
    assert hint_for([7000222], "AADSTS7000222: The provided client secret keys are expired.").startswith(
        "AADSTS7000222:"), "the token endpoint's error_codes and description agree on the fix"


@pytest.mark.parametrize("texts", [
    ("AADSTS99999: something nobody wrote a hint for",),
    ([99999],),
    ("no code here",),
    ("",),
    (None,),
    ([],),
    ("AADSTS500113: No reply address is registered for the application.",),  # not 50011
    ("AADSTS5001: too short to be a code",),
], ids=repr)
def test_unknown_or_absent_code_gives_no_hint(texts):
    assert hint_for(*texts) is None, f"no hint for {texts!r}: a wrong fix is worse than none"


def test_first_known_code_wins_and_codes_are_deduplicated():
    codes = aadsts_codes([99999, 50011], "AADSTS50011: x AADSTS65001: y")
    assert codes == [99999, 50011, 65001], "codes are collected in order, each once"
    assert hint_for([99999, 50011], "AADSTS65001: y").startswith("AADSTS50011:"), "the first known code's fix"
