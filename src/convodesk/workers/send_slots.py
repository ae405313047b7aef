"""Send slots: the rate-limit tokens of one sender process, reserved in batches.

Every send needs a token from its app's bucket and one from its project's
(`storage.rate_limits`, docs/reference/rate-limits.md). Reserving them one send at a time
costs a transaction per send, and when many sends wait for the same project bucket, several
refused attempts per send as well: at 800 sends/s that is thousands of transactions a
second. Instead, sends wait here, and a *round* reserves in one transaction (one read and one
write of the bucket rows, however many sends) a **slot** for each waiting send: the earliest
time, at most `HORIZON_SECONDS` ahead, at which both of its buckets have a token. The send
then sleeps until its slot.

A round, in one transaction (`_round`):

1. lock the rows of every bucket the waiting sends need, in key order, creating missing ones
   full, exactly as `storage.rate_limits.acquire` does (SQLite: the transaction's
   ``BEGIN IMMEDIATE``; PostgreSQL: ``INSERT ... ON CONFLICT DO NOTHING`` for keys this
   process has not used yet, then ``SELECT ... ORDER BY key FOR UPDATE``), and read the
   clock: ``now``;
2. grant slots one at a time: among the sends that share buckets (the apps of one project),
   always to the one whose own buckets (its app's) have a token soonest, first come first
   served within an app; run `take` (the arithmetic `acquire` runs) on its buckets at
   ``now``; refused with a wait that ends within the horizon, run it again at
   ``now + wait``: granted, that time is the send's slot and the tokens are taken. (Taking
   the apps in a fixed turn instead would let an app whose token is far off push the
   project's clock past tokens another app could have used: measured, 30 % of the project's
   rate lost with 50 apps.) Sends whose buckets have no token within the horizon wait for a
   later round, timed for when their next one comes within it;
3. write the buckets' new states (one statement) and commit.

Why the guarantee still holds: `take` at a future time is the same arithmetic at that time,
and it moves the bucket's clock to it (a bucket's clock never goes back), so the slots are
grant times in the bucket's sense: any one-second window of slots holds at most
``floor(rate)`` of them, whichever processes reserved them, since every process reads and
writes the same rows under the same locks.

From slots to requests. A send leaves at its slot or a little later, and a late one comes
closer to the next than the spacing: with sends exactly at the limit, any lateness could put
one more into some second as Sinch counts them. Two measures bound that:

- a send that wakes more than `LATE_SECONDS` (10 ms) after its slot gives the slot up and
  takes a new one (`SlotScheduler.wait`), so a stalled event loop makes a gap in the sends,
  not a burst;
- each grant moves its bucket's clock a little further than the grant: by
  ``JITTER_SECONDS / floor(rate)`` (20 ms spread over a second's worth of slots: 1 ms at
  20/s, 25 us at 800/s), which is a stricter state of the same bucket (the refill over that
  pad is forgone), so other processes keep to it as well. With burst 1, ``A = floor(rate)``
  consecutive slots then span at least ``1 + JITTER_SECONDS`` seconds, so requests written
  within 10 ms of their slots, and reaching Sinch with less than another 10 ms of difference
  in their network delays, never put more than ``A`` into a one-second window at Sinch. It
  costs 2 % of the rate (800/s sustains about 784/s; 20/s, 19.6/s).

What it costs: a token reserved for a send that is then cancelled (the process stops) is
lost, which only lowers the rate, and tokens are taken up to the horizon ahead, so a second
process asking for the same bucket queues behind them (it gets the next free slots).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from convodesk import logs
from convodesk.domain.token_bucket import Bucket, take
from convodesk.storage.tables import RateBucketRow

log = logs.get_logger("convodesk.sender")
T = TypeVar("T")
RunDb = Callable[..., Awaitable[Any]]

HORIZON_SECONDS = 0.1
"""How far ahead a round reserves slots."""
ROUND_SECONDS = 0.04
"""The shortest time between two rounds: sends that arrive meanwhile wait for the next."""
RETRY_SECONDS = 0.5
"""After a round failed (the database is away), when the next one tries."""
LATE_SECONDS = 0.02
"""A send this late for its slot takes a new one (`SlotScheduler.wait`)."""
JITTER_SECONDS = 0.02
"""The lateness, over a second's worth of slots, that cannot put more than the limit into
one second: `LATE_SECONDS` of our own, and as much again on the way to Sinch."""

_ASYNC_COMMIT = text("SET LOCAL synchronous_commit = off")
_table = cast(Table, RateBucketRow.__table__)
_pg_create = postgresql.insert(_table).on_conflict_do_nothing(index_elements=["key"])
_sqlite_create = sqlite.insert(_table).on_conflict_do_nothing(index_elements=["key"])
_update = (
    update(_table)
    .where(_table.c.key == bindparam("b_key"))
    .values(tokens=bindparam("b_tokens"), updated_epoch=bindparam("b_epoch"))
)


class SlotScheduler:
    """`wait` for a token of each bucket; `run` makes the rounds (module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run_db: RunDb,
        *,
        horizon: float = HORIZON_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``run_db(function, *args)`` runs a round on a database thread and returns its
        result; ``clock`` gives epoch seconds, the buckets' time."""
        self._sessions = sessions
        self._run_db = run_db
        self._horizon = horizon
        self._clock = clock
        # Waiting sends, one queue per set of buckets (first come, first served in each).
        self._queues: dict[tuple[str, ...], _Queue] = {}
        self._arrived = asyncio.Event()
        self._created: set[str] = set()
        self.late = 0  # slots given up because the send woke too late

    async def wait(self, buckets: Sequence[Bucket]) -> None:
        """Return at this send's slot, once a token of every bucket is reserved for it.

        A send that wakes more than `LATE_SECONDS` after its slot (the event loop was held
        up) does not go: it gives the slot up and waits for a new one, so that a stall turns
        into a gap in the sends rather than a burst of them.
        """
        key = tuple(b.key for b in buckets)
        while True:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(buckets)
            slot_future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            queue.waiters.append(slot_future)
            self._arrived.set()
            slot = await slot_future
            delay = slot - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._clock() - slot <= LATE_SECONDS:
                return
            self.late += 1

    async def run(self) -> None:
        """Make rounds until cancelled: after sends arrive, or when deferred ones are due."""
        next_round: float | None = None  # loop time at which deferred sends are due again
        loop = asyncio.get_running_loop()
        while True:
            timeout = None if next_round is None else max(0.0, next_round - loop.time())
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                pass
            self._arrived.clear()
            started = loop.time()
            for key in [k for k, q in self._queues.items() if not q.prune()]:
                del self._queues[key]
            queues = list(self._queues.values())
            next_round = None
            if queues:
                try:
                    results = await self._run_db(
                        self._round, [(q.buckets, len(q.waiters)) for q in queues]
                    )
                except Exception as exc:
                    log.warning("token reservation failed", error=f"{type(exc).__name__}: {exc}")
                    next_round = loop.time() + RETRY_SECONDS
                else:
                    for queue, (slots, wait) in zip(queues, results, strict=True):
                        for slot in slots:
                            queue.give(slot)
                        if queue.waiters:
                            due = loop.time() + wait - self._horizon
                            next_round = due if next_round is None else min(next_round, due)
            # Rounds at most every ROUND_SECONDS: sends arriving meanwhile go together.
            await asyncio.sleep(max(0.0, started + ROUND_SECONDS - loop.time()))
            if next_round is not None:
                next_round = max(next_round, loop.time())

    def _round(
        self, requests: list[tuple[Sequence[Bucket], int]]
    ) -> list[tuple[list[float], float]]:
        """One transaction. For each (buckets, number of sends waiting for them): the slots
        granted, earliest first, and the seconds until the next could be, when not all were
        (module docstring, step 2)."""
        by_key = {b.key: b for buckets, _ in requests for b in buckets}
        slots: list[list[float]] = [[] for _ in requests]
        waits = [0.0] * len(requests)
        with self._sessions() as session, session.begin():
            states = self._lock(session, [by_key[k] for k in sorted(by_key)])
            now = self._clock()  # read with the buckets locked
            for members in _groups(requests):
                self._fill(states, requests, members, now, slots, waits)
            granted = sorted({b.key for i, s in enumerate(slots) if s for b in requests[i][0]})
            if granted:
                session.execute(
                    _update,
                    [
                        {"b_key": k, "b_tokens": states[k][0], "b_epoch": states[k][1]}
                        for k in granted
                    ],
                )
        return list(zip(slots, waits, strict=True))

    def _fill(
        self,
        states: dict[str, tuple[float, float]],
        requests: list[tuple[Sequence[Bucket], int]],
        members: list[tuple[int, list[Bucket], list[Bucket]]],
        now: float,
        slots: list[list[float]],
        waits: list[float],
    ) -> None:
        """Slots for one group of sends that share buckets (an app's sends and their
        project's): always to the member whose own buckets have a token soonest, so that a
        member whose app is not ready never pushes the shared bucket's clock past a token
        another member could have used."""
        order = itertools.count()
        heap = [(_earliest(states, own, now), next(order), i) for i, own, _ in members]
        heapq.heapify(heap)
        shared = {i: common for i, _, common in members}
        own_of = {i: own for i, own, _ in members}
        while heap:
            _, _, i = heapq.heappop(heap)
            buckets, count = requests[i]
            slot, wait = _slot(states, buckets, now, self._horizon)
            if slot is None:
                waits[i] = wait
                common = _earliest(states, shared[i], now) - now
                if common > self._horizon:  # the shared bucket is full: so is everyone
                    for _, _, j in heap:
                        waits[j] = max(common, _earliest(states, own_of[j], now) - now)
                    return
                continue
            slots[i].append(slot)
            if len(slots[i]) < count:
                heapq.heappush(heap, (_earliest(states, own_of[i], now), next(order), i))

    def _lock(self, session: Session, buckets: list[Bucket]) -> dict[str, tuple[float, float]]:
        """Lock and read the buckets (in key order, as `acquire` does), creating missing rows
        full; returns key -> (tokens, updated_epoch)."""
        keys = [b.key for b in buckets]
        postgres = session.get_bind().dialect.name == "postgresql"
        if postgres:
            session.execute(_ASYNC_COMMIT)  # see storage.rate_limits.RateLimiter
            new = [b for b in buckets if b.key not in self._created]
            if new:  # before any lock is taken, in key order: no cycle with other nodes
                session.execute(_pg_create, [_full(b) for b in new])
        else:
            session.connection()  # BEGIN IMMEDIATE: the database's lock, before the clock
        states = _read(session, keys)
        missing = [b for b in buckets if b.key not in states]
        if missing:
            session.execute(_pg_create if postgres else _sqlite_create, [_full(b) for b in missing])
            states = _read(session, keys)
        self._created.update(keys)
        return states


class _Queue:
    """The sends waiting for one set of buckets, in order of arrival."""

    def __init__(self, buckets: Sequence[Bucket]) -> None:
        self.buckets = buckets
        self.waiters: deque[asyncio.Future[float]] = deque()

    def prune(self) -> int:
        """Drop the sends that stopped waiting (cancelled); returns how many wait."""
        if any(f.done() for f in self.waiters):
            self.waiters = deque(f for f in self.waiters if not f.done())
        return len(self.waiters)

    def give(self, slot: float) -> None:
        """The next waiting send gets ``slot`` (lost if none is left: only lowers the rate)."""
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(slot)
                return


def _groups(
    requests: list[tuple[Sequence[Bucket], int]],
) -> list[list[tuple[int, list[Bucket], list[Bucket]]]]:
    """The requests that wait, grouped by the buckets they share with other requests (a
    project's), as (index, own buckets, shared buckets)."""
    users = Counter(b.key for buckets, count in requests if count for b in buckets)
    groups: dict[tuple[str, ...], list[tuple[int, list[Bucket], list[Bucket]]]] = {}
    for i, (buckets, count) in enumerate(requests):
        if count:
            own = [b for b in buckets if users[b.key] == 1]
            common = [b for b in buckets if users[b.key] > 1]
            groups.setdefault(tuple(b.key for b in common), []).append((i, own, common))
    return list(groups.values())


def _earliest(
    states: dict[str, tuple[float, float]], buckets: Sequence[Bucket], now: float
) -> float:
    """When every one of ``buckets`` will have a token, from ``now`` (nothing is taken)."""
    at = now
    for bucket in buckets:
        t = take(*states[bucket.key], now, bucket.rate, bucket.burst)
        if not t.granted:
            at = max(at, now + t.wait)
    return at


def _slot(
    states: dict[str, tuple[float, float]], buckets: Sequence[Bucket], now: float, horizon: float
) -> tuple[float | None, float]:
    """The earliest time from ``now``, within ``horizon``, at which every bucket gives a token
    (`take`, as `acquire` runs it); the tokens are taken in ``states``. Else (None, wait)."""
    at = now
    for _ in range(3):  # a second try absorbs rounding; a third, a rate changed meanwhile
        takes = [take(*states[b.key], at, b.rate, b.burst) for b in buckets]
        if all(t.granted for t in takes):
            for bucket, t in zip(buckets, takes, strict=True):
                states[bucket.key] = (t.tokens, t.updated_at + _pad(bucket))
            return at, 0.0
        wait = max(t.wait for t in takes)
        if at + wait - now > horizon:
            return None, at + wait - now
        at += wait
    return None, at - now


def _pad(bucket: Bucket) -> float:
    """How far a grant moves the bucket's clock beyond the grant (module docstring)."""
    return JITTER_SECONDS / max(1, math.floor(bucket.rate))


def _read(session: Session, keys: list[str]) -> dict[str, tuple[float, float]]:
    rows = session.execute(
        select(_table.c.key, _table.c.tokens, _table.c.updated_epoch)
        .where(_table.c.key.in_(keys))
        .order_by(_table.c.key)
        .with_for_update()  # rendered on PostgreSQL only
    )
    return {key: (tokens, epoch) for key, tokens, epoch in rows}


def _full(bucket: Bucket) -> dict[str, object]:
    return {"key": bucket.key, "tokens": bucket.burst, "updated_epoch": 0.0}
