"""scripts/register-app: the Entra ID side, as the admin steps describe it, by command.

    scripts/register-app --resource-group RG --app APP          create or update the registration
    scripts/register-app --resource-group RG --app APP assign --user ann@contoso.com --group "Agents"
    scripts/register-app --resource-group RG --app APP rotate-secret [--grace-days 7]

The registration: single tenant; Web redirect URIs for users and agents, built from the function
app's real host name (or --public-base-url); optional claims from infra/optional-claims.json (`email`
in ID and access tokens, `xms_edov`); a service principal with user assignment required; a client
secret with an end date, appended (never replacing other secrets), written straight into Key Vault
and never printed, logged or put on a command line. Then the function app gets OIDC_CLIENT_ID and
OIDC_ISSUER_URL. Idempotent; --dry-run prints every az command and runs none.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.config import KINDS, redirect_uri

from .azure_cli import Az, AzError, app_settings, fail, secret_file, update_app_settings

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL_CLAIMS = ROOT / "infra" / "optional-claims.json"
SECRET_NAME = "oidc-client-secret"
CREDENTIAL_NAME = "portal-sso"  # the display name of the client secrets this script makes
KEY_ID_TAG = "entraKeyId"  # on each Key Vault version: which Entra credential it holds
DEFAULT_ROLE = "00000000-0000-0000-0000-000000000000"  # the "Default Access" app role of assignments
GRAPH = "https://graph.microsoft.com/v1.0"


def issuer_url(tenant: str) -> str:
    """Entra's "OpenID Connect metadata document" URL, as the portal shows it (with its last '/')."""
    return f"https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"


class Registration:
    def __init__(self, az: Az, args: argparse.Namespace):
        self.az, self.args = az, args
        self.rg, self.app = args.resource_group, args.app

    def function_app(self) -> tuple[str, str, dict[str, str]]:
        """(the public base URL, the vault's name, the app settings), read from the deployed function app."""
        settings = app_settings(self.az, self.app, self.rg)
        base = self.args.public_base_url or settings.get("PUBLIC_BASE_URL")
        if not base:
            host = self.az.run("functionapp", "show", "--name", self.app, "--resource-group", self.rg,
                               "--query", "defaultHostName")
            base = f"https://{host or self.app + '.azurewebsites.net'}"
        vault_url = settings.get("KEY_VAULT_URL") or f"https://{self.app}-kv.vault.azure.net"
        return base.rstrip("/"), vault_url.split("//", 1)[1].split(".", 1)[0], settings

    def ensure(self) -> None:
        tenant = self.az.check_ready().get("tenantId", "<tenant>")
        base, vault, current = self.function_app()
        uris = [redirect_uri(base, kind) for kind in KINDS]
        claims = json.loads(OPTIONAL_CLAIMS.read_text())
        app = self.find_app()
        if app is None:
            app = self.az.run("ad", "app", "create", "--display-name", self.args.display_name,
                              "--sign-in-audience", "AzureADMyOrg", "--web-redirect-uris", *uris,
                              "--optional-claims", f"@{OPTIONAL_CLAIMS}",
                              change=f"app registration {self.args.display_name}") or {"appId": "<client id>"}
        elif not set(uris) <= set(existing := app.get("web", {}).get("redirectUris", [])) \
                or app.get("optionalClaims") != claims:
            # Keeps redirect URIs an admin added (the portal's logout pages, say), adds ours.
            merged = sorted(set(uris) | set(existing))
            self.az.run("ad", "app", "update", "--id", app["appId"], "--web-redirect-uris", *merged,
                        "--optional-claims", f"@{OPTIONAL_CLAIMS}", change="redirect URIs and optional claims")
        client_id = app["appId"]
        self.ensure_service_principal(client_id)
        if self.az.show("keyvault", "secret", "show", "--vault-name", vault, "--name", SECRET_NAME,
                        "--query", "id") is None:
            self.new_secret(client_id, vault)
        update_app_settings(self.az, self.app, self.rg,
                            {"OIDC_CLIENT_ID": client_id, "OIDC_ISSUER_URL": issuer_url(tenant)}, current)
        print(f"\nApplication (client) ID: {client_id}\nOpenID Connect metadata document: {issuer_url(tenant)}\n"
              f"Redirect URIs: {' '.join(uris)}\nAssign people: scripts/register-app --resource-group {self.rg} "
              f"--app {self.app} assign --user <upn> --group <group name>")

    def find_app(self) -> dict | None:
        found = self.az.run("ad", "app", "list", "--display-name", self.args.display_name) or []
        if len(found) > 1:
            raise AzError(f"{len(found)} app registrations are named {self.args.display_name!r}: give a unique "
                          "--display-name.")
        return found[0] if found else None

    def ensure_service_principal(self, client_id: str) -> dict:
        sp = self.az.show("ad", "sp", "show", "--id", client_id)
        if sp is None:
            sp = self.az.run("ad", "sp", "create", "--id", client_id, change="service principal")
        if not (sp or {}).get("appRoleAssignmentRequired"):
            self.az.run("ad", "sp", "update", "--id", client_id, "--set", "appRoleAssignmentRequired=true",
                        change="user assignment required")
        return sp or {"id": "<service principal id>"}

    def new_secret(self, client_id: str, vault: str) -> str:
        """Appends a client secret (other secrets stay valid) and stores it as Key Vault's newest version,
        tagged with the Entra credential's key id; returns that key id. The value passes from az's
        answer into a 0600 file for `az keyvault secret set --file`, and nowhere else."""
        end = datetime.now(UTC) + timedelta(days=self.args.secret_days)
        created = self.az.run("ad", "app", "credential", "reset", "--id", client_id, "--append",
                              "--display-name", CREDENTIAL_NAME, "--end-date", end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "--query", "{password: password}", change="client secret (appended)", quiet=True)
        password = (created or {}).get("password", "<secret>")
        credentials = self.az.run("ad", "app", "credential", "list", "--id", client_id) or []
        ours = sorted((c for c in credentials if c.get("displayName") == CREDENTIAL_NAME),
                      key=lambda c: c.get("startDateTime", ""))
        key_id = ours[-1]["keyId"] if ours else "<key id>"
        with secret_file(password) as path:
            self.az.run("keyvault", "secret", "set", "--vault-name", vault, "--name", SECRET_NAME, "--file", path,
                        "--encoding", "utf-8", "--expires", end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "--tags", f"{KEY_ID_TAG}={key_id}", "--query", "id", quiet=True,
                        change=f"Key Vault secret {SECRET_NAME}, new version (expires {end:%Y-%m-%d})")
        return key_id

    def assign(self) -> None:
        self.az.check_ready()
        app = self.find_app()
        if app is None and not self.az.dry_run:
            raise AzError("No app registration yet: run scripts/register-app without 'assign' first.")
        sp = self.ensure_service_principal((app or {}).get("appId", "<client id>"))
        assigned = {a.get("principalId") for a in (self.az.run(
            "rest", "--method", "GET", "--uri", f"{GRAPH}/servicePrincipals/{sp['id']}/appRoleAssignedTo") or {}
        ).get("value", [])}
        principals = [("user", u, ("ad", "user", "show", "--id", u)) for u in self.args.user or []] + \
            [("group", g, ("ad", "group", "show", "--group", g)) for g in self.args.group or []]
        for kind, name, show in principals:
            principal = (self.az.run(*show, "--query", "id") or f"<{kind} id>")
            if principal in assigned:
                continue
            body = json.dumps({"principalId": principal, "resourceId": sp["id"], "appRoleId": DEFAULT_ROLE})
            self.az.run("rest", "--method", "POST", "--uri", f"{GRAPH}/servicePrincipals/{sp['id']}/appRoleAssignedTo",
                        "--headers", "Content-Type=application/json", "--body", body, change=f"assigned {kind} {name}")

    def rotate_secret(self) -> None:
        """Appends a new secret and stores it as Key Vault's newest version (the app picks it up within
        SECRET_CACHE_SECONDS, or at once when Entra refuses the old one). Then removes this script's
        older secrets whose Key Vault version was superseded more than --grace-days ago: run it again
        after the grace period (or on a schedule) and the previous secret goes."""
        self.az.check_ready()
        _, vault, _ = self.function_app()
        app = self.find_app()
        if app is None and not self.az.dry_run:
            raise AzError("No app registration yet: run scripts/register-app first.")
        client_id = (app or {}).get("appId", "<client id>")
        versions = sorted(self.az.run("keyvault", "secret", "list-versions", "--vault-name", vault, "--name",
                                      SECRET_NAME) or [], key=lambda v: v["attributes"]["created"])
        current = self.new_secret(client_id, vault)
        cutoff = datetime.now(UTC) - timedelta(days=self.args.grace_days)
        superseded_at = {}  # key id -> when the next version replaced it
        for older, newer in itertools.pairwise(versions):
            superseded_at[(older.get("tags") or {}).get(KEY_ID_TAG)] = datetime.fromisoformat(
                newer["attributes"]["created"].replace("Z", "+00:00"))
        for credential in self.az.run("ad", "app", "credential", "list", "--id", client_id) or []:
            key_id = credential.get("keyId")
            retired = superseded_at.get(key_id)
            if credential.get("displayName") == CREDENTIAL_NAME and key_id != current and retired and retired < cutoff:
                self.az.run("ad", "app", "credential", "delete", "--id", client_id, "--key-id", key_id,
                            change=f"removed the client secret superseded on {retired:%Y-%m-%d}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/register-app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resource-group", "-g", required=True)
    parser.add_argument("--app", required=True, help="the function app (scripts/deploy's --app)")
    parser.add_argument("--display-name", help="the registration's name (default: Portal SSO (APP))")
    parser.add_argument("--public-base-url", help="default: the function app's PUBLIC_BASE_URL or host name")
    parser.add_argument("--secret-days", type=int, default=180, help="client secret lifetime (default 180)")
    parser.add_argument("--dry-run", action="store_true", help="print every az command, run none")
    commands = parser.add_subparsers(dest="command")
    assign = commands.add_parser("assign", help="let users or groups sign in (user assignment is required)")
    assign.add_argument("--user", action="append", help="a user principal name; repeatable")
    assign.add_argument("--group", action="append", help="a group's name or object id; repeatable")
    rotate = commands.add_parser("rotate-secret", help="a new client secret; older ones go after a grace period")
    rotate.add_argument("--grace-days", type=int, default=7)
    args = parser.parse_args(argv)
    args.display_name = args.display_name or f"Portal SSO ({args.app})"
    if args.command == "assign" and not (args.user or args.group):
        parser.error("assign needs --user or --group")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    az = Az(dry_run=args.dry_run)
    registration = Registration(az, args)
    try:
        {"assign": registration.assign, "rotate-secret": registration.rotate_secret}.get(
            args.command, registration.ensure)()
    except AzError as err:
        return fail(err, az)
    print(az.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
