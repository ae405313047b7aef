"""Periodic upkeep: deletes event-log entries older than the retention
(``chat_settings.event_retention_days``, default 30) once an hour. Several nodes may run
it at once: each deletion batch is its own short transaction and deleting is idempotent."""

from __future__ import annotations

import asyncio

from convodesk import logs
from convodesk.runtime import Runtime
from convodesk.services import event_log

log = logs.get_logger("convodesk.housekeeping")
INTERVAL_SECONDS = 3600.0
FIRST_RUN_SECONDS = 60.0


async def run(runtime: Runtime, stop: asyncio.Event, *, interval: float = INTERVAL_SECONDS) -> None:
    delay = min(FIRST_RUN_SECONDS, interval)
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
            return
        except TimeoutError:
            pass
        delay = interval
        try:
            result = await asyncio.to_thread(event_log.cleanup_events, runtime)
        except Exception as exc:  # the database is away: next time
            log.warning("event cleanup failed", error=f"{type(exc).__name__}: {exc}")
            continue
        if result.deleted:
            log.info(
                "event log cleaned", deleted=result.deleted, older_than_days=result.older_than_days
            )
