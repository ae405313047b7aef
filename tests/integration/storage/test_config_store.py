"""Applying configurations to the database and loading them back, on both databases."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from convodesk.domain.config_model import (
    Agent,
    ChatSettings,
    InboundWebhook,
    MessagingService,
    OutboundCredential,
    Queue,
    QueueAddress,
    SystemConfig,
)
from convodesk.domain.secrets import MASK, Secret
from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.services.errors import InvalidConfigError
from convodesk.storage import config_store
from convodesk.storage.db import transaction
from convodesk.storage.tables import AgentRow
from tests.support.apps import APP_EU, APP_EU2, PROJECT, make_runtime

ALL = frozenset({"messaging_services", "queues", "chat_settings", "agents"})


def service(
    name: str = "sinch-eu", apps: tuple[str, ...] = (APP_EU,), secret: str = "wh"
) -> MessagingService:
    return MessagingService(
        name=name,
        type="sinchconversation",
        service_connection=f"https://eu.conversation.api.sinch.com/v1/projects/{PROJECT}/messages:send",
        region="eu",
        project_id=PROJECT,
        outbound=tuple(
            OutboundCredential(key_id="KEY", app_id=a, secret=Secret("ks", env_var="SINCH_KEY"))
            for a in apps
        ),
        inbound=InboundWebhook(
            secret=Secret(secret), triggers=("MESSAGE_INBOUND", "MESSAGE_DELIVERY")
        ),
    )


def config(**sections: object) -> SystemConfig:
    return SystemConfig(present_sections=ALL, **sections)  # type: ignore[arg-type]


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(database_url, tmp_path)
    yield rt
    rt.close()


def stored(runtime: Runtime) -> SystemConfig:
    with transaction(runtime.sessions) as session:
        return configuration.stored_config(runtime, session)


def test_apply_is_idempotent_and_reports_changes(runtime: Runtime) -> None:
    queue = Queue(
        name="support", type="chat", addresses=(QueueAddress(app_id=APP_EU, subchannel="whatsapp"),)
    )
    agent = Agent(
        login="anna", display_name="Anna", queues=("support",), password=Secret("pw-123456")
    )
    cfg = config(messaging_services=(service(),), queues=(queue,), agents=(agent,))

    first = configuration.apply_validated(runtime, cfg)
    assert {(c.action, c.section, c.name) for c in first} == {
        ("added", "messaging_services", "sinch-eu"),
        ("added", "queues", "support"),
        ("added", "agents", "anna"),
    }
    assert configuration.apply_validated(runtime, cfg) == []

    loaded = stored(runtime)
    assert loaded.messaging_services == (service(),)
    assert loaded.messaging_services[0].outbound[0].secret.env_var == "SINCH_KEY"
    assert loaded.queues == (queue,)
    assert loaded.agents == (dataclasses.replace(agent, password=None),)

    changed = dataclasses.replace(queue, priority=5)
    [change] = configuration.apply_validated(
        runtime, config(messaging_services=(service(),), queues=(changed,), agents=(agent,))
    )
    assert (change.action, change.name, change.fields) == ("changed", "support", ("priority",))


def test_apply_touches_only_present_sections_and_removes_unlisted(runtime: Runtime) -> None:
    configuration.apply_validated(
        runtime, config(messaging_services=(service(), service("b", (APP_EU2,))))
    )
    only_services = dataclasses.replace(
        config(messaging_services=(service(),)), present_sections=frozenset({"messaging_services"})
    )
    [removed] = configuration.apply_validated(runtime, only_services)
    assert (removed.action, removed.name) == ("removed", "b")
    chat_only = dataclasses.replace(config(), present_sections=frozenset({"chat_settings"}))
    assert configuration.apply_validated(runtime, chat_only) == []
    assert [s.name for s in stored(runtime).messaging_services] == ["sinch-eu"]


def test_an_app_can_move_between_services_in_one_apply(runtime: Runtime) -> None:
    configuration.apply_validated(runtime, config(messaging_services=(service("a", (APP_EU,)),)))
    moved = config(messaging_services=(service("a", (APP_EU2,)), service("b", (APP_EU,))))
    configuration.apply_validated(runtime, moved)
    assert {s.name: s.app_ids for s in stored(runtime).messaging_services} == {
        "a": (APP_EU2,),
        "b": (APP_EU,),
    }


def test_masked_secret_keeps_the_stored_one(runtime: Runtime) -> None:
    configuration.apply_validated(runtime, config(messaging_services=(service(secret="original"),)))
    assert (
        configuration.apply_validated(runtime, config(messaging_services=(service(secret=MASK),)))
        == []
    )
    assert stored(runtime).messaging_services[0].inbound.secret.reveal() == "original"


def test_masked_secret_with_nothing_stored_is_refused(runtime: Runtime) -> None:
    with pytest.raises(InvalidConfigError) as info:
        configuration.apply_validated(runtime, config(messaging_services=(service(secret=MASK),)))
    assert "messaging_services[0]" in str(info.value)
    assert stored(runtime).messaging_services == ()


def test_dry_run_changes_nothing(runtime: Runtime) -> None:
    changes = configuration.apply_validated(
        runtime, config(messaging_services=(service(),)), dry_run=True
    )
    assert len(changes) == 1
    assert stored(runtime).messaging_services == ()


def test_agent_password_is_hashed_and_kept_when_absent(runtime: Runtime) -> None:
    agent = Agent(login="anna", display_name="Anna", password=Secret("first-password"))
    configuration.apply_validated(runtime, config(agents=(agent,)))
    with transaction(runtime.sessions) as session:
        row = session.query(AgentRow).one()
        first_hash = row.password_hash
    assert first_hash is not None
    assert "first-password" not in first_hash
    assert config_store.verify_password(first_hash, "first-password")
    # Same password again: no change. No password: keep. New password: changed.
    assert configuration.apply_validated(runtime, config(agents=(agent,))) == []
    assert (
        configuration.apply_validated(
            runtime, config(agents=(dataclasses.replace(agent, password=None),))
        )
        == []
    )
    [change] = configuration.apply_validated(
        runtime, config(agents=(dataclasses.replace(agent, password=Secret("second-password")),))
    )
    assert change.fields == ("password",)
    with transaction(runtime.sessions) as session:
        assert config_store.verify_password(
            session.query(AgentRow).one().password_hash, "second-password"
        )


def test_chat_settings_round_trip(runtime: Runtime) -> None:
    settings = dataclasses.replace(
        ChatSettings(), offer_timeout_seconds=30, attachment_types=("image/png",)
    )
    [change] = configuration.apply_validated(runtime, config(chat_settings=settings))
    assert set(change.fields) == {"offer_timeout_seconds", "attachment_types"}
    assert stored(runtime).chat_settings == settings
