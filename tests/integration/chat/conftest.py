"""Fixtures for the Chat Server tests: a configured runtime (queues, agents, prompts), an app
whose workers the tests drive themselves, a desk (API client) per agent, and a router whose
passes run at a chosen time.

Queues: ``support`` (priority 0: anna, bob, dana), ``vip`` (priority 10: dana), ``sales``
(carl). Offers time out after 30 s (``vip``: 10 s); two missed offers in a row set an agent
not ready; agents take two chats at most (dana one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.services.directory import DirectoryCache
from convodesk.services.routing import PassReport
from convodesk.storage.db import transaction
from convodesk.storage.tables import AgentRow, ConversationRow, MessageRow, OfferRow, OutboxRow
from convodesk.web.app import create_app
from convodesk.workers.router import Router
from tests.support.apps import APP_EU, PROJECT, make_runtime, make_token
from tests.support.factories import make_conversation, make_message

PROMPTS = {
    "welcome": "Welcome to {queue}!",
    "queue_position": "You are number {position} in {queue}.",
    "queue_full": "{queue} is full, please write again later.",
    "outside_business_hours": "{queue} is closed now; we answer when we open.",
    "idle_warning": "Are you still there?",
    "closed": "Thanks, this chat is closed.",
}


def chat_config(**chat_settings: Any) -> dict[str, Any]:
    return {
        "messaging_services": [
            {
                "name": "sinch-eu",
                "type": "sinchconversation",
                "service_connection": f"https://eu.conversation.api.sinch.com/v1/projects/{PROJECT}/messages:send",
                "authentication": [
                    {"auth_id": f"KEY@{APP_EU}", "password": "key-secret"},
                    {
                        "auth_id": "webhook",
                        "password": "hook-secret",
                        "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
                    },
                ],
            }
        ],
        "queues": [
            {"name": "support", "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"]},
            {
                "name": "vip",
                "priority": 10,
                "offer_timeout_seconds": 10,
                "addresses": [f"{APP_EU}@facebook.sinchconversation.com"],
            },
            {"name": "sales", "addresses": [f"{APP_EU}@sms.sinchconversation.com"]},
        ],
        "agents": [
            {"login": "anna", "display_name": "Anna", "queues": ["support"]},
            {"login": "bob", "display_name": "Bob", "queues": ["support"]},
            {"login": "carl", "display_name": "Carl", "queues": ["sales"]},
            {"login": "dana", "display_name": "Dana", "queues": ["vip", "support"], "max_chats": 1},
        ],
        "chat_settings": {
            "offer_timeout_seconds": 30,
            "missed_offers_before_not_ready": 2,
            "max_concurrent_chats": 2,
            "queue_max_size": 5,
            "idle_warning_seconds": 300,
            "inactivity_close_seconds": 600,
            "reopen_window_seconds": 3600,
            "wrapup_codes": ["resolved", "follow-up"],
            "prompts": PROMPTS,
            **chat_settings,
        },
    }


class Desk:
    """An agent's (or admin's) API client over the shared test client."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers, **options)

    def post(self, path: str, **options: Any) -> httpx.Response:
        return self.client.post(path, headers=self.headers, **options)

    def put(self, path: str, **options: Any) -> httpx.Response:
        return self.client.put(path, headers=self.headers, **options)

    def ready(self, state: str = "ready") -> None:
        answer = self.put("/api/v1/me/presence", json={"state": state})
        assert answer.status_code == 200, answer.text

    def offers(self) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/offers")
        assert answer.status_code == 200, answer.text
        result: list[dict[str, Any]] = answer.json()
        return result

    def accept(self, offer_id: int) -> httpx.Response:
        return self.post(f"/api/v1/offers/{offer_id}/accept")


@dataclass
class Chat:
    runtime: Runtime
    app: FastAPI
    client: TestClient
    router: Router
    directory: DirectoryCache
    desks: dict[str, Desk]
    start: datetime

    def desk(self, login: str) -> Desk:
        if login not in self.desks:
            token = make_token(
                self.runtime,
                "admin" if login == "admin" else "agent",
                None if login == "admin" else login,
            )
            self.desks[login] = Desk(self.client, token)
        return self.desks[login]

    def configure(self, raw: dict[str, Any]) -> None:
        """Apply a change of configuration; the router and the app see it at once."""
        configuration.apply_config(self.runtime, raw)
        self.app.state.directory.invalidate()
        self.directory.invalidate()

    def route(self, after_seconds: float = 0.0) -> PassReport:
        """A routing pass at `start` + `after_seconds`."""
        return self.router.run_pass(self.start + timedelta(seconds=after_seconds))

    def conversation(
        self,
        queue: str = "support",
        *,
        waited_seconds: float = 0.0,
        channel: str = "WHATSAPP",
        identity: str | None = None,
        text: str = "Hello, I need help",
        **overrides: Any,
    ) -> int:
        """A new waiting conversation (not admitted yet) with one inbound message; it
        started waiting `waited_seconds` before `start`."""
        since = self.start - timedelta(seconds=waited_seconds)
        with transaction(self.runtime.sessions) as session:
            values: dict[str, Any] = {
                "queue": queue,
                "channel": channel,
                "opened_at": since,
                "waiting_since": since,
                "last_inbound_at": since,
                "last_activity_at": since,
                **overrides,
            }
            if identity is not None:
                values["identity"] = identity
            row = make_conversation(session, **values)
            make_message(session, row, text=text, created_at=since)
            return row.id

    def row(self, conversation_id: int) -> ConversationRow:
        with transaction(self.runtime.sessions) as session:
            row = session.get(ConversationRow, conversation_id)
            assert row is not None
            return row

    def offers_of(self, conversation_id: int) -> list[tuple[str, str]]:
        """(agent, state) of every offer of the conversation, in order."""
        with transaction(self.runtime.sessions) as session:
            rows = session.execute(
                select(AgentRow.login, OfferRow.state)
                .join(AgentRow, AgentRow.id == OfferRow.agent_id)
                .where(OfferRow.conversation_id == conversation_id)
                .order_by(OfferRow.id)
            ).all()
            return [(login, state) for login, state in rows]

    def prompts(self, conversation_id: int) -> list[str]:
        """The prompts queued for the customer (in the outbox), in order."""
        with transaction(self.runtime.sessions) as session:
            rows = session.execute(
                select(MessageRow.content, MessageRow.text)
                .join(OutboxRow, OutboxRow.message_id == MessageRow.id)
                .where(MessageRow.conversation_id == conversation_id, MessageRow.author == "system")
                .order_by(MessageRow.id)
            ).all()
            return [f"{content['prompt']}: {text}" for content, text in rows]


@pytest.fixture
def chat_settings() -> dict[str, Any]:
    """Overrides of the chat settings for one test (parametrize or override the fixture)."""
    return {}


@pytest.fixture
def chat(database_url: str, tmp_path: Path, chat_settings: dict[str, Any]) -> Iterator[Chat]:
    runtime = make_runtime(database_url, tmp_path)
    configuration.apply_config(runtime, chat_config(**chat_settings))
    app = create_app(runtime)
    directory = DirectoryCache(runtime)
    router = Router(runtime, directory)
    try:
        with TestClient(app, raise_server_exceptions=True) as client:
            yield Chat(runtime, app, client, router, directory, {}, datetime.now(UTC))
    finally:
        runtime.close()
