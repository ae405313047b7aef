"""Durable, batched writes of incoming callbacks to the event log.

The intake must not answer 2xx before the callback is committed, and must stay fast under
load. `EventWriter` gives both: one writer thread takes every entry waiting in its queue,
inserts them in one transaction and commits once, then wakes each waiting request with its
result (group commit). Each request still waits for *its* commit; under load, many requests
share one commit instead of queueing for the database lock one by one.

An accepted entry carries a `dedup_key`. The insert is ``ON CONFLICT (dedup_key) DO
NOTHING``: when the key is taken (the same callback was stored before, possibly by another
node at the same instant) the entry is logged again as a ``duplicate`` without a key, and
has no further effect.

A batch costs one multi-row statement for its keyed entries (ids in queue order), then one
statement for each of the rare others (rejections, duplicates), and one wake-up per event
loop. The writer thread shares the GIL with the event loop, so its Python time per entry
is the intake's throughput too (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, insert
from sqlalchemy.dialects import postgresql, sqlite

from convodesk.storage.tables import EventRow

MAX_BATCH = 256
_events = cast(Table, EventRow.__table__)


@dataclass(kw_only=True)
class EventEntry:
    service: str | None
    trigger: str | None
    app_id: str | None
    channel: str | None
    identity: str | None
    outcome: str  # accepted | rejected | ignored
    reason: str | None
    dedup_key: str | None
    body: bytes
    state: str  # pending (to process) | none
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class WriteResult:
    event_id: int
    duplicate: bool


class WriterStoppedError(RuntimeError):
    """The writer is not running; nothing was stored."""


_Waiter = tuple[EventEntry, asyncio.AbstractEventLoop, "asyncio.Future[WriteResult]"]


class EventWriter:
    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Waiter | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Built once: compiling a statement per entry cost more than executing it.
        self._insert_keyed = (
            _dialect_insert(engine)(_events)
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .returning(_events.c.id, _events.c.dedup_key)
        )

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    async def write(self, entry: EventEntry) -> WriteResult:
        if self._thread is None:
            raise WriterStoppedError("the event writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WriteResult] = loop.create_future()
        self._queue.put((entry, loop, future))
        return await future

    def write_now(self, entry: EventEntry) -> WriteResult:
        """Synchronous form, for the CLI and tests: one entry, one transaction."""
        with self._engine.begin() as conn:
            return self._store(conn, entry)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._commit(batch)

    def _commit(self, batch: list[_Waiter]) -> None:
        try:
            with self._engine.begin() as conn:
                results = self._store_batch(conn, [entry for entry, _, _ in batch])
        except Exception as exc:  # the database is down, full, locked: every waiter must know
            _wake(batch, [exc] * len(batch))
            return
        _wake(batch, results)

    def _store_batch(self, conn: Any, entries: list[EventEntry]) -> list[WriteResult]:
        """Store a batch in as few statements as the database allows: every keyed entry in
        one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, then, one by one, the
        rare rest (entries without a key, and duplicates, whose key was taken)."""
        results: list[WriteResult | None] = [None] * len(entries)
        keyed = [i for i, entry in enumerate(entries) if entry.dedup_key is not None]
        if keyed:
            rows = conn.execute(self._insert_keyed, [_values(entries[i]) for i in keyed])
            stored = {key: event_id for event_id, key in rows}
            for i in keyed:
                # pop: of two copies in one batch, the first is stored, the second a duplicate
                event_id = stored.pop(entries[i].dedup_key, None)
                if event_id is not None:
                    results[i] = WriteResult(int(event_id), False)
        for i, entry in enumerate(entries):
            if results[i] is None:
                results[i] = (
                    self._store_duplicate(conn, entry)
                    if entry.dedup_key is not None
                    else WriteResult(self._insert_plain(conn, _values(entry)), False)
                )
        return cast(list[WriteResult], results)

    def _store(self, conn: Any, entry: EventEntry) -> WriteResult:
        if entry.dedup_key is None:
            return WriteResult(self._insert_plain(conn, _values(entry)), False)
        new_id = conn.execute(self._insert_keyed, _values(entry)).first()
        if new_id is not None:
            return WriteResult(int(new_id[0]), False)
        return self._store_duplicate(conn, entry)

    def _store_duplicate(self, conn: Any, entry: EventEntry) -> WriteResult:
        values = _values(entry)
        values.update(
            outcome="duplicate", dedup_key=None, state="none", reason=f"same as {entry.dedup_key}"
        )
        return WriteResult(self._insert_plain(conn, values), True)

    def _insert_plain(self, conn: Any, values: dict[str, Any]) -> int:
        return int(conn.execute(_INSERT_PLAIN, values).inserted_primary_key[0])


_INSERT_PLAIN = insert(_events)


def _values(entry: EventEntry) -> dict[str, Any]:
    return {
        "received_at": entry.received_at,
        "service": entry.service,
        "trigger": entry.trigger,
        "app_id": entry.app_id,
        "channel": entry.channel,
        "identity": entry.identity,
        "outcome": entry.outcome,
        "reason": entry.reason,
        "dedup_key": entry.dedup_key,
        "body": entry.body,
        "state": entry.state,
    }


def _wake(batch: list[_Waiter], outcomes: Sequence[WriteResult | Exception]) -> None:
    """Hand each waiter its outcome: one wake-up call per event loop, not one per entry
    (waking a loop from another thread costs a write to its self-pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[WriteResult], Any]]] = {}
    for (_, loop, future), outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


def _dialect_insert(engine: Engine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def _settle(settled: list[tuple[asyncio.Future[WriteResult], Any]]) -> None:
    for future, outcome in settled:
        if future.done():  # the request was cancelled (client gone); the row stays stored
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
