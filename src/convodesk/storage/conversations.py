"""SQL for reading conversations and their messages (the read API and the agent desktop).

Conversations page newest first by id; messages page oldest first (a transcript reads
down). Each message comes with its attachments, loaded for the whole page in one second
query rather than one per message.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from convodesk.storage.tables import (
    AgentQueueRow,
    AgentRow,
    AttachmentRow,
    ConversationRow,
    MessageRow,
    OfferRow,
    QueueRow,
)

MAX_CONVERSATION_ID = 2**31 - 1  # INTEGER on PostgreSQL: a larger id cannot even be bound
MAX_MESSAGE_ID = 2**63 - 1  # BIGINT


@dataclass(frozen=True, kw_only=True)
class MessageWithAttachments:
    message: MessageRow
    attachments: list[AttachmentRow]


def list_conversations(
    session: Session,
    *,
    queue: str | None = None,
    status: str | None = None,
    channel: str | None = None,
    identity: str | None = None,
    assigned_agent: str | None = None,
    queues_allowed: Collection[str] | None = None,
    also_assigned_to: str | None = None,
    limit: int,
    before_id: int | None = None,
) -> list[ConversationRow]:
    """Newest first (by id). `queues_allowed` None means every queue; an empty collection
    means none (an agent in no queue sees nothing), except the conversations assigned to
    `also_assigned_to` (the caller's agent), which it sees whatever their queue."""
    if queues_allowed is not None and not queues_allowed and also_assigned_to is None:
        return []
    stmt = select(ConversationRow)
    for column, value in (
        (ConversationRow.queue, queue),
        (ConversationRow.status, status),
        (ConversationRow.channel, channel),
        (ConversationRow.identity, identity),
        (ConversationRow.assigned_agent, assigned_agent),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if queues_allowed is not None:
        visible: ColumnElement[bool] = ConversationRow.queue.in_(sorted(queues_allowed))
        if also_assigned_to is not None:
            visible = or_(visible, ConversationRow.assigned_agent == also_assigned_to)
        stmt = stmt.where(visible)
    if before_id is not None:
        stmt = stmt.where(ConversationRow.id < before_id)
    return list(session.scalars(stmt.order_by(ConversationRow.id.desc()).limit(limit)))


def get_conversation(session: Session, conversation_id: int) -> ConversationRow | None:
    return session.get(ConversationRow, conversation_id)


def list_messages(
    session: Session, conversation_id: int, *, limit: int, after_id: int | None = None
) -> list[MessageWithAttachments]:
    """Oldest first (by id); `after_id` is the keyset cursor: only ids above it."""
    stmt = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
    if after_id is not None:
        stmt = stmt.where(MessageRow.id > after_id)
    messages = list(session.scalars(stmt.order_by(MessageRow.id).limit(limit)))
    by_message: dict[int, list[AttachmentRow]] = {m.id: [] for m in messages}
    if by_message:
        rows = session.scalars(
            select(AttachmentRow)
            .where(AttachmentRow.message_id.in_(list(by_message)))
            .order_by(AttachmentRow.id)
        )
        for row in rows:
            if row.message_id is not None:  # always: selected by message id
                by_message[row.message_id].append(row)
    return [MessageWithAttachments(message=m, attachments=by_message[m.id]) for m in messages]


def offered_to(session: Session, conversation_id: int, login: str) -> bool:
    """Whether the conversation has an outstanding offer to this agent."""
    found = session.scalar(
        select(OfferRow.id)
        .join(AgentRow, AgentRow.id == OfferRow.agent_id)
        .where(
            OfferRow.conversation_id == conversation_id,
            OfferRow.state == "offered",
            AgentRow.login == login,
        )
        .limit(1)
    )
    return found is not None


def queues_of_agent(session: Session, login: str) -> set[str]:
    """The names of the queues the agent belongs to (empty for an unknown login)."""
    stmt = (
        select(QueueRow.name)
        .join(AgentQueueRow, AgentQueueRow.queue_id == QueueRow.id)
        .join(AgentRow, AgentRow.id == AgentQueueRow.agent_id)
        .where(AgentRow.login == login)
    )
    return set(session.scalars(stmt))
