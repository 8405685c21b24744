"""Who may enter (shared/admission.py) and its two settings: only JSON true verifies an email, and
with APP_ROLES_REQUIRED each door needs its kind's app role. Every odd JSON type fails closed."""

from __future__ import annotations

import pytest

from shared.admission import check_admission
from shared.config import load_settings
from shared.errors import EmailUnverified, NoEmailClaim, RoleNotAssigned, TenantNotAllowed
from tests.unit.test_config import TENANT, env, problems_of

ODD = ["0", "no", "", [], {}, 0, 1, "true", "TRUE", None, [True], 1.0]


def settings(**overrides):
    return load_settings(env(**overrides))


def claims(**extra):
    return {"tid": TENANT, "email": "ann@contoso.test", **extra}


@pytest.mark.parametrize("email", [None, "", "  ", 7, ["ann@contoso.test"]])
def test_a_token_without_an_email_is_no_email_claim_before_its_verification_is_asked(email):
    """Entra sends xms_edov only with the email claim: a token lacking both was email_unverified."""
    with pytest.raises(NoEmailClaim):
        check_admission({**claims(), "email": email}, "user", settings())
    with pytest.raises(TenantNotAllowed):  # the tenant first still
        check_admission({**claims(tid="00000000-0000-0000-0000-00000000beef"), "email": email}, "user",
                        settings())


def test_the_settings_default_to_verified_email_required_and_no_roles_required():
    s = settings()
    assert s.require_email_verified is True and s.app_roles_required is False


@pytest.mark.parametrize("raw", ["yes", "1", "tru", "on"])
def test_a_flag_that_is_not_true_or_false_is_named(raw):
    text = problems_of(env(REQUIRE_EMAIL_VERIFIED_CLAIM=raw, APP_ROLES_REQUIRED=raw))
    assert "REQUIRE_EMAIL_VERIFIED_CLAIM" in text and "APP_ROLES_REQUIRED" in text


@pytest.mark.parametrize("name", ["xms_edov", "email_verified"])
def test_json_true_in_either_claim_verifies(name):
    check_admission(claims(**{name: True}), "user", settings())


def test_neither_claim_is_refused_by_default_and_accepted_when_not_required():
    with pytest.raises(EmailUnverified):
        check_admission(claims(), "user", settings())
    check_admission(claims(), "user", settings(REQUIRE_EMAIL_VERIFIED_CLAIM="false"))


@pytest.mark.parametrize("required", ["true", "false"])
@pytest.mark.parametrize("name", ["xms_edov", "email_verified"])
@pytest.mark.parametrize("value", ODD, ids=repr)
def test_a_present_value_that_is_not_json_true_is_always_refused(required, name, value):
    other = "email_verified" if name == "xms_edov" else "xms_edov"
    for token in (claims(**{name: value}), claims(**{name: value, other: True})):
        with pytest.raises(EmailUnverified):
            check_admission(token, "user", settings(REQUIRE_EMAIL_VERIFIED_CLAIM=required))


@pytest.mark.parametrize(("kind", "role"), [("user", "Portal.User"), ("agent", "Portal.Agent")])
def test_each_door_needs_its_role_only_when_required(kind, role):
    other = "Portal.Agent" if role == "Portal.User" else "Portal.User"
    required = settings(APP_ROLES_REQUIRED="true")
    check_admission(claims(xms_edov=True, roles=[other, role]), kind, required)
    for roles in (None, [], [other], role, [role.lower()], [[role]], {role: True}, 7):
        token = claims(xms_edov=True, **({} if roles is None else {"roles": roles}))
        with pytest.raises(RoleNotAssigned) as caught:
            check_admission(token, kind, required)
        assert role in caught.value.message and "register-app" in caught.value.hint
        check_admission(token, kind, settings())  # not required: roles are not looked at


@pytest.mark.parametrize(("kind", "role", "sentence"), [
    ("user", "Portal.User", "as a user (the app role Portal.User"),
    ("agent", "Portal.Agent", "as an agent (the app role Portal.Agent"),
])
def test_the_role_page_names_its_kind_with_the_right_article(kind, role, sentence):
    # "user" starts with a vowel letter but a consonant sound: "as an user" was wrong English.
    with pytest.raises(RoleNotAssigned) as caught:
        check_admission(claims(xms_edov=True, roles=[]), kind, settings(APP_ROLES_REQUIRED="true"))
    assert caught.value.message == ("You are signed in, but you have not been given access to the portal "
                                    f"{sentence} is not assigned to you).")
