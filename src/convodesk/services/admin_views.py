"""What the admin pages list, read from the stored configuration: the same data as the
admin API, plus what the API does not spell out (a service's region and project id, parsed
from its connection URL, and each queue's agents). Secrets never leave this module: the
summaries carry none."""

from __future__ import annotations

from dataclasses import dataclass

from convodesk.domain.config_model import SystemConfig
from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.storage.db import transaction


@dataclass(frozen=True, kw_only=True)
class ServiceSummary:
    name: str
    region: str
    project_id: str
    app_ids: tuple[str, ...]
    triggers: tuple[str, ...]
    template_count: int
    queues: tuple[str, ...]  # the queues with an address on one of its apps


@dataclass(frozen=True, kw_only=True)
class QueueSummary:
    name: str
    addresses: tuple[str, ...]
    priority: int
    max_size: int | None
    offer_timeout_seconds: int | None
    sms_sender_id: str | None
    business_hours: bool
    agents: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class AgentSummary:
    login: str
    display_name: str
    role: str
    queues: tuple[str, ...]
    max_chats: int | None


@dataclass(frozen=True, kw_only=True)
class Overview:
    services: list[ServiceSummary]
    queues: list[QueueSummary]
    agents: list[AgentSummary]
    default_max_chats: int
    default_queue_max_size: int
    default_offer_timeout_seconds: int


def _stored(runtime: Runtime) -> SystemConfig:
    with transaction(runtime.sessions) as session:
        return configuration.stored_config(runtime, session)


def overview(runtime: Runtime) -> Overview:
    config = _stored(runtime)
    services = [
        ServiceSummary(
            name=s.name,
            region=s.region,
            project_id=s.project_id,
            app_ids=s.app_ids,
            triggers=s.inbound.triggers,
            template_count=len(s.whatsapp_templates),
            queues=tuple(
                q.name for q in config.queues if any(a.app_id in s.app_ids for a in q.addresses)
            ),
        )
        for s in config.messaging_services
    ]
    queues = [
        QueueSummary(
            name=q.name,
            addresses=tuple(a.address for a in q.addresses),
            priority=q.priority,
            max_size=q.max_size,
            offer_timeout_seconds=q.offer_timeout_seconds,
            sms_sender_id=q.sms_sender_id,
            business_hours=q.business_hours is not None,
            agents=tuple(a.login for a in config.agents if q.name in a.queues),
        )
        for q in config.queues
    ]
    agents = [
        AgentSummary(
            login=a.login,
            display_name=a.display_name,
            role=a.role,
            queues=a.queues,
            max_chats=a.max_chats,
        )
        for a in config.agents
    ]
    chat = config.chat_settings
    return Overview(
        services=services,
        queues=queues,
        agents=agents,
        default_max_chats=chat.max_concurrent_chats,
        default_queue_max_size=chat.queue_max_size,
        default_offer_timeout_seconds=chat.offer_timeout_seconds,
    )
