"""scripts/deploy against a fake az that records every call and answers like
the real CLI: the sequence and role scopes, idempotency (a second run creates and changes nothing),
--dry-run runs nothing, no secret value in any argument list or output, and bad input (az missing or
signed out, a taken name, a vault without RBAC, a missing permission) gets a clear message."""

from __future__ import annotations

import re
import subprocess

import pytest

from shared.tables import APP_TABLES
from tests.deploy.fake_az import CONNECTION_STRING, CREATED_CONNECTION_STRING
from tests.deploy.fake_azure import APP_ARGS, DEPLOY_ARGS, ROOT, FakeAzure
from tests.deploy.test_package import copy_without_git
from tests.deploy.test_register_app import sign_in_with_a_certificate
from tools.azure_cli import KEY_VAULT_REFUSED, ROLE_POLL_SECONDS, ROLE_WAIT_SECONDS, Az, AzError, explain, scope_name
from tools.deploy import CONTAINERS, deploy, names, parse_args

N = names("contoso-sso")
VAULT_DELETED = ("(ConflictError) A vault with the same name already exists in deleted state. You need to either "
                 "recover or purge existing key vault. Follow this link "
                 "https://go.microsoft.com/fwlink/?linkid=2149745 for more information on soft delete.")


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
    roles = {(r[1], scope_name(r[2])) for r in azure.state["roles"] if r[0] == "contoso-sso-principal"}
    tables = {("Storage Table Data Contributor", f"tables/{t}")
              for t in ("PortalAccounts", "SsoFlows", "SignInEvents", "ScimUsers", "DirectoryEvents")}
    containers = {("Storage Blob Data Owner", f"containers/{c}") for c in CONTAINERS}
    assert roles == {("Key Vault Secrets User", "secrets/session-signing-key"),
                     ("Monitoring Metrics Publisher", N["insights"]), *tables, *containers}, \
        "each role is scoped to the one container, table, secret or resource that needs it"
    settings = azure.state["sites"]["contoso-sso"]["settings"]
    assert "AzureWebJobsStorage" not in settings and settings["AzureWebJobsStorage__accountName"] == N["storage"]
    assert not any("AccountKey" in v for v in settings.values()), "no storage key anywhere"
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    key = next(c for c in result.calls if "session-signing-key" in " ".join(c["argv"]) and "secret set" in
               " ".join(c["argv"]))
    assert key["file_mode"] == "0o600", "the signing key reaches az in a file only its owner can read"
    assert "BEGIN" not in result.out + result.err + " ".join(result.commands), "no key material printed or passed"
    assert "api/sso/user/callback" in result.out and "function keys list" in result.out
    assert "aud https://portal.contoso.test" in result.out, "deploy prints the session token's iss and aud"


def test_the_app_is_https_only_with_tls_1_2_and_no_ftp_or_basic_publishing_credentials(azure):
    """Issue 13 item 11: a new function app takes HTTP, TLS 1.0, FTP and username/password publishing."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    site = azure.state["sites"]["contoso-sso"]
    assert site["httpsOnly"] is True, "HTTPS only"
    assert site["config"] == {"minTlsVersion": "1.2", "ftpsState": "Disabled"}, "TLS 1.2 minimum, FTP off"
    assert site["publishing"] == {"ftp": False, "scm": False}, "no basic publishing credentials for FTP or SCM"
    assert azure.state["vaults"][N["vault"]]["properties"]["enablePurgeProtection"] is True, "purge protection"


def test_telemetry_is_ingested_by_the_apps_identity_and_the_connection_string_is_never_printed(azure):
    """Issue 13 item 12: key-based ingestion off; the exporter authenticates with the managed identity;
    the connection string (it carries the instrumentation key) appears in no output."""
    result = azure.run("deploy", *DEPLOY_ARGS)
    assert result.code == 0, result.err
    (insights,) = [r for k, r in azure.state["resources"].items() if k.endswith(f"components/{N['insights']}")]
    assert insights["properties"]["DisableLocalAuth"] is True, "only Entra-authenticated telemetry is ingested"
    settings = azure.state["sites"]["contoso-sso"]["settings"]
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == CONNECTION_STRING
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert "fake-ikey" not in result.out + result.err, "the connection string is not printed"
    state = azure.state  # another connection string (App Insights made by hand, say): it is put back, hidden
    state["sites"]["contoso-sso"]["settings"]["APPLICATIONINSIGHTS_CONNECTION_STRING"] = CREATED_CONNECTION_STRING
    azure.state = state
    again = azure.run("deploy", *DEPLOY_ARGS)
    assert again.code == 0 and "APPLICATIONINSIGHTS_CONNECTION_STRING=<hidden>" in again.out, again.err
    assert "fake-ikey" not in again.out + again.err
    assert azure.state["sites"]["contoso-sso"]["settings"]["APPLICATIONINSIGHTS_CONNECTION_STRING"] == CONNECTION_STRING
    for flag in ("--dry-run", "--what-if"):
        plan = azure.run("deploy", *DEPLOY_ARGS, flag)
        assert "fake-ikey" not in plan.out + plan.err, f"not in a {flag} either"


def test_the_account_wide_blob_role_that_functionapp_create_grants_is_removed(azure):
    """`az functionapp create --deployment-storage-auth-type SystemAssignedIdentity` gives the identity
    Storage Blob Data Contributor on the whole storage account (read every blob in it): the deploy removes
    it (the identity's Owner role on the deployment container covers the deployment), says so, and plans it."""
    removal = re.compile(rf"- role Storage Blob Data Contributor on (<id of )?{N['storage']}\b")
    plan = azure.run("deploy", *DEPLOY_ARGS, "--what-if")
    assert removal.search(plan.out.split("Would remove:")[-1]), plan.out
    result = azure.run("deploy", *DEPLOY_ARGS)
    assert result.code == 0, result.err
    storage_id = azure.state["storage"][N["storage"]]["id"]
    on_account = [r[1] for r in azure.state["roles"] if r[0] == "contoso-sso-principal" and r[2] == storage_id]
    assert on_account == [], f"no role of the app's identity on the whole storage account: {on_account}"
    assert removal.search(result.out.split("Removed:")[-1]), result.out


def test_one_application_insights_with_key_based_ingestion_off_and_no_default_workspace(azure):
    """Without --app-insights, `az functionapp create` (Flex) makes its own Application Insights, key-based
    ingestion on, on a DefaultWorkspace: the deploy hands it the one it made, so no other exists."""
    result = azure.run("deploy", *DEPLOY_ARGS)
    assert result.code == 0, result.err
    components = {k: r for k, r in azure.state["resources"].items() if "/Microsoft.Insights/components/" in k}
    assert list(components) == [f"rg-sso/Microsoft.Insights/components/{N['insights']}"], list(components)
    assert all(r["properties"]["DisableLocalAuth"] is True for r in components.values())
    assert set(azure.state["workspaces"]) == {N["workspace"]}, "no DefaultWorkspace"
    assert azure.state["sites"]["contoso-sso"]["settings"]["APPLICATIONINSIGHTS_CONNECTION_STRING"] \
        == CONNECTION_STRING


def test_an_earlier_deploys_broad_grants_and_open_settings_are_narrowed_and_closed(azure):
    """Issue 13 items 11, 12, 15: what main's deploy left (Secrets User on the whole vault, Blob Data Owner
    on the whole account, no purge protection, key-based ingestion, HTTP, FTP, basic credentials) is fixed
    by the next run, and a --what-if shows it first without changing anything."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    state = azure.state
    site = state["sites"]["contoso-sso"]
    site.update(httpsOnly=False, config={"minTlsVersion": "1.0", "ftpsState": "AllAllowed"},
                publishing={"ftp": True, "scm": True})
    site["settings"]["AzureWebJobsStorage"] = "DefaultEndpointsProtocol=https;AccountKey=old=="
    state["vaults"][N["vault"]]["properties"]["enablePurgeProtection"] = None
    for resource in state["resources"].values():
        resource["properties"].pop("DisableLocalAuth", None)
    storage_id, vault_id = state["storage"][N["storage"]]["id"], state["vaults"][N["vault"]]["id"]
    state["roles"] = [r for r in state["roles"] if not r[2].startswith(f"{storage_id}/blobServices")
                      and "/secrets/" not in r[2]]
    state["roles"] += [["contoso-sso-principal", "Storage Blob Data Owner", storage_id, "old-blob"],
                       ["contoso-sso-principal", "Key Vault Secrets User", vault_id, "old-vault"]]
    azure.state = state

    plan = azure.run("deploy", *DEPLOY_ARGS, "--what-if")
    assert plan.code == 0, plan.err
    assert plan.mutations == [], f"--what-if writes nothing: {plan.mutations}"
    assert plan.calls, "--what-if reads the current state"
    for expected in ("Would remove:", "the key-based AzureWebJobsStorage", "Storage Blob Data Owner on " + N["storage"],
                     "Key Vault Secrets User on " + N["vault"], "HTTPS only", "TLS 1.2 minimum, FTP off",
                     "basic FTP publishing credentials off", "purge protection on", "key-based ingestion off",
                     "Would create:", "containers/app-package", "secrets/session-signing-key"):
        assert expected in plan.out, f"{expected!r} in the plan:\n{plan.out}"
    assert "Would create:\n" in plan.out and "Would change:\n" in plan.out
    assert azure.state == state, "the state is exactly as before"

    fixed = azure.run("deploy", *DEPLOY_ARGS)
    assert fixed.code == 0, fixed.err
    scopes = {(r[1], r[2]) for r in azure.state["roles"] if r[0] == "contoso-sso-principal"}
    assert ("Storage Blob Data Owner", storage_id) not in scopes and ("Key Vault Secrets User", vault_id) not in scopes
    assert ("Key Vault Secrets User", f"{vault_id}/secrets/session-signing-key") in scopes
    assert azure.state["sites"]["contoso-sso"]["httpsOnly"] is True
    assert azure.state["sites"]["contoso-sso"]["publishing"] == {"ftp": False, "scm": False}
    assert "AzureWebJobsStorage" not in azure.state["sites"]["contoso-sso"]["settings"]
    assert azure.state["vaults"][N["vault"]]["properties"]["enablePurgeProtection"] is True
    assert azure.run("deploy", *DEPLOY_ARGS).mutations == [], "and then nothing is left to change"


def test_a_second_deploy_changes_nothing_and_says_so(azure):
    first = azure.run("deploy", *DEPLOY_ARGS)
    assert first.code == 0 and len(first.mutations) > 20, "the first run makes everything"
    again = azure.run("deploy", *DEPLOY_ARGS)
    assert again.code == 0, again.err
    assert again.mutations == [], f"a second run creates or changes nothing: {again.mutations}"
    assert "Nothing to change" in again.out
    what_if = azure.run("deploy", *DEPLOY_ARGS, "--what-if")
    assert what_if.mutations == [] and "Nothing to change" in what_if.out


def python_of(azure: FakeAzure) -> str:
    return azure.state["sites"]["contoso-sso"]["properties"]["functionAppConfig"]["runtime"]["version"]


def test_python_given_for_an_existing_app_moves_it_to_that_version_and_builds_the_package_for_it(azure):
    """The hunt's case: --python was passed to `functionapp create` alone, so on an existing app it was
    ignored and the run said "Nothing to change"."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    assert python_of(azure) == "3.12" and azure.state["builds"] == ["3.12"], "a new app: Python 3.12"
    plan = azure.run("deploy", *DEPLOY_ARGS, "--python", "3.13", "--what-if")
    assert plan.code == 0 and plan.mutations == [], plan.mutations
    assert "function app contoso-sso: Python 3.12 to 3.13" in plan.out, plan.out
    assert re.search(r"package \w{12} deployed \(built for Python 3\.13\)", plan.out), plan.out
    moved = azure.run("deploy", *DEPLOY_ARGS, "--python", "3.13")
    assert moved.code == 0, moved.err
    assert index_of(moved.mutations, "functionapp runtime config set") < index_of(moved.mutations, "config-zip"), \
        "the remote build runs for the new Python"
    assert python_of(azure) == "3.13" and azure.state["builds"] == ["3.12", "3.13"]
    for again in (azure.run("deploy", *DEPLOY_ARGS), azure.run("deploy", *DEPLOY_ARGS, "--python", "3.13")):
        assert again.code == 0 and again.mutations == [], f"a rerun keeps 3.13, never back to 3.12: {again.mutations}"
        assert "Nothing to change" in again.out
    assert python_of(azure) == "3.13"


def test_a_run_that_changed_the_python_but_not_the_package_builds_it_the_next_time(azure):
    """The runtime moved, then the upload failed: the app's package was built for the old Python, so the
    next run, even without --python, builds it again."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    azure.state = {**azure.state, "refuse": {"config-zip": "(BadRequest) deployment failed"}}
    assert azure.run("deploy", *DEPLOY_ARGS, "--python", "3.11").code == 1
    assert python_of(azure) == "3.11" and azure.state["builds"] == ["3.12"]
    azure.state = {**azure.state, "refuse": {}}
    again = azure.run("deploy", *DEPLOY_ARGS)
    assert again.code == 0 and azure.state["builds"] == ["3.12", "3.11"], again.mutations


def test_a_new_app_gets_the_python_asked_for(azure):
    dry = azure.run("deploy", *DEPLOY_ARGS, "--dry-run")
    assert "--runtime-version 3.12" in dry.out and "Python 3.12" in dry.out
    assert azure.run("deploy", *DEPLOY_ARGS, "--python", "3.11").code == 0
    assert python_of(azure) == "3.11" and azure.state["builds"] == ["3.11"]


def test_a_flattened_functionapp_show_answer_is_read_too(azure):
    """The review's case: only `properties` (az 2.91's raw ARM answer for a Flex app) was read, so with an
    older az's flattened answer the runtime was unknown, and every rerun without --python moved the app to
    3.12 (and rebuilt it) and rewrote httpsOnly."""
    assert azure.run("deploy", *DEPLOY_ARGS, "--python", "3.11").code == 0
    azure.state = {**azure.state, "site_answer": "flat"}
    again = azure.run("deploy", *DEPLOY_ARGS)
    assert again.code == 0 and again.mutations == [], again.mutations
    assert python_of(azure) == "3.11" and azure.state["builds"] == ["3.11"]
    moved = azure.run("deploy", *DEPLOY_ARGS, "--python", "3.13")
    assert moved.code == 0 and "Python 3.11 to 3.13" in moved.out, moved.out
    assert python_of(azure) == "3.13" and azure.state["builds"] == ["3.11", "3.13"]


def test_an_app_whose_python_cannot_be_read_keeps_it_unless_python_is_given(azure):
    assert azure.run("deploy", *DEPLOY_ARGS, "--python", "3.11").code == 0
    azure.state = {**azure.state, "site_answer": "flat-no-runtime"}
    again = azure.run("deploy", *DEPLOY_ARGS)
    assert again.code == 0 and again.mutations == [], again.mutations
    assert "could not be read" in again.err and "--python" in again.err, again.err
    assert python_of(azure) == "3.11" and azure.state["builds"] == ["3.11"], "left as it is, not built again"
    moved = azure.run("deploy", *DEPLOY_ARGS, "--python", "3.13")
    assert moved.code == 0, moved.err
    assert python_of(azure) == "3.13" and azure.state["builds"] == ["3.11", "3.13"], "--python still moves it"


CUSTOM_NAMES = ["--key-vault", "contoso-secrets", "--storage-account", "contosodata"]


def test_the_same_deploy_run_again_with_a_vault_name_in_capitals_is_not_taken_for_a_move(azure):
    """Key Vault names are case-insensitive and its URL has them lower-case: the identical command was
    refused as a move to another vault (review)."""
    assert azure.run("deploy", *DEPLOY_ARGS, "--key-vault", "Contoso-Secrets").code == 0
    again = azure.run("deploy", *DEPLOY_ARGS, "--key-vault", "Contoso-Secrets")
    assert again.code == 0 and "--repoint" not in again.err, again.err


def test_a_redeploy_without_key_vault_or_storage_account_keeps_the_ones_the_app_uses(azure):
    """The hunt's case: names came from the arguments alone, so a redeploy that left out --key-vault and
    --storage-account made a new, empty vault and storage account and pointed the app at them (its client
    secret, signing key and portal accounts left behind)."""
    assert azure.run("deploy", *DEPLOY_ARGS, *CUSTOM_NAMES).code == 0
    before = azure.state["sites"]["contoso-sso"]["settings"]
    plan = azure.run("deploy", *DEPLOY_ARGS, "--what-if")
    assert plan.code == 0 and "Nothing to change" in plan.out, plan.out
    again = azure.run("deploy", *DEPLOY_ARGS)
    assert again.code == 0, again.err
    assert again.mutations == [], f"the vault and storage account the app uses, as they are: {again.mutations}"
    assert set(azure.state["vaults"]) == {"contoso-secrets"} and set(azure.state["storage"]) == {"contosodata"}
    assert azure.state["sites"]["contoso-sso"]["settings"] == before
    dry = azure.run("deploy", *DEPLOY_ARGS, "--dry-run")
    assert dry.code == 0 and "KEY_VAULT_URL" in dry.out and "reads nothing" in dry.out, \
        "a dry run, which reads nothing, says that a run takes the names from the app's settings"


@pytest.mark.parametrize(("option", "name", "old", "held"), [
    ("--key-vault", "contoso-secrets", N["vault"], "client secret"),
    ("--storage-account", "contosodata", N["storage"], "PortalAccounts"),
])
def test_naming_another_vault_or_storage_account_than_the_apps_is_refused_unless_asked(azure, option, name, old,
                                                                                        held):
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    before = azure.state
    for flag in ((), ("--what-if",)):
        refused = azure.run("deploy", *DEPLOY_ARGS, option, name, *flag)
        assert refused.code != 0 and refused.mutations == [], refused.mutations
        assert old in refused.err and held in refused.err and "--repoint" in refused.err, refused.err
        assert "Traceback" not in refused.err
    assert azure.state == before, "nothing made, nothing changed"
    moved = azure.run("deploy", *DEPLOY_ARGS, option, name, "--repoint")
    assert moved.code == 0, moved.err
    assert old in moved.out and held in moved.out, "what stays behind is said"
    settings = azure.state["sites"]["contoso-sso"]["settings"]
    assert name in (settings["KEY_VAULT_URL"] if option == "--key-vault" else settings["TABLES_ENDPOINT"])
    assert azure.run("deploy", *DEPLOY_ARGS).mutations == [], "from then on, the new one is the app's"


def roles_of_app_under(azure: FakeAzure, resource_id: str) -> list[tuple[str, str]]:
    """The app identity's roles on `resource_id` or anything under it."""
    return [(r[1], scope_name(r[2])) for r in azure.state["roles"]
            if r[0] == "contoso-sso-principal" and (r[2] == resource_id or r[2].startswith(resource_id + "/"))]


def test_a_storage_move_loads_the_package_from_the_new_account_and_leaves_no_role_on_the_old(azure):
    """The hunt's case: only `functionapp create` named the deployment storage, so --repoint moved the
    settings to the new account while Flex went on loading the package from <old>/app-package (the new
    container empty, the package not uploaded: its digest had not changed); deleting the old account, which
    the note said kept only accounts, audit rows and host keys, took the app down at its next cold start."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    old_id = azure.state["storage"][N["storage"]]["id"]
    plan = azure.run("deploy", *DEPLOY_ARGS, "--storage-account", "contosodata", "--repoint", "--what-if")
    assert plan.code == 0 and plan.mutations == [], plan.mutations
    assert "contosodata/app-package" in plan.out and "package" in plan.out.split("Would change:")[1], plan.out
    moved = azure.run("deploy", *DEPLOY_ARGS, "--storage-account", "contosodata", "--repoint")
    assert moved.code == 0, moved.err
    site = azure.state["sites"]["contoso-sso"]
    storage = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["value"] == "https://contosodata.blob.core.windows.net/app-package", storage
    assert storage["authentication"]["type"] == "SystemAssignedIdentity"
    assert azure.state["uploads"][-1] == storage["value"], "the package is uploaded into the new container"
    config_set = next(c for c in moved.commands if "functionapp deployment config set" in c)
    assert moved.commands.index(config_set) < index_of(moved.commands, "config-zip")
    assert roles_of_app_under(azure, old_id) == [], "the identity keeps no role on the old account"
    new_id = azure.state["storage"]["contosodata"]["id"]
    assert ("Storage Blob Data Contributor", "contosodata") not in roles_of_app_under(azure, new_id), \
        "the account-wide role that `deployment config set` grants goes, as create's does"
    assert "app-package" in moved.out and "export them first" in moved.out, moved.out
    assert azure.run("deploy", *DEPLOY_ARGS).mutations == [], "from then on, nothing to do"


def test_a_storage_move_sets_the_deployment_storage_even_when_azs_answer_does_not_show_it(azure):
    """An az whose `functionapp show` lacks functionAppConfig: a rerun leaves the deployment storage as it
    is (nothing to compare), a move sets it, as it cannot be read."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    azure.state = {**azure.state, "site_answer": "flat-no-runtime"}
    assert azure.run("deploy", *DEPLOY_ARGS).mutations == []
    moved = azure.run("deploy", *DEPLOY_ARGS, "--storage-account", "contosodata", "--repoint")
    assert moved.code == 0, moved.err
    assert azure.state["uploads"][-1] == "https://contosodata.blob.core.windows.net/app-package"


@pytest.mark.parametrize("stop", ["role assignment create", "role assignment delete", "appsettings set",
                                  "keyvault secret show", "config-zip"])
def test_a_storage_move_stopped_between_the_deployment_storage_and_the_upload_uploads_on_the_rerun(azure, stop):
    """The hunt's case: a move that stopped after `deployment config set` (Flex then loads from the new, empty
    container) and before the upload: its rerun read loads_from == new and the same digest, uploaded nothing
    and said "Nothing to change", though the failure said to run it again to carry on."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    old_id = azure.state["storage"][N["storage"]]["id"]
    azure.state = {**azure.state, "refuse": {stop: "(ServiceUnavailable) The service is temporarily unavailable."}}
    stopped = azure.run("deploy", *DEPLOY_ARGS, "--storage-account", "contosodata", "--repoint")
    assert stopped.code == 1 and "carries on from here" in stopped.err, stopped.err
    assert any("deployment config set" in c for c in stopped.commands), "stopped after the deployment storage"
    azure.state = {**azure.state, "refuse": {}}
    again = azure.run("deploy", *DEPLOY_ARGS, "--storage-account", "contosodata", "--repoint")
    assert again.code == 0, again.err
    assert azure.state["uploads"][-1] == "https://contosodata.blob.core.windows.net/app-package", again.mutations
    assert roles_of_app_under(azure, old_id) == [], "the rerun also finishes the move: no role on the old account"
    assert azure.run("deploy", *DEPLOY_ARGS).mutations == [], "from then on, nothing to do"


@pytest.mark.parametrize(("option", "name", "old"), [("--storage-account", "contosodata", "storage"),
                                                      ("--key-vault", "contoso-secrets", "vault")])
def test_a_move_that_stopped_after_pointing_the_settings_removes_the_old_roles_on_the_rerun(azure, option, name,
                                                                                             old):
    """The hunt's case: a move whose package went live but failed az's health check (after the settings
    pointed at the new one) left the old roles; the rerun read no move from the settings, never removed them
    and said "Nothing to change", against the run's own note."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    assert azure.run("register-app", *APP_ARGS).code == 0
    old_id = azure.state["storage" if old == "storage" else "vaults"][N[old]]["id"]
    state = azure.state
    state["sites"]["contoso-sso"]["settings"]["PORTAL_SSO_PACKAGE_SHA256"] = "0" * 64  # the code changed since
    azure.state = {**state, "unhealthy": True}
    stopped = azure.run("deploy", *DEPLOY_ARGS, option, name, "--repoint")
    assert stopped.code == 1 and "health check" in stopped.err, stopped.err
    assert f"roles on {N[old]}" in stopped.err and "next run removes them" in stopped.err, stopped.err
    assert roles_of_app_under(azure, old_id) != []
    azure.state = {**azure.state, "unhealthy": False}
    again = azure.run("deploy", *DEPLOY_ARGS)  # the settings name the new one now: a plain rerun
    assert again.code == 0 and "Nothing to change" not in again.out, again.out
    assert roles_of_app_under(azure, old_id) == [], "the move's roles on the old one go"
    assert "PORTAL_SSO_MOVED_FROM" not in azure.state["sites"]["contoso-sso"]["settings"], "the move is done"
    assert azure.run("deploy", *DEPLOY_ARGS).mutations == [], "from then on, nothing to do"


def test_a_vault_move_leaves_the_app_no_role_on_the_old_vaults_secrets(azure):
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    assert azure.run("register-app", "--resource-group", "rg-sso", "--app", "contoso-sso").code == 0
    old_id = azure.state["vaults"][N["vault"]]["id"]
    assert len(roles_of_app_under(azure, old_id)) == 2, "signing key and client secret"
    moved = azure.run("deploy", *DEPLOY_ARGS, "--key-vault", "contoso-secrets", "--repoint")
    assert moved.code == 0, moved.err
    assert roles_of_app_under(azure, old_id) == [], "Secrets User on each secret it read there goes"
    assert "Key Vault Secrets User" in moved.out and "client secret" in moved.out, moved.out
    assert azure.run("deploy", *DEPLOY_ARGS).mutations == []


def test_a_vault_move_of_an_app_signing_in_with_a_certificate_leaves_no_role_on_the_old_certificate(azure):
    """The hunt's case: Secrets User went on the signing key, client secret and SCIM token only, so the role
    register-app gave on the certificate (OIDC_CLIENT_CERTIFICATE_NAME) stayed on the old vault."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    assert azure.run("register-app", *APP_ARGS).code == 0
    sign_in_with_a_certificate(azure, as_certificate=True)
    assert azure.run("register-app", *APP_ARGS).code == 0
    old_id = azure.state["vaults"][N["vault"]]["id"]
    assert ("Key Vault Secrets User", "secrets/oidc-client-certificate") in roles_of_app_under(azure, old_id)
    moved = azure.run("deploy", *DEPLOY_ARGS, "--key-vault", "contoso-secrets", "--repoint")
    assert moved.code == 0, moved.err
    assert roles_of_app_under(azure, old_id) == [], "Secrets User on each secret it read there goes"


def test_a_package_that_deployed_but_left_the_app_unhealthy_is_said_as_deployed_with_the_way_back(azure):
    """The hunt's case: az 2.91's config-zip on Flex activates the package, then fails its health check; a
    write was recorded only when az exited 0, so a code-only redeploy ended "Nothing was created or changed."
    with the new code live, and the digest left as before (a deploy of the previous commit would then have
    skipped its upload: nothing to change)."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    state = azure.state
    deployed = state["sites"]["contoso-sso"]["settings"]["PORTAL_SSO_PACKAGE_SHA256"]
    state["sites"]["contoso-sso"]["settings"]["PORTAL_SSO_PACKAGE_SHA256"] = "0" * 64  # the code changed since
    azure.state = {**state, "unhealthy": True}
    failed = azure.run("deploy", *DEPLOY_ARGS)
    assert failed.code == 1 and len(azure.state["uploads"]) == 2, failed.err
    assert "Nothing was created or changed" not in failed.err, failed.err
    assert f"package {deployed[:12]} deployed" in failed.err and "health check" in failed.err, failed.err
    assert "commit deployed before" in failed.err, "the way back is said"
    assert azure.state["sites"]["contoso-sso"]["settings"]["PORTAL_SSO_PACKAGE_SHA256"] == deployed, \
        "what is live is recorded: another commit's package is deployed by the next run"
    assert "Traceback" not in failed.err


def test_settings_that_name_two_storage_accounts_need_storage_account_to_say_which(azure):
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    state = azure.state
    state["sites"]["contoso-sso"]["settings"]["TABLES_ENDPOINT"] = "https://contosodata.table.core.windows.net"
    azure.state = state
    refused = azure.run("deploy", *DEPLOY_ARGS)
    assert refused.code != 0 and refused.mutations == [], refused.mutations
    assert "contosodata and contosossostor" in refused.err and "give --storage-account" in refused.err, refused.err


def test_the_session_tokens_iss_and_aud_printed_are_the_ones_in_effect(azure):
    """The hunt's case: a SESSION_TOKEN_AUDIENCE set before stayed in the app while the printout showed the
    new portals' origin, so a portal was configured to check an aud no token carried."""
    base = DEPLOY_ARGS[:6]
    split = ["--portal-user-url", "https://users.contoso.test/sso", "--portal-agent-url", "https://agents.contoso.test/sso"]
    assert azure.run("deploy", *base, *split, "--session-audience", "https://users.contoso.test").code == 0
    state = azure.state
    state["sites"]["contoso-sso"]["settings"]["SESSION_TOKEN_ISSUER"] = "https://sso.contoso.test"  # set by hand
    azure.state = state
    moved = ["--portal-user-url", "https://portal.fabrikam.test/sso/user",
             "--portal-agent-url", "https://portal.fabrikam.test/sso/agent"]
    result = azure.run("deploy", *base, *moved)
    assert result.code == 0, result.err
    assert azure.state["sites"]["contoso-sso"]["settings"]["SESSION_TOKEN_AUDIENCE"] == "https://users.contoso.test", \
        "an audience set before is kept: the portals check it"
    assert "iss https://sso.contoso.test (SESSION_TOKEN_ISSUER), aud https://users.contoso.test" in result.out
    warning = result.err.split("warning: ", 1)[-1]
    assert "https://portal.fabrikam.test" in warning and "--session-audience https://portal.fabrikam.test" in warning
    changed = azure.run("deploy", *base, *moved, "--session-audience", "https://portal.fabrikam.test")
    assert changed.code == 0 and "aud https://portal.fabrikam.test (SESSION_TOKEN_AUDIENCE)" in changed.out
    assert "warning" not in changed.err


def test_dry_run_prints_every_command_a_real_run_takes_and_runs_none(azure):
    result = azure.run("deploy", *DEPLOY_ARGS, "--dry-run")
    assert result.code == 0, result.err
    assert result.calls == [], "a dry run runs no az command"
    assert result.out.count("would run: az ") >= 20 and "functionapp create" in result.out
    real = azure.run("deploy", *DEPLOY_ARGS)
    assert real.code == 0, real.err
    planned = {c.split(" --")[0] for c in re.findall(r"would run: az (.*)", result.out)}
    writes = {m.split(" --")[0] for m in real.mutations}
    assert writes <= planned, f"every write of a real run is in the dry run's plan: {writes - planned}"
    assert "appsettings delete --name contoso-sso --resource-group rg-sso --setting-names AzureWebJobsStorage" \
        in result.out, "the dry run shows the removal of the key-based AzureWebJobsStorage"


def test_what_if_on_an_empty_subscription_reads_and_plans_everything_writing_nothing(azure):
    result = azure.run("deploy", *DEPLOY_ARGS, "--what-if")
    assert result.code == 0, result.err
    assert result.mutations == [], result.mutations
    assert any("group show" in c for c in result.commands), "it reads the current state"
    assert "Would create:" in result.out and "function app contoso-sso" in result.out
    assert azure.state == {}, "nothing was made"


def test_what_if_needs_a_signed_in_az(azure):
    azure.state = {"logged_in": False}
    result = azure.run("deploy", *DEPLOY_ARGS, "--what-if")
    assert result.code != 0 and "az login" in result.err


def test_deploy_signed_in_as_a_service_principal_ci(azure):
    """Issue 16 item 5: `az login --service-principal` has no signed-in user; the deployer's Key Vault role
    goes to the service principal."""
    azure.state = {"signed_in_as": {"type": "servicePrincipal", "name": "ci-app-id", "id": "ci-object-id"},
                   "sps": {"ci-app-id": {"id": "ci-object-id"}}}
    result = azure.run("deploy", *DEPLOY_ARGS)
    assert result.code == 0, result.err
    assert not any("signed-in-user" in c for c in result.commands)
    officer = next(c for c in result.commands if "Key Vault Secrets Officer" in c and "create" in c)
    assert "--assignee-object-id ci-object-id --assignee-principal-type ServicePrincipal" in officer


@pytest.mark.parametrize(("setup", "expected"), [
    ({"logged_in": False}, "az login"),
    ({"taken_names": [N["storage"]]}, "taken"),
    ({"vaults": {N["vault"]: {"id": "v", "properties": {"enableRbacAuthorization": False}}}}, "not RBAC"),
    ({"refuse": {"role assignment create": "(AuthorizationFailed) The client does not have authorization"}},
     "lacks a permission"),
    # after `az group delete`, purge protection keeps the vault and its name for 90 days: not "taken by someone"
    ({"refuse": {"keyvault create": VAULT_DELETED}}, "az keyvault recover --name <vault>"),
], ids=["signed-out", "name-taken", "vault-without-rbac", "no-permission", "vault-deleted"])
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


def test_portals_on_two_origins_without_session_audience_are_refused_before_anything_runs(azure):
    """The refusal came after some 30 writes (the group, storage, vault, app and roles all made)."""
    result = azure.run("deploy", *DEPLOY_ARGS[:6], "--portal-user-url", "https://users.contoso.test/sso",
                       "--portal-agent-url", "https://agents.contoso.test/sso")
    assert result.code == 2 and result.calls == [], "refused on the command line: no az command runs"
    assert "different origins" in result.err and "--session-audience" in result.err, result.err
    assert azure.state == {}


def test_a_vault_in_deleted_state_is_explained_as_such_not_as_a_name_taken_by_someone_else():
    advice = explain(f"ERROR: {VAULT_DELETED}")
    assert "az keyvault recover --name <vault>" in advice and "--key-vault" in advice
    assert "someone else" not in advice
    taken = explain("ERROR: (VaultAlreadyExists) The vault name 'x' is already in use. Vault names are globally "
                    "unique so it is possible that the name is already taken.")
    assert "someone else" in taken and "--key-vault" in taken


def deploy_in_process(azure: FakeAzure, monkeypatch, slept: list[float]) -> list[str]:
    """Runs the deploy in this process against the fake az, its sleeps recorded in `slept`, not slept;
    returns what it printed."""
    monkeypatch.setenv("FAKE_AZ_STATE", str(azure.state_path))
    monkeypatch.setenv("FAKE_AZ_LOG", str(azure.log_path))
    azure.log_path.write_text("")
    printed = []
    deploy(Az(az=str(azure.bin / "az"), sleep=slept.append, out=printed.append), parse_args(DEPLOY_ARGS))
    return printed


def test_a_first_deploy_waits_for_its_fresh_key_vault_role_to_take_effect(azure, monkeypatch):
    """Azure takes up to minutes to honour a new role assignment: the deploy grants itself Secrets Officer on
    a new vault and writes the signing key moments later. Key Vault here refuses the first 3 calls."""
    azure.state = {"rbac_delay": 3}
    slept = []
    printed = deploy_in_process(azure, monkeypatch, slept)
    assert slept == [ROLE_POLL_SECONDS] * 3
    assert sum("waiting for the role Key Vault Secrets Officer" in line for line in printed) == 3
    assert len(azure.state["secrets"][f"{N['vault']}/session-signing-key"]) == 1, "one key, made once"


def test_a_role_that_never_takes_effect_fails_after_a_bounded_wait_saying_what_to_do(azure, monkeypatch):
    azure.state = {"rbac_delay": 10_000}
    slept = []
    with pytest.raises(AzError) as failed:
        deploy_in_process(azure, monkeypatch, slept)
    assert sum(slept) == ROLE_WAIT_SECONDS
    assert "Key Vault Secrets Officer" in str(failed.value) and "wait a few minutes" in str(failed.value)
    assert f"Waited {ROLE_WAIT_SECONDS} s" in str(failed.value)
    assert "secrets" not in azure.state or not azure.state["secrets"]


def test_a_what_if_whose_key_vault_role_is_only_planned_does_not_read_the_vault(azure):
    """The hunt's case: another admin's what-if planned their Secrets Officer role, then read the signing key
    and failed on Key Vault's 403, where the real run (which grants the role and waits) succeeds."""
    azure.state = {"rbac_delay": 0}
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    azure.state = {**azure.state, "signed_in_as": {"type": "user", "name": "bob@contoso.test", "id": "bob-object-id"},
                   "rbac_delay": 1}
    before = azure.state
    plan = azure.run("deploy", *DEPLOY_ARGS, "--what-if")
    assert plan.code == 0, plan.err
    assert plan.mutations == [] and not any("keyvault secret" in c for c in plan.commands), plan.commands
    assert "role Key Vault Secrets Officer" in plan.out and "unknown" in plan.out.split("Would create:")[-1], plan.out
    assert azure.state == before


def test_a_role_granted_before_is_not_waited_for(azure, monkeypatch):
    """A 403 under a role this run did not grant is a real refusal (the role was removed, a deny
    assignment): it is explained at once."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    state = azure.state
    officer = next(a for a in state["roles"] if a[1] == "Key Vault Secrets Officer")
    state.update(rbac_delay=0, pending_roles={officer[3]: 1})  # Key Vault refuses it once more
    azure.state = state
    slept = []
    with pytest.raises(AzError) as failed:
        deploy_in_process(azure, monkeypatch, slept)
    assert slept == [] and KEY_VAULT_REFUSED in str(failed.value)


def test_a_deploy_from_a_copy_without_git_is_refused_before_anything_runs(azure, tmp_path, monkeypatch):
    """The hunt's case: from a Download ZIP copy, deploy made 32 changes (the app among them), then died with
    git's CalledProcessError when it built the package, leaving an app with no code."""
    copy = copy_without_git(tmp_path, monkeypatch)
    result = azure.run("deploy", *DEPLOY_ARGS, root=copy)
    assert result.code == 1, result.err
    assert result.calls == [], f"no az command runs: {result.commands}"
    assert "Traceback" not in result.err and "not a git clone" in result.err, result.err
    assert "Nothing was created or changed" in result.err


def test_az_missing_is_a_clear_message(azure):
    result = azure.run("deploy", *DEPLOY_ARGS, path_has_az=False)
    assert result.code != 0 and "not installed" in result.err and "Traceback" not in result.err


def test_the_readme_names_every_table_the_deploy_makes():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("`portal-sso deploy` creates, or brings up to date:", 1)[1].split("\n\n", 2)[1]
    assert [t for t in APP_TABLES if f"`{t}`" not in section] == [], section


@pytest.mark.parametrize("given", ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "scim_token"])
def test_a_secret_name_the_app_would_refuse_stops_register_app_unquoted(given):
    """register-app reads the secret the app's setting names: a token pasted there would go into the
    vault's URL, as the app would refuse to (shared.config.secret_name_problem)."""
    from tools.azure_cli import secret_name

    with pytest.raises(AzError) as failed:
        secret_name({"SCIM_TOKEN_NAME": given}, "SCIM_TOKEN_NAME", "scim-token")
    assert "SCIM_TOKEN_NAME" in str(failed.value) and given not in str(failed.value)
    assert secret_name({"SCIM_TOKEN_NAME": "portal-scim"}, "SCIM_TOKEN_NAME", "scim-token") == "portal-scim"


@pytest.mark.parametrize("script", ["deploy", "register-app"])
def test_on_a_clone_without_a_venv_the_script_makes_the_venv_alone_not_the_local_stacks_npm_packages(
        script, tmp_path):
    """`make setup` runs `npm ci` for the local stack too: a deploy machine without Node failed the first run."""
    (tmp_path / "scripts").mkdir()
    copy = tmp_path / "scripts" / script
    copy.write_text((ROOT / "scripts" / script).read_text())
    copy.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/make-args\nexit 7\n')
    (bin_dir / "make").chmod(0o755)
    done = subprocess.run([str(copy), "--help"], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 7, done.stderr
    assert (tmp_path / "make-args").read_text().split() == ["-C", str(tmp_path), ".venv/.installed"]


def test_a_public_base_url_set_with_its_slash_is_printed_as_the_app_reads_it(azure):
    """The app strips a trailing '/' (shared.config.public_base_url); deploy printed the redirect URIs
    and iss from the raw value (https://sso.contoso.test//api/sso/user/callback: AADSTS50011 when pasted)."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    state = azure.state
    state["sites"]["contoso-sso"]["settings"]["PUBLIC_BASE_URL"] = "https://sso.contoso.test/"
    azure.state = state
    again = azure.run("deploy", *DEPLOY_ARGS)
    assert again.code == 0, again.err
    assert "User Single Sign On URL:  https://sso.contoso.test/api/sso/user/callback" in again.out, again.out
    assert "Agent signed-out page:    https://sso.contoso.test/api/sso/agent/signed-out" in again.out, again.out
    assert "//api/" not in again.out and "iss https://sso.contoso.test " in again.out, again.out
    assert not [m for m in again.mutations if "PUBLIC_BASE_URL" in m], "the setting is kept as written"


@pytest.mark.parametrize("padding", ["\n", " ", "\r\n"])
def test_a_session_audience_set_by_hand_with_padding_is_read_stripped_as_the_app_reads_it(azure, padding):
    """The app strips its settings (shared.config): deploy did not, so a hand-set audience with a final
    newline or space was "not the portals' origin" (a spurious warning to change it) and printed with it."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    state = azure.state
    state["sites"]["contoso-sso"]["settings"]["SESSION_TOKEN_AUDIENCE"] = f"https://portal.contoso.test{padding}"
    azure.state = state
    again = azure.run("deploy", *DEPLOY_ARGS)
    assert again.code == 0, again.err
    assert "warning" not in again.err, again.err
    assert "aud https://portal.contoso.test (SESSION_TOKEN_AUDIENCE)" in again.out, again.out


@pytest.mark.parametrize("audience", ["", "  "])
def test_a_blank_session_audience_is_refused_as_a_missing_one(azure, audience):
    """`--session-audience "$AUD"` with AUD unset: exit 0, no SESSION_TOKEN_AUDIENCE written and the
    user portal's origin printed as aud, while the app (two portal origins) refused every sign-in."""
    args = [*DEPLOY_ARGS[:DEPLOY_ARGS.index("--portal-user-url")],
            "--portal-user-url", "https://users.contoso.test/sso/user",
            "--portal-agent-url", "https://agents.contoso.test/sso/agent"]
    refused = azure.run("deploy", *args, "--session-audience", audience)
    assert refused.code == 2 and "--session-audience" in refused.err, refused.err
    assert not refused.calls, "refused before anything runs"


def test_a_signing_key_secret_renamed_by_hand_leaves_no_role_on_the_one_the_app_no_longer_reads(azure):
    """README: Key Vault Secrets User on each secret the app reads. After SESSION_SIGNING_KEY_NAME was set
    by hand, the identity kept its role on session-signing-key, and a vault move later left it too."""
    from tools.azure_cli import scope_name

    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    state = azure.state
    state["sites"]["contoso-sso"]["settings"]["SESSION_SIGNING_KEY_NAME"] = "signing-key-2026"
    azure.state = state
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    held = {scope_name(scope) for who, role, scope, _ in azure.state["roles"]
            if who == "contoso-sso-principal" and role == "Key Vault Secrets User"}
    assert "secrets/signing-key-2026" in held and "secrets/session-signing-key" not in held, held
    assert not azure.run("deploy", *DEPLOY_ARGS).mutations, "and the run after changes nothing"
