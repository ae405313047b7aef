"""`db.read_transaction`: reads that never wait for the writer, on both databases."""

from __future__ import annotations

import time

from sqlalchemy import Engine, func, select

from convodesk.storage import db, migrate
from convodesk.storage.tables import QueueRow


def test_a_read_transaction_reads_the_committed_state_while_a_write_is_open(
    engine: Engine,
) -> None:
    migrate.upgrade(engine)
    sessions = db.make_session_factory(engine)
    with db.transaction(sessions) as session:
        session.add(QueueRow(name="support", type="chat"))
    with db.transaction(sessions) as writer:  # holds SQLite's write lock until the end
        writer.add(QueueRow(name="sales", type="chat"))
        writer.flush()
        started = time.monotonic()
        with db.read_transaction(sessions) as reader:
            names = reader.scalars(select(QueueRow.name)).all()
        waited = time.monotonic() - started
    assert names == ["support"]  # the committed state, not the open write
    assert waited < 1.0  # not the 30 s busy timeout a second writer would wait for
    with db.read_transaction(sessions) as reader:
        assert reader.scalar(select(func.count()).select_from(QueueRow)) == 2
