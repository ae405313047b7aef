"""Customer prompts (``chat_settings.prompts``): automatic texts sent through the outbox.

A prompt is an outbound text message with author ``system`` and its outbox row, added in the
caller's transaction; the sender delivers it like an agent's reply (retries, rate limits,
receipts). It differs from a reply in two ways:

- it does not count as activity in the conversation (`last_activity_at` is left alone):
  the inactivity timers measure the customer's silence since the agent's last message, and
  an idle-warning prompt that restarted them would put the close off for ever;
- on WhatsApp it is skipped while the customer's 24-hour window is closed, where Sinch would
  refuse free text (an agent would send a template instead; a prompt has none).

Placeholders: ``{queue}`` (the queue's name) and ``{position}`` (the place in the queue).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from convodesk.services import conversations as conversation_service
from convodesk.storage.tables import ConversationRow, MessageRow, OutboxRow

SYSTEM_AUTHOR = "system"
PROMPT_NAMES = (
    "welcome",
    "queue_position",
    "queue_full",
    "outside_business_hours",
    "idle_warning",
    "closed",
)


def render(template: str, *, queue: str, position: int | None = None) -> str:
    text = template.replace("{queue}", queue)
    return text.replace("{position}", str(position) if position is not None else "")


def queue_prompt(
    session: Session,
    conversation: ConversationRow,
    name: str,
    template: str | None,
    now: datetime,
    *,
    position: int | None = None,
) -> MessageRow | None:
    """Add the prompt `name` (its text `template`; None: switched off) for the customer of
    `conversation`; returns the message, or None when nothing is sent."""
    if template is None:
        return None
    window = conversation_service.whatsapp_window(
        conversation.channel, conversation.last_inbound_at, now
    )
    if window is not None and not window.open:
        return None
    text = render(template, queue=conversation.queue, position=position)
    message = MessageRow(
        conversation_id=conversation.id,
        direction="outbound",
        kind="text",
        text=text,
        content={"prompt": name},
        status="pending",
        created_at=now,
        status_at=now,
        author=SYSTEM_AUTHOR,
        author_name=None,
    )
    session.add(message)
    session.flush()
    session.add(
        OutboxRow(
            message_id=message.id,
            state="pending",
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )
    return message
