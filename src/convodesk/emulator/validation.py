"""The synchronous half of Sinch's two-stage validation of ``messages:send``.

Malformed requests get a 400 naming the field; problems only the channel can see (an identity
that cannot exist, the WhatsApp window, an unreachable media URL) are accepted here and come
back later as a FAILED delivery report (reference section 4, "Validation is two-stage").
Unknown fields are refused, as Sinch's JSON-to-protobuf gateway refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from convodesk.domain.config_model import CHANNELS
from convodesk.emulator.errors import invalid

MESSAGE_KINDS = (
    "text_message",
    "media_message",
    "template_message",
    "choice_message",
    "card_message",
    "carousel_message",
    "location_message",
    "list_message",
    "contact_info_message",
)
_MESSAGE_COMPANIONS = (
    "agent",
    "explicit_channel_message",
    "explicit_channel_omni_message",
    "channel_specific_message",
)
_TOP_LEVEL = {
    "app_id",
    "recipient",
    "message",
    "callback_url",
    "channel_priority_order",
    "channel_properties",
    "message_metadata",
    "conversation_metadata",
    "queue",
    "ttl",
    "processing_strategy",
    "correlation_id",
    "conversation_metadata_update_strategy",
    "message_content_type",
}
_ENUMS = {
    "queue": ("NORMAL_PRIORITY", "HIGH_PRIORITY"),
    "processing_strategy": ("DEFAULT", "DISPATCH_ONLY"),
    "conversation_metadata_update_strategy": ("REPLACE", "MERGE_PATCH"),
    "message_content_type": ("CONTENT_UNKNOWN", "CONTENT_MARKETING", "CONTENT_NOTIFICATION"),
}
_LIST_FIELDS = {
    "choice_message": "choices",
    "carousel_message": "cards",
    "list_message": "sections",
}
_TTL_RE = re.compile(r"^([0-9]{1,12})(?:\.[0-9]+)?s$")
_TTL_MIN, _TTL_MAX = 3, 315_576_000_000


@dataclass(frozen=True, kw_only=True)
class Target:
    channel: str
    identity: str


@dataclass(frozen=True, kw_only=True)
class SendRequest:
    app_id: str
    contact_id: str | None
    identities: tuple[Target, ...]
    channel_priority_order: tuple[str, ...]
    message_kind: str
    template_channels: frozenset[str]
    media_urls: tuple[str, ...]
    message_metadata: str
    correlation_id: str
    callback_url: str | None
    body: Mapping[str, Any]


def parse_send_request(body: object, *, processing_mode: str | None = None) -> SendRequest:
    """Check a decoded ``messages:send`` body; raise ApiError(400) naming the first bad field."""
    if not isinstance(body, dict):
        raise invalid("body", "expected a JSON object")
    for key in body:
        if key not in _TOP_LEVEL:
            raise invalid(key, "unknown field")
    app_id = _string(body, "app_id", "app_id", required=True)
    assert app_id is not None
    contact_id, identities = _recipient(body.get("recipient"))
    if contact_id is not None and processing_mode == "DISPATCH":
        raise invalid(
            "recipient.contact_id",
            "an app in DISPATCH processing mode has no contacts; "
            "address the recipient with identified_by.channel_identities",
        )
    kind, template_channels, media = _message(body.get("message"))
    order = _channel_list(body.get("channel_priority_order"), "channel_priority_order")
    properties = body.get("channel_properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise invalid("channel_properties", "expected an object of string values")
        for key, value in properties.items():
            if not isinstance(value, str):
                raise invalid(f"channel_properties.{key}", "expected a string")
            if len(value) > 1024:
                raise invalid(f"channel_properties.{key}", "at most 1024 characters")
    metadata = _string(body, "message_metadata", "message_metadata", max_len=1024) or ""
    correlation = _string(body, "correlation_id", "correlation_id", max_len=128) or ""
    callback_url = _string(body, "callback_url", "callback_url", max_len=742)
    if callback_url is not None and not re.match(r"^https?://", callback_url):
        raise invalid("callback_url", "expected an http:// or https:// URL")
    conversation_metadata = body.get("conversation_metadata")
    if conversation_metadata is not None and not isinstance(conversation_metadata, dict):
        raise invalid("conversation_metadata", "expected a JSON object")
    for field, allowed in _ENUMS.items():
        value = body.get(field)
        if value is not None and value not in allowed:
            raise invalid(field, f"expected one of {', '.join(allowed)}")
    _ttl(body.get("ttl"))
    return SendRequest(
        app_id=app_id,
        contact_id=contact_id,
        identities=identities,
        channel_priority_order=order,
        message_kind=kind,
        template_channels=template_channels,
        media_urls=media,
        message_metadata=metadata,
        correlation_id=correlation,
        callback_url=callback_url,
        body=body,
    )


def _string(
    data: Mapping[str, Any],
    key: str,
    path: str,
    *,
    required: bool = False,
    max_len: int | None = None,
    allow_empty: bool = False,
) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise invalid(path, "required field is missing")
        return None
    if not isinstance(value, str):
        raise invalid(path, "expected a string")
    if required and not allow_empty and not value:
        raise invalid(path, "must not be empty")
    if max_len is not None and len(value) > max_len:
        raise invalid(path, f"at most {max_len} characters")
    return value


def _object(value: object, path: str, *, required: bool = True) -> dict[str, Any] | None:
    if value is None:
        if required:
            raise invalid(path, "required field is missing")
        return None
    if not isinstance(value, dict):
        raise invalid(path, "expected a JSON object")
    return value


def _channel_list(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid(path, "expected a list of channels")
    out: list[str] = []
    for i, item in enumerate(value):
        if item not in CHANNELS:
            raise invalid(f"{path}[{i}]", f"unknown channel {item!r}")
        out.append(item)
    return tuple(out)


def _recipient(value: object) -> tuple[str | None, tuple[Target, ...]]:
    recipient = _object(value, "recipient")
    assert recipient is not None
    for key in recipient:
        if key not in ("contact_id", "identified_by"):
            raise invalid(f"recipient.{key}", "unknown field")
    has_contact = "contact_id" in recipient
    has_identities = "identified_by" in recipient
    if has_contact == has_identities:
        raise invalid("recipient", "expected exactly one of contact_id or identified_by")
    if has_contact:
        contact_id = _string(recipient, "contact_id", "recipient.contact_id", required=True)
        return contact_id, ()
    identified = _object(recipient["identified_by"], "recipient.identified_by")
    assert identified is not None
    for key in identified:
        if key != "channel_identities":
            raise invalid(f"recipient.identified_by.{key}", "unknown field")
    raw = identified.get("channel_identities")
    path = "recipient.identified_by.channel_identities"
    if not isinstance(raw, list) or not raw:
        raise invalid(path, "expected a non-empty list of {channel, identity}")
    targets: list[Target] = []
    for i, item in enumerate(raw):
        entry = _object(item, f"{path}[{i}]")
        assert entry is not None
        for key in entry:
            if key not in ("channel", "identity", "app_id"):
                raise invalid(f"{path}[{i}].{key}", "unknown field")
        channel = entry.get("channel")
        if channel not in CHANNELS:
            raise invalid(f"{path}[{i}].channel", f"unknown channel {channel!r}")
        identity = _string(entry, "identity", f"{path}[{i}].identity", required=True)
        _string(entry, "app_id", f"{path}[{i}].app_id")
        assert identity is not None
        targets.append(Target(channel=channel, identity=identity))
    return None, tuple(targets)


def _message(value: object) -> tuple[str, frozenset[str], tuple[str, ...]]:
    message = _object(value, "message")
    assert message is not None
    kinds = [key for key in message if key in MESSAGE_KINDS]
    for key in message:
        if key not in MESSAGE_KINDS and key not in _MESSAGE_COMPANIONS:
            raise invalid(f"message.{key}", "unknown field")
    if len(kinds) != 1:
        raise invalid("message", f"expected exactly one of {', '.join(MESSAGE_KINDS)}")
    kind = kinds[0]
    content = _object(message[kind], f"message.{kind}")
    assert content is not None
    path = f"message.{kind}"
    media: list[str] = []
    templates: frozenset[str] = frozenset()
    if kind == "text_message":
        _string(content, "text", f"{path}.text", required=True)
    elif kind == "media_message":
        url = _string(content, "url", f"{path}.url", required=True)
        assert url is not None
        media.append(url)
        _string(content, "thumbnail_url", f"{path}.thumbnail_url")
        _string(content, "filename_override", f"{path}.filename_override")
    elif kind == "template_message":
        templates = _template(content, path)
    elif kind == "location_message":
        coordinates = _object(content.get("coordinates"), f"{path}.coordinates")
        assert coordinates is not None
        for axis, limit in (("latitude", 90), ("longitude", 180)):
            number = coordinates.get(axis)
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise invalid(f"{path}.coordinates.{axis}", "expected a number")
            if abs(number) > limit:
                raise invalid(f"{path}.coordinates.{axis}", f"must be within +-{limit}")
    elif kind == "card_message":
        card_media = _object(content.get("media_message"), f"{path}.media_message", required=False)
        if card_media is not None:
            url = _string(card_media, "url", f"{path}.media_message.url", required=True)
            assert url is not None
            media.append(url)
    elif kind in ("choice_message", "carousel_message", "list_message"):
        items_key = _LIST_FIELDS[kind]
        items = content.get(items_key)
        if not isinstance(items, list) or not items:
            raise invalid(f"{path}.{items_key}", "expected a non-empty list")
    agent = _object(message.get("agent"), "message.agent", required=False)
    if agent is not None:
        _string(agent, "display_name", "message.agent.display_name")
        agent_type = agent.get("type")
        if agent_type is not None and agent_type not in ("HUMAN", "BOT", "UNKNOWN_AGENT_TYPE"):
            raise invalid("message.agent.type", "expected HUMAN, BOT or UNKNOWN_AGENT_TYPE")
    return kind, templates, tuple(media)


def _template(content: Mapping[str, Any], path: str) -> frozenset[str]:
    channel_template = content.get("channel_template")
    omni = content.get("omni_template")
    if channel_template is None and omni is None:
        raise invalid(path, "expected channel_template or omni_template")
    channels: set[str] = set()
    if channel_template is not None:
        per_channel = _object(channel_template, f"{path}.channel_template")
        assert per_channel is not None
        for channel, reference in per_channel.items():
            where = f"{path}.channel_template.{channel}"
            if channel not in CHANNELS:
                raise invalid(where, "unknown channel")
            ref = _object(reference, where)
            assert ref is not None
            _string(ref, "template_id", f"{where}.template_id", required=True)
            _string(ref, "language_code", f"{where}.language_code")
            _parameters(ref.get("parameters"), f"{where}.parameters")
            channels.add(channel)
    if omni is not None:
        ref = _object(omni, f"{path}.omni_template")
        assert ref is not None
        _string(ref, "template_id", f"{path}.omni_template.template_id", required=True)
        _parameters(ref.get("parameters"), f"{path}.omni_template.parameters")
    return frozenset(channels)


def _parameters(value: object, path: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid(path, "expected an object of string values")
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid(f"{path}.{key}", "expected a string")


def _ttl(value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        raise invalid("ttl", "expected a duration such as '86400s'")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (match := _TTL_RE.match(value)):
        seconds = int(match.group(1))
    else:
        raise invalid("ttl", "expected a duration such as '86400s'")
    if not _TTL_MIN <= seconds <= _TTL_MAX:
        raise invalid("ttl", f"must be between {_TTL_MIN}s and {_TTL_MAX}s")
