"""The durable outbox: SQL for claiming, finishing and retrying agent replies.

Claiming (`claim_due`), in one short transaction:

1. select rows that are ``pending`` and due, or ``sending`` with an expired lease (a worker
   died mid-send), oldest due first; on PostgreSQL ``FOR UPDATE SKIP LOCKED`` so that
   concurrent workers on any node take disjoint rows;
2. mark them ``sending`` with a lease, count the attempt, move the message to ``sending``;
3. return everything the send needs, so the HTTP call runs outside any transaction.

The lease (``send_lease_seconds``, default 60 s) is how long after its worker's last sign of
life a claimed row may be taken over. A live worker renews the leases of everything it holds
(`renew_leases`) every quarter of the lease, so a send may wait for rate-limit tokens or a slow
Sinch for as long as it takes without another worker sending it as well; a worker that died
(kill -9, power loss) stops renewing, and its rows are due again at most one lease later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Row, Table, bindparam, case, or_, select, update
from sqlalchemy.orm import Session

from convodesk.domain import delivery
from convodesk.services.chain_matcher import apply_parked_reports
from convodesk.storage.tables import ConversationRow, DeliveryReportRow, MessageRow, OutboxRow

DEFAULT_LEASE_SECONDS = 60.0


@dataclass(frozen=True, kw_only=True)
class SendJob:
    outbox_id: int
    message_id: int
    attempts: int
    created_at: datetime
    kind: str
    text: str | None
    content: dict[str, Any]
    author_name: str | None
    service: str
    app_id: str
    channel: str
    identity: str
    identity_app_id: str | None
    queue: str


def claim_due(
    session: Session, *, now: datetime, limit: int, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> list[SendJob]:
    """Claim up to ``limit`` due rows (module docstring): rows whose lease ran out first, then
    pending ones. Two SELECTs, each an index range scan that stops at ``limit`` (one query
    with an OR of both would sort every pending row first), and two UPDATEs."""
    rows = _due(session, (OutboxRow.state == "sending") & (OutboxRow.lease_until <= now), limit)
    if len(rows) < limit:
        pending = (OutboxRow.state == "pending") & (OutboxRow.next_attempt_at <= now)
        rows += _due(session, pending, limit - len(rows))
    if not rows:
        return []
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.id.in_([r.id for r in rows]))
        .values(
            state="sending",
            attempts=OutboxRow.attempts + 1,
            lease_until=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(MessageRow)
        .where(MessageRow.id.in_([r.message_id for r in rows]), _below("sending"))
        .values(status="sending", status_at=now)
        .execution_options(synchronize_session=False)
    )
    return [
        SendJob(
            outbox_id=r.id,
            message_id=r.message_id,
            attempts=r.attempts + 1,
            created_at=r.created_at,
            kind=r.kind,
            text=r.text,
            content=dict(r.content or {}),
            author_name=r.author_name,
            service=r.service,
            app_id=r.app_id,
            channel=r.channel,
            identity=r.identity,
            identity_app_id=r.identity_app_id,
            queue=r.queue,
        )
        for r in rows
    ]


def _due(session: Session, where: ColumnElement[bool], limit: int) -> list[Row[Any]]:
    """Oldest due first; on PostgreSQL locked, skipping rows another worker is claiming."""
    query = (
        select(
            OutboxRow.id,
            OutboxRow.message_id,
            OutboxRow.attempts,
            OutboxRow.created_at,
            MessageRow.kind,
            MessageRow.text,
            MessageRow.content,
            MessageRow.author_name,
            ConversationRow.service,
            ConversationRow.app_id,
            ConversationRow.channel,
            ConversationRow.identity,
            ConversationRow.identity_app_id,
            ConversationRow.queue,
        )
        .join(MessageRow, MessageRow.id == OutboxRow.message_id)
        .join(ConversationRow, ConversationRow.id == MessageRow.conversation_id)
        .where(where)
        .order_by(OutboxRow.next_attempt_at, OutboxRow.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=OutboxRow)
    return list(session.execute(query).all())


def _below(status: str) -> ColumnElement[bool]:
    """The message's status ranks below ``status`` (`delivery.advance` would move it)."""
    return MessageRow.status.not_in(delivery.ORDER[delivery.ORDER.index(status) :])


def renew_leases(session: Session, outbox_ids: list[int], *, until: datetime) -> int:
    """Extend the lease of these rows, those still ``sending``, to ``until`` (one statement);
    returns how many were extended."""
    if not outbox_ids:
        return 0
    result = session.execute(
        update(OutboxRow)
        .where(OutboxRow.id.in_(outbox_ids), OutboxRow.state == "sending")
        .values(lease_until=until)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


_messages = cast(Table, MessageRow.__table__)
# Equalities, not IN: an IN list is an "expanding" parameter, which executemany refuses.
_at_or_past_accepted = or_(
    *(
        _messages.c.status == status
        for status in delivery.ORDER[delivery.ORDER.index(delivery.ACCEPTED) :]
    )
)
_accept_message = (
    update(_messages)
    .where(_messages.c.id == bindparam("m_id"))
    .values(
        sinch_message_id=bindparam("m_sinch_id"),
        status=case(
            (_at_or_past_accepted, _messages.c.status),
            else_=delivery.ACCEPTED,
        ),
        status_at=case(
            (_at_or_past_accepted, _messages.c.status_at),
            else_=bindparam("m_at", type_=_messages.c.status_at.type),
        ),
    )
)
"""Per message: its Sinch id, and ``accepted`` unless its status is there or beyond already
(`delivery.advance`); one statement for a whole batch (executemany)."""


def release(session: Session, outbox_ids: list[int], *, now: datetime) -> None:
    """Give claimed rows back unsent (a worker stopping): ``pending`` and due now, the claim's
    attempt not counted. Rows no longer ``sending`` are left alone."""
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.id.in_(outbox_ids), OutboxRow.state == "sending")
        .values(
            state="pending",
            lease_until=None,
            next_attempt_at=now,
            attempts=OutboxRow.attempts - 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )


def mark_accepted(session: Session, job: SendJob, *, sinch_message_id: str, now: datetime) -> None:
    mark_accepted_many(session, [(job, sinch_message_id)], now=now)


def mark_accepted_many(
    session: Session, accepted: list[tuple[SendJob, str]], *, now: datetime
) -> None:
    """Sinch accepted these sends (job, Sinch message id): the rows are ``done``, the messages
    learn their Sinch ids and move to ``accepted`` (never back), and delivery reports that
    arrived before the answer are applied. A row deleted meanwhile is skipped."""
    if not accepted:
        return
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.id.in_([job.outbox_id for job, _ in accepted]))
        .values(state="done", lease_until=None, last_error=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        _accept_message,
        [
            {"m_id": job.message_id, "m_sinch_id": sinch_id, "m_at": now}
            for job, sinch_id in accepted
        ],
    )
    message_ids = [job.message_id for job, _ in accepted]
    parked = session.scalars(
        select(MessageRow.id)
        .join(DeliveryReportRow, DeliveryReportRow.sinch_message_id == MessageRow.sinch_message_id)
        .where(MessageRow.id.in_(message_ids), DeliveryReportRow.applied.is_(False))
        .distinct()
    ).all()
    for message_id in parked:
        message = session.get(MessageRow, message_id, populate_existing=True)
        if message is not None:
            apply_parked_reports(session, message, now)


def mark_retry(session: Session, job: SendJob, *, error: str, at: datetime, now: datetime) -> None:
    outbox = session.get(OutboxRow, job.outbox_id)
    message = session.get(MessageRow, job.message_id)
    if outbox is None or message is None:
        return
    outbox.state, outbox.next_attempt_at, outbox.lease_until = "pending", at, None
    outbox.last_error, outbox.updated_at = error[:1000], now
    message.reason_text = f"retrying: {error}"[:1000]


def mark_failed(
    session: Session, job: SendJob, *, state: str, code: str, error: str, now: datetime
) -> None:
    """`state` is ``failed`` (Sinch refused it for good) or ``dead`` (retries exhausted)."""
    outbox = session.get(OutboxRow, job.outbox_id)
    message = session.get(MessageRow, job.message_id)
    if outbox is None or message is None:
        return
    outbox.state, outbox.lease_until, outbox.last_error, outbox.updated_at = (
        state,
        None,
        error[:1000],
        now,
    )
    message.status, message.status_at = "FAILED", now
    message.reason_code, message.reason_text = code, error[:1000]


def list_outbox(
    session: Session, *, states: tuple[str, ...], limit: int
) -> list[tuple[OutboxRow, MessageRow]]:
    query = (
        select(OutboxRow, MessageRow)
        .join(MessageRow, MessageRow.id == OutboxRow.message_id)
        .where(OutboxRow.state.in_(states))
        .order_by(OutboxRow.id.desc())
        .limit(limit)
    )
    return [(o, m) for o, m in session.execute(query)]


def retry(session: Session, outbox_ids: list[int] | None, *, now: datetime) -> int:
    """Put dead (or failed) sends back in the queue; an explicit operator action, so the
    message's status is reset to ``pending`` even though statuses otherwise never go back."""
    query = select(OutboxRow, MessageRow).join(MessageRow, MessageRow.id == OutboxRow.message_id)
    query = query.where(OutboxRow.state.in_(("dead", "failed")))
    if outbox_ids is not None:
        query = query.where(OutboxRow.id.in_(outbox_ids))
    count = 0
    for outbox, message in session.execute(query):
        outbox.state, outbox.next_attempt_at, outbox.attempts = "pending", now, 0
        outbox.created_at, outbox.updated_at, outbox.last_error = now, now, None
        message.status, message.status_at, message.reason_code, message.reason_text = (
            "pending",
            now,
            None,
            None,
        )
        count += 1
    return count
