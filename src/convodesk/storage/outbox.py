"""The durable outbox: SQL for claiming, finishing and retrying agent replies.

Claiming (`claim_due`), in one short transaction:

1. select rows that are ``pending`` and due, or ``sending`` with an expired lease (a worker
   died mid-send), oldest due first; on PostgreSQL ``FOR UPDATE SKIP LOCKED`` so that
   concurrent workers on any node take disjoint rows;
2. mark them ``sending`` with a lease, count the attempt, move the message to ``sending``;
3. return everything the send needs, so the HTTP call runs outside any transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from convodesk.domain import delivery
from convodesk.services.chain_matcher import apply_parked_reports
from convodesk.storage.tables import ConversationRow, MessageRow, OutboxRow

LEASE_SECONDS = 120.0


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


def claim_due(session: Session, *, now: datetime, limit: int) -> list[SendJob]:
    query = (
        select(OutboxRow, MessageRow, ConversationRow)
        .join(MessageRow, MessageRow.id == OutboxRow.message_id)
        .join(ConversationRow, ConversationRow.id == MessageRow.conversation_id)
        .where(
            or_(
                (OutboxRow.state == "pending") & (OutboxRow.next_attempt_at <= now),
                (OutboxRow.state == "sending") & (OutboxRow.lease_until <= now),
            )
        )
        .order_by(OutboxRow.next_attempt_at, OutboxRow.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=OutboxRow)
    jobs = []
    for outbox, message, conversation in session.execute(query):
        outbox.state = "sending"
        outbox.attempts += 1
        outbox.lease_until = now + timedelta(seconds=LEASE_SECONDS)
        outbox.updated_at = now
        if delivery.advance(message.status, "sending") != message.status:
            message.status, message.status_at = "sending", now
        jobs.append(
            SendJob(
                outbox_id=outbox.id,
                message_id=message.id,
                attempts=outbox.attempts,
                created_at=outbox.created_at,
                kind=message.kind,
                text=message.text,
                content=dict(message.content or {}),
                author_name=message.author_name,
                service=conversation.service,
                app_id=conversation.app_id,
                channel=conversation.channel,
                identity=conversation.identity,
                identity_app_id=conversation.identity_app_id,
                queue=conversation.queue,
            )
        )
    return jobs


def mark_accepted(session: Session, job: SendJob, *, sinch_message_id: str, now: datetime) -> None:
    outbox = session.get(OutboxRow, job.outbox_id)
    message = session.get(MessageRow, job.message_id)
    if outbox is None or message is None:  # deleted meanwhile
        return
    outbox.state, outbox.lease_until, outbox.last_error, outbox.updated_at = "done", None, None, now
    message.sinch_message_id = sinch_message_id
    if delivery.advance(message.status, "accepted") != message.status:
        message.status, message.status_at = "accepted", now
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
