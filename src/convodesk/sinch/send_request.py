"""The body of ``messages:send`` for an agent's reply: a pure, validated builder.

What we send (reference section 4; docs/reference/sending.md has examples per channel)::

    {
      "app_id": APP,
      "recipient": {"identified_by": {"channel_identities": [
          {"channel": CHANNEL, "identity": IDENTITY, "app_id": APP}   # app_id: app-scoped only
      ]}},
      "message": {
        "text_message": {"text": ...}                                  # exactly one of these
        | "media_message": {"url": ..., "filename_override": ...}
        | "template_message": {"channel_template": {"WHATSAPP":
              {"template_id": NAME, "language_code": "sv_SE", "parameters": {...}}}},
        "agent": {"display_name": ..., "type": "HUMAN"}                # not on SMS/MMS
      },
      "channel_priority_order": [CHANNEL],
      "channel_properties": {"SMS_SENDER": ...},                       # SMS, when given
      "message_metadata": OUR_MESSAGE_ID,
      "ttl": "86400s"                                                   # when given
    }

Choices, with reasons:

* One channel identity and ``channel_priority_order`` with that channel only: a reply goes
  back on the conversation's channel, never fails over to another one.
* ``channel_identities[].app_id`` is set on the app-scoped channels (MESSENGER, INSTAGRAM,
  LINE, WECHAT, and the old Viber Bot VIBER) when we know it; on other channels it is left
  out even when the caller passes one (Sinch sends an empty one in their callbacks).
* ``agent`` is shown by chat-style channels; Sinch does not list which ones. We send it
  everywhere except SMS and MMS, where a display name has nowhere to go (NOT VERIFIED that
  every other channel shows it; Sinch ignores it where it does not).
* ``SMS_SENDER`` only on SMS; a sender passed for another channel is ignored, so callers can
  pass the queue's ``sms_sender_id`` whatever the channel.
* The identity is sent as given (as it came in the customer's callback); Sinch's callbacks
  carry MSISDNs without ``+``.
* WhatsApp media URLs must be HTTPS in production; that is the configuration's check (the
  public base URL), not this builder's, so tests can use the emulator over plain HTTP.

Impossible combinations raise ``ValueError`` naming the problem: no content or two, a
template on a channel other than WHATSAPP, a language not in underscore form (``sv_SE``),
metadata over 1024 characters, a ttl out of Sinch's range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from convodesk.domain import config_model

# The Conversation API's channels (reference section 7), SINCH_CHAT and VIBER included.
CHANNELS: frozenset[str] = frozenset(config_model.CHANNELS)
# Channels whose identities are scoped to the app (Messenger page-scoped ids and so on).
APP_SCOPED_CHANNELS: frozenset[str] = frozenset(
    {"MESSENGER", "INSTAGRAM", "LINE", "WECHAT", "VIBER"}
)
# Channels with no place to show an agent's name.
NO_AGENT_CHANNELS: frozenset[str] = frozenset({"SMS", "MMS"})
TEMPLATE_CHANNELS: frozenset[str] = frozenset({"WHATSAPP"})
# WhatsApp refuses longer free-form text (reference section 7).
MAX_TEXT_LENGTH: Mapping[str, int] = MappingProxyType({"WHATSAPP": 4096})

MAX_METADATA_LENGTH = 1024
MAX_CHANNEL_PROPERTY_LENGTH = 1024
TTL_MIN_SECONDS = 3
TTL_MAX_SECONDS = 315_576_000_000
# WhatsApp language codes: "en", "sv_SE", "pt_BR", "zh_HK" ... (underscore, not hyphen).
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(?:_[A-Z]{2,3})?$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class Template:
    """A WhatsApp template: its approved ``name`` (Sinch's ``template_id``), language, params.

    ``parameters`` keys follow Sinch's WhatsApp pattern (e.g. ``body[1]text``); values are
    strings. The mapping is copied and read-only.
    """

    name: str
    language: str
    parameters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("a template needs its name")
        if not _LANGUAGE_RE.match(self.language):
            suggestion = self.language.replace("-", "_")
            hint = f" (did you mean {suggestion!r}?)" if _LANGUAGE_RE.match(suggestion) else ""
            raise ValueError(
                f"template language {self.language!r} must be a WhatsApp language code in "
                f"underscore form such as 'sv_SE' or 'en'{hint}"
            )
        # Checked at run time too: parameters often come from configuration or JSON.
        items: list[tuple[object, object]] = list(self.parameters.items())
        for key, value in items:
            if not isinstance(key, str) or not key:
                raise ValueError("template parameter names must be non-empty strings")
            if not isinstance(value, str):
                raise ValueError(f"template parameter {key!r} must be a string")
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))

    def to_json(self) -> dict[str, Any]:
        return {
            "template_id": self.name,
            "language_code": self.language,
            "parameters": dict(self.parameters),
        }


@dataclass(frozen=True, kw_only=True)
class SendRequest:
    """A validated agent reply, ready for ``messages:send``. Build it with
    :func:`build_send_request`; ``to_json()`` is the exact body."""

    app_id: str
    channel: str
    identity: str
    identity_app_id: str | None = None
    text: str | None = None
    media_url: str | None = None
    media_filename: str | None = None
    template: Template | None = None
    sms_sender: str | None = None
    agent_name: str | None = None
    metadata: str
    ttl_seconds: int | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def content_kind(self) -> str:
        """``text_message``, ``media_message`` or ``template_message``."""
        if self.template is not None:
            return "template_message"
        if self.media_url is not None:
            return "media_message"
        return "text_message"

    def to_json(self) -> dict[str, Any]:
        """The request body, a fresh dict each call."""
        identity: dict[str, str] = {"channel": self.channel, "identity": self.identity}
        if self.channel in APP_SCOPED_CHANNELS and self.identity_app_id:
            identity["app_id"] = self.identity_app_id
        message: dict[str, Any] = {}
        if self.template is not None:
            message["template_message"] = {
                "channel_template": {self.channel: self.template.to_json()}
            }
        elif self.media_url is not None:
            media: dict[str, str] = {"url": self.media_url}
            if self.media_filename:
                media["filename_override"] = self.media_filename
            message["media_message"] = media
        else:
            message["text_message"] = {"text": self.text}
        if self.agent_name and self.channel not in NO_AGENT_CHANNELS:
            message["agent"] = {"display_name": self.agent_name, "type": "HUMAN"}
        body: dict[str, Any] = {
            "app_id": self.app_id,
            "recipient": {"identified_by": {"channel_identities": [identity]}},
            "message": message,
            "channel_priority_order": [self.channel],
        }
        if self.channel == "SMS" and self.sms_sender:
            body["channel_properties"] = {"SMS_SENDER": self.sms_sender}
        body["message_metadata"] = self.metadata
        if self.ttl_seconds is not None:
            body["ttl"] = f"{self.ttl_seconds}s"
        return body


def build_send_request(
    *,
    app_id: str,
    channel: str,
    identity: str,
    identity_app_id: str | None,
    text: str | None = None,
    media_url: str | None = None,
    media_filename: str | None = None,
    template: Template | None = None,
    sms_sender: str | None = None,
    agent_name: str | None = None,
    metadata: str,
    ttl_seconds: int | None = None,
) -> SendRequest:
    """The ``messages:send`` request for one agent reply; ``ValueError`` if it cannot exist.

    Give exactly one of ``text``, ``media_url`` (optionally ``media_filename``) or
    ``template``. ``metadata`` is our message id (echoed in delivery reports); ``agent_name``
    the agent's display name; empty strings for the optional ones mean "none".
    """
    return SendRequest(
        app_id=app_id,
        channel=channel,
        identity=identity,
        identity_app_id=identity_app_id or None,
        text=text,
        media_url=media_url,
        media_filename=media_filename or None,
        template=template,
        sms_sender=sms_sender or None,
        agent_name=(agent_name or "").strip() or None,
        metadata=metadata,
        ttl_seconds=ttl_seconds,
    )


def _validate(request: SendRequest) -> None:
    _require_id("app_id", request.app_id)
    if request.channel not in CHANNELS:
        raise ValueError(
            f"unknown channel {request.channel!r}; expected one of {', '.join(sorted(CHANNELS))}"
        )
    _require_id("identity", request.identity)
    if request.identity_app_id is not None:
        _require_id("identity_app_id", request.identity_app_id)
    contents = [
        name
        for name, value in (
            ("text", request.text),
            ("media_url", request.media_url),
            ("template", request.template),
        )
        if value is not None
    ]
    if not contents:
        raise ValueError("a message needs content: give text, media_url or template")
    if len(contents) > 1:
        raise ValueError(
            f"a message has exactly one content; got {' and '.join(contents)} together"
        )
    if request.text is not None:
        if not request.text.strip():
            raise ValueError("text must not be empty")
        limit = MAX_TEXT_LENGTH.get(request.channel)
        if limit is not None and len(request.text) > limit:
            raise ValueError(
                f"text is {len(request.text)} characters; {request.channel} takes at most {limit}"
            )
    if request.media_url is not None and not re.match(r"^https?://[^\s/]+", request.media_url):
        raise ValueError("media_url must be an absolute http:// or https:// URL")
    if request.media_filename is not None and request.media_url is None:
        raise ValueError("media_filename needs a media_url")
    if request.template is not None and request.channel not in TEMPLATE_CHANNELS:
        raise ValueError(
            f"templates can only be sent on {', '.join(sorted(TEMPLATE_CHANNELS))}, "
            f"not on {request.channel}"
        )
    if request.sms_sender is not None:
        _require_id("sms_sender", request.sms_sender)
        if len(request.sms_sender) > MAX_CHANNEL_PROPERTY_LENGTH:
            raise ValueError(f"sms_sender is longer than {MAX_CHANNEL_PROPERTY_LENGTH} characters")
    if request.agent_name is not None and not request.agent_name.strip():
        raise ValueError("agent_name must not be blank (give None for no agent)")
    if not request.metadata:
        raise ValueError("metadata (our message id) must not be empty")
    if len(request.metadata) > MAX_METADATA_LENGTH:
        raise ValueError(
            f"metadata is {len(request.metadata)} characters; Sinch takes at most "
            f"{MAX_METADATA_LENGTH}"
        )
    ttl: object = request.ttl_seconds
    if ttl is not None and (
        isinstance(ttl, bool)
        or not isinstance(ttl, int)
        or not TTL_MIN_SECONDS <= ttl <= TTL_MAX_SECONDS
    ):
        raise ValueError(
            f"ttl_seconds must be a whole number from {TTL_MIN_SECONDS} to {TTL_MAX_SECONDS}"
        )


def _require_id(name: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must not be empty")
    if value != value.strip() or _CONTROL_RE.search(value):
        raise ValueError(f"{name} must not contain spaces at its ends or control characters")
