"""Factories for a runtime and a test client over a real database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from convodesk.domain.config_model import SystemConfig
from convodesk.runtime import Runtime, open_runtime
from convodesk.storage import api_tokens
from convodesk.storage.db import transaction
from convodesk.web.app import create_app

TEST_SECRET_KEY = "test-secret-key-for-the-suite"
APP_EU = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
APP_EU2 = "01HZX4K7QW8E2R5T9Y3V6M1N0Q"
APP_US = "01J5VS0000000000000000000A"
PROJECT = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"


def make_runtime(database_url: str, data_dir: Path, **overrides: object) -> Runtime:
    config = SystemConfig(database_url=database_url, data_dir=str(data_dir), **overrides)  # type: ignore[arg-type]
    return open_runtime(config, upgrade=True, environ={"CONVODESK_SECRET_KEY": TEST_SECRET_KEY})


def make_token(runtime: Runtime, role: str = "admin", agent: str | None = None) -> str:
    with transaction(runtime.sessions) as session:
        return api_tokens.create_token(session, role=role, agent_login=agent)


@contextmanager
def client_for(runtime: Runtime, token: str | None = None) -> Iterator[TestClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with TestClient(create_app(runtime), headers=headers) as client:
        yield client


def service_body(
    name: str = "sinch-eu",
    *,
    region: str = "eu",
    apps: tuple[str, ...] = (APP_EU,),
    key_secret: str = "key-secret-value-1",
    webhook_secret: str = "webhook-secret-value-1",
    triggers: tuple[str, ...] = ("MESSAGE_INBOUND", "MESSAGE_DELIVERY"),
) -> dict[str, object]:
    return {
        "name": name,
        "type": "sinchconversation",
        "service_connection": (
            f"https://{region}.conversation.api.sinch.com/v1/projects/{PROJECT}/messages:send"
        ),
        "authentication": [
            *({"auth_id": f"KEY-{i}@{app}", "password": key_secret} for i, app in enumerate(apps)),
            {"auth_id": "webhook", "password": webhook_secret, "triggers": list(triggers)},
        ],
    }


def queue_body(name: str = "support", *addresses: str, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "type": "chat",
        "addresses": list(addresses) or [f"{APP_EU}@whatsapp.sinchconversation.com"],
        **extra,
    }
