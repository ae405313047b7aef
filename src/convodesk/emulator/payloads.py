"""Callback bodies in Sinch's shapes (reference sections 2.2-2.4), field order as in Sinch's.

DISPATCH apps send empty ``conversation_id`` and ``contact_id``; the envelope always carries
``app_id``, ``accepted_time``, ``event_time``, ``project_id``, ``message_metadata`` and
``correlation_id``.
"""

from __future__ import annotations

import time
from typing import Any

from convodesk.emulator.channels import scoped_app_id

REASON_DESCRIPTIONS = {
    "UNKNOWN": "An unknown error occurred",
    "INTERNAL_ERROR": "An internal error occurred",
    "RATE_LIMITED": "The message was rate limited by the channel",
    "RECIPIENT_INVALID_CHANNEL_IDENTITY": (
        "The channel identity of the recipient is not valid on this channel"
    ),
    "RECIPIENT_NOT_REACHABLE": "The recipient is not reachable on this channel",
    "RECIPIENT_NOT_OPTED_IN": "The recipient has not opted in to messages on this channel",
    "OUTSIDE_ALLOWED_SENDING_WINDOW": (
        "Channel says the customer has not written in the last 24 hours; "
        "only an approved template may be sent"
    ),
    "CHANNEL_FAILURE": "The channel failed to deliver the message",
    "CHANNEL_BAD_CONFIGURATION": "The channel is badly configured for this app",
    "CHANNEL_CONFIGURATION_MISSING": "The channel is not configured for this app",
    "MEDIA_TYPE_UNSUPPORTED": "The media type is not supported by the channel",
    "MEDIA_TOO_LARGE": "The media is too large for the channel",
    "MEDIA_NOT_REACHABLE": "The media URL could not be fetched",
    "NO_CHANNELS_LEFT": "No channels left to try",
    "TEMPLATE_NOT_FOUND": "The template was not found",
    "TEMPLATE_INSUFFICIENT_PARAMETERS": "The template needs more parameters",
    "TEMPLATE_NON_EXISTING_LANGUAGE_OR_VERSION": "No such template language or version",
    "DELIVERY_TIMED_OUT": "Delivery timed out",
    "DELIVERY_REJECTED_DUE_TO_POLICY": "Delivery was rejected due to policy",
    "CONTACT_NOT_FOUND": "The contact was not found",
    "BAD_REQUEST": "The channel rejected the request",
    "UNKNOWN_APP": "The app is unknown",
    "NO_CHANNEL_IDENTITY_FOR_CONTACT": "The contact has no identity on the requested channels",
    "CHANNEL_REJECT": "The channel rejected the message",
    "NO_PERMISSION": "No permission",
    "NO_PROFILE_AVAILABLE": "No profile available",
    "UNSUPPORTED_OPERATION": "Unsupported operation",
    "INACTIVE_CREDENTIAL": "The channel credential is inactive",
    "MESSAGE_EXPIRED": "The message expired",
    "MESSAGE_SPLIT_REQUIRED": "The message must be split",
    "DELIVERY_REPORT_TIME_OUT": "No delivery report arrived in time",
}
REASON_CODES = tuple(REASON_DESCRIPTIONS)


def iso(ts: float, *, millis: bool = True) -> str:
    """RFC 3339 UTC with milliseconds, as Sinch writes ``accepted_time``."""
    whole = int(ts)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    if not millis:
        return stamp + "Z"
    return f"{stamp}.{int((ts - whole) * 1000):03d}Z"


def channel_identity(channel: str, identity: str, app_id: str) -> dict[str, str]:
    return {"channel": channel, "identity": identity, "app_id": scoped_app_id(channel, app_id)}


def reason(code: str) -> dict[str, str]:
    return {
        "code": code,
        "description": REASON_DESCRIPTIONS.get(code, code),
        "sub_code": "UNSPECIFIED_SUB_CODE",
    }


def delivery_report(
    *,
    project_id: str,
    app_id: str,
    message_id: str,
    status: str,
    channel: str,
    identity: str,
    processing_mode: str,
    now: float,
    reason_code: str | None = None,
    contact_id: str = "",
    conversation_id: str = "",
    metadata: str = "",
    correlation_id: str = "",
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "message_id": message_id,
        "conversation_id": conversation_id,
        "status": status,
        "channel_identity": channel_identity(channel, identity, app_id),
        "contact_id": contact_id,
    }
    if reason_code is not None:
        report["reason"] = reason(reason_code)
    report["metadata"] = metadata
    report["processing_mode"] = processing_mode
    return {
        "app_id": app_id,
        "accepted_time": iso(now),
        "event_time": iso(now, millis=False),
        "project_id": project_id,
        "message_delivery_report": report,
        "message_metadata": "",
        "correlation_id": correlation_id,
    }


def inbound_message(
    *,
    project_id: str,
    app_id: str,
    message_id: str,
    channel: str,
    identity: str,
    contact_message: dict[str, Any],
    processing_mode: str,
    now: float,
    sender_id: str = "",
    contact_id: str = "",
    conversation_id: str = "",
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": message_id,
        "direction": "TO_APP",
        "contact_message": contact_message,
        "channel_identity": channel_identity(channel, identity, app_id),
        "conversation_id": conversation_id,
        "contact_id": contact_id,
        "metadata": "",
        "accept_time": iso(now),
        "sender_id": sender_id,
        "processing_mode": processing_mode,
        "injected": False,
    }
    return {
        "app_id": app_id,
        "accepted_time": iso(now + 0.014),
        "event_time": iso(now - 0.6),
        "project_id": project_id,
        "message": message,
        "message_metadata": "",
        "correlation_id": "",
    }
