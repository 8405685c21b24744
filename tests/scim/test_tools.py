"""tools/scim_cycle.py (`make scim-demo`) against the app under test: each person appears with the
right accounts, the admin's changes land, and the second cycle only reads."""

from __future__ import annotations

import uuid

from tests.conftest import APP_BASE
from tests.scim.conftest import TOKEN
from tools import scim_cycle


def test_the_demo_cycle_provisions_changes_and_then_only_reads(scim, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SCIM_TOKEN", TOKEN)
    monkeypatch.setattr(scim_cycle, "ROOT", tmp_path)  # no .devstack CA here: the test CA is trusted
    people = scim_cycle.demo_people(uuid.uuid4().hex[:6])
    # The shared dev IdP's nobody@contoso.test must keep having no account (other tests rely on it).
    people[0] = scim_cycle.Person(f"nobody.{uuid.uuid4().hex[:6]}@contoso.test", str(uuid.uuid4()), ("agent",), "N P")
    monkeypatch.setattr(scim_cycle, "demo_people", lambda tag: people)
    assert scim_cycle.main(["--base", APP_BASE]) == 0
    out = capsys.readouterr().out
    assert "Test connection: 200" in out and out.count(" created") == 5
    nobody, ana, sam, bo, lee = people
    accounts = scim.runtime.accounts
    assert accounts.get(nobody.email, "agent").provisioned
    assert accounts.get(ana.email, "agent") is None
    assert accounts.get(ana.email.replace("ana.", "ana.lopez."), "agent").provisioned, "moved to the new email"
    assert accounts.get(sam.email, "user").enabled is False
    assert accounts.get(bo.email, "user") is None and accounts.get(bo.email, "agent") is not None
    assert accounts.get(lee.email, "agent") is None
    assert "4 requests, all reads" in out


def test_scim_demo_finds_the_app_where_make_run_last_served_it(monkeypatch, tmp_path):
    """`DEV_APP_PORT=7171 make run`, then `make scim-demo` from another shell: it went to 7071."""
    monkeypatch.setattr(scim_cycle, "ROOT", tmp_path)
    monkeypatch.delenv("DEV_APP_PORT", raising=False)
    assert scim_cycle.stack_base() == "https://127.0.0.1:7071", "no stack yet: the default port"
    (tmp_path / ".devstack").mkdir()
    (tmp_path / ".devstack" / "local.settings.json").write_text(
        '{"IsEncrypted": false, "Values": {"PUBLIC_BASE_URL": "https://127.0.0.1:7171/"}}')
    assert scim_cycle.stack_base() == "https://127.0.0.1:7171"
    monkeypatch.setenv("DEV_APP_PORT", "7272")
    assert scim_cycle.stack_base() == "https://127.0.0.1:7272", "this shell's DEV_APP_PORT wins"
