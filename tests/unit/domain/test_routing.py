"""The Chat Server's pure rules: `domain.routing`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from convodesk.domain import routing
from convodesk.domain.routing import Candidate

T0 = datetime(2024, 6, 10, 8, 0, tzinfo=UTC)


def agent(
    login: str,
    *,
    load: int = 0,
    idle_minutes: int = 0,
    capacity: int = 2,
    queues: tuple[str, ...] = ("support",),
) -> Candidate:
    return Candidate(
        login=login,
        agent_id=hash(login) % 1000,
        queues=frozenset(queues),
        capacity=capacity,
        load=load,
        idle_since=T0 - timedelta(minutes=idle_minutes),
    )


def test_the_least_loaded_then_the_longest_idle() -> None:
    anna = agent("anna", idle_minutes=5)
    bob = agent("bob", idle_minutes=10)
    carl = agent("carl", idle_minutes=60, load=1)
    assert routing.choose_agent([anna, bob, carl], "support") == bob
    assert routing.choose_agent([anna, carl], "support") == anna


def test_members_with_room_only_and_not_the_excluded() -> None:
    full = agent("full", load=2, idle_minutes=99)
    other_queue = agent("sales", queues=("sales",), idle_minutes=99)
    anna = agent("anna")
    assert routing.choose_agent([full, other_queue, anna], "support") == anna
    assert routing.choose_agent([full, other_queue, anna], "support", excluded={"anna"}) is None


def test_ties_break_by_login() -> None:
    assert routing.choose_agent([agent("bob"), agent("anna")], "support") == agent("anna")


@pytest.mark.parametrize(
    ("waited", "position", "last", "since_last", "due"),
    [
        (59, 3, None, None, False),  # too early: it may be answered at once
        (60, 3, None, None, True),
        (300, 2, 3, 119, False),  # better, but too soon
        (300, 2, 3, 120, True),
        (300, 3, 3, 600, False),  # unchanged
        (300, 4, 3, 600, False),  # worse (a higher priority arrived): say nothing
    ],
)
def test_position_prompt(
    waited: float, position: int, last: int | None, since_last: float | None, due: bool
) -> None:
    assert (
        routing.position_prompt_due(
            waited_seconds=waited,
            position=position,
            last_position=last,
            seconds_since_last=since_last,
        )
        is due
    )


def step(
    *, inbound: int | None, agent: int, warned: int | None = None, now: int
) -> routing.InactivityStep | None:
    """Times in minutes after T0."""

    def t(minutes: int | None) -> datetime | None:
        return None if minutes is None else T0 + timedelta(minutes=minutes)

    last_activity = t(agent)
    assert last_activity is not None
    return routing.inactivity_step(
        last_inbound_at=t(inbound),
        last_activity_at=last_activity,
        idle_warned_at=t(warned),
        now=T0 + timedelta(minutes=now),
        warning_seconds=25 * 60,
        close_seconds=30 * 60,
    )


def test_the_clock_runs_only_on_the_customers_turn() -> None:
    # the customer wrote last (activity == inbound): the agent owes the answer
    assert step(inbound=0, agent=0, now=120) is None
    # the agent wrote at 1: warn at 26, close at 31
    assert step(inbound=0, agent=1, now=25) is None
    assert step(inbound=0, agent=1, now=26) == "warn"
    assert step(inbound=0, agent=1, warned=26, now=28) is None
    assert step(inbound=0, agent=1, warned=26, now=31) == "close"


def test_a_new_agent_message_starts_a_new_idle_period() -> None:
    # warned at 26 for the message at 1; the agent wrote again at 27: a new warning at 52
    assert step(inbound=0, agent=27, warned=26, now=40) is None
    assert step(inbound=0, agent=27, warned=26, now=52) == "warn"


def test_a_late_pass_closes_without_warning_first() -> None:
    assert step(inbound=0, agent=1, now=45) == "close"
