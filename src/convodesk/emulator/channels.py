"""What the emulator knows about each channel: identities, read receipts, app scoping.

These are the delivery-outcome rules of docs/emulator.md; keep the two in step.
"""

from __future__ import annotations

import re

MSISDN_RE = re.compile(r"^\+?[0-9]{7,15}$")
_NUMERIC_ID_RE = re.compile(r"^[0-9]{5,20}$")
_TELEGRAM_RE = re.compile(r"^[0-9]{1,20}$")
_LINE_RE = re.compile(r"^U[0-9a-f]{32}$")
_OPAQUE_RE = re.compile(r"^\S{1,128}$")

# Phone-number channels: the identity is an MSISDN, 7-15 digits with an optional leading +.
MSISDN_CHANNELS = frozenset({"SMS", "MMS", "WHATSAPP", "RCS", "VIBERBM", "KAKAOTALK"})
_PATTERNS: dict[str, re.Pattern[str]] = {
    **dict.fromkeys(MSISDN_CHANNELS, MSISDN_RE),
    "MESSENGER": _NUMERIC_ID_RE,  # page-scoped ids are digits
    "INSTAGRAM": _NUMERIC_ID_RE,  # instagram-scoped ids are digits
    "TELEGRAM": _TELEGRAM_RE,  # Telegram user / chat ids are digits
    "LINE": _LINE_RE,  # LINE user ids: U + 32 lower-case hex
}

# Channels that report READ after DELIVERED. SMS and MMS have no read receipts; the Telegram
# Bot API exposes none; KakaoTalk notifications and WeChat official accounts report none.
READ_RECEIPT_CHANNELS = frozenset(
    {"WHATSAPP", "MESSENGER", "INSTAGRAM", "VIBERBM", "VIBER", "RCS", "LINE", "APPLEBC"}
)
# Sinch Chat reports only DELIVERED or FAILED (reference section 3).
DELIVERED_ONLY_CHANNELS = frozenset({"SINCH_CHAT"})
# Identities scoped to one app: their channel_identity carries that app's id (reference 7).
APP_SCOPED_CHANNELS = frozenset({"MESSENGER", "INSTAGRAM", "LINE", "WECHAT", "VIBER"})


def identity_is_valid(channel: str, identity: str) -> bool:
    """Whether ``identity`` could exist on ``channel``; unknown channels accept any token."""
    return bool(_PATTERNS.get(channel, _OPAQUE_RE).match(identity))


def normalize_identity(identity: str) -> str:
    """The form identities are compared in: MSISDNs without their leading +."""
    return identity[1:] if identity.startswith("+") else identity


def scoped_app_id(channel: str, app_id: str) -> str:
    return app_id if channel in APP_SCOPED_CHANNELS else ""


def report_statuses(channel: str, *, read: bool) -> tuple[str, ...]:
    """The statuses a successful delivery on ``channel`` reports, in order."""
    if channel in DELIVERED_ONLY_CHANNELS:
        return ("DELIVERED",)
    if read and channel in READ_RECEIPT_CHANNELS:
        return ("QUEUED_ON_CHANNEL", "DELIVERED", "READ")
    return ("QUEUED_ON_CHANNEL", "DELIVERED")
