"""Send slots (workers/send_slots.py): token reservations in batches, on SQLite and PostgreSQL.

A round is checked with a fixed clock (exact slot times); the asynchronous path with the real
clock (sends come out at their slots, never closer than the limit allows).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from convodesk.storage import db
from convodesk.storage.rate_limits import Bucket, acquire
from convodesk.workers.send_slots import JITTER_SECONDS, SlotScheduler

T0 = 1_000_000.0


def _sessions(engine: Engine) -> sessionmaker[Session]:
    return db.make_session_factory(engine)


async def _inline(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)


def test_a_round_gives_evenly_spaced_slots_within_the_horizon(engine: Engine) -> None:
    app = Bucket("app:A", 20)
    step = (1 + JITTER_SECONDS) / 20  # the spacing, and the pad that absorbs jitter
    scheduler = SlotScheduler(_sessions(engine), _inline, horizon=0.12, clock=lambda: T0)
    ((slots, wait),) = scheduler._round([([app], 5)])
    assert slots == pytest.approx([T0, T0 + step, T0 + 2 * step], abs=1e-5)
    assert wait == pytest.approx(3 * step, abs=1e-5)  # the other two: a later round
    # Another process asking now finds the tokens taken up to the last slot.
    with db.transaction(_sessions(engine)) as session:
        assert acquire(session, [app], now=T0 + 2 * step + 0.01) > 0
        assert acquire(session, [app], now=T0 + 3 * step + 1e-5) == 0.0


def test_a_seconds_worth_of_slots_spans_more_than_a_second(engine: Engine) -> None:
    for rate in (20, 800):
        bucket = Bucket(f"project:{rate}", rate)
        scheduler = SlotScheduler(_sessions(engine), _inline, horizon=5.0, clock=lambda: T0)
        ((slots, _),) = scheduler._round([([bucket], rate + 1)])
        assert len(slots) == rate + 1
        first, last = slots[0], slots[-1]
        # rate + 1 sends: one more than a second may hold, so they span over a second, with
        # room for JITTER_SECONDS of lateness and network jitter between the first and last.
        assert last - first >= 1 + JITTER_SECONDS - 1e-6


def test_the_project_bucket_spaces_the_slots_of_all_its_apps(engine: Engine) -> None:
    a, b, project = Bucket("app:A", 20), Bucket("app:B", 20), Bucket("project:P", 30)
    scheduler = SlotScheduler(_sessions(engine), _inline, horizon=0.12, clock=lambda: T0)
    (a_slots, _), (b_slots, _) = scheduler._round([([a, project], 3), ([b, project], 3)])
    step = (1 + JITTER_SECONDS) / 30
    # The two apps take turns at the project's slots; four fit within the horizon.
    assert a_slots == pytest.approx([T0, T0 + 2 * step], abs=1e-5)
    assert b_slots == pytest.approx([T0 + step, T0 + 3 * step], abs=1e-5)


def test_a_busy_app_does_not_hold_up_another(engine: Engine) -> None:
    app, other = Bucket("app:A", 10), Bucket("app:B", 10)
    scheduler = SlotScheduler(_sessions(engine), _inline, horizon=0.05, clock=lambda: T0)
    (a_slots, a_wait), (b_slots, _) = scheduler._round([([app], 2), ([other], 1)])
    assert a_slots == [T0]  # A's second send waits for a later round ...
    assert a_wait == pytest.approx((1 + JITTER_SECONDS) / 10, abs=1e-5)
    assert b_slots == [T0]  # ... which does not hold B up


def test_waiting_sends_come_out_no_closer_than_the_limit(engine: Engine) -> None:
    rate, sends = 40, 16
    app, project = Bucket("app:A", rate), Bucket("project:P", 800)

    async def main() -> tuple[float, list[float]]:
        scheduler = SlotScheduler(_sessions(engine), _inline)
        rounds = asyncio.create_task(scheduler.run())
        out: list[float] = []

        async def send() -> None:
            await scheduler.wait([app, project])
            out.append(time.time())

        started = time.time()
        try:
            await asyncio.wait_for(asyncio.gather(*(send() for _ in range(sends))), 10)
        finally:
            rounds.cancel()
        return started, sorted(out)

    started, times = asyncio.run(main())
    # The slots are 1/rate apart from the first, which is no earlier than the start, and a
    # send never leaves before its slot (it may leave after it: the event loop is late).
    for n, at in enumerate(times):
        assert at >= started + n / rate - 1e-3, f"send {n} left early"
    assert times[-1] - started < (sends - 1) / rate + 1.0


def test_a_send_that_wakes_too_late_takes_a_new_slot(engine: Engine) -> None:
    app = Bucket("app:A", 10)
    offset = [0.0]
    rounds: list[list[tuple[list[float], float]]] = []

    async def stalled_once(function: Callable[..., Any], *args: Any) -> Any:
        result = await asyncio.to_thread(function, *args)
        rounds.append(result)
        if len(rounds) == 1:
            offset[0] += 0.05  # the event loop was held up for 50 ms after the first round
        return result

    async def main() -> int:
        scheduler = SlotScheduler(
            _sessions(engine), stalled_once, clock=lambda: time.time() + offset[0]
        )
        task = asyncio.create_task(scheduler.run())
        try:
            await asyncio.wait_for(scheduler.wait([app]), 5)
        finally:
            task.cancel()
        return scheduler.late

    assert asyncio.run(main()) == 1
    assert len(rounds) == 2
    ((first,), _), ((second,), _) = rounds[0][0], rounds[1][0]
    assert second >= first + 0.1 - 1e-3  # the first slot's token is spent: the next, 0.1 s on
