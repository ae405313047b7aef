"""Why a reply failed, in plain words for the agent.

A failed message keeps its technical reason (`reason_code`, `reason_text`: Sinch's delivery
report reason, or the code our sender recorded). `failure_text(code)` turns the code into one
short sentence that says what happened and, where there is one, what to do next. Three
families of codes reach it:

- Sinch's delivery report reasons (`SINCH_REASONS`; the list of the reference, section 3);
- the codes of our sender: ``CANNOT_SEND`` (the configuration cannot send it),
  ``SEND_GAVE_UP`` (transient errors until the retries ran out) and, for a permanent refusal
  of ``messages:send``, Sinch's status string (``INVALID_ARGUMENT``, ...) or ``HTTP_<status>``;
- anything else, which gets a generic sentence naming the code, so nothing is hidden.

The meanings of the last seven Sinch codes (NO_PERMISSION ... DELIVERY_REPORT_TIME_OUT) are
read from their names only (NOT VERIFIED); their sentences stay close to those names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

_ADMIN = "tell an administrator"

SINCH_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "UNKNOWN": "The message was not delivered and the channel gave no reason.",
        "INTERNAL_ERROR": "Sinch had an internal error and did not deliver the message.",
        "RATE_LIMITED": (
            "The channel refused the message because too many were sent; try again shortly."
        ),
        "RECIPIENT_INVALID_CHANNEL_IDENTITY": (
            "The customer's number or account is not valid on this channel."
        ),
        "RECIPIENT_NOT_REACHABLE": "The customer cannot be reached on this channel.",
        "RECIPIENT_NOT_OPTED_IN": (
            "The customer has not agreed to receive messages on this channel (no opt-in)."
        ),
        "OUTSIDE_ALLOWED_SENDING_WINDOW": (
            "The customer's 24-hour WhatsApp window has closed; send an approved template."
        ),
        "CHANNEL_FAILURE": "The channel failed to deliver the message; try again later.",
        "CHANNEL_BAD_CONFIGURATION": f"The channel is set up wrongly for this app; {_ADMIN}.",
        "CHANNEL_CONFIGURATION_MISSING": f"This channel is not set up for this app; {_ADMIN}.",
        "MEDIA_TYPE_UNSUPPORTED": "The channel does not accept this type of file.",
        "MEDIA_TOO_LARGE": "The file is too large for this channel.",
        "MEDIA_NOT_REACHABLE": (
            f"The channel could not download the file from our public address; {_ADMIN}."
        ),
        "NO_CHANNELS_LEFT": "The message was not delivered on any of the channels tried.",
        "TEMPLATE_NOT_FOUND": f"WhatsApp does not know this template; {_ADMIN}.",
        "TEMPLATE_INSUFFICIENT_PARAMETERS": (
            f"The template needs more parameters than were given; {_ADMIN}."
        ),
        "TEMPLATE_NON_EXISTING_LANGUAGE_OR_VERSION": (
            f"WhatsApp has no such template in this language; {_ADMIN}."
        ),
        "DELIVERY_TIMED_OUT": "The channel did not deliver the message in time.",
        "DELIVERY_REJECTED_DUE_TO_POLICY": "The channel refused the message under its policies.",
        "CONTACT_NOT_FOUND": "Sinch could not find this customer.",
        "BAD_REQUEST": "The channel rejected the message as invalid for this channel.",
        "UNKNOWN_APP": f"Sinch does not know the app this message was sent from; {_ADMIN}.",
        "NO_CHANNEL_IDENTITY_FOR_CONTACT": (
            "The customer has no address on the channels this message could use."
        ),
        "CHANNEL_REJECT": "The channel rejected the message.",
        "NO_PERMISSION": f"Sinch refused the message: no permission; {_ADMIN}.",
        "NO_PROFILE_AVAILABLE": "The channel has no profile for this customer.",
        "UNSUPPORTED_OPERATION": "The channel does not support this kind of message.",
        "INACTIVE_CREDENTIAL": f"The channel's credentials are no longer active; {_ADMIN}.",
        "MESSAGE_EXPIRED": "The message expired before it could be delivered.",
        "MESSAGE_SPLIT_REQUIRED": "The message is too long for this channel; send it in parts.",
        "DELIVERY_REPORT_TIME_OUT": (
            "No delivery receipt came in time; the customer may not have the message."
        ),
        # Not in the reference's list (RATE_LIMITED is); kept because the issue names it.
        "TOO_MANY_REQUESTS": (
            "The channel refused the message because too many were sent; try again shortly."
        ),
    }
)

# Recorded by the sender (workers/sender.py) when a send fails for good.
OUR_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "CANNOT_SEND": f"The message could not be sent with the current configuration; {_ADMIN}.",
        "SEND_GAVE_UP": (
            "Sinch could not be reached for too long, so sending stopped; an administrator "
            "can send it again."
        ),
        # Sinch's status strings for a refused messages:send (reference section 4), and the
        # OAuth2 errors of its token endpoint.
        "INVALID_ARGUMENT": "Sinch rejected the message as invalid.",
        "UNAUTHENTICATED": f"Sinch did not accept the app's access key; {_ADMIN}.",
        "invalid_client": f"Sinch did not accept the app's access key; {_ADMIN}.",
        "unauthorized_client": f"Sinch did not accept the app's access key; {_ADMIN}.",
        "PERMISSION_DENIED": f"The access key may not send for this app; {_ADMIN}.",
        "NOT_FOUND": f"Sinch does not know this project or app in its region; {_ADMIN}.",
        "FAILED_PRECONDITION": "Sinch refused the message in the app's current state.",
    }
)

_HTTP: Mapping[int, str] = MappingProxyType(
    {
        0: f"Sinch gave no answer we could use, so the message was not sent; {_ADMIN}.",
        400: "Sinch rejected the message as invalid.",
        401: f"Sinch did not accept the app's access key; {_ADMIN}.",
        403: f"The access key may not send for this app; {_ADMIN}.",
        404: f"Sinch does not know this project or app in its region; {_ADMIN}.",
    }
)
_HTTP_RE = re.compile(r"HTTP_([0-9]{1,3})")
NO_REASON = "The message was not delivered; no reason was given."


def failure_text(code: str | None) -> str:
    """One plain sentence for a failure reason code; a generic one, naming the code, for a
    code we do not know."""
    if not code:
        return NO_REASON
    known = SINCH_REASONS.get(code) or OUR_REASONS.get(code)
    if known is not None:
        return known
    match = _HTTP_RE.fullmatch(code)
    if match is not None:
        status = int(match.group(1))
        return _HTTP.get(status) or f"Sinch refused the message (HTTP {status}); {_ADMIN}."
    return f"The message was not delivered (reason {code})."
