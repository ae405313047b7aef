"""The database gauges of ``/metrics``: every `SAMPLE_SECONDS`, one short read-only
transaction reads what an operator watches (waiting conversations per queue and the oldest
one's wait, ready and busy agents, outbox rows by state and the oldest late send, callbacks
the processor has not threaded, outstanding offers) into `metrics.DatabaseGauges`.

Sampled rather than read at scrape time: the web app answers ``/metrics`` on its event loop,
which a slow or unreachable database must not hold up. Every query is an index range scan
over rows that are few by nature (waiting, pending, outstanding, failed); ``done`` outbox rows
and closed conversations, which grow without end, are never counted. Every process with
workers samples; the values are the same on every node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from convodesk import logs
from convodesk.metrics import OUTBOX_STATES, DatabaseSample, Metrics, QueueSample
from convodesk.runtime import Runtime
from convodesk.services.event_log import as_utc
from convodesk.storage import chat
from convodesk.storage.tables import EventRow, OfferRow, OutboxRow

log = logs.get_logger("convodesk.gauges")
SAMPLE_SECONDS = 5.0


def read_sample(session: Session, now: datetime) -> DatabaseSample:
    queues = {
        stats.queue: QueueSample(
            waiting=stats.waiting,
            oldest_waiting_seconds=_age(stats.oldest_waiting_since, now),
            agents_ready=stats.agents_ready,
            agents_busy=stats.agents_busy,
        )
        for stats in chat.queue_stats(session)
    }
    outbox = {
        state: int(count)
        for state, count in session.execute(
            select(OutboxRow.state, func.count())
            .where(OutboxRow.state.in_(OUTBOX_STATES))
            .group_by(OutboxRow.state)
        ).all()
    }
    oldest_due = session.scalar(
        select(func.min(OutboxRow.next_attempt_at)).where(
            OutboxRow.state == "pending", OutboxRow.next_attempt_at <= now
        )
    )
    pending = session.scalar(
        select(func.count()).select_from(EventRow).where(EventRow.state == "pending")
    )
    oldest_pending = session.scalar(
        select(EventRow.received_at)
        .where(EventRow.state == "pending")
        .order_by(EventRow.id)
        .limit(1)
    )
    offers = session.scalar(
        select(func.count()).select_from(OfferRow).where(OfferRow.state == "offered")
    )
    return DatabaseSample(
        taken_at=now.timestamp(),
        queues=queues,
        outbox=outbox,
        outbox_oldest_due_seconds=_age(oldest_due, now),
        events_pending=int(pending or 0),
        events_oldest_pending_seconds=_age(oldest_pending, now),
        offers_outstanding=int(offers or 0),
    )


def _age(since: datetime | None, now: datetime) -> float:
    return 0.0 if since is None else max(0.0, (now - as_utc(since)).total_seconds())


class GaugeSampler:
    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        *,
        interval: float = SAMPLE_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._runtime = runtime
        self._metrics = metrics
        self._interval = interval
        self._clock = clock

    def sample(self) -> DatabaseSample:
        """Read the gauges now and publish them (tests call this directly)."""
        with self._runtime.sessions() as session:
            sample = read_sample(session, self._clock())
        self._metrics.database.update(sample)
        return sample

    async def run(self, stop: asyncio.Event) -> None:
        failing = False
        while not stop.is_set():
            started = time.monotonic()
            try:
                await asyncio.to_thread(self.sample)
            except Exception as exc:  # the database is away: the timestamp gauge goes stale
                if not failing:
                    log.warning("metrics sampling failed", error=f"{type(exc).__name__}: {exc}")
                failing = True
            else:
                failing = False
            wait = max(0.0, self._interval - (time.monotonic() - started))
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass
