"""The live events of the Chat Server (`services/live.py`), built from rows.

Every event's data carries ids (``conversation_id``, ``offer_id`` ...) and, where the desktop
shows an object, the object in the same shape as the API answers (a conversation as in
``GET /api/v1/conversations/{id}``, a message as in ``.../messages``). Types:

- ``message.created`` {conversation_id, message}
- ``message.status`` {conversation_id, message_id, status, status_at, reason_code,
  reason_text, failure_text}
- ``conversation.updated`` {conversation}
- ``offer.created`` {offer}; ``offer.closed`` {offer_id, conversation_id, state}
- ``queue.updated`` {queue, priority, waiting, longest_wait_seconds, agents_ready,
  agents_busy} (an overview row)
- ``presence.updated`` {agent, state, since}
- ``typing`` {conversation_id, until} (until null: the customer stopped)

Audience (admins see everything):

- ``conversation.updated`` goes to the agents of the conversation's queue and to its
  assigned agent: they keep their lists and queue views right with it. After an inbound
  message it goes to the queue only when the message opened (or reopened) the conversation;
  otherwise to the assigned agent alone, for the WhatsApp window and the activity time.
- the events *inside* a conversation (``message.created``, ``message.status``, ``typing``)
  go to its assigned agent only. The other agents of the queue have nothing to show for
  them (a waiting conversation appears in counts and offers, not in a transcript), and
  sending them every message of every chat of the queue made the stream the server's main
  cost: with 50 agents, 1,000 messages a second became 100,000 deliveries
  (docs/benchmarks.md, desktop). A desktop that opens a conversation fetches its messages;
  one assigned since hears of everything committed after the assignment, because the
  audience is read after the change's commit (`live.py`).
- offers go to the agent offered; presence to the agent itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import select
from sqlalchemy.orm import Session

from convodesk.domain import reasons
from convodesk.services.conversations import (
    TYPING_SECONDS,
    ConversationItem,
    MessageItem,
    conversation_item,
    message_item,
)
from convodesk.services.event_log import as_utc
from convodesk.services.live import LiveEvent
from convodesk.storage.conversations import MessageWithAttachments
from convodesk.storage.tables import (
    AttachmentRow,
    ConversationRow,
    DeliveryReportRow,
    MessageRow,
)


def jsonable(value: Any) -> Any:
    """As FastAPI would answer it (dataclasses to objects, datetimes to ISO 8601)."""
    return to_jsonable_python(value)


def _audience(row: ConversationRow, *extra_queues: str) -> dict[str, tuple[str, ...]]:
    queues = tuple(dict.fromkeys((row.queue, *extra_queues)))
    agents = tuple(a for a in (row.assigned_agent,) if a)
    return {"queues": queues, "agents": agents}


def _inside(row: ConversationRow) -> dict[str, tuple[str, ...]]:
    """Who hears of what happens inside a conversation: its assigned agent (and admins)."""
    return {"queues": (), "agents": tuple(a for a in (row.assigned_agent,) if a)}


def conversation_updated(
    row: ConversationRow,
    *,
    now: datetime | None = None,
    also_queues: tuple[str, ...] = (),
    also_agents: tuple[str, ...] = (),
    inside: bool = False,
) -> LiveEvent:
    """`also_*`: who should hear that it left them (the queue and agent before a transfer);
    `inside`: a change only its agent needs (new activity), not the queue."""
    item: ConversationItem = conversation_item(row, now=now)
    audience = _inside(row) if inside else _audience(row, *also_queues)
    agents = tuple(dict.fromkeys((*audience["agents"], *also_agents)))
    return LiveEvent(
        type="conversation.updated",
        data={"conversation": jsonable(item)},
        queues=audience["queues"],
        agents=agents,
    )


def message_created(row: ConversationRow, message: MessageItem) -> LiveEvent:
    return LiveEvent(
        type="message.created",
        data={"conversation_id": row.id, "message": jsonable(message)},
        **_inside(row),
    )


def message_status(row: ConversationRow, message: MessageRow) -> LiveEvent:
    return LiveEvent(
        type="message.status",
        data={
            "conversation_id": row.id,
            "message_id": message.id,
            "status": message.status,
            "status_at": jsonable(as_utc(message.status_at)),
            "reason_code": message.reason_code,
            "reason_text": message.reason_text,
            "failure_text": reasons.failure_text(message.reason_code)
            if message.status == "FAILED"
            else None,
        },
        **_inside(row),
    )


def typing(row: ConversationRow, until: datetime | None) -> LiveEvent:
    return LiveEvent(
        type="typing",
        data={"conversation_id": row.id, "until": jsonable(until)},
        **_inside(row),
    )


def offer_created(offer: Any, agent: str) -> LiveEvent:
    """`offer`: the `services.chat_server.OfferItem` as the API lists it."""
    return LiveEvent(type="offer.created", data={"offer": jsonable(offer)}, agents=(agent,))


def offer_closed(offer_id: int, conversation_id: int, state: str, agent: str) -> LiveEvent:
    return LiveEvent(
        type="offer.closed",
        data={"offer_id": offer_id, "conversation_id": conversation_id, "state": state},
        agents=(agent,),
    )


def presence_updated(agent: str, state: str, since: datetime) -> LiveEvent:
    return LiveEvent(
        type="presence.updated",
        data={"agent": agent, "state": state, "since": jsonable(since)},
        agents=(agent,),
    )


def queue_updated(
    queue: str,
    *,
    priority: int,
    waiting: int,
    longest_wait_seconds: float,
    agents_ready: int,
    agents_busy: int,
) -> LiveEvent:
    """The same fields as a row of ``GET /api/v1/queues/overview``, so a desktop can put the
    event in place of its row."""
    return LiveEvent(
        type="queue.updated",
        data={
            "queue": queue,
            "priority": priority,
            "waiting": waiting,
            "longest_wait_seconds": longest_wait_seconds,
            "agents_ready": agents_ready,
            "agents_busy": agents_busy,
        },
        queues=(queue,),
    )


# --------------------------------------------------------------------------- from the workers


def message_statuses(session: Session, message_ids: Collection[int]) -> list[LiveEvent]:
    """``message.status`` for these messages, as they are now (the sender's and the
    receipts' changes)."""
    if not message_ids:
        return []
    rows = session.execute(
        select(MessageRow, ConversationRow)
        .join(ConversationRow, ConversationRow.id == MessageRow.conversation_id)
        .where(MessageRow.id.in_(sorted(message_ids)))
        .order_by(MessageRow.id)
    ).all()
    return [message_status(conversation, message) for message, conversation in rows]


@dataclass(frozen=True)
class Processed:
    """One event the processor handled: its id, trigger and outcome."""

    event_id: int
    trigger: str | None
    state: str
    conversation_id: int | None
    new_message: bool  # an inbound message stored now (not one stored before)
    opened: bool = False  # the message opened or reopened its conversation


Hears = Callable[[Collection[str], Collection[str]], bool]


def _everyone(_queues: Collection[str], _agents: Collection[str]) -> bool:
    return True


def after_processing(
    session: Session, processed: list[Processed], now: datetime, hears: Hears = _everyone
) -> list[LiveEvent]:
    """The live events of a processor batch, read after its commit: each new inbound
    message (``message.created`` and its conversation's ``conversation.updated``, to the
    queue too when the message opened or reopened the conversation), each receipt
    (``message.status``), each typing signal (``typing``).

    `hears(queues, agents)` (`LiveBus.hears`) says whether anyone listens for an
    audience: the events of a conversation nobody hears are not built. Most messages are
    a waiting customer's, heard by no agent (docs/benchmarks.md, "Agent desktops")."""
    done = [p for p in processed if p.state == "done" and p.conversation_id is not None]
    inbound = [p.event_id for p in done if p.trigger == "MESSAGE_INBOUND" and p.new_message]
    opened = {p.conversation_id for p in done if p.trigger == "MESSAGE_INBOUND" and p.opened}
    receipts = [p.event_id for p in done if p.trigger == "MESSAGE_DELIVERY"]
    typing_ids = {p.conversation_id for p in done if p.trigger == "EVENT_INBOUND"}
    events: list[LiveEvent] = []
    if inbound:
        messages = session.scalars(
            select(MessageRow).where(MessageRow.event_id.in_(inbound)).order_by(MessageRow.id)
        ).all()
        conversations = _conversations(session, {m.conversation_id for m in messages})
        attachments: dict[int, list[AttachmentRow]] = {m.id: [] for m in messages}
        if attachments:
            for row in session.scalars(
                select(AttachmentRow).where(AttachmentRow.message_id.in_(list(attachments)))
            ):
                if row.message_id is not None:
                    attachments[row.message_id].append(row)
        for conversation in conversations.values():
            inside = conversation.id not in opened
            audience = _inside(conversation) if inside else _audience(conversation)
            if hears(audience["queues"], audience["agents"]):
                events.append(conversation_updated(conversation, now=now, inside=inside))
        for message in messages:
            conversation = conversations[message.conversation_id]
            if not _heard_inside(conversation, hears):
                continue
            entry = MessageWithAttachments(message=message, attachments=attachments[message.id])
            events.append(message_created(conversation, message_item(entry)))
    if receipts:
        ids = session.scalars(
            select(MessageRow.id)
            .join(
                DeliveryReportRow, DeliveryReportRow.sinch_message_id == MessageRow.sinch_message_id
            )
            .where(DeliveryReportRow.event_id.in_(receipts), MessageRow.direction == "outbound")
        ).all()
        events.extend(message_statuses(session, set(ids)))
    for conversation in _conversations(session, {i for i in typing_ids if i is not None}).values():
        if not _heard_inside(conversation, hears):
            continue
        typing_at = conversation.customer_typing_at
        until = as_utc(typing_at) + timedelta(seconds=TYPING_SECONDS) if typing_at else None
        events.append(typing(conversation, until))
    return events


def _heard_inside(row: ConversationRow, hears: Hears) -> bool:
    audience = _inside(row)
    return hears(audience["queues"], audience["agents"])


def _conversations(session: Session, ids: Collection[int]) -> dict[int, ConversationRow]:
    if not ids:
        return {}
    rows = session.scalars(select(ConversationRow).where(ConversationRow.id.in_(sorted(ids))))
    return {row.id: row for row in rows}
