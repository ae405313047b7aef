"""Send rate limits shared by every worker process and node: token buckets in the database.

Each limit (``app:{app_id}`` at 20/s, ``project:{project_id}`` at 800/s, ...) is one row of
``rate_buckets``; the arithmetic, and the proof that no one-second window sees more than the
limit, are in `domain.token_bucket`. This module makes a reservation atomic across processes.

`acquire` takes one token from *every* given bucket, or from none. Its steps:

1. Sort the buckets by key: the lock order.
2. Lock the rows. PostgreSQL: ``INSERT ... ON CONFLICT DO NOTHING`` creates the missing rows
   (full) in key order, then ``SELECT ... ORDER BY key FOR UPDATE`` locks them all; every lock
   is taken in key order, so nothing can wait in a cycle. (`RateLimiter` skips the INSERT for
   keys it has reserved before.) SQLite: the transaction's ``BEGIN IMMEDIATE`` (`storage.db`)
   already holds the database's write lock from its first statement; missing rows are
   inserted full.
3. Read the clock, now that the rows are locked: the grant times that the guarantee speaks
   of are then real times, in the order the grants happened.
4. `take` on each bucket. All granted: write the new levels and return 0.0. Any refused:
   write nothing and return the longest wait.

The caller owns the transaction and should commit right after: the row locks (PostgreSQL)
or the database lock (SQLite) are held until then. `RateLimiter` does exactly that.

Clocks: the buckets use wall-clock epoch seconds (`time.time`), which all processes on one
machine share. Across machines the node clocks must be NTP-synced. A bucket's clock never goes
back (``take`` uses ``max(now, updated_at)``), so a node whose clock lags only waits longer;
but with clocks up to ``d`` seconds apart, a second of real time can span up to ``1 + d``
seconds of bucket time, and hold about ``rate·d`` sends more than the limit (800/s with 5 ms
of skew: 4).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from convodesk.domain.token_bucket import Bucket, take
from convodesk.storage.tables import RateBucketRow

__all__ = ["Bucket", "RateLimiter", "acquire"]

_table = cast(Table, RateBucketRow.__table__)
_CREATED_EPOCH = 0.0  # a new row is full: its level is capped at burst whatever the time

_pg_create = postgresql.insert(_table).on_conflict_do_nothing(index_elements=["key"])
_sqlite_create = sqlite.insert(_table).on_conflict_do_nothing(index_elements=["key"])
_ASYNC_COMMIT = text("SET LOCAL synchronous_commit = off")
_update = (
    update(_table)
    .where(_table.c.key == bindparam("b_key"))
    .values(tokens=bindparam("b_tokens"), updated_epoch=bindparam("b_epoch"))
)


def acquire(
    session: Session,
    buckets: Sequence[Bucket],
    *,
    now: float | Callable[[], float] = time.time,
    create: bool = True,
) -> float:
    """Take one token from each of ``buckets`` and return 0.0, or take none and return the
    seconds to wait before all of them could give one (module docstring for the steps).

    ``now`` is a clock, read once the rows are locked (step 3), or a time (tests). A time
    read before the lock still keeps every window within the limit in *bucket* time, but the
    grant then really happens later than the bucket records, so in real time the next grant
    may follow it by less than the spacing.

    ``create=False`` skips the up-front ``INSERT`` on PostgreSQL (one round trip), for keys
    the caller has reserved before: rows are never deleted. A row that is missing all the
    same is then created after the others are locked, which, in a race of three transactions
    creating the same new keys, can deadlock (PostgreSQL aborts one of them).
    """
    if not buckets:
        return 0.0
    ordered = sorted(buckets, key=lambda b: b.key)
    keys = [b.key for b in ordered]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a bucket key appears twice: {keys}")

    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres and create:
        session.execute(_pg_create, [_new_row(b) for b in ordered])
    states = _locked_states(session, keys)
    missing = [b for b in ordered if b.key not in states]
    if missing:
        session.execute(_pg_create if postgres else _sqlite_create, [_new_row(b) for b in missing])
        if postgres:  # another transaction may have created (and used) them meanwhile
            states = _locked_states(session, keys)
        else:  # nobody else can write while this transaction holds the database lock
            states.update((b.key, (b.burst, _CREATED_EPOCH)) for b in missing)

    at = now() if callable(now) else now
    takes = [take(*states[b.key], at, b.rate, b.burst) for b in ordered]
    if not all(t.granted for t in takes):
        return max(t.wait for t in takes)
    session.execute(
        _update,
        [
            {"b_key": b.key, "b_tokens": t.tokens, "b_epoch": t.updated_at}
            for b, t in zip(ordered, takes, strict=True)
        ],
    )
    return 0.0


def _new_row(bucket: Bucket) -> dict[str, object]:
    return {"key": bucket.key, "tokens": bucket.burst, "updated_epoch": _CREATED_EPOCH}


def _locked_states(session: Session, keys: list[str]) -> dict[str, tuple[float, float]]:
    rows = session.execute(
        select(_table.c.key, _table.c.tokens, _table.c.updated_epoch)
        .where(_table.c.key.in_(keys))
        .order_by(_table.c.key)
        .with_for_update()  # rendered on PostgreSQL only
    )
    return {key: (tokens, epoch) for key, tokens, epoch in rows}


class RateLimiter:
    """Reservations in their own short transactions, and an async wait for a token.

    In one process, `wait_for` callers asking for the same buckets queue behind an asyncio
    lock (first come, first served) so that only one of them polls the database at a time;
    other processes and nodes compete through the database.

    On PostgreSQL a reservation commits with ``synchronous_commit = off``: the row locks are
    released without waiting for the WAL flush, which is most of a commit's time on a real
    disk. What a server crash can lose is the last fraction of a second of reservations, and
    by the time it has restarted the buckets would have refilled anyway (a bucket is full
    again burst/refill seconds after its last grant: 50 ms at 20/s).
    """

    def __init__(
        self, sessions: sessionmaker[Session], clock: Callable[[], float] = time.time
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._created: set[str] = set()

    def reserve(self, buckets: Sequence[Bucket]) -> float:
        """`acquire` in a transaction of its own: 0.0 when reserved, else seconds to wait."""
        create = any(b.key not in self._created for b in buckets)
        with self._sessions() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                session.execute(_ASYNC_COMMIT)
            wait = acquire(session, buckets, now=self._clock, create=create)
        self._created.update(b.key for b in buckets)
        return wait

    async def wait_for(self, buckets: Sequence[Bucket]) -> float:
        """Wait until one token from each bucket is reserved; return the seconds waited.

        Cancelling it while a reservation is in flight may spend a token that nobody uses,
        which can only lower the send rate.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        names = tuple(sorted(b.key for b in buckets))
        lock = self._locks.setdefault(names, asyncio.Lock())
        async with lock:
            while True:
                wait = await asyncio.to_thread(self.reserve, buckets)
                if wait <= 0:
                    return loop.time() - started
                await asyncio.sleep(wait)
