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
"""

from __future__ import annotations

import asyncio
import queue
import threading
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


class EventWriter:
    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[
            tuple[EventEntry, asyncio.AbstractEventLoop, asyncio.Future[WriteResult]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._insert = _dialect_insert(engine)

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

    def _commit(
        self,
        batch: list[tuple[EventEntry, asyncio.AbstractEventLoop, asyncio.Future[WriteResult]]],
    ) -> None:
        try:
            with self._engine.begin() as conn:
                results = [self._store(conn, entry) for entry, _, _ in batch]
        except Exception as exc:  # the database is down, full, locked: every waiter must know
            for _, loop, future in batch:
                loop.call_soon_threadsafe(_set_exception, future, exc)
            return
        for (_, loop, future), result in zip(batch, results, strict=True):
            loop.call_soon_threadsafe(_set_result, future, result)

    def _store(self, conn: Any, entry: EventEntry) -> WriteResult:
        values = {
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
        if entry.dedup_key is None:
            return WriteResult(
                conn.execute(insert(_events).values(values)).inserted_primary_key[0], False
            )
        stmt = (
            self._insert(_events)
            .values(values)
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .returning(_events.c.id)
        )
        new_id = conn.execute(stmt).scalar()
        if new_id is not None:
            return WriteResult(int(new_id), False)
        values.update(
            outcome="duplicate", dedup_key=None, state="none", reason=f"same as {entry.dedup_key}"
        )
        dup_id = conn.execute(insert(_events).values(values)).inserted_primary_key[0]
        return WriteResult(int(dup_id), True)


def _dialect_insert(engine: Engine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def _set_result(future: asyncio.Future[WriteResult], result: WriteResult) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[WriteResult], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
