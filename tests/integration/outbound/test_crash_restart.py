"""kill -9 of `convodesk serve` while agent replies are on their way to Sinch.

30 replies are accepted (202) through the API; the emulator answers every send after 300 ms,
so sends are in flight when the process is killed. After a restart every reply reaches the
emulator and ends ``accepted`` or later. A reply may reach the emulator twice only if it was
in flight at the kill (outbox row ``sending``): the emulator accepted it but the process died
before committing the answer, and Sinch's ``messages:send`` has no idempotency key
(docs/reference/sending.md, "Crashes"). The outbox lease is 5 s here
(``send_lease_seconds``), so the restarted process takes the interrupted sends over within
seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from convodesk.domain import delivery
from convodesk.emulator.server import running_emulator
from convodesk.storage import db
from convodesk.storage.tables import ConversationRow, MessageRow, OutboxRow
from tests.integration.outbound.test_replies_e2e import convodesk_config
from tests.integration.test_cli import free_port
from tests.reliability.test_intake_crash import Node, emulator_config, wait_for
from tests.support.apps import APP_EU, TEST_SECRET_KEY

REPLIES = 30
LATENCY_MS = 300
LEASE_SECONDS = 5
KILL_AFTER = 8  # sends received by the emulator before the kill


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[tuple[Node, str, str]]:
    serve_port, emulator_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    raw = {
        **convodesk_config(emulator_url),
        "database_url": database_url,
        "data_dir": str(tmp_path / "data"),
        "send_lease_seconds": LEASE_SECONDS,
        "queues": [{"name": "whatsapp", "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"]}],
    }
    raw["messaging_services"] = raw["messaging_services"][:1]
    config = tmp_path / "convodesk.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY}
    token = ""
    for command in (["config", "apply", str(config)], ["token", "create", "--role", "admin"]):
        if command[0] == "token":
            command = [*command, "--config", str(config)]
        done = subprocess.run(
            [sys.executable, "-m", "convodesk", *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        token = done.stdout.strip().splitlines()[-1]
    serve = Node(config, serve_port, tmp_path / "serve.log")
    with running_emulator(emulator_config(f"http://127.0.0.1:{serve_port}"), port=emulator_port):
        serve.start()
        try:
            yield serve, emulator_url, token
        finally:
            serve.stop()


def received(emulator_url: str) -> Counter[str]:
    """How many times the emulator accepted each reply, by its metadata (``cd:{id}``)."""
    sent = httpx.get(f"{emulator_url}/_emulator/sent", timeout=30).json()["sent"]
    return Counter(str(s["request"].get("message_metadata")) for s in sent)


def test_kill_9_with_sends_in_flight_loses_no_reply(
    node: tuple[Node, str, str], database_url: str
) -> None:
    serve, emulator_url, token = node
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{serve.port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    engine = db.create_db_engine(database_url)
    try:
        answer = httpx.post(
            f"{emulator_url}/_emulator/inbound",
            json={"app_id": APP_EU, "channel": "WHATSAPP", "identity": "46701120000", "text": "Hi"},
        )
        assert answer.status_code == 202

        def conversation() -> int | None:
            with engine.connect() as conn:
                return conn.scalar(select(ConversationRow.id))

        conversation_id = wait_for(conversation, 30, "no conversation")
        faults = httpx.post(f"{emulator_url}/_emulator/faults", json={"latency_ms": LATENCY_MS})
        assert faults.status_code == 200

        ids = []
        for n in range(REPLIES):
            reply = api.post(
                f"/api/v1/conversations/{conversation_id}/messages", json={"text": f"Reply {n}"}
            )
            assert reply.status_code == 202, reply.text
            ids.append(reply.json()["id"])

        wait_for(
            lambda: sum(received(emulator_url).values()) >= KILL_AFTER,
            30,
            "the sender did not start sending",
        )
        serve.kill()
        with engine.connect() as conn:
            states = dict(conn.execute(select(OutboxRow.message_id, OutboxRow.state)).all())
        in_flight = {m for m, state in states.items() if state == "sending"}
        assert in_flight, f"nothing was in flight at the kill: {Counter(states.values())}"
        assert sum(received(emulator_url).values()) < REPLIES, "the kill came too late"

        serve.start()
        wanted = {f"cd:{i}" for i in ids}
        wait_for(
            lambda: wanted <= set(received(emulator_url)),
            LEASE_SECONDS + 30,
            "not every reply reached the emulator after the restart",
        )

        def statuses() -> dict[int, str] | None:
            with engine.connect() as conn:
                rows = dict(
                    conn.execute(
                        select(MessageRow.id, MessageRow.status).where(MessageRow.id.in_(ids))
                    ).all()
                )
            accepted = delivery.rank(delivery.ACCEPTED) or 0
            done = all(
                (delivery.rank(s) or 0) >= accepted and s != delivery.FAILED for s in rows.values()
            )
            return rows if done and len(rows) == REPLIES else None

        wait_for(statuses, 30, "not every reply ended accepted or later")
        with engine.connect() as conn:
            outbox = Counter(conn.scalars(select(OutboxRow.state)).all())
        assert outbox == {"done": REPLIES}
    finally:
        api.close()
        engine.dispose()

    counts = received(emulator_url)
    twice = {int(key.removeprefix("cd:")) for key, n in counts.items() if n > 1}
    assert twice <= in_flight, "a reply that was not in flight at the kill was sent twice"
    assert max(counts.values()) <= 2
