"""The outbox's claims and leases (storage/outbox.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from convodesk.storage import db, outbox
from convodesk.storage.tables import DeliveryReportRow, MessageRow, OutboxRow
from tests.support.factories import make_conversation, make_message

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _reply(
    session: Session, *, state: str = "pending", due: datetime = NOW, **outbox_values: object
) -> int:
    conversation = make_conversation(session)
    message = make_message(
        session, conversation, direction="outbound", sinch_message_id=None, status="pending"
    )
    values: dict[str, object] = {"attempts": 0, **outbox_values}
    row = OutboxRow(
        message_id=message.id,
        state=state,
        next_attempt_at=due,
        created_at=NOW,
        updated_at=NOW,
        **values,
    )
    session.add(row)
    session.flush()
    return message.id


def test_claim_takes_expired_leases_first_then_the_oldest_due(engine: Engine) -> None:
    sessions = db.make_session_factory(engine)
    with db.transaction(sessions) as session:
        later = _reply(session, due=NOW - timedelta(seconds=1))
        older = _reply(session, due=NOW - timedelta(seconds=5))
        _reply(session, due=NOW + timedelta(seconds=5))  # not due yet
        _reply(session, state="sending", lease_until=NOW + timedelta(seconds=30))  # held
        dead_worker = _reply(
            session, state="sending", lease_until=NOW - timedelta(seconds=1), attempts=1
        )
    with db.transaction(sessions) as session:
        jobs = outbox.claim_due(session, now=NOW, limit=2, lease_seconds=7)
    assert [j.message_id for j in jobs] == [dead_worker, older]
    assert [j.attempts for j in jobs] == [2, 1]
    with db.transaction(sessions) as session:
        rows = {r.message_id: r for r in session.scalars(select(OutboxRow))}
        statuses = dict(session.execute(select(MessageRow.id, MessageRow.status)).all())
    assert rows[older].state == "sending"
    lease = rows[older].lease_until
    assert lease is not None
    assert lease.replace(tzinfo=UTC) == NOW + timedelta(seconds=7)
    assert rows[later].state == "pending"
    assert statuses[older] == "sending"
    with db.transaction(sessions) as session:
        assert [j.message_id for j in outbox.claim_due(session, now=NOW, limit=5)] == [later]
        assert outbox.claim_due(session, now=NOW, limit=5) == []


def test_renewing_a_lease_keeps_the_row_from_other_workers(engine: Engine) -> None:
    sessions = db.make_session_factory(engine)
    with db.transaction(sessions) as session:
        held = _reply(session)
        finished = _reply(session)
    with db.transaction(sessions) as session:
        jobs = outbox.claim_due(session, now=NOW, limit=5, lease_seconds=5)
    by_message = {j.message_id: j for j in jobs}
    with db.transaction(sessions) as session:
        outbox.mark_accepted(session, by_message[finished], sinch_message_id="01SINCH", now=NOW)
    with db.transaction(sessions) as session:
        renewed = outbox.renew_leases(
            session, [j.outbox_id for j in jobs], until=NOW + timedelta(seconds=65)
        )
    assert renewed == 1  # the finished row is left alone
    with db.transaction(sessions) as session:
        assert outbox.claim_due(session, now=NOW + timedelta(seconds=60), limit=5) == []
        taken = outbox.claim_due(session, now=NOW + timedelta(seconds=66), limit=5)
    assert [j.message_id for j in taken] == [held]
    assert taken[0].attempts == 2


def test_accepting_a_batch_applies_reports_that_came_first(engine: Engine) -> None:
    sessions = db.make_session_factory(engine)
    with db.transaction(sessions) as session:
        first, second = _reply(session), _reply(session)
        session.add(
            DeliveryReportRow(sinch_message_id="01SECOND", status="DELIVERED", received_at=NOW)
        )
    with db.transaction(sessions) as session:
        jobs = {j.message_id: j for j in outbox.claim_due(session, now=NOW, limit=5)}
    with db.transaction(sessions) as session:
        outbox.mark_accepted_many(
            session, [(jobs[first], "01FIRST"), (jobs[second], "01SECOND")], now=NOW
        )
    with db.transaction(sessions) as session:
        messages = {m.id: m for m in session.scalars(select(MessageRow))}
        states = set(session.scalars(select(OutboxRow.state)))
        applied = session.scalars(select(DeliveryReportRow.applied)).all()
    assert (messages[first].status, messages[first].sinch_message_id) == ("accepted", "01FIRST")
    assert (messages[second].status, messages[second].sinch_message_id) == (
        "DELIVERED",
        "01SECOND",
    )
    assert states == {"done"}
    assert applied == [True]


def test_accepting_never_moves_a_status_back(engine: Engine) -> None:
    sessions = db.make_session_factory(engine)
    with db.transaction(sessions) as session:
        message_id = _reply(session)
    with db.transaction(sessions) as session:
        (job,) = outbox.claim_due(session, now=NOW, limit=5)
        message = session.get(MessageRow, message_id)
        assert message is not None
        message.status = "READ"  # a receipt matched by metadata before the answer
    with db.transaction(sessions) as session:
        outbox.mark_accepted(session, job, sinch_message_id="01LATE", now=NOW)
    with db.transaction(sessions) as session:
        message = session.get(MessageRow, message_id)
        assert message is not None
        assert (message.status, message.sinch_message_id) == ("READ", "01LATE")
