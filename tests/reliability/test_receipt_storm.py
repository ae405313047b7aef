"""Receipts duplicated and shuffled, for many replies at once: no status ever moves back.

The whole path runs: replies through the API and the outbox, the sender against the
emulator, the emulator's delivery reports back through the signed webhook, the intake and
the processor. The emulator delivers every report twice and each message's reports in
reverse order (READ first), and several replies are in flight at once, so reports also race
the sender's own commit of the Sinch message id (they are parked, then applied). A watcher
reads every message's status over and over while this happens: a status it has seen must
never be followed by a lower one, and every reply ends at READ with exactly one receipt per
status in its history.
"""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import select

from convodesk.domain import delivery
from convodesk.storage.db import read_transaction, transaction
from convodesk.storage.tables import DeliveryReportRow, EventRow, MessageRow
from tests.integration.outbound import test_replies_e2e as e2e
from tests.support.apps import APP_EU

stack = e2e.stack  # the app with its workers on a real socket, the emulator, an admin token

CUSTOMERS = [f"4670100{n:04d}" for n in range(4)]
REPLIES_EACH = 25


NAMES = {delivery.rank(s): s for s in delivery.ORDER}


class Watcher(threading.Thread):
    """Reads the statuses of the given messages until stopped; records every regression."""

    def __init__(self, stack: e2e.Stack, ids: list[int]) -> None:
        super().__init__(name="status-watcher", daemon=True)
        self.stack, self.ids = stack, ids
        self.seen: dict[int, int] = {}
        self.regressions: list[tuple[int, str, str]] = []
        self.reads = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.read()
                self.stop.wait(0.01)
            self.read()  # once more after the run: the replies added since the last read
        except BaseException as exc:  # shown by the test, not lost with the thread
            self.error = exc
            raise

    def read(self) -> None:
        # A reader's transaction (on SQLite a deferred BEGIN): it never waits for the
        # workers' write lock, so it keeps reading throughout the run.
        with read_transaction(self.stack.runtime.sessions) as session:
            query = select(MessageRow.id, MessageRow.status).where(MessageRow.id.in_(self.ids))
            rows = session.execute(query).all()
        for message_id, status in rows:
            rank = delivery.rank(status)
            assert rank is not None, f"message {message_id} has status {status!r}"
            before = self.seen.get(message_id, -1)
            if rank < before:
                self.regressions.append((message_id, NAMES[before], status))
            self.seen[message_id] = max(before, rank)
        self.reads += 1


def test_duplicated_and_shuffled_receipts_never_move_a_status_back(stack: e2e.Stack) -> None:
    conversations = [e2e.customer_writes(stack, APP_EU, "WHATSAPP", c) for c in CUSTOMERS]
    faults = {"duplicate_callbacks": 1.0, "reorder_callbacks": True, "seed": 5}
    assert stack.emulator.post("/_emulator/faults", json=faults).status_code == 200

    ids: list[int] = []
    watcher = Watcher(stack, ids)
    for n in range(REPLIES_EACH):
        for conversation in conversations:
            answer = stack.api.post(
                f"/api/v1/conversations/{conversation}/messages", json={"text": f"reply {n}"}
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        if n == 0:
            watcher.start()  # watching while most replies are still being sent
    try:
        # every report applied: three per reply (queued, delivered, read), whatever the status
        e2e.wait_for(lambda: applied_reports(stack, ids) == 3 * len(ids), timeout=90)
    finally:
        watcher.stop.set()
        watcher.join()

    assert watcher.error is None, watcher.error
    assert watcher.regressions == []
    assert set(statuses(stack, ids).values()) == {"READ"}
    assert watcher.reads > 10  # it really watched the run, not just its end
    assert set(watcher.seen) == set(ids)
    with transaction(stack.runtime.sessions) as session:
        sinch_ids = dict(
            session.execute(
                select(MessageRow.sinch_message_id, MessageRow.id).where(MessageRow.id.in_(ids))
            ).all()
        )
        reports = session.execute(
            select(DeliveryReportRow.sinch_message_id, DeliveryReportRow.status)
        ).all()
        outcomes = Counter(session.scalars(select(EventRow.outcome)).all())
    assert None not in sinch_ids
    assert len(sinch_ids) == len(ids)
    history = Counter((sinch_ids[sid], status) for sid, status in reports if sid in sinch_ids)
    for message_id in ids:
        for status in ("QUEUED_ON_CHANNEL", "DELIVERED", "READ"):
            assert history[(message_id, status)] == 1, (message_id, status)
    # every report was delivered at least twice; the copies were recognised, not applied
    assert outcomes["duplicate"] >= 3 * len(ids)


def statuses(stack: e2e.Stack, ids: list[int]) -> dict[int, str]:
    with transaction(stack.runtime.sessions) as session:
        query = select(MessageRow.id, MessageRow.status).where(MessageRow.id.in_(ids))
        return dict(session.execute(query).all())


def applied_reports(stack: e2e.Stack, ids: list[int]) -> int:
    with transaction(stack.runtime.sessions) as session:
        sent = select(MessageRow.sinch_message_id).where(MessageRow.id.in_(ids))
        query = select(DeliveryReportRow.id).where(
            DeliveryReportRow.applied.is_(True), DeliveryReportRow.sinch_message_id.in_(sent)
        )
        return len(session.scalars(query).all())
