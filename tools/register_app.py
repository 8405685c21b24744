"""portal-sso register-app (scripts/register-app): the Entra ID side, as the admin steps describe it, by command.

    portal-sso register-app --resource-group RG --app APP          create or update the registration
    portal-sso register-app --resource-group RG --app APP assign --group "Agents" --kind agent
    portal-sso register-app --resource-group RG --app APP rotate-secret [--grace-days 7]
    portal-sso register-app --resource-group RG --app APP provisioning       directory sync (SCIM) from Entra
    portal-sso register-app --resource-group RG --app APP rotate-token [--retire-old]

Which registration: the one whose application id the function app records (`OIDC_CLIENT_ID`), never
one found by its display name (anyone may register an app of any name). The first run creates a new
one; an existing one is adopted only when named with --app-id and owned by whoever runs this. Redirect
URIs on it that are not ours are listed and removed (keep one with --keep-redirect-uri). A new one is
made from Entra's non-gallery application template (as Enterprise applications > New application >
Create your own application does): one app that signs people in over OIDC and that Entra provisions
over SCIM, which a plain app registration never is. --new-registration makes one for a function app
that has a plain registration (made by an earlier version, or adopted) and moves the app to it.

The registration: single tenant; Web redirect URIs for users and agents (callback and signed-out page),
built from the function app's real host name (or --public-base-url); optional claims from
infra/optional-claims.json (`email` in ID and access tokens, `xms_edov`, `auth_time`); the app roles of
infra/app-roles.json (`Portal.User` "Portal user", `Portal.Agent` "Portal agent", for users and groups: not
"User", which the template's own role is called, as Users and groups offers roles by name; with fixed ids, or
the ids a registration configured by hand has for those values); the delegated Microsoft Graph permissions
`openid profile email` of infra/api-permissions.json,
with tenant-wide admin consent (which needs Privileged Role Administrator, Cloud Application
Administrator or Application Administrator: without it the run says what to ask an admin for); a
service principal with user assignment required; a client secret with an end date, appended (never
replacing other secrets), written straight into Key Vault and never printed, logged or put on a
command line. Then the function app gets OIDC_CLIENT_ID and OIDC_ISSUER_URL (a new registration's as soon
as it is made, so a rerun after a failure finds it again; if that write fails, the error names the
--app-id that adopts it), and PUBLIC_BASE_URL from
--public-base-url (so it builds the redirect URIs registered), and its identity may
read the secret (Key Vault Secrets User on that secret alone; on OIDC_CLIENT_CERTIFICATE_NAME's too, when
set). An app that signs in with a client certificate gets no client secret: each run gives the registration
that certificate (appended) when it does not hold it, before the app moves to a registration new to it.
Idempotent; --dry-run (anywhere on the command line) prints every az command and runs none.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization

from shared.config import GUID, KIND_ROLES, KINDS, issuer_base, issuer_tenant_segment, redirect_uri, signed_out_uri
from shared.errors import ConfigurationError
from shared.oidc_client import client_certificate
from shared.vault import SecretValue

from .arguments import FUNCTION_APP, MAX_SECRET_DAYS, RESOURCE_GROUP, https_origin, names, whole_number
from .azure_cli import (
    NOT_FOUND,
    ROLE_PENDING,
    Az,
    AzError,
    app_settings,
    as_the_app_reads,
    fail,
    grant,
    host_label,
    says,
    secret_file,
    secret_name,
    site_field,
    update_app_settings,
)

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL_CLAIMS = ROOT / "infra" / "optional-claims.json"
APP_ROLES = ROOT / "infra" / "app-roles.json"
API_PERMISSIONS = ROOT / "infra" / "api-permissions.json"  # Microsoft Graph: openid, profile, email (delegated)
SECRET_NAME = "oidc-client-secret"
CREDENTIAL_NAME = "portal-sso"  # the display name of the client secrets this script makes
KEY_ID_TAG = "entraKeyId"  # on each Key Vault version: which Entra credential it holds
GRAPH = "https://graph.microsoft.com/v1.0"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
CONSENTED_SCOPES = ("openid", "profile", "email")
# Directory sync: the token's Key Vault secret (the SCIM server's SCIM_TOKEN_NAME default), and the tags
# on its version that say which provisioning job and tenant URL Entra was given that token for: set only
# once Entra has accepted it, so a version without them holds a first token Entra may not have.
SCIM_TOKEN_NAME = "scim-token"
SCIM_TEMPLATE = "scim"  # Entra's provisioning template for a non-gallery SCIM app
# Entra's non-gallery application template ("applicationTemplate: instantiate", global service): a registration
# and enterprise application made from it are offered the `scim` template. One made as a plain app registration
# (`az ad app create`, App registrations > New registration) never is: "If you create an app registration, the
# corresponding service principal in enterprise apps won't be enabled for automatic user provisioning" (Entra's
# "Known issues for provisioning").
NON_GALLERY_TEMPLATE = "8adf8e6e-67b2-4cf2-a259-e3dc5476c621"
NOT_PROVISIONED = "won't be enabled for automatic user provisioning"
SIGN_IN_AUDIENCE = "AzureADMyOrg"  # single tenant
# Graph is eventually consistent: the objects an instantiate makes can be "not found" for a few seconds
READABLE_WAIT_SECONDS, READABLE_POLL_SECONDS = 60, 2
SYNCED_TAGS = ("entraJob", "entraTenantUrl")
# What the provisioning job sends (attribute mappings on the job's schema): Entra's immutable object id
# as externalId (the SCIM server pre-links the account to it), the app roles as `roles`; groups are not
# provisioned (a person's kind comes from the app role of their assignment, direct or through a group).
# The roles are AssertiveAppRoleAssignmentsComplex's: its PATCH replaces `roles` with the roles held now, so
# an unassigned role goes (AppRoleAssignmentsComplex "does PATCH add only and therefore does not remove
# any existing roles": customize-application-attributes, "Provisioning a role to a SCIM app").
OBJECT_ID_SOURCE = {"expression": "[objectId]", "name": "objectId", "parameters": [], "type": "Attribute"}
ROLES_FUNCTION = "AssertiveAppRoleAssignmentsComplex"
ROLES_SOURCE = {"expression": f"{ROLES_FUNCTION}([appRoleAssignments])", "name": ROLES_FUNCTION,
                "type": "Function", "parameters": [{"key": "source", "value": {
                    "expression": "[appRoleAssignments]", "name": "appRoleAssignments", "parameters": [],
                    "type": "Attribute"}}]}
# The same page has `roles` added to the SCIM user's attribute list first (String, multi-valued): the
# `scim` template does not define it. An attributeDefinition of Graph's synchronizationSchema.
ROLES_ATTRIBUTE = {"anchor": False, "apiExpressions": [], "caseExact": False, "defaultValue": None,
                   "flowNullValues": False, "metadata": [], "multivalued": True, "mutability": "ReadWrite",
                   "name": "roles", "referencedObjects": [], "required": False, "type": "String"}
ENTERPRISE_APP_TAG = "WindowsAzureActiveDirectoryIntegratedApp"
# Not a bare "403": Graph's error bodies carry request ids, and one holding 403 made an outage read as a missing role.
NO_CONSENT = ("Authorization_RequestDenied", "Insufficient privileges", "Forbidden")
# Graph's 400 for an app role assignment that exists (POST .../appRoleAssignedTo of the same principal and role)
ASSIGNED_ALREADY = "Permission being assigned already exists"


def issuer_url(tenant: str) -> str:
    """Entra's "OpenID Connect metadata document" URL, as the portal shows it (with its last '/')."""
    return f"https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"


def sign_in_settings(client_id: str, tenant: str) -> dict[str, str]:
    """The function app's settings that name its registration."""
    return {"OIDC_CLIENT_ID": client_id, "OIDC_ISSUER_URL": issuer_url(tenant)}


def recorded_tenant(settings: dict[str, str]) -> str | None:
    """The tenant (a GUID, lower case) OIDC_ISSUER_URL names, as Entra's issuer holds it; None for any
    other form (common, organizations, a domain, another IdP): then nothing says which tenant it is."""
    segment = issuer_tenant_segment(issuer_base(as_the_app_reads(settings, "OIDC_ISSUER_URL")))
    return segment.lower() if GUID.match(segment) else None


def recorded_client_id(settings: dict[str, str]) -> str | None:
    """The function app's OIDC_CLIENT_ID as Graph spells an appId (a GUID in lower case): the app accepts it
    in any case and Graph matches it without case, so an upper-case one names the same registration. Read
    stripped, as the app reads it: one set by hand with a newline was looked up as written, found nothing,
    and a new registration was made (the people assigned to the old one's roles lost the portal)."""
    value = as_the_app_reads(settings, "OIDC_CLIENT_ID") or None
    return value.lower() if value and value.isascii() else value


def our_redirect_uris(base: str) -> list[str]:
    """Each kind's callback and signed-out page (Entra returns only to a registered URI)."""
    return [uri for kind in KINDS for uri in (redirect_uri(base, kind), signed_out_uri(base, kind))]


@functools.cache
def role_ids() -> dict[str, str]:
    """kind -> the app role's id (fixed in infra/app-roles.json, so assignments survive every update)."""
    by_value = {role["value"]: role["id"] for role in json.loads(APP_ROLES.read_text())}
    return {kind: by_value[value] for kind, value in KIND_ROLES.items()}


def kind_roles(roles: list | None) -> dict[str, str]:
    """kind -> the id of its app role among `roles` (Graph's, of a registration or service principal),
    found by value: a registration configured by hand has Portal.User and Portal.Agent under ids of Entra's
    choosing; the fixed id where it has none. An enabled role before a disabled one of the same value,
    whichever Graph lists first (taken for it, a disabled role would be assigned, and the update would
    drop the enabled one, which Graph refuses)."""
    ranked = sorted((role for role in roles or [] if role.get("id")),
                    key=lambda role: role.get("isEnabled") is not False)
    by_value = {role.get("value"): role["id"] for role in ranked}  # the last of a value wins: an enabled one
    return {kind: by_value.get(value, role_ids()[kind]) for kind, value in KIND_ROLES.items()}


def new_scim_token() -> str:
    """64 URL-safe characters (384 random bits): well over the SCIM server's 32-character minimum."""
    return secrets.token_urlsafe(48)


def mapped_schema(schema: dict) -> dict:
    """The provisioning job's schema with our attribute mappings (Graph's synchronizationSchema:
    synchronizationRules[].objectMappings[].attributeMappings[], each a targetAttributeName and a
    source attributeMappingSource) and the `roles` attribute defined on the target user object
    (directories[].objects[].attributes[]); the rest, as Entra's `scim` template made it, untouched."""
    schema = {k: v for k, v in copy.deepcopy(schema).items() if not k.startswith("@odata")}
    for rule in schema.get("synchronizationRules", []):
        for mapping in rule.get("objectMappings", []):
            source = str(mapping.get("sourceObjectName", "")).lower()
            if source == "group":
                mapping["enabled"] = False
            elif source == "user":
                define_roles(schema, rule.get("targetDirectoryName"), mapping.get("targetObjectName"))
                for target, value in (("externalId", OBJECT_ID_SOURCE), ("roles", ROLES_SOURCE)):
                    mappings = mapping.setdefault("attributeMappings", [])
                    found = next((m for m in mappings if m.get("targetAttributeName") == target), None)
                    if found is None:
                        mappings.append(found := {"defaultValue": None, "exportMissingReferences": False,
                                                  "flowBehavior": "FlowWhenChanged", "flowType": "Always",
                                                  "matchingPriority": 0, "targetAttributeName": target})
                    found["source"] = value
    return schema


def define_roles(schema: dict, directory: str | None, name: str | None) -> None:
    """`roles` in the attribute list of the target directory's object `name` (String, multi-valued:
    one entry per app role), added when missing, its type and multiplicity set when not so."""
    target = next((o for d in schema.get("directories") or [] if d.get("name") == directory
                   for o in d.get("objects") or [] if o.get("name") == name), None)
    if target is None:
        raise AzError(f"The provisioning job's schema has no object {name} in its directory {directory}, so "
                      "`roles` cannot be defined on it: in Entra ID > Enterprise applications > the app > "
                      "Provisioning > Mappings > Provision users, add `roles` (String, multi-valued) under Edit "
                      "attribute list, then run this again.")
    attributes = target.setdefault("attributes", [])
    found = next((a for a in attributes if a.get("name") == ROLES_ATTRIBUTE["name"]), None)
    if found is None:
        attributes.append(copy.deepcopy(ROLES_ATTRIBUTE))
    else:
        found.update(type=ROLES_ATTRIBUTE["type"], multivalued=True)


class Registration:
    def __init__(self, az: Az, args: argparse.Namespace):
        self.az, self.args = az, args
        self.rg, self.app = args.resource_group, args.app
        self.secret_name = SECRET_NAME  # the client secret's Key Vault name, as the app's settings give it
        self.certificate_name: str | None = None  # a client certificate's, when the settings name one
        self.kind_roles = role_ids()  # kind -> its app role's id on the registration (bring_up_to_date reads it)
        # Key Vault's newest client secret is one of a registration the function app does not use yet
        self.secret_for_another = False

    # -- the function app's side --------------------------------------------------------------------
    def function_app(self) -> tuple[str, str, dict[str, str]]:
        """(the public base URL, the vault's name, the app settings), read from the deployed function app."""
        settings = app_settings(self.az, self.app, self.rg)
        base = self.args.public_base_url or as_the_app_reads(settings, "PUBLIC_BASE_URL")
        if not base:
            site = self.az.read("functionapp", "show", "--name", self.app, "--resource-group", self.rg)
            base = f"https://{site_field(site, 'defaultHostName') or self.app + '.azurewebsites.net'}"
        vault_url = as_the_app_reads(settings, "KEY_VAULT_URL") or f"https://{names(self.app)['vault']}.vault.azure.net"
        self.secret_name = secret_name(settings, "OIDC_CLIENT_SECRET_NAME", SECRET_NAME)
        self.certificate_name = secret_name(settings, "OIDC_CLIENT_CERTIFICATE_NAME", "") or None
        return base.rstrip("/"), host_label(vault_url), settings

    def let_the_app_read(self, vault: str, secret: str) -> None:
        """Key Vault Secrets User for the function app's identity on that one secret (not the vault)."""
        principal = self.az.read("functionapp", "identity", "show", "--name", self.app, "--resource-group",
                                 self.rg, "--query", "principalId")
        vault_id = self.az.read("keyvault", "show", "--name", vault, "--query", "id") or f"<id of {vault}>"
        grant(self.az, principal or "<principal id>", "ServicePrincipal", "Key Vault Secrets User",
              f"{vault_id}/secrets/{secret}", known=principal is not None)

    # -- which registration -------------------------------------------------------------------------
    def find_app(self, settings: dict[str, str], *, creating: bool = False) -> dict | None:
        """The registration by application id: --app-id (adopted only when the signed-in user owns it),
        else the function app's OIDC_CLIENT_ID. None: there is none yet (`creating`: make one)."""
        recorded, wanted = recorded_client_id(settings), self.args.app_id
        if wanted and wanted.lower() != recorded:
            app = self.az.show("ad", "app", "show", "--id", wanted)
            if app is None and not self.az.dry_run:
                raise AzError(f"No app registration has the application id {wanted} (--app-id): check the id "
                              "(Entra ID > App registrations > Application (client) ID).")
            self.check_owner(wanted)
            return app or {"appId": wanted}
        if recorded:
            app = self.az.show("ad", "app", "show", "--id", recorded)
            if app is not None:
                return app
            # az ad sees the signed-in tenant alone: not found there says nothing of the tenant the issuer
            # names (a registration made by hand in the workforce tenant), and a new one would leave its
            # people behind.
            tenant, signed_in = recorded_tenant(settings), str(self.az.check_ready().get("tenantId") or "").lower()
            if tenant and signed_in and tenant != signed_in and not self.az.dry_run:
                raise AzError(f"The app registration that OIDC_CLIENT_ID names ({recorded}) is not in the tenant you "
                              f"are signed in to ({signed_in}), and OIDC_ISSUER_URL names the tenant {tenant}: sign "
                              f"in there (`az login --tenant {tenant}`) and run this again. Nothing was changed.")
            if not creating:
                raise AzError(f"The app registration that OIDC_CLIENT_ID names ({recorded}) no longer exists: run "
                              "portal-sso register-app without a subcommand to make a new one.")
            print(f"note: the app registration that OIDC_CLIENT_ID names ({recorded}) no longer exists: making a "
                  "new one.")
            return None
        if not creating and not self.az.dry_run:
            raise AzError("The function app records no app registration (OIDC_CLIENT_ID): run portal-sso register-app "
                          "without a subcommand first (or with --app-id to adopt one you own).")
        return None if creating else {"appId": "<client id>"}

    def check_owner(self, app_id: str) -> None:
        """An existing registration is adopted only by one of its owners: anyone may register an app, and
        an app made beforehand by someone else keeps their redirect URIs, secrets and co-owners."""
        me, _ = self.az.signed_in(self.az.check_ready())
        owners = self.az.read("ad", "app", "owner", "list", "--id", app_id, "--query", "[].id")
        if owners is not None and me not in owners:
            raise AzError(f"You are not an owner of the app registration {app_id}, so it is not adopted: an owner "
                          f"can add you (`az ad app owner add --id {app_id} --owner-object-id {me}`), or run "
                          "without --app-id to create a new registration.")

    # -- the registration ---------------------------------------------------------------------------
    def ensure(self) -> None:
        tenant = self.az.check_ready().get("tenantId", "<tenant>")
        base, vault, current = self.function_app()
        uris = our_redirect_uris(base)
        recorded = recorded_client_id(current)
        found = self.find_app(current, creating=True)
        # --new-registration: the function app moves to a new one as it does to one named by --app-id (the one
        # it uses now signs people in until the new one's secret is stored); else a new one only when it has
        # none that exists
        replacing = found if self.args.new_registration else None
        app, sp = (None if self.args.new_registration else found), None
        if app is None:
            app, sp = self.new_registration(tenant, current, record=replacing is None)
        try:
            self.configure(app, sp, uris, tenant, base, vault, current, recorded)
        except AzError as err:
            if err.rerun or not (replacing or self.secret_for_another):
                raise
            rerun = f"run the same command with --app-id {app['appId']} in place of --new-registration" if replacing \
                else "run the same command again"
            if self.secret_for_another:  # the move has begun: the app's next re-read of the secret breaks sign-in
                state = (f"Key Vault's newest {self.secret_name} is already the client secret of {app['appId']}, while "
                         f"the function app's OIDC_CLIENT_ID still names {current.get('OIDC_CLIENT_ID')}: once the "
                         "app re-reads the secret (within SECRET_CACHE_SECONDS) no one signs in until the move is "
                         f"done, so once fixed, {rerun} at once.")
            else:
                state = (f"The function app still uses its previous registration ({replacing['appId']}); the new one "
                         f"is {app['appId']}.")
            raise AzError(f"{err} {state}", err.stderr, rerun=rerun) from err
        # A move ends here whichever run finishes it (--new-registration, or the --app-id rerun of one stopped
        # partway, which adopts the registration it made): the one the app used before is to delete.
        previous = replacing
        if previous is None and recorded not in (None, app["appId"]) and not self.az.dry_run:
            previous = self.az.show("ad", "app", "show", "--id", recorded)
        if previous is not None and previous.get("appId", "").lower() != app["appId"].lower():
            print(f"\nThe previous registration ({previous['appId']}) is no longer the function app's; its people's "
                  f"roles were given on the new one too. Once sign-in works, delete it: az ad app delete --id "
                  f"{previous['appId']}")

    def configure(self, app: dict, sp: dict | None, uris: list[str], tenant: str, base: str, vault: str,
                  current: dict[str, str], recorded: str | None) -> None:
        """The registration given our settings, its service principal (`sp`: as just read, None: not read
        yet), consent and a secret of its own, the app's right to read it, then the function app's settings
        naming it."""
        self.bring_up_to_date(app, uris)
        client_id = app["appId"]
        sp = self.ensure_service_principal(client_id, sp)
        self.consent(sp, client_id, tenant)
        if recorded and recorded != client_id:  # the app moves: the people assigned keep their roles
            self.carry_assignments(recorded, sp)
        # A registration new to the function app (adopted, or made now) needs a secret of its own: the one
        # in Key Vault belongs to the registration the app used before.
        # An app that signs in with a certificate (OIDC_CLIENT_CERTIFICATE_NAME) reads no client secret: none is
        # made, so no shared secret the admin removed comes back on the registration.
        if self.certificate_name:  # read as the client secret is (docs/operating.md)
            # On every run, not only for a registration new to the app: a first run records OIDC_CLIENT_ID as
            # soon as the registration is made, so one stopped before this step leaves a recorded registration
            # without the certificate (and without a secret: every sign-in invalid_client). Entra must know the
            # certificate before OIDC_CLIENT_ID names a registration new to the app.
            self.give_certificate(client_id, vault)
            self.let_the_app_read(vault, self.certificate_name)
        else:
            held = self.credential_ids(client_id)
            # a version without our tag is the previous registration's when the app does not use this one yet
            if not self.vault_holds_a_secret_of(vault, held, untagged=client_id == recorded):
                self.new_secret(client_id, vault, before=held)
            self.secret_for_another = recorded not in (None, client_id)
            self.let_the_app_read(vault, self.secret_name)
        wanted = sign_in_settings(client_id, tenant)
        if recorded == client_id:  # its spelling stays: rewriting it would restart the app
            wanted["OIDC_CLIENT_ID"] = current["OIDC_CLIENT_ID"]
        if self.args.public_base_url:  # the app builds its redirect URIs from it: the ones registered now
            wanted["PUBLIC_BASE_URL"] = base
        update_app_settings(self.az, self.app, self.rg, wanted, current)
        print(f"\nApplication (client) ID: {client_id}\nOpenID Connect metadata document: {issuer_url(tenant)}\n"
              f"Redirect URIs: {' '.join(uris)}\nAssign people: portal-sso register-app --resource-group {self.rg} "
              f"--app {self.app} assign --group <group name> --kind agent|user")

    def new_registration(self, tenant: str, current: dict[str, str], *, record: bool) -> tuple[dict, dict | None]:
        """A registration and its enterprise application, made from Entra's non-gallery application template
        (one app that signs people in over OIDC and that Entra provisions over SCIM; a plain app registration
        is never provisioned); our settings come after, from bring_up_to_date. Returns it and its service
        principal as Graph reads them (in a dry run, stand-ins as the template makes them).
        `record`: OIDC_CLIENT_ID names it at once (the function app has no working registration to lose), and
        `current` says so."""
        made = self.az.write("rest", "--method", "POST", "--uri",
                             f"{GRAPH}/applicationTemplates/{NON_GALLERY_TEMPLATE}/instantiate",
                             "--headers", "Content-Type=application/json",
                             "--body", json.dumps({"displayName": self.args.display_name}),
                             change=("create", f"app registration and enterprise application {self.args.display_name} "
                                               "(Entra's non-gallery template: sign-in and provisioning)"))
        app_id = made["application"]["appId"] if made else "<client id>"  # None: a dry run
        if record:
            # Recorded at once, so a rerun after a later step fails (service principal, consent, Key Vault)
            # finds this registration rather than making another. The app had no working registration
            # before (none recorded, or a deleted one), so it loses nothing while its secret is yet to come.
            made_settings = sign_in_settings(app_id, tenant)
            try:
                update_app_settings(self.az, self.app, self.rg, made_settings, current)
            except AzError as err:  # then nothing records it: only --app-id finds it again
                rerun = f"run the same command with --app-id {app_id} added"
                raise AzError(f"{err} The app registration just made (application id {app_id}) is not "
                              f"recorded on the function app, so a plain rerun makes another: {rerun}, which "
                              "adopts it.", err.stderr, rerun=rerun) from err
            current.update(made_settings)
        if made is None:  # planned as a real run goes on: with the service principal as the template makes it
            self.az.show("ad", "app", "show", "--id", app_id)  # printed, as once_readable reads them
            self.az.show("ad", "sp", "show", "--id", app_id)
            return {"appId": app_id}, {"id": "<service principal id>", "appId": app_id,
                                       "appRoleAssignmentRequired": True, "tags": [ENTERPRISE_APP_TAG]}
        return self.once_readable(app_id, "run the same command again" if record else
                                  f"run the same command with --app-id {app_id} in place of --new-registration")

    def once_readable(self, app_id: str, rerun: str) -> tuple[dict, dict]:
        """The registration just made and its service principal, once Graph reads both (new objects can be
        "not found" for a few seconds; a service principal not found would be made a second time).
        `rerun`: what carries on, should Graph take longer than READABLE_WAIT_SECONDS."""
        def attempt(waited: int) -> tuple[bool, tuple[dict, dict] | None]:
            app = self.az.show("ad", "app", "show", "--id", app_id)
            sp = self.az.show("ad", "sp", "show", "--id", app_id) if app is not None else None
            if sp is not None:
                return True, (app, sp)
            if waited >= READABLE_WAIT_SECONDS:
                raise AzError(f"Entra does not show the registration just made (application id {app_id}) after "
                              f"{waited} s: wait a few minutes, then {rerun}.", rerun=rerun)
            return False, None

        return self.az.polled(attempt, every=READABLE_POLL_SECONDS,
                              waiting="waiting for Entra to show the new registration (new objects take a few seconds)")

    def bring_up_to_date(self, app: dict, uris: list[str]) -> None:
        """Our redirect URIs and no others (but those named by --keep-redirect-uri), our optional claims,
        app roles, API permissions and sign-in audience (single tenant): one update, only when something
        differs. A new registration gets them here too: the template makes it without them."""
        existing = (app.get("web") or {}).get("redirectUris", [])
        keep = set(self.args.keep_redirect_uri or [])
        foreign = [u for u in existing if u not in uris and u not in keep]
        for uri in foreign:
            print(f"removing a redirect URI this script did not make: {uri} (keep it with --keep-redirect-uri "
                  f"{uri})")
        wanted = uris + [u for u in existing if u in keep and u not in uris]
        # SPA and public-client redirect URIs receive codes that need no client secret: none are ours
        others = [(kind, u) for kind in ("spa", "publicClient") for u in (app.get(kind) or {}).get("redirectUris", [])]
        for kind, uri in others:
            print(f"removing a {kind} redirect URI this script did not make: {uri}")
        # Ours under the id Graph has for the value, if any (Graph refuses two roles of one value: DuplicateValue).
        self.kind_roles = kind_roles(app.get("appRoles"))
        ids_by_value = {KIND_ROLES[kind]: role_id for kind, role_id in self.kind_roles.items()}
        ours = [{**role, "id": ids_by_value[role["value"]]} for role in json.loads(APP_ROLES.read_text())]
        ids, values = {role["id"] for role in ours}, set(ids_by_value)
        # Every other role stays as Graph has it: a registration made from the non-gallery template comes
        # with two enabled ones (User, msiam_access), and Graph refuses to drop an enabled role
        # (CannotDeleteOrUpdateEnabledEntitlement). Neither gives a portal role: admission needs ours.
        kept = [{k: v for k, v in role.items() if k != "origin"} for role in app.get("appRoles") or []
                if role.get("id") not in ids and role.get("value") not in values]
        differs = {
            "redirect URIs": sorted(existing) != sorted(wanted) or bool(others),
            "optional claims": differs_from(app.get("optionalClaims"), json.loads(OPTIONAL_CLAIMS.read_text())),
            "app roles": differs_from([r for r in app.get("appRoles") or [] if r.get("id") in ids], ours),
            "API permissions": differs_from(app.get("requiredResourceAccess"), json.loads(API_PERMISSIONS.read_text())),
            "sign-in audience": app.get("signInAudience") != SIGN_IN_AUDIENCE,
        }
        if any(differs.values()):
            with secret_file(json.dumps(ours + kept)) as roles:  # not secret: a file, as az takes the roles
                self.az.write("ad", "app", "update", "--id", app["appId"], "--sign-in-audience", SIGN_IN_AUDIENCE,
                              "--web-redirect-uris", *wanted,
                              "--optional-claims", f"@{OPTIONAL_CLAIMS}", "--app-roles", f"@{roles}",
                              "--required-resource-accesses", f"@{API_PERMISSIONS}",
                              *(["--set", *(f"{kind}.redirectUris=[]" for kind in sorted({k for k, _ in others}))]
                                if others else []),
                              change=("change", ", ".join(k for k, v in differs.items() if v)
                                      + (f" (removed {len(foreign) + len(others)} foreign redirect URI(s))"
                                         if foreign or others else "")))

    def ensure_service_principal(self, client_id: str, sp: dict | None = None) -> dict:
        """The registration's service principal (`sp`: as just read; else it is read), made when there is
        none, with user assignment required and listed under Enterprise applications."""
        sp = sp or self.az.show("ad", "sp", "show", "--id", client_id)
        if sp is None:
            sp = self.az.write("ad", "sp", "create", "--id", client_id, change=("create", "service principal"))
        if not (sp or {}).get("appRoleAssignmentRequired"):
            self.az.write("ad", "sp", "update", "--id", client_id, "--set", "appRoleAssignmentRequired=true",
                          change=("change", "user assignment required"))
        if ENTERPRISE_APP_TAG not in ((sp or {}).get("tags") or []):
            # without it, the app is missing from Entra ID > Enterprise applications (users and groups,
            # provisioning): service principals made by the CLI do not carry it
            self.az.write("ad", "sp", "update", "--id", client_id, "--add", "tags", ENTERPRISE_APP_TAG,
                          change=("change", "listed under Enterprise applications"))
        return sp or {"id": "<service principal id>"}

    def consent(self, sp: dict, client_id: str, tenant: str) -> None:
        """Tenant-wide admin consent to `openid profile email` on Microsoft Graph (an oauth2PermissionGrant
        for all principals), so no one meets "Need admin approval" (AADSTS65001) where user consent is
        restricted. Without the right role this is a warning with what to ask for, not a failure."""
        try:
            graph = self.az.read("ad", "sp", "show", "--id", GRAPH_APP_ID, "--query", "id") or "<graph sp id>"
            # besides the tenant-wide grant, one per person who consented for themselves: maybe many pages
            grants = self.graph_list(f"{GRAPH}/oauth2PermissionGrants?$filter=clientId eq '{sp['id']}'")
            found = next((g for g in grants if g.get("consentType") == "AllPrincipals"
                          and g.get("resourceId") == graph), None)
            if found is None:
                body = {"clientId": sp["id"], "consentType": "AllPrincipals", "resourceId": graph,
                        "scope": " ".join(CONSENTED_SCOPES)}
                self.az.write("rest", "--method", "POST", "--uri", f"{GRAPH}/oauth2PermissionGrants",
                              "--headers", "Content-Type=application/json", "--body", json.dumps(body),
                              change=("create", "admin consent to openid profile email (Microsoft Graph)"))
            elif missing := [s for s in CONSENTED_SCOPES if s not in (found.get("scope") or "").split()]:
                scope = " ".join([*(found.get("scope") or "").split(), *missing])
                self.az.write("rest", "--method", "PATCH", "--uri", f"{GRAPH}/oauth2PermissionGrants/{found['id']}",
                              "--headers", "Content-Type=application/json", "--body", json.dumps({"scope": scope}),
                              change=("change", f"admin consent now includes {' '.join(missing)}"))
        except AzError as err:
            if not says(err.stderr, NO_CONSENT):
                raise
            print("warning: admin consent was not granted: it needs the Entra role Privileged Role Administrator, "
                  "Cloud Application Administrator or Application Administrator. Without it, ask someone who has "
                  "one to grant it (Entra ID > App registrations > the app > API permissions > Grant admin consent, "
                  f"or https://login.microsoftonline.com/{tenant}/adminconsent?client_id={client_id}); until then, "
                  "where user consent is restricted, people see AADSTS65001 ('Need admin approval').",
                  file=sys.stderr)

    def give_certificate(self, client_id: str, vault: str) -> None:
        """The client certificate the app signs in with, appended to the registration's credentials unless
        it holds it already (Graph sets a certificate credential's customKeyIdentifier to its thumbprint):
        a Key Vault certificate by name (`--keyvault --cert`); one stored as a plain Key Vault secret, which
        that cannot read, or one the runner may not read as a certificate, by its public certificate, taken
        from the secret (never its private key)."""
        name = self.certificate_name
        try:
            thumbprint, public = self.az.read("keyvault", "certificate", "show", "--vault-name", vault, "--name",
                                              name, "--query", "x509ThumbprintHex"), None
        except AzError as err:
            refused = says(err.stderr, ROLE_PENDING)
            if not (refused or says(str(err), NOT_FOUND)):
                raise
            # Key Vault's RBAC refuses a certificate to a runner without Key Vault Certificate User before it
            # looks whether there is one, and a plain secret is none: Key Vault serves a certificate as the
            # secret of its name too, whose public certificate gives the thumbprint (and the credential)
            try:
                public = self.public_certificate(vault)
            except AzError as failed:
                if refused and says(failed.stderr, ROLE_PENDING):
                    raise AzError(f"Key Vault refused you the certificate {name} (OIDC_CLIENT_CERTIFICATE_NAME) both "
                                  "as a certificate and as a secret; its thumbprint tells whether the registration "
                                  "holds it (each run checks, and adds it when not): this needs Key Vault Certificate "
                                  "User on the vault, or Key Vault Secrets User (Secrets Officer, which deploy grants, "
                                  "includes it).", failed.stderr) from failed
                raise
            thumbprint = public.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - Entra's thumbprint is SHA-1
        held = {str(c.get("customKeyIdentifier") or "").upper()
                for c in self.az.read("ad", "app", "credential", "list", "--id", client_id, "--cert") or []}
        if thumbprint and thumbprint.upper() in held:
            return
        change = ("create", f"client certificate {name} (appended)")
        if public is None:
            self.az.write("ad", "app", "credential", "reset", "--id", client_id, "--keyvault", vault, "--cert", name,
                          "--append", change=change)
            return
        with secret_file(public.public_bytes(serialization.Encoding.PEM).decode()) as path:  # not secret: az reads it
            self.az.write("ad", "app", "credential", "reset", "--id", client_id, "--cert", f"@{path}", "--append",
                          change=change)

    def public_certificate(self, vault: str):
        """The certificate in the Key Vault secret OIDC_CLIENT_CERTIFICATE_NAME names, read as the app reads it."""
        try:
            stored = self.az.read("keyvault", "secret", "show", "--vault-name", vault, "--name",
                                  self.certificate_name, "--query", "{value: value, contentType: contentType}",
                                  quiet=True) or {}
        except AzError as err:
            if not says(str(err), NOT_FOUND):
                raise
            raise AzError(f"Key Vault {vault} holds no certificate {self.certificate_name} "
                          "(OIDC_CLIENT_CERTIFICATE_NAME), so the function app cannot sign in: import the "
                          f"certificate into {vault} (`az keyvault certificate import --vault-name {vault} --name "
                          f"{self.certificate_name} --file <pfx or pem>`), then run this again.", err.stderr) from err
        try:
            return client_certificate(SecretValue(stored.get("value") or "", None, None, self.certificate_name,
                                                  stored.get("contentType")))[1]
        except ConfigurationError as err:
            raise AzError(f"Key Vault secret {self.certificate_name} (OIDC_CLIENT_CERTIFICATE_NAME) holds no client "
                          "certificate with its private key (PEM, or PKCS#12 without a password): store one there, "
                          "then run this again.") from err

    def credential_ids(self, client_id: str) -> set[str]:
        """The key ids of the registration's client secrets."""
        return {c.get("keyId") for c in self.az.read("ad", "app", "credential", "list", "--id", client_id) or []}

    def new_secret(self, client_id: str, vault: str, *, before: set[str] | None = None) -> str:
        """Appends a client secret (other secrets stay valid) and stores it as Key Vault's newest version,
        tagged with the Entra credential's key id; returns that key id. The value passes from az's
        answer into a 0600 file for `az keyvault secret set --file`, and nowhere else."""
        end = datetime.now(UTC) + timedelta(days=self.args.secret_days)
        # az's answer holds the password but not the key id: the new credential is the one of ours that the
        # list after the reset holds and the one before did not.
        before = self.credential_ids(client_id) if before is None else before  # None: not read yet
        created = self.az.write("ad", "app", "credential", "reset", "--id", client_id, "--append",
                                "--display-name", CREDENTIAL_NAME, "--end-date", end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "--query", "{password: password}", change=("create", "client secret (appended)"),
                                quiet=True)
        password = (created or {}).get("password", "<secret>")
        credentials = self.az.read("ad", "app", "credential", "list", "--id", client_id) or []
        ours = sorted((c for c in credentials if c.get("displayName") == CREDENTIAL_NAME),
                      key=lambda c: c.get("startDateTime", ""))
        new = [c["keyId"] for c in ours if c.get("keyId") not in before]
        key_id = new[0] if len(new) == 1 else ours[-1]["keyId"] if ours else "<key id>"
        try:
            with secret_file(password) as path:
                self.az.write("keyvault", "secret", "set", "--vault-name", vault, "--name", self.secret_name, "--file",
                              path, "--encoding", "utf-8", "--expires", end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "--tags", f"{KEY_ID_TAG}={key_id}", "--query", "id", quiet=True,
                              change=("create", f"Key Vault secret {self.secret_name}, new version "
                                                f"(expires {end:%Y-%m-%d})"))
        except AzError as err:
            # Deleted again only when it is surely the one just made (another run appending at the same
            # time, or a list that does not show it yet, makes it unsure: then it is kept and named).
            self.unstored_secret(client_id, vault, key_id, err, certain=len(new) == 1)
        return key_id

    def unstored_secret(self, client_id: str, vault: str, key_id: str, err: AzError, *, certain: bool) -> None:
        """After the secret's Key Vault write failed: the Entra credential just appended goes again when Key
        Vault is known not to hold it (nothing else ever had its value, so nothing can use it; left, each
        rerun would add another that no rotation removes, as rotations go by Key Vault's tags). A refusal
        (403) stored nothing; after another failure (a 503, a lost answer) the write may have landed, so the
        newest version is read back first, and the credential is kept when it cannot be."""
        if not certain:
            raise AzError(f"{err} Which client secret this run made is not certain (another one was appended at "
                          "the same time), so none is removed; once Key Vault takes the secret again, remove the "
                          f"{CREDENTIAL_NAME} secret that no {self.secret_name} version is tagged with: `az ad app "
                          f"credential list --id {client_id}`, then `az ad app credential delete --id {client_id} "
                          "--key-id <key id>`.", err.stderr) from err
        refused = says(err.stderr, ROLE_PENDING)
        try:
            stored = None if refused else self.stored_key_id(vault)[1]
        except AzError:
            raise AzError(f"{err} Key Vault could not be read back, so the client secret just made (key id {key_id}) "
                          "is kept in case Key Vault took it; once Key Vault answers, check that its newest "
                          f"{self.secret_name} version is tagged {KEY_ID_TAG}={key_id}, and if not remove that secret: "
                          f"`az ad app credential delete --id {client_id} --key-id {key_id}`.", err.stderr) from err
        if stored == key_id:
            return  # the write landed; only its answer was lost
        try:
            self.az.write("ad", "app", "credential", "delete", "--id", client_id, "--key-id", key_id,
                          change=("remove", "the client secret just made, which Key Vault did not take"))
        except AzError as failed:
            raise AzError(f"{err} The client secret just made (key id {key_id}) is in no Key Vault and could not be "
                          f"removed ({failed}): remove it with `az ad app credential delete --id {client_id} "
                          f"--key-id {key_id}`.", err.stderr) from err
        raise AzError(f"{err} The client secret made for it was removed again (Key Vault did not take it, so "
                      "nothing can use it).", err.stderr) from err

    def stored_key_id(self, vault: str) -> tuple[bool, str | None]:
        """(whether the secret has a version in Key Vault, the Entra key id its newest version is tagged with:
        None for a version stored without the tag, by hand or by an earlier version of this script)."""
        tags = self.az.show("keyvault", "secret", "show", "--vault-name", vault, "--name", self.secret_name,
                            "--query", "{id: id, tags: tags}")
        return tags is not None, ((tags or {}).get("tags") or {}).get(KEY_ID_TAG)

    def vault_holds_a_secret_of(self, vault: str, credentials: set[str], *, untagged: bool = True) -> bool:
        """Whether Key Vault's newest version of the secret is one of these credentials (key ids) of the
        registration (an untagged one is taken to be, when the registration has a secret at all and
        `untagged`; a rerun of a move finds the one an earlier run stored by its tag)."""
        if not credentials:  # a registration without secrets (one just made): nothing to read
            return False
        stored, key_id = self.stored_key_id(vault)
        if key_id is None:
            return untagged and stored
        return key_id in credentials

    # -- who may sign in ----------------------------------------------------------------------------
    def assign(self) -> None:
        """Each --user and --group gets the kind's app role (assigning a group needs Entra ID P1 or P2)."""
        self.az.check_ready()
        _, _, settings = self.function_app()
        app = self.find_app(settings)
        sp = self.ensure_service_principal(app["appId"])
        role = kind_roles(app.get("appRoles"))[self.args.kind]
        assigned = {(a.get("principalId"), a.get("appRoleId")) for a in self.graph_list(self.assignments_uri(sp))}
        principals = [("user", u, self.az.read("ad", "user", "show", "--id", u, "--query", "id"))
                      for u in self.args.user or []] + [("group", g, self.group_id(g)) for g in self.args.group or []]
        for kind, name, principal in principals:
            principal = principal or f"<{kind} id>"
            if (principal, role) not in assigned:
                self.give_role(sp, principal, role, self.args.kind, f"{kind} {name}")

    def group_id(self, group: str) -> str | None:
        """The object id of the group --group names: its object id, or the one group whose display name is
        exactly that. Not `az ad group show --group NAME`: with no exact match it takes a group whose name
        only starts with NAME (a typo, or a group not made yet, gave the role to whoever made
        'NAME - anything'; anyone may create groups by default)."""
        if GUID.match(group):
            return self.az.read("ad", "group", "show", "--group", group, "--query", "id")
        quoted = group.replace("'", "''")  # OData's escape of a quote in a string
        found = self.az.read("ad", "group", "list", "--filter", f"displayName eq '{quoted}'", "--query", "[].id")
        if self.az.dry_run:
            return None
        if not found:
            raise AzError(f"No group is named exactly {group!r}: check the name (Entra ID > Groups), or give the "
                          "group's object id. Nothing was assigned.")
        if len(found) > 1:
            raise AzError(f"{len(found)} groups are named {group!r} ({', '.join(found)}): give the object id of the "
                          "one to assign. Nothing was assigned.")
        return found[0]

    def carry_assignments(self, previous_app_id: str, sp: dict) -> None:
        """The people and groups that hold a portal role on the registration the function app used before
        get it on this one: the role of the same value (the ids differ where either was configured by hand)."""
        previous = self.az.show("ad", "sp", "show", "--id", previous_app_id)
        if previous is None:
            return
        kinds = {role_id: kind for kind, role_id in kind_roles(previous.get("appRoles")).items()}
        assigned = {(a.get("principalId"), a.get("appRoleId")) for a in self.graph_list(self.assignments_uri(sp))}
        for held in self.graph_list(self.assignments_uri(previous)):
            who, kind = held.get("principalId"), kinds.get(held.get("appRoleId"))
            if kind and (who, self.kind_roles[kind]) not in assigned:
                principal = str(held.get("principalType") or "principal").lower()
                name = held.get("principalDisplayName") or who
                self.give_role(sp, who, self.kind_roles[kind], kind, f"{principal} {name} (as on {previous_app_id})")

    def assignments_uri(self, sp: dict) -> str:
        return f"{GRAPH}/servicePrincipals/{sp['id']}/appRoleAssignedTo"

    def give_role(self, sp: dict, principal: str, role: str, kind: str, who: str) -> None:
        """The app role `role` (the kind's, by its id on this registration) for `principal` (a user or group)
        on the service principal."""
        role_name = KIND_ROLES[kind]
        body = json.dumps({"principalId": principal, "resourceId": sp["id"], "appRoleId": role})
        try:
            self.az.write("rest", "--method", "POST", "--uri", self.assignments_uri(sp),
                          "--headers", "Content-Type=application/json", "--body", body,
                          change=("create", f"{who} assigned the role {role_name}"))
        except AzError as err:
            # Graph lists an assignment only once it has replicated: one made moments ago is refused
            # again, and that refusal says the role is there.
            if not says(err.stderr, (ASSIGNED_ALREADY,)):
                raise
            print(f"{who} already has the role {role_name} (Graph does not list it yet): nothing to do")

    def graph_list(self, uri: str) -> list:
        """Every item of a Graph collection, page after page: Graph answers a page at a time (100 for
        appRoleAssignedTo) with the next one's address in @odata.nextLink, which az rest does not follow
        (Azure/azure-cli#32080)."""
        items: list = []
        while uri:
            page = self.az.read("rest", "--method", "GET", "--uri", uri) or {}
            items += page.get("value", [])
            uri = page.get("@odata.nextLink")
        return items

    def rotate_secret(self) -> None:
        """Appends a new secret and stores it as Key Vault's newest version (the app picks it up within
        SECRET_CACHE_SECONDS, or at once when Entra refuses the old one). Then removes this script's
        older secrets whose Key Vault version was superseded more than --grace-days ago: run it again
        after the grace period (or on a schedule) and the previous secret goes."""
        self.az.check_ready()
        _, vault, settings = self.function_app()
        if self.certificate_name:
            raise AzError(f"The function app signs in with a client certificate (OIDC_CLIENT_CERTIFICATE_NAME="
                          f"{self.certificate_name}), not a client secret: rotate that certificate instead "
                          "(docs/operating.md, \"Client certificate instead of a secret\"): a new version in Key "
                          "Vault, its public certificate uploaded to the app registration first.")
        client_id = self.find_app(settings)["appId"]
        versions = sorted(self.az.read("keyvault", "secret", "list-versions", "--vault-name", vault, "--name",
                                       self.secret_name) or [], key=lambda v: v["attributes"]["created"])
        current = self.new_secret(client_id, vault)
        issued = datetime.now(UTC)
        cutoff = issued - timedelta(days=self.args.grace_days)
        superseded_at = {}  # key id -> when the next version replaced it
        for older, newer in itertools.pairwise(versions):
            superseded_at[(older.get("tags") or {}).get(KEY_ID_TAG)] = datetime.fromisoformat(
                newer["attributes"]["created"].replace("Z", "+00:00"))
        if versions:  # the one current until now, superseded by this run's (--grace-days 0: it goes now)
            superseded_at[(versions[-1].get("tags") or {}).get(KEY_ID_TAG)] = issued - timedelta(microseconds=1)
        for credential in self.az.read("ad", "app", "credential", "list", "--id", client_id) or []:
            key_id = credential.get("keyId")
            retired = superseded_at.get(key_id)
            if credential.get("displayName") == CREDENTIAL_NAME and key_id != current and retired and retired < cutoff:
                self.az.write("ad", "app", "credential", "delete", "--id", client_id, "--key-id", key_id,
                              change=("remove", f"the client secret superseded on {retired:%Y-%m-%d}"))

    # -- directory sync -----------------------------------------------------------------------------
    def sync_context(self) -> tuple[str, str, str, dict, str]:
        """(tenant URL, vault, token secret name, service principal, settings) for directory sync."""
        self.az.check_ready()
        base, vault, settings = self.function_app()
        sp = self.ensure_service_principal(self.find_app(settings)["appId"])
        return f"{base}/api/scim/v2", vault, secret_name(settings, "SCIM_TOKEN_NAME", SCIM_TOKEN_NAME), sp, settings

    def provisioning(self) -> None:
        """The SCIM token (made once, straight into Key Vault), the function app's right to read it and
        its SCIM_TOKEN_NAME; Entra's provisioning job from the `scim` template with the tenant URL and
        token, our attribute mappings, started. Each step only when it is not already so."""
        tenant_url, vault, token_name, sp, settings = self.sync_context()
        job = self.provisioning_job(sp)
        if job is None:  # before anything is stored, granted or set: Entra may not provision this app at all
            self.check_provisionable(sp)
        stored = self.az.show("keyvault", "secret", "show", "--vault-name", vault, "--name", token_name,
                              "--query", "{id: id, tags: tags}")
        token = None
        if stored is None:
            token = new_scim_token()
            self.store_tokens(vault, token_name, [token], ("create", f"Key Vault secret {token_name} (SCIM token)"))
        self.let_the_app_read(vault, token_name)
        update_app_settings(self.az, self.app, self.rg, {"SCIM_TOKEN_NAME": token_name}, settings)
        job = job or self.az.write("rest", "--method", "POST", "--uri", self.jobs_uri(sp), "--headers",
                                   "Content-Type=application/json", "--body", json.dumps({"templateId": SCIM_TEMPLATE}),
                                   change=("create", "Entra provisioning job (template scim)")) or {"id": "<job id>"}
        if token is not None or not given_to_entra((stored or {}).get("tags"), job, tenant_url):
            token = token or self.newest_tokens(vault, token_name)[0][0]
            self.give_entra(sp, job, vault, token_name, tenant_url, token)
        schema = self.az.read("rest", "--method", "GET", "--uri", f"{self.jobs_uri(sp)}/{job['id']}/schema")
        wanted = mapped_schema(schema or {})
        if schema is None or wanted != {k: v for k, v in schema.items() if not k.startswith("@odata")}:
            with secret_file(json.dumps(wanted)) as path:  # large, not secret: a file keeps argv short
                self.az.write("rest", "--method", "PUT", "--uri", f"{self.jobs_uri(sp)}/{job['id']}/schema",
                              "--headers", "Content-Type=application/json", "--body", f"@{path}",
                              change=("change", f"attribute mappings: objectId -> externalId, {ROLES_FUNCTION} "
                                                "-> roles (defined: String, multi-valued), groups not provisioned"))
        if (job.get("schedule") or {}).get("state") != "Active":
            self.az.write("rest", "--method", "POST", "--uri", f"{self.jobs_uri(sp)}/{job['id']}/start",
                          change=("change", "provisioning job started"))
        print(f"\nDirectory sync: Tenant URL {tenant_url}; the token is Key Vault secret {token_name} (never "
              "shown).\nAssign people or groups with a role (assign --kind agent|user); Entra provisions them at "
              "its next cycle (about 40 minutes), or at once with Provision on demand.")

    def rotate_token(self) -> None:
        """A new token first, the current one kept on the second line (the server accepts both), then
        Entra gets the new one and the version is marked as given: no request fails in between. When the
        newest version is what a rotation that stopped before Entra took its token leaves (two tokens, not
        marked), that token is sent again and no other made. --retire-old drops the older line, and
        refuses while a stopped rotation's token is yet to reach Entra."""
        tenant_url, vault, token_name, sp, _ = self.sync_context()
        job = self.provisioning_job(sp) or ({"id": "<job id>"} if self.az.dry_run else None)
        if job is None:
            raise AzError("No provisioning job yet: run `portal-sso register-app ... provisioning` first.")
        tokens, tags = self.newest_tokens(vault, token_name)
        stopped = not self.az.dry_run and stopped_rotation(tokens, tags)
        if self.args.retire_old:
            if stopped:
                raise AzError(f"Entra has not been given the newest token in {token_name} (a rotate-token stopped "
                              "before Entra took it), so the older one, which Entra still uses, is kept: run "
                              "rotate-token again (it sends Entra that same token and makes no other), then "
                              "--retire-old.")
            if len(tokens) > 1:
                self.store_tokens(vault, token_name, tokens[:1],
                                  ("remove", f"the previous SCIM token from {token_name}"), tags=tags)
            return
        if stopped:
            print(f"note: Entra was not given the newest token in {token_name} (an earlier run stopped before Entra "
                  "took it): sending it that one again, no new token made.")
        else:  # the token Entra was given, one stored by hand, or one given for another job or tenant URL
            tokens = [new_scim_token(), tokens[0]]
            self.store_tokens(vault, token_name, tokens,
                              ("change", f"Key Vault secret {token_name}: a new token first, the previous one kept"))
        try:
            self.give_entra(sp, job, vault, token_name, tenant_url, tokens[0])
        except AzError as err:
            raise AzError(f"{err} Key Vault still holds the token Entra uses (second line), so provisioning goes "
                          "on; once fixed, run rotate-token again: it sends Entra this same new token (it makes no "
                          "other), and --retire-old refuses until Entra has it.", err.stderr) from err
        if len(tokens) > 1:
            print("The previous token stays valid (second line of the secret) until `rotate-token --retire-old` or "
                  "the next rotation.")

    def jobs_uri(self, sp: dict) -> str:
        return f"{GRAPH}/servicePrincipals/{sp['id']}/synchronization/jobs"

    def provisioning_job(self, sp: dict) -> dict | None:
        """The service principal's provisioning job made from the `scim` template; None: none yet."""
        jobs = (self.az.read("rest", "--method", "GET", "--uri", self.jobs_uri(sp)) or {}).get("value", [])
        return next((j for j in jobs if j.get("templateId") == SCIM_TEMPLATE), None)

    def check_provisionable(self, sp: dict) -> None:
        """Entra offers the `scim` template only to an app made from its non-gallery template, which
        register-app makes; not to a plain app registration (made by an earlier register-app, or by hand
        under App registrations, and adopted with --app-id): say why, and the command that fixes it."""
        templates = (self.az.read("rest", "--method", "GET", "--uri",
                                  f"{GRAPH}/servicePrincipals/{sp['id']}/synchronization/templates") or {}).get("value")
        if templates is None or SCIM_TEMPLATE in {t.get("id") for t in templates}:
            return
        raise AzError(
            f"Entra does not provision this app ({sp.get('appId') or sp['id']}): it offers it no 'scim' provisioning "
            "template, as it is a plain app registration (made by an earlier register-app, or under App "
            f"registrations, and adopted with --app-id). Microsoft: \"If you create an app registration, the "
            f"corresponding service principal in enterprise apps {NOT_PROVISIONED}\" (Known issues for "
            "provisioning); its Enterprise applications page has no Provisioning to turn on. What works: `portal-sso "
            f"register-app --resource-group {self.rg} --app {self.app} --new-registration` makes a registration from "
            "Entra's non-gallery application template (it signs people in and Entra provisions it) and moves the "
            "function app to it, with its own client secret and the people assigned here; then run provisioning "
            "again. Nothing for directory sync was stored, granted or set.")

    def give_entra(self, sp: dict, job: dict, vault: str, token_name: str, tenant_url: str, token: str) -> None:
        """The tenant URL and token into the job's credentials (synchronization/secrets: the body holds the
        token, so it goes through a 0600 file, never argv), then tags on the token's version saying so."""
        body = {"value": [{"key": "BaseAddress", "value": tenant_url}, {"key": "SecretToken", "value": token}]}
        with secret_file(json.dumps(body)) as path:
            self.az.write("rest", "--method", "PUT", "--uri",
                          f"{GRAPH}/servicePrincipals/{sp['id']}/synchronization/secrets",
                          "--headers", "Content-Type=application/json", "--body", f"@{path}", quiet=True,
                          change=("change", f"Entra's provisioning credentials: tenant URL {tenant_url} and the token"))
        self.az.write("keyvault", "secret", "set-attributes", "--vault-name", vault, "--name", token_name,
                      "--tags", f"{SYNCED_TAGS[0]}={job['id']}", f"{SYNCED_TAGS[1]}={tenant_url}", "--query", "id",
                      change=None)

    def newest_tokens(self, vault: str, token_name: str) -> tuple[list[str], dict[str, str]]:
        """The newest version's tokens (the newest first) and its tags, read together."""
        newest = self.az.read("keyvault", "secret", "show", "--vault-name", vault, "--name", token_name,
                              "--query", "{value: value, tags: tags}", quiet=True) or {}
        tokens = [line.strip() for line in (newest.get("value") or "<token>").splitlines() if line.strip()]
        if not tokens:
            raise AzError(f"Key Vault secret {token_name} holds no token: delete it and run provisioning again.")
        return tokens, newest.get("tags") or {}

    def store_tokens(self, vault: str, token_name: str, tokens: list[str], change: tuple[str, str], *,
                     tags: dict[str, str] | None = None) -> None:
        """The tokens, one per line, the newest first, as the secret's new version (with `tags`)."""
        tagging = ["--tags", *(f"{k}={v}" for k, v in sorted(tags.items()))] if tags else []
        with secret_file("\n".join(tokens)) as path:
            self.az.write("keyvault", "secret", "set", "--vault-name", vault, "--name", token_name, "--file", path,
                          "--encoding", "utf-8", *tagging, "--query", "id", quiet=True, change=change)


def given_to_entra(tags: dict | None, job: dict, tenant_url: str) -> bool:
    """Whether a token version's tags say Entra took its first token for this job and tenant URL."""
    return ((tags or {}).get(SYNCED_TAGS[0]), (tags or {}).get(SYNCED_TAGS[1])) == (job["id"], tenant_url)


def stopped_rotation(tokens: list[str], tags: dict | None) -> bool:
    """Whether the newest version is what a rotate-token that stopped before Entra took its new token
    wrote: two tokens (new, and the one Entra uses) with no mark of being given. One token unmarked was
    stored by hand or by a provisioning that stopped; marked for another job or tenant URL, Entra was
    given its first token: rotating those makes a new token."""
    return len(tokens) == 2 and not any((tags or {}).get(tag) for tag in SYNCED_TAGS)


def differs_from(graphs, wanted) -> bool:
    """Whether what Graph answers differs from what we want (our file's JSON) in what that sets, in any order."""
    return comparable(what_we_set(graphs, wanted)) != comparable(wanted)


def what_we_set(graphs, ours):
    """Graph's answer cut to the keys our file gives (at every level; a list's items to the keys of our
    items): Graph adds read-only ones, such as each app role's `origin`, that an update cannot change."""
    if isinstance(graphs, dict) and isinstance(ours, dict):
        return {k: what_we_set(v, ours[k]) for k, v in graphs.items() if k in ours}
    if isinstance(graphs, list) and isinstance(ours, list):
        keys = {k: v for item in ours if isinstance(item, dict) for k, v in item.items()}
        return [what_we_set(item, keys) if keys else item for item in graphs]
    return graphs


def comparable(items: list | dict | None) -> str:
    """JSON compared regardless of key and element order (Graph answers in its own order)."""
    def canonical(item):
        if isinstance(item, dict):
            return {k: canonical(v) for k, v in sorted(item.items()) if not k.startswith("@odata")}
        if isinstance(item, list):
            return sorted((canonical(i) for i in item), key=json.dumps)
        return item
    return json.dumps(canonical(items or []), sort_keys=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="portal-sso register-app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resource-group", "-g", required=True, type=RESOURCE_GROUP)
    parser.add_argument("--app", required=True, type=FUNCTION_APP, help="the function app (deploy's --app)")
    parser.add_argument("--app-id", help="adopt this existing registration (you must be one of its owners)")
    parser.add_argument("--new-registration", action="store_true",
                        help="make a new registration even though the function app has one, and move the app to it "
                             "(its people's roles carried over; the old one is left to delete): for a registration "
                             "Entra does not provision (made by an earlier register-app, or adopted with --app-id)")
    parser.add_argument("--display-name", help="a new registration's name (default: Portal SSO (APP)); never used "
                                               "to find one")
    parser.add_argument("--keep-redirect-uri", action="append", metavar="URI",
                        help="a redirect URI not made by this script to keep on the registration; repeatable")
    parser.add_argument("--public-base-url", type=https_origin,
                        help="the app's external URL, e.g. a custom domain: the redirect URIs are built from it and "
                             "the app's PUBLIC_BASE_URL set to it (default: the function app's PUBLIC_BASE_URL or "
                             "host name)")
    parser.add_argument("--secret-days", type=whole_number(1, MAX_SECRET_DAYS), default=180,
                        help=f"client secret lifetime in days, 1 to {MAX_SECRET_DAYS} (default 180)")
    parser.add_argument("--dry-run", action="store_true", help="print every az command, run none")
    anywhere = argparse.ArgumentParser(add_help=False)  # --dry-run after a subcommand too
    anywhere.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    assign = commands.add_parser("assign", parents=[anywhere], help="give users or groups a kind's app role",
                                 description="Assigns users or groups the app role of a kind (user assignment is "
                                             "required). Assigning a group needs Entra ID P1 or P2.")
    assign.add_argument("--user", action="append", help="a user principal name or object id; repeatable")
    assign.add_argument("--group", action="append", help="a group's exact display name or its object id; repeatable")
    assign.add_argument("--kind", required=True, choices=KINDS, help="the role: user (Portal.User) or agent "
                                                                     "(Portal.Agent)")
    rotate = commands.add_parser("rotate-secret", parents=[anywhere],
                                 help="a new client secret; older ones go after a grace period")
    rotate.add_argument("--grace-days", type=whole_number(0), default=7,
                        help="days the previous secret stays valid after a new one is issued (default 7)")
    commands.add_parser("provisioning", parents=[anywhere], help="set up directory sync (SCIM) from Entra ID",
                        description=Registration.provisioning.__doc__)
    token = commands.add_parser("rotate-token", parents=[anywhere], help="a new SCIM token; the old one stays "
                                                                         "valid until Entra has the new one",
                                description=Registration.rotate_token.__doc__)
    token.add_argument("--retire-old", action="store_true", help="only drop the previous token (refused while Entra "
                                                                "has not been given the newest)")
    args = parser.parse_args(argv)
    args.display_name = args.display_name or f"Portal SSO ({args.app})"
    if args.command == "assign" and not (args.user or args.group):
        parser.error("assign needs --user or --group")
    if args.new_registration and (args.app_id or args.command):
        parser.error("--new-registration makes a new registration: not with --app-id, nor with a subcommand (run the "
                     "subcommand after it)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    az = Az(dry_run=args.dry_run)
    registration = Registration(az, args)
    try:
        {"assign": registration.assign, "rotate-secret": registration.rotate_secret,
         "provisioning": registration.provisioning, "rotate-token": registration.rotate_token}.get(
            args.command, registration.ensure)()
    except AzError as err:
        return fail(err, az)
    print(az.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
