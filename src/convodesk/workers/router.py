"""The router: runs the routing pass (`services/routing.py`) when woken and once a second.

Wake-ups come from the processor (a conversation was opened or reopened, a customer wrote)
and from the agents' actions in the API (ready, accept, reject, pick, transfer, end); the
one-second timer runs offer timeouts, inactivity and queue-position prompts. `wake` may be
called from any thread.

After each pass: its live events are published, the sender is woken when prompts were
queued (`on_prompts`), and ``queue.updated`` goes out for each queue whose waiting count,
oldest waiting conversation, ready or busy agents changed since the last pass.

Several processes may run a router on PostgreSQL: the pass's advisory lock lets one route
at a time, and the others skip that second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from convodesk import logs
from convodesk.metrics import Metrics
from convodesk.runtime import Runtime
from convodesk.services import chat_server, routing
from convodesk.services.directory import DirectoryCache
from convodesk.services.live import LiveEvent
from convodesk.services.routing import PassReport
from convodesk.storage.db import transaction

log = logs.get_logger("convodesk.router")
TIMER_SECONDS = 1.0
# Passes start at least this far apart: under a flood of new conversations every processor
# batch wakes the router, and back-to-back passes would compete with the intake for the database
# and for the process's one core (a pass reads every agent's presence and the queues'
# counts: with 200 agents at 100 messages/s, 20 passes a second took a third of a core;
# docs/benchmarks.md, desktop). An offer or a queue count on a desktop comes up to this
# much later, which nobody sees.
MIN_GAP_SECONDS = 0.2


class Router:
    def __init__(
        self,
        runtime: Runtime,
        directory: DirectoryCache,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        interval: float = TIMER_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        self._runtime = runtime
        self._metrics = metrics
        self._directory = directory
        self._clock = clock
        self._interval = interval
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, tuple[object, ...]] = {}
        self.on_prompts: Callable[[], None] | None = None

    def wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._wakeup.set()
            return
        loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = self._loop.time()
            self._wakeup.clear()
            try:
                report = await asyncio.to_thread(self.run_pass)
            except Exception as exc:  # the database is away, or a lock conflict: next time
                log.warning("routing pass failed", error=f"{type(exc).__name__}: {exc}")
                if self._metrics is not None:
                    self._metrics.routing_passes.labels("failed").inc()
                report = PassReport()
            if report.prompts and self.on_prompts is not None:
                self.on_prompts()
            gap = MIN_GAP_SECONDS - (self._loop.time() - started)
            if gap > 0:
                await asyncio.sleep(gap)
            waiters = [
                asyncio.ensure_future(self._wakeup.wait()),
                asyncio.ensure_future(stop.wait()),
            ]
            _, pending = await asyncio.wait(
                waiters, timeout=self._interval, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()

    def run_pass(self, now: datetime | None = None) -> PassReport:
        """One routing pass, committed and published; `now` for tests."""
        now = now or self._clock()
        directory = self._directory.get()
        live = self._runtime.live
        with transaction(self._runtime.sessions) as session:
            report = routing.run_pass(session, directory, now, events=live.wants_events)
        if self._metrics is not None:
            self._metrics.routing_passes.labels("skipped" if report.skipped else "done").inc()
            self._metrics.offers.labels("made").inc(report.offers)
            self._metrics.offers.labels("expired").inc(report.expired)
        if report.offers or report.expired or report.closed:
            log.info(
                "routed",
                offers=report.offers,
                expired=report.expired,
                closed=report.closed,
                prompts=report.prompts,
            )
        if report.skipped or not live.wants_events:
            return report
        events = report.events + self._queue_changes(now)
        if events:
            live.publish(events)
        return report

    def _queue_changes(self, now: datetime) -> list[LiveEvent]:
        changed = []
        for event in chat_server.queue_events(self._runtime, None, now):
            data = event.data
            longest = data["longest_wait_seconds"]
            oldest = round(now.timestamp() - longest) if data["waiting"] else None
            key = (data["waiting"], data["agents_ready"], data["agents_busy"], oldest)
            if self._queues.get(data["queue"]) != key:
                self._queues[data["queue"]] = key
                changed.append(event)
        return changed
