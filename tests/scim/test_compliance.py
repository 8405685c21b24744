"""RFC 7643/7644 conformance, judged by scim2-tester (an independent checker on PyPI) against the real
app served by tools.host over Azurite: discovery, CRUD, filters, and PATCH on what /Schemas declares.
No check may end in ERROR (a MUST violated) or DEVIATION (a SHOULD ignored)."""

from __future__ import annotations

import ssl

import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.scim.conftest import SCIM_BASE, TOKEN


@pytest.fixture
def results(scim, test_ca):
    with httpx2.Client(base_url=SCIM_BASE, headers={"Authorization": f"Bearer {TOKEN}"},
                       verify=ssl.create_default_context(cafile=str(test_ca.ca_cert)), timeout=20) as http:
        client = SyncSCIMClient(http)
        yield check_server(client)


def test_scim2_tester_finds_no_error_and_no_deviation(results):
    failed = [r for r in results if r.status in (Status.ERROR, Status.DEVIATION)]
    assert not failed, "\n".join(f"{r.status.name} {r.title}: {r.reason}" for r in failed)
    tags = set().union(*(r.tags for r in results))
    for needed in ("discovery", "crud:create", "crud:read", "crud:update", "crud:delete"):
        assert needed in tags, f"scim2-tester ran its {needed} checks"
    for check in ("check_add_attribute", "check_replace_attribute", "check_remove_attribute"):
        assert any(r.title == check for r in results), f"scim2-tester's PATCH check {check} ran"
    print(sorted(tags))
    print(f"\nscim2-tester: {len(results)} checks, " + ", ".join(
        f"{s.name} {sum(r.status is s for r in results)}" for s in Status))
