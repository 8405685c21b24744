"""scripts/deploy: creates or updates everything Portal SSO needs in Azure, then deploys the package.

Resource group; storage account (shared-key access off) with the three tables; Key Vault (RBAC);
Log Analytics and Application Insights; a Flex Consumption Python function app with a system-assigned
identity, identity-based host and deployment storage; the roles that identity needs, each scoped to
its resource; the app settings; a session-signing key (EC P-256) in Key Vault when there is none; the
package. Idempotent: a second run creates and changes nothing, and says so. --dry-run prints every az
command and runs none.

    scripts/deploy --resource-group rg-sso --location westeurope --app contoso-sso \\
        --portal-user-url https://portal.contoso.com/sso/user --portal-agent-url https://portal.contoso.com/sso/agent
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.config import origin_of
from shared.tables import APP_TABLES

from .azure_cli import Az, AzError, app_settings, fail, secret_file, update_app_settings
from .package import build_package

PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
DEPLOY_CONTAINER = "app-package"
PACKAGE_SETTING = "PORTAL_SSO_PACKAGE_SHA256"  # what is deployed; a rerun with the same package skips it
# Role -> which resource it is scoped to (the least each needs).
ROLES = (
    ("Storage Blob Data Owner", "storage"),  # host storage (leases, timers) and the deployment container
    ("Storage Table Data Contributor", "tables"),  # PortalAccounts, SsoFlows, SignInEvents, each on its own
    ("Key Vault Secrets User", "vault"),  # read the client secret and the signing key
    ("Monitoring Metrics Publisher", "insights"),  # send telemetry with Entra authentication
)


def names(app: str) -> dict[str, str]:
    """Resource names derived from the app's: storage accounts allow 3-24 lower-case letters and digits."""
    plain = re.sub(r"[^a-z0-9]", "", app.lower())
    return {"storage": (plain[:20] + "stor")[:24], "vault": (app[:21] + "-kv").strip("-"),
            "workspace": f"{app}-logs", "insights": f"{app}-insights"}


def signing_key_pem() -> str:
    """A new EC P-256 private key (ES256 session tokens): it loads and signs far faster than RSA."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def deploy(az: Az, args: argparse.Namespace) -> dict[str, str]:
    rg, app, loc = args.resource_group, args.app, args.location
    n = {**names(app), **{k: v for k, v in (("storage", args.storage_account), ("vault", args.key_vault)) if v}}
    account = az.check_ready()

    # 1. resource group
    if az.show("group", "show", "--name", rg) is None:
        az.run("group", "create", "--name", rg, "--location", loc, change=f"resource group {rg}")

    # 2. storage: shared-key access off (identities only), the app's tables, the deployment container
    storage = az.show("storage", "account", "show", "--name", n["storage"], "--resource-group", rg)
    if storage is None:
        check = az.run("storage", "account", "check-name", "--name", n["storage"])
        if check is not None and not check.get("nameAvailable", True):
            raise AzError(f"The storage account name {n['storage']} is taken ({check.get('reason')}): "
                          "choose another with --storage-account.")
        storage = az.run("storage", "account", "create", "--name", n["storage"], "--resource-group", rg,
                         "--location", loc, "--sku", "Standard_LRS", "--kind", "StorageV2",
                         "--allow-shared-key-access", "false", "--allow-blob-public-access", "false",
                         "--min-tls-version", "TLS1_2", change=f"storage account {n['storage']} (shared keys off)")
    storage_id = (storage or {}).get("id", f"<id of {n['storage']}>")
    scopes = {"storage": storage_id, "tables": [f"{storage_id}/tableServices/default/tables/{t}" for t in APP_TABLES]}
    for table_id in scopes["tables"]:
        if az.show("resource", "show", "--ids", table_id) is None:
            az.run("resource", "create", "--id", table_id, "--properties", "{}",
                   change=f"table {table_id.rsplit('/', 1)[1]}")
    container_id = f"{storage_id}/blobServices/default/containers/{DEPLOY_CONTAINER}"
    if az.show("resource", "show", "--ids", container_id) is None:
        az.run("resource", "create", "--id", container_id, "--properties", "{}",
               change=f"blob container {DEPLOY_CONTAINER} (deployment packages)")

    # 3. Key Vault in RBAC mode
    vault = az.show("keyvault", "show", "--name", n["vault"], "--resource-group", rg)
    if vault is None:
        vault = az.run("keyvault", "create", "--name", n["vault"], "--resource-group", rg, "--location", loc,
                       "--enable-rbac-authorization", "true", change=f"Key Vault {n['vault']} (RBAC)")
    elif not vault.get("properties", {}).get("enableRbacAuthorization"):
        raise AzError(f"Key Vault {n['vault']} uses access policies, not RBAC: switch it with `az keyvault update "
                      f"--name {n['vault']} --enable-rbac-authorization true` (after granting roles), or name "
                      "another vault with --key-vault.")
    vault_id = (vault or {}).get("id", f"<id of {n['vault']}>")
    vault_url = (vault or {}).get("properties", {}).get("vaultUri", f"https://{n['vault']}.vault.azure.net/")
    scopes["vault"] = vault_id

    # 4. Log Analytics and Application Insights (workspace-based; az's app-insights commands are an extension)
    workspace = az.show("monitor", "log-analytics", "workspace", "show", "--resource-group", rg,
                        "--workspace-name", n["workspace"])
    if workspace is None:
        workspace = az.run("monitor", "log-analytics", "workspace", "create", "--resource-group", rg,
                           "--workspace-name", n["workspace"], "--location", loc,
                           change=f"Log Analytics workspace {n['workspace']}")
    insights = az.show("resource", "show", "--resource-group", rg, "--name", n["insights"],
                       "--resource-type", "Microsoft.Insights/components")
    if insights is None:
        properties = {"Application_Type": "web", "WorkspaceResourceId": (workspace or {}).get("id", "<workspace id>")}
        insights = az.run("resource", "create", "--resource-group", rg, "--name", n["insights"],
                          "--resource-type", "Microsoft.Insights/components", "--location", loc,
                          "--properties", json.dumps(properties), change=f"Application Insights {n['insights']}")
    scopes["insights"] = (insights or {}).get("id", f"<id of {n['insights']}>")
    connection = (insights or {}).get("properties", {}).get("ConnectionString", "<connection string>")

    # 5. the Flex Consumption function app, with its system-assigned identity
    site = az.show("functionapp", "show", "--name", app, "--resource-group", rg)
    if site is None:
        az.run("functionapp", "create", "--name", app, "--resource-group", rg, "--flexconsumption-location", loc,
               "--runtime", "python", "--runtime-version", args.python, "--storage-account", n["storage"],
               "--deployment-storage-name", n["storage"], "--deployment-storage-container-name", DEPLOY_CONTAINER,
               "--deployment-storage-auth-type", "SystemAssignedIdentity", "--assign-identity", "[system]",
               change=f"function app {app} (Flex Consumption, Python {args.python})")
        site = az.run("functionapp", "show", "--name", app, "--resource-group", rg)
    principal = ((site or {}).get("identity") or {}).get("principalId")
    if principal is None and not az.dry_run:
        principal = az.run("functionapp", "identity", "assign", "--name", app, "--resource-group", rg,
                           change="the app's system-assigned identity")["principalId"]
    principal = principal or "<principal id>"
    host = (site or {}).get("defaultHostName", f"{app}.azurewebsites.net")

    # 6. roles: the app's identity, each on the resource it needs; the deployer may write the signing key
    grants = [(role, scope) for role, where in ROLES
              for scope in (scopes[where] if isinstance(scopes[where], list) else [scopes[where]])]
    for role, scope in grants:
        grant(az, principal, "ServicePrincipal", role, scope)
    me = az.run("ad", "signed-in-user", "show", "--query", "id") or "<your object id>"
    grant(az, me, "User", "Key Vault Secrets Officer", vault_id)

    # 7. app settings (no storage key anywhere: host storage by identity)
    settings = {
        "AzureWebJobsStorage__accountName": n["storage"],
        "KEY_VAULT_URL": vault_url.rstrip("/"),
        "TABLES_ENDPOINT": f"https://{n['storage']}.table.core.windows.net",
        "PORTAL_USER_URL": args.portal_user_url,
        "PORTAL_AGENT_URL": args.portal_agent_url,
        "PUBLIC_BASE_URL": f"https://{host}",
        "APPLICATIONINSIGHTS_CONNECTION_STRING": connection,
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD",
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
    }
    if origin_of(args.portal_user_url) != origin_of(args.portal_agent_url) and args.session_audience is None:
        raise AzError("The two portal URLs have different origins: give --session-audience (the 'aud' your "
                      "portal checks).")
    if args.session_audience:
        settings["SESSION_TOKEN_AUDIENCE"] = args.session_audience
    current = app_settings(az, app, rg)
    update_app_settings(az, app, rg, settings, current)
    if "AzureWebJobsStorage" in current:  # a key-based connection string: identities only
        az.run("functionapp", "config", "appsettings", "delete", "--name", app, "--resource-group", rg,
               "--setting-names", "AzureWebJobsStorage", change="removed the key-based AzureWebJobsStorage")

    # 8. the session-signing key, made once (rotation: see README)
    if az.show("keyvault", "secret", "show", "--vault-name", n["vault"], "--name", "session-signing-key",
               "--query", "id") is None:
        with secret_file(signing_key_pem()) as path:
            az.run("keyvault", "secret", "set", "--vault-name", n["vault"], "--name", "session-signing-key",
                   "--file", path, "--encoding", "utf-8", "--content-type", "application/x-pem-file",
                   "--query", "id", change="session-signing key (EC P-256) in Key Vault", quiet=True)

    # 9. the package, deployed only when it changed
    with tempfile.TemporaryDirectory() as work:
        package = Path(work) / "app.zip"
        digest = build_package(package)
        if current.get(PACKAGE_SETTING) != digest:
            az.run("functionapp", "deployment", "source", "config-zip", "--name", app, "--resource-group", rg,
                   "--src", str(package), "--build-remote", "true", change=f"package {digest[:12]} deployed")
            az.run("functionapp", "config", "appsettings", "set", "--name", app, "--resource-group", rg,
                   "--settings", f"{PACKAGE_SETTING}={digest}")
    return {"host": host, "subscription": account.get("id", "")}


def grant(az: Az, principal: str, kind: str, role: str, scope: str) -> None:
    found = az.run("role", "assignment", "list", "--assignee", principal, "--role", role, "--scope", scope)
    if not found:
        az.run("role", "assignment", "create", "--assignee-object-id", principal, "--assignee-principal-type", kind,
               "--role", role, "--scope", scope, change=f"role {role} on {scope.rsplit('/', 1)[-1]}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resource-group", "-g", required=True)
    parser.add_argument("--location", "-l", required=True, help="an Azure region that offers Flex Consumption")
    parser.add_argument("--app", required=True, help="the function app's name (its host is APP.azurewebsites.net)")
    parser.add_argument("--portal-user-url", required=True)
    parser.add_argument("--portal-agent-url", required=True)
    parser.add_argument("--session-audience", help="the session token's aud (default: the portals' origin)")
    parser.add_argument("--python", default="3.12", choices=PYTHON_VERSIONS)
    parser.add_argument("--storage-account", help="default: derived from --app")
    parser.add_argument("--key-vault", help="default: APP-kv")
    parser.add_argument("--dry-run", action="store_true", help="print every az command, run none")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    az = Az(dry_run=args.dry_run)
    try:
        result = deploy(az, args)
    except AzError as err:
        return fail(err, az)
    print(az.summary())
    base = f"https://{result['host']}"
    print(f"\nUser Single Sign On URL:  {base}/api/sso/user/callback\nAgent Single Sign On URL: "
          f"{base}/api/sso/agent/callback\nSetup page: {base}/api/sso/setup?code=<function key>\n"
          f"Read the function key: az functionapp function keys list --resource-group {args.resource_group} "
          f"--name {args.app} --function-name sso_setup\n"
          f"Next: scripts/register-app --resource-group {args.resource_group} --app {args.app}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
