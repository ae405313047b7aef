"""MESSAGE_DELIVERY and MESSAGE_INBOUND callbacks: outcomes, payloads, signatures, retries."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sinch.domains.conversation.sinch_events.v1 import ConversationSinchEvent

from convodesk.sinch.signature import verify

from .conftest import (
    APP,
    CONV_APP,
    PROJECT,
    SMS_NUMBER,
    WA_NUMBER,
    WEBHOOK_SECRET,
    Harness,
    config_dict,
)

ENVELOPE = {
    "app_id",
    "accepted_time",
    "event_time",
    "project_id",
    "message_metadata",
    "correlation_id",
}


def test_whatsapp_inside_the_window_reports_queued_delivered_read(emu: Harness) -> None:
    emu.inbound(text="Where is my order?")
    message_id = emu.send(message_metadata='{"cc_msg":"7f3e2c"}', correlation_id="cc-42")
    assert emu.wait_status(message_id, "READ") == ["QUEUED_ON_CHANNEL", "DELIVERED", "READ"]
    (sent,) = emu.sent(identity=WA_NUMBER)
    assert sent["outcome"]["status"] == "READ"
    for item in emu.receiver.snapshot():
        body = item.json()
        if "message_delivery_report" not in body:
            continue
        assert ENVELOPE <= set(body)
        assert body["app_id"] == APP
        assert body["project_id"] == PROJECT
        assert body["correlation_id"] == "cc-42"
        report = body["message_delivery_report"]
        assert report["conversation_id"] == ""
        assert report["contact_id"] == ""
        assert report["processing_mode"] == "DISPATCH"
        assert report["metadata"] == '{"cc_msg":"7f3e2c"}'
        assert report["channel_identity"] == {
            "channel": "WHATSAPP",
            "identity": WA_NUMBER,
            "app_id": "",
        }
        assert "reason" not in report


def test_sms_has_no_read_receipts(emu: Harness) -> None:
    message_id = emu.send(SMS_NUMBER, "SMS")
    assert emu.wait_status(message_id, "DELIVERED") == ["QUEUED_ON_CHANNEL", "DELIVERED"]
    time.sleep(0.1)
    assert emu.receiver.statuses_for(message_id) == ["QUEUED_ON_CHANNEL", "DELIVERED"]


def test_sinch_chat_reports_only_delivered(emu: Harness) -> None:
    message_id = emu.send("visitor-42", "SINCH_CHAT")
    assert emu.wait_status(message_id, "DELIVERED") == ["DELIVERED"]


@pytest.mark.parametrize(
    ("identity", "channel"),
    [
        ("12345", "SMS"),
        ("4670123456789012345", "WHATSAPP"),
        ("+46 70 123", "SMS"),
        ("abc", "MESSENGER"),
    ],
)
def test_impossible_identity_fails(emu: Harness, identity: str, channel: str) -> None:
    message_id = emu.send(identity, channel)
    assert emu.wait_status(message_id, "FAILED") == ["FAILED"]
    (report,) = emu.receiver.reports(message_id)
    assert report["reason"]["code"] == "RECIPIENT_INVALID_CHANNEL_IDENTITY"
    assert report["reason"]["sub_code"] == "UNSPECIFIED_SUB_CODE"
    assert report["reason"]["description"]


def test_plus_prefixed_msisdn_is_a_valid_identity(emu: Harness) -> None:
    message_id = emu.send("+" + SMS_NUMBER, "SMS")
    assert emu.wait_status(message_id, "DELIVERED")[-1] == "DELIVERED"


def test_whatsapp_free_text_outside_the_window_fails_but_templates_pass(emu: Harness) -> None:
    never = emu.send("46701112222")
    assert emu.wait_status(never, "FAILED") == ["FAILED"]
    assert emu.receiver.reports(never)[0]["reason"]["code"] == "OUTSIDE_ALLOWED_SENDING_WINDOW"

    emu.inbound(text="hi")
    inside = emu.send()
    assert emu.wait_status(inside, "READ")[-1] == "READ"

    emu.advance(24 * 3600 + 60)
    late = emu.send()
    assert emu.wait_status(late, "FAILED") == ["FAILED"]
    assert emu.receiver.reports(late)[0]["reason"]["code"] == "OUTSIDE_ALLOWED_SENDING_WINDOW"

    template = {
        "template_message": {
            "channel_template": {
                "WHATSAPP": {"template_id": "order_update", "language_code": "sv_SE"}
            }
        }
    }
    templated = emu.send(message=template)
    assert emu.wait_status(templated, "READ")[-1] == "READ"

    emu.inbound(text="back again")
    assert emu.wait_status(emu.send(), "READ")[-1] == "READ"


def test_media_is_fetched_for_real(emu: Harness) -> None:
    emu.inbound(text="hi")
    ok = emu.send(message={"media_message": {"url": f"{emu.receiver.url}/media/ok.png"}})
    assert emu.wait_status(ok, "READ")[-1] == "READ"
    missing = emu.send(message={"media_message": {"url": f"{emu.receiver.url}/media/missing.png"}})
    assert emu.wait_status(missing, "FAILED") == ["FAILED"]
    assert emu.receiver.reports(missing)[0]["reason"]["code"] == "MEDIA_NOT_REACHABLE"
    nobody = emu.send(message={"media_message": {"url": "http://127.0.0.1:9/x.png"}})
    assert emu.wait_status(nobody, "FAILED") == ["FAILED"]
    assert emu.receiver.reports(nobody)[0]["reason"]["code"] == "MEDIA_NOT_REACHABLE"


def test_failover_reports_switching_channel_then_tries_the_next(emu: Harness) -> None:
    body = {
        "app_id": APP,
        "recipient": {
            "identified_by": {
                "channel_identities": [
                    {"channel": "WHATSAPP", "identity": "46701119999"},
                    {"channel": "SMS", "identity": "46701119999"},
                ]
            }
        },
        "message": {"text_message": {"text": "hello"}},
        "channel_priority_order": ["WHATSAPP", "SMS"],
    }
    answer = emu.send_raw(body)
    assert answer.status_code == 200
    message_id = answer.json()["message_id"]
    received = emu.wait_status(message_id, "DELIVERED")
    # Sent in this order; each callback is its own delivery, so (as with Sinch) two sent
    # back to back may arrive the other way round.
    sent = [
        record["status"]
        for record in emu.callbacks(trigger="MESSAGE_DELIVERY")
        if record["message_id"] == message_id
    ]
    assert sent == ["SWITCHING_CHANNEL", "QUEUED_ON_CHANNEL", "DELIVERED"]
    assert sorted(received) == sorted(sent)
    reports = {r["status"]: r for r in emu.receiver.reports(message_id)}
    switching = reports["SWITCHING_CHANNEL"]
    assert switching["reason"]["code"] == "OUTSIDE_ALLOWED_SENDING_WINDOW"
    assert switching["channel_identity"]["channel"] == "WHATSAPP"
    assert reports["DELIVERED"]["channel_identity"]["channel"] == "SMS"


def test_conversation_mode_carries_contact_and_conversation_ids(emu: Harness) -> None:
    answer = emu.http.post(
        "/_emulator/inbound",
        json={
            "app_id": CONV_APP,
            "channel": "SMS",
            "identity": SMS_NUMBER,
            "text": "hi",
            "contact_name": "Ada",
        },
    )
    assert answer.status_code == 202
    (inbound,) = emu.receiver.wait_for(lambda items: len(items) >= 1)
    message = inbound.json()["message"]
    assert message["processing_mode"] == "CONVERSATION"
    assert message["contact_id"]
    assert message["conversation_id"]
    contact_id = message["contact_id"]
    answer = emu.send_raw(
        {
            "app_id": CONV_APP,
            "recipient": {"contact_id": contact_id},
            "message": {"text_message": {"text": "hello Ada"}},
        }
    )
    assert answer.status_code == 200
    message_id = answer.json()["message_id"]
    emu.wait_status(message_id, "DELIVERED")
    report = emu.receiver.reports(message_id)[-1]
    assert report["contact_id"] == contact_id
    assert report["conversation_id"] == message["conversation_id"]
    assert report["channel_identity"]["identity"] == SMS_NUMBER


def test_unknown_contact_fails_with_contact_not_found(emu: Harness) -> None:
    answer = emu.send_raw(
        {
            "app_id": CONV_APP,
            "recipient": {"contact_id": "01J09ZZ0N1M2K3J4H5G6F7E8D9"},
            "message": {"text_message": {"text": "hello"}},
        }
    )
    message_id = answer.json()["message_id"]
    assert emu.wait_status(message_id, "FAILED") == ["FAILED"]
    assert emu.receiver.reports(message_id)[0]["reason"]["code"] == "CONTACT_NOT_FOUND"


def test_every_callback_is_signed_as_sinch_signs_it(emu: Harness) -> None:
    emu.inbound(text="Hej! Var är min order? 👋")
    emu.wait_status(emu.send(), "READ")
    emu.wait_status(emu.send(SMS_NUMBER, "SMS"), "DELIVERED")
    items = emu.receiver.snapshot()
    assert len(items) >= 6
    sdk = ConversationSinchEvent(WEBHOOK_SECRET)
    nonces = set()
    for item in items:
        assert item.headers["content-type"] == "application/json"
        assert item.headers["x-sinch-webhook-signature-algorithm"] == "HmacSHA256"
        assert sdk.validate_authentication_header(item.headers, item.body)
        assert not ConversationSinchEvent("wrong").validate_authentication_header(
            item.headers, item.body
        )
        verify(WEBHOOK_SECRET, item.body, item.headers, now=emu.clock())
        nonces.add(item.headers["x-sinch-webhook-signature-nonce"])
        assert abs(int(item.headers["x-sinch-webhook-signature-timestamp"]) - time.time()) < 30
        event = sdk.parse_event(item.body, item.headers)
        assert event.app_id == APP
    assert len(nonces) == len(items)
    assert "👋".encode() in items[0].body  # raw UTF-8, not \\u escapes


def test_callbacks_without_a_secret_are_unsigned(
    make_emulator: Callable[..., Harness], receiver: Any
) -> None:
    data = config_dict(receiver.url)
    del data["projects"][0]["apps"][0]["webhooks"][0]["secret"]
    harness = make_emulator(data)
    harness.inbound()
    (item,) = receiver.wait_for(lambda items: len(items) >= 1)
    assert not any(h.startswith("x-sinch-webhook-signature") for h in item.headers)


def test_non_2xx_answers_are_retried_with_backoff(emu: Harness) -> None:
    emu.receiver.statuses.extend([500, 503])
    emu.inbound(text="retry me")
    items = emu.receiver.wait_for(lambda items: len(items) >= 3)
    assert len({i.body for i in items}) == 1  # the same callback each time
    assert len({i.headers["x-sinch-webhook-signature-nonce"] for i in items}) == 3
    time.sleep(0.05)
    (record,) = emu.callbacks(trigger="MESSAGE_INBOUND")
    assert record["attempts"] == 3
    assert record["answer_status"] == 200
    assert record["state"] == "delivered"


def test_retries_are_bounded(emu: Harness) -> None:
    emu.receiver.statuses.extend([500] * 10)
    emu.inbound(text="never accepted")
    deadline = time.monotonic() + 5
    while True:
        records = emu.callbacks(trigger="MESSAGE_INBOUND")
        if records and records[0]["state"] == "failed":
            break
        assert time.monotonic() < deadline, records
        time.sleep(0.02)
    assert records[0]["attempts"] == 4  # callback_retry.max_attempts in the test config
    assert records[0]["answer_status"] == 500
    assert len(emu.receiver.snapshot()) == 4


def test_a_slow_receiver_times_out_and_is_retried(
    make_emulator: Callable[..., Harness], receiver: Any
) -> None:
    data = config_dict(receiver.url)
    data["callback_retry"] = {"max_attempts": 2, "initial_backoff_ms": 10, "timeout_ms": 100}
    harness = make_emulator(data)
    receiver.delay_s = 0.3
    harness.inbound()
    deadline = time.monotonic() + 5
    while True:
        (record,) = harness.callbacks()
        if record["state"] != "pending":
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert record["state"] == "failed"
    assert record["attempts"] == 2
    assert "no answer within" in record["error"]


def test_sends_do_not_wait_for_callbacks(emu: Harness) -> None:
    emu.receiver.delay_s = 0.5
    started = time.monotonic()
    for _ in range(5):
        emu.send(SMS_NUMBER, "SMS")
    assert time.monotonic() - started < 0.5


def test_identity_on_a_channel_the_app_lacks_fails(emu: Harness) -> None:
    message_id = emu.send("123456789", "TELEGRAM")
    assert emu.wait_status(message_id, "FAILED") == ["FAILED"]
    assert emu.receiver.reports(message_id)[0]["reason"]["code"] == "CHANNEL_CONFIGURATION_MISSING"


def test_callback_url_overrides_the_webhooks_for_that_sends_reports(emu: Harness) -> None:
    message_id = emu.send(SMS_NUMBER, "SMS", callback_url=f"{emu.receiver.url}/override")
    emu.wait_status(message_id, "DELIVERED")
    paths = {i.path for i in emu.receiver.snapshot() if message_id.encode() in i.body}
    assert paths == {"/override"}
    # the app has no callback_secret (secret_for_overridden_callback_urls): unsigned
    assert all(
        "x-sinch-webhook-signature" not in i.headers
        for i in emu.receiver.snapshot()
        if i.path == "/override"
    )
