"""Agent replies: `send_agent_reply` saves the message and its outbox row in one
transaction and returns at once (202); the sender worker delivers it.

Accepted bodies (exactly one content):

- ``{"text": "..."}``: free text (at most 4096 characters);
- ``{"template": {"name": "order_update", "language": "sv_SE", "parameters": {...}}}``:
  a WhatsApp template, the only way to write on WhatsApp outside the 24-hour window.

On WhatsApp, free text is refused while the customer's 24-hour window is closed (no
inbound message in the last 24 hours), with a message that says to send a template.

``Idempotency-Key``: a client that repeats a request with the same key (per API token) gets
the message of the first request back and nothing is sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from convodesk.domain.config_model import Problem
from convodesk.runtime import Runtime
from convodesk.services import conversations as conversation_service
from convodesk.services.conversations import MessageItem, message_item
from convodesk.services.errors import ConflictError, InvalidRequestError
from convodesk.storage.api_tokens import Principal
from convodesk.storage.conversations import MessageWithAttachments
from convodesk.storage.db import transaction
from convodesk.storage.tables import AgentRow, MessageRow, OutboxRow

WHATSAPP_WINDOW = timedelta(hours=24)
MAX_TEXT = 4096


@dataclass(frozen=True)
class Reply:
    message: MessageItem
    created: bool  # False when an Idempotency-Key matched an earlier request


def whatsapp_window_open(last_inbound_at: datetime | None, now: datetime) -> bool:
    if last_inbound_at is None:
        return False
    aware = last_inbound_at if last_inbound_at.tzinfo else last_inbound_at.replace(tzinfo=UTC)
    return now - aware < WHATSAPP_WINDOW


def _content(body: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """(kind, text, content) of a valid body, or InvalidRequestError naming every problem."""
    problems: list[Problem] = []
    given = [k for k in ("text", "template") if k in body]
    unknown = sorted(set(body) - {"text", "template"})
    for key in unknown:
        problems.append(Problem(path=key, message="unknown field: expected text or template"))
    if len(given) != 1:
        problems.append(Problem(path="", message="expected exactly one of text or template"))
        raise InvalidRequestError(problems)
    if given == ["text"]:
        text = body["text"]
        if not isinstance(text, str) or not text.strip():
            problems.append(Problem(path="text", message="expected a non-empty string"))
        elif len(text) > MAX_TEXT:
            problems.append(Problem(path="text", message=f"at most {MAX_TEXT} characters"))
        if problems:
            raise InvalidRequestError(problems)
        return "text", text, {}
    template = body["template"]
    if not isinstance(template, dict):
        raise InvalidRequestError(
            [Problem(path="template", message="expected an object with name, language, parameters")]
        )
    name, language, params = (
        template.get("name"),
        template.get("language"),
        template.get("parameters", {}),
    )
    if not isinstance(name, str) or not name:
        problems.append(Problem(path="template.name", message="expected the template's name"))
    if not isinstance(language, str) or not language:
        problems.append(
            Problem(path="template.language", message="expected a language code such as sv_SE")
        )
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        problems.append(
            Problem(path="template.parameters", message="expected an object of string values")
        )
    for key in sorted(set(template) - {"name", "language", "parameters"}):
        problems.append(
            Problem(
                path=f"template.{key}", message="unknown field: expected name, language, parameters"
            )
        )
    if problems:
        raise InvalidRequestError(problems)
    content = {"template": {"name": name, "language": language, "parameters": params}}
    return "template", f"[template {name} ({language})]", content


def send_agent_reply(
    runtime: Runtime,
    conversation_id: int,
    principal: Principal,
    body: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Reply:
    kind, text, content = _content(body)
    now = now or datetime.now(UTC)
    key = f"{principal.token_id}:{idempotency_key}"[:200] if idempotency_key else None
    try:
        with transaction(runtime.sessions) as session:
            if key is not None and (earlier := _by_key(session, key)) is not None:
                return Reply(earlier, created=False)
            conversation = conversation_service.visible_conversation(
                session, principal, conversation_id
            )
            if conversation.status == "closed":
                raise ConflictError("the conversation is closed")
            if (
                kind == "text"
                and conversation.channel == "WHATSAPP"
                and not whatsapp_window_open(conversation.last_inbound_at, now)
            ):
                raise ConflictError(
                    "the WhatsApp 24-hour window is closed (the customer has not written in the "
                    "last 24 hours): send an approved template instead"
                )
            author_name = None
            if principal.agent_login:
                author_name = session.scalar(
                    select(AgentRow.display_name).where(AgentRow.login == principal.agent_login)
                )
            message = MessageRow(
                conversation_id=conversation.id,
                direction="outbound",
                kind=kind,
                text=text,
                content=content,
                status="pending",
                created_at=now,
                status_at=now,
                author=principal.agent_login,
                author_name=author_name,
            )
            session.add(message)
            session.flush()
            session.add(
                OutboxRow(
                    message_id=message.id,
                    state="pending",
                    next_attempt_at=now,
                    idempotency_key=key,
                    created_at=now,
                    updated_at=now,
                )
            )
            conversation.last_activity_at = now
            session.flush()
            return Reply(
                message_item(MessageWithAttachments(message=message, attachments=[])), created=True
            )
    except IntegrityError:
        # The same key raced in from a parallel request: answer with the one that won.
        if key is None:
            raise
        with transaction(runtime.sessions) as session:
            earlier = _by_key(session, key)
        if earlier is None:
            raise
        return Reply(earlier, created=False)


def _by_key(session: Session, key: str) -> MessageItem | None:
    message = session.scalar(
        select(MessageRow)
        .join(OutboxRow, OutboxRow.message_id == MessageRow.id)
        .where(OutboxRow.idempotency_key == key)
    )
    if message is None:
        return None
    return message_item(MessageWithAttachments(message=message, attachments=[]))
