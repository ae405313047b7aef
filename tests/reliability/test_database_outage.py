"""PostgreSQL stopped for a few seconds while callbacks stream in.

While the database is away the intake answers 503 (never 200 without storing) and /readyz
says not ready; the emulator retries as Sinch does; once the database is back, every
callback is stored exactly once and threaded, without restarting convodesk.

SQLite has no server to stop: its equivalent (a commit that fails) is covered by the
intake's 503 tests in tests/integration/intake.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from convodesk.emulator.server import running_emulator
from convodesk.storage import db
from convodesk.storage.tables import EventRow, MessageRow
from tests.integration.outbound.test_replies_e2e import convodesk_config
from tests.integration.test_cli import free_port
from tests.reliability.test_intake_crash import (
    IDENTITIES,
    Node,
    counters,
    emulator_config,
    wait_for,
)
from tests.support.apps import APP_EU, TEST_SECRET_KEY
from tests.support.pg_cluster import Cluster, private_cluster

CALLBACKS = 3_000
RATE = 600.0  # callbacks/s: the stream lasts about 5 s
OUTAGE_AFTER, OUTAGE_SECONDS = 1.5, 3.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Cluster, Node, str]]:
    with private_cluster() as cluster:
        serve_port, emulator_port = free_port(), free_port()
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        raw = {
            **convodesk_config(emulator_url),
            "database_url": cluster.url,
            "data_dir": str(tmp_path / "data"),
            "queues": [
                {"name": "whatsapp", "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"]}
            ],
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
        with running_emulator(
            emulator_config(f"http://127.0.0.1:{serve_port}"), port=emulator_port
        ):
            serve.start()
            try:
                yield cluster, serve, emulator_url
            finally:
                serve.stop()


async def paced_inject(emulator_url: str) -> list[str]:
    ids: list[str] = []
    started = time.monotonic()
    room = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=emulator_url, timeout=60) as client:

        async def one(n: int) -> None:
            delay = started + n / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with room:
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

        await asyncio.gather(*(one(n) for n in range(CALLBACKS)))
    return ids


def test_database_outage_answers_503_then_recovers_without_loss(
    stack: tuple[Cluster, Node, str],
) -> None:
    cluster, serve, emulator_url = stack
    readiness: list[int] = []
    stop_probing = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=2) as client:
            while not stop_probing.is_set():
                try:
                    readiness.append(
                        client.get(f"http://127.0.0.1:{serve.port}/readyz").status_code
                    )
                except httpx.HTTPError:
                    readiness.append(0)
                time.sleep(0.1)

    def outage() -> None:
        time.sleep(OUTAGE_AFTER)
        cluster.stop()
        time.sleep(OUTAGE_SECONDS)
        cluster.start()

    prober = threading.Thread(target=probe)
    outage_thread = threading.Thread(target=outage)
    prober.start()
    outage_thread.start()
    try:
        injected = asyncio.run(paced_inject(emulator_url))
    finally:
        outage_thread.join(timeout=60)

    def settled() -> bool:
        now = counters(emulator_url)
        return now["delivered_total"] + now["failed_total"] >= CALLBACKS and not now["in_flight"]

    wait_for(settled, 120, "the emulator's retries did not finish")
    stop_probing.set()
    prober.join(timeout=10)
    assert counters(emulator_url)["failed_total"] == 0
    assert serve.proc is not None
    assert serve.proc.poll() is None, f"serve died in the outage: {serve.log.read_text()[-3000:]}"
    assert 503 in readiness, "/readyz never said not ready while the database was down"
    assert readiness[-1] == 200, "/readyz did not recover"

    records = httpx.get(
        f"{emulator_url}/_emulator/callbacks?trigger=MESSAGE_INBOUND", timeout=60
    ).json()["callbacks"]
    refused = [r for r in records if r["attempts"] > 1]
    assert refused, "no callback was refused during the outage"
    assert {r["message_id"] for r in records if r["state"] == "delivered"} == set(injected)

    engine = db.create_db_engine(cluster.url)
    try:

        def threaded() -> int:
            with engine.connect() as conn:
                return conn.scalar(select(func.count()).select_from(MessageRow)) or 0

        # The processor recovers by itself: no restart.
        wait_for(lambda: threaded() >= CALLBACKS, 120, "the processor did not recover")
        with engine.connect() as conn:
            keys = conn.scalars(
                select(EventRow.dedup_key).where(EventRow.dedup_key.is_not(None))
            ).all()
            stored = conn.scalars(select(MessageRow.sinch_message_id)).all()
    finally:
        engine.dispose()
    assert sorted((k or "").removeprefix("message:") for k in keys) == sorted(injected)
    assert sorted(s or "" for s in stored) == sorted(injected)
