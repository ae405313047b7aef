"""The delivery status rule: forward only, order-independent, SWITCHING_CHANNEL inert."""

from __future__ import annotations

from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convodesk.domain import delivery
from convodesk.domain.delivery import (
    ACCEPTED,
    DELIVERED,
    FAILED,
    PENDING,
    QUEUED_ON_CHANNEL,
    READ,
    SENDING,
    SWITCHING_CHANNEL,
    advance,
)

SINCH_REPORTS = (QUEUED_ON_CHANNEL, DELIVERED, READ, FAILED, SWITCHING_CHANNEL)
UNKNOWN = ("QUEUED", "delivered", "", "RECALLED", "read ")


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (PENDING, SENDING, SENDING),
        (SENDING, ACCEPTED, ACCEPTED),
        (ACCEPTED, QUEUED_ON_CHANNEL, QUEUED_ON_CHANNEL),
        (QUEUED_ON_CHANNEL, DELIVERED, DELIVERED),
        (DELIVERED, READ, READ),
        # READ may come without DELIVERED, and reports may overtake the send answer
        (ACCEPTED, READ, READ),
        (PENDING, DELIVERED, DELIVERED),
        (SENDING, QUEUED_ON_CHANNEL, QUEUED_ON_CHANNEL),
        # never backwards
        (READ, DELIVERED, READ),
        (DELIVERED, QUEUED_ON_CHANNEL, DELIVERED),
        (QUEUED_ON_CHANNEL, ACCEPTED, QUEUED_ON_CHANNEL),
        (ACCEPTED, SENDING, ACCEPTED),
        # FAILED ends the send pipeline ...
        (QUEUED_ON_CHANNEL, FAILED, FAILED),
        (SENDING, FAILED, FAILED),
        (FAILED, QUEUED_ON_CHANNEL, FAILED),
        (FAILED, ACCEPTED, FAILED),
        # ... but a receipt from the device proves delivery, whichever came first
        (DELIVERED, FAILED, DELIVERED),
        (READ, FAILED, READ),
        (FAILED, DELIVERED, DELIVERED),
        (FAILED, READ, READ),
        # SWITCHING_CHANNEL is an event, not a status
        (QUEUED_ON_CHANNEL, SWITCHING_CHANNEL, QUEUED_ON_CHANNEL),
        (ACCEPTED, SWITCHING_CHANNEL, ACCEPTED),
        (FAILED, SWITCHING_CHANNEL, FAILED),
        # unknown incoming statuses change nothing; an unknown current one yields
        (DELIVERED, "QUEUED", DELIVERED),
        (PENDING, "delivered", PENDING),
        ("legacy", QUEUED_ON_CHANNEL, QUEUED_ON_CHANNEL),
        ("legacy", SWITCHING_CHANNEL, "legacy"),
        # idempotent
        (DELIVERED, DELIVERED, DELIVERED),
        (FAILED, FAILED, FAILED),
    ],
)
def test_advance(current: str, incoming: str, expected: str) -> None:
    assert advance(current, incoming) == expected


def test_order_and_terminals() -> None:
    assert delivery.ORDER == (
        PENDING,
        SENDING,
        ACCEPTED,
        QUEUED_ON_CHANNEL,
        FAILED,
        DELIVERED,
        READ,
    )
    assert delivery.rank(SWITCHING_CHANNEL) is None
    assert delivery.rank("QUEUED") is None
    assert delivery.rank(PENDING) == 0
    assert delivery.is_terminal(READ)
    assert delivery.is_terminal(FAILED)
    assert not delivery.is_terminal(DELIVERED)
    assert delivery.STATUSES == {*delivery.ORDER, SWITCHING_CHANNEL}


def _sort_key(status: str) -> int:
    rank = delivery.rank(status)
    return -1 if rank is None else rank


statuses = st.sampled_from((*delivery.ORDER, SWITCHING_CHANNEL, *UNKNOWN))
reports = st.lists(st.sampled_from((*SINCH_REPORTS, *UNKNOWN)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(start=statuses, incoming=reports, data=st.data())
def test_any_arrival_order_ends_where_sorted_order_does(
    start: str, incoming: list[str], data: st.DataObject
) -> None:
    arrival = data.draw(st.permutations(incoming))
    in_sorted_order = reduce(advance, sorted(incoming, key=_sort_key), start)
    assert reduce(advance, arrival, start) == in_sorted_order

    # and never moves backwards on the way
    current = start
    for status in arrival:
        after = advance(current, status)
        if after != current:
            assert _sort_key(after) > _sort_key(current)
        current = after


@given(start=statuses, incoming=reports)
def test_the_result_is_the_highest_status_seen(start: str, incoming: list[str]) -> None:
    known = [s for s in (start, *incoming) if delivery.rank(s) is not None]
    expected = max(known, key=_sort_key) if known else start
    assert reduce(advance, incoming, start) == expected


@given(start=statuses, incoming=reports)
def test_duplicates_change_nothing(start: str, incoming: list[str]) -> None:
    doubled = [status for status in incoming for _ in (0, 1)]
    assert reduce(advance, doubled, start) == reduce(advance, incoming, start)
