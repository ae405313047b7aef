"""Helpers for callback-intake tests: a configured runtime and `post_sinch_fixture`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.sinch.signature import sign_headers
from convodesk.web.app import create_app
from tests.support.apps import APP_EU, APP_EU2, PROJECT, make_runtime
from tests.support.sinch_fixtures import load_fixture

WEBHOOK_SECRET = "intake-webhook-secret"
SERVICE = "sinch-eu"


def intake_config(
    *, triggers: tuple[str, ...] = ("MESSAGE_INBOUND", "MESSAGE_DELIVERY", "EVENT_INBOUND")
) -> dict[str, Any]:
    """A service with two apps; queues for WhatsApp, Messenger and SMS on the first app
    (no queue for Telegram, so Telegram messages are unrouted)."""
    return {
        "messaging_services": [
            {
                "name": SERVICE,
                "type": "sinchconversation",
                "service_connection": f"https://eu.conversation.api.sinch.com/v1/projects/{PROJECT}/messages:send",
                "authentication": [
                    {"auth_id": f"KEY@{APP_EU}", "password": "key-secret"},
                    {"auth_id": f"KEY@{APP_EU2}", "password": "key-secret"},
                    {"auth_id": "webhook", "password": WEBHOOK_SECRET, "triggers": list(triggers)},
                ],
            }
        ],
        "queues": [
            {
                "name": "whatsapp",
                "type": "chat",
                "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"],
            },
            {
                "name": "messenger",
                "type": "chat",
                "addresses": [f"{APP_EU}@facebook.sinchconversation.com"],
            },
            {"name": "sms", "type": "chat", "addresses": [f"{APP_EU}@sms.sinchconversation.com"]},
        ],
        "chat_settings": {"reopen_window_seconds": 3600},
    }


def configured_runtime(
    database_url: str, data_dir: Path, raw: dict[str, Any] | None = None
) -> Runtime:
    runtime = make_runtime(database_url, data_dir)
    configuration.apply_config(runtime, raw or intake_config())
    return runtime


@contextmanager
def intake_client(runtime: Runtime, **app_options: Any) -> Iterator[tuple[TestClient, FastAPI]]:
    app = create_app(runtime, **app_options)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app


def signed_post(
    client: TestClient | httpx.Client,
    body: bytes,
    *,
    service: str = SERVICE,
    secret: str = WEBHOOK_SECRET,
    headers: dict[str, str] | None = None,
    **sign_options: str,
) -> httpx.Response:
    all_headers = {"content-type": "application/json", **sign_headers(secret, body, **sign_options)}
    all_headers.update(headers or {})
    return client.post(f"/sms/sinchconversation/{service}", content=body, headers=all_headers)


def post_sinch_fixture(
    client: TestClient,
    name: str,
    *,
    change: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> httpx.Response:
    """Load a fixture, optionally change its JSON, sign the bytes and post them."""
    body = load_fixture(name)
    if change is not None:
        data = json.loads(body)
        change(data)
        body = json.dumps(data, separators=(",", ":")).encode()
    return signed_post(client, body, **options)


def process(app: FastAPI) -> None:
    """Run the app's processor until no accepted callback is left pending."""
    while app.state.processor.process_batch():
        pass
