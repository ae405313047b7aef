"""The Chain Matcher: turns stored callbacks into conversations, messages and receipts.

For an inbound message, the conversation is, in this order:

1. the open conversation of (service, app id, channel, identity);
2. else the most recent conversation of that key closed within the reopen window
   (``chat_settings.reopen_window_seconds``), reopened;
3. else a new conversation in the queue whose address is ``APPID@subchannel`` for the
   message's channel.

No such queue: the event is marked ``unrouted`` with the reason, kept, and re-processable
(`convodesk events replay`) once a queue takes the address.

Threading never depends on Sinch's conversation or contact ids (empty in DISPATCH mode);
in CONVERSATION mode they are stored beside ours.

Every step is idempotent, so an event processed twice (a replay, a crash between the work
and the commit) has one effect: a message is keyed by its Sinch message id, a delivery
report by its event id.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from convodesk.domain import delivery
from convodesk.domain.config_model import CHANNEL_TO_SUBCHANNEL
from convodesk.services.directory import Directory
from convodesk.sinch import events as sinch_events
from convodesk.storage.tables import (
    AttachmentRow,
    ConversationRow,
    DeliveryReportRow,
    EventRow,
    MessageRow,
)

OPEN_STATUSES = ("waiting", "active")


@dataclass(frozen=True)
class Outcome:
    state: str  # done | unrouted | failed
    reason: str | None = None
    conversation_id: int | None = None
    opened: bool = False


def open_key(service: str, app_id: str, channel: str, identity: str) -> str:
    return f"{service}|{app_id}|{channel}|{identity}"


def process_event(
    session: Session, event: EventRow, directory: Directory, now: datetime
) -> Outcome:
    """Apply one accepted event; the caller records the outcome on the event row."""
    try:
        callback = sinch_events.parse_callback(event.body)
    except sinch_events.CallbackError as exc:  # stored before a parser change, say
        return Outcome("failed", f"cannot parse the stored body: {exc}")
    if callback.inbound is not None:
        return thread_inbound(session, event, callback.inbound, directory, now)
    if callback.delivery is not None:
        return record_delivery_report(session, event, callback.delivery, now)
    if callback.event is not None:
        return record_contact_event(session, event, callback.event, now)
    return Outcome("done", "nothing to do for this trigger")


# --------------------------------------------------------------------------- inbound


def thread_inbound(
    session: Session,
    event: EventRow,
    message: sinch_events.InboundMessage,
    directory: Directory,
    now: datetime,
) -> Outcome:
    service = event.service or ""
    app_id = event.app_id or ""
    identity = sinch_events.normalize_identity(message.channel, message.identity)
    existing = session.scalar(
        select(MessageRow.conversation_id).where(MessageRow.sinch_message_id == message.message_id)
    )
    if existing is not None:
        return Outcome("done", "message stored before", existing)
    key = open_key(service, app_id, message.channel, identity)
    conversation, opened = _conversation_for(
        session, key, service, app_id, message, identity, directory, now
    )
    if conversation is None:
        subchannel = CHANNEL_TO_SUBCHANNEL.get(message.channel)
        address = (
            f"{app_id}@{subchannel}.sinchconversation.com"
            if subchannel
            else f"(no subchannel for channel {message.channel})"
        )
        return Outcome("unrouted", f"no queue has the address {address}")
    content = message.content
    row = MessageRow(
        conversation_id=conversation.id,
        direction="inbound",
        sinch_message_id=message.message_id,
        kind=content.kind,
        text=_storable(content.text if content.text is not None else content.preview()),
        content=content.raw,
        status="received",
        reply_to=message.reply_to,
        created_at=message.accept_time or now,
        status_at=now,
        event_id=event.id,
    )
    session.add(row)
    session.flush()
    if content.kind in ("media", "media_card") and content.media_url:
        session.add(
            AttachmentRow(
                message_id=row.id,
                token=new_token(),
                source_url=content.media_url,
                state="pending",
                filename=_storable(content.filename)[:300] if content.filename else None,
                next_attempt_at=now,
            )
        )
    conversation.last_inbound_at = now
    conversation.last_activity_at = now
    conversation.customer_typing_at = None
    if message.conversation_id:
        conversation.sinch_conversation_id = message.conversation_id
    if message.contact_id:
        conversation.sinch_contact_id = message.contact_id
    if message.sender_id:
        conversation.sender_id = message.sender_id
    return Outcome("done", None, conversation.id, opened)


def _conversation_for(
    session: Session,
    key: str,
    service: str,
    app_id: str,
    message: sinch_events.InboundMessage,
    identity: str,
    directory: Directory,
    now: datetime,
) -> tuple[ConversationRow | None, bool]:
    current = session.scalar(select(ConversationRow).where(ConversationRow.open_key == key))
    if current is not None:
        return current, False
    window = timedelta(seconds=directory.chat_settings.reopen_window_seconds)
    recent = session.scalar(
        select(ConversationRow)
        .where(
            ConversationRow.service == service,
            ConversationRow.app_id == app_id,
            ConversationRow.channel == message.channel,
            ConversationRow.identity == identity,
            ConversationRow.status == "closed",
            ConversationRow.closed_at >= now - window,
        )
        .order_by(ConversationRow.closed_at.desc())
        .limit(1)
    )
    if recent is not None:
        recent.status = "waiting"
        recent.open_key = key
        recent.closed_at = None
        recent.reopen_count += 1
        return _claim(session, recent, key), False
    queue = directory.queue_for(app_id, message.channel)
    if queue is None:
        return None, False
    fresh = ConversationRow(
        service=service,
        app_id=app_id,
        channel=message.channel,
        identity=identity,
        identity_app_id=message.identity_app_id or None,
        queue=queue.name,
        status="waiting",
        open_key=key,
        opened_at=now,
        last_activity_at=now,
        sinch_conversation_id=message.conversation_id or None,
        sinch_contact_id=message.contact_id or None,
        sender_id=message.sender_id or None,
    )
    session.add(fresh)
    return _claim(session, fresh, key), True


def _claim(session: Session, row: ConversationRow, key: str) -> ConversationRow:
    """Flush the open conversation; if another node opened one for the key at the same
    instant (the unique `open_key`), use theirs instead."""
    savepoint = session.begin_nested()
    try:
        session.flush()
    except IntegrityError:
        savepoint.rollback()
        theirs = session.scalar(select(ConversationRow).where(ConversationRow.open_key == key))
        if theirs is None:
            raise
        return theirs
    savepoint.commit()
    return row


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; the raw body keeps the original."""
    return text.replace("\x00", "\ufffd")


def new_token() -> str:
    """An unguessable attachment token: 192 random bits, URL-safe."""
    return secrets.token_urlsafe(24)


# --------------------------------------------------------------------------- receipts


def record_delivery_report(
    session: Session, event: EventRow, report: sinch_events.DeliveryReport, now: datetime
) -> Outcome:
    if session.scalar(select(DeliveryReportRow.id).where(DeliveryReportRow.event_id == event.id)):
        return Outcome("done", "report recorded before")
    row = DeliveryReportRow(
        sinch_message_id=report.message_id,
        status=report.status,
        reason_code=report.reason_code,
        reason_text=report.reason_description,
        event_id=event.id,
        received_at=now,
        applied=False,
    )
    session.add(row)
    session.flush()
    message = session.scalar(
        select(MessageRow).where(
            MessageRow.sinch_message_id == report.message_id, MessageRow.direction == "outbound"
        )
    )
    if message is None:
        # The send answer may still be on its way: the report waits for the message id.
        return Outcome("done", "message not known yet; report parked")
    apply_reports(message, [row], now)
    return Outcome("done", None, message.conversation_id)


def apply_reports(message: MessageRow, reports: list[DeliveryReportRow], now: datetime) -> None:
    """Move the message's status forward by these reports (in any order), never back."""
    for report in reports:
        new_status = delivery.advance(message.status, report.status)
        if new_status != message.status:
            message.status = new_status
            message.status_at = now
            if new_status == "FAILED":
                message.reason_code = report.reason_code
                message.reason_text = report.reason_text
        report.applied = True


def apply_parked_reports(session: Session, message: MessageRow, now: datetime) -> None:
    """Called once an outbound message learns its Sinch id: apply reports that came first."""
    if not message.sinch_message_id:
        return
    parked = list(
        session.scalars(
            select(DeliveryReportRow)
            .where(
                DeliveryReportRow.sinch_message_id == message.sinch_message_id,
                DeliveryReportRow.applied.is_(False),
            )
            .order_by(DeliveryReportRow.id)
        )
    )
    apply_reports(message, parked, now)


# --------------------------------------------------------------------------- events


def record_contact_event(
    session: Session, event: EventRow, contact_event: sinch_events.ContactEvent, now: datetime
) -> Outcome:
    """Composing events become the "customer is typing" signal of the open conversation."""
    if contact_event.kind not in ("composing", "composing_end"):
        return Outcome("done", f"contact event {contact_event.kind} not acted on")
    identity = sinch_events.normalize_identity(contact_event.channel, contact_event.identity)
    key = open_key(event.service or "", event.app_id or "", contact_event.channel, identity)
    typing_at = now if contact_event.kind == "composing" else None
    result = session.execute(
        update(ConversationRow)
        .where(ConversationRow.open_key == key)
        .values(customer_typing_at=typing_at)
        .returning(ConversationRow.id)
    ).first()
    return Outcome(
        "done", None if result else "no open conversation", result[0] if result else None
    )
