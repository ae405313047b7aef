"""The callback intake: every rule of the SMS Server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from convodesk.runtime import Runtime
from convodesk.sinch.signature import sign_headers
from convodesk.storage.db import transaction
from convodesk.storage.event_store import EventWriter
from convodesk.storage.tables import ConversationRow, EventRow, MessageRow
from tests.support.apps import APP_EU, APP_EU2, make_token
from tests.support.intake import (
    WEBHOOK_SECRET,
    configured_runtime,
    intake_client,
    intake_config,
    post_sinch_fixture,
    process,
    signed_post,
)
from tests.support.sinch_fixtures import all_fixture_names, fixture_trigger, load_fixture

HANDLED = {"MESSAGE_INBOUND", "MESSAGE_DELIVERY", "EVENT_INBOUND"}


def events(runtime: Runtime) -> list[EventRow]:
    with transaction(runtime.sessions) as session:
        return list(session.scalars(select(EventRow).order_by(EventRow.id)))


def count(runtime: Runtime, model: Any) -> int:
    with transaction(runtime.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --------------------------------------------------------------------------- per fixture


@pytest.mark.parametrize("name", all_fixture_names())
def test_every_fixture_is_accepted_or_logged(
    name: str, served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    answer = post_sinch_fixture(client, name)
    assert answer.status_code == 200, answer.text
    trigger = fixture_trigger(name)
    [event] = events(runtime)
    assert event.trigger == trigger
    assert event.body == load_fixture(name)  # the raw bytes, as received
    if trigger in HANDLED:
        assert (event.outcome, event.state) == ("accepted", "pending")
        process(app)
        [event] = events(runtime)
        assert event.state in ("done", "unrouted"), event.state_reason
    else:
        assert event.outcome == "ignored"
        assert event.state == "none"


# --------------------------------------------------------------------------- verification


def test_bad_signature_is_401_and_logged_without_the_secret(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, _ = served
    answer = post_sinch_fixture(client, "message_inbound__text", secret="wrong-secret")
    assert answer.status_code == 401
    [event] = events(runtime)
    assert event.outcome == "rejected"
    assert "signature_mismatch" in (event.reason or "")
    assert WEBHOOK_SECRET not in (event.reason or "") + answer.text
    assert count(runtime, MessageRow) == 0


@pytest.mark.parametrize(
    "header",
    [
        "x-sinch-webhook-signature",
        "x-sinch-webhook-signature-nonce",
        "x-sinch-webhook-signature-timestamp",
    ],
)
def test_missing_signature_header_is_401(
    header: str, served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, _ = served
    body = load_fixture("message_inbound__text")
    headers = sign_headers(WEBHOOK_SECRET, body)
    del headers[header]
    answer = client.post("/sms/sinchconversation/sinch-eu", content=body, headers=headers)
    assert answer.status_code == 401
    assert "missing_header" in (events(runtime)[0].reason or "")


def test_wrong_algorithm_is_401(served: tuple[TestClient, FastAPI]) -> None:
    client, _ = served
    answer = post_sinch_fixture(
        client, "message_inbound__text", headers={"x-sinch-webhook-signature-algorithm": "HmacSHA1"}
    )
    assert answer.status_code == 401


def test_replay_outside_the_window_is_refused_inside_harmless(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    old = str(int(time.time()) - 301)
    assert post_sinch_fixture(client, "message_inbound__text", timestamp=old).status_code == 401
    assert "stale_timestamp" in (events(runtime)[0].reason or "")
    recent = str(int(time.time()) - 200)
    assert post_sinch_fixture(client, "message_inbound__text", timestamp=recent).status_code == 200
    assert (
        post_sinch_fixture(client, "message_inbound__text", timestamp=recent).json()["status"]
        == "duplicate"
    )
    process(app)
    assert count(runtime, MessageRow) == 1


def test_signature_is_over_the_raw_bytes(served: tuple[TestClient, FastAPI]) -> None:
    client, _ = served
    body = load_fixture("message_inbound__text")
    headers = sign_headers(WEBHOOK_SECRET, body)
    reserialised = json.dumps(json.loads(body), indent=1).encode()
    answer = client.post("/sms/sinchconversation/sinch-eu", content=reserialised, headers=headers)
    assert answer.status_code == 401


# --------------------------------------------------------------------------- body rules


def test_oversized_body_is_413(served: tuple[TestClient, FastAPI], runtime: Runtime) -> None:
    client, _ = served
    body = b'{"app_id": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    answer = signed_post(client, body)
    assert answer.status_code == 413
    [event] = events(runtime)
    assert event.outcome == "rejected"
    assert len(event.body) <= 4096


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"app_id": "x", "nothing": {}}', b"\xff\xfe"]
)
def test_signed_garbage_is_400(
    body: bytes, served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, _ = served
    answer = signed_post(client, body)
    assert answer.status_code == 400
    assert events(runtime)[0].outcome == "rejected"


def test_foreign_app_is_403(served: tuple[TestClient, FastAPI], runtime: Runtime) -> None:
    client, _ = served

    def other_app(data: dict[str, Any]) -> None:
        data["app_id"] = "01J0000000000000000000000Z"

    answer = post_sinch_fixture(client, "message_inbound__text", change=other_app)
    assert answer.status_code == 403
    assert count(runtime, MessageRow) == 0


def test_unknown_service_is_404(served: tuple[TestClient, FastAPI], runtime: Runtime) -> None:
    client, _ = served
    answer = post_sinch_fixture(client, "message_inbound__text", service="nope")
    assert answer.status_code == 404
    assert events(runtime)[0].reason.startswith("404")  # type: ignore[union-attr]


def test_all_picks_the_service_by_app_id(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, _ = served
    assert post_sinch_fixture(client, "message_inbound__text", service="all").status_code == 200
    assert events(runtime)[0].service == "sinch-eu"

    def unknown(data: dict[str, Any]) -> None:
        data["app_id"] = "01J0000000000000000000000Z"

    assert (
        post_sinch_fixture(
            client, "message_inbound__text", service="all", change=unknown
        ).status_code
        == 403
    )


def test_unconfigured_trigger_is_accepted_with_a_warning(database_url: str, tmp_path: Path) -> None:
    runtime = configured_runtime(
        database_url, tmp_path, intake_config(triggers=("MESSAGE_INBOUND",))
    )
    try:
        with intake_client(runtime) as (client, _):
            assert post_sinch_fixture(client, "message_delivery__delivered").status_code == 200
        [event] = events(runtime)
        assert event.outcome == "accepted"
        assert "not configured" in (event.reason or "")
    finally:
        runtime.close()


# --------------------------------------------------------------------------- idempotency


def test_same_callback_twice_has_one_effect(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    first = post_sinch_fixture(client, "message_inbound__text")
    second = post_sinch_fixture(client, "message_inbound__text")  # re-signed: new nonce
    assert (first.json()["status"], second.json()["status"]) == ("accepted", "duplicate")
    process(app)
    assert count(runtime, MessageRow) == 1
    assert [e.outcome for e in events(runtime)] == ["accepted", "duplicate"]


def test_concurrent_copies_have_one_effect(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    body = load_fixture("message_inbound__text")
    results: list[int] = []

    def send() -> None:
        results.append(signed_post(client, body).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert sum(1 for e in events(runtime) if e.outcome == "accepted") == 1
    process(app)
    assert count(runtime, MessageRow) == 1


def test_database_failure_is_503_never_200(runtime: Runtime, tmp_path: Path) -> None:
    with intake_client(runtime) as (client, app):
        broken = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
        writer = EventWriter(broken)
        writer.start()
        old, app.state.intake._writer = app.state.intake._writer, writer
        try:
            answer = post_sinch_fixture(client, "message_inbound__text")
        finally:
            app.state.intake._writer = old
            writer.stop()
            broken.dispose()
        assert answer.status_code == 503
        assert answer.headers["retry-after"]
        assert post_sinch_fixture(client, "message_inbound__text").status_code == 200


# --------------------------------------------------------------------------- threading


def inbound_from(identity: str, message_id: str, channel: str = "WHATSAPP", app_id: str = APP_EU):
    def change(data: dict[str, Any]) -> None:
        data["app_id"] = app_id
        data["message"]["id"] = message_id
        data["message"]["channel_identity"]["identity"] = identity
        data["message"]["channel_identity"]["channel"] = channel

    return change


def conversations(runtime: Runtime) -> list[ConversationRow]:
    with transaction(runtime.sessions) as session:
        return list(session.scalars(select(ConversationRow).order_by(ConversationRow.id)))


def test_messages_thread_into_one_open_conversation_per_identity(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    post_sinch_fixture(
        client,
        "message_inbound__text",
        change=inbound_from("46701111111", "01J0A1B2C3D4E5F6G7H8J9K001"),
    )
    post_sinch_fixture(
        client,
        "message_inbound__text",
        change=inbound_from("+46701111111", "01J0A1B2C3D4E5F6G7H8J9K002"),
    )
    post_sinch_fixture(
        client,
        "message_inbound__text",
        change=inbound_from("46702222222", "01J0A1B2C3D4E5F6G7H8J9K003"),
    )
    post_sinch_fixture(
        client,
        "message_inbound__text",
        change=inbound_from("46701111111", "01J0A1B2C3D4E5F6G7H8J9K004", "SMS"),
    )
    process(app)
    convs = conversations(runtime)
    assert [(c.channel, c.identity, c.queue, c.status) for c in convs] == [
        ("WHATSAPP", "46701111111", "whatsapp", "waiting"),
        ("WHATSAPP", "46702222222", "whatsapp", "waiting"),
        ("SMS", "46701111111", "sms", "waiting"),
    ]
    assert count(runtime, MessageRow) == 4


def test_unrouted_messages_are_kept_and_replayable(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    post_sinch_fixture(
        client,
        "message_inbound__text",
        change=inbound_from("1234567", "01J0A1B2C3D4E5F6G7H8J9K005", "TELEGRAM"),
    )
    process(app)
    [event] = events(runtime)
    assert event.state == "unrouted"
    assert f"{APP_EU}@telegram.sinchconversation.com" in (event.state_reason or "")
    assert conversations(runtime) == []
    # The admin adds a queue for the address, then replays.
    raw = intake_config()
    raw["queues"].append(
        {
            "name": "telegram",
            "type": "chat",
            "addresses": [f"{APP_EU}@telegram.sinchconversation.com"],
        }
    )
    from convodesk.services import configuration

    configuration.apply_config(runtime, raw)
    app.state.directory.invalidate()
    with transaction(runtime.sessions) as session:
        session.get(EventRow, event.id).state = "pending"  # type: ignore[union-attr]
    process(app)
    assert events(runtime)[0].state == "done"
    assert [c.queue for c in conversations(runtime)] == ["telegram"]


def test_reopen_window(served: tuple[TestClient, FastAPI], runtime: Runtime) -> None:
    from datetime import UTC, datetime, timedelta

    client, app = served
    post_sinch_fixture(
        client,
        "message_inbound__text",
        change=inbound_from("46703333333", "01J0A1B2C3D4E5F6G7H8J9K006"),
    )
    process(app)
    [conv] = conversations(runtime)

    def close(at: datetime) -> None:
        with transaction(runtime.sessions) as session:
            row = session.get(ConversationRow, conv.id)
            assert row is not None
            row.status, row.open_key, row.closed_at = "closed", None, at

    close(datetime.now(UTC) - timedelta(minutes=10))  # inside the 1 h window
    post_sinch_fixture(
        client,
        "message_inbound__text",
        change=inbound_from("46703333333", "01J0A1B2C3D4E5F6G7H8J9K007"),
    )
    process(app)
    [reopened] = conversations(runtime)
    assert (reopened.id, reopened.status, reopened.reopen_count) == (conv.id, "waiting", 1)

    close(datetime.now(UTC) - timedelta(hours=2))  # outside
    post_sinch_fixture(
        client,
        "message_inbound__text",
        change=inbound_from("46703333333", "01J0A1B2C3D4E5F6G7H8J9K008"),
    )
    process(app)
    assert [c.status for c in conversations(runtime)] == ["closed", "waiting"]


def test_conversation_mode_ids_are_stored(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    post_sinch_fixture(client, "message_inbound__text_conversation_mode")
    process(app)
    [conv] = conversations(runtime)
    assert conv.sinch_conversation_id
    assert conv.sinch_contact_id


def test_app_scoped_identity_keeps_its_app(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    post_sinch_fixture(client, "message_inbound__messenger_app_scoped")
    process(app)
    [conv] = conversations(runtime)
    assert (conv.channel, conv.queue, conv.identity_app_id) == ("MESSENGER", "messenger", APP_EU)


def test_second_app_of_the_service_without_a_queue_is_unrouted(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    post_sinch_fixture(
        client,
        "message_inbound__text",
        change=inbound_from("46704444444", "01J0A1B2C3D4E5F6G7H8J9K009", app_id=APP_EU2),
    )
    process(app)
    assert events(runtime)[0].state == "unrouted"


def test_composing_events_show_the_customer_typing(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    post_sinch_fixture(client, "message_inbound__text")  # WHATSAPP 46701234567
    process(app)

    def on_whatsapp(data: dict[str, Any]) -> None:
        data["event"]["channel_identity"]["channel"] = "WHATSAPP"

    token = make_token(runtime)
    headers = {"Authorization": f"Bearer {token}"}
    post_sinch_fixture(client, "event_inbound__composing", change=on_whatsapp)
    process(app)
    [conv] = client.get("/api/v1/conversations", headers=headers).json()["items"]
    assert conv["customer_typing"] is True
    post_sinch_fixture(client, "event_inbound__composing_end", change=on_whatsapp)
    process(app)
    [conv] = client.get("/api/v1/conversations", headers=headers).json()["items"]
    assert conv["customer_typing"] is False
