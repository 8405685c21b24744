"""A fake `az` for the deploy and register-app tests: it records every call (argv and, for --file, a hash
of what the file held) in $FAKE_AZ_LOG and answers from a JSON state in $FAKE_AZ_STATE, with answers
shaped like the real CLI's. Only the commands the scripts issue are known; anything else fails loudly.
Not-found answers look like the real ones (exit 3 and "ResourceNotFound"/"could not be found")."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from datetime import UTC, datetime

SECRET = "fake-entra-client-secret-Q8~do-not-leak"  # the password `ad app credential reset` hands out
SUB = "/subscriptions/00000000-1111-2222-3333-444444444444"


def main(argv: list[str]) -> int:
    args = [a for a in argv if a not in ("--only-show-errors",)]
    if "-o" in args:
        del args[args.index("-o"):args.index("-o") + 2]
    state_path, log_path = os.environ["FAKE_AZ_STATE"], os.environ["FAKE_AZ_LOG"]
    state = json.load(open(state_path)) if os.path.exists(state_path) else {}
    record = {"argv": argv}
    if "--file" in args:
        content = open(args[args.index("--file") + 1]).read()
        record["file_sha256"] = hashlib.sha256(content.encode()).hexdigest()
        record["file_mode"] = oct(os.stat(args[args.index("--file") + 1]).st_mode & 0o777)
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
        answer = handle(args, state)
    except LookupError as missing:
        print(f"ERROR: (ResourceNotFound) The resource {missing} could not be found.", file=sys.stderr)
        return 3
    json.dump(state, open(state_path, "w"), indent=1)
    if answer is not None:
        print(json.dumps(query(answer, args)))
    return 0


def opt(args: list[str], *names: str, default=None):
    for name in names:
        if name in args:
            return args[args.index(name) + 1]
    return default


def values(args: list[str], name: str) -> list[str]:
    start = args.index(name) + 1
    end = next((i for i in range(start, len(args)) if args[i].startswith("--")), len(args))
    return args[start:end]


def query(answer, args: list[str]):
    q = opt(args, "--query")
    if q in ("id", "defaultHostName", "principalId"):
        return answer[q]
    if q == "{password: password}":
        return {"password": answer["password"]}
    return answer


def resource(state: dict, kind: str, key: str) -> dict:
    found = state.setdefault(kind, {}).get(key)
    if found is None:
        raise LookupError(f"{kind} {key}")
    return found


def handle(args: list[str], state: dict):
    words = " ".join(a for a in args[:5] if not a.startswith("-"))
    rg, name = opt(args, "--resource-group", "-g"), opt(args, "--name", "-n")
    if words.startswith("account show"):
        return {"id": SUB.rsplit("/", 1)[1], "tenantId": "tenant-0000", "user": {"name": "admin@contoso.test"}}
    if words.startswith("ad signed-in-user show"):
        return {"id": "admin-object-id"}
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
            "allowSharedKeyAccess": opt(args, "--allow-shared-key-access") == "true"}
        return state["storage"][name]
    if words.startswith("resource show"):
        key = opt(args, "--ids") or f"{rg}/{opt(args, '--resource-type')}/{name}"
        return resource(state, "resources", key)
    if words.startswith("resource create"):
        key = opt(args, "--id") or f"{rg}/{opt(args, '--resource-type')}/{name}"
        made = {"id": opt(args, "--id") or f"{SUB}/resourceGroups/{rg}/providers/{opt(args, '--resource-type')}/{name}",
                "properties": {"ConnectionString": "InstrumentationKey=fake;IngestionEndpoint=https://fake/"}}
        state.setdefault("resources", {})[key] = made
        return made
    if words.startswith("keyvault show"):
        return resource(state, "vaults", name)
    if words.startswith("keyvault create"):
        state.setdefault("vaults", {})[name] = {
            "id": f"{SUB}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}", "name": name,
            "properties": {"enableRbacAuthorization": opt(args, "--enable-rbac-authorization") == "true",
                           "vaultUri": f"https://{name}.vault.azure.net/"}}
        return state["vaults"][name]
    if words.startswith("keyvault secret show"):
        versions = resource(state, "secrets", f"{opt(args, '--vault-name')}/{name}")
        return {"id": versions[-1]["id"]}
    if words.startswith("keyvault secret set"):
        versions = state.setdefault("secrets", {}).setdefault(f"{opt(args, '--vault-name')}/{name}", [])
        version = {"id": f"https://{opt(args, '--vault-name')}.vault.azure.net/secrets/{name}/{uuid.uuid4().hex}",
                   "attributes": {"created": datetime.now(UTC).isoformat(), "expires": opt(args, "--expires")},
                   "tags": dict(t.split("=", 1) for t in values(args, "--tags")) if "--tags" in args else {}}
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
        return resource(state, "sites", name)
    if words.startswith("functionapp create"):
        if name in state.get("taken_names", []):
            raise_taken(name)
        state.setdefault("sites", {})[name] = {
            "defaultHostName": f"{name}.azurewebsites.net", "settings": {"AzureWebJobsStorage": "DefaultEndpoints...;"},
            "identity": {"principalId": f"{name}-principal"} if "--assign-identity" in args else None}
        return {"name": name}
    if words.startswith("functionapp identity assign"):
        site = resource(state, "sites", name)
        site["identity"] = {"principalId": f"{name}-principal"}
        return site["identity"]
    if words.startswith("functionapp config appsettings list"):
        return [{"name": k, "value": v} for k, v in resource(state, "sites", name)["settings"].items()]
    if words.startswith("functionapp config appsettings set"):
        resource(state, "sites", name)["settings"].update(s.split("=", 1) for s in values(args, "--settings"))
        return []
    if words.startswith("functionapp config appsettings delete"):
        for key in values(args, "--setting-names"):
            resource(state, "sites", name)["settings"].pop(key, None)
        return []
    if words.startswith("functionapp deployment source config-zip"):
        state.setdefault("deployments", []).append(name)
        return {"status": 4}
    if words.startswith("role assignment list"):
        wanted = (opt(args, "--assignee"), opt(args, "--role"), opt(args, "--scope"))
        return [a for a in state.get("roles", []) if tuple(a) == wanted]
    if words.startswith("role assignment create"):
        state.setdefault("roles", []).append([opt(args, "--assignee-object-id"), opt(args, "--role"),
                                              opt(args, "--scope")])
        return {"id": "assignment"}
    if words.startswith("ad app list"):
        return [a for a in state.get("apps", {}).values() if a["displayName"] == opt(args, "--display-name")]
    if words.startswith("ad app create"):
        app_id = str(uuid.uuid4())
        state.setdefault("apps", {})[app_id] = {
            "appId": app_id, "displayName": opt(args, "--display-name"),
            "web": {"redirectUris": values(args, "--web-redirect-uris")},
            "optionalClaims": json.load(open(opt(args, "--optional-claims")[1:])), "credentials": []}
        return state["apps"][app_id]
    if words.startswith("ad app update"):
        app = resource(state, "apps", opt(args, "--id"))
        app["web"]["redirectUris"] = values(args, "--web-redirect-uris")
        app["optionalClaims"] = json.load(open(opt(args, "--optional-claims")[1:]))
        return None
    if words.startswith("ad app credential reset"):
        app = resource(state, "apps", opt(args, "--id"))
        assert "--append" in args, "a reset without --append would delete the other secrets"
        app["credentials"].append({"keyId": str(uuid.uuid4()), "displayName": opt(args, "--display-name"),
                                   "startDateTime": datetime.now(UTC).isoformat(),
                                   "endDateTime": opt(args, "--end-date")})
        return {"appId": app["appId"], "password": SECRET, "tenant": "tenant-0000"}
    if words.startswith("ad app credential list"):
        return resource(state, "apps", opt(args, "--id"))["credentials"]
    if words.startswith("ad app credential delete"):
        app = resource(state, "apps", opt(args, "--id"))
        app["credentials"] = [c for c in app["credentials"] if c["keyId"] != opt(args, "--key-id")]
        return None
    if words.startswith("ad sp show"):
        return resource(state, "sps", opt(args, "--id"))
    if words.startswith("ad sp create"):
        state.setdefault("sps", {})[opt(args, "--id")] = {"id": f"sp-{opt(args, '--id')}",
                                                          "appRoleAssignmentRequired": False}
        return state["sps"][opt(args, "--id")]
    if words.startswith("ad sp update"):
        resource(state, "sps", opt(args, "--id"))["appRoleAssignmentRequired"] = True
        return None
    if words.startswith("ad user show") or words.startswith("ad group show"):
        return {"id": f"object-of-{opt(args, '--id', '--group')}"}
    if words.startswith("rest"):
        sp_id = opt(args, "--uri").split("/servicePrincipals/")[1].split("/")[0]
        assigned = state.setdefault("assignments", {}).setdefault(sp_id, [])
        if opt(args, "--method") == "POST":
            assigned.append(json.loads(opt(args, "--body")))
            return {"id": "assignment"}
        return {"value": assigned}
    raise SystemExit(f"fake az: unknown command {args}")


def raise_taken(name: str):
    print(f"ERROR: Website with given name {name} already exists.", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
