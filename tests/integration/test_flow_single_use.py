"""The flow's single-use delete against the real table (Azurite): of callbacks racing for one state,
exactly one takes it, however they interleave."""

from __future__ import annotations

import secrets
import threading

from shared.errors import UnknownState
from shared.flows import FlowStore, new_binding
from shared.tables import FLOWS_TABLE

ROUNDS, RACERS = 20, 8


def race(store: FlowStore, state: str, binding: str) -> list[str]:
    """RACERS threads released together, each consuming the same flow: their outcomes."""
    barrier, outcomes, lock = threading.Barrier(RACERS), [], threading.Lock()

    def consume():
        barrier.wait()
        try:
            store.take(store.find(state, "user", binding))
            outcome = "won"
        except UnknownState:
            outcome = "lost"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=consume) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_of_eight_concurrent_consumers_exactly_one_wins_in_each_of_twenty_rounds(app_server):
    from shared.runtime import get_runtime

    store = FlowStore(get_runtime().tables.client(FLOWS_TABLE))
    for round_number in range(ROUNDS):
        binding, state = new_binding(), f"race{round_number}" + secrets.token_urlsafe(12)
        store.save({"state": state, "nonce": "n"}, "user", binding, None, f"race-{round_number}")
        outcomes = race(store, state, binding)
        assert sorted(outcomes) == ["lost"] * (RACERS - 1) + ["won"], \
            f"round {round_number}: exactly one consumer takes the flow, got {outcomes}"
