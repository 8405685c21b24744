"""A fake `az` for the deploy and register-app tests: it records every call (argv and, for --file or an
`@file` body, a hash of what the file held and its mode) in $FAKE_AZ_LOG and answers from a JSON state in
$FAKE_AZ_STATE, with answers shaped like the real CLI's (and, for `az rest`, like Microsoft Graph's).
Only the commands the scripts issue are known; anything else fails loudly. Not-found answers look like
the real ones (exit 3 and "ResourceNotFound"/"could not be found"). New resources get the defaults Azure
gives them (HTTPS not enforced, FTP allowed, basic publishing credentials on, no purge protection), and
`functionapp create` does what the real one does beyond the site (see flex_create)."""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs

SECRET = "fake-entra-client-secret-Q8~do-not-leak"  # the password `ad app credential reset` hands out
SUB = "/subscriptions/00000000-1111-2222-3333-444444444444"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_SP = "graph-sp-object-id"
ME = {"type": "user", "name": "admin@contoso.test", "id": "admin-object-id"}
CONNECTION_STRING = "InstrumentationKey=fake-ikey-0f0f;IngestionEndpoint=https://fake.in.applicationinsights/"
# the one `functionapp create` gives the Application Insights it makes unasked
CREATED_CONNECTION_STRING = "InstrumentationKey=fake-ikey-c4ea;IngestionEndpoint=https://fake.in.applicationinsights/"
# The schema Entra's `scim` template gives a new job (Graph's synchronizationSchema, trimmed): each directory's
# objects with their attributes (attributeDefinition: name, type, multivalued, ...), users mapped with
# mailNickname as externalId, groups provisioned, and no `roles` attribute on the SCIM user (the admin adds it:
# customize-application-attributes, "Provisioning a role to a SCIM app").
SCIM_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# Graph's page of appRoleAssignedTo without $top (the rest behind @odata.nextLink), and its 400 for a second
# assignment of the same role to the same principal ("Grant an appRoleAssignment for a service principal").
# state["unlisted_assignments"]: ids of assignments made but not listed yet (Graph's replication delay).
GRAPH_PAGE = 100
ASSIGNED_ALREADY = "Permission being assigned already exists on the object"
# Entra's non-gallery application template ("applicationTemplate: instantiate", Graph v1.0: the id for a
# non-gallery app in the global service). Only a service principal made from it is offered the `scim`
# synchronization template: "If you create an app registration, the corresponding service principal in enterprise
# apps won't be enabled for automatic user provisioning" (Entra's "Known issues for provisioning"), so one made by
# `ad app create` + `ad sp create` is offered none (answered here as an empty list).
NON_GALLERY_TEMPLATE = "8adf8e6e-67b2-4cf2-a259-e3dc5476c621"


def attribute(name: str, kind: str = "String", *, multivalued: bool = False) -> dict:
    return {"anchor": False, "apiExpressions": [], "caseExact": False, "defaultValue": None, "flowNullValues": False,
            "metadata": [], "multivalued": multivalued, "mutability": "ReadWrite", "name": name,
            "referencedObjects": [], "required": False, "type": kind}


SCIM_TEMPLATE_SCHEMA = {
    "id": "scim", "version": "Date:2026-11-01",
    "directories": [
        {"id": "AAD", "name": "Azure Active Directory", "objects": [
            {"name": "User", "attributes": [attribute("objectId"), attribute("userPrincipalName"),
                                            attribute("mailNickname"), attribute("mail"),
                                            attribute("appRoleAssignments", multivalued=True)]}]},
        {"id": "SCIM", "name": "customappsso", "objects": [
            {"name": SCIM_USER, "attributes": [attribute("userName"), attribute("externalId"),
                                               attribute("active", "Boolean"),
                                               attribute("emails[type eq \"work\"].value")]},
            {"name": "urn:ietf:params:scim:schemas:core:2.0:Group", "attributes": [attribute("displayName")]}]}],
    "synchronizationRules": [{"id": "AAD2SCIM", "name": "USER_INBOUND_USER", "sourceDirectoryName": "Azure Active "
                              "Directory", "targetDirectoryName": "customappsso", "objectMappings": [
        {"enabled": True, "name": "Provision Microsoft Entra ID Users", "sourceObjectName": "User",
         "targetObjectName": SCIM_USER, "attributeMappings": [
             {"targetAttributeName": "userName", "matchingPriority": 1, "flowType": "Always",
              "source": {"expression": "[userPrincipalName]", "name": "userPrincipalName", "parameters": [],
                         "type": "Attribute"}},
             {"targetAttributeName": "externalId", "matchingPriority": 0, "flowType": "Always",
              "source": {"expression": "[mailNickname]", "name": "mailNickname", "parameters": [],
                         "type": "Attribute"}},
             {"targetAttributeName": "emails[type eq \"work\"].value", "matchingPriority": 0, "flowType": "Always",
              "source": {"expression": "[mail]", "name": "mail", "parameters": [], "type": "Attribute"}}]},
        {"enabled": True, "name": "Provision Microsoft Entra ID Groups", "sourceObjectName": "Group",
         "targetObjectName": "urn:ietf:params:scim:schemas:core:2.0:Group", "attributeMappings": []}]}]}


def undefined_targets(schema: dict) -> list[str]:
    """Mapped target attributes that the target object does not define. Entra's admin center offers only
    defined attributes as a mapping's target, and the docs have `roles` added to the attribute list before
    it is mapped; Graph's own answer to such a PUT is not documented, so this refusal is the fake's."""
    objects = {(d.get("name"), o.get("name")): {a.get("name") for a in o.get("attributes") or []}
               for d in schema.get("directories") or [] for o in d.get("objects") or []}
    return [f"{m.get('targetObjectName')}.{a.get('targetAttributeName')}"
            for rule in schema.get("synchronizationRules") or [] for m in rule.get("objectMappings") or []
            if m.get("enabled", True) for a in m.get("attributeMappings") or []
            if a.get("targetAttributeName") not in objects.get((rule.get("targetDirectoryName"),
                                                               m.get("targetObjectName")), set())]


def main(argv: list[str]) -> int:
    args = [a for a in argv if a not in ("--only-show-errors",)]
    if "-o" in args:
        del args[args.index("-o"):args.index("-o") + 2]
    state_path, log_path = os.environ["FAKE_AZ_STATE"], os.environ["FAKE_AZ_LOG"]
    state = json.load(open(state_path)) if os.path.exists(state_path) else {}
    record = {"argv": argv}
    body = opt(args, "--body") or ""
    # `ad app credential reset --cert @file`: a public certificate's file (`credential list --cert` is a flag)
    cert = opt(args, "--cert") or "" if args[-1:] != ["--cert"] else ""
    path = opt(args, "--file") or next((v[1:] for v in (body, cert) if v.startswith("@")), None)
    if path:
        content = open(path).read()
        import hashlib  # here, not at the top: loading OpenSSL was ~20 ms of every call's start

        record["file_sha256"] = hashlib.sha256(content.encode()).hexdigest()
        record["file_mode"] = oct(os.stat(path).st_mode & 0o777)
    with open(log_path, "a") as log:
        log.write(json.dumps(record) + "\n")
    if not state.get("logged_in", True):
        print("ERROR: Please run 'az login' to setup account.", file=sys.stderr)
        return 1
    for marker, message in state.get("refuse", {}).items():
        if marker in " ".join(args):
            print(f"ERROR: {message}", file=sys.stderr)
            return 1
    try:
        answer = handle(args, state, open(path).read() if path else None)
    except NotYetReadable as missing:  # as a not-found, but the read is counted
        json.dump(state, open(state_path, "w"), indent=1)
        print(f"ERROR: (ResourceNotFound) The resource {missing} could not be found.", file=sys.stderr)
        return 3
    except LookupError as missing:
        print(f"ERROR: (ResourceNotFound) The resource {missing} could not be found.", file=sys.stderr)
        return 3
    except Refused as refused:  # a refusal that changes state (a role propagating) keeps that change
        json.dump(state, open(state_path, "w"), indent=1)
        print(f"ERROR: {refused}", file=sys.stderr)
        return 1
    json.dump(state, open(state_path, "w"), indent=1)
    if answer is not None:
        print(json.dumps(query(answer, args)))
    return 0


def opt(args: list[str], *names: str, default=None):
    for name in names:
        if name in args:
            found = args[args.index(name) + 1]
            # Graph: application and object ids are GUIDs, matched without regard to case
            return found.lower() if name == "--id" and len(found) == 36 and found.count("-") == 4 else found
    return default


def values(args: list[str], name: str) -> list[str]:
    start = args.index(name) + 1
    end = next((i for i in range(start, len(args)) if args[i].startswith("--")), len(args))
    return args[start:end]


def query(answer, args: list[str]):
    q = opt(args, "--query")
    if q in ("id", "defaultHostName", "principalId", "value", "tags", "x509ThumbprintHex"):
        return answer.get(q)  # JMESPath: a field the answer lacks is null
    if q == "[].id":
        return [item["id"] for item in answer]
    if q == "{password: password}":
        return {"password": answer["password"]}
    if q == "{id: id, tags: tags}":
        return {"id": answer["id"], "tags": answer.get("tags")}
    if q == "{value: value, tags: tags}":
        return {"value": answer["value"], "tags": answer.get("tags")}
    if q == "{value: value, contentType: contentType}":
        return {"value": answer["value"], "contentType": answer.get("contentType")}
    return answer


def resource(state: dict, kind: str, key: str) -> dict:
    found = state.setdefault(kind, {}).get(key)
    if found is None:
        raise LookupError(f"{kind} {key}")
    return found


def me(state: dict) -> dict:
    return state.get("signed_in_as", ME)


def by_id(state: dict, resource_id: str) -> dict:
    found = next((r for r in state.get("resources", {}).values() if r["id"] == resource_id), None)
    if found is None:
        raise LookupError(resource_id)
    return found


def set_path(target: dict, assignment: str) -> None:
    """`--set a.b=value` as the real CLI's generic update applies it (JSON values, else strings)."""
    path, raw = assignment.split("=", 1)
    *parents, last = path.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    try:
        target[last] = json.loads(raw)
    except ValueError:
        target[last] = raw


# What az 2.91 says (CLIError, exit 1) when the Flex app does not answer /admin/host/status after config-zip
# activated the package (appservice/custom.py check_flex_app_after_deployment): the new code is live.
UNHEALTHY = "Deployment was successful but the app appears to be unhealthy. Please check the app logs."


class Refused(Exception):
    """An error answer after which the state is still saved."""


class NotYetReadable(LookupError):
    """A not-found answer for an object made moments ago (the state is saved: the read counts)."""


# What Key Vault answers (az prints it) when RBAC does not (yet) let the caller at a secret.
FORBIDDEN_BY_RBAC = ("(Forbidden) Caller is not authorized to perform action on resource.\nIf role assignments, "
                     "deny assignments or role definitions were changed recently, please observe propagation time.\n"
                     "Caller: oid={caller}\nAction: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\n"
                     "Assignment: (not found)\nVault: {vault}\n\nCode: Forbidden\nInner error: {{\n"
                     "    \"code\": \"ForbiddenByRbac\"\n}}")


def key_vault_rbac(state: dict, vault: str | None) -> None:
    """With state["rbac_delay"] = N, Key Vault's data plane checks RBAC as Azure does, propagation
    included: the signed-in caller needs Key Vault Secrets Officer on the vault, and a new assignment is
    honoured only after N refused calls (Azure: up to a few minutes). Without it, no check (the other
    tests)."""
    if "rbac_delay" not in state:
        return
    vault_id = state.get("vaults", {}).get(vault, {}).get("id")
    mine = [a[3] for a in state.get("roles", []) if a[:3] == [me(state)["id"], "Key Vault Secrets Officer", vault_id]]
    pending = state.setdefault("pending_roles", {})
    if any(pending.get(assignment, 0) <= 0 for assignment in mine):
        return
    for assignment in mine:
        pending[assignment] -= 1
    raise Refused(FORBIDDEN_BY_RBAC.format(caller=me(state)["id"], vault=vault))


def handle(args: list[str], state: dict, file_content: str | None):
    words = " ".join(a for a in args[:6] if not a.startswith("-"))
    rg, name = opt(args, "--resource-group", "-g"), opt(args, "--name", "-n")
    if words.startswith("keyvault secret"):
        key_vault_rbac(state, opt(args, "--vault-name"))
    if words.startswith("account show"):
        return {"id": SUB.rsplit("/", 1)[1], "tenantId": "tenant-0000",
                "user": {"name": me(state)["name"], "type": me(state)["type"]}}
    if words.startswith("ad signed-in-user show"):
        if me(state)["type"] != "user":
            print("ERROR: /me request is only valid with delegated authentication flow.", file=sys.stderr)
            raise SystemExit(1)
        return {"id": me(state)["id"]}
    if words.startswith("group show"):
        return resource(state, "groups", name)
    if words.startswith("group create"):
        state.setdefault("groups", {})[name] = {"id": f"{SUB}/resourceGroups/{name}", "name": name}
        return state["groups"][name]
    if words.startswith("storage account check-name"):
        taken = name in state.get("taken_names", [])
        return {"nameAvailable": not taken, "reason": "AlreadyExists" if taken else None}
    if words.startswith("storage account show"):
        return resource(state, "storage", name)
    if words.startswith("storage account create"):
        state.setdefault("storage", {})[name] = {
            "id": f"{SUB}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}", "name": name,
            "allowSharedKeyAccess": opt(args, "--allow-shared-key-access") == "true",
            "minimumTlsVersion": opt(args, "--min-tls-version", default="TLS1_0")}
        return state["storage"][name]
    if words.startswith("storage account update"):
        account = resource(state, "storage", name)
        account["allowSharedKeyAccess"] = opt(args, "--allow-shared-key-access") == "true"
        account["minimumTlsVersion"] = opt(args, "--min-tls-version")
        return account
    if words.startswith("resource show"):
        if "/basicPublishingCredentialsPolicies/" in (opt(args, "--ids") or ""):
            site_id, kind = opt(args, "--ids").split("/basicPublishingCredentialsPolicies/")
            site = next(s for s in state.get("sites", {}).values() if s["id"] == site_id)
            return {"id": opt(args, "--ids"), "properties": {"allow": site["publishing"][kind]}}
        key = opt(args, "--ids") or f"{rg}/{opt(args, '--resource-type')}/{name}"
        return resource(state, "resources", key)
    if words.startswith("resource create"):
        key = opt(args, "--id") or f"{rg}/{opt(args, '--resource-type')}/{name}"
        properties = json.loads(opt(args, "--properties"))
        if opt(args, "--resource-type") == "Microsoft.Insights/components":
            properties["ConnectionString"] = CONNECTION_STRING
        made = {"id": opt(args, "--id") or f"{SUB}/resourceGroups/{rg}/providers/{opt(args, '--resource-type')}/{name}",
                "properties": properties}
        state.setdefault("resources", {})[key] = made
        return made
    if words.startswith("resource update"):
        if "/basicPublishingCredentialsPolicies/" in opt(args, "--ids"):
            site_id, kind = opt(args, "--ids").split("/basicPublishingCredentialsPolicies/")
            site = next(s for s in state.get("sites", {}).values() if s["id"] == site_id)
            site["publishing"][kind] = json.loads(opt(args, "--set").split("=", 1)[1])
            return {"properties": {"allow": site["publishing"][kind]}}
        found = by_id(state, opt(args, "--ids"))
        set_path(found, opt(args, "--set"))
        return found
    if words.startswith("keyvault show"):
        if rg is None:  # by name alone, as register-app asks
            return next(v for v in state.get("vaults", {}).values() if v["name"] == name)
        return resource(state, "vaults", name)
    if words.startswith("keyvault create"):
        state.setdefault("vaults", {})[name] = {
            "id": f"{SUB}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}", "name": name,
            "properties": {"enableRbacAuthorization": opt(args, "--enable-rbac-authorization") == "true",
                           "enablePurgeProtection": opt(args, "--enable-purge-protection") == "true" or None,
                           "vaultUri": f"https://{name}.vault.azure.net/"}}
        return state["vaults"][name]
    if words.startswith("keyvault update"):
        vault = resource(state, "vaults", name)
        vault["properties"]["enablePurgeProtection"] = opt(args, "--enable-purge-protection") == "true"
        return vault
    if words.startswith("keyvault certificate show"):  # a plain secret is no certificate: CertificateNotFound
        return resource(state, "certificates", f"{opt(args, '--vault-name')}/{name}")
    if words.startswith("keyvault secret show"):
        versions = resource(state, "secrets", f"{opt(args, '--vault-name')}/{name}")
        return versions[-1]
    if words.startswith("keyvault secret set-attributes"):
        latest = resource(state, "secrets", f"{opt(args, '--vault-name')}/{name}")[-1]
        latest["tags"] = dict(t.split("=", 1) for t in values(args, "--tags"))
        return latest
    if words.startswith("keyvault secret set"):
        versions = state.setdefault("secrets", {}).setdefault(f"{opt(args, '--vault-name')}/{name}", [])
        version = {"id": f"https://{opt(args, '--vault-name')}.vault.azure.net/secrets/{name}/{uuid.uuid4().hex}",
                   "attributes": {"created": datetime.now(UTC).isoformat(), "expires": opt(args, "--expires")},
                   "tags": dict(t.split("=", 1) for t in values(args, "--tags")) if "--tags" in args else {},
                   "value": file_content}
        versions.append(version)
        return {"id": version["id"]}
    if words.startswith("keyvault secret list-versions"):
        return state.get("secrets", {}).get(f"{opt(args, '--vault-name')}/{name}", [])
    if words.startswith("monitor log-analytics workspace show"):
        return resource(state, "workspaces", opt(args, "--workspace-name"))
    if words.startswith("monitor log-analytics workspace create"):
        ws = opt(args, "--workspace-name")
        state.setdefault("workspaces", {})[ws] = {"id": f"{SUB}/resourceGroups/{rg}/workspaces/{ws}"}
        return state["workspaces"][ws]
    if words.startswith("functionapp show"):
        return {"arm": arm_site, "flat": flat_site, "flat-no-runtime": flat_site_without_runtime}[
            state.get("site_answer", "arm")](resource(state, "sites", name))
    if words.startswith("functionapp create"):
        if name in state.get("taken_names", []):
            raise_taken(name)
        state.setdefault("sites", {})[name] = {
            "id": f"{SUB}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{name}",
            "defaultHostName": f"{name}.azurewebsites.net", "httpsOnly": opt(args, "--https-only") == "true",
            "settings": {"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountKey=fakekey=="},
            "config": {"minTlsVersion": "1.2", "ftpsState": "AllAllowed"}, "publishing": {"ftp": True, "scm": True},
            "identity": {"principalId": f"{name}-principal"} if "--assign-identity" in args else None,
            "properties": {"functionAppConfig": {"runtime": {"name": opt(args, "--runtime"),
                                                             "version": opt(args, "--runtime-version")},
                                                 "deployment": {"storage": package_storage(args)}}}}
        flex_create(state, args, rg, name)
        return {"name": name}
    if words.startswith("functionapp update"):
        set_path(resource(state, "sites", name), opt(args, "--set"))
        return resource(state, "sites", name)
    if words.startswith("functionapp config show"):
        return resource(state, "sites", name)["config"]
    if words.startswith("functionapp config set"):
        config = resource(state, "sites", name)["config"]
        config.update(minTlsVersion=opt(args, "--min-tls-version"), ftpsState=opt(args, "--ftps-state"))
        return config
    if words.startswith("functionapp runtime config set"):  # update_runtime_config: answers the runtime
        runtime = resource(state, "sites", name)["properties"]["functionAppConfig"]["runtime"]
        runtime["version"] = opt(args, "--runtime-version")
        return runtime
    if words.startswith("functionapp identity assign"):
        site = resource(state, "sites", name)
        site["identity"] = {"principalId": f"{name}-principal"}
        return site["identity"]
    if words.startswith("functionapp identity show"):
        return resource(state, "sites", name)["identity"]
    if words.startswith("functionapp config appsettings list"):
        return [{"name": k, "value": v} for k, v in resource(state, "sites", name)["settings"].items()]
    if words.startswith("functionapp config appsettings set"):
        resource(state, "sites", name)["settings"].update(s.split("=", 1) for s in values(args, "--settings"))
        return []
    if words.startswith("functionapp config appsettings delete"):
        for key in values(args, "--setting-names"):
            resource(state, "sites", name)["settings"].pop(key, None)
        return []
    if words.startswith("functionapp deployment config set"):
        return deployment_config_set(state, args, rg, name)
    if words.startswith("functionapp deployment source config-zip"):  # the remote build: for the app's Python
        state.setdefault("deployments", []).append(name)
        state.setdefault("uploads", []).append(  # the container the package lands in
            resource(state, "sites", name)["properties"]["functionAppConfig"]["deployment"]["storage"]["value"])
        if state.get("unhealthy"):  # check_flex_app_after_deployment, once the package is live
            raise Refused(UNHEALTHY)
        state.setdefault("builds", []).append(
            resource(state, "sites", name)["properties"]["functionAppConfig"]["runtime"]["version"])
        return {"status": 4}
    if words.startswith("role assignment list"):
        wanted = [opt(args, "--assignee"), opt(args, "--role"), opt(args, "--scope")]
        return [{"id": a[3], "principalId": a[0], "roleDefinitionName": a[1], "scope": a[2]}
                for a in state.get("roles", []) if a[:3] == wanted]
    if words.startswith("role assignment create"):
        state.setdefault("roles", []).append([opt(args, "--assignee-object-id"), opt(args, "--role"),
                                              opt(args, "--scope"), f"assignment-{uuid.uuid4().hex}"])
        if "rbac_delay" in state:
            state.setdefault("pending_roles", {})[state["roles"][-1][3]] = state["rbac_delay"]
        return {"id": state["roles"][-1][3]}
    if words.startswith("role assignment delete"):
        state["roles"] = [a for a in state.get("roles", []) if a[3] not in values(args, "--ids")]
        return None
    if words.startswith("ad app list"):
        return [a for a in state.get("apps", {}).values() if a["displayName"] == opt(args, "--display-name")]
    if words.startswith("ad app show"):
        replicating(state, "apps", opt(args, "--id"))
        return as_graph_answers(resource(state, "apps", opt(args, "--id")))
    if words.startswith("ad app owner list"):
        return [{"id": owner} for owner in resource(state, "apps", opt(args, "--id"))["owners"]]
    if words.startswith("ad app update"):  # a generic update: az reads the registration first
        replicating(state, "apps", opt(args, "--id"))
        update_app(resource(state, "apps", opt(args, "--id")), args)
        return None
    if words.startswith("ad app credential reset") and "--cert" in args:
        return add_certificate(state, args, file_content)
    if words.startswith("ad app credential reset"):
        app = resource(state, "apps", opt(args, "--id"))
        assert "--append" in args, "a reset without --append would delete the other secrets"
        app["credentials"].append({"keyId": str(uuid.uuid4()), "displayName": opt(args, "--display-name"),
                                   "startDateTime": datetime.now(UTC).isoformat(),
                                   "endDateTime": opt(args, "--end-date")})
        if state.get("another_run_appends"):  # another run's reset lands at the same moment
            app["credentials"].append({**app["credentials"][-1], "keyId": str(uuid.uuid4())})
        return {"appId": app["appId"], "password": SECRET, "tenant": "tenant-0000"}
    if words.startswith("ad app credential list"):  # --cert: the certificates (keyCredentials), not the secrets
        app = resource(state, "apps", opt(args, "--id"))
        return app.get("keyCredentials", []) if "--cert" in args else app["credentials"]
    if words.startswith("ad app credential delete"):
        app = resource(state, "apps", opt(args, "--id"))
        app["credentials"] = [c for c in app["credentials"] if c["keyId"] != opt(args, "--key-id")]
        return None
    if words.startswith("ad sp show"):
        if opt(args, "--id") == GRAPH_APP_ID:
            return {"id": GRAPH_SP, "appId": GRAPH_APP_ID}
        replicating(state, "sps", opt(args, "--id"))
        return with_app_roles(state, resource(state, "sps", opt(args, "--id")))
    if words.startswith("ad sp create"):
        if opt(args, "--id") in state.get("sps", {}):  # Graph: one service principal per application
            graph_refuses("Bad Request", "Request_MultipleObjectsWithSameKeyValue",
                          "Another object with the same value for property servicePrincipalNames already exists.")
        state.setdefault("sps", {})[opt(args, "--id")] = {"id": f"sp-{opt(args, '--id')}", "appId": opt(args, "--id"),
                                                          "applicationTemplateId": None,
                                                          "appRoleAssignmentRequired": False}
        return state["sps"][opt(args, "--id")]
    if words.startswith("ad sp update"):
        replicating(state, "sps", opt(args, "--id"))
        sp = resource(state, "sps", opt(args, "--id"))
        if "--set" in args:
            set_path(sp, opt(args, "--set"))
        if "--add" in args:
            path, value = values(args, "--add")
            sp.setdefault(path, []).append(value)
        return None
    if words.startswith("ad user show") or words.startswith("ad group show"):
        return {"id": f"object-of-{opt(args, '--id', '--group')}"}
    if words.startswith("ad group list"):
        # Graph's $filter on displayName, exact: the state's "ad_groups" (name -> object ids) where a test
        # sets it, else one group of that name.
        name = re.fullmatch(r"displayName eq '(.*)'", opt(args, "--filter")).group(1).replace("''", "'")
        return [{"id": i} for i in state.get("ad_groups", {}).get(name, [f"object-of-{name}"])]
    if words.startswith("rest"):
        return graph(state, opt(args, "--method"), opt(args, "--uri"), file_content or opt(args, "--body"))
    raise SystemExit(f"fake az: unknown command {args}")


def add_certificate(state: dict, args: list[str], file_content: str | None) -> dict:
    """`ad app credential reset --id APP --cert ... --append` (azure-cli 2.91, role/custom.py _reset_credential):
    the registration's keyCredentials PATCHed with one more, a public certificate from Key Vault's certificate
    (`--keyvault V --cert NAME`: the certificate's `cer`) or given as PEM (`--cert @file`). Graph sets its
    customKeyIdentifier to the certificate's thumbprint (upper-case hex, as Graph answers it)."""
    app = resource(state, "apps", opt(args, "--id"))
    assert "--append" in args, "a reset without --append would delete the other credentials"
    if "--keyvault" in args:
        thumbprint = resource(state, "certificates", f"{opt(args, '--keyvault')}/{opt(args, '--cert')}")[
            "x509ThumbprintHex"]
    else:
        assert "PRIVATE KEY" not in file_content, "a private key handed to Entra"
        # Imported here, not at the top: every az call starts this script, and cryptography's import was
        # half of each one's ~100 ms (a deploy makes ~70 calls). The script runs without site (python -S:
        # the venv's .pth files cost ~20 ms a start), so site-packages is added first.
        import site

        site.main()
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        cert = x509.load_pem_x509_certificate(file_content.encode())
        thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - Graph's thumbprint is SHA-1
    app.setdefault("keyCredentials", []).append({"keyId": str(uuid.uuid4()), "customKeyIdentifier": thumbprint,
                                                 "type": "AsymmetricX509Cert", "usage": "Verify"})
    return {"appId": app["appId"], "password": None, "tenant": "tenant-0000"}


def arm_site(site: dict) -> dict:
    """What `functionapp show` answers for a Flex Consumption app: the raw ARM resource (azure-cli 2.91,
    show_functionapp -> get_raw_functionapp), not the SDK model flattened as for other apps: the site's
    fields (defaultHostName, httpsOnly, functionAppConfig) under `properties`, the identity beside them."""
    return {"id": site["id"], "name": site["id"].rsplit("/", 1)[1], "type": "Microsoft.Web/sites",
            "kind": "functionapp,linux", "identity": site["identity"],
            "properties": {"defaultHostName": site["defaultHostName"], "httpsOnly": site["httpsOnly"],
                           "sku": "FlexConsumption", **site["properties"]}}


def flat_site(site: dict) -> dict:
    """What an older az answers (state["site_answer"] = "flat"): the SDK's Site model flattened, the site's
    fields at the top level, no `properties`."""
    return {k: v for k, v in arm_site(site).items() if k != "properties"} | arm_site(site)["properties"]


def flat_site_without_runtime(site: dict) -> dict:
    """"flat-no-runtime": flattened by an SDK that predates functionAppConfig, so the runtime is not there."""
    return {k: v for k, v in flat_site(site).items() if k != "functionAppConfig"}


def flex_create(state: dict, args: list[str], rg: str, name: str) -> None:
    """What `az functionapp create --flexconsumption-location` does beyond the site (azure-cli 2.91,
    appservice/custom.py `create_functionapp`): without --app-insights or --disable-app-insights it makes an
    Application Insights of the app's name, key-based ingestion on, on a DefaultWorkspace when no
    --workspace is given (`try_create_workspace_based_application_insights`); with
    --deployment-storage-auth-type SystemAssignedIdentity it gives that identity Storage Blob Data
    Contributor on the whole deployment storage account (`_prepare_flex_deployment_storage_identity`,
    `_assign_deployment_storage_managed_identity_role`)."""
    site = state["sites"][name]
    if "--app-insights" in args:
        wanted = opt(args, "--app-insights")
        found = state.get("resources", {}).get(f"{rg}/Microsoft.Insights/components/{wanted}")
        if found is None:
            raise LookupError(f"App Insights {wanted} under resource group {rg}")
        site["settings"]["APPLICATIONINSIGHTS_CONNECTION_STRING"] = found["properties"]["ConnectionString"]
    elif opt(args, "--disable-app-insights") != "true":
        region = opt(args, "--flexconsumption-location")
        workspace = opt(args, "--workspace") or f"DefaultWorkspace-{SUB.rsplit('/', 1)[1]}-{region}"
        state.setdefault("workspaces", {}).setdefault(workspace, {
            "id": f"{SUB}/resourceGroups/DefaultResourceGroup-{region}/workspaces/{workspace}"})
        state.setdefault("resources", {})[f"{rg}/Microsoft.Insights/components/{name}"] = {
            "id": f"{SUB}/resourceGroups/{rg}/providers/Microsoft.Insights/components/{name}",
            "properties": {"Application_Type": "web", "WorkspaceResourceId": state["workspaces"][workspace]["id"],
                           "ConnectionString": CREATED_CONNECTION_STRING}}
        site["settings"]["APPLICATIONINSIGHTS_CONNECTION_STRING"] = CREATED_CONNECTION_STRING
    if opt(args, "--deployment-storage-auth-type") == "SystemAssignedIdentity":
        site["identity"] = {"principalId": f"{name}-principal"}
        account = resource(state, "storage", opt(args, "--deployment-storage-name", "--storage-account"))["id"]
        grant = [site["identity"]["principalId"], "Storage Blob Data Contributor", account]
        if not any(a[:3] == grant for a in state.get("roles", [])):
            state.setdefault("roles", []).append([*grant, f"assignment-{uuid.uuid4().hex}"])


def replicating(state: dict, kind: str, key: str | None) -> None:
    """With state["replication_delay"] = N, an application and service principal just made by the template
    are "not found" by the next N reads of each (Graph is eventually consistent: new objects can take a few
    seconds to be readable everywhere)."""
    pending = state.get("replicating", {})
    if pending.get(f"{kind}/{key}", 0) > 0:
        pending[f"{kind}/{key}"] -= 1
        raise NotYetReadable(f"{kind} {key}")


# The app roles a non-gallery app comes with, enabled ("If you're using a custom (non-gallery) app, you see the
# two default roles: User and msiam_access": Entra's "Configure the role claim issued in the SAML token").
TEMPLATE_ROLES = (
    {"allowedMemberTypes": ["User"], "description": "User", "displayName": "User",
     "id": "18d14569-c3bd-439b-9a66-3a2aee01d14f", "isEnabled": True, "origin": "Application", "value": None},
    {"allowedMemberTypes": ["User"], "description": "msiam_access", "displayName": "msiam_access",
     "id": "b9632174-c057-4f7e-951b-be3adc52bfe6", "isEnabled": True, "origin": "Application", "value": None},
)
# Graph's answer to a PATCH that drops an enabled app role: it must be disabled first.
ENABLED_ROLE_DROPPED = ("ERROR: Bad Request({\"error\":{\"code\":\"CannotDeleteOrUpdateEnabledEntitlement\","
                        "\"message\":\"Permission (scope or role) cannot be deleted or updated unless disabled "
                        "first.\"}})")


# Graph's answer to a PATCH whose app roles share a value (or an id): microsoftgraph/microsoft-graph-docs#21667.
DUPLICATE_VALUE = ("Bad Request({\"error\":{\"code\":\"DuplicateValue\",\"message\":\"Request contains a "
                   "property with duplicate values.\",\"details\":[{\"code\":\"DuplicateValue\",\"message\":"
                   "\"Request contains a property with duplicate values.\",\"target\":\"appRoles\"}]}})")
# Graph's 400 for an assignment of an app role the resource's application does not define.
ROLE_NOT_FOUND = "Permission being assigned was not found on application"


def instantiate(state: dict, template: str, body: str) -> dict:
    """POST /applicationTemplates/{id}/instantiate: an application and its service principal at once, answered
    as Graph v1.0's applicationServicePrincipal ({"application": ..., "servicePrincipal": ...}). The shapes are
    the doc's examples: the application with no redirect URIs, claims, roles or permissions, its signInAudience
    as the instantiate response in Graph's application proxy tutorial shows it; the service principal with user
    assignment required, listed under Enterprise applications and tagged a custom single sign-on app."""
    assert template == NON_GALLERY_TEMPLATE, f"fake az: only the non-gallery template is modelled, not {template}"
    app_id = str(uuid.uuid4())
    app = {"appId": app_id, "id": f"object-{app_id}", "displayName": json.loads(body)["displayName"],
           "owners": [me(state)["id"]], "credentials": [], "keyCredentials": [], "web": {"redirectUris": []},
           "signInAudience": "AzureADandPersonalMicrosoftAccount", "optionalClaims": None,
           "appRoles": [dict(role) for role in TEMPLATE_ROLES],
           "requiredResourceAccess": [], "publicClient": {"redirectUris": []}}
    sp = {"id": f"sp-{app_id}", "appId": app_id, "applicationTemplateId": template, "appRoleAssignmentRequired": True,
          "tags": ["WindowsAzureActiveDirectoryIntegratedApp",
                   "WindowsAzureActiveDirectoryCustomSingleSignOnApplication"]}
    state.setdefault("apps", {})[app_id], state.setdefault("sps", {})[app_id] = app, sp
    for kind in ("apps", "sps"):
        state.setdefault("replicating", {})[f"{kind}/{app_id}"] = state.get("replication_delay", 0)
    return {"application": as_graph_answers(app), "servicePrincipal": sp}


def package_storage(args: list[str]) -> dict:
    """functionAppConfig.deployment.storage as `functionapp create` (or `deployment config set`) makes it
    (azure-cli 2.91 `_build_flex_function_app_config`: the account's blob endpoint plus the container)."""
    account = opt(args, "--deployment-storage-name", "--storage-account")
    container = opt(args, "--deployment-storage-container-name")
    return {"type": "blobContainer", "value": f"https://{account}.blob.core.windows.net/{container}",
            "authentication": {"type": opt(args, "--deployment-storage-auth-type"),
                               "userAssignedIdentityResourceId": None, "storageAccountConnectionStringName": None}}


def deployment_config_set(state: dict, args: list[str], rg: str, name: str) -> dict:
    """`functionapp deployment config set` (azure-cli 2.91 `update_deployment_configs`): the account and
    its container must exist; with SystemAssignedIdentity it gives the identity Storage Blob Data
    Contributor on the whole account (`assign_identity(..., 'Storage Blob Data Contributor', ...)`), as
    `functionapp create` does; it answers the deployment config."""
    site = resource(state, "sites", name)
    account = resource(state, "storage", opt(args, "--deployment-storage-name"))["id"]
    resource(state, "resources", f"{account}/blobServices/default/containers/"
                                 f"{opt(args, '--deployment-storage-container-name')}")
    site["properties"]["functionAppConfig"]["deployment"] = {"storage": package_storage(args)}
    if opt(args, "--deployment-storage-auth-type") == "SystemAssignedIdentity":
        grant = [site["identity"]["principalId"], "Storage Blob Data Contributor", account]
        if not any(a[:3] == grant for a in state.get("roles", [])):
            state.setdefault("roles", []).append([*grant, f"assignment-{uuid.uuid4().hex}"])
    return site["properties"]["functionAppConfig"]["deployment"]


def as_graph_answers(app: dict) -> dict:
    """A registration as Graph's application resource answers it: each app role with its read-only `origin`
    ("Application"), and the lists in Graph's order, not the one they were sent in (here: reversed)."""
    shown = copy.deepcopy(app)
    if "appRoles" in app:
        shown["appRoles"] = [{**role, "origin": "Application"} for role in reversed(app["appRoles"])]
    if app.get("optionalClaims"):
        shown["optionalClaims"] = {token: claims[::-1] for token, claims in app["optionalClaims"].items()}
    return shown


def update_app(app: dict, args: list[str]) -> None:
    """`ad app update`: each given property replaces the registration's (as Graph's PATCH does)."""
    if "--web-redirect-uris" in args:
        app["web"]["redirectUris"] = values(args, "--web-redirect-uris")
    if "--sign-in-audience" in args:
        app["signInAudience"] = opt(args, "--sign-in-audience")
    for assignment in values(args, "--set") if "--set" in args else []:
        set_path(app, assignment)
    if "--app-roles" in args:
        roles = json.load(open(opt(args, "--app-roles")[1:]))
        given = {role["id"]: role for role in roles}
        named = [role["value"] for role in roles if role.get("value") is not None]  # the template's have none
        if len(named) != len(set(named)) or len(given) != len(roles):
            raise Refused(DUPLICATE_VALUE)
        if any(role.get("isEnabled") and role["id"] not in given for role in app.get("appRoles") or []):
            raise Refused(ENABLED_ROLE_DROPPED)
        app["appRoles"] = roles
    for option, key in (("--optional-claims", "optionalClaims"),
                        ("--required-resource-accesses", "requiredResourceAccess")):
        if option in args:
            app[key] = json.load(open(opt(args, option)[1:]))


def graph(state: dict, method: str, uri: str, body: str | None):
    """The Microsoft Graph calls the scripts make, answered with Graph's shapes (values in `value`)."""
    path = uri.split("/v1.0", 1)[1]
    if path.startswith("/oauth2PermissionGrants"):
        grants = state.setdefault("permission_grants", [])
        if method == "GET":  # ?$filter=clientId eq '{id}'
            client = path.split("'")[1]
            return graph_page(uri, [g for g in grants if g["clientId"] == client])
        if method == "POST":
            grants.append({**json.loads(body), "id": f"grant-{uuid.uuid4().hex[:8]}"})
            return grants[-1]
        found = next(g for g in grants if g["id"] == path.rsplit("/", 1)[1])
        found.update(json.loads(body))  # PATCH
        return None
    if path.startswith("/applicationTemplates/") and method == "POST":
        return instantiate(state, path.split("/")[2], body)
    sp_id = path.split("/servicePrincipals/")[1].split("/")[0]
    rest = path.split(f"/servicePrincipals/{sp_id}", 1)[1]
    if rest.split("?", 1)[0] == "/appRoleAssignedTo":
        assigned = state.setdefault("assignments", {}).setdefault(sp_id, [])
        if method == "POST":
            wanted = json.loads(body)
            defined = {r["id"] for r in with_app_roles(state, next(
                s for s in state.get("sps", {}).values() if s["id"] == sp_id))["appRoles"]}
            if wanted["appRoleId"] not in defined:
                graph_refuses("Bad Request", "Request_BadRequest", f"{ROLE_NOT_FOUND} '{sp_id}'.")
            if any((a["principalId"], a["appRoleId"]) == (wanted["principalId"], wanted["appRoleId"])
                   for a in assigned):  # listed or not yet
                graph_refuses("Bad Request", "Request_BadRequest", ASSIGNED_ALREADY)
            assigned.append({**wanted, "id": f"assignment-{uuid.uuid4().hex[:12]}"})
            return assigned[-1]
        unlisted = state.get("unlisted_assignments", [])
        return graph_page(uri, [a for a in assigned if a["id"] not in unlisted])
    sync = state.setdefault("sync", {}).setdefault(sp_id, {"jobs": [], "secrets": None})
    if rest == "/synchronization/templates":
        sp = next(s for s in state.get("sps", {}).values() if s["id"] == sp_id)
        return {"value": [{"id": "scim", "factoryTag": "CustomSCIM", "default": True}]
                if sp.get("applicationTemplateId") == NON_GALLERY_TEMPLATE else []}
    if rest == "/synchronization/jobs":
        if method == "POST":
            template = json.loads(body)["templateId"]
            sync["jobs"].append({"id": f"{template}.{uuid.uuid4().hex[:12]}", "templateId": template,
                                 "schedule": {"state": "Disabled"}, "schema": copy.deepcopy(SCIM_TEMPLATE_SCHEMA)})
            return {k: v for k, v in sync["jobs"][-1].items() if k != "schema"}
        return {"value": [{k: v for k, v in j.items() if k != "schema"} for j in sync["jobs"]]}
    if rest == "/synchronization/secrets" and method == "PUT":
        sync["secrets"] = {pair["key"]: pair["value"] for pair in json.loads(body)["value"]}
        return None
    job_id, action = rest.split("/synchronization/jobs/", 1)[1].split("/", 1)
    job = next(j for j in sync["jobs"] if j["id"] == job_id)
    if action == "schema":
        if method == "PUT":
            if missing := undefined_targets(json.loads(body)):
                print(f"ERROR: Bad Request: attribute mappings to undefined target attributes: {missing}",
                      file=sys.stderr)
                raise SystemExit(1)
            job["schema"] = json.loads(body)
            return None
        return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#schema", **job["schema"]}
    if action == "start" and method == "POST":
        assert sync["secrets"], "Entra refuses to start a job without credentials"
        job["schedule"]["state"] = "Active"
        return None
    raise SystemExit(f"fake az: unknown Graph call {method} {uri}")


def with_app_roles(state: dict, sp: dict) -> dict:
    """A service principal as Graph answers it: with its application's app roles (servicePrincipal.appRoles)."""
    app = state.get("apps", {}).get(sp.get("appId")) or {}  # none: another app's (a CI identity's)
    return {**sp, "appRoles": [{**role, "origin": "Application"} for role in app.get("appRoles") or []]}


def graph_page(uri: str, items: list) -> dict:
    """One page of a Graph collection: GRAPH_PAGE items, the address of the next page in @odata.nextLink
    (Graph's paging; `az rest` does not follow it: Azure/azure-cli#32080)."""
    base, _, query = uri.partition("?")
    start = int(parse_qs(query).get("$skiptoken", ["0"])[0])
    page = {"value": items[start:start + GRAPH_PAGE]}
    if start + GRAPH_PAGE < len(items):  # the request's other parameters ($filter) kept, as Graph keeps them
        kept = [part for part in query.split("&") if part and not part.startswith("$skiptoken=")]
        page["@odata.nextLink"] = f"{base}?{'&'.join([*kept, f'$skiptoken={start + GRAPH_PAGE}'])}"
    return page


def graph_refuses(reason: str, code: str, message: str):
    """Graph's error as `az rest` prints it: the HTTP reason, then the response body in brackets."""
    body = {"error": {"code": code, "message": message, "innerError": {"request-id": str(uuid.uuid4())}}}
    print(f"ERROR: {reason}({json.dumps(body, separators=(',', ':'))})", file=sys.stderr)
    raise SystemExit(1)


def raise_taken(name: str):
    print(f"ERROR: Website with given name {name} already exists.", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
