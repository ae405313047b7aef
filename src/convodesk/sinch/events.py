"""Sinch Conversation API callbacks: raw body bytes -> typed, validated objects.

The wire parser of the callback intake (reference sections 2, 3, 6, 7). Pure: no I/O, no clock,
no database. The intake calls :func:`parse_callback` on the raw bytes it has just verified, uses
``trigger``, ``app_id`` and ``dedup_key`` to store the event, and the Chain Matcher calls it
again on the stored bytes to act on ``inbound``, ``delivery`` or ``event``.

A callback body names no trigger; the trigger follows from the one top-level key present
(:data:`TRIGGER_KEYS`, as the Sinch SDKs do). Kinds we act on (:data:`HANDLED_TRIGGERS`) are
validated field by field; the other known kinds are recognised, given a content key and kept
for the event log, their payload unchecked.

Rules this module keeps:

* Anything that is not a callback raises :class:`MalformedCallbackError`, whose message names
  the field (``message.channel_identity.identity: expected a non-empty string, got nothing``);
  no other exception escapes, whatever the bytes (the fuzz tests hold it to that).
* Required fields of handled kinds are strict. Optional fields are lenient: null, a wrong type
  or an unusable value reads as absent, since the raw body is kept anyway (``Callback.body``,
  ``Content.raw``) and a 400 for a field we don't need would only make Sinch retry.
* Unknown channels, statuses, content kinds and contact-event kinds are kept as they come.
* A body is rejected when it is JSON we could not store faithfully: NaN/Infinity, a number
  too large for a float, a lone UTF-16 surrogate escape, or nesting deeper than
  :data:`MAX_DEPTH`.
* Identifying strings (ids, channel, identity, status) must fit the storage columns
  (``MAX_*_LENGTH``) and contain no control characters.

Errors::

    CallbackError
    └── MalformedCallbackError
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, Literal

# --------------------------------------------------------------------------- triggers

MESSAGE_INBOUND: Final = "MESSAGE_INBOUND"
MESSAGE_DELIVERY: Final = "MESSAGE_DELIVERY"
EVENT_INBOUND: Final = "EVENT_INBOUND"

# Top-level key -> trigger (reference section 2.1). Dict order is the precedence when a body
# carries more than one of these keys (Sinch sends exactly one): the handled kinds first.
TRIGGER_KEYS: Final[dict[str, str]] = {
    "message": MESSAGE_INBOUND,
    "message_delivery_report": MESSAGE_DELIVERY,
    "event": EVENT_INBOUND,
    "event_delivery_report": "EVENT_DELIVERY",
    "message_submit_notification": "MESSAGE_SUBMIT",
    "conversation_start_notification": "CONVERSATION_START",
    "conversation_stop_notification": "CONVERSATION_STOP",
    "conversation_delete_notification": "CONVERSATION_DELETE",
    "contact_create_notification": "CONTACT_CREATE",
    "contact_delete_notification": "CONTACT_DELETE",
    "contact_merge_notification": "CONTACT_MERGE",
    "contact_update_notification": "CONTACT_UPDATE",
    "duplicated_identities": "CONTACT_IDENTITIES_DUPLICATION",
    "capability_notification": "CAPABILITY",
    "opt_in_notification": "OPT_IN",
    "opt_out_notification": "OPT_OUT",
    "channel_event_notification": "CHANNEL_EVENT",
    "unsupported_callback": "UNSUPPORTED",
    "smart_conversation_notification": "SMART_CONVERSATIONS",
    "message_redaction": "MESSAGE_INBOUND_SMART_CONVERSATION_REDACTION",
    # [NODE] marks this key "TBC": NOT VERIFIED.
    "record_notification": "RECORD_NOTIFICATION",
}
# The kinds the Chain Matcher acts on; the others are known, logged and answered 200.
HANDLED_TRIGGERS: Final = frozenset({MESSAGE_INBOUND, MESSAGE_DELIVERY, EVENT_INBOUND})
ALL_TRIGGERS: Final = frozenset(TRIGGER_KEYS.values())

# Channels whose identity is an MSISDN. Sinch's examples write it without "+", senders and
# people sometimes with: compare with the "+" stripped. KAKAOTALK (notifications to a phone
# number) is one too, as in the emulator's channel rules.
PHONE_NUMBER_CHANNELS: Final = frozenset({"SMS", "WHATSAPP", "RCS", "VIBERBM", "MMS", "KAKAOTALK"})

# Limits mirror the storage columns the values end up in (storage/tables.py).
MAX_DEPTH: Final = 64
MAX_ID_LENGTH: Final = 40
MAX_CHANNEL_LENGTH: Final = 40
MAX_IDENTITY_LENGTH: Final = 200
MAX_STATUS_LENGTH: Final = 30
MAX_SENDER_ID_LENGTH: Final = 100
MAX_REASON_CODE_LENGTH: Final = 80

ContentKind = Literal[
    "text",
    "media",
    "location",
    "choice_response",
    "media_card",
    "fallback",
    "product_response",
    "channel_specific",
    "unknown",
]
ContactEventKind = Literal["composing", "composing_end", "comment", "other"]

# contact_message key -> content kind; Sinch sends exactly one (plus an optional reply_to).
_CONTENT_KEYS: Final[tuple[tuple[str, ContentKind], ...]] = (
    ("text_message", "text"),
    ("media_message", "media"),
    ("location_message", "location"),
    ("choice_response_message", "choice_response"),
    ("media_card_message", "media_card"),
    ("fallback_message", "fallback"),
    ("product_response_message", "product_response"),
    ("channel_specific_message", "channel_specific"),
)
_CONTACT_EVENT_KEYS: Final[tuple[tuple[str, ContactEventKind], ...]] = (
    ("composing_event", "composing"),
    ("composing_end_event", "composing_end"),
    ("comment_event", "comment"),
)


# --------------------------------------------------------------------------- errors


class CallbackError(Exception):
    """A callback body could not be turned into a Callback."""


class MalformedCallbackError(CallbackError):
    """The body is not a Sinch callback we recognise, or a field we need is missing or wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- models


@dataclass(frozen=True, kw_only=True, slots=True)
class Content:
    """What the customer sent: one of the contact_message kinds, flattened for display.

    Only the fields of ``kind`` are set; ``raw`` is the contact_message object as received
    (including ``reply_to``), so a kind we render poorly loses nothing.
    """

    kind: ContentKind
    text: str | None = None
    media_url: str | None = None
    thumbnail_url: str | None = None
    filename: str | None = None
    caption: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    label: str | None = None
    title: str | None = None
    postback_data: str | None = None
    choice_message_id: str | None = None
    fallback_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def preview(self) -> str:
        """A one-line human summary for listings, at most 200 characters."""
        return _one_line(self._preview())

    def _preview(self) -> str:
        if self.kind == "text":
            return self.text if self.text and self.text.strip() else "[empty message]"
        if self.kind == "media":
            return f"[media] {self.filename or _url_name(self.media_url)}"
        if self.kind == "location":
            place = self.label or self.title or ""
            coordinates = f"({_coordinate(self.latitude)}, {_coordinate(self.longitude)})"
            return f"[location] {place} {coordinates}" if place else f"[location] {coordinates}"
        if self.kind == "choice_response":
            return f"[choice] {self.postback_data or ''}"
        if self.kind == "media_card":
            return f"[media card] {self.caption or _url_name(self.media_url)}"
        if self.kind == "fallback":
            return f"[fallback] {self.fallback_reason or 'message the channel could not map'}"
        if self.kind == "product_response":
            return f"[product response] {self.title or ''}"
        if self.kind == "channel_specific":
            inner = self.raw.get("channel_specific_message")
            message_type = inner.get("message_type") if isinstance(inner, dict) else None
            return f"[channel specific] {message_type if isinstance(message_type, str) else ''}"
        keys = ", ".join(sorted(key for key in self.raw if key != "reply_to"))
        return f"[unknown content] {keys}"


@dataclass(frozen=True, kw_only=True, slots=True)
class InboundMessage:
    """MESSAGE_INBOUND: a customer's message (reference section 2.3)."""

    message_id: str
    channel: str
    identity: str
    identity_app_id: str  # app_id of an app-scoped identity; "" otherwise
    conversation_id: str  # "" in DISPATCH mode
    contact_id: str  # "" in DISPATCH mode
    sender_id: str  # the number/id the customer wrote to; "" if absent
    processing_mode: str  # CONVERSATION | DISPATCH | "" if absent
    accept_time: datetime | None
    metadata: str
    injected: bool
    reply_to: str | None
    content: Content


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryReport:
    """MESSAGE_DELIVERY: a status of one of our outbound messages (reference sections 2.4, 3).

    ``status`` is kept as received, known or not; ``domain.delivery.advance`` decides what it
    does to the message.
    """

    message_id: str
    status: str
    channel: str | None
    identity: str | None
    reason_code: str | None
    reason_description: str | None
    sub_code: str | None
    channel_code: str | None
    metadata: str  # the message_metadata of our send request
    conversation_id: str
    contact_id: str
    processing_mode: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ContactEvent:
    """EVENT_INBOUND: typing indicators and other non-message events (reference section 2.6)."""

    event_id: str | None
    channel: str
    identity: str
    kind: ContactEventKind
    raw: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class Callback:
    """One parsed callback. Exactly one of inbound/delivery/event is set for a handled trigger,
    none for the others."""

    trigger: str
    app_id: str  # "" if absent: the intake decides what that means
    project_id: str
    accepted_time: datetime | None
    event_time: datetime | None
    dedup_key: str
    channel: str | None
    identity: str | None
    body: dict[str, Any]
    message_metadata: str = ""
    correlation_id: str = ""
    inbound: InboundMessage | None = None
    delivery: DeliveryReport | None = None
    event: ContactEvent | None = None

    @property
    def handled(self) -> bool:
        return self.trigger in HANDLED_TRIGGERS


# --------------------------------------------------------------------------- entry points


def parse_callback(raw: bytes) -> Callback:
    """Parse a raw callback body; a non-callback raises MalformedCallbackError, nothing else."""
    body = _load(raw)
    key, trigger = _detect(body)
    payload = body[key]
    app_id = _envelope_str(body, "app_id")
    project_id = _envelope_str(body, "project_id")
    common: dict[str, Any] = {
        "trigger": trigger,
        "app_id": app_id,
        "project_id": project_id,
        "accepted_time": parse_timestamp(body.get("accepted_time")),
        "event_time": parse_timestamp(body.get("event_time")),
        "body": body,
        "message_metadata": _opt_str(body, "message_metadata"),
        "correlation_id": _opt_str(body, "correlation_id"),
    }
    if trigger == MESSAGE_INBOUND:
        inbound = _parse_inbound(_required_object(payload, key))
        return Callback(
            **common,
            dedup_key=f"message:{inbound.message_id}",
            channel=inbound.channel,
            identity=inbound.identity,
            inbound=inbound,
        )
    if trigger == MESSAGE_DELIVERY:
        report = _parse_delivery(_required_object(payload, key))
        return Callback(
            **common,
            # The channel is part of the key: after SWITCHING_CHANNEL the next channel reports
            # QUEUED_ON_CHANNEL (or SWITCHING_CHANNEL) again, and that is news, not a retry.
            dedup_key=f"delivery:{report.message_id}:{report.status}:{report.channel or ''}",
            channel=report.channel,
            identity=report.identity,
            delivery=report,
        )
    if trigger == EVENT_INBOUND:
        event = _parse_event(_required_object(payload, key))
        return Callback(
            **common,
            dedup_key=f"event:{event.event_id}" if event.event_id else _content_key(body),
            channel=event.channel,
            identity=event.identity,
            event=event,
        )
    channel, identity = _peek_identity(payload)
    return Callback(**common, dedup_key=_content_key(body), channel=channel, identity=identity)


def parse_timestamp(value: object) -> datetime | None:
    """An aware UTC datetime from Sinch's ISO-8601 (``Z`` or an offset, 0-9+ fractional digits,
    trimmed to microseconds); None for anything else, never an error."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    match = _TIMESTAMP_RE.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        tz = UTC
        if not zulu:
            offset = timedelta(hours=int(off_h), minutes=int(off_m))
            tz = timezone(-offset if sign == "-" else offset)
        stamp = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "")[:6].ljust(6, "0")),
            tzinfo=tz,
        )
        return stamp.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def normalize_identity(channel: str, identity: str) -> str:
    """The form identities are matched in: phone numbers without a leading ``+``."""
    if channel in PHONE_NUMBER_CHANNELS and identity.startswith("+"):
        return identity[1:]
    return identity


# --------------------------------------------------------------------------- body level

_TIMESTAMP_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))",
    re.ASCII,
)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_MISSING: Final = object()


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _load(raw: bytes) -> dict[str, Any]:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MalformedCallbackError(f"body: expected bytes, got {type(raw).__name__}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedCallbackError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise MalformedCallbackError(f"body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, our number checks, the int digit limit
        raise MalformedCallbackError(f"body is not JSON: {str(exc)[:160]}") from None
    if not isinstance(value, dict):
        raise MalformedCallbackError(f"body: expected a JSON object, got {_describe(value)}")
    _check_tree(value)
    return value


def _check_tree(root: dict[str, Any]) -> None:
    """Depth bound and no lone surrogates, without recursion (deep input must not blow the
    stack here either)."""
    stack: list[tuple[object, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                raise MalformedCallbackError(f"body is nested deeper than {MAX_DEPTH} levels")
            for key, item in value.items():
                if _SURROGATE_RE.search(key):
                    raise MalformedCallbackError("body is not JSON: lone surrogate in a key")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                raise MalformedCallbackError(f"body is nested deeper than {MAX_DEPTH} levels")
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and _SURROGATE_RE.search(value):
            raise MalformedCallbackError("body is not JSON: lone surrogate in a string")


def _detect(body: dict[str, Any]) -> tuple[str, str]:
    for key, trigger in TRIGGER_KEYS.items():
        if body.get(key) is not None:
            return key, trigger
    raise MalformedCallbackError(
        "no recognisable callback kind: expected one of the top-level keys "
        + ", ".join(TRIGGER_KEYS)
    )


def _content_key(body: dict[str, Any]) -> str:
    """Same JSON, same key: a Sinch retry is re-signed but carries the same body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "content:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _envelope_str(body: Mapping[str, object], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedCallbackError(f"{key}: expected a string, got {_describe(value)}")
    return value


def _peek_identity(payload: object) -> tuple[str | None, str | None]:
    """Best effort for the event log of kinds we don't act on: a channel_identity object or
    flat channel/identity fields of the payload, when they look usable."""
    if not isinstance(payload, dict):
        return None, None
    source = payload.get("channel_identity")
    if not isinstance(source, dict):
        source = payload
    channel = _opt_token(source, "channel", MAX_CHANNEL_LENGTH) or None
    identity = _opt_token(source, "identity", MAX_IDENTITY_LENGTH) or None
    return channel, identity


# --------------------------------------------------------------------------- handled kinds


def _parse_inbound(message: dict[str, Any]) -> InboundMessage:
    message_id = _token(message, "id", "message.id", MAX_ID_LENGTH)
    channel_identity = _required_object(
        message.get("channel_identity", _MISSING), "message.channel_identity"
    )
    channel = _token(
        channel_identity, "channel", "message.channel_identity.channel", MAX_CHANNEL_LENGTH
    )
    identity = _token(
        channel_identity, "identity", "message.channel_identity.identity", MAX_IDENTITY_LENGTH
    )
    contact_message = _required_object(
        message.get("contact_message", _MISSING), "message.contact_message"
    )
    content = _parse_content(contact_message, "message.contact_message")
    reply_to = contact_message.get("reply_to")
    injected = message.get("injected")
    return InboundMessage(
        message_id=message_id,
        channel=channel,
        identity=identity,
        identity_app_id=_opt_token(channel_identity, "app_id", MAX_ID_LENGTH),
        conversation_id=_opt_token(message, "conversation_id", MAX_ID_LENGTH),
        contact_id=_opt_token(message, "contact_id", MAX_ID_LENGTH),
        sender_id=_opt_token(message, "sender_id", MAX_SENDER_ID_LENGTH),
        processing_mode=_opt_token(message, "processing_mode", MAX_STATUS_LENGTH),
        accept_time=parse_timestamp(message.get("accept_time")),
        metadata=_opt_str(message, "metadata"),
        injected=injected is True,
        reply_to=(
            _opt_token(reply_to, "message_id", MAX_ID_LENGTH) or None
            if isinstance(reply_to, dict)
            else None
        ),
        content=content,
    )


def _parse_content(contact_message: dict[str, Any], path: str) -> Content:
    for key, kind in _CONTENT_KEYS:
        value = contact_message.get(key)
        if value is None:
            continue
        where = f"{path}.{key}"
        part = _required_object(value, where)
        if kind == "text":
            return Content(
                kind=kind, text=_string(part, "text", f"{where}.text"), raw=contact_message
            )
        if kind == "media":
            return Content(
                kind=kind,
                media_url=_url(part, f"{where}.url"),
                thumbnail_url=_opt_str(part, "thumbnail_url") or None,
                filename=_opt_str(part, "filename_override") or None,
                raw=contact_message,
            )
        if kind == "location":
            coordinates = _required_object(
                part.get("coordinates", _MISSING), f"{where}.coordinates"
            )
            return Content(
                kind=kind,
                latitude=_degrees(coordinates, "latitude", f"{where}.coordinates.latitude", 90),
                longitude=_degrees(coordinates, "longitude", f"{where}.coordinates.longitude", 180),
                label=_opt_str(part, "label") or None,
                title=_opt_str(part, "title") or None,
                raw=contact_message,
            )
        if kind == "choice_response":
            return Content(
                kind=kind,
                postback_data=_string(part, "postback_data", f"{where}.postback_data"),
                # The emulator (and, for a choice it cannot place, maybe Sinch) sends "".
                choice_message_id=_opt_token(part, "message_id", MAX_ID_LENGTH) or None,
                raw=contact_message,
            )
        if kind == "media_card":
            return Content(
                kind=kind,
                media_url=_url(part, f"{where}.url"),
                caption=_opt_str(part, "caption") or None,
                raw=contact_message,
            )
        if kind == "fallback":
            reason = part.get("reason")
            code = _opt_str(reason, "code") if isinstance(reason, dict) else ""
            return Content(kind=kind, fallback_reason=code or None, raw=contact_message)
        if kind == "product_response":
            return Content(kind=kind, title=_opt_str(part, "title") or None, raw=contact_message)
        return Content(kind=kind, raw=contact_message)
    return Content(kind="unknown", raw=contact_message)


def _parse_delivery(report: dict[str, Any]) -> DeliveryReport:
    message_id = _token(report, "message_id", "message_delivery_report.message_id", MAX_ID_LENGTH)
    status = _token(report, "status", "message_delivery_report.status", MAX_STATUS_LENGTH)
    channel_identity = report.get("channel_identity")
    if not isinstance(channel_identity, dict):
        channel_identity = {}
    reason = report.get("reason")
    if not isinstance(reason, dict):
        reason = {}
    return DeliveryReport(
        message_id=message_id,
        status=status,
        channel=_opt_token(channel_identity, "channel", MAX_CHANNEL_LENGTH) or None,
        identity=_opt_token(channel_identity, "identity", MAX_IDENTITY_LENGTH) or None,
        reason_code=_opt_token(reason, "code", MAX_REASON_CODE_LENGTH) or None,
        reason_description=_opt_str(reason, "description") or None,
        sub_code=_opt_token(reason, "sub_code", MAX_REASON_CODE_LENGTH) or None,
        channel_code=_opt_str(reason, "channel_code") or None,
        metadata=_opt_str(report, "metadata"),
        conversation_id=_opt_token(report, "conversation_id", MAX_ID_LENGTH),
        contact_id=_opt_token(report, "contact_id", MAX_ID_LENGTH),
        processing_mode=_opt_token(report, "processing_mode", MAX_STATUS_LENGTH),
    )


def _parse_event(event: dict[str, Any]) -> ContactEvent:
    channel_identity = _required_object(
        event.get("channel_identity", _MISSING), "event.channel_identity"
    )
    kind: ContactEventKind = "other"
    contact_event = event.get("contact_event")
    if isinstance(contact_event, dict):
        for key, candidate in _CONTACT_EVENT_KEYS:
            if contact_event.get(key) is not None:
                kind = candidate
                break
    return ContactEvent(
        event_id=_opt_token(event, "id", MAX_ID_LENGTH) or None,
        channel=_token(
            channel_identity, "channel", "event.channel_identity.channel", MAX_CHANNEL_LENGTH
        ),
        identity=_token(
            channel_identity, "identity", "event.channel_identity.identity", MAX_IDENTITY_LENGTH
        ),
        kind=kind,
        raw=event,
    )


# --------------------------------------------------------------------------- field helpers


def _describe(value: object) -> str:
    if value is _MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else f"a string of {len(value)} characters"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _required_object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedCallbackError(f"{path}: expected an object, got {_describe(value)}")
    return value


def _token(obj: Mapping[str, object], key: str, path: str, max_length: int) -> str:
    """A required identifying string: non-blank, bounded, no control characters."""
    value = obj.get(key, _MISSING)
    if not isinstance(value, str) or not value.strip():
        raise MalformedCallbackError(f"{path}: expected a non-empty string, got {_describe(value)}")
    if len(value) > max_length:
        raise MalformedCallbackError(
            f"{path}: expected at most {max_length} characters, got {len(value)}"
        )
    if _CONTROL_RE.search(value):
        raise MalformedCallbackError(f"{path}: contains control characters")
    return value


def _opt_token(obj: Mapping[str, object], key: str, max_length: int) -> str:
    """An optional identifying string; "" when absent or unusable."""
    value = obj.get(key)
    if (
        isinstance(value, str)
        and value.strip()
        and len(value) <= max_length
        and not _CONTROL_RE.search(value)
    ):
        return value
    return ""


def _opt_str(obj: Mapping[str, object], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _string(obj: Mapping[str, object], key: str, path: str) -> str:
    value = obj.get(key, _MISSING)
    if not isinstance(value, str):
        raise MalformedCallbackError(f"{path}: expected a string, got {_describe(value)}")
    return value


def _url(obj: Mapping[str, object], path: str) -> str:
    value = obj.get("url", _MISSING)
    if not isinstance(value, str) or not value.strip():
        raise MalformedCallbackError(f"{path}: expected a non-empty URL, got {_describe(value)}")
    return value


def _degrees(obj: Mapping[str, object], key: str, path: str, limit: int) -> float:
    value = obj.get(key, _MISSING)
    # bool is an int; JSON numbers here are int or finite float (_load rejects the rest), and
    # comparing before float() keeps a 4000-digit integer from overflowing.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedCallbackError(f"{path}: expected a number, got {_describe(value)}")
    if not -limit <= value <= limit:
        raise MalformedCallbackError(f"{path}: expected a number within +-{limit}")
    return float(value)


# --------------------------------------------------------------------------- preview helpers


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def _url_name(url: str | None) -> str:
    if not url:
        return ""
    name = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name or url


def _coordinate(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.5f}".rstrip("0").rstrip(".")
