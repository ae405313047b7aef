"""Failure reasons in plain words: every code Sinch lists, ours, and the unknown."""

from __future__ import annotations

import pytest

from convodesk.domain import reasons
from convodesk.emulator.payloads import REASON_CODES as EMULATOR_REASON_CODES

# Pinned from the reference (/work/shared/reference/sinch-conversation-api.md, section 3,
# "Reason code values", the union of the SDKs' enums). The reference lives outside the
# repository, so the list is copied here; update both together.
REFERENCE_REASON_CODES = (
    "UNKNOWN",
    "INTERNAL_ERROR",
    "RATE_LIMITED",
    "RECIPIENT_INVALID_CHANNEL_IDENTITY",
    "RECIPIENT_NOT_REACHABLE",
    "RECIPIENT_NOT_OPTED_IN",
    "OUTSIDE_ALLOWED_SENDING_WINDOW",
    "CHANNEL_FAILURE",
    "CHANNEL_BAD_CONFIGURATION",
    "CHANNEL_CONFIGURATION_MISSING",
    "MEDIA_TYPE_UNSUPPORTED",
    "MEDIA_TOO_LARGE",
    "MEDIA_NOT_REACHABLE",
    "NO_CHANNELS_LEFT",
    "TEMPLATE_NOT_FOUND",
    "TEMPLATE_INSUFFICIENT_PARAMETERS",
    "TEMPLATE_NON_EXISTING_LANGUAGE_OR_VERSION",
    "DELIVERY_TIMED_OUT",
    "DELIVERY_REJECTED_DUE_TO_POLICY",
    "CONTACT_NOT_FOUND",
    "BAD_REQUEST",
    "UNKNOWN_APP",
    "NO_CHANNEL_IDENTITY_FOR_CONTACT",
    "CHANNEL_REJECT",
    "NO_PERMISSION",
    "NO_PROFILE_AVAILABLE",
    "UNSUPPORTED_OPERATION",
    "INACTIVE_CREDENTIAL",
    "MESSAGE_EXPIRED",
    "MESSAGE_SPLIT_REQUIRED",
    "DELIVERY_REPORT_TIME_OUT",
)


def is_plain_sentence(text: str) -> bool:
    return text[0].isupper() and text.endswith(".") and "_" not in text and len(text) <= 120


@pytest.mark.parametrize("code", sorted({*REFERENCE_REASON_CODES, *EMULATOR_REASON_CODES}))
def test_every_sinch_reason_code_has_its_own_sentence(code: str) -> None:
    text = reasons.failure_text(code)
    assert text == reasons.SINCH_REASONS[code]
    assert code not in text  # a real explanation, not the generic fallback
    assert is_plain_sentence(text), text


def test_the_sentences_are_distinct_where_the_reasons_are() -> None:
    texts = [reasons.SINCH_REASONS[c] for c in REFERENCE_REASON_CODES]
    assert len(set(texts)) == len(texts)


def test_the_closed_window_says_to_send_a_template() -> None:
    assert reasons.failure_text("OUTSIDE_ALLOWED_SENDING_WINDOW") == (
        "The customer's 24-hour WhatsApp window has closed; send an approved template."
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "CANNOT_SEND",
            "The message could not be sent with the current configuration; tell an administrator.",
        ),
        (
            "SEND_GAVE_UP",
            "Sinch could not be reached for too long, so sending stopped; an administrator can "
            "send it again.",
        ),
        ("INVALID_ARGUMENT", "Sinch rejected the message as invalid."),
        ("invalid_client", "Sinch did not accept the app's access key; tell an administrator."),
        ("HTTP_400", "Sinch rejected the message as invalid."),
        ("HTTP_401", "Sinch did not accept the app's access key; tell an administrator."),
        ("HTTP_403", "The access key may not send for this app; tell an administrator."),
        (
            "HTTP_404",
            "Sinch does not know this project or app in its region; tell an administrator.",
        ),
        ("HTTP_409", "Sinch refused the message (HTTP 409); tell an administrator."),
        (
            "HTTP_0",
            "Sinch gave no answer we could use, so the message was not sent; tell an "
            "administrator.",
        ),
    ],
)
def test_our_own_codes(code: str, expected: str) -> None:
    assert reasons.failure_text(code) == expected
    assert is_plain_sentence(expected)


@pytest.mark.parametrize("code", ["SOMETHING_NEW", "HTTP_", "HTTP_4000", "http_400"])
def test_an_unknown_code_gets_a_generic_sentence_naming_it(code: str) -> None:
    assert reasons.failure_text(code) == f"The message was not delivered (reason {code})."


@pytest.mark.parametrize("code", [None, ""])
def test_no_code_says_no_reason_was_given(code: str | None) -> None:
    assert reasons.failure_text(code) == "The message was not delivered; no reason was given."
