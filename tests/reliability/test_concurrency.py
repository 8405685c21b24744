"""Concurrent callbacks against the real app and Azurite (through a recording proxy that injects no
faults): twenty people's-worth of logins racing for one never-linked account all get in and link it
exactly once; one callback posted eight times at once yields exactly one session token."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import requests

from tests.support.fault_proxy import FaultProxy
from tests.support.hostile_flow import (
    assert_signed_in,
    begin,
    cookie_of,
    new_person,
    post_callback,
    post_with_cookie,
)
from tests.support.hostile_idp import CLIENT_ID, CLIENT_SECRET, TENANT
from tools.stack import azurite_connection_string


@pytest.fixture
def recorded(hostile, azurite, use_settings):
    """The app on the hostile IdP, its table traffic through a proxy that records every exchange."""
    with FaultProxy(azurite.port) as proxy:
        hostile.reset()
        use_settings(OIDC_ISSUER_URL=hostile.issuer, OIDC_CLIENT_ID=CLIENT_ID, OIDC_CLIENT_SECRET=CLIENT_SECRET,
                     TABLES_CONNECTION_STRING=azurite_connection_string(proxy.port, azurite.account_key))
        yield proxy


def all_at_once(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    barrier, results, lock = threading.Barrier(len(calls)), [], threading.Lock()

    def run(call):
        barrier.wait()
        response = call()
        with lock:
            results.append(response)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_twenty_concurrent_logins_of_a_never_linked_account_all_succeed_and_link_it_once(
        hostile, recorded, account_store):
    person = new_person(account_store)
    hostile.answer(claims=person.claims)
    started = [begin(hostile) for _ in range(20)]  # twenty browsers at the IdP, the callbacks not yet sent
    responses = all_at_once([lambda s=session, f=answer: post_callback(s, f) for session, answer in started])
    assert [r.status_code for r in responses] == [200] * 20, [r.text[:200] for r in responses if r.status_code != 200]
    for response in responses:
        assert_signed_in(response, person)
    key = person.email.replace("@", "%40")
    link_writes = [e for e in recorded.exchanges
                   if e.method in ("PATCH", "MERGE", "PUT") and "PortalAccounts" in e.path and key in e.path]
    assert [e.status for e in link_writes if e.status == 204] == [204], \
        f"the account is linked by exactly one write: {[(e.method, e.status) for e in link_writes]}"
    assert account_store.get(person.email, "user").linked_idp_subject == f"{TENANT}:{person.oid}"


def test_one_callback_posted_eight_times_at_once_gives_exactly_one_session_token(hostile, recorded, account_store):
    person = new_person(account_store)
    hostile.answer(claims=person.claims)
    session, fields = begin(hostile)
    cookie = cookie_of(session)
    responses = all_at_once([lambda: post_with_cookie(fields, cookie) for _ in range(8)])
    tokens = [r for r in responses if 'name="session_token"' in r.text]
    assert len(tokens) == 1 and sorted(r.status_code for r in responses) == [200] + [400] * 7, \
        [r.status_code for r in responses]
    assert len(hostile.token_requests) == 1, "the code went to the IdP once: the losers never redeemed it"
