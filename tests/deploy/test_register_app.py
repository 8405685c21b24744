"""scripts/register-app against the fake az (tests/deploy/fake_az.py): the registration is found by the
application id the function app records, never by its display name (issue 13 item 4: the attack tests
here fail on the main of before); app roles, Graph permissions and admin consent; role assignment;
client secret rotation; directory sync (the SCIM token, Entra's provisioning job) and its token's
rotation. No secret or token in any argument list or output.

Where the Graph request shapes come from (Microsoft Graph v1.0 reference, learn.microsoft.com/graph/api):
- POST /servicePrincipals/{id}/synchronization/jobs with {"templateId": ...}: "Create synchronizationJob"
  (synchronization-synchronization-post-jobs): the job is made disabled, "Call Start job to start".
- PUT /servicePrincipals/{id}/synchronization/secrets with {"value": [{"key": "BaseAddress", ...},
  {"key": "SecretToken", ...}]}: "Add synchronization secrets" (synchronization-serviceprincipal-put-
  synchronization), the synchronizationSecretKeyStringValuePair resource.
- GET/PUT .../jobs/{jobId}/schema, synchronizationRules[].objectMappings[].attributeMappings[] with a
  `source` attributeMappingSource (expression, name, type, parameters): "synchronizationSchema resource
  type" and "Update synchronizationSchema" (the PUT replaces the whole schema); directories[].objects[]
  .attributes[], each an attributeDefinition (name, type, multivalued, ...): "Configure synchronization
  with custom target attributes" (the attribute is defined on the target object, then mapped).
- The roles mapping: Entra's "Customize user provisioning attribute-mappings", "Provisioning a role to a
  SCIM app": AssertiveAppRoleAssignmentsComplex([appRoleAssignments]) "does PATCH replace" (the other
  "does PATCH add only and therefore does not remove any existing roles"), onto a `roles` attribute
  added to the attribute list first (String, multi-valued).
- POST .../jobs/{jobId}/start: "Start synchronizationJob". GET .../synchronization/templates:
  "List synchronization templates".
- POST /oauth2PermissionGrants {clientId, consentType: AllPrincipals, resourceId, scope}: "Create
  oAuth2PermissionGrant" (tenant-wide admin consent for delegated permissions).
- POST /servicePrincipals/{id}/appRoleAssignedTo {principalId, resourceId, appRoleId}: "Grant an
  appRoleAssignment for a service principal".
- POST /applicationTemplates/8adf8e6e-67b2-4cf2-a259-e3dc5476c621/instantiate {displayName}: "applicationTemplate:
  instantiate" (the non-gallery app: an application and its service principal, {"application", "servicePrincipal"}).
  Only such an app can be provisioned: "If you create an app registration, the corresponding service principal in
  enterprise apps won't be enabled for automatic user provisioning" (Entra, "Known issues for provisioning").
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import shlex
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.aadsts import hint_for
from tests.deploy.fake_az import GRAPH_SP, ME, NON_GALLERY_TEMPLATE, SECRET, TEMPLATE_ROLES
from tests.deploy.fake_azure import APP_ARGS, DEPLOY_ARGS, FakeAzure, Result
from tools.azure_cli import explain
from tools.deploy import names
from tools.register_app import role_ids

N = names("contoso-sso")
BASE = "https://contoso-sso.azurewebsites.net"
OURS = sorted(f"{BASE}/api/sso/{kind}/{page}" for kind in ("user", "agent") for page in ("callback", "signed-out"))
EVIL = "https://evil.example/cb"
ATTACKER = "attacker-object-id"
GRAPH_SCOPES = {"37f7f235-527c-4136-accd-4a02d197296e", "14dad69e-099b-42c9-810b-d002981feec1",
                "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0"}  # openid, profile, email (Microsoft Graph, delegated)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> tuple[str, list[dict]]:
    """One deploy for the module (about 70 az calls): each test starts from a copy of what it left."""
    azure = FakeAzure(tmp_path_factory.mktemp("deployed"))
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    return azure.state_path.read_text(), azure.all_calls


@pytest.fixture
def azure(tmp_path, deployed) -> FakeAzure:
    azure = FakeAzure(tmp_path)
    state, calls = deployed
    azure.state_path.write_text(state)
    azure.all_calls = copy.deepcopy(calls)
    return azure


def settings(azure: FakeAzure) -> dict:
    return azure.state["sites"]["contoso-sso"]["settings"]


def plant_app(azure: FakeAzure, app_id: str, *, owner: str, name: str = "Portal SSO (contoso-sso)") -> None:
    """An app registration made beforehand by `owner`, named like ours, with its own redirect URI."""
    state = azure.state
    state.setdefault("apps", {})[app_id] = {"appId": app_id, "displayName": name, "owners": [owner],
                                            "web": {"redirectUris": [EVIL]}, "credentials": []}
    azure.state = state


def secret_values(azure: FakeAzure, name: str) -> list[str]:
    return [v["value"] for v in azure.state["secrets"][f"{N['vault']}/{name}"]]


# -- issue 13 item 4: never adopt by display name ------------------------------------------------------

def test_an_app_named_like_ours_made_by_someone_else_is_never_adopted(azure):
    """The attack: any member may register apps; one named like ours, made beforehand with the attacker's
    redirect URI, got our service principal, our secret and OIDC_CLIENT_ID."""
    plant_app(azure, "planted-app-id", owner=ATTACKER)
    result = azure.run("register-app", *APP_ARGS)
    assert result.code == 0, result.err
    planted = azure.state["apps"]["planted-app-id"]
    assert planted["web"]["redirectUris"] == [EVIL] and planted["credentials"] == [], "the planted app is untouched"
    assert "planted-app-id" not in azure.state.get("sps", {}), "it gets no service principal"
    ours = settings(azure)["OIDC_CLIENT_ID"]
    assert ours != "planted-app-id" and azure.state["apps"][ours]["owners"] == [ME["id"]], "a new app of ours"
    assert sorted(azure.state["apps"][ours]["web"]["redirectUris"]) == OURS
    assert not any("ad app list" in c for c in result.commands), "no lookup by display name at all"


def test_adopting_an_existing_app_needs_app_id_and_ownership(azure):
    plant_app(azure, "planted-app-id", owner=ATTACKER)
    refused = azure.run("register-app", *APP_ARGS, "--app-id", "planted-app-id")
    assert refused.code != 0 and "not an owner" in refused.err, refused.err
    assert refused.mutations == [] and "OIDC_CLIENT_ID" not in settings(azure), "nothing changed"


def test_an_owned_app_is_adopted_with_app_id_and_foreign_redirect_uris_are_listed_and_removed(azure):
    assert azure.run("register-app", *APP_ARGS).code == 0, "the app used another registration before"
    plant_app(azure, "my-old-app", owner=ME["id"])
    state = azure.state
    state["apps"]["my-old-app"]["web"]["redirectUris"] += ["https://portal.contoso.test/logout"]
    state["apps"]["my-old-app"]["spa"] = {"redirectUris": ["https://evil.example/spa"]}  # codes without a secret
    azure.state = state
    kept = azure.run("register-app", *APP_ARGS, "--app-id", "my-old-app",
                     "--keep-redirect-uri", "https://portal.contoso.test/logout")
    assert kept.code == 0, kept.err
    assert settings(azure)["OIDC_CLIENT_ID"] == "my-old-app"
    (credential,) = azure.state["apps"]["my-old-app"]["credentials"]
    latest = azure.state["secrets"][f"{N['vault']}/oidc-client-secret"][-1]
    assert latest["tags"]["entraKeyId"] == credential["keyId"], "Key Vault holds the adopted app's own secret"
    assert f"removing a redirect URI this script did not make: {EVIL}" in kept.out
    assert sorted(azure.state["apps"]["my-old-app"]["web"]["redirectUris"]) == sorted(
        [*OURS, "https://portal.contoso.test/logout"]), "ours plus the one kept; the foreign one is gone"
    assert azure.state["apps"]["my-old-app"]["spa"]["redirectUris"] == [] and "https://evil.example/spa" in kept.out
    again = azure.run("register-app", *APP_ARGS)
    assert again.code == 0 and "my-old-app" == settings(azure)["OIDC_CLIENT_ID"], "found again by OIDC_CLIENT_ID"
    assert sorted(azure.state["apps"]["my-old-app"]["web"]["redirectUris"]) == OURS, "not kept unless named"


def test_a_public_base_url_reaches_the_app_too_and_a_later_deploy_keeps_it(azure):
    """--public-base-url (a custom domain) used to change only the registration: the app kept building its
    redirect URIs from the azurewebsites host, none of them registered any more (AADSTS50011 at every
    sign-in)."""
    custom = "https://sso.contoso.com"
    result = azure.run("register-app", *APP_ARGS, "--public-base-url", f"{custom}/")
    assert result.code == 0, result.err
    registered = azure.state["apps"][settings(azure)["OIDC_CLIENT_ID"]]["web"]["redirectUris"]
    assert sorted(registered) == sorted(uri.replace(BASE, custom) for uri in OURS)
    assert settings(azure)["PUBLIC_BASE_URL"] == custom, "the app builds the redirect URIs that are registered"
    redeploy = azure.run("deploy", *DEPLOY_ARGS)
    assert redeploy.code == 0, redeploy.err
    assert settings(azure)["PUBLIC_BASE_URL"] == custom and redeploy.mutations == [], redeploy.mutations
    assert f"User Single Sign On URL:  {custom}/api/sso/user/callback" in redeploy.out
    assert azure.run("register-app", *APP_ARGS).mutations == [], "and the next run finds it all as it should be"


def test_without_a_public_base_url_the_redirect_uris_use_the_apps_real_host_name(azure):
    """The review's case: `functionapp show --query defaultHostName` reads the top level, null in az 2.91's
    raw ARM answer for a Flex app, so register-app fell back to APP.azurewebsites.net, wrong for a Flex app
    with a unique default host name (AADSTS50011 at every sign-in)."""
    unique = "contoso-sso-b7dcb3f4a9e2c1d0.westeurope-01.azurewebsites.net"
    state = azure.state
    state["sites"]["contoso-sso"]["defaultHostName"] = unique
    del state["sites"]["contoso-sso"]["settings"]["PUBLIC_BASE_URL"]  # an older deploy's app, or removed by hand
    azure.state = state
    result = azure.run("register-app", *APP_ARGS)
    assert result.code == 0, result.err
    registered = azure.state["apps"][settings(azure)["OIDC_CLIENT_ID"]]["web"]["redirectUris"]
    assert sorted(registered) == sorted(uri.replace(BASE, f"https://{unique}") for uri in OURS), registered


def test_rotation_works_whatever_other_apps_are_named(azure):
    """Two apps of our name used to stop rotate-secret ("2 app registrations are named ...")."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    plant_app(azure, "twin-1", owner=ATTACKER)
    plant_app(azure, "twin-2", owner=ATTACKER)
    rotated = azure.run("register-app", *APP_ARGS, "rotate-secret")
    assert rotated.code == 0, rotated.err
    ours = settings(azure)["OIDC_CLIENT_ID"]
    assert len(azure.state["apps"][ours]["credentials"]) == 2
    assert azure.state["apps"]["twin-1"]["credentials"] == [] == azure.state["apps"]["twin-2"]["credentials"]


@pytest.mark.parametrize("subcommand", [[], ["rotate-secret"]], ids=["register", "rotate-secret"])
def test_a_registration_of_another_tenant_than_the_signed_in_one_is_never_taken_for_deleted(azure, subcommand):
    """`az ad app show` sees the signed-in tenant alone: a registration made by hand in the workforce
    tenant (OIDC_ISSUER_URL names it) was "no longer exists: making a new one", and the app moved to a
    new registration in the subscription's tenant, its people and their roles left behind."""
    other = "11111111-2222-3333-4444-555555555555"
    state = azure.state
    state["sites"]["contoso-sso"]["settings"].update({
        "OIDC_CLIENT_ID": "9a1b2c3d-0000-4000-8000-00000000abcd",
        "OIDC_ISSUER_URL": f"https://login.microsoftonline.com/{other}/v2.0"})
    azure.state = state
    result = azure.run("register-app", *APP_ARGS, *subcommand)
    assert result.code != 0 and result.mutations == [], result.out
    assert f"az login --tenant {other}" in result.err and "no longer exists" not in result.out + result.err, result.err
    assert settings(azure)["OIDC_CLIENT_ID"] == "9a1b2c3d-0000-4000-8000-00000000abcd"


def test_subcommands_need_the_recorded_registration(azure):
    result = azure.run("register-app", *APP_ARGS, "rotate-secret")
    assert result.code != 0 and "records no app registration" in result.err and result.mutations == []


# -- the registration ------------------------------------------------------------------------------

def test_register_app_appends_a_secret_straight_into_key_vault_and_never_shows_it(azure):
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
    assert sorted(app["web"]["redirectUris"]) == OURS, "each kind's callback and signed-out page"
    assert {c["name"] for c in app["optionalClaims"]["idToken"]} == {"email", "xms_edov", "auth_time"}
    assert {c["name"] for c in app["optionalClaims"]["accessToken"]} == {"email"}, "README: both tokens"
    assert azure.state["sps"][app["appId"]]["appRoleAssignmentRequired"] is True
    assert "WindowsAzureActiveDirectoryIntegratedApp" in azure.state["sps"][app["appId"]]["tags"], \
        "listed under Enterprise applications, where people are assigned"
    assert settings(azure)["OIDC_CLIENT_ID"] == app["appId"]
    assert settings(azure)["OIDC_ISSUER_URL"] == \
        "https://login.microsoftonline.com/tenant-0000/v2.0/.well-known/openid-configuration"
    assert app["appId"] in result.out and "openid-configuration" in result.out
    vault_id = azure.state["vaults"][N["vault"]]["id"]
    assert ["contoso-sso-principal", "Key Vault Secrets User", f"{vault_id}/secrets/oidc-client-secret"] in \
        [r[:3] for r in azure.state["roles"]], "the app may read that secret (and not the whole vault)"
    again = azure.run("register-app", *APP_ARGS)
    assert again.code == 0 and again.mutations == [], f"a second run changes nothing: {again.mutations}"


def test_a_rerun_compares_only_what_it_sets_and_leaves_the_registration_alone(azure):
    """The hunt's case: Graph answers each app role with its read-only `origin` (which infra/app-roles.json
    does not set) and the lists in its own order, so every rerun rewrote the registration and said
    "Changed: app roles"; README promises a rerun changes nothing and says so."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    again = azure.run("register-app", *APP_ARGS)
    assert again.code == 0, again.err
    assert not [c for c in again.commands if c.startswith("ad app update")], again.mutations
    assert "Nothing to change" in again.out, again.out
    state = azure.state  # edited in the portal: what we set differs again
    (app,) = state["apps"].values()
    app["appRoles"][0]["displayName"] = "Portal users"
    app["optionalClaims"]["idToken"] = app["optionalClaims"]["idToken"][:1]
    azure.state = state
    fixed = azure.run("register-app", *APP_ARGS)
    assert fixed.code == 0, fixed.err
    assert "Changed:\n  - optional claims, app roles" in fixed.out, fixed.out
    (app,) = azure.state["apps"].values()
    assert {r["displayName"] for r in app["appRoles"] if r["value"] in ("Portal.User", "Portal.Agent")} == \
        {"Portal user", "Portal agent"}
    assert {c["name"] for c in app["optionalClaims"]["idToken"]} == {"email", "xms_edov", "auth_time"}


@pytest.mark.parametrize("as_set", [str.upper, lambda live: live + "\n", lambda live: f" {live} "],
                         ids=["upper-case", "trailing-newline", "padded"])
def test_a_client_id_recorded_in_another_form_names_the_same_registration_not_one_to_delete(azure, as_set):
    """The hunt's case: OIDC_CLIENT_ID written in upper case (the app accepts it, and Graph matches an appId
    without regard to case) was taken for another registration than the one Graph returned: the rerun treated
    it as a move and, exit 0, told the admin to delete the live registration. One set by hand with a newline
    or spaces (which the app strips) was looked up as written, found nothing, and a new registration was
    made: the people assigned to the old one's roles lost the portal."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    state = azure.state
    live = state["sites"]["contoso-sso"]["settings"]["OIDC_CLIENT_ID"]
    state["sites"]["contoso-sso"]["settings"]["OIDC_CLIENT_ID"] = as_set(live)
    azure.state = state
    again = azure.run("register-app", *APP_ARGS)
    assert again.code == 0, again.err
    assert "delete" not in again.out.lower(), again.out
    assert again.mutations == [], "the same registration: nothing moves, nothing is rewritten"
    assert list(azure.state["apps"]) == [live]


def test_the_roles_a_non_gallery_app_comes_with_are_kept_as_they_are(azure):
    """An app made from the non-gallery template has two enabled roles of its own (User, msiam_access), and
    Graph refuses a PATCH that drops an enabled role: the first run's update replaced the roles with ours and
    failed there, on every real tenant. Neither gives a portal role (admission needs Portal.User/Agent)."""
    result = azure.run("register-app", *APP_ARGS)
    assert result.code == 0, result.err
    (app,) = azure.state["apps"].values()
    assert {r["id"] for r in TEMPLATE_ROLES} <= {r["id"] for r in app["appRoles"]}, "the template's roles stay"
    assert {r["value"] for r in app["appRoles"]} >= {"Portal.User", "Portal.Agent"}
    # Enterprise applications > Users and groups offers roles by display name: the template's "User" (no portal
    # role) was shown twice, beside ours, so an admin could pick the one that lets no one in
    offered = [r["displayName"] for r in app["appRoles"] if r["isEnabled"] and "User" in r["allowedMemberTypes"]]
    assert len(offered) == len(set(offered)), offered
    assert azure.run("register-app", *APP_ARGS).mutations == [], "and a rerun changes nothing"


def test_app_roles_graph_permissions_and_admin_consent(azure):
    assert azure.run("register-app", *APP_ARGS).code == 0
    (app,) = azure.state["apps"].values()
    roles = {r["value"]: r for r in app["appRoles"]}
    assert set(roles) - {None} == {"Portal.User", "Portal.Agent"}, "ours, beside the template's own (no value)"
    assert (roles["Portal.User"]["displayName"], roles["Portal.Agent"]["displayName"]) == \
        ("Portal user", "Portal agent")
    assert all(r["allowedMemberTypes"] == ["User"] and r["isEnabled"] for r in roles.values())
    assert {k: roles[v]["id"] for k, v in (("user", "Portal.User"), ("agent", "Portal.Agent"))} == role_ids(), \
        "the roles keep their fixed ids"
    # ... which are these for good: an edited id in infra/app-roles.json orphans every assignment in Entra
    assert role_ids() == {"user": "aee46ebe-801b-4f11-a02b-2623bce9546c",
                          "agent": "548d7c5a-f9b2-4845-89e8-99ddcd47bd0d"}
    (graph,) = app["requiredResourceAccess"]
    assert graph["resourceAppId"] == "00000003-0000-0000-c000-000000000000"
    assert {a["id"] for a in graph["resourceAccess"]} == GRAPH_SCOPES
    assert {a["type"] for a in graph["resourceAccess"]} == {"Scope"}, "delegated"
    (grant,) = azure.state["permission_grants"]
    assert (grant["clientId"], grant["consentType"], grant["resourceId"]) == (
        f"sp-{app['appId']}", "AllPrincipals", GRAPH_SP)
    assert set(grant["scope"].split()) == {"openid", "profile", "email"}


def test_a_rerun_finds_the_admin_consent_past_graphs_first_page(azure):
    """People who consented for themselves (consentType Principal) have grants of their own for the app: the
    tenant-wide one may be listed on a later page, and reading one page made a second."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    state = azure.state
    client = state["permission_grants"][0]["clientId"]
    state["permission_grants"][:0] = [{"id": f"own-{i}", "clientId": client, "consentType": "Principal",
                                       "principalId": f"person-{i}", "resourceId": GRAPH_SP, "scope": "openid"}
                                      for i in range(100)]
    azure.state = state
    again = azure.run("register-app", *APP_ARGS)
    assert again.code == 0 and again.mutations == [], again.mutations
    assert any(f"$filter=clientId eq '{client}'&$skiptoken=100" in c for c in again.commands), "page 2 was read"
    assert [g["consentType"] for g in azure.state["permission_grants"]].count("AllPrincipals") == 1


def test_without_the_role_for_consent_the_run_says_who_can_grant_it(azure):
    azure.state = {**azure.state, "refuse": {"oauth2PermissionGrants --headers": "Forbidden (403): "
                                             "Authorization_RequestDenied Insufficient privileges"}}
    result = azure.run("register-app", *APP_ARGS)
    assert result.code == 0, result.err
    assert "admin consent was not granted" in result.err
    for needed in ("Privileged Role Administrator", "Cloud Application Administrator", "Application Administrator",
                   "adminconsent?client_id=", "AADSTS65001"):
        assert needed in result.err, needed
    assert settings(azure)["OIDC_CLIENT_ID"], "the rest of the registration is done"


def test_a_graph_outage_at_consent_is_an_error_not_a_missing_role_whatever_its_request_id_holds(azure):
    """"403" was a marker of a refusal anywhere in az's message: a 503 whose request id held 403 was told
    to ask for an Entra role, and the run exited 0 without the consent."""
    azure.state = {**azure.state, "refuse": {"oauth2PermissionGrants --headers": "Service Unavailable (503): "
                                             "request-id 5c1f4030-7d2e-4a1b-9f0c-2e8d4f6a1b3c"}}
    result = azure.run("register-app", *APP_ARGS)
    assert result.code != 0 and "admin consent was not granted" not in result.err, result.err


def test_register_app_without_permission_for_app_registrations(azure):
    azure.state = {**azure.state, "refuse": {"applicationTemplates": "Insufficient privileges to complete the "
                                                                     "operation."}}
    result = azure.run("register-app", *APP_ARGS)
    assert result.code != 0 and "Application Administrator" in result.err, result.err


def test_issued_secret_end_date_is_in_the_future(azure):
    azure.run("register-app", *APP_ARGS)
    (app,) = azure.state["apps"].values()
    end = datetime.fromisoformat(app["credentials"][0]["endDateTime"].replace("Z", "+00:00"))
    assert timedelta(days=150) < end - datetime.now(UTC) < timedelta(days=200)


HAND_MADE_ROLES = {"Portal.User": "hand-made-user-role-id", "Portal.Agent": "hand-made-agent-role-id"}


def test_a_registration_configured_by_hand_keeps_one_role_per_value_and_its_people(azure):
    """The hunt's case: made by hand as the setup page says (Portal.User and Portal.Agent, enabled, ids of
    Entra's choosing), adopted with --app-id: the PATCH sent ours beside them, two roles per value, which Graph
    refuses (DuplicateValue), and the enabled ones cannot be dropped either. Our roles are matched by value
    too: Graph's ids stay, so the people assigned by hand keep their roles, and assign and a move use them."""
    plant_app(azure, "by-hand-app-id", owner=ME["id"])
    state = azure.state
    state["apps"]["by-hand-app-id"]["appRoles"] = [
        {"allowedMemberTypes": ["User"], "description": value, "displayName": value, "id": role_id,
         "isEnabled": True, "value": value} for value, role_id in HAND_MADE_ROLES.items()]
    state.setdefault("sps", {})["by-hand-app-id"] = {"id": "sp-by-hand-app-id", "appId": "by-hand-app-id",
                                                     "applicationTemplateId": None, "appRoleAssignmentRequired": True,
                                                     "tags": ["WindowsAzureActiveDirectoryIntegratedApp"]}
    state.setdefault("assignments", {})["sp-by-hand-app-id"] = [
        {"id": "by-hand", "principalId": "object-of-bo@contoso.test", "principalType": "User",
         "principalDisplayName": "Bo", "appRoleId": HAND_MADE_ROLES["Portal.User"]}]
    azure.state = state
    adopted = azure.run("register-app", *APP_ARGS, "--app-id", "by-hand-app-id")
    assert adopted.code == 0, adopted.err
    roles = azure.state["apps"]["by-hand-app-id"]["appRoles"]
    assert sorted((r["value"], r["id"]) for r in roles) == sorted(HAND_MADE_ROLES.items()), "one per value, Graph's id"
    assert {r["displayName"] for r in roles} == {"Portal user", "Portal agent"}, "given our settings"
    assert azure.run("register-app", *APP_ARGS).mutations == [], "then nothing is left to do"
    assert assign(azure, "--user", "ann@contoso.test", kind="agent").code == 0
    assert ("object-of-ann@contoso.test", HAND_MADE_ROLES["Portal.Agent"]) in {
        (a["principalId"], a["appRoleId"]) for a in azure.state["assignments"]["sp-by-hand-app-id"]}
    moved = azure.run("register-app", *APP_ARGS, "--new-registration")
    assert moved.code == 0, moved.err
    new = settings(azure)["OIDC_CLIENT_ID"]
    assert {(a["principalId"], a["appRoleId"]) for a in azure.state["assignments"][f"sp-{new}"]} == {
        ("object-of-bo@contoso.test", role_ids()["user"]), ("object-of-ann@contoso.test", role_ids()["agent"])}, \
        "each person keeps the kind they had, as the new registration's role"


@pytest.mark.parametrize("listed", ["first", "last"])  # by Graph (fake az answers a registration's roles reversed)
def test_a_disabled_role_of_a_portal_value_beside_the_enabled_one_is_not_taken_for_it(azure, listed):
    """The hunt's case: with a disabled Portal.User of another id beside the enabled one, whichever Graph
    listed last was taken for the kind's role: the update dropped the enabled one (Graph refuses:
    CannotDeleteOrUpdateEnabledEntitlement, on every run) and assign gave the disabled role."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    state = azure.state
    (app,) = state["apps"].values()
    old = {"allowedMemberTypes": ["User"], "description": "old", "displayName": "Old user",
           "id": "dddddddd-0000-0000-0000-000000000001", "isEnabled": False, "value": "Portal.User"}
    app["appRoles"].insert(0 if listed == "last" else len(app["appRoles"]), old)
    azure.state = state
    again = azure.run("register-app", *APP_ARGS)
    assert again.code == 0, again.err
    assert assign(azure, "--user", "bo@contoso.test", kind="user").code == 0
    (assigned,) = [a["appRoleId"] for a in azure.state["assignments"][f"sp-{app['appId']}"]
                   if a["principalId"] == "object-of-bo@contoso.test"]
    assert assigned == role_ids()["user"], "the enabled role"


# -- a registration Entra provisions ----------------------------------------------------------------

def test_a_new_registration_is_an_enterprise_app_made_from_entras_non_gallery_template(azure):
    """The verified defect: `az ad app create` makes a plain app registration, whose service principal Entra
    never provisions (no `scim` template, no Provisioning in the admin center), so `provisioning` failed on a
    real tenant. The registration is now instantiated from the non-gallery template (one app for OIDC sign-in
    and SCIM), then given our settings by the same update an adopted registration gets."""
    result = azure.run("register-app", *APP_ARGS)
    assert result.code == 0, result.err
    assert not [c for c in result.commands if c.startswith("ad app create")], "no plain app registration"
    (made,) = [c for c in result.calls if "instantiate" in " ".join(c["argv"])]
    assert f"/applicationTemplates/{NON_GALLERY_TEMPLATE}/instantiate" in made["argv"][made["argv"].index("--uri") + 1]
    assert json.loads(made["argv"][made["argv"].index("--body") + 1]) == {"displayName": "Portal SSO (contoso-sso)"}
    (app,) = azure.state["apps"].values()
    assert azure.state["sps"][app["appId"]]["applicationTemplateId"] == NON_GALLERY_TEMPLATE
    assert not [c for c in result.commands if c.startswith("ad sp create")], "the template made the service principal"
    assert sum(c.startswith(f"ad sp show --id {app['appId']} ") for c in result.commands) == 1, "read once (~1 s each)"
    assert app["signInAudience"] == "AzureADMyOrg", "single tenant, whatever the template made"
    assert sorted(app["web"]["redirectUris"]) == OURS and {r["value"] for r in app["appRoles"]} - {None} == {
        "Portal.User", "Portal.Agent"}
    assert settings(azure)["OIDC_CLIENT_ID"] == app["appId"]
    (update,) = [c for c in result.commands if c.startswith("ad app update")]
    assert "--sign-in-audience AzureADMyOrg" in update and "--app-roles" in update, "one update, bring_up_to_date's"
    assert azure.run("register-app", *APP_ARGS).mutations == [], "then nothing is left to do"


def test_a_new_registration_graph_cannot_read_yet_is_waited_for_not_made_twice(azure):
    """Graph is eventually consistent: right after the instantiate, the application and its service principal
    may be "not found" for a few seconds; the run waits for them (a read of a missing service principal
    would otherwise make a second one, which Graph refuses)."""
    azure.state = {**azure.state, "replication_delay": 1}
    result = azure.run("register-app", *APP_ARGS)
    assert result.code == 0, result.err
    assert "waiting for Entra" in result.out, result.out
    (app,) = azure.state["apps"].values()
    assert list(azure.state["sps"]) == [app["appId"]] and settings(azure)["OIDC_CLIENT_ID"] == app["appId"]
    assert sorted(app["web"]["redirectUris"]) == OURS


def planned_writes(result) -> list[tuple[str, ...]]:
    """The writes a dry run prints ("would run: az ..."), or a real run made, each as its command words
    (for `az rest`: its method and the last segment of its URI's path), in order."""
    if result.calls:
        runs = [c["argv"] for c in result.calls]
    else:
        runs = [shlex.split(line) for line in re.findall(r"^would run: az (.*)$", result.out, re.MULTILINE)]
    writes = Result(0, "", "", [{"argv": argv} for argv in runs]).mutations
    keys = []
    for argv in (write.split() for write in writes):  # the words up to the first option, --method, --uri
        words = tuple(itertools.takewhile(lambda word: not word.startswith("-"), argv))
        if words == ("rest",):
            words += (argv[argv.index("--method") + 1], argv[argv.index("--uri") + 1].split("?")[0].rsplit("/", 1)[1])
        keys.append(words)
    return keys


def test_a_dry_run_on_an_empty_tenant_plans_the_writes_a_real_run_makes_in_its_order(azure):
    """README: --dry-run "prints every command a run on an empty subscription would issue". For a new
    registration it planned a service principal to create and two updates of it, which the template's
    instantiate makes as they should be (a real run issues none), and OIDC_CLIENT_ID last, where a real run
    writes it right after the instantiate."""
    dry = azure.run("register-app", *APP_ARGS, "--dry-run")
    assert dry.code == 0 and dry.calls == [], dry.err
    real = azure.run("register-app", *APP_ARGS)
    assert real.code == 0, real.err
    assert planned_writes(dry) == planned_writes(real), (planned_writes(dry), planned_writes(real))
    client_id = settings(azure)["OIDC_CLIENT_ID"]
    assert [c.split(" --only")[0].replace(client_id, "<client id>") for c in real.commands
            if c.startswith(("ad app show", "ad sp show"))] == [
        c.split(" --only")[0].replace("'", "") for c in re.findall(r"^would run: az (ad (?:app|sp) show.*)$", dry.out,
                                                                   re.MULTILINE)], "and its reads"
    summary = dry.out[dry.out.index("Would create:"):].replace("Would create:", "Created:").replace(
        "Would change:", "Changed:")
    assert summary.strip() == real.out[real.out.index("Created:"):].strip(), (summary, real.out)


def adopt_plain_registration(azure: FakeAzure) -> str:
    """The function app on a plain app registration (made by `az ad app create`, as register-app did before,
    or adopted with --app-id), with a person assigned: returns its application id."""
    plant_app(azure, "plain-app-id", owner=ME["id"])
    assert azure.run("register-app", *APP_ARGS, "--app-id", "plain-app-id").code == 0
    assert azure.state["sps"]["plain-app-id"]["applicationTemplateId"] is None
    assert assign(azure, "--user", "ann@contoso.test", kind="agent").code == 0
    return "plain-app-id"


def test_provisioning_a_plain_app_registration_stops_before_any_change_and_says_what_works(azure):
    """The defect's second half: on a registration Entra does not provision, the run stored the scim-token,
    granted the app a role on it and set SCIM_TOKEN_NAME (the setup page said directory sync was on, with a
    token Entra never got) before it stopped at the template, with advice that led nowhere."""
    adopt_plain_registration(azure)
    result = azure.run("register-app", *APP_ARGS, "provisioning")
    assert result.code != 0
    assert "won't be enabled for automatic user provisioning" in result.err, "why, in Microsoft's words"
    assert "register-app --resource-group rg-sso --app contoso-sso --new-registration" in result.err, result.err
    assert "choose Automatic once by hand" not in result.err
    assert "contoso-sso-kv/scim-token" not in azure.state.get("secrets", {}), "no token stored"
    assert not [r for r in azure.state["roles"] if r[2].endswith("/secrets/scim-token")], "no role granted"
    assert "SCIM_TOKEN_NAME" not in settings(azure), "directory sync is not shown as on"
    assert not [c for c in result.mutations if "synchronization" in c or "scim-token" in c], result.mutations
    assert not azure.state.get("sync", {}).get("sp-plain-app-id", {}).get("jobs"), "no job"


def test_new_registration_moves_the_app_to_one_entra_provisions_with_its_people(azure):
    old = adopt_plain_registration(azure)
    old_credentials = azure.state["apps"][old]["credentials"]
    moved = azure.run("register-app", *APP_ARGS, "--new-registration")
    assert moved.code == 0, moved.err
    new = settings(azure)["OIDC_CLIENT_ID"]
    assert new != old and azure.state["sps"][new]["applicationTemplateId"] == NON_GALLERY_TEMPLATE
    (credential,) = azure.state["apps"][new]["credentials"]
    assert secret_versions(azure)[-1]["tags"]["entraKeyId"] == credential["keyId"], "Key Vault holds its own secret"
    assert [(a["principalId"], a["appRoleId"]) for a in azure.state["assignments"][f"sp-{new}"]] == [
        ("object-of-ann@contoso.test", role_ids()["agent"])], "the people assigned keep their role"
    assert azure.state["apps"][old]["credentials"] == old_credentials, "the old registration is left as it was"
    assert f"az ad app delete --id {old}" in moved.out, moved.out
    settings_set = [i for i, c in enumerate(moved.commands) if "appsettings set" in c]
    stored = [i for i, c in enumerate(moved.commands) if "oidc-client-secret --file" in c]
    assert settings_set and stored and settings_set[-1] > stored[-1] and len(settings_set) == 1, \
        "OIDC_CLIENT_ID moves once the new secret is stored (the old registration signs people in until then)"
    synced = azure.run("register-app", *APP_ARGS, "provisioning")
    assert synced.code == 0, synced.err
    assert azure.state["sync"][f"sp-{new}"]["jobs"][0]["schedule"]["state"] == "Active"
    assert azure.run("register-app", *APP_ARGS).mutations == [], "then nothing is left to do"


STOPS = {  # where a move stops: (what the fake az refuses, its answer)
    "key-vault": ("oidc-client-secret --file", "(Forbidden) Caller is not authorized to perform action on resource."),
    "app-settings": ("appsettings set", "(AuthorizationFailed) The client does not have authorization")}


@pytest.mark.parametrize("stopped_at", list(STOPS))
def test_a_move_that_stops_partway_names_the_rerun_that_carries_on(azure, stopped_at):
    """Until the end of a --new-registration run the function app records the old registration: a plain
    rerun would not find the new one, and another --new-registration would make a third. Stopped before Key
    Vault took the new secret, the old registration still signs people in; stopped after it (the error said
    "The function app still uses its previous registration" then too), the app reads the new one's secret
    within SECRET_CACHE_SECONDS and signs no one in: the error says so, and to rerun at once. The rerun
    makes no second secret."""
    adopt_plain_registration(azure)
    azure.state = {**azure.state, "refuse": dict([STOPS[stopped_at]])}
    failed = azure.run("register-app", *APP_ARGS, "--new-registration")
    assert failed.code != 0
    (new,) = [a for a in azure.state["apps"] if a != "plain-app-id"]
    assert settings(azure)["OIDC_CLIENT_ID"] == "plain-app-id", "the app records the old one until the move is done"
    if stopped_at == "key-vault":
        assert "still uses its previous registration" in failed.err and f"--app-id {new}" in failed.err, failed.err
    else:
        (credential,) = azure.state["apps"][new]["credentials"]
        assert secret_versions(azure)[-1]["tags"]["entraKeyId"] == credential["keyId"], "Key Vault holds the new one's"
        assert "still uses its previous registration" not in failed.err and "no one signs in" in failed.err, failed.err
        assert f"--app-id {new} in place of --new-registration at once" in failed.err, failed.err
    azure.state = {**azure.state, "refuse": {}}
    rerun = azure.run("register-app", *APP_ARGS, "--app-id", new)
    assert rerun.code == 0, rerun.err
    assert settings(azure)["OIDC_CLIENT_ID"] == new and len(azure.state["apps"]) == 2
    assert len(azure.state["apps"][new]["credentials"]) == 1
    # README: the move "then prints the `az ad app delete` that removes the old one" (the rerun's --app-id
    # printed nothing: the hunt's case)
    assert "az ad app delete --id plain-app-id" in rerun.out, rerun.out
    assert "az ad app delete" not in azure.run("register-app", *APP_ARGS).out, "once moved, no more"


def test_new_registration_is_only_for_making_one(azure):
    for argv in (["--new-registration", "--app-id", "x"], ["--new-registration", "provisioning"]):
        result = azure.run("register-app", *APP_ARGS, *argv)
        assert result.code == 2 and "--new-registration" in result.err and result.calls == [], (argv, result.err)


def test_a_client_certificate_the_app_is_told_to_use_is_one_it_may_read(azure):
    """docs/operating.md has the admin set OIDC_CLIENT_CERTIFICATE_NAME; nothing let the app's identity read it
    (Key Vault Secrets User is granted per secret), so Key Vault answered 403."""
    sign_in_with_a_certificate(azure, as_certificate=True)
    assert azure.run("register-app", *APP_ARGS).code == 0
    vault_id = azure.state["vaults"][N["vault"]]["id"]
    assert ["contoso-sso-principal", "Key Vault Secrets User", f"{vault_id}/secrets/oidc-client-certificate"] in \
        [r[:3] for r in azure.state["roles"]]
    assert azure.run("register-app", *APP_ARGS).mutations == []


def test_an_app_signing_in_with_a_certificate_gets_no_client_secret_and_rotate_secret_says_so(azure):
    """Switched to a certificate (docs/operating.md) and its Entra secret deleted: a rerun put a new shared
    secret back on the registration, into a Key Vault secret the app never reads, and rotate-secret
    exited 0 having "rotated" that, not the certificate the app signs in with."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    sign_in_with_a_certificate(azure, as_certificate=True)  # the vault holds it (else register-app refuses)
    state = azure.state
    for app in state["apps"].values():
        app["credentials"] = []
    azure.state = state
    rerun = azure.run("register-app", *APP_ARGS)
    assert rerun.code == 0, rerun.err
    (app,) = azure.state["apps"].values()
    assert app["credentials"] == [], "no client secret for an app that signs in with a certificate"
    rotated = azure.run("register-app", *APP_ARGS, "rotate-secret")
    assert rotated.code == 1 and "OIDC_CLIENT_CERTIFICATE_NAME" in rotated.err and rotated.mutations == []
    (app,) = azure.state["apps"].values()
    assert app["credentials"] == []


def client_certificate_pem() -> tuple[str, str]:
    """(a self-signed certificate with its private key, PEM, as a Key Vault secret holds it; its thumbprint)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portal-sso")])
    now = datetime.now(UTC)
    cert = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(
        x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=30)).sign(
        key, hashes.SHA256())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    pem = private.decode() + cert.public_bytes(serialization.Encoding.PEM).decode()
    return pem, cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Entra's thumbprint is SHA-1


def sign_in_with_a_certificate(azure: FakeAzure, *, as_certificate: bool) -> str:
    """OIDC_CLIENT_CERTIFICATE_NAME set, as docs/operating.md has it, to a Key Vault certificate (which Key
    Vault also serves as the secret of the same name) or to a plain Key Vault secret holding one; the
    registration the app uses holds it. Returns its thumbprint."""
    pem, thumbprint = client_certificate_pem()
    state = azure.state
    state["sites"]["contoso-sso"]["settings"]["OIDC_CLIENT_CERTIFICATE_NAME"] = "oidc-client-certificate"
    state.setdefault("secrets", {})[f"{N['vault']}/oidc-client-certificate"] = [
        {"id": "https://contoso-sso-kv.vault.azure.net/secrets/oidc-client-certificate/v1", "value": pem,
         "contentType": "application/x-pem-file", "attributes": {"created": "2026-01-01T00:00:00+00:00"}, "tags": {}}]
    if as_certificate:
        state.setdefault("certificates", {})[f"{N['vault']}/oidc-client-certificate"] = {
            "id": "https://contoso-sso-kv.vault.azure.net/certificates/oidc-client-certificate/v1",
            "x509ThumbprintHex": thumbprint}
    for app in state.get("apps", {}).values():
        app["keyCredentials"] = [{"keyId": "cert-key-id", "customKeyIdentifier": thumbprint,
                                  "type": "AsymmetricX509Cert", "usage": "Verify"}]
    azure.state = state
    return thumbprint


@pytest.mark.parametrize("as_certificate", [True, False], ids=["key-vault-certificate", "key-vault-secret"])
def test_a_move_to_a_new_registration_gives_it_the_certificate_the_app_signs_in_with(azure, as_certificate):
    """With OIDC_CLIENT_CERTIFICATE_NAME set, a registration new to the function app got no credential at all
    (only the app's read access to the certificate), then OIDC_CLIENT_ID moved to it: every login failed with
    invalid_client. Now the certificate is added to it (appended) before the move, once."""
    old = adopt_plain_registration(azure)
    thumbprint = sign_in_with_a_certificate(azure, as_certificate=as_certificate)
    moved = azure.run("register-app", *APP_ARGS, "--new-registration")
    assert moved.code == 0, moved.err
    new = settings(azure)["OIDC_CLIENT_ID"]
    assert new != old
    assert [c["customKeyIdentifier"] for c in azure.state["apps"][new]["keyCredentials"]] == [thumbprint]
    assert azure.state["apps"][new]["credentials"] == [], "no client secret for an app that signs in with a certificate"
    (added,) = [i for i, c in enumerate(moved.commands) if c.startswith(f"ad app credential reset --id {new}")]
    (moved_at,) = [i for i, c in enumerate(moved.commands) if "appsettings set" in c]
    assert added < moved_at, "the certificate is on the new registration before OIDC_CLIENT_ID names it"
    assert "--append" in moved.commands[added].split()
    if as_certificate:
        assert f"--keyvault {N['vault']} --cert oidc-client-certificate" in moved.commands[added]
    else:  # a secret is no Key Vault certificate: its public certificate goes through a file, never its key
        call = moved.calls[added]
        assert call["file_mode"] == "0o600" and "PRIVATE KEY" not in moved.commands[added]
        stored = secret_values(azure, "oidc-client-certificate")[0]
        public = stored[stored.index("-----BEGIN CERTIFICATE-----"):]
        assert call["file_sha256"] == hashlib.sha256(public.encode()).hexdigest(), "the public certificate alone"
    assert azure.run("register-app", *APP_ARGS).mutations == [], "then nothing is left to do"


def test_an_adopted_registration_that_holds_the_certificate_already_is_not_given_it_again(azure):
    plant_app(azure, "owned-app-id", owner=ME["id"])
    thumbprint = sign_in_with_a_certificate(azure, as_certificate=True)
    adopted = azure.run("register-app", *APP_ARGS, "--app-id", "owned-app-id")
    assert adopted.code == 0, adopted.err
    assert not [c for c in adopted.commands if c.startswith("ad app credential reset")], adopted.commands
    assert [c["customKeyIdentifier"] for c in azure.state["apps"]["owned-app-id"]["keyCredentials"]] == [thumbprint]
    assert settings(azure)["OIDC_CLIENT_ID"] == "owned-app-id"


# Key Vault's RBAC refusing a runner without Key Vault Certificate User the certificate, and one without Secrets
# User the secret of the same name (which Key Vault serves for a certificate too)
CERTIFICATES_REFUSED = ("keyvault certificate show", "(Forbidden) Caller is not authorized to perform action on "
                        "resource.\nAction: 'Microsoft.KeyVault/vaults/certificates/read'\nCode: ForbiddenByRbac")
CERTIFICATE_SECRET_REFUSED = ("keyvault secret show --vault-name contoso-sso-kv --name oidc-client-certificate",
                              CERTIFICATES_REFUSED[1].replace("certificates/read", "secrets/getSecret/action"))
CERTIFICATE_STOPS = {  # where a certificate app's first run stops after OIDC_CLIENT_ID names the registration
    "certificate-refused": dict([CERTIFICATES_REFUSED, CERTIFICATE_SECRET_REFUSED]),
    "graph-unavailable": dict([("ad app update", "(ServiceUnavailable) Service Unavailable")])}


@pytest.mark.parametrize("stopped_at", list(CERTIFICATE_STOPS))
def test_a_certificate_apps_first_run_stopped_partway_gives_the_registration_its_certificate_on_the_rerun(
        azure, stopped_at):
    """The hunt's case: the first run records OIDC_CLIENT_ID as soon as the registration is made, and the
    certificate was added only to a registration the app did not record, so after a stop (Key Vault refusing
    the certificate without Key Vault Certificate User, or Graph's 503) the rerun took the registration for one
    that had it: exit 0, no certificate and no client secret on it, every sign-in invalid_client."""
    thumbprint = sign_in_with_a_certificate(azure, as_certificate=True)
    azure.state = {**azure.state, "refuse": CERTIFICATE_STOPS[stopped_at]}
    failed = azure.run("register-app", *APP_ARGS)
    assert failed.code != 0
    if stopped_at == "certificate-refused":
        assert "Key Vault Certificate User" in failed.err, failed.err
    (made,) = azure.state["apps"]
    assert settings(azure)["OIDC_CLIENT_ID"] == made, "recorded at once, so the rerun finds it"
    azure.state = {**azure.state, "refuse": {}}
    rerun = azure.run("register-app", *APP_ARGS)
    assert rerun.code == 0, rerun.err
    assert [c["customKeyIdentifier"] for c in azure.state["apps"][made]["keyCredentials"]] == [thumbprint], \
        "the registration the app signs in with holds its certificate"
    assert azure.state["apps"][made]["credentials"] == [], "and no client secret"
    assert azure.run("register-app", *APP_ARGS).mutations == [], "then nothing is left to do"


def remove_certificates(azure: FakeAzure) -> None:
    """The registration's certificates removed, as in the portal (Certificates & secrets)."""
    state = azure.state
    (app,) = state["apps"].values()
    app["keyCredentials"] = []
    azure.state = state


def test_a_certificate_app_whose_registration_lost_its_certificate_gets_it_back(azure):
    """Removed in the portal (or never added, as above): a rerun appends it again, once."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    thumbprint = sign_in_with_a_certificate(azure, as_certificate=False)
    remove_certificates(azure)
    rerun = azure.run("register-app", *APP_ARGS)
    assert rerun.code == 0, rerun.err
    (app,) = azure.state["apps"].values()
    assert [c["customKeyIdentifier"] for c in app["keyCredentials"]] == [thumbprint]


def test_a_certificate_kept_as_a_plain_secret_needs_no_certificate_role(azure):
    """The hunt's case: each run asked Key Vault for a certificate first, which Key Vault's RBAC refuses (403)
    to a runner without Key Vault Certificate User before it looks whether there is one; a certificate kept as
    a plain secret (which docs/operating.md says needs its public certificate alone) failed every run, though
    the registration held it. The secret, which the runner may read, gives its thumbprint."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    sign_in_with_a_certificate(azure, as_certificate=False)
    assert azure.run("register-app", *APP_ARGS).code == 0  # the function app may read it from now on
    azure.state = {**azure.state, "refuse": dict([CERTIFICATES_REFUSED])}
    again = azure.run("register-app", *APP_ARGS)
    assert again.code == 0, again.err
    assert again.mutations == [], "the registration holds it already"
    assert [c for c in again.commands if c.startswith("keyvault secret show") and "oidc-client-certificate" in c]
    remove_certificates(azure)
    lost = azure.run("register-app", *APP_ARGS)
    assert lost.code == 0, lost.err
    (added,) = [c for c in lost.commands if c.startswith("ad app credential reset")]
    assert "--cert @" in added and "--keyvault" not in added, "its public certificate, from the secret"
    azure.state = {**azure.state, "refuse": dict([CERTIFICATES_REFUSED, CERTIFICATE_SECRET_REFUSED])}
    refused = azure.run("register-app", *APP_ARGS)
    assert refused.code != 0
    assert "Key Vault Certificate User" in refused.err and "Secrets User" in refused.err, refused.err


# -- a run that stopped partway, run again ------------------------------------------------------------

BOB = {"type": "user", "name": "bob@contoso.test", "id": "bob-object-id"}


def sign_in_bob_without_secrets_officer(azure: FakeAzure) -> None:
    """Another admin takes over: Key Vault checks RBAC, and bob has no Key Vault Secrets Officer on it."""
    azure.state = {**azure.state, "signed_in_as": BOB, "rbac_delay": 0}


def grant_bob_secrets_officer(azure: FakeAzure) -> None:
    state = azure.state
    state["roles"].append([BOB["id"], "Key Vault Secrets Officer", state["vaults"][N["vault"]]["id"], "bob-officer"])
    azure.state = state


def test_a_register_app_stopped_at_key_vault_is_finished_by_the_rerun_with_one_registration(azure):
    """The hunt's case: OIDC_CLIENT_ID was written only at the end, so a run stopped by Key Vault (the runner
    lacks Secrets Officer) left a registration, a service principal with consent and a live secret, and the
    rerun made a second of each; every such rerun appended another secret no rotation ever removed."""
    sign_in_bob_without_secrets_officer(azure)
    failed = azure.run("register-app", *APP_ARGS)
    assert failed.code != 0 and "Key Vault Secrets Officer" in failed.err, failed.err
    (app,) = azure.state["apps"].values()
    assert settings(azure)["OIDC_CLIENT_ID"] == app["appId"], "the registration is recorded as soon as it exists"
    assert app["credentials"] == [], "the secret Key Vault did not take is removed again: nothing can use it"
    assert "removed again" in failed.err, failed.err
    grant_bob_secrets_officer(azure)
    rerun = azure.run("register-app", *APP_ARGS)
    assert rerun.code == 0, rerun.err
    (app,) = azure.state["apps"].values()
    assert list(azure.state["sps"]) == [app["appId"]] and len(azure.state["permission_grants"]) == 1
    (credential,) = app["credentials"]
    assert secret_versions(azure)[-1]["tags"]["entraKeyId"] == credential["keyId"], "Key Vault holds that secret"
    assert azure.run("register-app", *APP_ARGS).mutations == [], "then nothing is left to do"


def test_a_registration_made_but_not_recorded_is_named_with_the_rerun_that_adopts_it(azure):
    """The hunt's case: the OIDC_CLIENT_ID write right after `ad app create` failed (an ARM 5xx, a lost
    answer), leaving a registration nothing remembers, while the message said a plain rerun carries on:
    it made a second registration."""
    azure.state = {**azure.state, "refuse": {"--settings OIDC_CLIENT_ID": "(InternalServerError) An unexpected "
                                                                          "error occurred."}}
    failed = azure.run("register-app", *APP_ARGS)
    assert failed.code != 0
    (app_id,) = azure.state["apps"]
    assert "OIDC_CLIENT_ID" not in settings(azure)
    assert f"--app-id {app_id}" in failed.err and "makes another" in failed.err, failed.err
    assert "once fixed, run the command again" not in failed.err, "a plain rerun does not carry on"
    azure.state = {**azure.state, "refuse": {}}
    rerun = azure.run("register-app", *APP_ARGS, "--app-id", app_id)
    assert rerun.code == 0, rerun.err
    assert list(azure.state["apps"]) == [app_id] and settings(azure)["OIDC_CLIENT_ID"] == app_id, "adopted, no other"
    assert azure.run("register-app", *APP_ARGS).mutations == [], "then nothing is left to do"


def secret_versions(azure: FakeAzure, name: str = "oidc-client-secret") -> list[dict]:
    return azure.state["secrets"][f"{N['vault']}/{name}"]


def test_a_register_app_stopped_after_its_secret_was_stored_makes_no_other_on_the_rerun(azure):
    azure.state = {**azure.state, "refuse": {"role assignment create": "(AuthorizationFailed) The client does not "
                                                                       "have authorization"}}
    assert azure.run("register-app", *APP_ARGS).code != 0
    azure.state = {**azure.state, "refuse": {}}
    rerun = azure.run("register-app", *APP_ARGS)
    assert rerun.code == 0, rerun.err
    (app,) = azure.state["apps"].values()
    (credential,) = app["credentials"]
    assert [v["tags"]["entraKeyId"] for v in secret_versions(azure)] == [credential["keyId"]], \
        "the secret stored by the first run is the one kept: no second secret, no second version"


def test_a_secret_key_vault_may_have_taken_is_kept_and_one_it_did_not_is_removed(azure):
    """A failure that is not Key Vault's refusal (a 503, a lost answer) may come after the write landed: the
    secret is removed only once Key Vault is seen not to hold it."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    unavailable = "(ServiceUnavailable) The service is unavailable."
    azure.state = {**azure.state, "refuse": {"oidc-client-secret --file": unavailable}}
    failed = azure.run("register-app", *APP_ARGS, "rotate-secret")
    assert failed.code != 0
    (app,) = azure.state["apps"].values()
    (credential,) = app["credentials"]
    assert secret_versions(azure)[-1]["tags"]["entraKeyId"] == credential["keyId"], "only the stored one is left"
    azure.state = {**azure.state, "refuse": {"oidc-client-secret --file": unavailable,
                                             "keyvault secret show": unavailable}}
    unsure = azure.run("register-app", *APP_ARGS, "rotate-secret")
    assert unsure.code != 0
    (app,) = azure.state["apps"].values()
    assert len(app["credentials"]) == 2, "Key Vault could not be read back: the new secret may be in use, so kept"
    made = next(c for c in app["credentials"] if c["keyId"] != credential["keyId"])
    assert f"az ad app credential delete --id {app['appId']} --key-id {made['keyId']}" in unsure.err, unsure.err


def test_a_secret_key_vault_refused_is_removed_only_when_it_is_surely_the_one_just_made(azure):
    """az's answer to the reset has no key id: "the newest of ours" removed the live secret when it sorted
    last (clock skew, a list not yet showing ours), and could remove another run's. The new one is the
    one the list after the reset holds and the list before did not; unsure, none is removed."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    state = azure.state
    (app,) = state["apps"].values()
    (live,) = app["credentials"]
    live["startDateTime"] = "2999-01-01T00:00:00+00:00"  # sorts after any secret made now
    azure.state = {**state, "refuse": {"oidc-client-secret --file": "(Forbidden) Caller is not authorized to "
                                                                     "perform action on resource."}}
    failed = azure.run("register-app", *APP_ARGS, "rotate-secret")
    assert failed.code != 0
    (app,) = azure.state["apps"].values()
    assert [c["keyId"] for c in app["credentials"]] == [live["keyId"]], "the live secret stays, the new one goes"
    azure.state = {**azure.state, "another_run_appends": True}
    unsure = azure.run("register-app", *APP_ARGS, "rotate-secret")
    assert unsure.code != 0 and "not certain" in unsure.err, unsure.err
    (app,) = azure.state["apps"].values()
    assert len(app["credentials"]) == 3 and live["keyId"] in {c["keyId"] for c in app["credentials"]}


def test_an_untagged_vault_secret_is_not_taken_for_a_registration_that_has_no_secret(azure):
    """Recorded early, a new registration whose run stopped before its secret, beside an untagged version
    left in Key Vault (by hand, or an earlier script): the rerun made no secret, so sign-in failed."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    state = azure.state
    (app,) = state["apps"].values()
    app["credentials"] = []  # the registration's run stopped before its secret
    for version in state["secrets"][f"{N['vault']}/oidc-client-secret"]:
        version["tags"] = {}
    azure.state = state
    rerun = azure.run("register-app", *APP_ARGS)
    assert rerun.code == 0, rerun.err
    (app,) = azure.state["apps"].values()
    (credential,) = app["credentials"]
    assert secret_versions(azure)[-1]["tags"]["entraKeyId"] == credential["keyId"]


def test_the_secret_names_the_apps_settings_give_are_the_ones_written_rotated_and_granted(azure):
    """The hunt's case: OIDC_CLIENT_SECRET_NAME and SESSION_SIGNING_KEY_NAME were ignored, so the client
    secret and signing key went under the default names while the app read the ones it was told."""
    state = azure.state
    state["sites"]["contoso-sso"]["settings"].update(OIDC_CLIENT_SECRET_NAME="entra-client-secret ",  # the app
                                                     SESSION_SIGNING_KEY_NAME="portal-signing-key")  # strips it
    azure.state = state
    assert azure.run("register-app", *APP_ARGS).code == 0
    rotated = azure.run("register-app", *APP_ARGS, "rotate-secret")
    assert rotated.code == 0, rotated.err
    redeploy = azure.run("deploy", *DEPLOY_ARGS)
    assert redeploy.code == 0, redeploy.err
    stored = {name.split("/", 1)[1]: len(versions) for name, versions in azure.state["secrets"].items()}
    assert stored == {"session-signing-key": 1, "entra-client-secret": 2, "portal-signing-key": 1}, stored
    readable = {r[2].rsplit("/", 1)[1] for r in azure.state["roles"]
                if r[:2] == ["contoso-sso-principal", "Key Vault Secrets User"]}
    assert {"entra-client-secret", "portal-signing-key"} <= readable and "oidc-client-secret" not in readable
    assert azure.run("register-app", *APP_ARGS).mutations == [] and azure.run("deploy", *DEPLOY_ARGS).mutations == []


def test_a_secret_name_key_vault_would_refuse_stops_the_run_without_showing_it(azure):
    pasted = "Q8~a-secret-value-pasted-in-place-of-the-name"
    state = azure.state
    state["sites"]["contoso-sso"]["settings"]["OIDC_CLIENT_SECRET_NAME"] = pasted
    azure.state = state
    result = azure.run("register-app", *APP_ARGS)
    assert result.code != 0 and "OIDC_CLIENT_SECRET_NAME" in result.err and result.mutations == [], result.err
    assert pasted not in result.out + result.err


# -- assignment ------------------------------------------------------------------------------------

def test_assign_gives_users_and_groups_the_kinds_role_once(azure):
    azure.run("register-app", *APP_ARGS)
    first = azure.run("register-app", *APP_ARGS, "assign", "--user", "ann@contoso.test", "--group", "Agents",
                      "--kind", "agent")
    assert first.code == 0, first.err
    sp = f"sp-{settings(azure)['OIDC_CLIENT_ID']}"
    assigned = azure.state["assignments"][sp]
    assert {(a["principalId"], a["appRoleId"]) for a in assigned} == {
        ("object-of-ann@contoso.test", role_ids()["agent"]), ("object-of-Agents", role_ids()["agent"])}
    again = azure.run("register-app", *APP_ARGS, "assign", "--user", "ann@contoso.test", "--group", "Agents",
                      "--kind", "agent")
    assert again.mutations == [], "already assigned: nothing to do"
    user_role = azure.run("register-app", *APP_ARGS, "assign", "--user", "ann@contoso.test", "--kind", "user")
    assert len(user_role.mutations) == 1, "the other kind's role is another assignment"


@pytest.mark.parametrize(("groups", "says"), [([], "No group is named exactly 'Agents'"),
                                              (["g-1", "g-2"], "2 groups are named 'Agents' (g-1, g-2)")],
                         ids=["none-of-that-name", "two-of-that-name"])
def test_assign_takes_a_group_of_exactly_that_name_or_its_object_id_never_a_prefix(azure, groups, says):
    """`az ad group show --group Agents` takes a group whose name only starts with Agents when none has
    that name (az's own help: "prefix also works if there is a unique match"): the role, and with
    directory sync a portal account for each member, went to whoever made 'Agents - anything'."""
    azure.run("register-app", *APP_ARGS)
    azure.state = {**azure.state, "ad_groups": {"Agents": groups}}
    result = azure.run("register-app", *APP_ARGS, "assign", "--group", "Agents", "--kind", "agent")
    assert result.code != 0 and says in result.err and result.mutations == [], result.err
    assert not any("group show" in c for c in result.commands), "no lookup that takes a prefix"
    by_id = azure.run("register-app", *APP_ARGS, "assign", "--group", "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
                      "--kind", "agent")
    assert by_id.code == 0 and len(by_id.mutations) == 1, by_id.err


def assign(azure: FakeAzure, *who: str, kind: str = "agent"):
    return azure.run("register-app", *APP_ARGS, "assign", *who, "--kind", kind)


def test_assign_run_again_finds_an_assignment_past_graphs_first_page(azure):
    """The hunt's case: only the first page of appRoleAssignedTo was read (Graph gives 100, the rest behind
    @odata.nextLink, which az rest does not follow), so a person assigned further down was assigned again:
    Graph's 400, explained as "That name is taken in Azure by someone else"."""
    azure.run("register-app", *APP_ARGS)
    assert assign(azure, "--user", "ann@contoso.test").code == 0
    sp = f"sp-{settings(azure)['OIDC_CLIENT_ID']}"
    state = azure.state
    state["assignments"][sp][:0] = [{"id": f"assignment-{i}", "principalId": f"person-{i}", "resourceId": sp,
                                     "appRoleId": role_ids()["user"]} for i in range(150)]  # ann's on page 2
    azure.state = state
    again = assign(azure, "--user", "ann@contoso.test")
    assert again.code == 0, again.err
    assert any("appRoleAssignedTo?$skiptoken=100" in c for c in again.commands), "the next page was read"
    assert again.mutations == [] and "Nothing to change" in again.out, again.mutations
    assert len(azure.state["assignments"][sp]) == 151


def test_assign_right_after_a_grant_takes_graphs_already_exists_for_assigned(azure):
    """Graph lists a new assignment only once it has replicated, so a rerun right after the grant does not
    see it and asks again; Graph's 400 "Permission being assigned already exists" means the role is there:
    said so, not listed as a change, and the run goes on to the others."""
    azure.run("register-app", *APP_ARGS)
    assert assign(azure, "--user", "ann@contoso.test").code == 0
    sp = f"sp-{settings(azure)['OIDC_CLIENT_ID']}"
    (made,) = azure.state["assignments"][sp]
    azure.state = {**azure.state, "unlisted_assignments": [made["id"]]}
    again = assign(azure, "--user", "ann@contoso.test", "--group", "Supervisors")
    assert again.code == 0, again.err
    assert "user ann@contoso.test already has the role Portal.Agent" in again.out, again.out
    assert "someone else" not in again.out + again.err
    assert again.out.rstrip().endswith("Created:\n  - group Supervisors assigned the role Portal.Agent"), again.out
    assert {a["principalId"] for a in azure.state["assignments"][sp]} == {"object-of-ann@contoso.test",
                                                                          "object-of-Supervisors"}


def test_an_already_exists_azure_cannot_attribute_is_not_blamed_on_someone_else():
    """A name "already exists" or "is not available" may be the admin's own resource elsewhere: the advice
    says to choose another without claiming whose it is."""
    for said in ("ERROR: Website with given name contoso-sso already exists.",
                 "ERROR: The name contoso-sso is not available."):
        advice = explain(said)
        assert "choose another" in advice and "someone else" not in advice, (said, advice)


def test_rotate_secret_appends_then_retires_the_old_one_after_the_grace_period(azure):
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


def test_rotate_secret_with_no_grace_retires_the_previous_secret_in_the_same_run(azure):
    """--grace-days is "days the previous secret stays valid after a new one is issued": with 0 the
    previous (perhaps leaked) secret stayed valid, since only versions superseded before the run were
    candidates. The app re-reads its secret at once when Entra refuses the old one."""
    azure.run("register-app", *APP_ARGS)
    (app,) = azure.state["apps"].values()
    (before,) = [c["keyId"] for c in app["credentials"]]
    rotated = azure.run("register-app", *APP_ARGS, "rotate-secret", "--grace-days", "0")
    assert rotated.code == 0, rotated.err
    (app,) = azure.state["apps"].values()
    current = azure.state["secrets"][f"{N['vault']}/oidc-client-secret"][-1]["tags"]["entraKeyId"]
    assert [c["keyId"] for c in app["credentials"]] == [current] and current != before, app["credentials"]


# -- directory sync --------------------------------------------------------------------------------

def test_provisioning_sets_up_entras_scim_job_with_a_token_never_shown(azure):
    assert azure.run("register-app", *APP_ARGS).code == 0
    result = azure.run("register-app", *APP_ARGS, "provisioning")
    assert result.code == 0, result.err
    (token,) = secret_values(azure, "scim-token")
    assert len(token) >= 32 and "\n" not in token
    everything = result.out + result.err + json.dumps(azure.all_calls)
    assert token not in everything, "the token is in no argument list and no output"
    stored = next(c for c in result.calls if "scim-token" in " ".join(c["argv"]) and "secret set" in
                  " ".join(c["argv"]))
    assert stored["file_mode"] == "0o600"
    sent = next(c for c in result.calls if "synchronization/secrets" in " ".join(c["argv"]))
    assert sent["file_mode"] == "0o600", "the body holding the token goes through a 0600 file"
    sp = f"sp-{settings(azure)['OIDC_CLIENT_ID']}"
    sync = azure.state["sync"][sp]
    assert sync["secrets"] == {"BaseAddress": f"{BASE}/api/scim/v2", "SecretToken": token}
    (job,) = sync["jobs"]
    assert job["templateId"] == "scim" and job["schedule"]["state"] == "Active", "made from the scim template, started"
    users, groups = job["schema"]["synchronizationRules"][0]["objectMappings"]
    by_target = {m["targetAttributeName"]: m["source"] for m in users["attributeMappings"]}
    assert by_target["externalId"]["expression"] == "[objectId]", "Entra's object id -> externalId"
    assert by_target["roles"]["expression"] == "AssertiveAppRoleAssignmentsComplex([appRoleAssignments])", \
        "a PATCH replace of roles: a role unassigned in Entra removes that kind's account"
    assert by_target["roles"]["name"] == "AssertiveAppRoleAssignmentsComplex"
    definition = roles_definition(job["schema"], users["targetObjectName"])  # defined where it is mapped
    assert (definition["type"], definition["multivalued"]) == ("String", True)
    assert by_target["userName"]["expression"] == "[userPrincipalName]", "the template's other mappings stay"
    assert groups["enabled"] is False, "groups are not provisioned"
    assert settings(azure)["SCIM_TOKEN_NAME"] == "scim-token"
    vault_id = azure.state["vaults"][N["vault"]]["id"]
    assert ["contoso-sso-principal", "Key Vault Secrets User", f"{vault_id}/secrets/scim-token"] in \
        [r[:3] for r in azure.state["roles"]]
    again = azure.run("register-app", *APP_ARGS, "provisioning")
    assert again.code == 0 and again.mutations == [], f"idempotent: {again.mutations}"
    assert secret_values(azure, "scim-token") == [token], "the token is made once"


def roles_definition(schema: dict, target_object: str) -> dict:
    """The `roles` attributeDefinition on the SCIM directory's object that users are mapped to."""
    (directory,) = [d for d in schema["directories"] if d["name"] == "customappsso"]
    (target,) = [o for o in directory["objects"] if o["name"] == target_object]
    (roles,) = [a for a in target["attributes"] if a["name"] == "roles"]
    return roles


def schema_puts(result) -> list[dict]:
    return [c for c in result.calls if "PUT" in c["argv"] and c["argv"][c["argv"].index("--uri") + 1].endswith(
        "/schema")]


def test_the_schema_put_carries_the_assertive_roles_mapping_and_the_roles_definition(azure):
    """What the PUT of the job's schema sent (the fake az records its body's hash; the fake refuses a
    mapping to an attribute the target does not define, as the admin center never offers one)."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    result = azure.run("register-app", *APP_ARGS, "provisioning")
    assert result.code == 0, result.err
    (put,) = schema_puts(result)
    sp = f"sp-{settings(azure)['OIDC_CLIENT_ID']}"
    (job,) = azure.state["sync"][sp]["jobs"]
    stored = job["schema"]
    assert put["file_sha256"] == hashlib.sha256(json.dumps(stored).encode()).hexdigest(), "stored is what was sent"
    users = stored["synchronizationRules"][0]["objectMappings"][0]
    roles_mapping = next(m for m in users["attributeMappings"] if m["targetAttributeName"] == "roles")
    assert roles_mapping["source"] == {"expression": "AssertiveAppRoleAssignmentsComplex([appRoleAssignments])",
                                       "name": "AssertiveAppRoleAssignmentsComplex", "type": "Function",
                                       "parameters": [{"key": "source", "value": {
                                           "expression": "[appRoleAssignments]", "name": "appRoleAssignments",
                                           "parameters": [], "type": "Attribute"}}]}
    definition = roles_definition(stored, users["targetObjectName"])
    assert (definition["type"], definition["multivalued"], definition["required"]) == ("String", True, False)
    others = [a["name"] for d in stored["directories"] for o in d["objects"] for a in o["attributes"]]
    assert others.count("roles") == 1 and "userName" in others, "the template's definitions stay, roles once"


def test_provisioning_run_again_moves_a_job_from_the_additive_roles_mapping(azure):
    """A job set up before (AppRoleAssignmentsComplex, no roles definition, or roles single-valued) is
    brought to the assertive mapping by the next `provisioning` run, and a run after that changes nothing."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    assert azure.run("register-app", *APP_ARGS, "provisioning").code == 0
    sp = f"sp-{settings(azure)['OIDC_CLIENT_ID']}"
    state = azure.state
    (job,) = state["sync"][sp]["jobs"]
    users = job["schema"]["synchronizationRules"][0]["objectMappings"][0]
    roles_mapping = next(m for m in users["attributeMappings"] if m["targetAttributeName"] == "roles")
    roles_mapping["source"] |= {"expression": "AppRoleAssignmentsComplex([appRoleAssignments])",
                                "name": "AppRoleAssignmentsComplex"}
    roles_definition(job["schema"], users["targetObjectName"])["multivalued"] = False
    azure.state = state
    result = azure.run("register-app", *APP_ARGS, "provisioning")
    assert result.code == 0, result.err
    assert len(schema_puts(result)) == 1 and "AssertiveAppRoleAssignmentsComplex -> roles" in result.out
    (job,) = azure.state["sync"][sp]["jobs"]
    users = job["schema"]["synchronizationRules"][0]["objectMappings"][0]
    roles_mapping = next(m for m in users["attributeMappings"] if m["targetAttributeName"] == "roles")
    assert roles_mapping["source"]["expression"] == "AssertiveAppRoleAssignmentsComplex([appRoleAssignments])"
    assert roles_definition(job["schema"], users["targetObjectName"])["multivalued"] is True
    assert azure.run("register-app", *APP_ARGS, "provisioning").mutations == []


def test_provisioning_dry_run_anywhere_on_the_command_line_runs_nothing(azure):
    assert azure.run("register-app", *APP_ARGS).code == 0
    for argv in ([*APP_ARGS, "provisioning", "--dry-run"], ["--dry-run", *APP_ARGS, "provisioning"],
                 [*APP_ARGS, "assign", "--group", "G", "--kind", "user", "--dry-run"]):
        result = azure.run("register-app", *argv)
        assert result.code == 0, result.err
        assert result.calls == [], f"{argv}: nothing runs"
        assert "would run: az" in result.out


def test_rotate_token_keeps_the_old_token_valid_until_entra_has_the_new_one(azure):
    azure.run("register-app", *APP_ARGS)
    azure.run("register-app", *APP_ARGS, "provisioning")
    (old,) = secret_values(azure, "scim-token")
    rotated = azure.run("register-app", *APP_ARGS, "rotate-token")
    assert rotated.code == 0, rotated.err
    new, kept = secret_values(azure, "scim-token")[-1].split("\n")
    assert kept == old and new != old and len(new) >= 32, "the new token first, the old one still accepted"
    order = [c for c in rotated.commands if "scim-token --file" in c or "synchronization/secrets" in c]
    assert "secret set" in order[0] and "synchronization/secrets" in order[1], "Key Vault first, then Entra"
    sp = f"sp-{settings(azure)['OIDC_CLIENT_ID']}"
    assert azure.state["sync"][sp]["secrets"]["SecretToken"] == new
    assert old not in rotated.out + rotated.err and new not in rotated.out + rotated.err + json.dumps(azure.all_calls)
    assert azure.run("register-app", *APP_ARGS, "provisioning").mutations == [], "provisioning sees it as done"
    retired = azure.run("register-app", *APP_ARGS, "rotate-token", "--retire-old")
    assert retired.code == 0, retired.err
    assert secret_values(azure, "scim-token")[-1] == new, "only the new token is left"
    assert azure.run("register-app", *APP_ARGS, "provisioning").mutations == []


def entras_token(azure: FakeAzure) -> str:
    return azure.state["sync"][f"sp-{settings(azure)['OIDC_CLIENT_ID']}"]["secrets"]["SecretToken"]


def newest_lines(azure: FakeAzure) -> list[str]:
    return secret_values(azure, "scim-token")[-1].split("\n")


def refuse_entras_secrets(azure: FakeAzure, message: str | None) -> None:
    """Graph refuses (or, with None, accepts again) the PUT of the job's credentials."""
    azure.state = {**azure.state, "refuse": {"synchronization/secrets": message} if message else {}}


@pytest.fixture
def synced(azure) -> str:
    """Directory sync set up; returns the token Entra was given."""
    assert azure.run("register-app", *APP_ARGS).code == 0
    assert azure.run("register-app", *APP_ARGS, "provisioning").code == 0
    (token,) = secret_values(azure, "scim-token")
    assert entras_token(azure) == token
    return token


def test_after_a_failed_rotation_retire_old_refuses_and_the_secret_keeps_entras_token(azure, synced):
    """The hunt's case: Entra refused the new token; --retire-old then dropped the token Entra still
    used, and after SECRET_CACHE_SECONDS every provisioning request was a 401."""
    refuse_entras_secrets(azure, "(ServiceUnavailable) The service is unavailable, try again later.")
    failed = azure.run("register-app", *APP_ARGS, "rotate-token")
    assert failed.code != 0
    assert "run rotate-token again: it sends Entra this same new token" in failed.err, failed.err
    assert entras_token(azure) == synced and newest_lines(azure)[1] == synced, "both tokens kept, Entra's too"
    refuse_entras_secrets(azure, None)
    versions = len(secret_values(azure, "scim-token"))
    retired = azure.run("register-app", *APP_ARGS, "rotate-token", "--retire-old")
    assert retired.code != 0 and "Entra has not been given the newest token" in retired.err, retired.err
    assert "run rotate-token again" in retired.err
    assert retired.mutations == [] and len(secret_values(azure, "scim-token")) == versions, "nothing written"
    assert entras_token(azure) in newest_lines(azure), "the secret still holds the token Entra uses"


def test_two_failed_rotations_then_a_good_one_leave_entra_a_token_the_secret_holds(azure, synced):
    """The hunt's other case: each rerun after a refusal made another token and dropped the old one,
    so two failed runs left no copy of the token Entra used."""
    refuse_entras_secrets(azure, "(Authorization_RequestDenied) Insufficient privileges to complete the operation.")
    first = azure.run("register-app", *APP_ARGS, "rotate-token")
    assert first.code != 0 and "Application Administrator" in first.err, first.err
    minted, kept = newest_lines(azure)
    assert kept == synced and minted != synced
    second = azure.run("register-app", *APP_ARGS, "rotate-token")
    assert second.code != 0
    assert "sending it that one again, no new token made" in second.out, second.out
    assert not [c for c in second.commands if "secret set " in c and "scim-token" in c], "no new version"
    assert newest_lines(azure) == [minted, synced] and entras_token(azure) == synced
    assert azure.run("register-app", *APP_ARGS, "rotate-token", "--retire-old").code != 0, "still refused"

    refuse_entras_secrets(azure, None)
    good = azure.run("register-app", *APP_ARGS, "rotate-token")
    assert good.code == 0, good.err
    assert entras_token(azure) == minted and newest_lines(azure) == [minted, synced], \
        "Entra has the token the first run made, and the secret holds it"
    assert minted not in good.out + good.err + json.dumps(azure.all_calls)
    assert azure.run("register-app", *APP_ARGS, "provisioning").mutations == [], "marked as given: nothing to do"
    retired = azure.run("register-app", *APP_ARGS, "rotate-token", "--retire-old")
    assert retired.code == 0, retired.err
    assert newest_lines(azure) == [minted] and entras_token(azure) == minted, "only now does the old one go"
    assert azure.run("register-app", *APP_ARGS, "provisioning").mutations == [], "the mark survives retiring"
    later = azure.run("register-app", *APP_ARGS, "rotate-token")
    assert later.code == 0 and newest_lines(azure)[1] == minted and entras_token(azure) == newest_lines(azure)[0], \
        "a normal rotation again: a new token, made this time"


def untag_newest_token(azure: FakeAzure) -> None:
    """The newest scim-token version without tags, as README's by-hand setup stores it."""
    state = azure.state
    state["secrets"][f"{N['vault']}/scim-token"][-1]["tags"] = {}
    azure.state = state


def assert_rotated(azure: FakeAzure, result, old: str, tenant_url: str) -> None:
    """A real rotation: a new token first, `old` kept second, Entra given the new one for `tenant_url`
    and the version tagged so."""
    assert result.code == 0, result.err
    assert "no new token made" not in result.out, result.out
    new, kept = newest_lines(azure)
    assert kept == old and new != old and len(new) >= 32, "a new token first, the old one still accepted"
    sync = azure.state["sync"][f"sp-{settings(azure)['OIDC_CLIENT_ID']}"]["secrets"]
    assert sync == {"BaseAddress": tenant_url, "SecretToken": new}, "Entra has the new token"
    assert azure.state["secrets"][f"{N['vault']}/scim-token"][-1]["tags"]["entraTenantUrl"] == tenant_url
    assert "second line of the secret" in result.out
    assert new not in result.out + result.err + json.dumps(azure.all_calls)


def test_rotate_token_makes_a_new_token_when_the_newest_was_stored_by_hand(azure, synced):
    """The hunt's case: a token stored by hand (README's "By hand", untagged) was taken for one a stopped
    rotation left: rotate-token sent Entra that same token, made none, and said the rotation worked. An
    admin rotating a leaked token kept it."""
    untag_newest_token(azure)
    rotated = azure.run("register-app", *APP_ARGS, "rotate-token")
    assert_rotated(azure, rotated, synced, f"{BASE}/api/scim/v2")
    retired = azure.run("register-app", *APP_ARGS, "rotate-token", "--retire-old")
    assert retired.code == 0, retired.err
    assert synced not in newest_lines(azure), "the leaked token is gone"


def test_rotate_token_makes_a_new_token_after_the_tenant_url_moved(azure, synced):
    """The hunt's other case: after --public-base-url (a custom domain) the newest version is tagged for
    the old tenant URL; rotate-token resent the old token to the new URL and made none."""
    custom = "https://sso.contoso.test"
    assert azure.run("register-app", *APP_ARGS, "--public-base-url", custom).code == 0
    rotated = azure.run("register-app", *APP_ARGS, "rotate-token")
    assert_rotated(azure, rotated, synced, f"{custom}/api/scim/v2")
    assert azure.run("register-app", *APP_ARGS, "provisioning").mutations == [], "marked as given for the new URL"


def test_the_consent_error_a_person_meets_names_the_fix_and_who_can_apply_it():
    hint = hint_for("AADSTS65001: The user or administrator has not consented to use the application")
    assert hint and "scripts/register-app" in hint and "Application Administrator" in hint


def test_a_certificate_app_moved_to_a_vault_without_its_certificate_is_refused_naming_the_import(azure):
    """The hunt's case: after a vault move, register-app exited 0 granting a role on a certificate the new vault
    does not hold (the app then cannot sign in), though the move's note pointed the admin at register-app."""
    assert azure.run("deploy", *DEPLOY_ARGS).code == 0
    assert azure.run("register-app", *APP_ARGS).code == 0
    sign_in_with_a_certificate(azure, as_certificate=True)
    assert azure.run("register-app", *APP_ARGS).code == 0
    moved = azure.run("deploy", *DEPLOY_ARGS, "--key-vault", "contoso-secrets", "--repoint")
    assert moved.code == 0 and "import" in moved.out, moved.out
    refused = azure.run("register-app", *APP_ARGS)
    assert refused.code == 1 and "oidc-client-certificate" in refused.err and "import" in refused.err, refused.err
    assert not any("oidc-client-certificate" in m for m in refused.mutations), refused.mutations
