"""Sends the local app a provisioning cycle shaped like Entra's (`make scim-demo`):

    .venv/bin/python -m tools.scim_cycle [--base https://127.0.0.1:7071] [--token-file .devstack/scim-token]

"Test connection", then for each person Entra's create (a query, then a POST with the core and
enterprise schemas, externalId, a work email and AssertiveAppRoleAssignmentsComplex roles), then the changes
an admin makes (an email change, a disable, a role taken away, a deletion), then a second cycle that
changes nothing. It prints each step, and what each account now is. With `make run`'s stack, the dev
IdP's nobody@contoso.test (object id below) becomes an agent and can sign in at the agent door.

The token comes from --token-file (default .devstack/scim-token, what `make run` made) or SCIM_TOKEN;
the CA from .devstack/ca/ca.pem when it exists. It is also the load tools/bench_scim.py measures."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

from shared.config import KIND_ROLES
from tools.local_settings import load_local_settings

ROOT = Path(__file__).resolve().parents[1]
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
DEV_NOBODY_OID = "9d3c2b1a-0f9e-4d8c-b7a6-5e4d3c2b1a03"  # tools/dev.py's nobody@contoso.test


@dataclass
class Person:
    email: str
    object_id: str
    kinds: tuple[str, ...]
    name: str

    def body(self) -> dict:
        """Entra's "Create User" request (its SCIM tutorial), roles as AssertiveAppRoleAssignmentsComplex sends them."""
        given, _, family = self.name.partition(" ")
        return {"schemas": [USER_SCHEMA, ENTERPRISE], "externalId": self.object_id, "userName": self.email,
                "active": True, "displayName": self.name, "meta": {"resourceType": "User"},
                "emails": [{"primary": True, "type": "work", "value": self.email}],
                "name": {"formatted": self.name, "familyName": family, "givenName": given},
                ENTERPRISE: {"department": "Contact center"},
                "roles": [{"primary": False, "type": "WindowsAzureActiveDirectoryRole", "display": k.title(),
                           "value": KIND_ROLES[k]} for k in self.kinds]}


class Client:
    def __init__(self, base: str, token: str, verify=True, session: requests.Session | None = None):
        self.base = base.rstrip("/") + "/api/scim/v2"
        self.session = session or requests.Session()
        # Per request: a session's verify loses to REQUESTS_CA_BUNDLE from the environment (requests#3829).
        self.verify = verify
        self.session.headers.update({"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json",
                                     "Accept": "application/scim+json"})
        self.requests = 0

    def call(self, method: str, path: str, body=None, **params) -> requests.Response:
        self.requests += 1
        return self.session.request(method, self.base + path, params=params or None, timeout=30, verify=self.verify,
                                    data=json.dumps(body) if body is not None else None)

    def find(self, user_name: str) -> dict | None:
        found = self.call("GET", "/Users", filter=f'userName eq "{user_name}"')
        found.raise_for_status()
        resources = found.json()["Resources"]
        return resources[0] if resources else None

    def patch(self, scim_id: str, *operations: dict) -> requests.Response:
        return self.call("PATCH", f"/Users/{scim_id}", {"schemas": [PATCH_OP], "Operations": list(operations)})


def provision(client: Client, person: Person) -> tuple[str, str]:
    """Entra's create: query first; POST when absent. Returns (what happened, SCIM id)."""
    found = client.find(person.email)
    if found is not None:
        return "unchanged", found["id"]
    created = client.call("POST", "/Users", person.body())
    if created.status_code != 201:
        return f"refused {created.status_code} {created.json().get('scimType', '')}", ""
    return "created", created.json()["id"]


def demo_people(tag: str) -> list[Person]:
    return [Person("nobody@contoso.test", DEV_NOBODY_OID, ("agent",), "No Portal-Account"),
            Person(f"ana.{tag}@contoso.test", str(uuid.uuid4()), ("agent",), "Ana Agent"),
            Person(f"sam.{tag}@contoso.test", str(uuid.uuid4()), ("user",), "Sam Supervisor"),
            Person(f"bo.{tag}@contoso.test", str(uuid.uuid4()), ("user", "agent"), "Bo Both"),
            Person(f"lee.{tag}@contoso.test", str(uuid.uuid4()), ("agent",), "Lee Leaver")]


def stack_base() -> str:
    """Where `make run` serves the app: DEV_APP_PORT when this shell sets it, else the PUBLIC_BASE_URL
    of the settings it last wrote (.devstack/local.settings.json, so a stack started with another
    DEV_APP_PORT is found from any shell), else the default port."""
    if port := os.environ.get("DEV_APP_PORT"):
        return f"https://127.0.0.1:{port}"
    values = load_local_settings(ROOT / ".devstack" / "local.settings.json", {})
    return (values.get("PUBLIC_BASE_URL") or "https://127.0.0.1:7071").rstrip("/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.scim_cycle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=stack_base(), help="the app (default: where `make run` last served it)")
    parser.add_argument("--token-file", type=Path, default=ROOT / ".devstack" / "scim-token")
    args = parser.parse_args(argv)
    token = os.environ.get("SCIM_TOKEN") or (args.token_file.read_text().strip() if args.token_file.is_file() else "")
    if not token:
        print("no token: run `make run` first (it makes .devstack/scim-token), or set SCIM_TOKEN", file=sys.stderr)
        return 1
    ca = ROOT / ".devstack" / "ca" / "ca.pem"
    client = Client(args.base, token, verify=str(ca) if ca.is_file() else True)
    try:
        test = client.call("GET", "/Users", filter=f'userName eq "{uuid.uuid4()}"')
    except requests.RequestException as exc:
        print(f"cannot reach {client.base}: {type(exc).__name__}. Is `make run` running?", file=sys.stderr)
        return 1
    print(f"Test connection: {test.status_code} {'(ok)' if test.status_code == 200 else test.text[:200]}")
    if test.status_code != 200:
        return 1
    people = demo_people(uuid.uuid4().hex[:6])
    ids = {}
    print("\nFirst cycle (create):")
    for person in people:
        outcome, ids[person.email] = provision(client, person)
        print(f"  {person.email:32} {'+'.join(person.kinds):11} {outcome}")
    ana, sam, bo, lee = people[1:]
    print("\nChanges an admin makes in Entra, as Entra sends them:")
    renamed = ana.email.replace("ana.", "ana.lopez.")
    steps = [
        (f"{ana.email}: work email -> {renamed}", ids[ana.email],
         {"op": "Replace", "path": 'emails[type eq "work"].value', "value": renamed}),
        (f"{sam.email}: disabled (active \"False\")", ids[sam.email], {"op": "Replace", "path": "active",
                                                                       "value": "False"}),
        (f"{bo.email}: Portal.User role removed", ids[bo.email],
         {"op": "Remove", "path": "roles", "value": [{"value": "Portal.User"}]}),
    ]
    for text, scim_id, operation in steps:
        print(f"  {text}: {client.patch(scim_id, operation).status_code}")
    print(f"  {lee.email}: unassigned (DELETE): {client.call('DELETE', '/Users/' + ids[lee.email]).status_code}")
    print("\nSecond cycle (nothing changed in Entra):")
    before = client.requests
    for person in people[:4]:
        current = client.find(person.email)  # the userName: an email change leaves it as it was
        print(f"  {person.email:32} found, version {current['meta']['version'] if current else '-'}; no write")
    print(f"  {client.requests - before} requests, all reads")
    print("\nNow: `.venv/bin/portal-sso accounts list` shows the accounts (provisioned: yes), and the demo "
          "portal's agent door signs nobody@contoso.test / nobody in.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
