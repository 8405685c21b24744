"""scripts/deploy and scripts/register-app against a fake az that records every call and answers like
the real CLI: the sequence and role scopes, idempotency (a second run creates and changes nothing),
--dry-run runs nothing, no secret value in any argument list or output, and bad input (az missing or
signed out, a taken name, a vault without RBAC, a missing permission) gets a clear message."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.deploy.fake_az import SECRET
from tests.deploy.fake_azure import APP_ARGS, DEPLOY_ARGS, FakeAzure
from tools.deploy import names

N = names("contoso-sso")


@pytest.fixture
def azure(tmp_path) -> FakeAzure:
    return FakeAzure(tmp_path)


def index_of(commands: list[str], fragment: str) -> int:
    return next(i for i, c in enumerate(commands) if fragment in c)


def test_deploy_creates_everything_in_order_with_scoped_roles_and_no_storage_key(azure):
    result = azure.run("deploy", *DEPLOY_ARGS)
    assert result.code == 0, result.err
    made = result.commands
    order = ["group create", "storage account create", "tableServices/default/tables/PortalAccounts",
             "keyvault create", "workspace create", "Microsoft.Insights/components", "functionapp create",
             "role assignment create", "appsettings set", "keyvault secret set", "config-zip"]
    positions = [index_of(made, step) for step in order]
    assert positions == sorted(positions), f"steps in order: {list(zip(order, positions, strict=True))}"
    storage = next(c for c in made if "storage account create" in c)
    assert "--allow-shared-key-access false" in storage, "shared-key access is off"
    assert "--flexconsumption-location westeurope" in next(c for c in made if "functionapp create" in c)
    roles = {(r[1], r[2].rsplit("/", 1)[-1]) for r in azure.state["roles"] if r[0] == "contoso-sso-principal"}
    tables = {("Storage Table Data Contributor", t) for t in ("PortalAccounts", "SsoFlows", "SignInEvents",
                                                                     "ScimUsers", "DirectoryEvents")}
    assert roles == {("Storage Blob Data Owner", N["storage"]), ("Key Vault Secrets User", N["vault"]),
                     ("Monitoring Metrics Publisher", N["insights"]), *tables}, \
        "each role is scoped to the one resource that needs it"
    settings = azure.state["sites"]["contoso-sso"]["settings"]
    assert "AzureWebJobsStorage" not in settings and settings["AzureWebJobsStorage__accountName"] == N["storage"]
    assert not any("AccountKey" in v for v in settings.values()), "no storage key anywhere"
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    key = next(c for c in result.calls if "session-signing-key" in " ".join(c["argv"]) and "secret set" in
               " ".join(c["argv"]))
    assert key["file_mode"] == "0o600", "the signing key reaches az in a file only its owner can read"
    assert "BEGIN" not in result.out + result.err + " ".join(result.commands), "no key material printed or passed"
    assert "api/sso/user/callback" in result.out and "function keys list" in result.out


def test_a_second_deploy_changes_nothing_and_says_so(azure):
    first = azure.run("deploy", *DEPLOY_ARGS)
    assert first.code == 0 and len(first.mutations) > 20, "the first run makes everything"
    again = azure.run("deploy", *DEPLOY_ARGS)
    assert again.code == 0, again.err
    assert again.mutations == [], f"a second run creates or changes nothing: {again.mutations}"
    assert "Nothing to change" in again.out


def test_dry_run_prints_every_command_and_runs_none(azure):
    result = azure.run("deploy", *DEPLOY_ARGS, "--dry-run")
    assert result.code == 0, result.err
    assert result.calls == [], "a dry run runs no az command"
    assert result.out.count("would run: az ") >= 20 and "functionapp create" in result.out


def test_register_app_appends_a_secret_straight_into_key_vault_and_never_shows_it(azure):
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    result = azure.run("register-app", *APP_ARGS)
    assert result.code == 0, result.err
    everything = result.out + result.err + json.dumps(azure.all_calls)
    assert SECRET not in everything, "the client secret is in no argument list and no output"
    reset = next(c for c in result.commands if "credential reset" in c)
    assert "--append" in reset and "--end-date" in reset, "other secrets stay; the new one has an end date"
    stored = next(c for c in result.calls if "oidc-client-secret" in " ".join(c["argv"]) and "secret set" in
                  " ".join(c["argv"]))
    assert stored["file_sha256"] == hashlib.sha256(SECRET.encode()).hexdigest(), "Key Vault got exactly the secret"
    assert stored["file_mode"] == "0o600" and "--expires" in stored["argv"]
    (app,) = azure.state["apps"].values()
    assert sorted(app["web"]["redirectUris"]) == ["https://contoso-sso.azurewebsites.net/api/sso/agent/callback",
                                                  "https://contoso-sso.azurewebsites.net/api/sso/user/callback"]
    assert {c["name"] for c in app["optionalClaims"]["idToken"]} == {"email", "xms_edov"}
    assert azure.state["sps"][app["appId"]]["appRoleAssignmentRequired"] is True
    settings = azure.state["sites"]["contoso-sso"]["settings"]
    assert settings["OIDC_CLIENT_ID"] == app["appId"]
    assert settings["OIDC_ISSUER_URL"] == "https://login.microsoftonline.com/tenant-0000/v2.0/.well-known/openid-configuration"
    assert app["appId"] in result.out and "openid-configuration" in result.out
    again = azure.run("register-app", *APP_ARGS)
    assert again.code == 0 and again.mutations == [], f"a second run changes nothing: {again.mutations}"


def test_assign_lets_users_and_groups_in_once(azure):
    azure.run("deploy", *DEPLOY_ARGS)
    azure.run("register-app", *APP_ARGS)
    first = azure.run("register-app", *APP_ARGS, "assign", "--user", "ann@contoso.test", "--group", "Agents")
    assert first.code == 0, first.err
    assert len([c for c in first.commands if "--method POST" in c]) == 2
    again = azure.run("register-app", *APP_ARGS, "assign", "--user", "ann@contoso.test", "--group", "Agents")
    assert again.mutations == [], "already assigned: nothing to do"


def test_rotate_secret_appends_then_retires_the_old_one_after_the_grace_period(azure):
    azure.run("deploy", *DEPLOY_ARGS)
    azure.run("register-app", *APP_ARGS)
    rotated = azure.run("register-app", *APP_ARGS, "rotate-secret", "--grace-days", "7")
    assert rotated.code == 0, rotated.err
    (app,) = azure.state["apps"].values()
    assert len(app["credentials"]) == 2, "the old secret stays valid during the grace period"
    state = azure.state  # ten days pass
    for version in state["secrets"][f"{N['vault']}/oidc-client-secret"]:
        created = datetime.fromisoformat(version["attributes"]["created"]) - timedelta(days=10)
        version["attributes"]["created"] = created.isoformat()
    azure.state = state
    later = azure.run("register-app", *APP_ARGS, "rotate-secret", "--grace-days", "7")
    assert later.code == 0, later.err
    (app,) = azure.state["apps"].values()
    deleted = [c for c in later.commands if "credential delete" in c]
    assert len(deleted) == 1 and len(app["credentials"]) == 2, "the secret superseded 10 days ago went"
    current = azure.state["secrets"][f"{N['vault']}/oidc-client-secret"][-1]["tags"]["entraKeyId"]
    assert current in {c["keyId"] for c in app["credentials"]}, "the secret in Key Vault is still valid"
    assert SECRET not in later.out + later.err + json.dumps(azure.all_calls)


@pytest.mark.parametrize(("setup", "expected"), [
    ({"logged_in": False}, "az login"),
    ({"taken_names": [N["storage"]]}, "taken"),
    ({"vaults": {N["vault"]: {"id": "v", "properties": {"enableRbacAuthorization": False}}}}, "not RBAC"),
    ({"refuse": {"role assignment create": "(AuthorizationFailed) The client does not have authorization"}},
     "lacks a permission"),
], ids=["signed-out", "name-taken", "vault-without-rbac", "no-permission"])
def test_bad_input_fails_early_with_a_clear_message_and_says_what_was_done(azure, setup, expected):
    azure.state = setup
    result = azure.run("deploy", *DEPLOY_ARGS)
    assert result.code != 0
    assert expected in result.err, result.err
    assert "Traceback" not in result.err
    done = [c for c in result.commands if " create" in c]
    if done:
        assert "Already done before the failure" in result.err, "what was created is listed"
    else:
        assert "Nothing was created or changed" in result.err


def test_az_missing_is_a_clear_message(azure):
    result = azure.run("deploy", *DEPLOY_ARGS, path_has_az=False)
    assert result.code != 0 and "not installed" in result.err and "Traceback" not in result.err


def test_register_app_without_permission_for_app_registrations(azure):
    azure.run("deploy", *DEPLOY_ARGS)
    azure.state = {**azure.state, "refuse": {"ad app create": "Insufficient privileges to complete the operation."}}
    result = azure.run("register-app", *APP_ARGS)
    assert result.code != 0 and "Application Administrator" in result.err, result.err


def test_issued_secret_end_date_is_in_the_future(azure):
    azure.run("deploy", *DEPLOY_ARGS)
    azure.run("register-app", *APP_ARGS)
    (app,) = azure.state["apps"].values()
    end = datetime.fromisoformat(app["credentials"][0]["endDateTime"].replace("Z", "+00:00"))
    assert timedelta(days=150) < end - datetime.now(UTC) < timedelta(days=200)
