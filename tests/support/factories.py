"""Row factories with valid defaults: plain functions, keyword overrides, one row each.

Each adds its row to the session and flushes (so the id is known); committing is the
caller's business, e.g. ``with transaction(runtime.sessions) as session: make_event(session)``.
Defaults are unique where the schema demands it (dedup keys, Sinch ids, tokens, open keys).
"""

from __future__ import annotations

import itertools
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from convodesk.storage.tables import (
    AgentQueueRow,
    AgentRow,
    AttachmentRow,
    ConversationRow,
    EventRow,
    MessageRow,
    QueueRow,
)

# The same app id as tests.support.apps.APP_EU; not imported from there, because that
# module imports the whole web app and factories must stay cheap to import.
APP_EU = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
_counter = itertools.count(1)
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def sinch_id() -> str:
    """A fresh 26-character id in Sinch's (ULID-like) form."""
    return "".join(secrets.choice(CROCKFORD) for _ in range(26))


def inbound_body(
    *,
    app_id: str = APP_EU,
    channel: str = "WHATSAPP",
    identity: str = "46701234567",
    message_id: str | None = None,
    text: str = "Hej! Where is my order?",
) -> bytes:
    """A MESSAGE_INBOUND callback body in Sinch's shape (reference/sinch-conversation-api.md)."""
    body = {
        "app_id": app_id,
        "accepted_time": "2024-06-10T06:13:19.512Z",
        "event_time": "2024-06-10T06:13:18.900Z",
        "project_id": "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69",
        "message": {
            "id": message_id or sinch_id(),
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": text}},
            "channel_identity": {"channel": channel, "identity": identity, "app_id": ""},
            "conversation_id": "",
            "contact_id": "",
            "metadata": "",
            "accept_time": "2024-06-10T06:13:19.498Z",
            "sender_id": "46700000000",
            "processing_mode": "DISPATCH",
            "injected": False,
        },
        "message_metadata": "",
        "correlation_id": "",
    }
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def make_event(session: Session, **overrides: Any) -> EventRow:
    """An event-log row; by default an accepted MESSAGE_INBOUND, pending processing.

    With an `outcome` other than ``accepted``, the defaults follow the intake: no dedup
    key and state ``none``.
    """
    outcome = overrides.get("outcome", "accepted")
    accepted = outcome == "accepted"
    message_id = sinch_id()
    values: dict[str, Any] = {
        "received_at": datetime.now(UTC),
        "service": "sinch-eu",
        "trigger": "MESSAGE_INBOUND",
        "app_id": APP_EU,
        "channel": "WHATSAPP",
        "identity": "46701234567",
        "outcome": outcome,
        "reason": None,
        "dedup_key": f"message:{message_id}" if accepted else None,
        "state": "pending" if accepted else "none",
        "state_reason": None,
        "processed_at": None,
        "conversation_id": None,
    }
    values.update(overrides)
    if "body" not in values:
        values["body"] = inbound_body(
            app_id=values["app_id"] or APP_EU,
            channel=values["channel"] or "WHATSAPP",
            identity=values["identity"] or "46701234567",
            message_id=message_id,
        )
    row = EventRow(**values)
    session.add(row)
    session.flush()
    return row


def make_conversation(session: Session, **overrides: Any) -> ConversationRow:
    """An open (waiting) WhatsApp conversation in queue ``support``; a fresh identity each
    time unless given, so that the unique open key never collides."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "service": "sinch-eu",
        "app_id": APP_EU,
        "channel": "WHATSAPP",
        "identity": f"4670{next(_counter):07d}",
        "queue": "support",
        "status": "waiting",
        "opened_at": now,
        "last_activity_at": now,
    }
    values.update(overrides)
    if "open_key" not in values:
        closed = values["status"] == "closed"
        values["open_key"] = (
            None
            if closed
            else "|".join(
                (values["service"], values["app_id"], values["channel"], values["identity"])
            )
        )
        if closed:
            values.setdefault("closed_at", now)
    row = ConversationRow(**values)
    session.add(row)
    session.flush()
    return row


def make_message(
    session: Session, conversation: ConversationRow | None = None, **overrides: Any
) -> MessageRow:
    """A text message; inbound (status ``received``) by default. Without a conversation
    (or `conversation_id`) a new one is made."""
    if "conversation_id" not in overrides:
        conversation = conversation or make_conversation(session)
        overrides["conversation_id"] = conversation.id
    direction = overrides.get("direction", "inbound")
    text = overrides.get("text", "Hej! Where is my order?")
    values: dict[str, Any] = {
        "direction": direction,
        "sinch_message_id": sinch_id(),
        "kind": "text",
        "text": text,
        "content": {"text_message": {"text": text}} if text is not None else {},
        "status": "received" if direction == "inbound" else "QUEUED_ON_CHANNEL",
    }
    values.update(overrides)
    row = MessageRow(**values)
    session.add(row)
    session.flush()
    return row


def make_attachment(
    session: Session, message: MessageRow | None = None, **overrides: Any
) -> AttachmentRow:
    """A stored JPEG of `message` (a new media message when none is given)."""
    if "message_id" not in overrides:
        message = message or make_message(
            session,
            kind="media",
            text=None,
            content={"media_message": {"url": "https://media.example.com/a.jpg"}},
        )
        overrides["message_id"] = message.id
    state = overrides.get("state", "stored")
    token = overrides.get("token", secrets.token_urlsafe(24))
    values: dict[str, Any] = {
        "token": token,
        "source_url": "https://media.example.com/a.jpg",
        "state": state,
        "content_type": "image/jpeg",
        "size": 48213,
        "filename": "photo.jpg",
        "path": f"attachments/{token}" if state == "stored" else None,
        "stored_at": datetime.now(UTC) if state == "stored" else None,
    }
    values.update(overrides)
    row = AttachmentRow(**values)
    session.add(row)
    session.flush()
    return row


def make_queue(session: Session, name: str = "support", **overrides: Any) -> QueueRow:
    """A chat queue row (no addresses: enough for membership and visibility tests)."""
    row = QueueRow(**{"name": name, "type": "chat", **overrides})
    session.add(row)
    session.flush()
    return row


def make_agent(
    session: Session,
    login: str = "anna",
    *,
    queues: tuple[str, ...] = ("support",),
    **overrides: Any,
) -> AgentRow:
    """An agent in `queues`; queues that do not exist yet are made."""
    links = []
    for position, name in enumerate(queues):
        queue = session.scalar(select(QueueRow).where(QueueRow.name == name))
        queue = queue or make_queue(session, name)
        links.append(AgentQueueRow(queue_id=queue.id, position=position))
    values: dict[str, Any] = {"login": login, "display_name": login.title(), "role": "agent"}
    values.update(overrides)
    row = AgentRow(**values, queue_links=links)
    session.add(row)
    session.flush()
    return row
