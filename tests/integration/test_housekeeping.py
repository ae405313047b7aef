from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from convodesk.storage.db import transaction
from convodesk.storage.tables import EventRow
from convodesk.workers import housekeeping
from tests.support.apps import make_runtime
from tests.support.factories import make_event


def test_housekeeping_deletes_old_events_only(database_url: str, tmp_path: Path) -> None:
    runtime = make_runtime(database_url, tmp_path)
    try:
        with transaction(runtime.sessions) as session:
            old = make_event(
                session, received_at=datetime.now(UTC) - timedelta(days=31), state="done"
            )
            new = make_event(
                session, received_at=datetime.now(UTC) - timedelta(days=1), state="done"
            )
            old_id, new_id = old.id, new.id

        async def one_pass() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(housekeeping.run(runtime, stop, interval=0.05))
            await asyncio.sleep(0.3)
            stop.set()
            await task

        asyncio.run(one_pass())
        with transaction(runtime.sessions) as session:
            ids = set(session.scalars(select(EventRow.id)))
        assert new_id in ids
        assert old_id not in ids
    finally:
        runtime.close()
