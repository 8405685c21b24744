"""Issue 13 items 1 and 5 at login, through the real stack (tools.host, MSAL, Azurite) and the hostile
IdP: an address that casefold() or NFKC would merge with an account's address never signs in to that
account (it finds no account, or is refused as malformed), and the account's owner still gets in
afterwards; an `Enabled` that is not a real boolean keeps the person out."""

from __future__ import annotations

import uuid

import pytest
from azure.data.tables import UpdateMode

from tests.conftest import APP_BASE
from tests.support.hostile_flow import PORTAL_ORIGIN, Person, assert_signed_in, sign_in, switch_to
from tests.support.portal import assert_error_page, verify_session_token


@pytest.fixture
def app(hostile, use_settings):
    hostile.reset()
    return switch_to(hostile, use_settings)


# (what the attacker's IdP says, the victim's address); {t} is a per-test tag.
LOOKALIKES = [
    pytest.param("stra\u00dfe-{t}@contoso.test", "strasse-{t}@contoso.test", "no_account", id="sharp-s"),
    pytest.param("\u212aim-{t}@contoso.test", "kim-{t}@contoso.test", "email_malformed", id="kelvin-sign"),
    pytest.param("jame\u017f-{t}@contoso.test", "james-{t}@contoso.test", "no_account", id="long-s"),
    pytest.param("o\ufb03ce-{t}@contoso.test", "office-{t}@contoso.test", "no_account", id="ffi-ligature"),
    pytest.param("ann-{t}@fa\u00df.de", "ann-{t}@fass.de", "no_account", id="idna2008-domain"),
    pytest.param("kim-{t}@contoso.test\u00a0", "kim-{t}@contoso.test", "email_malformed", id="trailing-nbsp"),
    pytest.param("\u3000kim-{t}@contoso.test", "kim-{t}@contoso.test", "email_malformed", id="leading-u3000"),
    pytest.param("kim-{t}\u200b@contoso.test", "kim-{t}@contoso.test", "email_malformed", id="zero-width-space"),
    pytest.param("kim-{t}@contoso.test\ud800", "kim-{t}@contoso.test", "email_malformed", id="lone-surrogate"),
]


@pytest.mark.parametrize(("presented", "victim", "reason"), LOOKALIKES)
def test_a_lookalike_address_never_takes_an_unlinked_account(hostile, app, account_store, presented, victim,
                                                             reason):
    tag = uuid.uuid4().hex[:10]
    owner = Person(email=victim.format(t=tag), oid=str(uuid.uuid4()), account_id=f"V-{tag}")
    account_store.add(owner.email, "user", owner.account_id, "Victim")  # unlinked: as after an import

    attacker = {**owner.claims, "email": presented.format(t=tag), "oid": str(uuid.uuid4()), "name": "Attacker"}
    hostile.answer(claims=attacker)
    row = assert_error_page(sign_in(hostile), 403, app, reason)
    assert row.get("AccountId", "") == "", "the refusal names no account: none was found"
    assert account_store.get(owner.email, "user").linked_idp_subject is None, "the account is still unlinked"

    hostile.answer(claims=owner.claims)
    assert_signed_in(sign_in(hostile), owner)  # the owner is not locked out


def test_an_address_whose_key_is_too_long_for_table_storage_is_403_malformed_not_503(hostile, app):
    """'/' takes three characters in the key: 200 of them (a 206-character address) make a key longer
    than Table Storage keeps. The login used to look it up anyway (Azurite's read said 404: no_account);
    it is refused like every address the email-key rule refuses."""
    person = Person(email=f"{'/' * 200}{uuid.uuid4().hex[:10]}@contoso.test", oid=str(uuid.uuid4()), account_id="-")
    hostile.answer(claims=person.claims)
    assert_error_page(sign_in(hostile), 403, app, "email_malformed")


def test_ascii_case_still_finds_the_account(hostile, app, account_store):
    tag = uuid.uuid4().hex[:10]
    owner = Person(email=f"ann.lee-{tag}@contoso.test", oid=str(uuid.uuid4()), account_id=f"C-{tag}")
    account_store.add(owner.email, "user", owner.account_id, "Ann")
    hostile.answer(claims={**owner.claims, "email": f"Ann.Lee-{tag.upper()}@Contoso.TEST"})
    fields = assert_signed_in(sign_in(hostile), owner)
    claims = verify_session_token(fields["session_token"], APP_BASE, audience=PORTAL_ORIGIN)
    assert claims["email"] == owner.email, "the session token carries the address with ASCII lowercased"


@pytest.mark.parametrize("stored", ["false", 0, "0"], ids=repr)
def test_an_enabled_stored_as_text_or_a_number_keeps_the_person_out(hostile, app, account_store, stored):
    tag = uuid.uuid4().hex[:10]
    owner = Person(email=f"az-merge-{tag}@contoso.test", oid=str(uuid.uuid4()), account_id=f"E-{tag}")
    account_store.add(owner.email, "user", owner.account_id, "Disabled by az")
    account_store._table.update_entity({"PartitionKey": owner.email, "RowKey": "user", "Enabled": stored},
                                       mode=UpdateMode.MERGE)  # what `az storage entity merge Enabled=false` does
    hostile.answer(claims=owner.claims)
    row = assert_error_page(sign_in(hostile), 403, app, "account_disabled")
    assert row["AccountId"] == owner.account_id


@pytest.mark.parametrize("stored_id", [
    pytest.param("U-1\nsso.callback kind=agent outcome=success account_id=ADMIN", id="newline"),
    pytest.param("U-1\u202eNIMDA", id="right-to-left-override"),
    pytest.param("U-" + "9" * 400, id="over-255-characters"),
    pytest.param("U-1 ", id="trailing-space"),
])
def test_a_stored_account_id_add_refuses_never_becomes_a_session_tokens_sub(hostile, app, account_store, stored_id):
    """A row another tool wrote (Storage Explorer, `az storage entity insert`) with an AccountId that `add`
    and `import` refuse: it would be the session token's `sub` (a newline a forged line in the portal's
    log, over 255 characters past OpenID's limit). It was signed in to as it was; now it is no account
    (403 no_account, the row's AccountId empty, the log line escaped) and `check` lists it."""
    tag = uuid.uuid4().hex[:12]
    email = f"raw-{tag}@contoso.test"
    account_store._table.create_entity({"PartitionKey": email, "RowKey": "user", "Email": email,
                                        "AccountId": stored_id, "DisplayName": "Raw Row", "Enabled": True})
    hostile.answer(claims={"email": email, "oid": str(uuid.uuid4()), "name": "Raw Row", "preferred_username": email})
    row = assert_error_page(sign_in(hostile), 403, app, "no_account")
    assert row["Email"] == email and not row.get("AccountId"), row
    assert not account_store.get(email, "user").linked_idp_subject, "a refused row is never linked"
    problems = [(problem, what) for account, problem, what in account_store.key_problems() if account.key == email]
    assert [problem for problem, _ in problems] == ["bad-id"], problems
    assert "\n" not in problems[0][1] and "\u202e" not in problems[0][1], problems
