"""The callback parser: fixtures, malformed bodies, fuzzing, and what the emulator sends."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convodesk.domain import config_model
from convodesk.domain.config_model import CHANNELS as EMULATOR_CHANNELS
from convodesk.emulator import payloads
from convodesk.emulator.channels import APP_SCOPED_CHANNELS
from convodesk.emulator.errors import dumps as emulator_dumps
from convodesk.sinch import events, signature
from convodesk.sinch.events import (
    Callback,
    MalformedCallbackError,
    normalize_identity,
    parse_callback,
    parse_timestamp,
)
from tests.support import sinch_fixtures
from tests.support.sinch_fixtures import (
    FixtureError,
    all_fixture_names,
    fixture_trigger,
    load_fixture,
)

APP = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
PROJECT = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"
WA = "46701234567"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _content_key(raw: bytes) -> str:
    canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    return "content:" + hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------- fixtures

# Per fixture: attribute paths on the Callback -> expected value. "dedup_key": CONTENT means
# the content key of the fixture's own bytes, computed here independently of the parser.
CONTENT = object()
_ENVELOPE_WA_TEXT = {"channel": "WHATSAPP", "identity": WA}

EXPECTED: dict[str, dict[str, Any]] = {
    "message_inbound__text": {
        "dedup_key": "message:01J0A1B2C3D4E5F6G7H8J9K0MN",
        "accepted_time": _utc("2024-06-10T06:13:19.512Z"),
        "event_time": _utc("2024-06-10T06:13:18.900Z"),
        **_ENVELOPE_WA_TEXT,
        "inbound.message_id": "01J0A1B2C3D4E5F6G7H8J9K0MN",
        "inbound.identity_app_id": "",
        "inbound.conversation_id": "",
        "inbound.contact_id": "",
        "inbound.sender_id": "46700000000",
        "inbound.processing_mode": "DISPATCH",
        "inbound.accept_time": _utc("2024-06-10T06:13:19.498Z"),
        "inbound.injected": False,
        "inbound.reply_to": None,
        "inbound.content.kind": "text",
        "inbound.content.text": "Hej! Where is my order?",
        "inbound.content.raw": {"text_message": {"text": "Hej! Where is my order?"}},
    },
    "message_inbound__text_conversation_mode": {
        "dedup_key": "message:01J00JMED05V1Y8ZEF0PGKKP4N",
        # nine fractional digits in the body, trimmed to six
        "accepted_time": datetime(2024, 6, 10, 8, 1, 2, 892757, tzinfo=UTC),
        "event_time": _utc("2024-06-10T08:01:01Z"),
        "message_metadata": '{"queue":"support-se"}',
        "correlation_id": "cc-session-42",
        "inbound.processing_mode": "CONVERSATION",
        "inbound.conversation_id": "01HZYDX8G077H9WKSXWY1PX76R",
        "inbound.contact_id": "01HZ9J4VE0WH8PVAH2TVTMVC34",
        "inbound.accept_time": datetime(2024, 6, 10, 8, 1, 2, 880341, tzinfo=UTC),
        "inbound.content.kind": "text",
        "inbound.content.text": "Hej igen! Var \u00e4r min order? \U0001f44b",
    },
    "message_inbound__media": {
        "dedup_key": "message:01J00PQPSXE8E9A9DDWBN8J0YK",
        **_ENVELOPE_WA_TEXT,
        "inbound.content.kind": "media",
        "inbound.content.media_url": "https://media.example.net/inbound/8d1c4e2a/receipt-photo.jpg",
        "inbound.content.thumbnail_url": (
            "https://media.example.net/inbound/8d1c4e2a/receipt-photo-thumb.jpg"
        ),
        "inbound.content.filename": "receipt-photo.jpg",
        "inbound.content.text": None,
        "inbound.content.preview()": "[media] receipt-photo.jpg",
    },
    "message_inbound__location": {
        "dedup_key": "message:01J00Q55NKWVNEM678GQGGF219",
        "inbound.content.kind": "location",
        "inbound.content.latitude": 59.3326,
        "inbound.content.longitude": 18.0649,
        "inbound.content.label": "Sergels torg",
        "inbound.content.title": "Shared location",
        "inbound.content.preview()": "[location] Sergels torg (59.3326, 18.0649)",
    },
    "message_inbound__choice_response": {
        "dedup_key": "message:01J00QSP7WSY1Z1YC2GN8VC93V",
        "inbound.metadata": '{"cc_msg":"c41a07","queue":"support-se"}',
        "inbound.content.kind": "choice_response",
        "inbound.content.postback_data": "order_status",
        "inbound.content.choice_message_id": "01J00QQAHRTS8WA61Q2TQC0MN9",
        "inbound.content.preview()": "[choice] order_status",
    },
    "message_inbound__media_card": {
        "dedup_key": "message:01J00SKF7WGDKWTSQXT4VBQA5T",
        "channel": "INSTAGRAM",
        "identity": "17841400000000042",
        "inbound.identity_app_id": APP,
        "inbound.sender_id": "",
        "inbound.content.kind": "media_card",
        "inbound.content.media_url": "https://media.example.net/inbound/3b9f7d10/jacket.jpg",
        "inbound.content.caption": "Is this jacket still available in size M?",
        "inbound.content.preview()": "[media card] Is this jacket still available in size M?",
    },
    "message_inbound__fallback": {
        "dedup_key": "message:01J00TAR82BHZE41TBCP2KYWFW",
        "inbound.content.kind": "fallback",
        "inbound.content.fallback_reason": "UNSUPPORTED_OPERATION",
        "inbound.content.preview()": "[fallback] UNSUPPORTED_OPERATION",
    },
    "message_inbound__channel_specific": {
        "dedup_key": "message:01J00VQW4R49SEVM6FBMZR9MXG",
        "inbound.content.kind": "channel_specific",
        "inbound.content.text": None,
        "inbound.content.preview()": "[channel specific] nfm_reply",
    },
    "message_inbound__reply_to": {
        "dedup_key": "message:01J00X5JASAY1B31M7WV7RMJ1F",
        "inbound.reply_to": "01J00X2TQA0B605BHP0V3B87Q3",
        "inbound.content.kind": "text",
        "inbound.content.text": "Yes, that address is right.",
    },
    "message_inbound__messenger_app_scoped": {
        "dedup_key": "message:01J00F8NFP0M7SJFN268PMPTA0",
        "channel": "MESSENGER",
        "identity": "6512398745123365",
        "inbound.identity_app_id": APP,
        "inbound.content.kind": "text",
        "inbound.content.text": "Hi, can I change my delivery slot?",
    },
    "message_inbound__sms": {
        "dedup_key": "message:01J018F3Y9JP1D0C26QMPH8MKC",
        "accepted_time": datetime(2024, 6, 10, 14, 22, 37, 19246, tzinfo=UTC),
        "channel": "SMS",
        "identity": "12025550143",
        "inbound.sender_id": "12025550188",
        "inbound.identity_app_id": "",
        "inbound.content.text": "STATUS 48213",
    },
    "message_inbound__unknown_channel": {
        "dedup_key": "message:01J01AKJKE7TB18711E179DBV2",
        "channel": "ZALO",
        "identity": "2914806521137741226",
        "inbound.content.kind": "text",
    },
    "message_inbound__product_response": {
        "dedup_key": "message:01J01EN0ANN1WJ2NYB9WKZQ54W",
        "inbound.content.kind": "product_response",
        "inbound.content.title": "Two items from the spring catalogue",
        "inbound.content.preview()": "[product response] Two items from the spring catalogue",
    },
    "message_inbound__unknown_content": {
        "dedup_key": "message:01J01FRDR6FVXHXWXQFZCGQMCY",
        "inbound.content.kind": "unknown",
        "inbound.content.text": None,
        "inbound.content.preview()": "[unknown content] contact_info_message",
    },
    "message_delivery__queued_on_channel": {
        "dedup_key": "delivery:01J0B7Q2ZK9M3N4P5R6S7T8V9W:QUEUED_ON_CHANNEL:WHATSAPP",
        **_ENVELOPE_WA_TEXT,
        "correlation_id": "cc-session-42",
        "delivery.message_id": "01J0B7Q2ZK9M3N4P5R6S7T8V9W",
        "delivery.status": "QUEUED_ON_CHANNEL",
        "delivery.metadata": '{"cc_msg":"7f3e2c","queue":"support-se"}',
        "delivery.reason_code": None,
        "delivery.processing_mode": "DISPATCH",
    },
    "message_delivery__delivered": {
        "dedup_key": "delivery:01J0B7Q2ZK9M3N4P5R6S7T8V9W:DELIVERED:WHATSAPP",
        "accepted_time": _utc("2024-06-10T06:15:04.118Z"),
        "event_time": _utc("2024-06-10T06:15:03Z"),
        "delivery.status": "DELIVERED",
        "delivery.channel": "WHATSAPP",
        "delivery.identity": WA,
        "delivery.conversation_id": "",
        "delivery.contact_id": "",
    },
    "message_delivery__read": {
        "dedup_key": "delivery:01J0B7Q2ZK9M3N4P5R6S7T8V9W:READ:WHATSAPP",
        "delivery.status": "READ",
    },
    "message_delivery__failed": {
        "dedup_key": "delivery:01J0GQ4T5V6W7X8Y9Z0A1B2C3D:FAILED:WHATSAPP",
        "delivery.status": "FAILED",
        "delivery.reason_code": "OUTSIDE_ALLOWED_SENDING_WINDOW",
        "delivery.reason_description": (
            "Channel says the customer has not written in the last 24 hours"
        ),
        "delivery.sub_code": "UNSPECIFIED_SUB_CODE",
        "delivery.channel_code": "131047",
        "delivery.metadata": '{"cc_msg":"8a1b9d"}',
    },
    "message_delivery__switching_channel": {
        "dedup_key": "delivery:01J00CJAXVXD9GH7MK7F1MQ1VM:SWITCHING_CHANNEL:WHATSAPP",
        "delivery.status": "SWITCHING_CHANNEL",
        "delivery.reason_code": "RECIPIENT_NOT_REACHABLE",
        "delivery.channel_code": None,
    },
    "event_inbound__composing": {
        "dedup_key": "event:01J010A2HEWBAEJMDZ4EF2NA79",
        "channel": "RCS",
        "identity": WA,
        "event.event_id": "01J010A2HEWBAEJMDZ4EF2NA79",
        "event.kind": "composing",
        "event.channel": "RCS",
        "event.identity": WA,
    },
    "event_inbound__composing_end": {
        "dedup_key": "event:01J010A8NTNGNV1J50Q9AJKEE5",
        "event.kind": "composing_end",
    },
    "event_inbound__reaction": {
        "dedup_key": "event:01J010C8R2A4B3K959M8YCXE1Y",
        "event.kind": "other",
    },
    "event_delivery__delivered": {"dedup_key": CONTENT, "channel": "RCS", "identity": WA},
    "message_submit__text": {"dedup_key": CONTENT, **_ENVELOPE_WA_TEXT},
    "conversation_start__basic": {"dedup_key": CONTENT, "channel": None, "identity": None},
    "contact_create__basic": {
        "dedup_key": CONTENT,
        "accepted_time": _utc("2024-06-01T09:30:00.412Z"),
        "channel": None,
    },
    "opt_in__basic": {"dedup_key": CONTENT, **_ENVELOPE_WA_TEXT},
    "unsupported__basic": {
        "dedup_key": CONTENT,
        "channel": "MESSENGER",
        "identity": "6512398745123365",
    },
    "capability__basic": {"dedup_key": CONTENT, **_ENVELOPE_WA_TEXT},
}

REQUIRED_FIXTURES = {
    "message_inbound__text",
    "message_inbound__text_conversation_mode",
    "message_inbound__media",
    "message_inbound__location",
    "message_inbound__choice_response",
    "message_inbound__media_card",
    "message_inbound__fallback",
    "message_inbound__channel_specific",
    "message_inbound__reply_to",
    "message_inbound__messenger_app_scoped",
    "message_inbound__sms",
    "message_inbound__unknown_channel",
    "message_delivery__queued_on_channel",
    "message_delivery__delivered",
    "message_delivery__read",
    "message_delivery__failed",
    "message_delivery__switching_channel",
    "event_inbound__composing",
    "event_inbound__composing_end",
    "event_delivery__delivered",
    "message_submit__text",
    "conversation_start__basic",
    "contact_create__basic",
    "opt_in__basic",
    "unsupported__basic",
    "capability__basic",
}


def _resolve(callback: Callback, path: str) -> Any:
    value: Any = callback
    for part in path.split("."):
        if part.endswith("()"):
            value = getattr(value, part[:-2])()
        else:
            value = getattr(value, part)
    return value


@pytest.mark.parametrize("name", all_fixture_names())
def test_fixture_parses_to_its_expectations(name: str) -> None:
    raw = load_fixture(name)
    callback = parse_callback(raw)

    assert callback.trigger == fixture_trigger(name)
    assert callback.app_id == APP
    assert callback.project_id == PROJECT
    assert callback.body == json.loads(raw)
    assert callback.accepted_time is not None
    assert callback.accepted_time.tzinfo is UTC
    parts = [callback.inbound, callback.delivery, callback.event]
    if callback.trigger in events.HANDLED_TRIGGERS:
        assert sum(part is not None for part in parts) == 1
        assert callback.handled
    else:
        assert parts == [None, None, None]
        assert not callback.handled
    for path, expected in EXPECTED[name].items():
        if expected is CONTENT:
            expected = _content_key(raw)
        assert _resolve(callback, path) == expected, path


def test_every_fixture_has_expectations_and_every_expectation_a_fixture() -> None:
    assert set(EXPECTED) == set(all_fixture_names())


def test_the_required_fixtures_exist() -> None:
    assert REQUIRED_FIXTURES <= set(all_fixture_names())


def test_every_handled_trigger_has_fixtures() -> None:
    covered = {fixture_trigger(name) for name in all_fixture_names()}
    assert events.HANDLED_TRIGGERS <= covered
    assert covered <= events.ALL_TRIGGERS


def test_trigger_table_matches_the_reference() -> None:
    assert len(events.TRIGGER_KEYS) == 21
    assert events.HANDLED_TRIGGERS == {"MESSAGE_INBOUND", "MESSAGE_DELIVERY", "EVENT_INBOUND"}
    # every trigger we can detect is one an administrator can subscribe to
    assert events.ALL_TRIGGERS <= set(config_model.TRIGGERS)
    assert "UNSPECIFIED_TRIGGER" not in events.ALL_TRIGGERS


def test_text_fixture_is_the_reference_signature_vector() -> None:
    raw = load_fixture("message_inbound__text")
    assert len(raw) == 596
    assert hashlib.sha256(raw).hexdigest() == (
        "c9ae027fba909c443629889337ce32ca04e5c35d8a51e2e108e9be1d1b08b8e0"
    )
    assert (
        signature.compute_signature(
            "cc-connector-test-secret-2024", raw, "01J9Z3W6Q8T2N4B7C5D1E0F9GH", "1718000000"
        )
        == "iYZKoYUiEcF+B9BB2otN8vHpE1t2NEKA0YXrnc52Xqk="
    )


def test_load_fixture_names_the_available_ones_for_an_unknown_name() -> None:
    with pytest.raises(FixtureError, match="message_inbound__text"):
        load_fixture("message_inbound__nope")
    with pytest.raises(FixtureError):
        load_fixture("../fixtures/sinch/message_inbound__text")
    assert load_fixture("message_inbound__sms.json") == load_fixture("message_inbound__sms")


def test_load_fixture_rejects_invalid_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "message_inbound__broken.json").write_bytes(b'{"app_id": ')
    monkeypatch.setattr(sinch_fixtures, "FIXTURE_DIR", tmp_path)
    with pytest.raises(FixtureError, match="not valid JSON"):
        load_fixture("message_inbound__broken")


def test_fixture_trigger_reads_the_name() -> None:
    assert fixture_trigger("message_delivery__read") == "MESSAGE_DELIVERY"
    assert fixture_trigger("opt_in__basic.json") == "OPT_IN"
    with pytest.raises(FixtureError):
        fixture_trigger("message_inbound")


# --------------------------------------------------------------------------- malformed

DELETE = object()


def _body(name: str = "message_inbound__text") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(load_fixture(name))
    return data


def _with(name: str, path: str, value: Any) -> bytes:
    """The fixture with ``path`` (dotted) set to ``value``, or removed for DELETE."""
    body = _body(name)
    *parents, last = path.split(".")
    target = body
    for part in parents:
        target = target[part]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return json.dumps(body).encode()


INBOUND = "message_inbound__text"
LOCATION = "message_inbound__location"
DELIVERY = "message_delivery__delivered"
EVENT = "event_inbound__composing"

MALFORMED: list[tuple[str, bytes, str]] = [
    ("not utf-8", b'{"message": "\xff"}', "body is not UTF-8"),
    ("not json", b"message=hello", "body is not JSON"),
    ("empty", b"", "body is not JSON"),
    ("bom", b"\xef\xbb\xbf" + load_fixture(INBOUND), "body is not JSON"),
    ("array", b"[1, 2]", "body: expected a JSON object, got an array"),
    ("string", b'"message"', "body: expected a JSON object, got a string"),
    ("empty object", b"{}", "no recognisable callback kind"),
    ("unknown key", b'{"app_id": "A", "reaction": {}}', "no recognisable callback kind"),
    ("null kind", b'{"app_id": "A", "capability_notification": null}', "no recognisable"),
    ("nan", b'{"message": NaN}', "body is not JSON"),
    ("infinity", b'{"event_time": -Infinity, "opt_in_notification": {}}', "body is not JSON"),
    ("float overflow", b'{"opt_in_notification": {"x": 1e999}}', "body is not JSON"),
    ("huge int", b'{"opt_in_notification": {"x": ' + b"9" * 5000 + b"}}", "body is not JSON"),
    ("lone surrogate", b'{"opt_in_notification": {"x": "\\ud800"}}', "lone surrogate"),
    ("surrogate key", b'{"opt_in_notification": {"\\udfff": 1}}', "lone surrogate"),
    ("deep", b'{"opt_in_notification": ' + b"[" * 70 + b"]" * 70 + b"}", "nested deeper"),
    ("very deep", b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    ("very deep object", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested deeper"),
    ("app_id number", _with(INBOUND, "app_id", 42), "app_id: expected a string, got a number"),
    ("project_id list", _with(INBOUND, "project_id", []), "project_id: expected a string"),
    ("message array", _with(INBOUND, "message", []), "message: expected an object, got an array"),
    ("message string", _with(INBOUND, "message", "hi"), "message: expected an object"),
    ("no id", _with(INBOUND, "message.id", DELETE), "message.id: expected a non-empty string"),
    ("id number", _with(INBOUND, "message.id", 7), "message.id: expected a non-empty string"),
    ("id blank", _with(INBOUND, "message.id", "  "), "message.id: expected a non-empty string"),
    ("id too long", _with(INBOUND, "message.id", "A" * 41), "message.id: expected at most 40"),
    (
        "no channel identity",
        _with(INBOUND, "message.channel_identity", DELETE),
        "message.channel_identity: expected an object, got nothing",
    ),
    (
        "no channel",
        _with(INBOUND, "message.channel_identity.channel", DELETE),
        "message.channel_identity.channel: expected a non-empty string",
    ),
    (
        "null identity",
        _with(INBOUND, "message.channel_identity.identity", None),
        "message.channel_identity.identity: expected a non-empty string, got null",
    ),
    (
        "empty identity",
        _with(INBOUND, "message.channel_identity.identity", ""),
        "message.channel_identity.identity: expected a non-empty string",
    ),
    (
        "identity with NUL",
        _with(INBOUND, "message.channel_identity.identity", "4670\u00001234567"),
        "message.channel_identity.identity: contains control characters",
    ),
    (
        "no contact message",
        _with(INBOUND, "message.contact_message", DELETE),
        "message.contact_message: expected an object, got nothing",
    ),
    (
        "text not a string",
        _with(INBOUND, "message.contact_message.text_message.text", ["hi"]),
        "message.contact_message.text_message.text: expected a string, got an array",
    ),
    (
        "text_message not an object",
        _with(INBOUND, "message.contact_message.text_message", "hi"),
        "message.contact_message.text_message: expected an object",
    ),
    (
        "media without url",
        _with("message_inbound__media", "message.contact_message.media_message.url", DELETE),
        "message.contact_message.media_message.url: expected a non-empty URL",
    ),
    (
        "media card without url",
        _with("message_inbound__media_card", "message.contact_message.media_card_message.url", ""),
        "message.contact_message.media_card_message.url: expected a non-empty URL",
    ),
    (
        "location without coordinates",
        _with(LOCATION, "message.contact_message.location_message.coordinates", DELETE),
        "message.contact_message.location_message.coordinates: expected an object",
    ),
    (
        "latitude out of range",
        _with(LOCATION, "message.contact_message.location_message.coordinates.latitude", 91),
        "location_message.coordinates.latitude: expected a number within +-90",
    ),
    (
        "longitude huge",
        _with(LOCATION, "message.contact_message.location_message.coordinates.longitude", 10**300),
        "location_message.coordinates.longitude: expected a number within +-180",
    ),
    (
        "latitude boolean",
        _with(LOCATION, "message.contact_message.location_message.coordinates.latitude", True),
        "location_message.coordinates.latitude: expected a number, got a boolean",
    ),
    (
        "latitude string",
        _with(LOCATION, "message.contact_message.location_message.coordinates.latitude", "59.3"),
        "location_message.coordinates.latitude: expected a number, got a string",
    ),
    (
        "choice without postback",
        _with(
            "message_inbound__choice_response",
            "message.contact_message.choice_response_message.postback_data",
            DELETE,
        ),
        "choice_response_message.postback_data: expected a string, got nothing",
    ),
    (
        "report without message_id",
        _with(DELIVERY, "message_delivery_report.message_id", DELETE),
        "message_delivery_report.message_id: expected a non-empty string, got nothing",
    ),
    (
        "report without status",
        _with(DELIVERY, "message_delivery_report.status", DELETE),
        "message_delivery_report.status: expected a non-empty string, got nothing",
    ),
    (
        "report status object",
        _with(DELIVERY, "message_delivery_report.status", {"code": "DELIVERED"}),
        "message_delivery_report.status: expected a non-empty string, got an object",
    ),
    (
        "report status too long",
        _with(DELIVERY, "message_delivery_report.status", "DELIVERED" * 4),
        "message_delivery_report.status: expected at most 30 characters",
    ),
    (
        "report not an object",
        _with(DELIVERY, "message_delivery_report", 5),
        "message_delivery_report: expected an object, got a number",
    ),
    (
        "event without identity",
        _with(EVENT, "event.channel_identity", DELETE),
        "event.channel_identity: expected an object, got nothing",
    ),
    (
        "event without channel",
        _with(EVENT, "event.channel_identity.channel", 3),
        "event.channel_identity.channel: expected a non-empty string, got a number",
    ),
]


@pytest.mark.parametrize(
    ("raw", "message"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_bodies_are_rejected_naming_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedCallbackError) as caught:
        parse_callback(raw)
    assert message in str(caught.value)
    assert caught.value.reason == str(caught.value)
    assert isinstance(caught.value, events.CallbackError)


def test_non_bytes_input_is_malformed_too() -> None:
    with pytest.raises(MalformedCallbackError, match="expected bytes"):
        parse_callback("{}")  # type: ignore[arg-type]


def test_bytearray_and_memoryview_are_accepted() -> None:
    raw = load_fixture(INBOUND)
    assert parse_callback(bytearray(raw)) == parse_callback(raw)  # type: ignore[arg-type]
    assert parse_callback(memoryview(raw)).dedup_key == parse_callback(raw).dedup_key  # type: ignore[arg-type]


# --------------------------------------------------------------------------- leniency


def test_missing_envelope_ids_read_as_empty() -> None:
    body = _body()
    del body["app_id"], body["project_id"], body["accepted_time"]
    body["event_time"] = None
    callback = parse_callback(json.dumps(body).encode())
    assert (callback.app_id, callback.project_id) == ("", "")
    assert callback.accepted_time is None
    assert callback.event_time is None


def test_unusable_optional_fields_read_as_absent() -> None:
    body = _body()
    message = body["message"]
    message.update(
        conversation_id=12,
        contact_id="X" * 41,
        sender_id=None,
        metadata={"a": 1},
        injected="yes",
        accept_time="yesterday",
        processing_mode=["DISPATCH"],
    )
    message["channel_identity"]["app_id"] = False
    message["contact_message"]["reply_to"] = {"message_id": 5}
    inbound = parse_callback(json.dumps(body).encode()).inbound
    assert inbound is not None
    assert inbound.conversation_id == inbound.contact_id == inbound.sender_id == ""
    assert inbound.metadata == inbound.processing_mode == inbound.identity_app_id == ""
    assert inbound.injected is False
    assert inbound.accept_time is None
    assert inbound.reply_to is None


def test_injected_is_true_only_for_true() -> None:
    raw = _with(INBOUND, "message.injected", True)
    inbound = parse_callback(raw).inbound
    assert inbound is not None
    assert inbound.injected is True


def test_unknown_fields_are_ignored_and_kept_in_body() -> None:
    body = _body()
    body["brand_new_envelope_field"] = {"x": [1, 2]}
    body["message"]["brand_new_message_field"] = True
    callback = parse_callback(json.dumps(body).encode())
    assert callback.body["brand_new_envelope_field"] == {"x": [1, 2]}
    assert callback.dedup_key == "message:01J0A1B2C3D4E5F6G7H8J9K0MN"


def test_unknown_status_and_channel_are_kept() -> None:
    body = _body(DELIVERY)
    body["message_delivery_report"]["status"] = "QUEUED"
    body["message_delivery_report"]["channel_identity"]["channel"] = "SINCH_CHAT"
    report = parse_callback(json.dumps(body).encode()).delivery
    assert report is not None
    assert (report.status, report.channel) == ("QUEUED", "SINCH_CHAT")


def test_report_without_channel_identity_has_no_channel() -> None:
    callback = parse_callback(_with(DELIVERY, "message_delivery_report.channel_identity", DELETE))
    assert callback.delivery is not None
    assert callback.channel is callback.identity is callback.delivery.channel is None
    assert callback.dedup_key == "delivery:01J0B7Q2ZK9M3N4P5R6S7T8V9W:DELIVERED:"


def test_several_kind_keys_resolve_by_precedence() -> None:
    body = _body(INBOUND)
    body["capability_notification"] = {"channel": "SMS"}
    body["message_delivery_report"] = _body(DELIVERY)["message_delivery_report"]
    assert parse_callback(json.dumps(body).encode()).trigger == "MESSAGE_INBOUND"
    del body["message"]
    assert parse_callback(json.dumps(body).encode()).trigger == "MESSAGE_DELIVERY"


@pytest.mark.parametrize("payload", ["text", 3, [], True, {"channel": 5, "identity": ""}])
def test_known_unhandled_kinds_accept_any_payload(payload: Any) -> None:
    raw = json.dumps({"app_id": APP, "opt_out_notification": payload}).encode()
    callback = parse_callback(raw)
    assert callback.trigger == "OPT_OUT"
    assert (callback.channel, callback.identity) == (None, None)
    assert callback.dedup_key == _content_key(raw)


@pytest.mark.parametrize(("key", "trigger"), list(events.TRIGGER_KEYS.items()))
def test_every_trigger_key_is_detected(key: str, trigger: str) -> None:
    payloads_by_key = {
        "message": _body(INBOUND)["message"],
        "message_delivery_report": _body(DELIVERY)["message_delivery_report"],
        "event": _body(EVENT)["event"],
    }
    body = {"app_id": APP, "project_id": PROJECT, key: payloads_by_key.get(key, {})}
    assert parse_callback(json.dumps(body).encode()).trigger == trigger


def test_contact_event_kinds() -> None:
    def kind_of(contact_event: Any, key: str = "contact_event") -> str:
        body = _body(EVENT)
        del body["event"]["contact_event"]
        if contact_event is not DELETE:
            body["event"][key] = contact_event
        event = parse_callback(json.dumps(body).encode()).event
        assert event is not None
        return event.kind

    assert kind_of({"comment_event": {"text": "nice"}}) == "comment"
    assert kind_of({"conversation_deleted_event": {}}) == "other"
    assert kind_of({"generic_event": {"payload": {}}}) == "other"
    assert kind_of("composing") == "other"
    assert kind_of(DELETE) == "other"
    assert kind_of({"reaction_event": {}}, key="contact_message_event") == "other"


# --------------------------------------------------------------------------- dedup keys


def test_event_without_id_gets_a_content_key() -> None:
    raw = _with(EVENT, "event.id", DELETE)
    callback = parse_callback(raw)
    assert callback.event is not None
    assert callback.event.event_id is None
    assert callback.dedup_key == _content_key(raw)


def test_content_key_ignores_whitespace_and_key_order() -> None:
    pretty = load_fixture("capability__basic")
    data = json.loads(pretty)
    compact = json.dumps(dict(reversed(list(data.items()))), separators=(",", ":")).encode()
    assert compact != pretty
    assert parse_callback(compact).dedup_key == parse_callback(pretty).dedup_key
    data["accepted_time"] = "2024-06-10T05:59:04.000Z"
    assert parse_callback(json.dumps(data).encode()).dedup_key != parse_callback(pretty).dedup_key


def test_inbound_key_ignores_the_envelope() -> None:
    retry = _with(INBOUND, "accepted_time", "2024-06-10T06:14:00.000Z")
    assert parse_callback(retry).dedup_key == parse_callback(load_fixture(INBOUND)).dedup_key


def test_delivery_key_separates_status_and_channel() -> None:
    base = parse_callback(load_fixture("message_delivery__queued_on_channel")).dedup_key
    on_sms = _with(
        "message_delivery__queued_on_channel",
        "message_delivery_report.channel_identity.channel",
        "SMS",
    )
    assert parse_callback(on_sms).dedup_key != base
    delivered = parse_callback(load_fixture(DELIVERY)).dedup_key
    assert delivered != base
    assert delivered.rsplit(":", 2)[0] == base.rsplit(":", 2)[0]


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-02-07T20:01:09.892757478Z", datetime(2022, 2, 7, 20, 1, 9, 892757, tzinfo=UTC)),
        ("2024-06-10T06:13:19Z", datetime(2024, 6, 10, 6, 13, 19, tzinfo=UTC)),
        ("2024-06-10T06:13:19.5Z", datetime(2024, 6, 10, 6, 13, 19, 500000, tzinfo=UTC)),
        ("2024-06-10t06:13:19.123z", datetime(2024, 6, 10, 6, 13, 19, 123000, tzinfo=UTC)),
        ("2024-06-10T08:13:19.000+02:00", datetime(2024, 6, 10, 6, 13, 19, tzinfo=UTC)),
        ("2024-06-10T00:43:19-0530", datetime(2024, 6, 10, 6, 13, 19, tzinfo=UTC)),
        (
            "2024-06-10 06:13:19.1234567891234Z",
            datetime(2024, 6, 10, 6, 13, 19, 123456, tzinfo=UTC),
        ),
        ("2024-06-10T06:13:19", None),  # naive: no zone, no guess
        ("2024-06-10", None),
        ("2024-13-01T00:00:00Z", None),
        ("2024-06-10T24:00:00Z", None),
        ("2024-06-10T06:13:60Z", None),
        ("2024-06-10T06:13:19+25:00", None),
        ("0001-01-01T00:00:00+01:00", None),  # before datetime.min in UTC
        ("9999-12-31T23:59:59-01:00", None),  # after datetime.max in UTC
        ("\u0662024-06-10T06:13:19Z", None),  # non-ASCII digit
        ("yesterday", None),
        ("", None),
        (1718000000, None),
        (None, None),
        (["2024-06-10T06:13:19Z"], None),
        ("2024-06-10T06:13:19." + "1" * 100 + "Z", None),  # absurdly long
    ],
)
def test_parse_timestamp(text: object, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


@given(st.datetimes(min_value=datetime(2, 1, 1), timezones=st.just(UTC)))
def test_parse_timestamp_round_trips_isoformat(moment: datetime) -> None:
    assert parse_timestamp(moment.isoformat().replace("+00:00", "Z")) == moment
    west = moment.astimezone(timezone(timedelta(hours=-3, minutes=-30)))
    assert parse_timestamp(west.isoformat()) == moment


@pytest.mark.parametrize(
    ("channel", "identity", "expected"),
    [
        ("SMS", "+46701234567", "46701234567"),
        ("WHATSAPP", "+46701234567", "46701234567"),
        ("RCS", "+46701234567", "46701234567"),
        ("VIBERBM", "+46701234567", "46701234567"),
        ("MMS", "+12025550143", "12025550143"),
        ("WHATSAPP", "46701234567", "46701234567"),
        ("MESSENGER", "+6512398745123365", "+6512398745123365"),
        ("ZALO", "+123", "+123"),
        ("SMS", "++46", "+46"),
    ],
)
def test_normalize_identity(channel: str, identity: str, expected: str) -> None:
    assert normalize_identity(channel, identity) == expected


def test_previews_are_one_line_and_bounded() -> None:
    content = events.Content(kind="text", text="line one\n\nline   two\t")
    assert content.preview() == "line one line two"
    assert events.Content(kind="text", text=" \n").preview() == "[empty message]"
    long = events.Content(kind="text", text="x" * 500).preview()
    assert len(long) == 200
    assert long.endswith("\u2026")
    assert events.Content(kind="location", latitude=1.5, longitude=-2.0).preview() == (
        "[location] (1.5, -2)"
    )
    media = events.Content(kind="media", media_url="https://h.example/a/b/photo.png?sig=1")
    assert media.preview() == "[media] photo.png"
    card = events.Content(kind="media_card", media_url="https://h.example/card.jpg")
    assert card.preview() == "[media card] card.jpg"
    assert (
        events.Content(kind="fallback").preview() == "[fallback] message the channel could not map"
    )
    assert events.Content(kind="channel_specific").preview() == "[channel specific]"
    assert events.Content(kind="unknown", raw={"b": 1, "a": 2}).preview() == (
        "[unknown content] a, b"
    )


def test_callback_is_frozen() -> None:
    callback = parse_callback(load_fixture(INBOUND))
    with pytest.raises(dataclasses.FrozenInstanceError):
        callback.trigger = "OPT_IN"  # type: ignore[misc]


# --------------------------------------------------------------------------- fuzzing

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**4000), max_value=10**4000)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["", " ", "\u0000", "+46701234567", "2024-06-10T06:13:19Z", "WHATSAPP"])
)
_keys = st.sampled_from(
    [
        *events.TRIGGER_KEYS,
        "id",
        "app_id",
        "channel_identity",
        "channel",
        "identity",
        "contact_message",
        "text_message",
        "text",
        "status",
        "message_id",
        "contact_event",
        "coordinates",
        "latitude",
        "url",
        "reply_to",
        "accepted_time",
    ]
) | st.text(max_size=12)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=25,
)


def _parse_or_malformed(raw: bytes) -> Callback | None:
    """The Callback, or None when rejected; any other exception fails the test."""
    try:
        callback = parse_callback(raw)
    except MalformedCallbackError as exc:
        if not exc.reason:
            raise AssertionError("rejected without a reason") from exc
        return None
    assert callback.trigger in events.ALL_TRIGGERS
    assert callback.dedup_key
    assert len(callback.dedup_key) <= 200
    return callback


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_else(raw: bytes) -> None:
    _parse_or_malformed(raw)


@FUZZ
@given(json_values)
def test_arbitrary_json_never_raises_anything_else(value: Any) -> None:
    _parse_or_malformed(json.dumps(value).encode())


@FUZZ
@given(st.dictionaries(_keys, json_values, min_size=1, max_size=6))
def test_arbitrary_envelopes_never_raise_anything_else(value: dict[str, Any]) -> None:
    _parse_or_malformed(json.dumps(value).encode())


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@FUZZ
@given(st.sampled_from(all_fixture_names()), st.data())
def test_fixtures_with_any_part_replaced_never_raise_anything_else(
    name: str, data: st.DataObject
) -> None:
    body = json.loads(load_fixture(name))
    path = data.draw(st.sampled_from(_paths(body)))
    mutated = copy.deepcopy(body)
    target = mutated
    for step in path[:-1]:
        target = target[step]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(json_values)
    callback = _parse_or_malformed(json.dumps(mutated).encode())
    if callback is not None and callback.inbound is not None:
        callback.inbound.content.preview()


@FUZZ
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", '{"a":']))
def test_any_nesting_depth_never_raises_anything_else(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = ('{"opt_in_notification":' + opener * depth + "1" + closer * depth + "}").encode()
    callback = _parse_or_malformed(raw)
    assert (callback is not None) == (depth < events.MAX_DEPTH)


# --------------------------------------------------------------------------- emulator


def _emulator_identity(channel: str) -> str:
    return {
        "MESSENGER": "6512398745123365",
        "INSTAGRAM": "17841400000000042",
        "TELEGRAM": "987654321",
        "LINE": "U" + "0123456789abcdef" * 2,
    }.get(channel, "+46701234567" if channel in events.PHONE_NUMBER_CHANNELS else "opaque-42")


# The shapes the emulator's control plane builds (emulator/app.py, _contact_message).
_EMULATOR_CONTENT: list[tuple[dict[str, Any], str]] = [
    ({"text_message": {"text": "Hej! \U0001f44b"}}, "text"),
    ({"text_message": {"text": ""}}, "text"),
    ({"media_message": {"url": "https://media.example.net/x.jpg"}}, "media"),
    ({"location_message": {"coordinates": {"latitude": 59.0, "longitude": -180.0}}}, "location"),
    (
        {
            "location_message": {
                "coordinates": {"latitude": -90.0, "longitude": 18.06},
                "title": "Office",
                "label": "HQ",
            }
        },
        "location",
    ),
    ({"choice_response_message": {"message_id": "", "postback_data": "yes"}}, "choice_response"),
    (
        {
            "choice_response_message": {
                "message_id": "01J0A1B2C3D4E5F6G7H8J9K0MN",
                "postback_data": "",
            }
        },
        "choice_response",
    ),
    (
        {"text_message": {"text": "re"}, "reply_to": {"message_id": "01J0A1B2C3D4E5F6G7H8J9K0MN"}},
        "text",
    ),
]


@settings(max_examples=80, deadline=None)
@given(
    channel=st.sampled_from(EMULATOR_CHANNELS),
    content=st.sampled_from(_EMULATOR_CONTENT),
    mode=st.sampled_from(["DISPATCH", "CONVERSATION"]),
    now=st.floats(min_value=1_600_000_000, max_value=2_000_000_000),
    sender_id=st.sampled_from(["", "46700000000", "12025550188"]),
)
def test_parses_what_the_emulator_sends_inbound(
    channel: str, content: tuple[dict[str, Any], str], mode: str, now: float, sender_id: str
) -> None:
    contact_message, kind = content
    identity = _emulator_identity(channel)
    conversation_id = "01J09ZZ1Y2X3W4V5T6S7R8Q9P0" if mode == "CONVERSATION" else ""
    body = payloads.inbound_message(
        project_id=PROJECT,
        app_id=APP,
        message_id="01J0A1B2C3D4E5F6G7H8J9K0MN",
        channel=channel,
        identity=identity,
        contact_message=contact_message,
        processing_mode=mode,
        now=now,
        sender_id=sender_id,
        contact_id="01J09ZZ0N1M2K3J4H5G6F7E8D9" if conversation_id else "",
        conversation_id=conversation_id,
    )
    callback = parse_callback(emulator_dumps(body))
    inbound = callback.inbound
    assert inbound is not None
    assert callback.trigger == "MESSAGE_INBOUND"
    assert callback.app_id == APP
    assert callback.dedup_key == "message:01J0A1B2C3D4E5F6G7H8J9K0MN"
    assert callback.accepted_time is not None
    assert callback.event_time is not None
    assert abs(callback.accepted_time.timestamp() - (now + 0.014)) < 0.002
    assert inbound.accept_time is not None
    assert (inbound.channel, inbound.identity) == (channel, identity)
    assert inbound.identity_app_id == (APP if channel in APP_SCOPED_CHANNELS else "")
    assert inbound.processing_mode == mode
    assert inbound.conversation_id == conversation_id
    assert inbound.sender_id == sender_id
    assert inbound.content.kind == kind
    assert inbound.content.raw == contact_message
    assert inbound.reply_to == contact_message.get("reply_to", {}).get("message_id")
    assert inbound.content.preview()


@pytest.mark.parametrize(
    "status", ["QUEUED_ON_CHANNEL", "DELIVERED", "READ", "FAILED", "SWITCHING_CHANNEL"]
)
@pytest.mark.parametrize("channel", EMULATOR_CHANNELS)
def test_parses_what_the_emulator_sends_delivery(status: str, channel: str) -> None:
    identity = _emulator_identity(channel)
    for reason_code in (None, *payloads.REASON_CODES) if status == "FAILED" else (None,):
        body = payloads.delivery_report(
            project_id=PROJECT,
            app_id=APP,
            message_id="01J0B7Q2ZK9M3N4P5R6S7T8V9W",
            status=status,
            channel=channel,
            identity=identity,
            processing_mode="DISPATCH",
            now=1718000104.118,
            reason_code=reason_code,
            metadata='{"cc_msg":"7f3e2c"}',
            correlation_id="cc-session-42",
        )
        callback = parse_callback(emulator_dumps(body))
        report = callback.delivery
        assert report is not None
        assert callback.dedup_key == f"delivery:01J0B7Q2ZK9M3N4P5R6S7T8V9W:{status}:{channel}"
        assert callback.accepted_time == datetime(2024, 6, 10, 6, 15, 4, 118000, tzinfo=UTC)
        assert callback.correlation_id == "cc-session-42"
        assert (report.status, report.channel, report.identity) == (status, channel, identity)
        assert report.reason_code == reason_code
        if reason_code is not None:
            assert report.reason_description == payloads.REASON_DESCRIPTIONS[reason_code]
            assert report.sub_code == "UNSPECIFIED_SUB_CODE"
        assert report.metadata == '{"cc_msg":"7f3e2c"}'
