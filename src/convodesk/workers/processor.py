"""The processor: runs the Chain Matcher over accepted callbacks, oldest first.

Claiming: one transaction takes up to `batch` pending events in id order (on PostgreSQL
with ``FOR UPDATE SKIP LOCKED``, so two processes never take the same event), processes
them, records the outcome on each event, and commits. A crash before the commit leaves
the events pending; processing is idempotent, so doing them again is harmless.

Processing: consecutive inbound messages are threaded together, a few statements for the
whole run (`chain_matcher.thread_inbound_run`: one query for the open conversations of all
of them, batched inserts), which is what makes the processor fast enough
(docs/benchmarks.md). Every other event gets its own savepoint. A run that fails is rolled
back to its savepoint and replayed one event at a time, so in every case one bad event is
marked ``failed`` with the reason and the others go on. A database error that is not the
event's fault (a lost connection, a deadlock, SQLite busy: `_transient`) fails nothing: the
whole batch is rolled back and tried again, up to `MAX_TRANSIENT_FAILURES` times per event.

Order: events are applied in the order they were stored (id order), so the messages of one
conversation keep their order. Within one process the batches follow one another. Across
several processor processes on PostgreSQL, the batches of two processes overlap in time:
a later message of a customer could be threaded (and numbered) before an earlier one that
another process holds. So a process takes an event only when no *older* pending event of
the same identity lies outside its batch (`_in_order`): such an event is held by another
process (or committed after our claim), and the identity's events in this batch are left
pending (`deferred`) for a later pass, after that other process has committed. The oldest
pending event of an identity is always taken by whoever holds it, so every identity makes
progress. On SQLite one processing transaction runs at a time (``BEGIN IMMEDIATE``).

After each commit: the live events of the batch are published (new messages, receipts,
typing; `chat_events.after_processing`), and `on_threaded` (the router's wake-up) is called
when a message opened or reopened a conversation, so that it is routed at once. (A message
to a conversation already open gives the router nothing to do before its next periodic
pass: inactivity is counted from the stored times.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from convodesk import logs
from convodesk.metrics import Metrics
from convodesk.runtime import Runtime
from convodesk.services import chain_matcher, chat_events
from convodesk.services.chain_matcher import Outcome
from convodesk.services.directory import Directory, DirectoryCache
from convodesk.sinch import events as sinch_events
from convodesk.sinch.events import Callback
from convodesk.storage.db import read_transaction, transaction
from convodesk.storage.tables import ConversationRow, EventRow, MessageRow

log = logs.get_logger("convodesk.processor")
IDLE_POLL_SECONDS = 1.0
# A pass that could only defer (another process holds older events of the same customers)
# tries again this soon, rather than after an idle poll.
DEFERRED_RETRY_SECONDS = 0.05
# A database error that says nothing about the event itself (`_transient`) rolls the whole
# batch back, to be tried again; after this many in a row for one event it is marked failed,
# so an error that only looks transient cannot hold the processor up for ever.
MAX_TRANSIENT_FAILURES = 5
# Costs paid per pass rather than per event, so at a few callbacks a second (a batch for
# each) they were most of the processor's CPU (docs/benchmarks.md, "Agent desktops"): the
# sweep of parked receipts (a write transaction; a parked receipt waits at most this much
# longer) and the count of pending events behind the `convodesk_events_pending` gauge.
SWEEP_INTERVAL_SECONDS = 0.25
PENDING_GAUGE_SECONDS = 1.0


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
        self.on_threaded: Callable[[], None] | None = None
        self._threaded = False
        self.deferred = 0  # events the last batch left pending to keep the order
        self._transient_failures: dict[int, int] = {}  # event id -> transient errors in a row
        self._next_pending_count = 0.0  # time.monotonic() of the next pending-events count

    def wake(self) -> None:
        """Called on the event loop when a callback was accepted."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = 0.0
        while not stop.is_set():
            self._wakeup.clear()
            try:
                done = await asyncio.to_thread(self.process_batch)
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_INTERVAL_SECONDS
                    await asyncio.to_thread(self.sweep)
            except Exception as exc:  # the database is away: try again shortly
                log.warning("processor pass failed", error=f"{type(exc).__name__}: {exc}")
                done = 0
            if self._threaded and self.on_threaded is not None:
                self._threaded = False
                self.on_threaded()
            if done:
                continue
            waiters = [
                asyncio.ensure_future(self._wakeup.wait()),
                asyncio.ensure_future(stop.wait()),
            ]
            timeout = DEFERRED_RETRY_SECONDS if self.deferred else IDLE_POLL_SECONDS
            _, pending = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()

    def sweep(self) -> int:
        """Apply delivery reports parked while their send was being committed
        (`chain_matcher.sweep_parked_reports`); returns how many messages moved."""
        with transaction(self._runtime.sessions) as session:
            moved = chain_matcher.sweep_parked_reports(session, self._clock())
            events = (
                chat_events.message_statuses(session, moved)
                if moved and self._runtime.live.wants_events
                else []
            )
        if events:
            self._runtime.live.publish(events)
        return len(moved)

    def process_batch(self) -> int:
        """Process up to `batch` pending events; returns how many were processed (events
        deferred to keep a customer's order, `deferred`, are not counted)."""
        directory = self._directory.get()
        with transaction(self._runtime.sessions) as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            query = (
                select(EventRow)
                .where(EventRow.state == "pending")
                .order_by(EventRow.id)
                .limit(self._batch)
            )
            if postgres:
                query = query.with_for_update(skip_locked=True)
            events = list(session.scalars(query))
            self.deferred = 0
            if postgres:  # several processors may claim at once: keep each customer's order
                events, self.deferred = _in_order(session, events)
            now = self._clock()
            parsed = [chain_matcher.parse_stored(event) for event in events]
            outcomes: list[Outcome] = []
            start = 0
            while start < len(events):
                end = start
                while end < len(events) and _inbound(parsed[end]) is not None:
                    end += 1
                if end > start:  # a run of inbound messages: threaded together
                    outcomes.extend(
                        self._thread_run(
                            session, events[start:end], parsed[start:end], directory, now
                        )
                    )
                    start = end
                else:
                    outcomes.append(
                        self._process_one(session, events[start], parsed[start], directory, now)
                    )
                    start += 1
            processed = []
            for event, outcome in zip(events, outcomes, strict=True):
                self._record(event, outcome, now)
                processed.append(
                    chat_events.Processed(
                        event_id=event.id,
                        trigger=event.trigger,
                        state=outcome.state,
                        conversation_id=outcome.conversation_id,
                        new_message=outcome.reason is None,
                        opened=outcome.opened,
                    )
                )
            if self._metrics is not None and time.monotonic() >= self._next_pending_count:
                self._next_pending_count = time.monotonic() + PENDING_GAUGE_SECONDS
                remaining = session.scalar(
                    select(func.count()).select_from(EventRow).where(EventRow.state == "pending")
                )
                self._metrics.pending_events.set(max(0, (remaining or 0) - len(events)))
        if any(p.opened for p in processed):  # routing has a conversation to admit
            self._threaded = True
        self._publish(processed, now)
        return len(events)

    def _publish(self, processed: list[chat_events.Processed], now: datetime) -> None:
        """The batch's live events, read after its commit; only when someone listens."""
        live = self._runtime.live
        if not processed or not live.wants_events:
            return
        with read_transaction(self._runtime.sessions) as session:
            events = chat_events.after_processing(session, processed, now, live.hears)
        if events:
            live.publish(events)

    def _process_one(
        self,
        session: Session,
        event: EventRow,
        parsed: Callback | Outcome,
        directory: Directory,
        now: datetime,
    ) -> Outcome:
        """One event in its own savepoint: if it fails, it is marked failed; the others go on."""
        if isinstance(parsed, Outcome):
            return parsed
        savepoint = session.begin_nested()
        try:
            outcome = chain_matcher.process_event(session, event, directory, now, parsed)
            savepoint.commit()
        except Exception as exc:
            savepoint.rollback()
            if _transient(exc) and self._retry_later(event.id):
                raise
            outcome = Outcome("failed", f"{type(exc).__name__}: {exc}"[:500])
            log.error("event processing failed", event_id=event.id, error=outcome.reason)
        self._transient_failures.pop(event.id, None)
        return outcome

    def _retry_later(self, event_id: int) -> bool:
        """Count a transient failure of this event; False once it has had its share."""
        if len(self._transient_failures) > 10_000:  # forget events long since processed
            self._transient_failures.clear()
        count = self._transient_failures.get(event_id, 0) + 1
        self._transient_failures[event_id] = count
        if count >= MAX_TRANSIENT_FAILURES:
            self._transient_failures.pop(event_id, None)
            return False
        log.warning(
            "event processing hit a database error; the batch is tried again",
            event_id=event_id,
            attempt=count,
        )
        return True

    def _thread_run(
        self,
        session: Session,
        events: list[EventRow],
        parsed: list[Callback | Outcome],
        directory: Directory,
        now: datetime,
    ) -> list[Outcome]:
        """Consecutive inbound messages, threaded in one go (`thread_inbound_run`); if that
        fails, the same messages one at a time, so only the bad one is marked failed."""
        run = [
            (event, message)
            for event, p in zip(events, parsed, strict=True)
            if (message := _inbound(p)) is not None
        ]
        session.flush()  # the run works in SQL Core: earlier ORM changes must be in first
        savepoint = session.begin_nested()
        try:
            outcomes = chain_matcher.thread_inbound_run(session, run, directory, now)
            savepoint.commit()
        except Exception as exc:
            savepoint.rollback()
            log.warning(
                "threading a run failed; one message at a time",
                events=len(run),
                error=f"{type(exc).__name__}: {exc}"[:500],
            )
            outcomes = [
                self._process_one(session, event, p, directory, now)
                for event, p in zip(events, parsed, strict=True)
            ]
        # Rows changed in Core behind the ORM's back: reload them if touched again.
        for row in list(session.identity_map.values()):
            if isinstance(row, ConversationRow | MessageRow):
                session.expire(row)
        return outcomes

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


def _inbound(parsed: Callback | Outcome) -> sinch_events.InboundMessage | None:
    return parsed.inbound if isinstance(parsed, Callback) else None


def _identity_key(identity: str) -> str:
    """Identities as the Chain Matcher matches them (`normalize_identity`): phone numbers
    with or without ``+`` are one customer. Keys may be coarser than a conversation (the
    same identity on two apps): that only orders more than needed."""
    return identity.removeprefix("+")


def _in_order(session: Session, events: list[EventRow]) -> tuple[list[EventRow], int]:
    """The claimed events that may be processed now, and how many are deferred: those of an
    identity with an older pending event outside this batch (held by another processor, or
    committed after the claim). Read in a statement of its own, so it sees every commit made
    since the claim: an older event that another process has finished no longer blocks."""
    newest: dict[str, int] = {}
    for event in events:
        if event.identity:
            key = _identity_key(event.identity)
            newest[key] = max(newest.get(key, 0), event.id)
    if not newest:
        return events, 0
    ours = {event.id for event in events}
    forms = {form for key in newest for form in (key, f"+{key}")}
    older = session.execute(
        select(EventRow.id, EventRow.identity).where(
            EventRow.state == "pending",
            EventRow.id < max(newest.values()),
            EventRow.identity.in_(forms),
        )
    ).all()
    blocked = {
        key
        for event_id, identity in older
        if identity and event_id not in ours and event_id < newest[key := _identity_key(identity)]
    }
    if not blocked:
        return events, 0
    taken = [e for e in events if not e.identity or _identity_key(e.identity) not in blocked]
    return taken, len(events) - len(taken)


def _transient(exc: BaseException) -> bool:
    """A database error that says nothing about the event: the connection went away, a
    deadlock or serialization conflict, SQLite busy. Marking the event failed for it would
    drop a callback we acknowledged; the batch is rolled back and tried again instead."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)
