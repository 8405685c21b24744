"""The directory sync token from Key Vault (the stub, read by the real SecretClient through the real
DefaultAzureCredential): two tokens one per line, both accepted; a rotation reaches the app without a
restart; no secret means directory sync is off; SCIM_TOKEN beside KEY_VAULT_URL is a setting error."""

from __future__ import annotations

import re

import pytest

from shared.scim import auth
from tests.scim.conftest import TOKEN, Scim

pytestmark = pytest.mark.usefixtures("loopback_only")
NEW, OLD, NEWER = "N" * 40, "O" * 40, "W" * 44


def test_the_key_vault_secret_holds_two_tokens_both_accepted(stub, vault_app):
    stub.set_secret("scim-token", f"{NEW}\n{OLD}")
    scim = Scim(vault_app(SCIM_TOKEN=None))
    for token in (NEW, OLD):
        assert scim.get("/Users", token=token).status_code == 200
    assert stub.reads("scim-token") == 1, "read once, then cached"
    for _ in range(5):
        assert scim.get("/Users", token=NEWER).status_code == 401
    assert stub.reads("scim-token") == 2, "wrong tokens re-read the secret at most once per REREAD_SECONDS"


def test_a_rotated_token_is_accepted_without_a_restart(stub, vault_app, monkeypatch):
    monkeypatch.setattr(auth, "REREAD_SECONDS", 0.0)
    stub.set_secret("scim-token", OLD)
    scim = Scim(vault_app(SCIM_TOKEN=None))
    assert scim.get("/Users", token=OLD).status_code == 200
    stub.set_secret("scim-token", f"{NEWER}\n{OLD}")  # rotate-token: the new one first, the old kept
    assert scim.get("/Users", token=NEWER).status_code == 200, "a token matching none re-reads the secret"
    assert scim.get("/Users", token=OLD).status_code == 200
    assert stub.reads("scim-token") == 2


def test_a_named_secret_is_read_and_a_missing_one_means_off(stub, vault_app):
    stub.set_secret("portal-scim", NEW)
    assert Scim(vault_app(SCIM_TOKEN=None, SCIM_TOKEN_NAME="portal-scim")).get("/Users", token=NEW).status_code == 200
    off = Scim(vault_app(SCIM_TOKEN=None, SCIM_TOKEN_NAME="no-such-secret"))
    assert off.get("/Users", token=NEW).status_code == 404


def test_scim_token_beside_key_vault_is_a_setting_error(stub, vault_app):
    stub.set_secret("scim-token", NEW)
    response = Scim(vault_app(SCIM_TOKEN=NEW)).get("/Users", token=NEW)
    assert response.status_code == 503 and "SCIM_TOKEN" in response.json()["detail"]
    assert NEW not in response.text


@pytest.mark.parametrize("value", ["", " \n \t\n"])
def test_an_empty_or_blank_secret_is_a_setting_error_not_off(stub, vault_app, value):
    stub.set_secret("scim-token", value)
    response = Scim(vault_app(SCIM_TOKEN=None)).get("/Users", token=NEW)
    assert response.status_code == 503, "the secret exists: sync is on and misconfigured, not off (404)"
    assert "SCIM_TOKEN_NAME" in response.json()["detail"]
    status = auth.read_config(vault_app(SCIM_TOKEN=None))
    assert status.on and [str(p) for p in status.problems] == \
        ["SCIM_TOKEN_NAME: Key Vault secret 'scim-token' is empty."]


@pytest.mark.parametrize(("raw", "source", "said"), [
    ("short", "SCIM_TOKEN", "SCIM_TOKEN: token on line 1 is shorter than"),
    ("", "SCIM_TOKEN", "SCIM_TOKEN: is empty."),
    ("short", "Key Vault secret 'scim-token'", "SCIM_TOKEN_NAME: Key Vault secret 'scim-token': token on line 1"),
])
def test_a_token_problem_names_its_setting_once_and_the_secret_when_it_is_another(raw, source, said):
    """The setup page said "SCIM_TOKEN: SCIM_TOKEN: token on line 1 is shorter ..."."""
    _, (problem,) = auth.parse_tokens(raw, source)
    assert str(problem).startswith(said), str(problem)


def test_a_403_for_the_default_secret_no_one_set_up_means_off_and_for_a_named_one_an_error(stub, vault_app):
    """Key Vault's RBAC answers 403 for a secret the app holds no role on, whether or not it exists, and
    scripts/deploy grants roles per secret: before register-app provisioning, the default secret is
    that 403, and sync is off (404), not misconfigured."""
    stub.fail_next(1, status=403)
    assert Scim(vault_app(SCIM_TOKEN=None)).get("/Users", token=NEW).status_code == 404
    for name in ("portal-scim", "scim-token"):  # the default name set explicitly (register-app, README) is named
        stub.fail_next(1, status=403)
        named = Scim(vault_app(SCIM_TOKEN=None, SCIM_TOKEN_NAME=name)).get("/Users", token=NEW)
        assert named.status_code == 503 and "SCIM_TOKEN_NAME" in named.json()["detail"], f"named: {name}"


def test_a_secret_name_key_vault_refuses_is_a_setting_error_naming_it(stub, vault_app):
    response = Scim(vault_app(SCIM_TOKEN=None, SCIM_TOKEN_NAME="scim_token")).get("/Users", token=NEW)
    assert response.status_code == 503 and "SCIM_TOKEN_NAME" in response.json()["detail"]
    assert stub.reads("scim_token") == 0, "not asked for: Key Vault would answer a 400"



def test_key_vault_down_after_the_token_was_read_is_unreachable_on_the_setup_page_not_a_setting_error(
        stub, vault_app):
    """Entra's requests go on with the token read (RELIABILITY.md); the setup page said "setting error",
    counted it as a problem, and dropped the section's table rows although Table Storage was up."""
    from tests.scim.test_setup_page import section

    stub.set_secret("scim-token", TOKEN)
    scim = Scim(vault_app(SCIM_TOKEN=None, SCIM_TOKEN_NAME="scim-token"), token=TOKEN)
    assert scim.get("/Users").status_code == 200
    stub.answer_raw((200, "text/html", "<html>gateway</html>"))
    shown = section()
    assert "setting error" not in shown and "Key Vault unreachable" in shown, shown
    assert "People and accounts" in shown, "the rows Table Storage gives are still shown"
    assert scim.get("/Users").status_code == 200, "Entra's requests go on"


def test_a_sign_in_setting_problem_is_named_once_not_taken_for_directory_syncs(stub, vault_app):
    """With KEY_VAULT_URL, a bad PORTAL_AGENT_URL stopped the vault's reader being built, and the settings'
    problems came back as directory sync's: its row named the problem twice, SCIM's 503 said to fix it."""
    import requests

    from tests.conftest import APP_BASE

    stub.set_secret("scim-token", TOKEN)
    scim = Scim(vault_app(SCIM_TOKEN=None, PORTAL_AGENT_URL="http://bad.example"), token=TOKEN)
    page = requests.get(f"{APP_BASE}/api/sso/setup", timeout=20).text
    (row,) = re.findall(r"<tr>(?:(?!</tr>).)*<th>PORTAL_AGENT_URL</th>.*?</tr>", page)
    assert row.count("is not an https:// URL") == 1, row
    body = scim.get("/Users").json()
    assert "the app's settings have problems" in body["detail"] and "PORTAL_AGENT_URL" not in body["detail"], body
