"""Two `convodesk serve` processes on one PostgreSQL database: an agent's live stream open on
node A hears what happens on node B (LISTEN/NOTIFY, `services/live_pg.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from convodesk.sinch.signature import sign_headers
from tests.integration.test_cli import free_port
from tests.reliability.test_intake_crash import Node
from tests.support.apps import TEST_SECRET_KEY, make_runtime, make_token
from tests.support.factories import inbound_body, sinch_id
from tests.support.intake import WEBHOOK_SECRET, intake_config

ARRIVAL_SECONDS = 5.0


@pytest.fixture
def two_nodes(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Nodes A and B (URLs), and an agent token for anna (queue whatsapp)."""
    raw = {
        **intake_config(),
        "database_url": postgres_url,
        "data_dir": str(tmp_path / "data"),
        "agents": [{"login": "anna", "display_name": "Anna", "queues": ["whatsapp"]}],
    }
    config = tmp_path / "convodesk.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY}
    applied = subprocess.run(
        [sys.executable, "-m", "convodesk", "config", "apply", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    runtime = make_runtime(postgres_url, tmp_path / "data")
    try:
        token = make_token(runtime, "agent", "anna")
    finally:
        runtime.close()
    nodes = [Node(config, free_port(), tmp_path / f"node-{name}.log") for name in "ab"]
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:  # both start at once
            list(pool.map(Node.start, nodes))
        yield f"http://127.0.0.1:{nodes[0].port}", f"http://127.0.0.1:{nodes[1].port}", token
    finally:
        for node in nodes:
            node.stop()


class Events:
    """The events of an open stream, read as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()
        self.seen: list[dict[str, Any]] = []

    def until(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for line in self.lines:  # heartbeats (0.2 s... 15 s) and events
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                self.seen.append(event)
                if match(event):
                    return event
            assert time.monotonic() < deadline, f"nothing matching; seen {self.seen}"
        raise AssertionError(f"the stream ended; seen {self.seen}")


@pytest.mark.postgres
def test_a_stream_on_one_node_hears_the_other(two_nodes: tuple[str, str, str]) -> None:
    node_a, node_b, token = two_nodes
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=node_a, headers=headers, timeout=ARRIVAL_SECONDS) as on_a,
        on_a.stream("GET", "/api/v1/stream") as response,
        httpx.Client(base_url=node_b, headers=headers, timeout=10) as on_b,
    ):
        assert response.status_code == 200
        stream = Events(response)
        # A customer writes; Sinch delivers the callback to node B. The new conversation
        # reaches its queue's agents, on every node.
        posted = time.monotonic()
        _customer_writes(on_b, "across nodes")
        opened = stream.until(
            lambda e: (
                e["type"] == "conversation.updated"
                and e["conversation"]["identity"] == "46709990002"
            ),
            ARRIVAL_SECONDS,
        )
        assert time.monotonic() - posted < ARRIVAL_SECONDS
        conversation_id = opened["conversation"]["id"]

        # What anna does on node B (published by B's request itself) shows on node A too.
        assert on_b.put("/api/v1/me/presence", json={"state": "ready"}).status_code == 200
        presence = stream.until(lambda e: e["type"] == "presence.updated", ARRIVAL_SECONDS)
        assert (presence["agent"], presence["state"]) == ("anna", "ready")
        offer = stream.until(lambda e: e["type"] == "offer.created", ARRIVAL_SECONDS)["offer"]
        assert offer["conversation_id"] == conversation_id
        assert on_b.post(f"/api/v1/offers/{offer['id']}/accept").status_code == 200

        # Assigned to anna, the conversation's next message (to B) reaches her stream on A.
        _customer_writes(on_b, "still there?")
        created = stream.until(
            lambda e: e["type"] == "message.created" and e["message"]["text"] == "still there?",
            ARRIVAL_SECONDS,
        )
        assert created["conversation_id"] == conversation_id
        assert created["message"]["direction"] == "inbound"


def _customer_writes(node: httpx.Client, text: str) -> None:
    body = inbound_body(message_id=sinch_id(), identity="46709990002", text=text)
    answer = node.post(
        "/sms/sinchconversation/sinch-eu", content=body, headers=sign_headers(WEBHOOK_SECRET, body)
    )
    assert answer.status_code == 200, answer.text
