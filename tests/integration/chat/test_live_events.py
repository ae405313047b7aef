"""Live events published by the workers and the API, heard on the bus (`runtime.live`) by
subscribers with an agent's or an admin's audience."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from convodesk.runtime import Runtime
from convodesk.services.live import Audience, Subscription
from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow
from tests.integration.intake.test_receipts_and_media import outbound_message, report
from tests.support.apps import make_token
from tests.support.intake import configured_runtime, intake_client, post_sinch_fixture, process


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = configured_runtime(database_url, tmp_path)
    yield rt
    rt.close()


@pytest.fixture
def served(runtime: Runtime) -> Iterator[tuple[TestClient, FastAPI]]:
    with intake_client(runtime) as pair:
        yield pair


def agent_of(runtime: Runtime, *queues: str, login: str = "x") -> Subscription:
    return runtime.live.subscribe(Audience(admin=False, agent=login, queues=frozenset(queues)))


def assign_all(runtime: Runtime, login: str = "x") -> None:
    """What accepting the offer does to the conversations (the tests here are about events)."""
    with transaction(runtime.sessions) as session:
        for row in session.query(ConversationRow):
            row.status, row.assigned_agent = "active", login


def drain(subscription: Subscription) -> list[dict[str, Any]]:
    found = []
    while (delivery := subscription.get(0)) is not None:
        found.append(delivery.event.payload())
    return found


def test_a_new_conversation_reaches_its_queue_and_its_messages_its_agent(
    runtime: Runtime, served: tuple[TestClient, FastAPI]
) -> None:
    client, app = served
    whatsapp, messenger = agent_of(runtime, "whatsapp"), agent_of(runtime, "messenger")
    admin = runtime.live.subscribe(Audience(admin=True))
    assert post_sinch_fixture(client, "message_inbound__text").status_code == 200
    process(app)
    # The queue hears that a conversation waits; what the customer wrote is for its agent.
    [opened] = drain(whatsapp)
    assert opened["type"] == "conversation.updated"
    conversation = opened["conversation"]
    assert (conversation["queue"], conversation["status"]) == ("whatsapp", "waiting")
    assert drain(messenger) == []
    events = drain(admin)
    assert [e["type"] for e in events] == ["conversation.updated", "message.created"]
    message = events[1]["message"]
    assert events[1]["conversation_id"] == conversation["id"]
    assert (message["direction"], message["conversation_id"]) == ("inbound", conversation["id"])

    assign_all(runtime, "x")
    other = agent_of(runtime, "whatsapp", login="y")

    def second(data: dict[str, Any]) -> None:
        data["message"]["id"] = "01J0SECONDMESSAGE0000000000"

    assert post_sinch_fixture(client, "message_inbound__text", change=second).status_code == 200
    process(app)
    events = drain(whatsapp)  # agent x, whose conversation it is now
    assert [e["type"] for e in events] == ["conversation.updated", "message.created"]
    assert events[0]["conversation"]["assigned_agent"] == "x"
    assert drain(other) == []  # same queue, not its conversation: nothing


def test_a_reopened_conversation_reaches_its_queue_again(
    runtime: Runtime, served: tuple[TestClient, FastAPI]
) -> None:
    client, app = served
    assert post_sinch_fixture(client, "message_inbound__text").status_code == 200
    process(app)
    with transaction(runtime.sessions) as session:  # served by x, then ended
        for row in session.query(ConversationRow):
            row.status, row.assigned_agent, row.open_key = "closed", "x", None
            row.closed_at = datetime.now(UTC)
    queue = agent_of(runtime, "whatsapp", login="y")

    def later(data: dict[str, Any]) -> None:
        data["message"]["id"] = "01J0LATERMESSAGE00000000000"

    assert post_sinch_fixture(client, "message_inbound__text", change=later).status_code == 200
    process(app)
    [reopened] = drain(queue)  # the queue hears it waits again; not what was written
    assert reopened["type"] == "conversation.updated"
    assert reopened["conversation"]["status"] == "waiting"
    assert reopened["conversation"]["reopen_count"] == 1


def test_typing_and_its_end(runtime: Runtime, served: tuple[TestClient, FastAPI]) -> None:
    client, app = served
    post_sinch_fixture(client, "message_inbound__text")
    process(app)
    assign_all(runtime)
    listener = agent_of(runtime, "whatsapp")

    def on_whatsapp(data: dict[str, Any]) -> None:
        data["event"]["channel_identity"]["channel"] = "WHATSAPP"

    post_sinch_fixture(client, "event_inbound__composing", change=on_whatsapp)
    process(app)
    [typing] = drain(listener)
    assert typing["type"] == "typing"
    until = datetime.fromisoformat(typing["until"].replace("Z", "+00:00"))
    assert until > datetime.now(until.tzinfo)
    post_sinch_fixture(client, "event_inbound__composing_end", change=on_whatsapp)
    process(app)
    assert drain(listener) == [
        {"type": "typing", "conversation_id": typing["conversation_id"], "until": None}
    ]


def test_a_receipt_moves_the_status_on_the_desktop(
    runtime: Runtime, served: tuple[TestClient, FastAPI]
) -> None:
    client, app = served
    message_id = outbound_message(runtime)
    assign_all(runtime)
    listener = agent_of(runtime, "whatsapp")
    post_sinch_fixture(client, "message_delivery__delivered", change=report("DELIVERED"))
    process(app)
    [status] = drain(listener)
    assert (status["type"], status["message_id"], status["status"]) == (
        "message.status",
        message_id,
        "DELIVERED",
    )


def test_an_agents_reply_is_published(runtime: Runtime, served: tuple[TestClient, FastAPI]) -> None:
    client, app = served
    post_sinch_fixture(client, "message_inbound__text")
    process(app)
    admin = runtime.live.subscribe(Audience(admin=True))
    token = make_token(runtime)
    conversation_id = client.get(
        "/api/v1/conversations", headers={"Authorization": f"Bearer {token}"}
    ).json()["items"][0]["id"]
    answer = client.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"text": "On its way"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 202, answer.text
    created, updated = drain(admin)
    assert (created["type"], created["message"]["text"]) == ("message.created", "On its way")
    assert updated["type"] == "conversation.updated"
