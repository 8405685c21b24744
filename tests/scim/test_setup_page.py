"""The setup page's directory sync section (shared/scim/status.py), through the real host."""

from __future__ import annotations

import html
import re

import pytest
import requests

from tests.conftest import APP_BASE
from tests.scim import entra
from tests.scim.conftest import TOKEN, oid, unique


def section() -> str:
    page = requests.get(f"{APP_BASE}/api/sso/setup", timeout=20).text
    found = re.search(r"<h2>Directory sync \(SCIM\)</h2><table>.*?</table>", page, flags=re.S)
    assert found, "the setup page has a directory sync section"
    return found.group(0)


def test_on_shows_the_tenant_url_the_last_request_the_counts_and_who_has_no_role(scim):
    with_role = unique("role")
    scim.post("/Users", entra.create_user(f"{with_role}@contoso.test", f"{with_role}@contoso.test", oid()))
    no_role = unique("norole")
    scim.post("/Users", entra.create_user(f"{no_role}@contoso.test", f"{no_role}@contoso.test", oid(), kinds=()))
    text = section()
    assert '<span class="st ok">on</span>' in text and "token from SCIM_TOKEN" in text
    assert f'<code class="copy">{APP_BASE}/api/scim/v2</code>' in text
    assert "POST /Users &rarr; 201 ok" in text
    people = int(re.search(r"(\d+) people, (\d+) provisioned accounts", text).group(1))
    assert people >= 2
    assert f"<code>{no_role}@contoso.test</code>" in text and f"{with_role}@contoso.test" not in text
    assert TOKEN not in text


def test_off_and_a_setting_error_say_so_without_the_token(use_settings):
    use_settings(SCIM_TOKEN=None)
    assert '<span class="st warn">off</span>' in section()
    assert "Key Vault secret <code>scim-token</code>" in section()
    use_settings(SCIM_TOKEN=None, SCIM_TOKEN_NAME="portal-scim")  # the secret register-app would then write
    assert "Key Vault secret <code>portal-scim</code>" in section()
    short = "<short" + "x" * 10
    use_settings(SCIM_TOKEN=short)
    text = section()
    assert '<span class="st fail">setting error</span>' in text and "SCIM_TOKEN" in text
    assert short not in text and html.escape(short) not in text


def summary_problems(page: str) -> int:
    """The problem count of the setup page's summary line (0 when it is not red)."""
    level, text = re.search(r'<p class="summary (\w+)">([^<]*)', page).groups()
    return int(text.split()[0]) if level == "fail" else 0


@pytest.mark.parametrize("changes", [{"SCIM_TOKEN": "short"}, {"SCIM_TOKEN": TOKEN, "SCIM_DEFAULT_KIND": "users"}],
                         ids=["short-token", "bad-default-kind"])
def test_a_directory_sync_setting_error_is_a_problem_in_the_summary(use_settings, changes):
    """SPEC: a short token is a setting error, the setup page red (the SCIM routes answer 503): the
    summary must not say all is working while the section says "setting error"."""
    use_settings(SCIM_TOKEN=TOKEN)
    page = requests.get(f"{APP_BASE}/api/sso/setup", timeout=20).text
    before = summary_problems(page)
    use_settings(**changes)
    page = requests.get(f"{APP_BASE}/api/sso/setup", timeout=20).text
    assert '<span class="st fail">setting error</span>' in page
    assert summary_problems(page) == before + 1, re.search(r'<p class="summary.*?</p>', page).group(0)
    assert "Everything checked is working" not in page
    use_settings(SCIM_TOKEN=None)  # off is a choice, not a problem
    assert summary_problems(requests.get(f"{APP_BASE}/api/sso/setup", timeout=20).text) == before


def settings_row(page: str, name: str) -> str:
    """The Settings section's row of one setting."""
    found = re.search(rf"<tr>(?:(?!</tr>).)*<th>{name}</th>.*?</tr>", page)
    assert found, f"no Settings row {name}"
    return found.group(0)


@pytest.mark.parametrize("in_vault, changes, setting", [
    (False, {"SCIM_TOKEN": TOKEN, "SCIM_DEFAULT_KIND": "admin"}, "SCIM_DEFAULT_KIND"),
    (False, {"SCIM_TOKEN": "short"}, "SCIM_TOKEN"),
    (True, {"SCIM_TOKEN": TOKEN}, "SCIM_TOKEN"),
    (True, {"SCIM_TOKEN_NAME": "scim_token"}, "SCIM_TOKEN_NAME"),
    (True, {"SCIM_TOKEN": TOKEN, "SCIM_TOKEN_NAME": "scim_token", "SCIM_DEFAULT_KIND": "admin"},
     ("SCIM_TOKEN", "SCIM_TOKEN_NAME", "SCIM_DEFAULT_KIND")),
], ids=["bad-default-kind", "short-token", "token-beside-the-vault", "bad-secret-name", "all-three"])
def test_a_directory_sync_setting_error_makes_its_settings_row_red(vault_app, use_settings, in_vault, changes,
                                                                   setting):
    """The section says "setting error"; the setting's own row under Settings must not say OK."""
    (vault_app if in_vault else use_settings)(**changes)
    page = requests.get(f"{APP_BASE}/api/sso/setup", timeout=20).text
    assert '<span class="st fail">setting error</span>' in page
    for name in (setting,) if isinstance(setting, str) else setting:
        row = settings_row(page, name)
        assert 'class="st fail"' in row and "<strong>" in row, row
    assert TOKEN not in page


PASTED_TOKEN = "6646216a681620f929c195e564b52df00075cfd92d3c7be1cbdf685b1c391b79"  # secrets.token_hex(32)


@pytest.mark.parametrize("in_vault", [True, False], ids=["with-the-vault", "local"])
def test_a_token_pasted_into_scim_token_name_is_named_never_shown(vault_app, use_settings, in_vault):
    """A token_hex (or a token_urlsafe without '_') is a name Key Vault allows: it is taken for what it
    most likely is, the token, and never shown nor sent to the vault as a secret's name (a URL path)."""
    (vault_app if in_vault else use_settings)(SCIM_TOKEN=None, SCIM_TOKEN_NAME=PASTED_TOKEN)
    page = requests.get(f"{APP_BASE}/api/sso/setup", timeout=20).text
    health = requests.get(f"{APP_BASE}/api/health", timeout=20).text
    assert PASTED_TOKEN not in page and PASTED_TOKEN not in health
    assert "value hidden" in settings_row(page, "SCIM_TOKEN_NAME")
    if in_vault:
        assert '<span class="st fail">setting error</span>' in section() and "SCIM_TOKEN_NAME" in section()
        assert 'class="st fail"' in settings_row(page, "SCIM_TOKEN_NAME")


def test_tools_accounts_list_marks_provisioned_accounts(scim, azurite, capsys, tmp_path):
    from tools import accounts

    by_hand = f"{unique('hand')}@contoso.test"
    scim.runtime.accounts.add(by_hand, "user", "U-HAND-1")
    synced = unique("synced")
    scim.post("/Users", entra.create_user(f"{synced}@contoso.test", f"{synced}@contoso.test", oid()))
    assert accounts.main(["list", "--kind", "user"], environ={"TABLES_CONNECTION_STRING": azurite.connection_string},
                         app_dir=tmp_path) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("email"))
    at = header.index("provisioned")  # format_table aligns its columns
    cells = {line.split()[0]: line[at:].split()[0] for line in out.splitlines() if "@contoso.test" in line}
    assert cells[by_hand] == "no" and cells[f"{synced}@contoso.test"] == "yes"
