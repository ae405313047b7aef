"""Reading conversations and messages, with the visibility rule in one place.

An admin token sees every conversation. An agent token sees the conversations of the
queues its agent belongs to (`agent_queues`), those assigned to its agent and those
offered to it (a transfer may hand an agent a conversation of a queue it is not in), and
nothing else: another conversation is "not found", the same answer as an id that does not
exist, so that ids do not reveal what other queues hold.

WhatsApp conversations carry their 24-hour window (`whatsapp_window`): free text reaches the
customer only within 24 hours of their last message; after that only an approved template
does. `conversation_templates` lists the templates configured for the conversation's app.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.orm import Session

from convodesk.domain import reasons
from convodesk.domain.config_model import Problem, WhatsAppTemplate
from convodesk.runtime import Runtime
from convodesk.services.errors import InvalidRequestError, NotFoundError
from convodesk.services.event_log import MAX_PAGE, as_utc
from convodesk.storage import config_store, conversations
from convodesk.storage.api_tokens import Principal
from convodesk.storage.conversations import MessageWithAttachments
from convodesk.storage.db import transaction
from convodesk.storage.tables import AttachmentRow, ConversationRow

ConversationStatus = Literal["waiting", "active", "closed"]
RICHCONTENT_PATH = "/sms/richcontent/"
# Channels send a composing event while the customer types and often no "stopped" event:
# the signal fades after this long.
TYPING_SECONDS = 15
# WhatsApp's customer-service window: 24 hours from the customer's last message (reference
# section 7); outside it only an approved template may be sent.
WHATSAPP_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, kw_only=True)
class WhatsAppWindow:
    open: bool
    # The customer's last message + 24 h: when the window closes, or closed (then in the
    # past). None when the customer never wrote in this conversation.
    closes_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class TemplateItem:
    name: str
    language: str
    parameters: list[str]  # a reply gives exactly these
    text: str | None  # a preview with {parameter} placeholders


@dataclass(frozen=True, kw_only=True)
class ConversationTemplates:
    whatsapp_window: WhatsAppWindow | None  # None off WhatsApp
    templates: list[TemplateItem]  # those of the conversation's app; none off WhatsApp


@dataclass(frozen=True, kw_only=True)
class ConversationItem:
    id: int
    service: str
    app_id: str
    channel: str
    identity: str
    queue: str
    status: str
    opened_at: datetime
    closed_at: datetime | None
    last_inbound_at: datetime | None
    last_activity_at: datetime
    reopen_count: int
    sinch_conversation_id: str | None
    sinch_contact_id: str | None
    customer_typing_at: datetime | None
    customer_typing: bool  # a composing event in the last TYPING_SECONDS, not yet ended
    whatsapp_window: WhatsAppWindow | None  # None off WhatsApp
    # The Chat Server (docs/reference/routing.md): who has it, since when it waits, how it ended
    assigned_agent: str | None  # while active; after the close, who handled it last
    assigned_at: datetime | None
    waiting_since: datetime | None  # its place in the queue (oldest first)
    ended_by: str | None  # the login of whoever ended it, or "system"
    wrapup_code: str | None
    close_reason: str | None  # agent | inactivity | queue_full


@dataclass(frozen=True, kw_only=True)
class ConversationPage:
    items: list[ConversationItem]
    next: int | None  # pass as `before` for the next (older) page; None: this is the last


@dataclass(frozen=True, kw_only=True)
class AttachmentItem:
    id: int
    state: str  # pending | stored | failed | expired (past the retention: no url)
    content_type: str | None
    size: int | None
    filename: str | None
    url: str | None  # /sms/richcontent/{token} once stored, else None


@dataclass(frozen=True, kw_only=True)
class MessageItem:
    id: int
    conversation_id: int
    direction: str
    kind: str
    text: str | None
    content: dict[str, Any]
    status: str
    reason_code: str | None  # Sinch's reason code, or ours (CANNOT_SEND, SEND_GAVE_UP, HTTP_4xx)
    reason_text: str | None  # the technical description that came with it
    failure_text: str | None  # for a FAILED message: the reason in plain words, for the agent
    author: str | None  # outbound: the agent's login, or "system" for a prompt
    author_name: str | None
    sinch_message_id: str | None
    reply_to: str | None
    created_at: datetime
    status_at: datetime
    attachments: list[AttachmentItem]


@dataclass(frozen=True, kw_only=True)
class MessagePage:
    items: list[MessageItem]
    next: int | None  # pass as `after` for the next (newer) page; None: none so far


def _optional(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def whatsapp_window(
    channel: str, last_inbound_at: datetime | None, now: datetime
) -> WhatsAppWindow | None:
    """The 24-hour window of a WhatsApp conversation; None on other channels."""
    if channel != "WHATSAPP":
        return None
    if last_inbound_at is None:
        return WhatsAppWindow(open=False, closes_at=None)
    closes_at = as_utc(last_inbound_at) + WHATSAPP_WINDOW
    return WhatsAppWindow(open=now < closes_at, closes_at=closes_at)


def template_item(template: WhatsAppTemplate) -> TemplateItem:
    return TemplateItem(
        name=template.name,
        language=template.language,
        parameters=list(template.parameters),
        text=template.text,
    )


def conversation_item(row: ConversationRow, *, now: datetime | None = None) -> ConversationItem:
    now = now or datetime.now(UTC)
    typing_at = _optional(row.customer_typing_at)
    return ConversationItem(
        id=row.id,
        service=row.service,
        app_id=row.app_id,
        channel=row.channel,
        identity=row.identity,
        queue=row.queue,
        status=row.status,
        opened_at=as_utc(row.opened_at),
        closed_at=_optional(row.closed_at),
        last_inbound_at=_optional(row.last_inbound_at),
        last_activity_at=as_utc(row.last_activity_at),
        reopen_count=row.reopen_count,
        sinch_conversation_id=row.sinch_conversation_id,
        sinch_contact_id=row.sinch_contact_id,
        customer_typing_at=typing_at,
        customer_typing=typing_at is not None
        and now - typing_at < timedelta(seconds=TYPING_SECONDS),
        whatsapp_window=whatsapp_window(row.channel, row.last_inbound_at, now),
        assigned_agent=row.assigned_agent,
        assigned_at=_optional(row.assigned_at),
        waiting_since=_optional(row.waiting_since),
        ended_by=row.ended_by,
        wrapup_code=row.wrapup_code,
        close_reason=row.close_reason,
    )


def attachment_item(row: AttachmentRow) -> AttachmentItem:
    return AttachmentItem(
        id=row.id,
        state=row.state,
        content_type=row.content_type,
        size=row.size,
        filename=row.filename,
        url=RICHCONTENT_PATH + row.token if row.state == "stored" else None,
    )


def message_item(entry: MessageWithAttachments) -> MessageItem:
    m = entry.message
    return MessageItem(
        id=m.id,
        conversation_id=m.conversation_id,
        direction=m.direction,
        kind=m.kind,
        text=m.text,
        content=m.content,
        status=m.status,
        reason_code=m.reason_code,
        reason_text=m.reason_text,
        failure_text=reasons.failure_text(m.reason_code) if m.status == "FAILED" else None,
        author=m.author,
        author_name=m.author_name,
        sinch_message_id=m.sinch_message_id,
        reply_to=m.reply_to,
        created_at=as_utc(m.created_at),
        status_at=as_utc(m.status_at),
        attachments=[attachment_item(a) for a in entry.attachments],
    )


def visible_queues(session: Session, principal: Principal) -> set[str] | None:
    """None for "every queue" (admin); otherwise the agent's queues (maybe none)."""
    if principal.is_admin:
        return None
    if principal.agent_login is None:
        return set()
    return conversations.queues_of_agent(session, principal.agent_login)


def visible_conversation(
    session: Session, principal: Principal, conversation_id: int
) -> ConversationRow:
    row = conversations.get_conversation(session, conversation_id)
    if row is not None and can_see(session, principal, row):
        return row
    raise NotFoundError(f"no conversation with id {conversation_id}")


def can_see(session: Session, principal: Principal, row: ConversationRow) -> bool:
    allowed = visible_queues(session, principal)
    if allowed is None or row.queue in allowed:
        return True
    login = principal.agent_login
    if login is None:
        return False
    return row.assigned_agent == login or conversations.offered_to(session, row.id, login)


def list_conversations(
    runtime: Runtime,
    principal: Principal,
    *,
    queue: str | None = None,
    status: str | None = None,
    channel: str | None = None,
    identity: str | None = None,
    assigned: str | None = None,
    limit: int = 50,
    before: int | None = None,
    now: datetime | None = None,
) -> ConversationPage:
    """`assigned`: an agent's login, or ``me`` for the caller's agent."""
    limit = max(1, min(limit, MAX_PAGE))
    if assigned == "me":
        if principal.agent_login is None:
            raise InvalidRequestError(
                [Problem(path="assigned", message="assigned=me needs a token of an agent")]
            )
        assigned = principal.agent_login
    with transaction(runtime.sessions) as session:
        rows = conversations.list_conversations(
            session,
            queue=queue,
            status=status,
            channel=channel,
            identity=identity,
            assigned_agent=assigned,
            queues_allowed=visible_queues(session, principal),
            also_assigned_to=principal.agent_login,
            limit=limit + 1,
            before_id=before,
        )
        items = [conversation_item(row, now=now) for row in rows[:limit]]
    return ConversationPage(items=items, next=items[-1].id if len(rows) > limit else None)


def get_conversation(
    runtime: Runtime, principal: Principal, conversation_id: int, *, now: datetime | None = None
) -> ConversationItem:
    with transaction(runtime.sessions) as session:
        row = visible_conversation(session, principal, conversation_id)
        return conversation_item(row, now=now)


def conversation_templates(
    runtime: Runtime, principal: Principal, conversation_id: int, *, now: datetime | None = None
) -> ConversationTemplates:
    """The window and the templates an agent may send in this conversation."""
    with transaction(runtime.sessions) as session:
        row = visible_conversation(session, principal, conversation_id)
        window = whatsapp_window(row.channel, row.last_inbound_at, now or datetime.now(UTC))
        if window is None:
            return ConversationTemplates(whatsapp_window=None, templates=[])
        templates = config_store.whatsapp_templates(session, row.service, row.app_id)
    return ConversationTemplates(
        whatsapp_window=window, templates=[template_item(t) for t in templates]
    )


def list_messages(
    runtime: Runtime,
    principal: Principal,
    conversation_id: int,
    *,
    limit: int = 100,
    after: int | None = None,
) -> MessagePage:
    limit = max(1, min(limit, MAX_PAGE))
    with transaction(runtime.sessions) as session:
        visible_conversation(session, principal, conversation_id)
        entries = conversations.list_messages(
            session, conversation_id, limit=limit + 1, after_id=after
        )
        items = [message_item(entry) for entry in entries[:limit]]
    return MessagePage(items=items, next=items[-1].id if len(entries) > limit else None)
