"""Rate buckets in the database: atomic over several buckets and across worker processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from convodesk.domain.token_bucket import Bucket
from convodesk.storage import db
from convodesk.storage.rate_limits import RateLimiter, acquire
from convodesk.storage.tables import RateBucketRow

T0 = 1_764_000_000.0
APP = Bucket("app:01APP", 20.0)
PROJECT = Bucket("project:p-1", 800.0)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return db.make_session_factory(engine)


def reserve_at(sessions: sessionmaker[Session], buckets: list[Bucket], now: float) -> float:
    with db.transaction(sessions) as session:
        return acquire(session, buckets, now=now)


def stored(sessions: sessionmaker[Session]) -> dict[str, tuple[float, float]]:
    with sessions() as session:
        rows = session.execute(
            select(RateBucketRow.key, RateBucketRow.tokens, RateBucketRow.updated_epoch)
        )
        return {key: (tokens, epoch) for key, tokens, epoch in rows}


def max_in_window(times: list[float], length: float = 1.0) -> int:
    """The most of ``times`` inside any half-open window [s, s + length)."""
    times = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= length:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_a_token_then_the_wait_until_the_next(sessions: sessionmaker[Session]) -> None:
    assert reserve_at(sessions, [APP], T0) == 0.0
    assert stored(sessions) == {APP.key: (0.0, T0)}
    assert reserve_at(sessions, [APP], T0) == pytest.approx(0.05, abs=1e-5)
    assert reserve_at(sessions, [APP], T0 + 0.03) == pytest.approx(0.02, abs=1e-5)
    assert stored(sessions) == {APP.key: (0.0, T0)}  # a refusal writes nothing
    wait = reserve_at(sessions, [APP], T0 + 0.03)
    assert reserve_at(sessions, [APP], T0 + 0.03 + wait) == 0.0
    assert reserve_at(sessions, [], T0) == 0.0


def test_all_buckets_or_none(sessions: sessionmaker[Session]) -> None:
    slow_project = Bucket("project:p-1", 2.0)
    assert reserve_at(sessions, [APP, slow_project], T0) == 0.0
    # 0.1 s later the app has a token again but the project (2/s) has not: nothing is taken
    wait = reserve_at(sessions, [slow_project, APP], T0 + 0.1)
    assert wait == pytest.approx(0.4, abs=1e-5)
    assert stored(sessions) == {APP.key: (0.0, T0), slow_project.key: (0.0, T0)}
    # the app's token is still there for a send that needs only the app
    assert reserve_at(sessions, [APP], T0 + 0.1) == 0.0
    # and once the project has one again, both give one
    assert reserve_at(sessions, [APP, slow_project], T0 + 0.5 + 1e-6) == 0.0


def test_the_longest_wait_is_reported(sessions: sessionmaker[Session]) -> None:
    slow_project = Bucket("project:p-1", 2.0)
    assert reserve_at(sessions, [APP, slow_project], T0) == 0.0
    assert reserve_at(sessions, [APP, slow_project], T0) == pytest.approx(0.5, abs=1e-5)
    assert reserve_at(sessions, [APP, slow_project], T0 + 0.5 + 1e-6) == 0.0


def test_new_buckets_start_full_and_keys_must_differ(sessions: sessionmaker[Session]) -> None:
    burst = Bucket("app:bursty", 20.0, burst=3.0)
    assert [reserve_at(sessions, [burst], T0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert stored(sessions)[burst.key] == (0.0, T0)
    with pytest.raises(ValueError, match="twice"):
        reserve_at(sessions, [APP, Bucket(APP.key, 5.0)], T0)


def test_a_clock_behind_the_bucket_never_rewinds_it(sessions: sessionmaker[Session]) -> None:
    assert reserve_at(sessions, [APP], T0) == 0.0
    # another node, 1 s behind: it waits for the bucket's clock, and writes nothing older
    assert reserve_at(sessions, [APP], T0 - 1.0) == pytest.approx(1.05, abs=1e-5)
    assert reserve_at(sessions, [APP], T0 + 0.05 + 1e-6) == 0.0
    assert stored(sessions)[APP.key][1] == T0 + 0.05 + 1e-6


def test_the_limiter_reserves_and_waits(sessions: sessionmaker[Session]) -> None:
    clock = [T0]
    limiter = RateLimiter(sessions, clock=lambda: clock[0])
    assert limiter.reserve([APP, PROJECT]) == 0.0
    assert limiter.reserve([APP, PROJECT]) == pytest.approx(0.05, abs=1e-5)
    clock[0] += 0.05 + 1e-6
    assert limiter.reserve([PROJECT, APP]) == 0.0

    fast = RateLimiter(sessions)
    bucket = Bucket("app:waits", 50.0)

    async def five_sends() -> list[float]:
        return await asyncio.gather(*(fast.wait_for([bucket, PROJECT]) for _ in range(5)))

    started = time.monotonic()
    waited = asyncio.run(five_sends())
    elapsed = time.monotonic() - started
    # the first goes at once, then one every 20 ms
    assert sorted(waited)[0] < 0.015
    assert 0.075 <= elapsed < 1.0
    assert sorted(waited)[-1] >= 0.075


# --------------------------------------------------------------------- several processes

SECONDS = 2.0
PROCESSES = 4
# Two runs, one after the other, by the same processes:
# 1. every process sends for one app (20/s) of a large project: the app's bucket binds;
# 2. two apps (20/s each) share a project of 30/s: the project's bucket binds.
SOLO_APP, BIG_PROJECT = Bucket("app:solo", 20.0), Bucket("project:big", 800.0)
SHARED_PROJECT = Bucket("project:shared", 30.0)
APPS = (Bucket("app:A", 20.0), Bucket("app:B", 20.0))

Grants = list[tuple[str, float]]


def _runs(index: int) -> list[list[Bucket]]:
    return [[SOLO_APP, BIG_PROJECT], [APPS[index % 2], SHARED_PROJECT]]


def _hammer(url: str, index: int, start: Any, results: Any) -> None:
    """One worker process: for each run, reserve as often as it can for SECONDS, and report
    the times of its grants: the clock readings `acquire` made with the rows locked."""
    engine = db.create_db_engine(url)
    try:
        readings: list[float] = []

        def clock() -> float:
            readings.append(time.time())
            return readings[-1]

        limiter = RateLimiter(db.make_session_factory(engine), clock=clock)
        db.ping(engine)  # connect before the start
        runs: list[Grants] = []
        for buckets in _runs(index):
            grants: Grants = []
            start.wait(timeout=60)
            deadline = time.time() + SECONDS
            while time.time() < deadline:
                wait = limiter.reserve(buckets)
                if wait == 0.0:
                    grants.append((buckets[0].key, readings[-1]))
                else:
                    time.sleep(min(wait, random.uniform(0.001, 0.005)))
            runs.append(grants)
        results.put(runs)
    finally:
        engine.dispose()


@pytest.fixture
def processes() -> Iterator[Callable[[str], list[Grants]]]:
    ctx = multiprocessing.get_context("spawn")
    started: list[Any] = []

    def run(url: str) -> list[Grants]:
        start = ctx.Barrier(PROCESSES)
        results = ctx.Queue()
        for index in range(PROCESSES):
            proc = ctx.Process(target=_hammer, args=(url, index, start, results), daemon=True)
            proc.start()
            started.append(proc)
        runs: list[Grants] = [[], []]
        for _ in range(PROCESSES):
            for merged, grants in zip(runs, results.get(timeout=60), strict=True):
                merged.extend(grants)
        for proc in started:
            proc.join(timeout=10)
            assert proc.exitcode == 0
        return runs

    yield run
    for proc in started:
        if proc.is_alive():
            proc.kill()
            proc.join()


def assert_rate(times: list[float], bucket: Bucket) -> None:
    """No second over the limit, and most of it used.

    The ceiling is the invariant and holds whatever the machine does. The floor only catches
    a limiter that starves its callers: processes competing for two cores with PostgreSQL
    (and, in CI, with nothing else; on a developer's machine, with whatever runs beside)
    lose some of their chances, and a run of 2 s used 88 % of its 30/s under load. How
    close sends get to the limit is measured by `make bench` (the send group: >= 95 %)."""
    times = sorted(times)
    assert max_in_window(times) <= bucket.rate, times
    # the proof's bound over the whole run: a full bucket's token, then the rate
    assert len(times) <= 1 + bucket.rate * (times[-1] - times[0]) + 1e-6
    expected = 1 + bucket.rate * SECONDS
    assert len(times) >= 0.75 * expected, (len(times), expected, times)


@pytest.mark.slow
def test_several_processes_never_exceed_the_limits(
    database_url: str, processes: Callable[[str], list[Grants]]
) -> None:
    solo, shared = processes(database_url)
    assert_rate([t for _, t in solo], SOLO_APP)
    assert_rate([t for _, t in shared], SHARED_PROJECT)
    for app in APPS:
        assert max_in_window([t for key, t in shared if key == app.key]) <= app.rate
