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
    DateTime,
    ForeignKey,
    Integer,
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
