"""SIGTERM to `convodesk serve`: the request being received and the send in flight both
finish, then the process exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from convodesk.emulator.server import running_emulator
from convodesk.sinch.signature import sign_headers
from convodesk.storage import db
from convodesk.storage.tables import ConversationRow, EventRow, MessageRow, OutboxRow
from tests.integration.outbound.test_replies_e2e import convodesk_config
from tests.integration.test_cli import free_port
from tests.reliability.test_intake_crash import Node, emulator_config, wait_for
from tests.support.apps import APP_EU, TEST_SECRET_KEY
from tests.support.factories import inbound_body, sinch_id

SEND_LATENCY_MS = 1500


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[tuple[Node, str, str]]:
    serve_port, emulator_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    raw = {
        **convodesk_config(emulator_url),
        "database_url": database_url,
        "data_dir": str(tmp_path / "data"),
        "queues": [{"name": "whatsapp", "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"]}],
    }
    raw["messaging_services"] = raw["messaging_services"][:1]
    config = tmp_path / "convodesk.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY}
    for command in (["config", "apply", str(config)], ["token", "create", "--role", "admin"]):
        done = subprocess.run(
            [sys.executable, "-m", "convodesk", *command, "--config", str(config)]
            if command[0] == "token"
            else [sys.executable, "-m", "convodesk", *command],
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


def test_sigterm_lets_the_request_and_the_send_in_flight_finish(
    node: tuple[Node, str, str], database_url: str
) -> None:
    serve, emulator_url, token = node
    base = f"http://127.0.0.1:{serve.port}"
    engine = db.create_db_engine(database_url)
    try:
        # A conversation to reply in, opened by a customer message through the emulator.
        answer = httpx.post(
            f"{emulator_url}/_emulator/inbound",
            json={"app_id": APP_EU, "channel": "WHATSAPP", "identity": "46701110000", "text": "Hi"},
        )
        assert answer.status_code == 202

        def conversation() -> int | None:
            with engine.connect() as conn:
                return conn.scalar(select(ConversationRow.id))

        conversation_id = wait_for(conversation, 30, "no conversation")
        httpx.post(f"{emulator_url}/_emulator/faults", json={"latency_ms": SEND_LATENCY_MS})
        reply = httpx.post(
            f"{base}/api/v1/conversations/{conversation_id}/messages",
            json={"text": "On its way"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status_code == 202, reply.text
        message_id = reply.json()["id"]

        def sending() -> bool:
            with engine.connect() as conn:
                state = conn.scalar(
                    select(OutboxRow.state).where(OutboxRow.message_id == message_id)
                )
            return state == "sending"

        wait_for(sending, 30, "the reply was never picked up")

        # A callback whose body is half sent when the signal arrives.
        sinch_message_id = sinch_id()
        body = inbound_body(message_id=sinch_message_id, identity="46701110001", text="late")
        headers = sign_headers("hook-eu", body)
        request = (
            "POST /sms/sinchconversation/sinch-eu HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{serve.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", serve.port), timeout=30) as sock:
            sock.sendall(request + body[:100])
            time.sleep(0.2)
            assert serve.proc is not None
            serve.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(body[100:])
            status_line = sock.recv(4096).split(b"\r\n", 1)[0]
        assert status_line == b"HTTP/1.1 200 OK"
        assert serve.proc.wait(timeout=60) == 0, serve.log.read_text()[-3000:]

        with engine.connect() as conn:
            outbox_state = conn.scalar(
                select(OutboxRow.state).where(OutboxRow.message_id == message_id)
            )
            message = conn.execute(
                select(MessageRow.status, MessageRow.sinch_message_id).where(
                    MessageRow.id == message_id
                )
            ).one()
            stored = conn.scalar(
                select(EventRow.id).where(EventRow.dedup_key == f"message:{sinch_message_id}")
            )
    finally:
        engine.dispose()
    assert outbox_state == "done"
    assert message.sinch_message_id is not None
    assert message.status != "sending"
    assert stored is not None
    sent = httpx.get(f"{emulator_url}/_emulator/sent").json()["sent"]
    assert [s["message_id"] for s in sent] == [message.sinch_message_id]
