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

import functools
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
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
SWEEP_WINDOW = timedelta(hours=1)
_messages = cast(Table, MessageRow.__table__)
_conversations = cast(Table, ConversationRow.__table__)
_attachments = cast(Table, AttachmentRow.__table__)


@dataclass(frozen=True)
class Outcome:
    state: str  # done | unrouted | failed
    reason: str | None = None
    conversation_id: int | None = None
    opened: bool = False  # the message opened a new conversation or reopened a closed one


def open_key(service: str, app_id: str, channel: str, identity: str) -> str:
    return f"{service}|{app_id}|{channel}|{identity}"


def parse_stored(event: EventRow) -> sinch_events.Callback | Outcome:
    """The event's stored body, parsed; a body that no longer parses is a failed Outcome."""
    try:
        return sinch_events.parse_callback(event.body)
    except sinch_events.CallbackError as exc:  # stored before a parser change, say
        return Outcome("failed", f"cannot parse the stored body: {exc}")


def process_event(
    session: Session,
    event: EventRow,
    directory: Directory,
    now: datetime,
    callback: sinch_events.Callback | None = None,
) -> Outcome:
    """Apply one accepted event (`callback`: its body, if the caller parsed it already);
    the caller records the outcome on the event row."""
    parsed = parse_stored(event) if callback is None else callback
    if isinstance(parsed, Outcome):
        return parsed
    if parsed.inbound is not None:
        return thread_inbound(session, event, parsed.inbound, directory, now)
    if parsed.delivery is not None:
        return record_delivery_report(session, event, parsed.delivery, now)
    if parsed.event is not None:
        return record_contact_event(session, event, parsed.event, now)
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
        for name, value in _reopened_values(now).items():
            setattr(recent, name, value)
        recent.preferred_agent = recent.assigned_agent
        recent.assigned_agent = None
        return _claim(session, recent, key), True
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
        waiting_since=now,
        last_activity_at=now,
        sinch_conversation_id=message.conversation_id or None,
        sinch_contact_id=message.contact_id or None,
        sender_id=message.sender_id or None,
    )
    session.add(fresh)
    return _claim(session, fresh, key), True


def _reopened_values(now: datetime) -> dict[str, object]:
    """A reopened conversation waits again from now; the router admits it afresh (no
    welcome: it was served) and offers it to its last agent first (`preferred_agent`, set by
    the callers from `assigned_agent`). What the last episode ended with is in the
    assignment log."""
    return {
        "waiting_since": now,
        "admitted_at": None,
        "assigned_at": None,
        "ended_by": None,
        "close_reason": None,
        "wrapup_code": None,
        "idle_warned_at": None,
        "position_prompted": None,
        "position_prompted_at": None,
    }


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


# ------------------------------------------------------------------- inbound, a run at a time


@dataclass(frozen=True)
class _Pending:
    """An inbound message of a run, with the key it threads under."""

    event: EventRow
    message: sinch_events.InboundMessage
    service: str
    app_id: str
    identity: str
    key: str


def thread_inbound_run(
    session: Session,
    run: list[tuple[EventRow, sinch_events.InboundMessage]],
    directory: Directory,
    now: datetime,
) -> list[Outcome]:
    """`thread_inbound` for consecutive inbound messages, in a few statements per run
    instead of several per message: one query for the messages stored before, one for the
    open conversations of every key, one for recently closed ones, then the inserts and
    updates in batches. The outcomes (one per message, in order) are those `thread_inbound`
    gives for the same messages one after another.

    The caller runs this inside a savepoint and, if anything raises, replays the run one
    message at a time with `process_event` (which marks a bad event failed and goes on).
    It works in SQL Core on the session's connection, so the caller flushes the session
    before and expires conversations and messages it holds after.
    """
    conn = session.connection()
    pending = []
    for event, message in run:
        service = event.service or ""
        app_id = event.app_id or ""
        identity = sinch_events.normalize_identity(message.channel, message.identity)
        key = open_key(service, app_id, message.channel, identity)
        pending.append(_Pending(event, message, service, app_id, identity, key))
    # .all(): dict() would take a Result itself for a mapping (it has keys())
    stored: dict[str, int] = dict(
        conn.execute(
            select(_messages.c.sinch_message_id, _messages.c.conversation_id).where(
                _messages.c.sinch_message_id.in_({p.message.message_id for p in pending})
            )
        ).all()
    )
    open_ids: dict[str, int] = dict(
        conn.execute(
            select(_conversations.c.open_key, _conversations.c.id).where(
                _conversations.c.open_key.in_({p.key for p in pending})
            )
        ).all()
    )
    window = timedelta(seconds=directory.chat_settings.reopen_window_seconds)
    closed = _recently_closed(conn, [p for p in pending if p.key not in open_ids], now - window)
    outcomes: list[Outcome] = []
    inserts: list[tuple[dict[str, object], str | None, str | None]] = []
    touched: dict[int, dict[str, object]] = {}
    for p in pending:
        message = p.message
        existing = stored.get(message.message_id)
        if existing is not None:
            outcomes.append(Outcome("done", "message stored before", existing))
            continue
        opened = False
        conversation_id = open_ids.get(p.key)
        if conversation_id is None and p.key in closed:
            conversation_id = _reopen(session, conn, closed.pop(p.key), p.key, now)
            opened = True
        if conversation_id is None:
            queue = directory.queue_for(p.app_id, message.channel)
            if queue is None:
                outcomes.append(_unrouted(p.app_id, message.channel))
                continue
            conversation_id, opened = _open(conn, p, queue.name, now)
        open_ids[p.key] = conversation_id
        stored[message.message_id] = conversation_id
        content = message.content
        media = (
            (content.media_url, content.filename)
            if content.kind in ("media", "media_card") and content.media_url
            else (None, None)
        )
        row = {
            "conversation_id": conversation_id,
            "direction": "inbound",
            "sinch_message_id": message.message_id,
            "kind": content.kind,
            "text": _storable(content.text if content.text is not None else content.preview()),
            "content": content.raw,
            "status": "received",
            "reply_to": message.reply_to,
            "created_at": message.accept_time or now,
            "status_at": now,
            "event_id": p.event.id,
        }
        inserts.append((row, *media))
        changes = touched.setdefault(
            conversation_id,
            {"last_inbound_at": now, "last_activity_at": now, "customer_typing_at": None},
        )
        if message.conversation_id:
            changes["sinch_conversation_id"] = message.conversation_id
        if message.contact_id:
            changes["sinch_contact_id"] = message.contact_id
        if message.sender_id:
            changes["sender_id"] = message.sender_id
        outcomes.append(Outcome("done", None, conversation_id, opened))
    _insert_messages(conn, inserts, now)
    _update_conversations(conn, touched)
    return outcomes


def _recently_closed(conn: Connection, pending: list[_Pending], since: datetime) -> dict[str, int]:
    """Key -> the most recent conversation of that key closed since `since`."""
    by_scope: dict[tuple[str, str, str], set[str]] = {}
    for p in pending:
        by_scope.setdefault((p.service, p.app_id, p.message.channel), set()).add(p.identity)
    found: dict[str, int] = {}
    c = _conversations.c
    for (service, app_id, channel), identities in by_scope.items():
        rows = conn.execute(
            select(c.id, c.identity)
            .where(
                c.service == service,
                c.app_id == app_id,
                c.channel == channel,
                c.identity.in_(identities),
                c.status == "closed",
                c.closed_at >= since,
            )
            .order_by(c.closed_at.desc(), c.id.desc())
        )
        for conversation_id, identity in rows:
            found.setdefault(open_key(service, app_id, channel, identity), conversation_id)
    return found


def _reopen(
    session: Session, conn: Connection, conversation_id: int, key: str, now: datetime
) -> int:
    """Reopen a closed conversation under `key`; if another node opened one for the key
    meanwhile (the unique `open_key`), use theirs instead."""
    c = _conversations.c
    savepoint = session.begin_nested()
    try:
        conn.execute(
            update(_conversations)
            .where(c.id == conversation_id)
            .values(
                status="waiting",
                open_key=key,
                closed_at=None,
                reopen_count=c.reopen_count + 1,
                preferred_agent=c.assigned_agent,
                assigned_agent=None,
                **_reopened_values(now),
            )
        )
    except IntegrityError:
        savepoint.rollback()
        return _theirs(conn, key)
    savepoint.commit()
    return conversation_id


def _open(conn: Connection, p: _Pending, queue: str, now: datetime) -> tuple[int, bool]:
    """A new open conversation for the key, unless another node opened one at the same
    instant: then theirs, and False."""
    message = p.message
    new_id = conn.execute(
        _insert_open(conn.dialect.name),
        {
            "service": p.service,
            "app_id": p.app_id,
            "channel": message.channel,
            "identity": p.identity,
            "identity_app_id": message.identity_app_id or None,
            "queue": queue,
            "status": "waiting",
            "open_key": p.key,
            "opened_at": now,
            "waiting_since": now,
            "last_activity_at": now,
            "reopen_count": 0,
            "sinch_conversation_id": message.conversation_id or None,
            "sinch_contact_id": message.contact_id or None,
            "sender_id": message.sender_id or None,
        },
    ).scalar()
    if new_id is not None:
        return int(new_id), True
    return _theirs(conn, p.key), False


@functools.cache
def _insert_open(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (open_key) DO NOTHING RETURNING id``, built once."""
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        dialect_insert(_conversations)
        .on_conflict_do_nothing(index_elements=["open_key"])
        .returning(_conversations.c.id)
    )


def _theirs(conn: Connection, key: str) -> int:
    theirs = conn.execute(
        select(_conversations.c.id).where(_conversations.c.open_key == key)
    ).scalar()
    if theirs is None:
        raise RuntimeError(f"no open conversation for {key!r} after a conflict on it")
    return int(theirs)


def _unrouted(app_id: str, channel: str) -> Outcome:
    subchannel = CHANNEL_TO_SUBCHANNEL.get(channel)
    address = (
        f"{app_id}@{subchannel}.sinchconversation.com"
        if subchannel
        else f"(no subchannel for channel {channel})"
    )
    return Outcome("unrouted", f"no queue has the address {address}")


def _insert_messages(
    conn: Connection,
    inserts: list[tuple[dict[str, object], str | None, str | None]],
    now: datetime,
) -> None:
    """Insert in order (message ids follow the events' order): plain messages many at a
    time, a media message on its own, since its attachment needs the message id."""
    plain: list[dict[str, object]] = []
    for row, media_url, filename in inserts:
        if media_url is None:
            plain.append(row)
            continue
        if plain:
            conn.execute(insert(_messages), plain)
            plain = []
        message_id = conn.execute(insert(_messages).returning(_messages.c.id), row).scalar_one()
        conn.execute(
            insert(_attachments),
            {
                "message_id": message_id,
                "token": new_token(),
                "source_url": media_url,
                "state": "pending",
                "filename": _storable(filename)[:300] if filename else None,
                "next_attempt_at": now,
            },
        )
    if plain:
        conn.execute(insert(_messages), plain)


def _update_conversations(conn: Connection, touched: dict[int, dict[str, object]]) -> None:
    """One executemany per set of changed columns."""
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for conversation_id, changes in touched.items():
        columns = tuple(sorted(changes))
        groups.setdefault(columns, []).append({"b_id": conversation_id, **changes})
    for columns, rows in groups.items():
        conn.execute(
            update(_conversations)
            .where(_conversations.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in columns}),
            rows,
        )


# --------------------------------------------------------------------------- receipts


def sweep_parked_reports(session: Session, now: datetime, *, limit: int = 500) -> list[int]:
    """Apply parked reports whose message has learnt its Sinch id since.

    A report can arrive while the sender is still committing the send's answer: the report's
    transaction parks it because it cannot see the message yet, and the sender's transaction
    (`apply_parked_reports`) may not see the report yet either. Rather than make the two wait
    for each other (lock waits across worker threads can deadlock), the processor sweeps: on
    each pass it applies what is parked for a now-known message, so a report is late by at
    most one pass, never lost. Returns the ids of the messages it moved.
    """
    rows = session.execute(
        select(MessageRow, DeliveryReportRow)
        .join(DeliveryReportRow, DeliveryReportRow.sinch_message_id == MessageRow.sinch_message_id)
        .where(
            DeliveryReportRow.applied.is_(False),
            # a report waits seconds for its send's answer; older parked ones are for
            # messages we never sent (another system on the same app) and stay parked
            DeliveryReportRow.received_at >= now - SWEEP_WINDOW,
            MessageRow.direction == "outbound",
        )
        .order_by(DeliveryReportRow.id)
        .limit(limit)
    ).all()
    by_message: dict[int, tuple[MessageRow, list[DeliveryReportRow]]] = {}
    for message, report in rows:
        by_message.setdefault(message.id, (message, []))[1].append(report)
    for message, reports in by_message.values():
        apply_reports(message, reports, now)
    return list(by_message)


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
