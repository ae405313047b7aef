"""What an operator reads at ``/metrics``: sends by result, offers made and expired, routing
passes, and the database gauges (queues, outbox, unprocessed callbacks, offers), through the
app as ``serve`` builds it and through ``convodesk worker --metrics-port``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.storage.db import transaction
from convodesk.storage.tables import AgentPresenceRow, AgentRow, OutboxRow
from convodesk.web.app import create_app
from convodesk.workers.gauges import GaugeSampler
from tests.integration.test_cli import free_port
from tests.support.apps import APP_EU, PROJECT, TEST_SECRET_KEY, make_runtime
from tests.support.factories import make_conversation, make_event, make_message

SINCH = "http://sinch.invalid"


def config() -> dict[str, Any]:
    return {
        "allow_custom_endpoints": True,
        "oauth_token_url": f"{SINCH}/oauth2/token",
        "messaging_services": [
            {
                "name": "sinch-eu",
                "type": "sinchconversation",
                "service_connection": f"{SINCH}/eu/v1/projects/{PROJECT}/messages:send",
                "authentication": [
                    {"auth_id": f"KEY@{APP_EU}", "password": "key-secret"},
                    {"auth_id": "webhook", "password": "hook", "triggers": ["MESSAGE_INBOUND"]},
                ],
            }
        ],
        "queues": [
            {"name": "support", "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"]},
            {"name": "sales", "addresses": [f"{APP_EU}@sms.sinchconversation.com"]},
        ],
        "agents": [{"login": "anna", "display_name": "Anna", "queues": ["support"]}],
        "chat_settings": {"offer_timeout_seconds": 30},
    }


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(
        database_url,
        tmp_path,
        allow_custom_endpoints=True,
        oauth_token_url=f"{SINCH}/oauth2/token",
        send_max_attempts=2,
    )
    configuration.apply_config(rt, config())
    try:
        yield rt
    finally:
        rt.close()


def scrape(
    client: TestClient | httpx.Client, path: str = "/metrics"
) -> dict[tuple[str, str], float]:
    """Every sample as (name, labels as k=v joined by ,) -> value."""
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


def test_database_gauges_show_queues_outbox_events_and_offers(runtime: Runtime) -> None:
    now = datetime.now(UTC)
    with transaction(runtime.sessions) as session:
        anna = session.scalar(select(AgentRow).where(AgentRow.login == "anna"))
        assert anna is not None
        session.add(AgentPresenceRow(agent_id=anna.id, state="ready", since=now, idle_since=now))
        for waited in (90, 20):
            since = now - timedelta(seconds=waited)
            conversation = make_conversation(session, waiting_since=since, admitted_at=since)
            make_message(session, conversation, created_at=since)
        replies = make_conversation(session, queue="sales", status="active")
        for state, due in (("pending", 40), ("pending", -600), ("dead", 0), ("failed", 0)):
            message = make_message(session, replies, direction="outbound", status="pending")
            session.add(
                OutboxRow(
                    message_id=message.id,
                    state=state,
                    attempts=0,
                    next_attempt_at=now - timedelta(seconds=due),
                )
            )
        make_event(session, received_at=now - timedelta(seconds=15))
        make_event(session, received_at=now - timedelta(seconds=5))
    app = create_app(runtime)
    client = TestClient(app)
    before = scrape(client)
    assert not any(name.startswith("convodesk_queue_") for name, _ in before)

    app.state.router.run_pass(now)  # offers the oldest waiting conversation to anna
    GaugeSampler(runtime, app.state.metrics, clock=lambda: now).sample()
    after = scrape(client)

    assert after[("convodesk_queue_waiting", "queue=support")] == 2
    assert after[("convodesk_queue_waiting", "queue=sales")] == 0
    assert after[("convodesk_queue_oldest_waiting_seconds", "queue=support")] == pytest.approx(90)
    assert after[("convodesk_queue_oldest_waiting_seconds", "queue=sales")] == 0
    assert after[("convodesk_queue_agents_ready", "queue=support")] == 1
    assert after[("convodesk_queue_agents_busy", "queue=support")] == 0
    assert after[("convodesk_outbox_rows", "state=pending")] == 2
    assert after[("convodesk_outbox_rows", "state=sending")] == 0
    assert after[("convodesk_outbox_rows", "state=dead")] == 1
    assert after[("convodesk_outbox_rows", "state=failed")] == 1
    assert after[("convodesk_outbox_oldest_due_seconds", "")] == pytest.approx(40)
    assert after[("convodesk_events_unprocessed", "")] == 2
    assert after[("convodesk_events_oldest_pending_seconds", "")] == pytest.approx(15)
    assert after[("convodesk_offers_outstanding", "")] == 2  # both to anna (room for two)
    assert after[("convodesk_database_sampled_timestamp_seconds", "")] == pytest.approx(
        now.timestamp()
    )
    assert after[("convodesk_offers_total", "event=made")] == 2
    assert after[("convodesk_routing_passes_total", "result=done")] == 1


def test_expired_offers_are_counted(runtime: Runtime) -> None:
    now = datetime.now(UTC)
    with transaction(runtime.sessions) as session:
        anna = session.scalar(select(AgentRow).where(AgentRow.login == "anna"))
        assert anna is not None
        session.add(AgentPresenceRow(agent_id=anna.id, state="ready", since=now, idle_since=now))
        conversation = make_conversation(session, waiting_since=now, admitted_at=now)
        make_message(session, conversation)
    app = create_app(runtime)
    router = app.state.router
    assert router.run_pass(now).offers == 1
    assert router.run_pass(now + timedelta(seconds=31)).expired == 1
    samples = scrape(TestClient(app))
    assert samples[("convodesk_offers_total", "event=made")] == 1
    assert samples[("convodesk_offers_total", "event=expired")] == 1
    assert samples[("convodesk_routing_passes_total", "result=done")] == 2


class FakeSinch(httpx.AsyncBaseTransport):
    """Tokens; a send of "ok" is accepted, "bad" refused (400), "busy" answered 503."""

    def __init__(self) -> None:
        self.sends = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            body = {"access_token": "token", "expires_in": 3600, "token_type": "bearer"}
            return httpx.Response(200, json=body)
        self.sends += 1
        text = json.loads(request.content)["message"]["text_message"]["text"]
        if text == "ok":
            return httpx.Response(200, json={"message_id": f"01SINCHMESSAGE{self.sends:012d}"})
        code, status = (400, "INVALID_ARGUMENT") if text == "bad" else (503, "UNAVAILABLE")
        error = {"error": {"code": code, "message": f"{text} send", "status": status}}
        return httpx.Response(code, json=error, headers={"Retry-After": "0.05"})


def test_sends_are_counted_by_result_and_dead_letters_shown(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        conversation = make_conversation(session, status="active")
        for text in ("ok", "bad", "busy"):
            message = make_message(
                session,
                conversation,
                direction="outbound",
                sinch_message_id=None,
                status="pending",
                text=text,
            )
            session.add(OutboxRow(message_id=message.id, state="pending", attempts=0))
    sinch = FakeSinch()
    app = create_app(runtime, sinch_transport=sinch)

    def states() -> list[str]:
        with transaction(runtime.sessions) as session:
            return sorted(session.scalars(select(OutboxRow.state)))

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(app.state.sender.run(stop))
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(states) != ["dead", "done", "failed"]:
            assert time.monotonic() < deadline, await asyncio.to_thread(states)
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(running, 10)

    asyncio.run(main())  # the app's own sender, as `serve` runs it (no lifespan needed)
    GaugeSampler(runtime, app.state.metrics).sample()
    samples = scrape(TestClient(app))
    sends = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "convodesk_sends_total"
    }
    assert sends == {
        "result=accepted,service=sinch-eu": 1,
        "result=failed,service=sinch-eu": 1,
        "result=retry,service=sinch-eu": 1,  # the first 503; the second gave up
        "result=dead,service=sinch-eu": 1,
    }
    assert samples[("convodesk_outbox_rows", "state=dead")] == 1
    assert samples[("convodesk_outbox_rows", "state=failed")] == 1
    assert samples[("convodesk_outbox_rows", "state=pending")] == 0


def test_serve_samples_the_gauges_on_its_own(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        make_conversation(session, queue="sales", waiting_since=datetime.now(UTC))
    with TestClient(create_app(runtime, workers=True)) as client:
        deadline = time.monotonic() + 10
        while ("convodesk_queue_waiting", "queue=sales") not in (samples := scrape(client)):
            assert time.monotonic() < deadline, "no database gauges within 10 s"
            time.sleep(0.05)
    assert samples[("convodesk_queue_waiting", "queue=sales")] == 1


def test_worker_serves_its_metrics_on_the_metrics_port(runtime: Runtime, tmp_path: Path) -> None:
    with transaction(runtime.sessions) as session:
        make_event(session)
    port = free_port()
    config_file = tmp_path / "worker.yaml"
    config_file.write_text(
        yaml.safe_dump({"database_url": runtime.config.database_url, "data_dir": str(tmp_path)})
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convodesk",
            "worker",
            "--config",
            str(config_file),
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY},
    )
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            while True:
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "the worker's metrics did not show the event"
                try:
                    samples = scrape(client)
                except httpx.TransportError:
                    samples = {}
                done = samples.get(("convodesk_events_processed_total", "state=done"))
                sampled = ("convodesk_database_sampled_timestamp_seconds", "") in samples
                if done == 1 and sampled:
                    break
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
