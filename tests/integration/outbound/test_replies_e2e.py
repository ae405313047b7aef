"""Agent replies end to end: the API, the outbox, the sender, the emulator, the receipts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import select

from convodesk.emulator.config import EmulatorConfig
from convodesk.emulator.server import running_emulator
from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow, MessageRow, OutboxRow
from convodesk.web.app import create_app
from convodesk.web.serving import serve_in_thread
from tests.integration.test_cli import free_port
from tests.support.apps import APP_EU, APP_US, PROJECT, TEST_SECRET_KEY, make_runtime, make_token

PROJECT_US = "9d0e1f2a-3b4c-4d5e-8f60-718293a4b5c6"
SECRET_EU, SECRET_US = "hook-eu", "hook-us"


@dataclass
class Stack:
    runtime: Runtime
    api: httpx.Client  # convodesk, with an admin token
    emulator: httpx.Client  # the emulator's control plane
    app: FastAPI


def emulator_config(app_url: str) -> EmulatorConfig:
    def app(app_id: str, channels: list[str], service: str, secret: str) -> dict[str, Any]:
        return {
            "id": app_id,
            "channels": channels,
            "rate_limit": 1000,
            "webhooks": [
                {
                    "target": f"{app_url}/sms/sinchconversation/{service}",
                    "secret": secret,
                    "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
                }
            ],
        }

    return EmulatorConfig.from_dict(
        {
            "callback_retry": {"max_attempts": 6, "initial_backoff_ms": 20, "timeout_ms": 5000},
            "delivery_delays_ms": {"queued": 1, "delivered": 2, "read": 3},
            "projects": [
                {
                    "id": PROJECT,
                    "region": "eu",
                    "rate_limit": 5000,
                    "access_keys": [{"key_id": "KEY-EU", "key_secret": "secret-eu"}],
                    "apps": [app(APP_EU, ["WHATSAPP", "SMS", "MESSENGER"], "sinch-eu", SECRET_EU)],
                },
                {
                    "id": PROJECT_US,
                    "region": "us",
                    "rate_limit": 5000,
                    "access_keys": [{"key_id": "KEY-US", "key_secret": "secret-us"}],
                    "apps": [app(APP_US, ["SMS"], "sinch-us", SECRET_US)],
                },
            ],
        }
    )


def convodesk_config(emulator_url: str) -> dict[str, Any]:
    def service(
        name: str, region: str, project: str, key: str, secret: str, app: str, hook: str
    ) -> dict[str, Any]:
        return {
            "name": name,
            "service_connection": f"{emulator_url}/{region}/v1/projects/{project}/messages:send",
            "authentication": [
                {"auth_id": f"{key}@{app}", "password": secret},
                {
                    "auth_id": "webhook",
                    "password": hook,
                    "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
                },
            ],
        }

    return {
        "allow_custom_endpoints": True,
        "oauth_token_url": f"{emulator_url}/oauth2/token",
        "messaging_services": [
            service("sinch-eu", "eu", PROJECT, "KEY-EU", "secret-eu", APP_EU, SECRET_EU),
            service("sinch-us", "us", PROJECT_US, "KEY-US", "secret-us", APP_US, SECRET_US),
        ],
        "queues": [
            {"name": "whatsapp", "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"]},
            {"name": "messenger", "addresses": [f"{APP_EU}@facebook.sinchconversation.com"]},
            {
                "name": "sms-us",
                "addresses": [f"{APP_US}@sms.sinchconversation.com"],
                "sms_sender_id": "+12025550143",
            },
        ],
    }


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    emulator_url = f"http://127.0.0.1:{port}"
    runtime = make_runtime(
        database_url,
        tmp_path,
        allow_custom_endpoints=True,
        oauth_token_url=f"{emulator_url}/oauth2/token",
        send_rate_per_app=1000,
        send_rate_per_project=5000,
    )
    try:
        app = create_app(runtime, workers=True)
        with serve_in_thread(app, name="convodesk") as app_url:
            configuration.apply_config(runtime, convodesk_config(emulator_url))
            app.state.directory.invalidate()
            token = make_token(runtime)
            with (
                running_emulator(emulator_config(app_url), port=port),
                httpx.Client(base_url=app_url, headers={"Authorization": f"Bearer {token}"}) as api,
                httpx.Client(base_url=emulator_url) as emulator,
            ):
                yield Stack(runtime, api, emulator, app)
    finally:
        runtime.close()


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def customer_writes(
    stack: Stack, app_id: str, channel: str, identity: str, text: str = "Hi"
) -> int:
    answer = stack.emulator.post(
        "/_emulator/inbound",
        json={"app_id": app_id, "channel": channel, "identity": identity, "text": text},
    )
    assert answer.status_code == 202, answer.text

    def conversation() -> int | None:
        with transaction(stack.runtime.sessions) as session:
            return session.scalar(
                select(ConversationRow.id).where(
                    ConversationRow.identity == identity, ConversationRow.channel == channel
                )
            )

    return int(wait_for(conversation))


def status_of(stack: Stack, message_id: int) -> str:
    with transaction(stack.runtime.sessions) as session:
        row = session.get(MessageRow, message_id)
        assert row is not None
        return row.status


def sent_bodies(stack: Stack, identity: str) -> list[dict[str, Any]]:
    answer = stack.emulator.get("/_emulator/sent", params={"identity": identity})
    assert answer.status_code == 200
    return [item["request"] for item in answer.json()["sent"]]


def test_replies_on_three_channels_arrive_as_sinch_expects_and_reach_read(stack: Stack) -> None:
    whatsapp = customer_writes(stack, APP_EU, "WHATSAPP", "46701000001")
    messenger = customer_writes(stack, APP_EU, "MESSENGER", "6512398745123365")
    sms = customer_writes(stack, APP_US, "SMS", "12025550199")
    ids = {}
    for name, conversation in [("whatsapp", whatsapp), ("messenger", messenger), ("sms", sms)]:
        answer = stack.api.post(
            f"/api/v1/conversations/{conversation}/messages", json={"text": f"Hello {name}"}
        )
        assert answer.status_code == 202, answer.text
        ids[name] = answer.json()["id"]

    wait_for(lambda: status_of(stack, ids["whatsapp"]) == "READ")
    wait_for(lambda: status_of(stack, ids["messenger"]) == "READ")
    wait_for(lambda: status_of(stack, ids["sms"]) == "DELIVERED")  # SMS has no read receipts

    [wa] = sent_bodies(stack, "46701000001")
    assert wa == {
        "app_id": APP_EU,
        "recipient": {
            "identified_by": {
                "channel_identities": [{"channel": "WHATSAPP", "identity": "46701000001"}]
            }
        },
        "message": {"text_message": {"text": "Hello whatsapp"}},
        "channel_priority_order": ["WHATSAPP"],
        "message_metadata": f"cd:{ids['whatsapp']}",
    }
    [fb] = sent_bodies(stack, "6512398745123365")
    assert fb["recipient"]["identified_by"]["channel_identities"] == [
        {"channel": "MESSENGER", "identity": "6512398745123365", "app_id": APP_EU}
    ]
    [us] = sent_bodies(stack, "12025550199")
    assert us["channel_properties"] == {"SMS_SENDER": "+12025550143"}
    assert us["app_id"] == APP_US


def test_idempotency_key_and_whatsapp_window(stack: Stack) -> None:
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", "46701000002")
    headers = {"Idempotency-Key": "abc-123"}
    first = stack.api.post(
        f"/api/v1/conversations/{conversation}/messages", json={"text": "Once"}, headers=headers
    )
    again = stack.api.post(
        f"/api/v1/conversations/{conversation}/messages", json={"text": "Once"}, headers=headers
    )
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    wait_for(lambda: status_of(stack, first.json()["id"]) == "READ")
    assert len(sent_bodies(stack, "46701000002")) == 1

    bad = stack.api.post(f"/api/v1/conversations/{conversation}/messages", json={"text": ""})
    assert bad.status_code == 422
    with transaction(stack.runtime.sessions) as session:
        row = session.get(ConversationRow, conversation)
        assert row is not None
        row.last_inbound_at = (
            row.last_inbound_at.replace(year=2000) if row.last_inbound_at else None
        )
    closed = stack.api.post(f"/api/v1/conversations/{conversation}/messages", json={"text": "Late"})
    assert closed.status_code == 409
    assert "template" in closed.json()["error"]["message"]


def test_every_reply_delivered_once_despite_errors_and_token_expiry(stack: Stack) -> None:
    conversation = customer_writes(stack, APP_US, "SMS", "12025550103")
    faults = {"error_rate": 0.3, "error_statuses": [429, 503], "retry_after_s": 0, "seed": 11}
    assert stack.emulator.post("/_emulator/faults", json=faults).status_code == 200
    ids = []
    for n in range(30):
        if n == 15:
            assert stack.emulator.post("/_emulator/tokens/expire").status_code in (200, 204)
        answer = stack.api.post(
            f"/api/v1/conversations/{conversation}/messages", json={"text": f"reply {n}"}
        )
        assert answer.status_code == 202
        ids.append(answer.json()["id"])
    try:
        wait_for(lambda: all(status_of(stack, i) == "DELIVERED" for i in ids), timeout=60)
    except AssertionError:
        with transaction(stack.runtime.sessions) as session:
            query = select(OutboxRow, MessageRow).join(
                MessageRow, MessageRow.id == OutboxRow.message_id
            )
            rows = [
                (o.message_id, o.state, o.attempts, m.status) for o, m in session.execute(query)
            ]
        raise AssertionError(f"not delivered: {[r for r in rows if r[3] != 'DELIVERED']}") from None
    texts = [body["message"]["text_message"]["text"] for body in sent_bodies(stack, "12025550103")]
    assert sorted(texts) == sorted(f"reply {n}" for n in range(30))  # each exactly once
    with transaction(stack.runtime.sessions) as session:
        retried = session.scalars(select(OutboxRow.attempts)).all()
    assert max(retried) > 1  # the faults really hit


def test_permanent_errors_fail_the_message_with_the_reason(stack: Stack) -> None:
    conversation = customer_writes(stack, APP_US, "SMS", "12025550104")
    # The emulator no longer knows the key: Sinch answers 401, a permanent failure.
    raw = convodesk_config(str(stack.emulator.base_url).rstrip("/"))
    raw["messaging_services"][1]["authentication"][0]["password"] = "wrong-secret"
    configuration.apply_config(stack.runtime, raw)
    stack.app.state.directory.invalidate()  # as the admin API does after a change
    answer = stack.api.post(f"/api/v1/conversations/{conversation}/messages", json={"text": "x"})
    message_id = answer.json()["id"]
    wait_for(lambda: status_of(stack, message_id) == "FAILED", timeout=15)
    with transaction(stack.runtime.sessions) as session:
        row = session.get(MessageRow, message_id)
        assert row is not None
        assert row.reason_text
    dead = stack.api.get("/api/v1/outbox").json()
    assert [d["message_id"] for d in dead] == [message_id]


def test_outbox_cli_lists_and_requeues_failed_replies(stack: Stack, tmp_path: Path) -> None:
    conversation = customer_writes(stack, APP_US, "SMS", "12025550105")
    raw = convodesk_config(str(stack.emulator.base_url).rstrip("/"))
    raw["messaging_services"][1]["authentication"][0]["password"] = "wrong-secret"
    configuration.apply_config(stack.runtime, raw)
    stack.app.state.directory.invalidate()
    message_id = stack.api.post(
        f"/api/v1/conversations/{conversation}/messages", json={"text": "y"}
    ).json()["id"]
    wait_for(lambda: status_of(stack, message_id) == "FAILED", timeout=15)

    config = tmp_path / "cli.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database_url": stack.runtime.config.database_url,
                "data_dir": stack.runtime.config.data_dir,
            }
        )
    )
    env = {**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY}
    listed = subprocess.run(
        [sys.executable, "-m", "convodesk", "outbox", "list", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (entry["message_id"], entry["state"]) == (message_id, "failed")
    assert "secret-us" not in listed.stdout
    assert "wrong-secret" not in listed.stdout

    # The admin fixes the secret, then queues the reply again: it is delivered.
    configuration.apply_config(
        stack.runtime, convodesk_config(str(stack.emulator.base_url).rstrip("/"))
    )
    stack.app.state.directory.invalidate()
    retried = subprocess.run(
        [
            sys.executable,
            "-m",
            "convodesk",
            "outbox",
            "retry",
            "--id",
            str(entry["id"]),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert retried.stdout.strip() == "1 queued again", retried.stderr
    stack.api.post("/api/v1/outbox/retry", json={"ids": [entry["id"]]})  # wakes the sender at once
    wait_for(lambda: status_of(stack, message_id) == "DELIVERED", timeout=30)
