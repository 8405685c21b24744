"""The flow marker's single-use delete against the real table (Azurite): of callbacks racing for one
state, exactly one takes it, however they interleave. One unconditional DELETE each: the first gets
204, every later one 404, which the SDK reports as success (the store reads the status itself)."""

from __future__ import annotations

import secrets
import threading

import pytest

from shared.errors import UnknownState
from shared.flows import FlowStore
from shared.tables import FLOWS_TABLE

ROUNDS, RACERS = 20, 8


def race(store: FlowStore, state: str) -> list[str]:
    """RACERS threads released together, each consuming the same flow: their outcomes."""
    barrier, outcomes, lock = threading.Barrier(RACERS), [], threading.Lock()

    def consume():
        barrier.wait()
        try:
            store.take(state, "user")
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
        state = f"race{round_number}" + secrets.token_urlsafe(12)
        store.save(state, "user", f"race-{round_number}")
        outcomes = race(store, state)
        assert sorted(outcomes) == ["lost"] * (RACERS - 1) + ["won"], \
            f"round {round_number}: exactly one consumer takes the flow, got {outcomes}"


def test_a_marker_taken_once_is_gone_for_the_second_take_and_for_the_other_kind(app_server):
    from shared.runtime import get_runtime

    store = FlowStore(get_runtime().tables.client(FLOWS_TABLE))
    state = "twice" + secrets.token_urlsafe(12)
    store.save(state, "user", "twice")
    with pytest.raises(UnknownState):
        store.take(state, "agent")  # the other kind's door: another row, none
    store.take(state, "user")
    with pytest.raises(UnknownState):
        store.take(state, "user")
