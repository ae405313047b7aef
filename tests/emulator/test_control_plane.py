"""The /_emulator/ control plane: inbound, sent, outcomes, faults, callbacks, reset."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import APP, SMS_NUMBER, WA_NUMBER, Harness, send_body
from .test_api import assert_sinch_error


def _inbound_message(emu: Harness, **fields: Any) -> dict[str, Any]:
    message_id = emu.inbound(**fields)
    items = emu.receiver.wait_for(
        lambda items: any(i.json().get("message", {}).get("id") == message_id for i in items)
    )
    body = next(i.json() for i in items if i.json().get("message", {}).get("id") == message_id)
    assert body["app_id"] == APP
    message: dict[str, Any] = body["message"]
    return message


def test_inbound_text_is_delivered_as_message_inbound(emu: Harness) -> None:
    message = _inbound_message(emu, text="Hej! Where is my order?")
    assert message["direction"] == "TO_APP"
    assert message["contact_message"] == {"text_message": {"text": "Hej! Where is my order?"}}
    assert message["channel_identity"] == {
        "channel": "WHATSAPP",
        "identity": WA_NUMBER,
        "app_id": "",
    }
    assert message["conversation_id"] == ""
    assert message["contact_id"] == ""
    assert message["processing_mode"] == "DISPATCH"
    assert message["sender_id"] == "46700000000"
    assert message["injected"] is False
    assert {"metadata", "accept_time"} <= set(message)


def test_inbound_media_location_and_postback(emu: Harness) -> None:
    media = _inbound_message(emu, media_url="https://media.example.net/receipt.jpg")
    assert media["contact_message"] == {
        "media_message": {"url": "https://media.example.net/receipt.jpg"}
    }
    location = _inbound_message(
        emu, location={"latitude": 59.33, "longitude": 18.06, "label": "Stockholm"}
    )
    assert location["contact_message"] == {
        "location_message": {
            "coordinates": {"latitude": 59.33, "longitude": 18.06},
            "label": "Stockholm",
        }
    }
    sent_id = emu.send()
    postback = _inbound_message(emu, postback_data="yes-please")
    assert postback["contact_message"] == {
        "choice_response_message": {"message_id": sent_id, "postback_data": "yes-please"}
    }


def test_messenger_identities_carry_the_app_id(emu: Harness) -> None:
    message = _inbound_message(emu, channel="MESSENGER", identity="6512398745123365", text="hi")
    assert message["channel_identity"]["app_id"] == APP


@pytest.mark.parametrize(
    ("body", "code", "word"),
    [
        ({"channel": "WHATSAPP", "identity": WA_NUMBER, "text": "x"}, 400, "app_id"),
        (
            {"app_id": "01NOPE", "channel": "WHATSAPP", "identity": WA_NUMBER, "text": "x"},
            404,
            "01NOPE",
        ),
        ({"app_id": APP, "channel": "TELEGRAM", "identity": "123", "text": "x"}, 400, "channel"),
        ({"app_id": APP, "channel": "FAX", "identity": "123", "text": "x"}, 400, "channel"),
        ({"app_id": APP, "channel": "SMS", "identity": "abc", "text": "x"}, 400, "identity"),
        ({"app_id": APP, "channel": "SMS", "identity": SMS_NUMBER}, 400, "exactly one"),
        (
            {
                "app_id": APP,
                "channel": "SMS",
                "identity": SMS_NUMBER,
                "text": "a",
                "media_url": "http://x",
            },
            400,
            "exactly one",
        ),
        (
            {
                "app_id": APP,
                "channel": "SMS",
                "identity": SMS_NUMBER,
                "location": {"latitude": 99, "longitude": 1},
            },
            400,
            "location.latitude",
        ),
        (
            {
                "app_id": APP,
                "channel": "SMS",
                "identity": SMS_NUMBER,
                "media_url": "file:///etc/passwd",
            },
            400,
            "media_url",
        ),
        ({"app_id": APP, "channel": "SMS", "identity": SMS_NUMBER, "text": 5}, 400, "text"),
        (
            {"app_id": APP, "channel": "SMS", "identity": SMS_NUMBER, "text": "x", "mood": "angry"},
            400,
            "mood",
        ),
    ],
)
def test_bad_inbound_gets_sinch_errors(
    emu: Harness, body: dict[str, Any], code: int, word: str
) -> None:
    answer = emu.http.post("/_emulator/inbound", json=body)
    assert_sinch_error(answer, code, "INVALID_ARGUMENT" if code == 400 else "NOT_FOUND", word)
    assert emu.receiver.snapshot() == []


def test_inbound_answers_202_with_the_message_id(emu: Harness) -> None:
    answer = emu.http.post(
        "/_emulator/inbound",
        json={"app_id": APP, "channel": "SMS", "identity": SMS_NUMBER, "text": "x"},
    )
    assert answer.status_code == 202
    assert len(answer.json()["message_id"]) == 26
    listed = emu.http.get("/_emulator/inbound", params={"app_id": APP}).json()["inbound"]
    assert listed[-1]["message_id"] == answer.json()["message_id"]


def test_sent_lists_full_request_id_and_outcome_filtered(emu: Harness) -> None:
    body = send_body(SMS_NUMBER, "SMS", channel_properties={"SMS_SENDER": "46700000001"})
    first = emu.send_raw(body).json()["message_id"]
    other = emu.send("46705550000", "SMS")
    emu.wait_status(first, "DELIVERED")
    (record,) = emu.sent(app_id=APP, identity=SMS_NUMBER)
    assert record["message_id"] == first
    assert record["request"] == body
    assert record["outcome"]["status"] == "DELIVERED"
    assert [r["status"] for r in record["outcome"]["reports"]] == ["QUEUED_ON_CHANNEL", "DELIVERED"]
    assert {r["message_id"] for r in emu.sent(app_id=APP)} == {first, other}
    assert emu.sent(identity="+" + SMS_NUMBER)[0]["message_id"] == first
    assert emu.sent(app_id="01OTHER") == []


def test_outcomes_script_the_next_sends_to_an_identity(emu: Harness) -> None:
    answer = emu.http.post(
        "/_emulator/outcomes",
        json={"identity": SMS_NUMBER, "fail_reason": "RECIPIENT_NOT_REACHABLE", "count": 2},
    )
    assert answer.status_code == 201
    assert answer.json()["queued"] == 2
    first, second, third = (emu.send(SMS_NUMBER, "SMS") for _ in range(3))
    for failed in (first, second):
        assert emu.wait_status(failed, "FAILED") == ["FAILED"]
        assert emu.receiver.reports(failed)[0]["reason"]["code"] == "RECIPIENT_NOT_REACHABLE"
    assert emu.wait_status(third, "DELIVERED") == ["QUEUED_ON_CHANNEL", "DELIVERED"]
    assert emu.http.get("/_emulator/outcomes").json() == {"outcomes": {}}


def test_outcomes_delay_and_no_read(emu: Harness) -> None:
    emu.inbound()
    emu.http.post(
        "/_emulator/outcomes", json={"identity": WA_NUMBER, "delay_ms": 300, "read": False}
    )
    started = time.monotonic()
    message_id = emu.send()
    emu.wait_status(message_id, "DELIVERED")
    assert time.monotonic() - started >= 0.3
    time.sleep(0.1)
    assert emu.receiver.statuses_for(message_id) == ["QUEUED_ON_CHANNEL", "DELIVERED"]
    assert emu.wait_status(emu.send(), "READ")[-1] == "READ"  # the script was used up


def test_outcomes_can_be_limited_to_a_channel(emu: Harness) -> None:
    emu.http.post(
        "/_emulator/outcomes",
        json={"identity": SMS_NUMBER, "channel": "WHATSAPP", "fail_reason": "CHANNEL_FAILURE"},
    )
    assert emu.wait_status(emu.send(SMS_NUMBER, "SMS"), "DELIVERED")[-1] == "DELIVERED"
    assert SMS_NUMBER in emu.http.get("/_emulator/outcomes").json()["outcomes"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "identity"),
        ({"identity": SMS_NUMBER, "fail_reason": "BAD_LUCK"}, "fail_reason"),
        ({"identity": SMS_NUMBER, "delay_ms": -1}, "delay_ms"),
        ({"identity": SMS_NUMBER, "read": "no"}, "read"),
        ({"identity": SMS_NUMBER, "count": 0}, "count"),
        ({"identity": SMS_NUMBER, "whenever": 1}, "whenever"),
    ],
)
def test_bad_outcomes_are_400(emu: Harness, body: dict[str, Any], field: str) -> None:
    assert_sinch_error(
        emu.http.post("/_emulator/outcomes", json=body), 400, "INVALID_ARGUMENT", field
    )


def test_fault_error_rate_with_429_and_retry_after(emu: Harness) -> None:
    answer = emu.http.post(
        "/_emulator/faults", json={"error_rate": 1.0, "error_statuses": [429], "retry_after_s": 7}
    )
    assert answer.status_code == 200
    assert answer.json()["error_statuses"] == [429]
    refused = emu.send_raw(send_body(SMS_NUMBER, "SMS"))
    assert_sinch_error(refused, 429, "RESOURCE_EXHAUSTED")
    assert refused.headers["retry-after"] == "7"
    assert emu.sent() == []  # an answered error is not listed as sent
    emu.http.post("/_emulator/faults", json={"error_rate": 1.0, "error_statuses": [503]})
    assert_sinch_error(emu.send_raw(send_body(SMS_NUMBER, "SMS")), 503, "UNAVAILABLE")
    emu.http.post("/_emulator/faults", json={})
    assert emu.send_raw(send_body(SMS_NUMBER, "SMS")).status_code == 200


def test_fault_error_rate_is_a_share(emu: Harness) -> None:
    emu.http.post("/_emulator/faults", json={"error_rate": 0.5, "error_statuses": [500], "seed": 7})
    codes = [emu.send_raw(send_body(SMS_NUMBER, "SMS")).status_code for _ in range(60)]
    assert set(codes) == {200, 500}
    assert 15 <= codes.count(500) <= 45
    assert len(emu.sent()) == codes.count(200)


def test_fault_latency(emu: Harness) -> None:
    emu.http.post("/_emulator/faults", json={"latency_ms": 200})
    started = time.monotonic()
    emu.send_raw(send_body(SMS_NUMBER, "SMS"))
    assert time.monotonic() - started >= 0.2


def test_fault_duplicate_callbacks(emu: Harness) -> None:
    emu.http.post("/_emulator/faults", json={"duplicate_callbacks": True})
    message_id = emu.send(SMS_NUMBER, "SMS")
    emu.receiver.wait_for(lambda _i: len(emu.receiver.statuses_for(message_id)) >= 4)
    assert sorted(emu.receiver.statuses_for(message_id)) == [
        "DELIVERED",
        "DELIVERED",
        "QUEUED_ON_CHANNEL",
        "QUEUED_ON_CHANNEL",
    ]
    assert sum(1 for r in emu.callbacks(message_id=message_id) if r["duplicate"]) == 2


def test_fault_reorder_callbacks(emu: Harness) -> None:
    emu.inbound()
    emu.http.post("/_emulator/faults", json={"reorder_callbacks": True})
    message_id = emu.send()
    emu.receiver.wait_for(lambda _i: len(emu.receiver.statuses_for(message_id)) >= 3)
    time.sleep(0.05)
    log = emu.callbacks(message_id=message_id)
    assert [r["status"] for r in log] == ["READ", "DELIVERED", "QUEUED_ON_CHANNEL"]


def test_fault_fail_callback_attempts(emu: Harness) -> None:
    emu.http.post("/_emulator/faults", json={"fail_callback_attempts": 2})
    emu.inbound(text="at least once")
    items = emu.receiver.wait_for(lambda items: len(items) >= 3)
    assert len({i.body for i in items}) == 1
    time.sleep(0.05)
    (record,) = emu.callbacks(trigger="MESSAGE_INBOUND")
    assert record["attempts"] == 3
    assert record["simulated_failures"] == 2
    assert record["state"] == "delivered"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"error_rate": 2}, "error_rate"),
        ({"error_statuses": [418]}, "error_statuses"),
        ({"error_statuses": []}, "error_statuses"),
        ({"latency_ms": -5}, "latency_ms"),
        ({"fail_callback_attempts": "x"}, "fail_callback_attempts"),
        ({"reorder_callbacks": 1}, "reorder_callbacks"),
        ({"chaos": True}, "chaos"),
        ([], "body"),
    ],
)
def test_bad_faults_are_400_and_change_nothing(emu: Harness, body: Any, field: str) -> None:
    emu.http.post("/_emulator/faults", json={"latency_ms": 1})
    assert_sinch_error(
        emu.http.post("/_emulator/faults", json=body), 400, "INVALID_ARGUMENT", field
    )
    assert emu.http.get("/_emulator/faults").json()["latency_ms"] == 1


def test_callback_log_shows_target_trigger_status_and_attempts(emu: Harness) -> None:
    message_id = emu.send(SMS_NUMBER, "SMS")
    emu.wait_status(message_id, "DELIVERED")
    time.sleep(0.05)
    answer = emu.http.get("/_emulator/callbacks", params={"message_id": message_id}).json()
    records = answer["callbacks"]
    assert [r["status"] for r in records] == ["QUEUED_ON_CHANNEL", "DELIVERED"]
    for record in records:
        assert record["target"].endswith("/sms/sinchconversation/sinch-eu")
        assert record["trigger"] == "MESSAGE_DELIVERY"
        assert record["answer_status"] == 200
        assert record["attempts"] == 1
        assert record["state"] == "delivered"
    assert answer["delivered_total"] >= 2


def test_reset_clears_state_and_faults(emu: Harness) -> None:
    emu.http.post("/_emulator/faults", json={"latency_ms": 5})
    emu.http.post("/_emulator/outcomes", json={"identity": SMS_NUMBER, "fail_reason": "UNKNOWN"})
    emu.wait_status(emu.send(SMS_NUMBER, "SMS"), "FAILED")
    assert emu.http.post("/_emulator/reset").status_code == 200
    assert emu.sent() == []
    assert emu.callbacks() == []
    assert emu.http.get("/_emulator/faults").json()["latency_ms"] == 0
    assert emu.http.get("/_emulator/outcomes").json() == {"outcomes": {}}
    emu.inbound()
    emu.http.post("/_emulator/reset")
    assert emu.wait_status(emu.send(), "FAILED") == ["FAILED"]  # the WhatsApp window is gone too


def test_status_page(emu: Harness) -> None:
    status = emu.http.get("/_emulator/").json()
    assert status["regions"] == ["eu", "us"]
    assert {p["region"] for p in status["projects"]} == {"eu", "us"}
