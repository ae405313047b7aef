"""kill -9 of a `convodesk serve` node in the middle of 10,000 callbacks.

The emulator delivers every callback with Sinch-like retries. The node is killed while the
stream runs and started again on the same port. Afterwards every callback the emulator saw
answered 2xx is stored exactly once, every other one was filled in by a retry, and the
processor threaded all of them: one message per callback, none twice (DESIGN.md section 5,
"a callback answered 2xx is durable" and "the same callback delivered twice has one effect").
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from convodesk.emulator.config import EmulatorConfig
from convodesk.emulator.server import running_emulator
from convodesk.storage import db
from convodesk.storage.tables import EventRow, MessageRow
from tests.integration.outbound.test_replies_e2e import convodesk_config
from tests.integration.test_cli import free_port
from tests.support.apps import APP_EU, PROJECT, TEST_SECRET_KEY

CALLBACKS = 10_000
IDENTITIES = 500
KILL_AFTER = 2_500  # delivered callbacks before the kill
INJECTORS = 24


def emulator_config(serve_url: str) -> EmulatorConfig:
    return EmulatorConfig.from_dict(
        {
            # Enough retries to cover a restart of a few seconds, as Sinch's retries would.
            "callback_retry": {
                "max_attempts": 60,
                "initial_backoff_ms": 50,
                "max_backoff_ms": 500,
                "timeout_ms": 5000,
            },
            "projects": [
                {
                    "id": PROJECT,
                    "region": "eu",
                    "access_keys": [{"key_id": "KEY-EU", "key_secret": "secret-eu"}],
                    "apps": [
                        {
                            "id": APP_EU,
                            "channels": ["WHATSAPP"],
                            "webhooks": [
                                {
                                    "target": f"{serve_url}/sms/sinchconversation/sinch-eu",
                                    "secret": "hook-eu",
                                    "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
                                }
                            ],
                        }
                    ],
                }
            ],
        }
    )


class Node:
    """One `convodesk serve` process on a fixed port, which can be killed and restarted;
    with `intake_port`, its intake process listens there (``--intake-port``)."""

    def __init__(
        self, config: Path, port: int, log: Path, *, intake_port: int | None = None
    ) -> None:
        self.config, self.port, self.log = config, port, log
        self.intake_port = intake_port
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        intake = ("--intake-port", str(self.intake_port)) if self.intake_port else ()
        return [
            *(sys.executable, "-m", "convodesk", "serve", "--config", str(self.config)),
            *("--host", "127.0.0.1", "--port", str(self.port), *intake),
        ]

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY},
            )
        wait_for(self._ready, 60, f"serve did not start; log: {self.log}")

    def _ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        ports = [p for p in (self.port, self.intake_port) if p is not None]
        try:
            return all(
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).is_success for port in ports
            )
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(condition: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[tuple[Node, str]]:
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
    applied = subprocess.run(
        [sys.executable, "-m", "convodesk", "config", "apply", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY},
        timeout=60,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    serve = Node(config, serve_port, tmp_path / "serve.log")
    with running_emulator(emulator_config(f"http://127.0.0.1:{serve_port}"), port=emulator_port):
        serve.start()
        try:
            yield serve, emulator_url
        finally:
            serve.stop()


async def inject(emulator_url: str, count: int) -> list[str]:
    """`count` customer messages through the emulator; their Sinch message ids."""
    ids: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            answer = await client.post(
                "/_emulator/inbound",
                json={
                    "app_id": APP_EU,
                    "channel": "WHATSAPP",
                    "identity": f"4670{n % IDENTITIES:07d}",
                    "text": f"message {n}",
                },
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["message_id"])

    async with httpx.AsyncClient(base_url=emulator_url, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(INJECTORS)))
    return ids


def counters(emulator_url: str) -> dict[str, int]:
    data = httpx.get(f"{emulator_url}/_emulator/callbacks?state=failed", timeout=30).json()
    return {k: data[k] for k in ("in_flight", "delivered_total", "failed_total")}


def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    node: tuple[Node, str], database_url: str
) -> None:
    serve, emulator_url = node

    async def inject_and_kill() -> list[str]:
        injecting = asyncio.create_task(inject(emulator_url, CALLBACKS))
        while counters(emulator_url)["delivered_total"] < KILL_AFTER:
            assert not injecting.done() or injecting.exception() is None
            await asyncio.sleep(0.02)
        serve.kill()
        return await injecting

    injected = asyncio.run(inject_and_kill())
    at_kill = counters(emulator_url)
    assert at_kill["delivered_total"] < CALLBACKS, "the kill came after the stream had ended"
    serve.start()

    def settled() -> dict[str, int] | None:
        now = counters(emulator_url)
        done = now["delivered_total"] + now["failed_total"] >= CALLBACKS
        return now if done and now["in_flight"] == 0 else None

    final = wait_for(settled, 120, "the emulator's retries did not finish")
    assert final["failed_total"] == 0
    records = httpx.get(
        f"{emulator_url}/_emulator/callbacks?trigger=MESSAGE_INBOUND", timeout=60
    ).json()["callbacks"]
    answered = {r["message_id"] for r in records if r["state"] == "delivered"}
    assert answered == set(injected)
    retried = [r for r in records if r["attempts"] > 1]
    assert retried, "no callback needed a retry: the kill did not interrupt the stream"

    engine = db.create_db_engine(database_url)
    try:

        def threaded() -> int:
            with engine.connect() as conn:
                return conn.scalar(select(func.count()).select_from(MessageRow)) or 0

        wait_for(lambda: threaded() >= CALLBACKS, 120, "the processor did not catch up")
        with engine.connect() as conn:
            keys = conn.scalars(
                select(EventRow.dedup_key).where(
                    EventRow.trigger == "MESSAGE_INBOUND", EventRow.dedup_key.is_not(None)
                )
            ).all()
            stored = conn.scalars(select(MessageRow.sinch_message_id)).all()
    finally:
        engine.dispose()
    assert len(keys) == CALLBACKS  # one event per callback: nothing lost, nothing twice
    assert {(k or "").removeprefix("message:") for k in keys} == answered
    assert len(stored) == CALLBACKS
    assert set(stored) == answered
