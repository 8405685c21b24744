"""portal-sso deploy (scripts/deploy): creates or updates everything Portal SSO needs in Azure, then deploys
the package.

Resource group; storage account (shared-key access off, TLS 1.2) with the app's tables and the blob
containers the host and the deployment use; Key Vault (RBAC, purge protection); Log Analytics and
Application Insights (Entra-authenticated ingestion only); a Flex Consumption Python function app
with a system-assigned identity, HTTPS only, TLS 1.2, FTP and basic publishing credentials off,
identity-based host and deployment storage; the roles that identity needs, each scoped to the one
container, table, secret or resource it uses (the account-wide Blob role `functionapp create` grants
is removed); the app settings; a session-signing key (EC P-256) in
Key Vault when there is none; the package. Idempotent: a second run creates and changes nothing,
and says so; an existing app keeps the vault and storage account its settings name (another one only
with --repoint). --what-if reads the current state and prints what a run would create, change and
remove, writing nothing; --dry-run prints every az command and runs none (not even reads).

    portal-sso deploy --resource-group rg-sso --location westeurope --app contoso-sso \\
        --portal-user-url https://portal.contoso.com/sso/user --portal-agent-url https://portal.contoso.com/sso/agent
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shared.config import origin_of, public_base_url
from shared.tables import APP_TABLES

from .arguments import FUNCTION_APP, KEY_VAULT, RESOURCE_GROUP, STORAGE_ACCOUNT, WORKSPACE, https_url, names
from .azure_cli import (
    Az,
    AzError,
    app_settings,
    as_the_app_reads,
    delete_app_setting,
    fail,
    grant,
    host_label,
    revoke,
    says,
    secret_file,
    secret_name,
    site_field,
    update_app_settings,
)
from .package import PackageError, build_package
from .register_app import SCIM_TOKEN_NAME
from .register_app import SECRET_NAME as CLIENT_SECRET_NAME

PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
NEW_APP_PYTHON = "3.12"  # an existing app keeps the version it runs unless --python says otherwise
DEPLOY_CONTAINER = "app-package"
# The blob containers the app's identity may use (Storage Blob Data Owner on each, not on the account):
# the Flex Consumption deployment packages, and the Functions host's own (timer leases, function keys).
CONTAINERS = (DEPLOY_CONTAINER, "azure-webjobs-hosts", "azure-webjobs-secrets")
SIGNING_KEY_NAME = "session-signing-key"
INSIGHTS_TYPE = "Microsoft.Insights/components"
TLS_OK = ("1.2", "1.3")
PACKAGE_SETTING = "PORTAL_SSO_PACKAGE_SHA256"  # what is deployed; a rerun with the same package skips it
PACKAGE_PYTHON = "PORTAL_SSO_PACKAGE_PYTHON"  # the Python its remote build installed the requirements for
# The vault and storage account a move takes the app off ("storage=NAME vault=NAME"), written with the settings
# that point at the new ones and removed once the identity's roles on the old ones are (step 10): a run that
# stops in between leaves the settings naming the new ones, and the next run finishes the move from this.
MOVED_FROM = "PORTAL_SSO_MOVED_FROM"


# What the old vault or storage account holds, said when --repoint moves the app off it.
LEFT_BEHIND = {
    "vault": "the client secret, the session-signing key and the SCIM token (sign-in fails until `portal-sso "
             "register-app` stores a client secret in the new vault (an app that signs in with a client certificate, "
             "OIDC_CLIENT_CERTIFICATE_NAME: once you import that certificate into the new vault and run "
             "register-app), and `register-app provisioning` a SCIM token; session tokens signed before no "
             "longer verify)",
    "storage": "the portal accounts (PortalAccounts), the audit rows (SignInEvents, DirectoryEvents), directory "
               "sync's people (ScimUsers), the host's keys and timer leases and the packages deployed before "
               "(app-package) (the app starts with no accounts: export them first)",
}
# What a move does about the old one, said with it: the app's identity keeps no role there.
MOVED = {
    "vault": "the app's identity loses Key Vault Secrets User on each secret it read there, at the end of this run",
    "storage": "the app loads its package from the new account's app-package (uploaded in this run), and its "
               "identity loses its roles on the old account's tables and containers at the end of this run",
}
OPTIONS = {"storage": "--storage-account", "vault": "--key-vault"}
# What az 2.91 says when config-zip's package is live on Flex but the host does not answer its status after it
# (appservice/custom.py check_flex_app_after_deployment, which runs once the deployment has succeeded).
LIVE_BUT_UNHEALTHY = ("Deployment was successful", "Failed to fetch host key to check for function app status",
                      "Failed to fetch host url for function app")


def resource_names(args: argparse.Namespace, recorded: dict[str, set[str]] | None = None) -> dict[str, str]:
    """The derived names; in their place, the vault and storage account that an existing function app's
    settings name (`recorded`), and --storage-account and --key-vault when given."""
    kept = {k: next(iter(v)) for k, v in (recorded or {}).items() if len(v) == 1}
    return {**names(args.app), **kept, **given_names(args)}


def given_names(args: argparse.Namespace) -> dict[str, str]:
    given = {"storage": args.storage_account, "vault": args.key_vault and args.key_vault.lower()}  # as its URL has it
    return {k: v for k, v in given.items() if v}


def recorded_names(settings: dict[str, str]) -> dict[str, set[str]]:
    """The storage account and vault that the function app's settings point at, each setting's (a deploy
    sets them alike; one set by hand may differ)."""
    found = {"storage": {settings.get("AzureWebJobsStorage__accountName"),
                         host_label(settings.get("TABLES_ENDPOINT"))},
             "vault": {host_label(settings.get("KEY_VAULT_URL"))}}
    return {k: {v for v in found_names if v} for k, found_names in found.items()}


def check_kept(az: Az, args: argparse.Namespace, recorded: dict[str, set[str]],
               chosen: dict[str, str]) -> dict[str, list[str]]:
    """A function app keeps the vault and storage account it uses: moving it to another one (whose name
    was given) leaves behind what the old one holds, so it needs --repoint, and is said. Returns the old
    ones it moves off, by key."""
    moves = {}
    for key, option in OPTIONS.items():
        left = sorted(recorded.get(key, set()) - {chosen[key]})
        if not left:
            continue
        what = "Key Vault" if key == "vault" else "storage account"
        old = " and ".join(left)
        if key not in given_names(args):
            raise AzError(f"The function app's settings name more than one {what} "
                          f"({' and '.join(sorted(recorded[key]))}): give {option} with the one it should use.")
        if not args.repoint:
            raise AzError(f"The function app {args.app} uses the {what} {old}, not {chosen[key]} ({option}): moving "
                          f"it would leave behind what {old} holds, {LEFT_BEHIND[key]}. Leave out {option} to keep "
                          f"{old}, or add --repoint to move the app to {chosen[key]}.")
        az.out(f"note: --repoint moves the app from the {what} {old} to {chosen[key]}; {old} keeps "
               f"{LEFT_BEHIND[key]}; {MOVED[key]}.")
        moves[key] = left
    return moves


def with_unfinished(az: Az, moves: dict[str, list[str]], current: dict[str, str],
                    chosen: dict[str, str]) -> dict[str, list[str]]:
    """`moves` and those an earlier run recorded (MOVED_FROM) but stopped before finishing, said; not one the
    app is back on."""
    unfinished: dict[str, list[str]] = {}
    for key, _, old in (pair.partition("=") for pair in (current.get(MOVED_FROM) or "").split()):
        if key in OPTIONS and old and old != chosen[key] and old not in moves.get(key, []):
            unfinished.setdefault(key, []).append(old)
            az.out(f"note: an earlier run moved the app off {old} and stopped before removing the roles the app's "
                   "identity holds there: this run removes them at its end.")
    return {key: sorted({*moves.get(key, []), *unfinished.get(key, [])}) for key in OPTIONS
            if key in moves or key in unfinished}


def signing_key_pem() -> str:
    """A new EC P-256 private key (ES256 session tokens): it loads and signs far faster than RSA."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def deploy(az: Az, args: argparse.Namespace) -> dict[str, str]:
    """The package first, before anything is read or changed: a copy that cannot make one (no git, not a
    clone) is refused with nothing done, not after the app is made. Then `provision`."""
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "app.zip"
        try:
            package = build_package(path)
        except PackageError as err:
            raise AzError(str(err)) from None
        return provision(az, args, path, package.sha256)


def provision(az: Az, args: argparse.Namespace, package: Path, digest: str) -> dict[str, str]:
    """Each step reads what is there (unless its parent is yet to be made: then there is nothing to
    read) and writes only what differs."""
    rg, app, loc = args.resource_group, args.app, args.location
    account = az.check_ready()
    me, my_kind = az.signed_in(account)

    # 1. resource group; an existing function app in it, whose settings name the vault and storage it uses
    group = az.show("group", "show", "--name", rg)
    site = az.show("functionapp", "show", "--name", app, "--resource-group", rg) if group is not None else None
    current = app_settings(az, app, rg) if site is not None else None
    recorded = recorded_names(current or {})
    running = python_of(site)
    # a rerun without --python never moves the app; one whose version cannot be read (an az answering in
    # a shape not known here) is left as it is, its package built for what the last deploy recorded
    python = args.python or running or (current or {}).get(PACKAGE_PYTHON) or NEW_APP_PYTHON
    if site is not None and running is None and not args.python:
        print(f"warning: the Python version of the function app {app} could not be read (functionapp show gives no "
              "functionAppConfig.runtime), so it is left as it is: give --python to set it.", file=sys.stderr)
    n = resource_names(args, recorded)
    moves = with_unfinished(az, check_kept(az, args, recorded, n), current or {}, n)
    key_name = secret_name(current or {}, "SESSION_SIGNING_KEY_NAME", SIGNING_KEY_NAME)  # the one the app reads
    if az.dry_run:
        az.out(f"note: --dry-run reads nothing, so this plan names the vault {n['vault']} and the storage account "
               f"{n['storage']}; on a function app that exists, a run uses the ones its settings name "
               "(KEY_VAULT_URL, AzureWebJobsStorage__accountName, TABLES_ENDPOINT) unless --repoint is given.")
    if group is None:
        az.write("group", "create", "--name", rg, "--location", loc, change=("create", f"resource group {rg}"))
    group_known = group is not None or az.writes

    # 2. storage: shared-key access off (identities only), TLS 1.2, the app's tables, its blob containers
    storage = az.show("storage", "account", "show", "--name", n["storage"], "--resource-group", rg) \
        if group_known else None
    if storage is None:
        check = az.read("storage", "account", "check-name", "--name", n["storage"])
        if check is not None and not check.get("nameAvailable", True):
            raise AzError(f"The storage account name {n['storage']} is taken ({check.get('reason')}): "
                          "choose another with --storage-account.")
        storage = az.write("storage", "account", "create", "--name", n["storage"], "--resource-group", rg,
                           "--location", loc, "--sku", "Standard_LRS", "--kind", "StorageV2",
                           "--allow-shared-key-access", "false", "--allow-blob-public-access", "false",
                           "--min-tls-version", "TLS1_2",
                           change=("create", f"storage account {n['storage']} (shared keys off)"))
    elif storage.get("allowSharedKeyAccess") is not False or storage.get("minimumTlsVersion") != "TLS1_2":
        az.write("storage", "account", "update", "--name", n["storage"], "--resource-group", rg,
                 "--allow-shared-key-access", "false", "--min-tls-version", "TLS1_2",
                 change=("change", f"storage account {n['storage']}: shared keys off, TLS 1.2"))
    storage_known = storage is not None
    storage_id = (storage or {}).get("id", f"<id of {n['storage']}>")
    tables, containers = storage_scopes(storage_id)
    for child, what in [(t, "table") for t in tables] + [(c, "blob container") for c in containers]:
        if not storage_known or az.show("resource", "show", "--ids", child) is None:
            az.write("resource", "create", "--id", child, "--properties", "{}",
                     change=("create", f"{what} {child.rsplit('/', 1)[1]}"))

    # 3. Key Vault in RBAC mode, purge protection on (a deleted secret can be recovered, never purged early)
    vault = az.show("keyvault", "show", "--name", n["vault"], "--resource-group", rg) if group_known else None
    if vault is None:
        vault = az.write("keyvault", "create", "--name", n["vault"], "--resource-group", rg, "--location", loc,
                         "--enable-rbac-authorization", "true", "--enable-purge-protection", "true",
                         change=("create", f"Key Vault {n['vault']} (RBAC, purge protection)"))
    else:
        if not vault.get("properties", {}).get("enableRbacAuthorization"):
            raise AzError(f"Key Vault {n['vault']} uses access policies, not RBAC: switch it with `az keyvault "
                          f"update --name {n['vault']} --enable-rbac-authorization true` (after granting roles), or "
                          "name another vault with --key-vault.")
        if not vault.get("properties", {}).get("enablePurgeProtection"):
            az.write("keyvault", "update", "--name", n["vault"], "--resource-group", rg,
                     "--enable-purge-protection", "true",
                     change=("change", f"Key Vault {n['vault']}: purge protection on (it cannot be turned off)"))
    vault_known = vault is not None
    vault_id = (vault or {}).get("id", f"<id of {n['vault']}>")
    vault_url = (vault or {}).get("properties", {}).get("vaultUri", f"https://{n['vault']}.vault.azure.net/")

    # 4. Log Analytics and Application Insights: Entra-authenticated ingestion only (DisableLocalAuth), so
    # the connection string's instrumentation key alone cannot send telemetry
    workspace = az.show("monitor", "log-analytics", "workspace", "show", "--resource-group", rg,
                        "--workspace-name", n["workspace"]) if group_known else None
    if workspace is None:
        workspace = az.write("monitor", "log-analytics", "workspace", "create", "--resource-group", rg,
                             "--workspace-name", n["workspace"], "--location", loc,
                             change=("create", f"Log Analytics workspace {n['workspace']}"))
    insights = az.show("resource", "show", "--resource-group", rg, "--name", n["insights"],
                       "--resource-type", INSIGHTS_TYPE) if group_known else None
    if insights is None:
        properties = {"Application_Type": "web", "DisableLocalAuth": True,
                      "WorkspaceResourceId": (workspace or {}).get("id", "<workspace id>")}
        insights = az.write("resource", "create", "--resource-group", rg, "--name", n["insights"],
                            "--resource-type", INSIGHTS_TYPE, "--location", loc, "--properties", json.dumps(properties),
                            change=("create", f"Application Insights {n['insights']} (Entra ingestion only)"))
    elif insights.get("properties", {}).get("DisableLocalAuth") is not True:
        az.write("resource", "update", "--ids", insights["id"], "--set", "properties.DisableLocalAuth=true",
                 change=("change", f"Application Insights {n['insights']}: key-based ingestion off"))
    insights_id = (insights or {}).get("id", f"<id of {n['insights']}>")
    connection = (insights or {}).get("properties", {}).get("ConnectionString", "<connection string>")

    # 5. the Flex Consumption function app, with its system-assigned identity, HTTPS only
    new_app = site is None
    if new_app:
        az.write("functionapp", "create", "--name", app, "--resource-group", rg, "--flexconsumption-location", loc,
                 "--runtime", "python", "--runtime-version", python, "--storage-account", n["storage"],
                 "--deployment-storage-name", n["storage"], "--deployment-storage-container-name", DEPLOY_CONTAINER,
                 "--deployment-storage-auth-type", "SystemAssignedIdentity", "--assign-identity", "[system]",
                 "--https-only", "true", "--app-insights", n["insights"],  # else it makes one, keys allowed
                 change=("create", f"function app {app} (Flex Consumption, Python {python})"))
        if az.writes:
            site = az.read("functionapp", "show", "--name", app, "--resource-group", rg)
    site_known = site is not None
    principal = ((site or {}).get("identity") or {}).get("principalId")
    if principal is None and site_known:
        assigned = az.write("functionapp", "identity", "assign", "--name", app, "--resource-group", rg,
                            change=("create", "the app's system-assigned identity"))
        principal = (assigned or {}).get("principalId")
    principal_known = principal is not None
    principal = principal or "<principal id>"
    host = site_field(site, "defaultHostName") or f"{app}.azurewebsites.net"
    harden(az, app, rg, site)
    # Only `functionapp create` names the deployment storage: an app moved to another account is told here
    # (the package is then uploaded again), else Flex goes on loading it from the old account's container,
    # and deleting that account stops the app at its next cold start. Like create, this grants the identity
    # Blob Data Contributor on the whole account, removed below.
    loads_from = package_storage(site)
    package_moves = not new_app and (loads_from != (n["storage"], DEPLOY_CONTAINER) if loads_from
                                     else "storage" in moves)  # az's answer lacks it: a move sets it
    if package_moves:
        # from here until the upload, Flex loads from a container without the package: the recorded digest goes
        # first, so a run that stops anywhere in between uploads it on the rerun
        if current.pop(PACKAGE_SETTING, None) is not None:
            delete_app_setting(az, app, rg, PACKAGE_SETTING, change=None)
        az.write("functionapp", "deployment", "config", "set", "--name", app, "--resource-group", rg,
                 "--deployment-storage-name", n["storage"], "--deployment-storage-container-name", DEPLOY_CONTAINER,
                 "--deployment-storage-auth-type", "SystemAssignedIdentity",
                 change=("change", f"function app {app}: packages loaded from {n['storage']}/{DEPLOY_CONTAINER}"))

    # 6. roles: the app's identity, each on the one container, table or resource it needs
    for role, scopes in (("Storage Blob Data Owner", containers), ("Storage Table Data Contributor", tables),
                         ("Monitoring Metrics Publisher", [insights_id])):
        for scope in scopes:
            grant(az, principal, "ServicePrincipal", role, scope, known=principal_known and storage_known)
    if principal_known:  # what an earlier deploy granted more widely goes
        revoke(az, principal, "Storage Blob Data Owner", storage_id, "now on its containers only")
        revoke(az, principal, "Key Vault Secrets User", vault_id, "now on each secret the app reads")
    if principal_known or new_app:  # `functionapp create` (and `deployment config set`) grants it on the account
        revoke(az, principal, "Storage Blob Data Contributor", storage_id, "made by functionapp create; the "
               "deployment container's Owner role suffices", known=principal_known and (az.writes or not package_moves))
    officer_granted = grant(az, me, my_kind, "Key Vault Secrets Officer", vault_id, known=vault_known)

    # 7. app settings (no storage key anywhere: host storage by identity; telemetry by identity)
    # `functionapp create` sets a key-based AzureWebJobsStorage (the plan for a new app removes it too) and,
    # from --app-insights, the connection string
    if current is None:
        current = app_settings(az, app, rg) if site_known else {
            "AzureWebJobsStorage": "<set by functionapp create>", "APPLICATIONINSIGHTS_CONNECTION_STRING": connection}
    # a custom domain that register-app --public-base-url set stays: the registration holds its redirect URIs
    base = as_the_app_reads(current, "PUBLIC_BASE_URL") or f"https://{host}"
    settings = {
        "AzureWebJobsStorage__accountName": n["storage"],
        "KEY_VAULT_URL": vault_url.rstrip("/"),
        "TABLES_ENDPOINT": f"https://{n['storage']}.table.core.windows.net",
        "PORTAL_USER_URL": args.portal_user_url,
        "PORTAL_AGENT_URL": args.portal_agent_url,
        "PUBLIC_BASE_URL": base,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": connection,
        # The Azure Monitor exporter then authenticates with the app's managed identity
        # (ManagedIdentityCredential), which DisableLocalAuth requires.
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD",
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
    }
    if args.session_audience:
        settings["SESSION_TOKEN_AUDIENCE"] = args.session_audience
    if moves:
        settings[MOVED_FROM] = " ".join(f"{key}={old}" for key, left in sorted(moves.items()) for old in left)
    update_app_settings(az, app, rg, settings, current)
    audience = session_audience(args, current)
    if "AzureWebJobsStorage" in current:  # a key-based connection string: identities only
        delete_app_setting(az, app, rg, "AzureWebJobsStorage", change=("remove", "the key-based AzureWebJobsStorage"))

    # 8. the session-signing key, made once (rotation: see README); the app may read that secret alone. The
    # Secrets Officer role granted above, on a new vault, takes a while before Key Vault honours it.
    def signing_key() -> None:
        if vault_known and az.what_if and officer_granted:  # a role only planned: Key Vault refuses the read
            az.changes.append(("create", f"session-signing key (EC P-256) in Key Vault as {key_name}, if "
                                         "it has none (unknown: it cannot be read before your Key Vault Secrets "
                                         "Officer role, planned above, exists)"))
            return
        if not vault_known or az.show("keyvault", "secret", "show", "--vault-name", n["vault"], "--name",
                                      key_name, "--query", "id") is None:
            with secret_file(signing_key_pem()) as path:
                az.write("keyvault", "secret", "set", "--vault-name", n["vault"], "--name", key_name,
                         "--file", path, "--encoding", "utf-8", "--content-type", "application/x-pem-file",
                         "--query", "id", change=("create", "session-signing key (EC P-256) in Key Vault"),
                         quiet=True)
    az.once_role_applies(signing_key, "Key Vault Secrets Officer", fresh=officer_granted)
    grant(az, principal, "ServicePrincipal", "Key Vault Secrets User", f"{vault_id}/secrets/{key_name}",
          known=principal_known and vault_known)
    if key_name != SIGNING_KEY_NAME and principal_known and vault_known:  # renamed by hand: the default is read no more
        revoke(az, principal, "Key Vault Secrets User", f"{vault_id}/secrets/{SIGNING_KEY_NAME}",
               f"the app reads its signing key from {key_name}")

    # 9. the Python asked for, then the package: deployed when it changed or was built for another Python (the
    # remote build installs the requirements' wheels for the runtime's version). Both are recorded after the
    # upload, so a run that moved the runtime but failed to upload builds it again next time.
    if not new_app and args.python not in (None, running):
        az.write("functionapp", "runtime", "config", "set", "--name", app, "--resource-group", rg,
                 "--runtime-version", python,
                 change=("change", f"function app {app}: Python {running or '(unknown)'} to {python}"))
    if package_moves or current.get(PACKAGE_SETTING) != digest or current.get(PACKAGE_PYTHON) != python:
        upload(az, app, rg, package, digest, python, [old for left in moves.values() for old in left])

    # 10. what the app's identity holds on the account or vault it moved off, now that nothing there is used
    secrets = [key_name, secret_name(current, "OIDC_CLIENT_SECRET_NAME", CLIENT_SECRET_NAME),
               secret_name(current, "SCIM_TOKEN_NAME", SCIM_TOKEN_NAME)]
    if certificate := secret_name(current, "OIDC_CLIENT_CERTIFICATE_NAME", ""):  # it signs in with a certificate
        secrets.append(certificate)
    for key, old in [(key, old) for key, left in moves.items() for old in left] if principal_known else []:
        revoke_left(az, principal, key, old, rg, secrets)
    if principal_known and (moves or current.get(MOVED_FROM)):
        delete_app_setting(az, app, rg, MOVED_FROM, change=None)
    # Printed as the app reads them (a base written with its trailing '/' is the one without: shared.config).
    shown = public_base_url({"PUBLIC_BASE_URL": base})
    return {"base": shown, "subscription": account.get("id", ""), "audience": audience,
            "issuer": as_the_app_reads(current, "SESSION_TOKEN_ISSUER") or shown}


def upload(az: Az, app: str, rg: str, package: Path, digest: str, python: str, moved_off: list[str]) -> None:
    """The package, deployed with a remote build, then recorded. On Flex, az's config-zip activates it and
    then checks the host's status: a failure there comes after the new code is live, so it is recorded
    (a deploy of the commit deployed before is then a change, and uploads that package) and said so, with
    the roles on the ones `moved_off` that are yet to be removed."""
    deployed = f"package {digest[:12]} deployed (built for Python {python})"

    def record() -> None:
        az.write("functionapp", "config", "appsettings", "set", "--name", app, "--resource-group", rg,
                 "--settings", f"{PACKAGE_SETTING}={digest}", f"{PACKAGE_PYTHON}={python}", change=None)
    try:
        az.write("functionapp", "deployment", "source", "config-zip", "--name", app, "--resource-group", rg,
                 "--src", str(package), "--build-remote", "true", change=("change", deployed))
    except AzError as err:
        if not says(err.stderr, LIVE_BUT_UNHEALTHY):
            raise
        az.changes.append(("change", f"{deployed}; the app's health check failed"))
        record()
        raise AzError(f"The package {digest[:12]} is deployed and live, but the function app {app} did not answer "
                      "az's health check after it (its host status): read why in Application Insights (traces "
                      "and exceptions). To go back, check out the commit deployed before "
                      "and run this again: it deploys that commit's package."
                      + (f" The move is not finished: the app's identity still holds its roles on "
                         f"{' and '.join(moved_off)}; the next run removes them." if moved_off else ""), err.stderr,
                      rerun="run the command again (from the commit deployed before, to go back)") from None
    record()


def package_storage(site: dict | None) -> tuple[str | None, str] | None:
    """(account, container) that a Flex Consumption app loads its package from
    (functionAppConfig.deployment.storage.value, the container's URL); None: not in az's answer."""
    value = (((site_field(site, "functionAppConfig") or {}).get("deployment") or {}).get("storage") or {}).get("value")
    return (host_label(value), urlsplit(value).path.strip("/")) if value else None


def storage_scopes(storage_id: str) -> tuple[list[str], list[str]]:
    """The scopes of the app's tables and of its blob containers in the storage account."""
    return ([f"{storage_id}/tableServices/default/tables/{t}" for t in APP_TABLES],
            [f"{storage_id}/blobServices/default/containers/{c}" for c in CONTAINERS])


def revoke_left(az: Az, principal: str, key: str, old: str, rg: str, secrets: list[str]) -> None:
    """Removes the roles a deploy (or register-app) gave the app's identity on the storage account or vault
    `old` that it moved off: on its tables and containers (and the account-wide ones of earlier runs and of
    `functionapp create`), or on each secret it read there (and the vault-wide one of earlier runs). An
    old one outside the resource group cannot be read by name: which roles to remove is said."""
    what = ("storage", "account") if key == "storage" else ("keyvault",)
    found = az.show(*what, "show", "--name", old, "--resource-group", rg)
    if found is None:
        az.out(f"note: {old} is not in the resource group {rg}, so the roles the app's identity holds on it stay: "
               f"`az role assignment list --assignee {principal} --all` lists them (scopes under {old}), "
               "`az role assignment delete --ids <id>` removes one.")
        return
    old_id = found["id"]
    if key == "storage":
        tables, containers = storage_scopes(old_id)
        grants = [*(("Storage Table Data Contributor", t) for t in tables),
                  *(("Storage Blob Data Owner", c) for c in [*containers, old_id]),
                  ("Storage Blob Data Contributor", old_id)]
    else:
        grants = [("Key Vault Secrets User", scope) for scope in [*(f"{old_id}/secrets/{s}" for s in secrets), old_id]]
    for role, scope in grants:
        revoke(az, principal, role, scope, f"the app moved off {old}")


def python_of(site: dict | None) -> str | None:
    """The Python version a Flex Consumption app runs (properties.functionAppConfig.runtime)."""
    return ((site_field(site, "functionAppConfig") or {}).get("runtime") or {}).get("version")


def not_blank(value: str) -> str:
    """An option's value as the app reads it (stripped), refused when nothing is left: `--session-audience
    "$AUD"` with AUD unset wrote no audience and printed the portals' origin as the one in effect."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty: give the 'aud' your portals check, or leave the option out")
    return value.strip()


def session_audience(args: argparse.Namespace, current: dict[str, str]) -> str:
    """The session tokens' aud once the settings are written. One set before (by hand or --session-audience)
    is kept, never changed unasked: deploy writes it only when given, so it is someone's choice, and each
    portal checks exactly that value. When it is not the portals' origin (they moved), that is said."""
    origin = origin_of(args.portal_user_url)
    kept = as_the_app_reads(current, "SESSION_TOKEN_AUDIENCE")
    if args.session_audience or not kept:
        return args.session_audience or origin
    if kept != origin:
        print(f"warning: SESSION_TOKEN_AUDIENCE stays {kept}, set before, not the portals' origin {origin}: "
              f"portals that check {kept} go on working; if yours now checks {origin}, run this again with "
              f"--session-audience {origin}.", file=sys.stderr)
    return kept


def harden(az: Az, app: str, rg: str, site: dict | None) -> None:
    """HTTPS only, TLS 1.2 at least, FTP off, and no basic (username/password) publishing credentials
    for FTP or the SCM site: deployments go through Entra sign-in (config-zip) only. For an app yet to
    be made (a plan), every step is planned."""
    known = site is not None
    if known and site_field(site, "httpsOnly") is not True:
        az.write("functionapp", "update", "--name", app, "--resource-group", rg, "--set", "httpsOnly=true",
                 change=("change", f"function app {app}: HTTPS only"))
    config = az.read("functionapp", "config", "show", "--name", app, "--resource-group", rg) if known else None
    if (config or {}).get("minTlsVersion") not in TLS_OK or (config or {}).get("ftpsState") != "Disabled":
        az.write("functionapp", "config", "set", "--name", app, "--resource-group", rg, "--min-tls-version", "1.2",
                 "--ftps-state", "Disabled", change=("change", f"function app {app}: TLS 1.2 minimum, FTP off"))
    for kind in ("ftp", "scm"):
        policy_id = f"{(site or {}).get('id', f'<id of {app}>')}/basicPublishingCredentialsPolicies/{kind}"
        policy = az.show("resource", "show", "--ids", policy_id) if known else None
        if (policy or {}).get("properties", {}).get("allow") is not False:
            az.write("resource", "update", "--ids", policy_id, "--set", "properties.allow=false",
                     change=("change", f"function app {app}: basic {kind.upper()} publishing credentials off"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="portal-sso deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resource-group", "-g", required=True, type=RESOURCE_GROUP)
    parser.add_argument("--location", "-l", required=True, help="an Azure region that offers Flex Consumption")
    parser.add_argument("--app", required=True, type=FUNCTION_APP,
                        help="the function app's name (its host is APP.azurewebsites.net)")
    parser.add_argument("--portal-user-url", required=True, type=https_url,
                        help="the portal page that receives users' session tokens (an https:// URL)")
    parser.add_argument("--portal-agent-url", required=True, type=https_url,
                        help="the portal page that receives agents' session tokens (an https:// URL)")
    parser.add_argument("--session-audience", type=not_blank,
                        help="the session token's aud (default: the portals' origin, or the one set before; "
                             "required when their origins differ)")
    parser.add_argument("--python", choices=PYTHON_VERSIONS,
                        help=f"the app's Python version (a new app: {NEW_APP_PYTHON}; an existing one keeps its own "
                             "unless this is given; the package is then built again for it)")
    parser.add_argument("--storage-account", type=STORAGE_ACCOUNT,
                        help="default: the one the function app's settings name, else derived from --app")
    parser.add_argument("--key-vault", type=KEY_VAULT, help="default: the one the function app's settings name, "
                                                           "else APP-kv (APP cut to fit 24 characters)")
    parser.add_argument("--repoint", action="store_true",
                        help="let --key-vault or --storage-account move an existing function app to another vault "
                             "or storage account than the one it uses (what the old one holds stays there)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--what-if", action="store_true",
                      help="read the current state (signed in) and print what would be created, changed and "
                           "removed; write nothing")
    mode.add_argument("--dry-run", action="store_true", help="print every az command, run none (not even reads)")
    args = parser.parse_args(argv)
    if args.session_audience is None and origin_of(args.portal_user_url) != origin_of(args.portal_agent_url):
        parser.error("the two portal URLs have different origins, so the session token's aud cannot default to "
                     "their origin: give --session-audience (the 'aud' your portals check)")
    derived = resource_names(args)  # a name Azure would refuse stops the run here, not after the group is made
    for key, kind, option in (("storage", STORAGE_ACCOUNT, "--storage-account"), ("vault", KEY_VAULT, "--key-vault"),
                              ("workspace", WORKSPACE, "--app")):
        if problem := kind.problem(derived[key]):
            parser.error(f"{problem}, derived from --app {args.app}: give one with {option}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    az = Az(dry_run=args.dry_run, what_if=args.what_if)
    try:
        result = deploy(az, args)
    except AzError as err:
        return fail(err, az)
    print(az.summary())
    base = result["base"]
    # All four redirect URIs: Entra returns from a sign-out only to a registered one too.
    print(f"\nUser Single Sign On URL:  {base}/api/sso/user/callback\nAgent Single Sign On URL: "
          f"{base}/api/sso/agent/callback\nUser signed-out page:     {base}/api/sso/user/signed-out\n"
          f"Agent signed-out page:    {base}/api/sso/agent/signed-out\n"
          f"(register-app registers all four as Web redirect URIs)\n"
          f"Setup page: {base}/api/sso/setup?code=<function key>\n"
          f"Read the function key: az functionapp function keys list --resource-group {args.resource_group} "
          f"--name {args.app} --function-name sso_setup\n"
          f"Session tokens: iss {result['issuer']} (SESSION_TOKEN_ISSUER), aud {result['audience']} "
          "(SESSION_TOKEN_AUDIENCE)\n"
          f"Next: portal-sso register-app --resource-group {args.resource_group} --app {args.app}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
