"""State changes of the Chat Server shared by routing (`services/routing.py`) and the agents'
actions (`services/chat_server.py`): offers made and closed, conversations closed, the
assignment log, and the record of what changed (`Changes`), from which the live events are
built inside the transaction and published after its commit.

Callers hold the presence rows of the agents they touch (`storage.chat.lock_presence`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from convodesk.domain.config_model import ChatSettings, Queue
from convodesk.services import chat_events, prompts
from convodesk.services.conversations import message_item
from convodesk.services.event_log import as_utc
from convodesk.services.live import LiveEvent
from convodesk.storage import chat
from convodesk.storage.conversations import MessageWithAttachments
from convodesk.storage.tables import (
    AgentPresenceRow,
    AssignmentLogRow,
    ConversationRow,
    MessageRow,
    OfferRow,
)

PREVIEW_CHARS = 140


@dataclass(frozen=True, kw_only=True)
class OfferItem:
    id: int
    conversation_id: int
    queue: str
    channel: str
    customer: str  # the customer's channel identity (phone number, PSID, ...)
    preview: str | None  # the customer's last message, shortened
    kind: str  # route | preferred (a reopen, back to its last agent) | direct (a transfer)
    created_at: datetime
    expires_at: datetime


def preview(text: str | None) -> str | None:
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def offer_item(offer: OfferRow, conversation: ConversationRow, text: str | None) -> OfferItem:
    return OfferItem(
        id=offer.id,
        conversation_id=conversation.id,
        queue=conversation.queue,
        channel=conversation.channel,
        customer=conversation.identity,
        preview=preview(text),
        kind=offer.kind,
        created_at=as_utc(offer.created_at),
        expires_at=as_utc(offer.expires_at),
    )


@dataclass
class Changes:
    """What one transaction changed, turned into live events by `events` before commit."""

    events: list[LiveEvent] = field(default_factory=list)
    conversations: dict[int, ConversationRow] = field(default_factory=dict)
    moved_from: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    prompts: list[tuple[ConversationRow, MessageRow]] = field(default_factory=list)
    offers: list[tuple[OfferRow, ConversationRow, str]] = field(default_factory=list)
    queues: set[str] = field(default_factory=set)

    def touch(self, conversation: ConversationRow) -> None:
        self.conversations[conversation.id] = conversation
        self.queues.add(conversation.queue)

    def moved(
        self, conversation: ConversationRow, queues: tuple[str, ...], agents: tuple[str, ...]
    ) -> None:
        """The conversation left these queues and agents: they hear of it too."""
        old_queues, old_agents = self.moved_from.get(conversation.id, ((), ()))
        self.moved_from[conversation.id] = (
            tuple(dict.fromkeys((*old_queues, *queues))),
            tuple(dict.fromkeys((*old_agents, *agents))),
        )
        self.queues.update(queues)

    def build_events(self, session: Session, now: datetime) -> list[LiveEvent]:
        """Everything as live events; call inside the transaction, after the last change."""
        session.flush()
        events = list(self.events)
        if self.offers:
            texts = chat.last_message_previews(
                session, {c.id for _, c, _ in self.offers}, inbound_only=True
            )
            for offer, conversation, login in self.offers:
                item = offer_item(offer, conversation, texts.get(conversation.id))
                events.append(chat_events.offer_created(item, login))
        for conversation, message in self.prompts:
            entry = MessageWithAttachments(message=message, attachments=[])
            events.append(chat_events.message_created(conversation, message_item(entry)))
        for conversation in self.conversations.values():
            queues, agents = self.moved_from.get(conversation.id, ((), ()))
            events.append(
                chat_events.conversation_updated(
                    conversation, now=now, also_queues=queues, also_agents=agents
                )
            )
        return events


def log(
    session: Session,
    conversation: ConversationRow,
    action: str,
    now: datetime,
    *,
    agent: str | None = None,
    actor: str | None = None,
    queue: str | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        AssignmentLogRow(
            conversation_id=conversation.id,
            at=now,
            action=action,
            agent=agent,
            queue=queue or conversation.queue,
            actor=actor,
            detail=detail[:200] if detail else None,
        )
    )


def offer_timeout(queue: Queue | None, settings: ChatSettings) -> int:
    if queue is not None and queue.offer_timeout_seconds is not None:
        return queue.offer_timeout_seconds
    return settings.offer_timeout_seconds


def make_offer(
    session: Session,
    changes: Changes,
    conversation: ConversationRow,
    agent_id: int,
    login: str,
    *,
    kind: str,
    timeout_seconds: int,
    now: datetime,
) -> OfferRow | None:
    """Offer the conversation to the agent; None when it has an outstanding offer already
    (made by another transaction meanwhile: the unique `open_conversation_id`)."""
    offer = OfferRow(
        conversation_id=conversation.id,
        agent_id=agent_id,
        kind=kind,
        state="offered",
        created_at=now,
        expires_at=now + timedelta(seconds=timeout_seconds),
        open_conversation_id=conversation.id,
    )
    savepoint = session.begin_nested()
    session.add(offer)
    try:
        session.flush()
    except IntegrityError:
        savepoint.rollback()
        return None
    savepoint.commit()
    changes.offers.append((offer, conversation, login))
    changes.queues.add(conversation.queue)
    return offer


def close_offer(changes: Changes, offer: OfferRow, state: str, login: str, now: datetime) -> None:
    chat.close_offer(offer, state, now)
    changes.events.append(chat_events.offer_closed(offer.id, offer.conversation_id, state, login))


def withdraw_offers(
    session: Session,
    changes: Changes,
    conversation_id: int,
    now: datetime,
    *,
    logins: dict[int, str] | None = None,
) -> list[OfferRow]:
    """Withdraw the conversation's outstanding offer (there is at most one)."""
    offers = chat.outstanding_offers(session, conversation_id=conversation_id)
    names = (
        logins if logins is not None else chat.agent_logins(session, (o.agent_id for o in offers))
    )
    for offer in offers:
        close_offer(changes, offer, "withdrawn", names.get(offer.agent_id, ""), now)
    return offers


def send_prompt(
    session: Session,
    changes: Changes,
    conversation: ConversationRow,
    name: str,
    settings: ChatSettings,
    now: datetime,
    *,
    position: int | None = None,
) -> MessageRow | None:
    template = getattr(settings.prompts, name)
    message = prompts.queue_prompt(session, conversation, name, template, now, position=position)
    if message is not None:
        changes.prompts.append((conversation, message))
    return message


def close_conversation(
    session: Session,
    changes: Changes,
    conversation: ConversationRow,
    *,
    reason: str,
    ended_by: str,
    settings: ChatSettings,
    now: datetime,
    presence: AgentPresenceRow | None = None,
    wrapup_code: str | None = None,
    logins: dict[int, str] | None = None,
) -> None:
    """Close an open conversation: offers withdrawn, the agent freed (`presence`, locked by
    the caller), the ``closed`` prompt sent (not after ``queue_full``, which has its own)."""
    withdraw_offers(session, changes, conversation.id, now, logins=logins)
    conversation.status = "closed"
    conversation.closed_at = now
    conversation.open_key = None
    conversation.ended_by = ended_by
    conversation.close_reason = reason
    conversation.wrapup_code = wrapup_code
    conversation.preferred_agent = None
    conversation.customer_typing_at = None
    if presence is not None:
        presence.idle_since = now
    log(
        session,
        conversation,
        "closed",
        now,
        agent=conversation.assigned_agent,
        actor=ended_by,
        detail=f"{reason}" + (f", wrap-up {wrapup_code}" if wrapup_code else ""),
    )
    if reason != "queue_full":
        send_prompt(session, changes, conversation, "closed", settings, now)
    changes.touch(conversation)
