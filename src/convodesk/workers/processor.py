"""The processor: runs the Chain Matcher over accepted callbacks, oldest first.

Claiming: one transaction takes up to `batch` pending events in id order (on PostgreSQL
with ``FOR UPDATE SKIP LOCKED``, so two processes never take the same event), processes
each inside a savepoint (one bad event is marked ``failed`` with the reason; the others
go on), records the outcome on each event, and commits. A crash before the commit leaves
the events pending; processing is idempotent, so doing them again is harmless.

Order: within one process, events are applied in the order they were stored, so the
messages of one conversation keep their order. (Across several processor nodes the
per-conversation order is the multi-node issue's business; see docs/architecture.md.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select

from convodesk import logs
from convodesk.metrics import Metrics
from convodesk.runtime import Runtime
from convodesk.services.chain_matcher import Outcome, process_event
from convodesk.services.directory import DirectoryCache
from convodesk.storage.db import transaction
from convodesk.storage.tables import EventRow

log = logs.get_logger("convodesk.processor")
IDLE_POLL_SECONDS = 1.0


class Processor:
    def __init__(
        self,
        runtime: Runtime,
        directory: DirectoryCache,
        *,
        metrics: Metrics | None = None,
        batch: int = 200,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._runtime = runtime
        self._directory = directory
        self._metrics = metrics
        self._batch = batch
        self._clock = clock
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        """Called on the event loop when a callback was accepted."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wakeup.clear()
            try:
                done = await asyncio.to_thread(self.process_batch)
            except Exception as exc:  # the database is away: try again shortly
                log.warning("processor pass failed", error=f"{type(exc).__name__}: {exc}")
                done = 0
            if done:
                continue
            waiters = [
                asyncio.ensure_future(self._wakeup.wait()),
                asyncio.ensure_future(stop.wait()),
            ]
            _, pending = await asyncio.wait(
                waiters, timeout=IDLE_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()

    def process_batch(self) -> int:
        """Process up to `batch` pending events; returns how many were taken."""
        directory = self._directory.get()
        with transaction(self._runtime.sessions) as session:
            query = (
                select(EventRow)
                .where(EventRow.state == "pending")
                .order_by(EventRow.id)
                .limit(self._batch)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            events = list(session.scalars(query))
            now = self._clock()
            for event in events:
                savepoint = session.begin_nested()
                try:
                    outcome = process_event(session, event, directory, now)
                    savepoint.commit()
                except Exception as exc:
                    savepoint.rollback()
                    outcome = Outcome("failed", f"{type(exc).__name__}: {exc}"[:500])
                    log.error("event processing failed", event_id=event.id, error=outcome.reason)
                self._record(event, outcome, now)
            if self._metrics is not None:
                remaining = session.scalar(
                    select(func.count()).select_from(EventRow).where(EventRow.state == "pending")
                )
                self._metrics.pending_events.set(max(0, (remaining or 0) - len(events)))
        return len(events)

    def _record(self, event: EventRow, outcome: Outcome, now: datetime) -> None:
        event.state = outcome.state
        event.state_reason = outcome.reason
        event.processed_at = now
        event.conversation_id = outcome.conversation_id
        if self._metrics is None:
            return
        self._metrics.processed.labels(outcome.state).inc()
        received = event.received_at
        if received.tzinfo is None:
            received = received.replace(tzinfo=UTC)
        self._metrics.processing_lag.observe(max(0.0, (now - received).total_seconds()))
        if outcome.state == "unrouted":
            self._metrics.unrouted.labels(event.service or "-", event.channel or "-").inc()
