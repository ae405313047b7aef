"""End to end through a served app, its workers and the Sinch emulator: the live event
stream reaches the right agent only, offers arrive live, and prompts reach the customer
through the outbox."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from convodesk.emulator.server import running_emulator
from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.web.app import create_app
from convodesk.web.serving import serve_in_thread
from tests.integration.outbound.test_replies_e2e import (
    convodesk_config,
    emulator_config,
    sent_bodies,
    wait_for,
)
from tests.integration.test_cli import free_port
from tests.support.apps import APP_EU, make_runtime, make_token


@dataclass
class Served:
    runtime: Runtime
    url: str
    emulator: httpx.Client
    tokens: dict[str, str]


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    emulator_url = f"http://127.0.0.1:{port}"
    runtime = make_runtime(
        database_url,
        tmp_path,
        allow_custom_endpoints=True,
        oauth_token_url=f"{emulator_url}/oauth2/token",
    )
    raw = convodesk_config(emulator_url)
    raw["agents"] = [
        {"login": "anna", "display_name": "Anna", "queues": ["whatsapp"]},
        {"login": "mia", "display_name": "Mia", "queues": ["messenger"]},
    ]
    raw["chat_settings"] = {"prompts": {"welcome": "Welcome to {queue}! An agent comes soon."}}
    try:
        configuration.apply_config(runtime, raw)
        tokens = {login: make_token(runtime, "agent", login) for login in ("anna", "mia")}
        app = create_app(runtime, workers=True)
        app.state.stream_heartbeat_seconds = 0.2
        with (
            serve_in_thread(app, name="convodesk") as url,
            running_emulator(emulator_config(url), port=port),
            httpx.Client(base_url=emulator_url) as emulator,
        ):
            yield Served(runtime, url, emulator, tokens)
    finally:
        runtime.close()


class Stream:
    """An agent's open ``GET /api/v1/stream``, read line by line."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()
        self.seen: list[dict[str, Any]] = []

    def until(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """The first event so far that matches, else read on (heartbeats keep the reads
        short) until one does."""
        found = next((e for e in self.seen if match(e)), None)
        if found is not None:
            return found
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if line.startswith("data: "):
                event = json.loads(line[len("data: ") :])
                self.seen.append(event)
                if match(event):
                    return event
            assert time.monotonic() < deadline, f"no matching event; seen {self.seen}"
        raise AssertionError(f"the stream ended; seen {self.seen}")


@contextmanager
def stream_of(served: Served, login: str) -> Iterator[Stream]:
    headers = {"Authorization": f"Bearer {served.tokens[login]}"}
    with (
        httpx.Client(base_url=served.url, headers=headers, timeout=10) as client,
        client.stream("GET", "/api/v1/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


def customer_writes(served: Served, channel: str, identity: str, text: str) -> None:
    answer = served.emulator.post(
        "/_emulator/inbound",
        json={"app_id": APP_EU, "channel": channel, "identity": identity, "text": text},
    )
    assert answer.status_code == 202, answer.text


def is_message(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "message.created" and e["message"]["text"] == text


def test_events_reach_the_agents_of_the_queue_only(served: Served) -> None:
    with stream_of(served, "anna") as anna, stream_of(served, "mia") as mia:
        customer_writes(served, "WHATSAPP", "46701000077", "Hi, my parcel?")
        # A new conversation reaches its queue's agents; its messages reach only the agent
        # it is assigned to (nobody yet).
        opened = anna.until(
            lambda e: (
                e["type"] == "conversation.updated"
                and e["conversation"]["identity"] == "46701000077"
            )
        )
        conversation_id = opened["conversation"]["id"]
        customer_writes(served, "MESSENGER", "6512398745120001", "Bonjour")
        mia.until(
            lambda e: (
                e["type"] == "conversation.updated"
                and e["conversation"]["identity"] == "6512398745120001"
            )
        )
        assert all(e.get("conversation_id") != conversation_id for e in mia.seen), mia.seen
        assert all(e.get("conversation", {}).get("id") != conversation_id for e in mia.seen), (
            mia.seen
        )
        assert not any(e["type"] == "message.created" for e in anna.seen), anna.seen

        # Offers arrive live: anna gets ready, the router offers her the chat at once.
        api = httpx.Client(
            base_url=served.url, headers={"Authorization": f"Bearer {served.tokens['anna']}"}
        )
        with api:
            assert api.put("/api/v1/me/presence", json={"state": "ready"}).status_code == 200
            offer = anna.until(lambda e: e["type"] == "offer.created")["offer"]
            assert offer["conversation_id"] == conversation_id
            accepted = api.post(f"/api/v1/offers/{offer['id']}/accept")
            assert accepted.status_code == 200, accepted.text
        anna.until(
            lambda e: (
                e["type"] == "conversation.updated"
                and e["conversation"]["assigned_agent"] == "anna"
            )
        )
        assert not any(e["type"].startswith("offer.") for e in mia.seen)
        # Assigned, anna hears the conversation's messages: the customer's next one.
        customer_writes(served, "WHATSAPP", "46701000077", "It is late")
        created = anna.until(is_message("It is late"))
        assert created["conversation_id"] == conversation_id
        assert created["message"]["direction"] == "inbound"
        # Queue counts: the same fields as an overview row, for the queue's agents only.
        queue = anna.until(lambda e: e["type"] == "queue.updated" and e["queue"] == "whatsapp")
        assert set(queue) == {
            "type",
            "queue",
            "priority",
            "waiting",
            "longest_wait_seconds",
            "agents_ready",
            "agents_busy",
        }
        assert not any(e.get("queue") == "whatsapp" for e in mia.seen), mia.seen


def test_the_welcome_prompt_reaches_the_customer_through_sinch(served: Served) -> None:
    customer_writes(served, "WHATSAPP", "46701000078", "Hello")
    [sent] = wait_for(lambda: sent_bodies(served, "46701000078"))  # type: ignore[arg-type]
    assert sent["message"] == {
        "text_message": {"text": "Welcome to whatsapp! An agent comes soon."}
    }
    assert sent["recipient"]["identified_by"]["channel_identities"] == [
        {"channel": "WHATSAPP", "identity": "46701000078"}
    ]


def test_the_stream_needs_a_token(served: Served) -> None:
    with httpx.Client(base_url=served.url) as client:
        answer = client.get("/api/v1/stream")
    assert answer.status_code == 401


def test_stopping_the_server_ends_open_streams(database_url: str, tmp_path: Path) -> None:
    """The graceful shutdown would wait for ever on a stream: the app ends them first."""
    runtime = make_runtime(database_url, tmp_path)
    try:
        token = make_token(runtime)
        app = create_app(runtime, workers=True)
        with serve_in_thread(app, name="convodesk") as url:
            client = httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            response = client.send(client.build_request("GET", "/api/v1/stream"), stream=True)
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines) == "retry: 3000"
            stopping = time.monotonic()
        # serve_in_thread has stopped the server: the stream ended without the 2 s grace
        assert time.monotonic() - stopping < 1.5
        assert list(lines)[-1:] in ([], [""])
        response.close()
        client.close()
    finally:
        runtime.close()
