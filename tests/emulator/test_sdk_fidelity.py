"""The official Sinch SDK (PyPI ``sinch``) cannot tell the emulator from Sinch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sinch import SinchClient
from sinch.domains.conversation.sinch_events.v1 import ConversationSinchEvent

from .conftest import (
    APP,
    CONV_APP,
    KEY_ID,
    KEY_SECRET,
    PROJECT,
    SMS_NUMBER,
    WA_NUMBER,
    WEBHOOK_SECRET,
    Harness,
)


@pytest.fixture
def sdk(emu: Harness) -> Iterator[SinchClient]:
    client = SinchClient(
        key_id=KEY_ID, key_secret=KEY_SECRET, project_id=PROJECT, conversation_region="eu"
    )
    # Point the SDK's auth and Conversation origins at the emulator.
    client.configuration.auth_origin = emu.running.base_url
    client.configuration.conversation_domain = emu.running.base_url + "/{}"
    yield client
    client.configuration.transport.http_session.close()


def test_sdk_round_trip_send_text(emu: Harness, sdk: SinchClient) -> None:
    response = sdk.conversation.messages.send_text_message(
        app_id=APP,
        text="Your order shipped",
        recipient_identities=[{"channel": "SMS", "identity": SMS_NUMBER}],
        channel_properties={"SMS_SENDER": "46700000001"},
        correlation_id="cc-session-42",
    )
    assert len(response.message_id) == 26
    (record,) = emu.sent(identity=SMS_NUMBER)
    assert record["message_id"] == response.message_id
    assert record["request"]["message"] == {"text_message": {"text": "Your order shipped"}}
    assert record["request"]["correlation_id"] == "cc-session-42"
    assert emu.wait_status(response.message_id, "DELIVERED")[-1] == "DELIVERED"


def test_sdk_refreshes_an_expired_token_and_retries(emu: Harness, sdk: SinchClient) -> None:
    send = sdk.conversation.messages.send_text_message
    first = send(
        app_id=APP, text="one", recipient_identities=[{"channel": "SMS", "identity": SMS_NUMBER}]
    )
    old_token = sdk.configuration.token_manager.token.access_token
    emu.http.post("/_emulator/tokens/expire")
    second = send(
        app_id=APP, text="two", recipient_identities=[{"channel": "SMS", "identity": SMS_NUMBER}]
    )
    assert sdk.configuration.token_manager.token.access_token != old_token
    assert [r["message_id"] for r in emu.sent()] == [first.message_id, second.message_id]


def test_sdk_reads_apps(emu: Harness, sdk: SinchClient) -> None:
    app = sdk.conversation.apps.get(app_id=APP)
    assert app.id == APP
    assert app.processing_mode == "DISPATCH"
    listed = sdk.conversation.apps.list()
    assert {a.id for a in listed.iterator()} == {APP, CONV_APP}


def test_sdk_validates_and_parses_every_callback(emu: Harness, sdk: SinchClient) -> None:
    emu.inbound(text="Hej! Var är min order? 👋")
    response = sdk.conversation.messages.send_text_message(
        app_id=APP,
        text="On its way",
        recipient_identities=[{"channel": "WHATSAPP", "identity": WA_NUMBER}],
    )
    emu.wait_status(response.message_id, "READ")
    handler = sdk.conversation.sinch_events(WEBHOOK_SECRET)
    standalone = ConversationSinchEvent(WEBHOOK_SECRET)
    items = emu.receiver.snapshot()
    assert len(items) == 4
    for item in items:
        assert handler.validate_authentication_header(item.headers, item.body)
        assert standalone.validate_authentication_header(item.headers, item.body.decode("utf-8"))
        event = handler.parse_event(item.body, item.headers)
        assert event.project_id == PROJECT
    statuses = [
        handler.parse_event(i.body).message_delivery_report.status
        for i in items
        if b"message_delivery_report" in i.body
    ]
    assert statuses == ["QUEUED_ON_CHANNEL", "DELIVERED", "READ"]


def test_sdk_signature_helper_accepts_emulator_signatures(emu: Harness) -> None:
    from sinch.domains.authentication.sinch_events.v1.authentication_validation import (
        validate_sinch_event_signature_with_nonce,
    )

    emu.inbound(text="plain")
    (item,) = emu.receiver.wait_for(lambda items: len(items) >= 1)
    assert validate_sinch_event_signature_with_nonce(
        WEBHOOK_SECRET, item.headers, item.body.decode("utf-8")
    )
