"""Agent replies: `send_agent_reply` saves the message and its outbox row in one
transaction and returns at once (202); the sender worker delivers it.

Accepted bodies (exactly one content):

- ``{"text": "..."}``: free text (at most 4096 characters);
- ``{"template": {"name": "order_update", "language": "sv_SE", "parameters": {...}}}``:
  a WhatsApp template, the only way to write on WhatsApp outside the 24-hour window;
- ``{"attachment": "<token>"}``: a file uploaded to this conversation and not sent yet
  (`services/attachments.py`), sent as a media message; it needs a public URL
  (`chat_settings.attachment_base_url` or `public_base_url`, else 409).

On WhatsApp, anything but a template is refused (409) while the customer's 24-hour window is
closed (no inbound message in the last 24 hours); the answer names the templates configured
for the conversation's app and carries them as ``"templates"``. A template must be one
configured for that app (`messaging_services[].whatsapp_templates`) in that language, and its
parameters exactly the configured keys (422 otherwise, naming what is available, missing or
unknown). Templates are WhatsApp's: on other channels they are refused (422).

``Idempotency-Key``: a client that repeats a request with the same key (per API token) gets
the message of the first request back and nothing is sent twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from convodesk.domain.config_model import Problem, WhatsAppTemplate
from convodesk.runtime import Runtime
from convodesk.services import attachments as attachment_service
from convodesk.services import chat_events
from convodesk.services import conversations as conversation_service
from convodesk.services.conversations import MessageItem, message_item
from convodesk.services.errors import ConflictError, InvalidRequestError
from convodesk.storage import attachments as attachments_sql
from convodesk.storage import config_store
from convodesk.storage.api_tokens import Principal
from convodesk.storage.conversations import MessageWithAttachments
from convodesk.storage.db import transaction
from convodesk.storage.tables import AgentRow, ConversationRow, MessageRow, OutboxRow

MAX_TEXT = 4096
CONTENT_FIELDS = ("text", "template", "attachment")
MAX_ATTACHMENT_TOKEN = attachments_sql.MAX_TOKEN
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Reply:
    message: MessageItem
    created: bool  # False when an Idempotency-Key matched an earlier request


def _whatsapp_rules(
    session: Session,
    conversation: ConversationRow,
    kind: str,
    text: str | None,
    content: dict[str, Any],
    now: datetime,
) -> str | None:
    """WhatsApp's rules for a reply; returns the text to store (a template's filled-in
    preview, when it has one).

    Templates only on WhatsApp, and only as configured for the conversation's app; anything
    else on WhatsApp only while the customer's 24-hour window is open.
    """
    if conversation.channel != "WHATSAPP":
        if kind == "template":
            raise InvalidRequestError(
                [
                    Problem(
                        path="template",
                        message="templates are for WhatsApp only: this conversation is on "
                        f"{conversation.channel}, where any text can be sent",
                    )
                ]
            )
        return text
    templates = config_store.whatsapp_templates(session, conversation.service, conversation.app_id)
    if kind == "template":
        return _check_template(templates, content["template"], conversation.app_id)
    window = conversation_service.whatsapp_window(
        conversation.channel, conversation.last_inbound_at, now
    )
    if window is not None and not window.open:
        offer = (
            f": {_listed(templates)}"
            if templates
            else f", but app {conversation.app_id} has none configured (an administrator adds "
            f"them to messaging service {conversation.service}, whatsapp_templates)"
        )
        raise ConflictError(
            "the WhatsApp 24-hour window is closed (the customer has not written in the last "
            f"24 hours): send an approved template instead{offer}",
            data={
                "whatsapp_window": {"open": False, "closes_at": _iso(window.closes_at)},
                "templates": _templates_json(templates),
            },
        )
    return text


def _check_template(
    templates: tuple[WhatsAppTemplate, ...], requested: dict[str, Any], app_id: str
) -> str:
    name, language = requested["name"], requested["language"]
    parameters: dict[str, str] = requested["parameters"]
    template = next((t for t in templates if (t.name, t.language) == (name, language)), None)
    if template is None:
        languages = [t.language for t in templates if t.name == name]
        if languages:
            problem = Problem(
                path="template.language",
                message=f"template {name} has no language {language!r} for this conversation's "
                f"app; its languages: {', '.join(languages)}",
            )
        else:
            available = _listed(templates) if templates else "none are configured"
            problem = Problem(
                path="template.name",
                message=f"no template {name!r} is configured for app {app_id}; "
                f"its templates: {available}",
            )
        raise InvalidRequestError([problem], data={"templates": _templates_json(templates)})
    expected = ", ".join(template.parameters) or "none"
    missing = [p for p in template.parameters if p not in parameters]
    unknown = sorted(p for p in parameters if p not in template.parameters)
    problems = [
        Problem(
            path="template.parameters",
            message=f"{label} {', '.join(keys)}: template {name} ({language}) takes exactly "
            f"these parameters: {expected}",
        )
        for label, keys in (("missing", missing), ("unknown", unknown))
        if keys
    ]
    if problems:
        raise InvalidRequestError(problems)
    if template.text is None:
        return f"[template {name} ({language})]"
    return _PLACEHOLDER_RE.sub(lambda m: parameters.get(m.group(1), m.group(0)), template.text)


def _listed(templates: tuple[WhatsAppTemplate, ...]) -> str:
    return ", ".join(f"{t.name} ({t.language})" for t in templates)


def _templates_json(templates: tuple[WhatsAppTemplate, ...]) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "language": t.language,
            "parameters": list(t.parameters),
            "text": t.text,
        }
        for t in templates
    ]


def _iso(value: datetime | None) -> str | None:
    """As the API writes times (``2024-06-10T06:04:00Z``)."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _content(body: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    """(kind, text, content) of a valid body, or InvalidRequestError naming every problem."""
    problems: list[Problem] = []
    given = [k for k in CONTENT_FIELDS if k in body]
    unknown = sorted(set(body) - set(CONTENT_FIELDS))
    for key in unknown:
        problems.append(
            Problem(path=key, message="unknown field: expected text, template or attachment")
        )
    if len(given) != 1:
        problems.append(
            Problem(path="", message="expected exactly one of text, template or attachment")
        )
        raise InvalidRequestError(problems)
    if given == ["attachment"]:
        token = body["attachment"]
        if not isinstance(token, str) or not token or len(token) > MAX_ATTACHMENT_TOKEN:
            problems.append(
                Problem(path="attachment", message="expected the token of an upload (a string)")
            )
        if problems:
            raise InvalidRequestError(problems)
        return "media", None, {"attachment": {"token": token}}
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
            text = _whatsapp_rules(session, conversation, kind, text, content, now)
            upload = None
            if kind == "media":
                upload = attachment_service.take_upload(
                    session, runtime.config, conversation, content["attachment"]["token"]
                )
                content = attachment_service.media_content(upload)
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
            if upload is not None:
                attachment_service.link_upload(upload, message)
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
            sent = [upload] if upload is not None else []
            reply = Reply(
                message_item(MessageWithAttachments(message=message, attachments=sent)),
                created=True,
            )
            events = [
                chat_events.message_created(conversation, reply.message),
                chat_events.conversation_updated(conversation, now=now),
            ]
        runtime.live.publish(events)  # after the commit: the desktops can read it
        return reply
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
    sent = attachments_sql.of_message(session, message.id)
    return message_item(MessageWithAttachments(message=message, attachments=sent))
