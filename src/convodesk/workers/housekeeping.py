"""Periodic upkeep, once an hour (first pass a minute after start):

- the event log: entries older than ``chat_settings.event_retention_days`` (default 30) are
  deleted;
- the attachment store (`services.attachments.cleanup_attachments`): uploads no reply used
  are deleted after 24 hours; files older than ``chat_settings.attachment_retention_days``
  (default 30) are deleted and their rows kept as ``expired`` for the transcript.

Several nodes may run it at once: each batch is its own short transaction, batches lock
what they take, and every step is idempotent. One failing step does not stop the others.
"""

from __future__ import annotations

import asyncio

from convodesk import logs
from convodesk.runtime import Runtime
from convodesk.services import attachments, event_log

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
        await run_once(runtime)


async def run_once(runtime: Runtime) -> None:
    """One pass of every cleanup; failures are logged (the database may be away: next time)."""
    try:
        result = await asyncio.to_thread(event_log.cleanup_events, runtime)
    except Exception as exc:
        log.warning("event cleanup failed", error=f"{type(exc).__name__}: {exc}")
    else:
        if result.deleted:
            log.info(
                "event log cleaned", deleted=result.deleted, older_than_days=result.older_than_days
            )
    try:
        media = await asyncio.to_thread(attachments.cleanup_attachments, runtime)
    except Exception as exc:
        log.warning("attachment cleanup failed", error=f"{type(exc).__name__}: {exc}")
    else:
        if media.expired or media.unused_deleted:
            log.info(
                "attachments cleaned",
                expired=media.expired,
                unused_uploads_deleted=media.unused_deleted,
                retention_days=media.retention_days,
            )
