"""Table definitions (SQLAlchemy 2 declarative). Tables are plural snake_case; every
timestamp is timezone-aware and named ``*_at``.

Secrets are stored only as Fernet tokens (`storage.crypto`); agent passwords and API tokens
only as hashes. The ``*_env`` columns remember which ``${VAR}`` a secret came from, so
`config export` can write the reference back instead of the value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class MessagingServiceRow(Base):
    __tablename__ = "messaging_services"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    service_connection: Mapped[str] = mapped_column(String(500))
    region: Mapped[str] = mapped_column(String(8))
    project_id: Mapped[str] = mapped_column(String(100))
    webhook_secret_enc: Mapped[str] = mapped_column(Text)
    webhook_secret_env: Mapped[str | None] = mapped_column(String(200))
    triggers: Mapped[list[str]] = mapped_column(JSON)
    # The approved WhatsApp templates of the service's apps, as the config file writes them
    # (``[{app_id, name, language, parameters, text}]``); None before any were configured.
    whatsapp_templates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    credentials: Mapped[list[ServiceCredentialRow]] = relationship(
        back_populates="service",
        cascade="all, delete-orphan",
        order_by="ServiceCredentialRow.position",
    )


class ServiceCredentialRow(Base):
    """An outbound ``KEYID@APPID`` entry. An app belongs to one service only."""

    __tablename__ = "service_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(
        ForeignKey("messaging_services.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    key_id: Mapped[str] = mapped_column(String(200))
    app_id: Mapped[str] = mapped_column(String(26), unique=True)
    secret_enc: Mapped[str] = mapped_column(Text)
    secret_env: Mapped[str | None] = mapped_column(String(200))

    service: Mapped[MessagingServiceRow] = relationship(back_populates="credentials")


class QueueRow(Base):
    __tablename__ = "queues"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    type: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    max_size: Mapped[int | None] = mapped_column(Integer)
    offer_timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    sms_sender_id: Mapped[str | None] = mapped_column(String(40))
    business_hours: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    addresses: Mapped[list[QueueAddressRow]] = relationship(
        back_populates="queue", cascade="all, delete-orphan", order_by="QueueAddressRow.position"
    )


class QueueAddressRow(Base):
    """``APPID@SUBCHANNEL.sinchconversation.com``; an address belongs to one queue."""

    __tablename__ = "queue_addresses"
    __table_args__ = (UniqueConstraint("app_id", "subchannel"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    app_id: Mapped[str] = mapped_column(String(26))
    subchannel: Mapped[str] = mapped_column(String(20))

    queue: Mapped[QueueRow] = relationship(back_populates="addresses")


class ChatSettingsRow(Base):
    """A single row (id 1) holding the chat settings as the config file writes them."""

    __tablename__ = "chat_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AgentQueueRow(Base):
    __tablename__ = "agent_queues"

    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    queue_id: Mapped[int] = mapped_column(
        ForeignKey("queues.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)


class AgentRow(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(10))
    max_chats: Mapped[int | None] = mapped_column(Integer)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    password_env: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    queue_links: Mapped[list[AgentQueueRow]] = relationship(
        cascade="all, delete-orphan", order_by="AgentQueueRow.position"
    )


class ApiTokenRow(Base):
    """A Bearer token, stored as its SHA-256: the token itself is shown once, at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(10))
    agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    description: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


# --------------------------------------------------------------------------- intake


class EventRow(Base):
    """The event log: every callback, accepted or rejected, with its raw body.

    `dedup_key` is set only on the accepted copy of a callback (unique), so a second copy
    finds it taken and is logged with outcome ``duplicate`` and no effect. `state` is the
    processing state of accepted callbacks: ``pending`` until the Chain Matcher has run.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_state_id", "state", "id"),
        Index("ix_events_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    service: Mapped[str | None] = mapped_column(String(100), index=True)
    trigger: Mapped[str | None] = mapped_column(String(60), index=True)
    app_id: Mapped[str | None] = mapped_column(String(40), index=True)
    channel: Mapped[str | None] = mapped_column(String(40))
    identity: Mapped[str | None] = mapped_column(String(200), index=True)
    outcome: Mapped[str] = mapped_column(String(20), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(20), default="none")
    state_reason: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column()
    conversation_id: Mapped[int | None] = mapped_column(Integer, index=True)


class ConversationRow(Base):
    """A chat-like thread for one channel identity on one app.

    `open_key` is ``service|app|channel|identity`` while the conversation is open and NULL
    once it is closed; its unique index makes "one open conversation per key" hold even when
    two nodes thread the same customer at the same instant.
    """

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_match", "service", "app_id", "channel", "identity", "closed_at"),
        Index("ix_conversations_queue_status", "queue", "status"),
        Index("ix_conversations_status_waiting", "status", "waiting_since"),
        Index("ix_conversations_assigned", "assigned_agent", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service: Mapped[str] = mapped_column(String(100))
    app_id: Mapped[str] = mapped_column(String(40))
    channel: Mapped[str] = mapped_column(String(40))
    identity: Mapped[str] = mapped_column(String(200))
    identity_app_id: Mapped[str | None] = mapped_column(String(40))
    queue: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))  # waiting | active | closed
    open_key: Mapped[str | None] = mapped_column(String(400), unique=True)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()
    last_inbound_at: Mapped[datetime | None] = mapped_column()
    last_activity_at: Mapped[datetime] = mapped_column(default=utcnow)
    customer_typing_at: Mapped[datetime | None] = mapped_column()
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    sinch_conversation_id: Mapped[str | None] = mapped_column(String(40))
    sinch_contact_id: Mapped[str | None] = mapped_column(String(40))
    sender_id: Mapped[str | None] = mapped_column(String(100))
    # The Chat Server's part (services/routing.py, services/chat_server.py).
    # `assigned_agent`: the agent's login while active, kept after the close (who handled it);
    # a reopen moves it to `preferred_agent`, whom routing tries first.
    assigned_agent: Mapped[str | None] = mapped_column(String(64))
    preferred_agent: Mapped[str | None] = mapped_column(String(64))
    waiting_since: Mapped[datetime | None] = mapped_column()  # the queue order (oldest first)
    assigned_at: Mapped[datetime | None] = mapped_column()
    # When routing took the conversation in (size limit, welcome or business-hours prompt);
    # NULL until then, and again after a reopen.
    admitted_at: Mapped[datetime | None] = mapped_column()
    ended_by: Mapped[str | None] = mapped_column(String(64))  # a login, or "system"
    wrapup_code: Mapped[str | None] = mapped_column(String(100))
    close_reason: Mapped[str | None] = mapped_column(String(30))  # agent|inactivity|queue_full
    idle_warned_at: Mapped[datetime | None] = mapped_column()
    outside_hours_prompted_at: Mapped[datetime | None] = mapped_column()
    position_prompted: Mapped[int | None] = mapped_column(Integer)  # the position last told
    position_prompted_at: Mapped[datetime | None] = mapped_column()


class AgentPresenceRow(Base):
    """An agent's presence for routing; no row means offline.

    `idle_since` orders agents of equal load (longest idle first): set when the agent becomes
    ready, gets a conversation, or one of theirs ends or moves away. `missed_offers` counts
    offers let expire in a row (an answer, accept or reject, resets it).
    """

    __tablename__ = "agent_presence"

    agent_id: Mapped[int] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(20))  # ready | not_ready | offline
    since: Mapped[datetime] = mapped_column(default=utcnow)
    idle_since: Mapped[datetime] = mapped_column(default=utcnow)
    missed_offers: Mapped[int] = mapped_column(Integer, default=0)


class OfferRow(Base):
    """A waiting conversation offered to one agent.

    `state`: offered, then accepted, rejected, expired or withdrawn. `open_conversation_id`
    is the conversation's id while the offer is outstanding and NULL after: its unique index
    keeps one outstanding offer per conversation, whichever node makes it. `kind`: route
    (the routing pass), preferred (a reopened conversation back to its last agent), direct
    (a transfer to this agent).
    """

    __tablename__ = "offers"
    __table_args__ = (
        Index("ix_offers_state_expires", "state", "expires_at"),
        Index("ix_offers_agent_state", "agent_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    closed_at: Mapped[datetime | None] = mapped_column()
    open_conversation_id: Mapped[int | None] = mapped_column(Integer, unique=True)


class AssignmentLogRow(Base):
    """What happened to a conversation in the Chat Server, in order: assigned, transferred,
    ended, closed, reopened. Kept with the conversation (the transcript's other half)."""

    __tablename__ = "assignment_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(30))
    agent: Mapped[str | None] = mapped_column(String(64))  # whom it concerns
    queue: Mapped[str | None] = mapped_column(String(100))
    actor: Mapped[str | None] = mapped_column(String(64))  # who did it; "system" for timers
    detail: Mapped[str | None] = mapped_column(String(200))


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(10))  # inbound | outbound
    sinch_message_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(30))
    text: Mapped[str | None] = mapped_column(Text)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(30))
    reason_code: Mapped[str | None] = mapped_column(String(80))
    reason_text: Mapped[str | None] = mapped_column(Text)
    reply_to: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_at: Mapped[datetime] = mapped_column(default=utcnow)
    event_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    author: Mapped[str | None] = mapped_column(String(64))  # the agent's login (outbound)
    author_name: Mapped[str | None] = mapped_column(String(200))


class DeliveryReportRow(Base):
    """Every delivery report for an outbound message, in arrival order: the receipt history
    the agent sees, and a parking place for reports that arrive before the send answer
    (`applied` false until the Sinch message id is known)."""

    __tablename__ = "delivery_reports"
    __table_args__ = (
        Index("ix_delivery_reports_pending", "sinch_message_id", "applied"),
        Index("ix_delivery_reports_unapplied", "applied", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sinch_message_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(30))
    reason_code: Mapped[str | None] = mapped_column(String(80))
    reason_text: Mapped[str | None] = mapped_column(Text)
    # unique: replaying an event must not record its report twice
    event_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), unique=True
    )
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied: Mapped[bool] = mapped_column(default=False)


class AttachmentRow(Base):
    """A media file of a message, kept in our attachment store (Sinch's URLs expire).

    Inbound media (downloaded from Sinch) and agent uploads (media replies) both live here.
    `state`: pending (download to do), stored, failed (after the retries; the message stays),
    expired (the retention ran out: the file is deleted, the row stays for the transcript).
    `token` is the unguessable name under which `/sms/richcontent/{token}` serves it.
    An upload has `conversation_id` and `uploaded_by` and no `message_id` until a reply uses it.
    """

    __tablename__ = "attachments"
    __table_args__ = (
        Index("ix_attachments_state", "state", "next_attempt_at"),
        Index("ix_attachments_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    uploaded_by: Mapped[str | None] = mapped_column(String(100))
    token: Mapped[str] = mapped_column(String(64), unique=True)
    source_url: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))
    content_type: Mapped[str | None] = mapped_column(String(200))
    size: Mapped[int | None] = mapped_column(BigInteger)
    filename: Mapped[str | None] = mapped_column(String(300))
    path: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    stored_at: Mapped[datetime | None] = mapped_column()


# --------------------------------------------------------------------------- rate limits


class RateBucketRow(Base):
    """One token bucket of the send rate limits (`storage.rate_limits`), shared by every
    worker process and node. A row is created full on first use.

    ``updated_epoch`` is the bucket's own clock in Unix seconds, not a record timestamp: a
    float keeps the refill arithmetic exact to the microsecond on both databases, and it
    never moves backwards (`domain.token_bucket.take`).
    """

    __tablename__ = "rate_buckets"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    updated_epoch: Mapped[float] = mapped_column(Double)


# --------------------------------------------------------------------------- outbox


class OutboxRow(Base):
    """An agent reply still to be sent (or sent, failed, given up): one per outbound message,
    committed in the same transaction as the message.

    `state`: pending (due at `next_attempt_at`), sending (claimed until `lease_until`), done,
    failed (Sinch refused it for good), dead (retries exhausted; `convodesk outbox retry`).
    `idempotency_key` makes a client's retry of the same request harmless.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    message_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("messages.id", ondelete="CASCADE"),
        unique=True,
    )
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
