"""What a SCIM User means for the portal (shared/scim/mapping.py): plain functions, no services."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.scim import mapping

TENANT = "3f0c9a52-6d1e-4b7a-9c2f-8e5d41a7b0c6"
OID = "0C1F6B0E-2B8E-4F5A-9D51-7A3E1F2C9B01"


@pytest.mark.parametrize("bad", ["", "no-at", "@x.test", "a@", "a b@x.test", "a@b@c", "a\u00a0@x.test",
                                 "a\u200b@x.test", "Cafe\u0301@x.test", "a\ud800@x.test", "a\n@x.test",
                                 "e" * 250 + "@x.test", "/" * 200 + "@x.test"])
def test_email_key_refuses_what_the_spec_refuses(bad):
    with pytest.raises(mapping.MappingError):
        mapping.email_key(bad)


def test_email_key_encodes_what_table_keys_forbid():
    assert mapping.email_key("A/b#c?d%e@X.test") == "a%2Fb%23c%3Fd%25e@x.test"


def test_user_name_keys_fold_ascii_case_only():
    assert mapping.user_name_key("Ann@Contoso.TEST") == mapping.user_name_key("ann@contoso.test")
    assert mapping.user_name_key("stra\u00dfe") != mapping.user_name_key("strasse")
    assert mapping.user_name_key("\u212aelvin") != mapping.user_name_key("kelvin"), "the Kelvin sign is not k"


def test_user_name_and_external_id_keys_over_table_storages_limit_are_refused():
    """A key holds 512 UTF-16 units; '/' takes three in it, so 256 characters can make 768."""
    at_limit, over = "/" * 170 + "ab", "/" * 170 + "abc"  # 512 and 513 units
    assert len(mapping.user_name_key(at_limit)) == len(mapping.external_id_key(at_limit)) == 512
    for key_of, attribute in ((mapping.user_name_key, "userName"), (mapping.external_id_key, "externalId")):
        with pytest.raises(mapping.MappingError, match=f"^{attribute}: .*512"):
            key_of(over)
    assert mapping.user_name_key("Ann@X") == mapping.user_name_key("ann@x") and mapping.external_id_key("A") == "A"


def test_the_chosen_email_is_work_else_primary_else_first():
    home, work, other = ({"type": "home", "value": "h@x"}, {"type": "work", "value": "w@x"},
                         {"type": "other", "value": "o@x", "primary": True})
    assert mapping.chosen_email([home, other, work]) == "w@x"
    assert mapping.chosen_email([home, other]) == "o@x"
    assert mapping.chosen_email([home, {"type": "other", "value": "z@x"}]) == "h@x"
    assert mapping.chosen_email([]) is None


def test_of_two_work_emails_the_primary_one_is_chosen():
    """An Add of a new primary work email to a person with one leaves both (the library marks the old
    one primary: false); the first work one was chosen, so the account stayed at the old mailbox."""
    old, new = {"type": "work", "value": "old@x", "primary": False}, {"type": "Work", "value": "new@x", "primary": True}
    assert mapping.chosen_email([old, new]) == "new@x"
    assert mapping.chosen_email([new, old]) == "new@x"
    assert mapping.chosen_email([{"type": "home", "value": "h@x", "primary": True}, old, new]) == "new@x"
    assert mapping.chosen_email([{"type": "home", "value": "h@x", "primary": True}, old]) == "old@x", \
        "work still comes before another type's primary"
    assert mapping.chosen_email([old, {"type": "work", "primary": True}]) == "old@x", "an entry without a value is none"


def test_kinds_from_roles_plain_or_as_a_json_string_and_the_default():
    plain = [{"value": "Portal.Agent"}, {"value": "Other.Role"}]
    assert mapping.kinds_of(plain, None) == ("agent",)
    complex_ = [{"value": '{"id":"1","value":"Portal.User","displayName":"User"}'}, {"value": "portal.agent"}]
    assert mapping.kinds_of(complex_, None) == ("user", "agent")
    assert mapping.kinds_of([{"value": "Other.Role"}], "user") == ("user",)
    assert mapping.kinds_of([], None) == ()
    assert not mapping.has_portal_role([{"value": "{not json"}])


@dataclass
class FakeSettings:
    issuer_base: str
    allowed_tenant_ids: frozenset | None
    multi_tenant: bool


def test_link_tenant_is_the_issuers_or_the_only_allowed_one():
    single = FakeSettings(f"https://login.microsoftonline.com/{TENANT}/v2.0", frozenset({TENANT}), False)
    assert mapping.link_tenant(single) == TENANT
    one = FakeSettings("https://login.microsoftonline.com/organizations/v2.0", frozenset({TENANT}), True)
    assert mapping.link_tenant(one) == TENANT
    several = FakeSettings("https://login.microsoftonline.com/common/v2.0", frozenset({TENANT, "x"}), True)
    assert mapping.link_tenant(several) is None
    assert mapping.link_of(OID, TENANT) == f"{TENANT}:{OID.lower()}"
    assert mapping.link_of("not-a-guid", TENANT) is None and mapping.link_of(OID, None) is None
