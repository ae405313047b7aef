"""The messages:send body we build, exactly, per channel and content; and what we refuse."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convodesk.sinch.send_request import (
    APP_SCOPED_CHANNELS,
    CHANNELS,
    NO_AGENT_CHANNELS,
    SendRequest,
    Template,
    build_send_request,
)

APP = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
MSG_ID = "01J0B7Q2ZK9M3N4P5R6S7T8V9W"


def build(**overrides: Any) -> SendRequest:
    fields: dict[str, Any] = {
        "app_id": APP,
        "channel": "WHATSAPP",
        "identity": "46701234567",
        "identity_app_id": None,
        "text": "Hi! Your order shipped.",
        "metadata": MSG_ID,
    }
    fields.update(overrides)
    return build_send_request(**fields)


def test_whatsapp_text_with_agent_and_ttl() -> None:
    request = build(agent_name="Anna", ttl_seconds=86400)
    assert request.to_json() == {
        "app_id": APP,
        "recipient": {
            "identified_by": {
                "channel_identities": [{"channel": "WHATSAPP", "identity": "46701234567"}]
            }
        },
        "message": {
            "text_message": {"text": "Hi! Your order shipped."},
            "agent": {"display_name": "Anna", "type": "HUMAN"},
        },
        "channel_priority_order": ["WHATSAPP"],
        "message_metadata": MSG_ID,
        "ttl": "86400s",
    }
    assert request.content_kind == "text_message"


def test_sms_with_sender_and_no_agent() -> None:
    request = build(channel="SMS", sms_sender="12015550123", agent_name="Anna")
    assert request.to_json() == {
        "app_id": APP,
        "recipient": {
            "identified_by": {"channel_identities": [{"channel": "SMS", "identity": "46701234567"}]}
        },
        "message": {"text_message": {"text": "Hi! Your order shipped."}},
        "channel_priority_order": ["SMS"],
        "channel_properties": {"SMS_SENDER": "12015550123"},
        "message_metadata": MSG_ID,
    }


def test_messenger_identity_is_app_scoped() -> None:
    request = build(channel="MESSENGER", identity="2790134121041234", identity_app_id=APP)
    assert request.to_json()["recipient"] == {
        "identified_by": {
            "channel_identities": [
                {"channel": "MESSENGER", "identity": "2790134121041234", "app_id": APP}
            ]
        }
    }


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_identity_app_id_only_on_app_scoped_channels(channel: str) -> None:
    request = build(channel=channel, identity_app_id=APP)
    identity = request.to_json()["recipient"]["identified_by"]["channel_identities"][0]
    assert ("app_id" in identity) is (channel in APP_SCOPED_CHANNELS)


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_agent_everywhere_but_sms_and_mms(channel: str) -> None:
    message = build(channel=channel, agent_name="Anna").to_json()["message"]
    assert ("agent" in message) is (channel not in NO_AGENT_CHANNELS)


@pytest.mark.parametrize("channel", sorted(CHANNELS - {"SMS"}))
def test_sms_sender_ignored_off_sms(channel: str) -> None:
    assert "channel_properties" not in build(channel=channel, sms_sender="12015550123").to_json()


def test_app_scoped_channel_without_known_app_id() -> None:
    request = build(channel="INSTAGRAM", identity="17841400000000", identity_app_id="")
    identity = request.to_json()["recipient"]["identified_by"]["channel_identities"][0]
    assert identity == {"channel": "INSTAGRAM", "identity": "17841400000000"}


def test_media_with_filename() -> None:
    request = build(
        text=None, media_url="https://files.example.com/i/abc", media_filename="invoice-123.pdf"
    )
    assert request.to_json()["message"] == {
        "media_message": {
            "url": "https://files.example.com/i/abc",
            "filename_override": "invoice-123.pdf",
        }
    }
    assert request.content_kind == "media_message"


def test_media_without_filename() -> None:
    request = build(text=None, media_url="https://files.example.com/i/abc", media_filename="")
    assert request.to_json()["message"] == {
        "media_message": {"url": "https://files.example.com/i/abc"}
    }


def test_whatsapp_template() -> None:
    template = Template(name="order_update", language="sv_SE", parameters={"body[1]text": "42"})
    request = build(text=None, template=template, agent_name="Anna")
    assert request.to_json()["message"] == {
        "template_message": {
            "channel_template": {
                "WHATSAPP": {
                    "template_id": "order_update",
                    "language_code": "sv_SE",
                    "parameters": {"body[1]text": "42"},
                }
            }
        },
        "agent": {"display_name": "Anna", "type": "HUMAN"},
    }
    assert request.content_kind == "template_message"


def test_template_parameters_are_copied_and_read_only() -> None:
    params = {"body[1]text": "42"}
    template = Template(name="t", language="en", parameters=params)
    params["body[1]text"] = "changed"
    assert template.parameters["body[1]text"] == "42"
    with pytest.raises(TypeError):
        template.parameters["x"] = "y"  # type: ignore[index]
    body = build(text=None, template=template).to_json()
    body["message"]["template_message"]["channel_template"]["WHATSAPP"]["parameters"]["z"] = "1"
    assert "z" not in template.parameters


def test_to_json_returns_a_fresh_dict() -> None:
    request = build()
    request.to_json()["app_id"] = "changed"
    assert request.to_json()["app_id"] == APP


@pytest.mark.parametrize("language", ["en", "sv_SE", "pt_BR", "zh_HK", "fil"])
def test_template_languages_accepted(language: str) -> None:
    assert Template(name="t", language=language).language == language


@pytest.mark.parametrize(
    ("language", "hint"),
    [("sv-SE", "did you mean 'sv_SE'"), ("SV_se", ""), ("english", ""), ("", "")],
)
def test_template_languages_refused(language: str, hint: str) -> None:
    with pytest.raises(ValueError, match="underscore form") as caught:
        Template(name="t", language=language)
    assert hint in str(caught.value)


def test_template_needs_a_name_and_string_parameters() -> None:
    with pytest.raises(ValueError, match="name"):
        Template(name=" ", language="en")
    with pytest.raises(ValueError, match="must be a string"):
        Template(name="t", language="en", parameters={"body[1]text": 42})  # type: ignore[dict-item]


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"text": None}, "needs content"),
        ({"media_url": "https://x.example/a.png"}, "text and media_url"),
        ({"template": Template(name="t", language="en")}, "text and template"),
        ({"text": None, "template": Template(name="t", language="en"), "channel": "SMS"}, "SMS"),
        ({"text": "   "}, "text must not be empty"),
        ({"text": "x" * 4097}, "at most 4096"),
        ({"text": None, "media_url": "ftp://x.example/a"}, "http"),
        ({"text": None, "media_url": "/relative/a.png"}, "http"),
        ({"media_filename": "a.pdf"}, "needs a media_url"),
        ({"metadata": ""}, "metadata"),
        ({"metadata": "x" * 1025}, "at most 1024"),
        ({"ttl_seconds": 2}, "ttl_seconds"),
        ({"ttl_seconds": 315_576_000_001}, "ttl_seconds"),
        ({"ttl_seconds": True}, "ttl_seconds"),
        ({"channel": "FAX"}, "unknown channel"),
        ({"channel": "whatsapp"}, "unknown channel"),
        ({"app_id": ""}, "app_id"),
        ({"identity": ""}, "identity"),
        ({"identity": " 4670"}, "identity"),
        ({"identity": "4670\n1"}, "identity"),
        ({"channel": "SMS", "sms_sender": "x" * 1025}, "sms_sender"),
    ],
)
def test_impossible_requests_are_refused(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build(**overrides)


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match="agent_name"):
        SendRequest(
            app_id=APP, channel="SMS", identity="4670", text="x", metadata="m", agent_name=" "
        )


def test_limits_are_inclusive() -> None:
    assert build(text="x" * 4096, metadata="m" * 1024, ttl_seconds=3).to_json()["ttl"] == "3s"
    assert build(channel="SMS", text="x" * 5000).to_json()["message"]["text_message"]["text"]
    assert build(ttl_seconds=315_576_000_000).to_json()["ttl"] == "315576000000s"


def test_blank_agent_name_means_no_agent() -> None:
    assert "agent" not in build(agent_name="  ").to_json()["message"]


@given(
    channel=st.sampled_from(sorted(CHANNELS)),
    text=st.text(min_size=1, max_size=300).filter(lambda t: t.strip()),
    metadata=st.text(min_size=1, max_size=1024),
)
def test_any_valid_text_reply_has_the_required_shape(
    channel: str, text: str, metadata: str
) -> None:
    body = build(channel=channel, text=text, metadata=metadata).to_json()
    assert set(body) <= {
        "app_id",
        "recipient",
        "message",
        "channel_priority_order",
        "channel_properties",
        "message_metadata",
        "ttl",
    }
    assert body["channel_priority_order"] == [channel]
    assert body["message"]["text_message"] == {"text": text}
    assert body["message_metadata"] == metadata
