"""The configuration in the database: load it back as a `SystemConfig`, and apply a
validated `SystemConfig` to it, reporting what changed.

`apply` touches only the sections the source named (`SystemConfig.present_sections`): in
those, resources the source no longer lists are removed, so a file is the whole truth for
the sections it has. Two conventions keep secrets out of round trips:

- the mask ``********`` as a secret means "keep the stored secret" (an error when nothing
  is stored for that resource);
- an agent without a password keeps the stored password hash (passwords cannot be read
  back, so an export never carries them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from convodesk.domain.config_model import (
    Agent,
    BusinessHours,
    ChatSettings,
    InboundWebhook,
    MessagingService,
    OutboundCredential,
    Problem,
    Prompts,
    Queue,
    QueueAddress,
    SystemConfig,
    WhatsAppTemplate,
)
from convodesk.domain.secrets import Secret
from convodesk.storage.crypto import SecretBox
from convodesk.storage.tables import (
    AgentQueueRow,
    AgentRow,
    ChatSettingsRow,
    MessagingServiceRow,
    QueueAddressRow,
    QueueRow,
    ServiceCredentialRow,
)

Action = Literal["added", "changed", "removed"]
SECTIONS = ("messaging_services", "queues", "chat_settings", "agents")


@dataclass(frozen=True, kw_only=True)
class Change:
    action: Action
    section: str
    name: str
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.action} {self.section}: {self.name}{detail}"


class ApplyError(Exception):
    """The configuration is valid on its own but cannot be applied to what is stored."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# --------------------------------------------------------------------------- loading


def load(session: Session, box: SecretBox, base: SystemConfig | None = None) -> SystemConfig:
    """The stored configuration, with the top-level settings taken from `base`."""
    base = base or SystemConfig()
    return dataclasses.replace(
        base,
        messaging_services=tuple(_service(r, box) for r in _service_rows(session)),
        queues=tuple(_queue(r) for r in _queue_rows(session)),
        chat_settings=_chat_settings(session),
        agents=tuple(_agent(r, names) for r, names in _agent_rows(session)),
        present_sections=frozenset(SECTIONS),
    )


def _service_rows(session: Session) -> list[MessagingServiceRow]:
    stmt = (
        select(MessagingServiceRow)
        .options(selectinload(MessagingServiceRow.credentials))
        .order_by(MessagingServiceRow.id)
    )
    return list(session.scalars(stmt))


def _queue_rows(session: Session) -> list[QueueRow]:
    stmt = select(QueueRow).options(selectinload(QueueRow.addresses)).order_by(QueueRow.id)
    return list(session.scalars(stmt))


def _agent_rows(session: Session) -> list[tuple[AgentRow, tuple[str, ...]]]:
    queue_names = dict(session.execute(select(QueueRow.id, QueueRow.name)).all())
    rows = session.scalars(
        select(AgentRow).options(selectinload(AgentRow.queue_links)).order_by(AgentRow.id)
    )
    return [(r, tuple(queue_names[link.queue_id] for link in r.queue_links)) for r in rows]


def _service(row: MessagingServiceRow, box: SecretBox) -> MessagingService:
    return MessagingService(
        name=row.name,
        type=row.type,
        service_connection=row.service_connection,
        region=row.region,
        project_id=row.project_id,
        outbound=tuple(
            OutboundCredential(
                key_id=c.key_id,
                app_id=c.app_id,
                secret=Secret(box.decrypt(c.secret_enc), env_var=c.secret_env),
            )
            for c in row.credentials
        ),
        inbound=InboundWebhook(
            secret=Secret(box.decrypt(row.webhook_secret_enc), env_var=row.webhook_secret_env),
            triggers=tuple(row.triggers),
        ),
        whatsapp_templates=_templates(row.whatsapp_templates),
    )


def _templates(data: list[dict[str, Any]] | None) -> tuple[WhatsAppTemplate, ...]:
    return tuple(
        WhatsAppTemplate(
            app_id=t["app_id"],
            name=t["name"],
            language=t["language"],
            parameters=tuple(t.get("parameters", ())),
            text=t.get("text"),
        )
        for t in data or ()
    )


def _templates_json(templates: tuple[WhatsAppTemplate, ...]) -> list[dict[str, Any]] | None:
    """As the column keeps them; None when there are none (as before any were configured)."""
    if not templates:
        return None
    return [
        {
            "app_id": t.app_id,
            "name": t.name,
            "language": t.language,
            "parameters": list(t.parameters),
            "text": t.text,
        }
        for t in templates
    ]


def whatsapp_templates(session: Session, service: str, app_id: str) -> tuple[WhatsAppTemplate, ...]:
    """The stored templates of one app of a messaging service (none if it is gone)."""
    data = session.scalar(
        select(MessagingServiceRow.whatsapp_templates).where(MessagingServiceRow.name == service)
    )
    return tuple(t for t in _templates(data) if t.app_id == app_id)


def _queue(row: QueueRow) -> Queue:
    hours = None
    if row.business_hours is not None:
        bh = row.business_hours
        hours = BusinessHours(
            timezone=bh["timezone"],
            weekly={d: tuple((s, e) for s, e in spans) for d, spans in bh["weekly"].items()},
            closed_dates=tuple(bh.get("closed_dates", ())),
        )
    return Queue(
        name=row.name,
        type=row.type,
        addresses=tuple(
            QueueAddress(app_id=a.app_id, subchannel=a.subchannel) for a in row.addresses
        ),
        sms_sender_id=row.sms_sender_id,
        priority=row.priority,
        max_size=row.max_size,
        offer_timeout_seconds=row.offer_timeout_seconds,
        business_hours=hours,
    )


def chat_settings(session: Session) -> ChatSettings:
    """The stored chat settings alone (defaults when none were stored): cheaper than `load`,
    which decrypts every secret."""
    return _chat_settings(session)


def _chat_settings(session: Session) -> ChatSettings:
    row = session.get(ChatSettingsRow, 1)
    if row is None:
        return ChatSettings()
    data = dict(row.settings)
    prompts = Prompts(**data.pop("prompts", {}))
    data["attachment_types"] = tuple(data.get("attachment_types", ChatSettings().attachment_types))
    data["wrapup_codes"] = tuple(data.get("wrapup_codes", ()))
    known = {f.name for f in dataclasses.fields(ChatSettings)}
    return ChatSettings(prompts=prompts, **{k: v for k, v in data.items() if k in known})


def _agent(row: AgentRow, queues: tuple[str, ...]) -> Agent:
    return Agent(
        login=row.login,
        display_name=row.display_name,
        role="admin" if row.role == "admin" else "agent",
        queues=queues,
        max_chats=row.max_chats,
        password=None,
    )


# --------------------------------------------------------------------------- applying


def apply(session: Session, box: SecretBox, config: SystemConfig) -> list[Change]:
    """Make the stored sections named in `config.present_sections` equal to `config`.

    Runs inside the caller's transaction (a dry run is a rolled-back apply). Raises
    `ApplyError` (changing nothing, once the caller rolls back) when a masked secret has
    nothing stored to keep.
    """
    changes: list[Change] = []
    sections = config.present_sections
    if "messaging_services" in sections:
        changes += _apply_services(session, box, config.messaging_services)
    if "queues" in sections:
        changes += _apply_queues(session, config.queues)
    if "chat_settings" in sections:
        changes += _apply_chat_settings(session, config.chat_settings)
    if "agents" in sections:
        changes += _apply_agents(session, config.agents)
    session.flush()
    return changes


def _diff(old: Any, new: Any) -> tuple[str, ...]:
    return tuple(
        f.name for f in dataclasses.fields(new) if getattr(old, f.name) != getattr(new, f.name)
    )


def _keep_masked(
    secret: Secret, stored: Secret | None, path: str, problems: list[Problem]
) -> Secret:
    if not secret.is_mask:
        return secret
    if stored is None:
        problems.append(
            Problem(
                path=path,
                message="******** keeps a stored secret, but none is stored here: give the secret",
            )
        )
        return secret
    return stored


def _apply_services(
    session: Session, box: SecretBox, services: tuple[MessagingService, ...]
) -> list[Change]:
    rows = {r.name: r for r in _service_rows(session)}
    wanted = {s.name for s in services}
    changes: list[Change] = []
    problems: list[Problem] = []
    for name, row in rows.items():
        if name not in wanted:
            session.delete(row)
            changes.append(Change(action="removed", section="messaging_services", name=name))
    session.flush()  # free the app ids of removed services before they are reused
    resolved: list[tuple[int, MessagingService, MessagingService | None]] = []
    for index, svc in enumerate(services):
        old = _service(rows[svc.name], box) if svc.name in rows else None
        old_creds = {c.app_id: c.secret for c in old.outbound} if old else {}
        path = f"messaging_services[{index}]"
        outbound = tuple(
            dataclasses.replace(
                c,
                secret=_keep_masked(
                    c.secret,
                    old_creds.get(c.app_id),
                    f"{path}.authentication.{c.auth_id}.password",
                    problems,
                ),
            )
            for c in svc.outbound
        )
        inbound = dataclasses.replace(
            svc.inbound,
            secret=_keep_masked(
                svc.inbound.secret,
                old.inbound.secret if old else None,
                f"{path}.authentication.webhook.password",
                problems,
            ),
        )
        resolved.append((index, dataclasses.replace(svc, outbound=outbound, inbound=inbound), old))
    if problems:
        raise ApplyError(problems)
    for _index, svc, old in resolved:
        if old is None:
            row = MessagingServiceRow(name=svc.name)
            session.add(row)
            changes.append(Change(action="added", section="messaging_services", name=svc.name))
        elif old != svc:
            row = rows[svc.name]
            changes.append(
                Change(
                    action="changed",
                    section="messaging_services",
                    name=svc.name,
                    fields=_diff(old, svc),
                )
            )
        else:
            continue
        _write_service(session, box, row, svc)
    return changes


def _write_service(
    session: Session, box: SecretBox, row: MessagingServiceRow, svc: MessagingService
) -> None:
    row.type = svc.type
    row.service_connection = svc.service_connection
    row.region = svc.region
    row.project_id = svc.project_id
    row.webhook_secret_enc = box.encrypt(svc.inbound.secret.reveal())
    row.webhook_secret_env = svc.inbound.secret.env_var
    row.triggers = list(svc.inbound.triggers)
    row.whatsapp_templates = _templates_json(svc.whatsapp_templates)
    # Replace the credentials; flush the removal first so the unique app ids are free.
    row.credentials.clear()
    session.flush()
    for position, cred in enumerate(svc.outbound):
        row.credentials.append(
            ServiceCredentialRow(
                position=position,
                key_id=cred.key_id,
                app_id=cred.app_id,
                secret_enc=box.encrypt(cred.secret.reveal()),
                secret_env=cred.secret.env_var,
            )
        )


def _apply_queues(session: Session, queues: tuple[Queue, ...]) -> list[Change]:
    rows = {r.name: r for r in _queue_rows(session)}
    wanted = {q.name for q in queues}
    changes: list[Change] = []
    for name, row in rows.items():
        if name not in wanted:
            session.delete(row)
            changes.append(Change(action="removed", section="queues", name=name))
    session.flush()  # free addresses of removed queues
    # Addresses move between queues: clear every changed queue's addresses first.
    plan: list[tuple[QueueRow, Queue]] = []
    for queue in queues:
        old_row = rows.get(queue.name)
        if old_row is None:
            plan.append((QueueRow(name=queue.name), queue))
            changes.append(Change(action="added", section="queues", name=queue.name))
            continue
        old = _queue(old_row)
        if old == queue:
            continue
        old_row.addresses.clear()
        plan.append((old_row, queue))
        changes.append(
            Change(action="changed", section="queues", name=queue.name, fields=_diff(old, queue))
        )
    session.flush()
    for row, queue in plan:
        row.type = queue.type
        row.priority = queue.priority
        row.max_size = queue.max_size
        row.offer_timeout_seconds = queue.offer_timeout_seconds
        row.sms_sender_id = queue.sms_sender_id
        row.business_hours = _business_hours_json(queue.business_hours)
        for position, address in enumerate(queue.addresses):
            row.addresses.append(
                QueueAddressRow(
                    position=position, app_id=address.app_id, subchannel=address.subchannel
                )
            )
        session.add(row)
    return changes


def _business_hours_json(hours: BusinessHours | None) -> dict[str, Any] | None:
    if hours is None:
        return None
    return {
        "timezone": hours.timezone,
        "weekly": {day: [list(span) for span in spans] for day, spans in hours.weekly.items()},
        "closed_dates": list(hours.closed_dates),
    }


def _apply_chat_settings(session: Session, settings: ChatSettings) -> list[Change]:
    row = session.get(ChatSettingsRow, 1)
    old = _chat_settings(session)  # the defaults while no row exists
    fields = _diff(old, settings)
    data = dataclasses.asdict(settings)
    data["attachment_types"] = list(settings.attachment_types)
    data["wrapup_codes"] = list(settings.wrapup_codes)
    if row is None:
        session.add(ChatSettingsRow(id=1, settings=data))
    elif fields:
        row.settings = data
    # Defaults written for the first time are nothing an admin would call a change.
    if not fields:
        return []
    return [Change(action="changed", section="chat_settings", name="chat_settings", fields=fields)]


def _apply_agents(session: Session, agents: tuple[Agent, ...]) -> list[Change]:
    queue_ids = dict(session.execute(select(QueueRow.name, QueueRow.id)).all())
    current = {row.login: (row, names) for row, names in _agent_rows(session)}
    wanted = {a.login for a in agents}
    changes: list[Change] = []
    for login, (row, _names) in current.items():
        if login not in wanted:
            session.delete(row)
            changes.append(Change(action="removed", section="agents", name=login))
    for agent in agents:
        found = current.get(agent.login)
        if found is None:
            row = AgentRow(login=agent.login)
            fields: tuple[str, ...] = ()
            action: Action = "added"
        else:
            row, names = found
            fields = _diff(dataclasses.replace(_agent(row, names), password=agent.password), agent)
            if _password_changes(row, agent.password):
                fields += ("password",)
            if not fields:
                continue
            action = "changed"
            row.queue_links.clear()
            session.flush()  # the links' primary keys are reused just below
        _write_agent(row, agent, queue_ids)
        session.add(row)
        changes.append(Change(action=action, section="agents", name=agent.login, fields=fields))
    return changes


def _password_changes(row: AgentRow, password: Secret | None) -> bool:
    if password is None or password.is_mask:
        return False
    return (
        not verify_password(row.password_hash, password.reveal())
        or row.password_env != password.env_var
    )


def _write_agent(row: AgentRow, agent: Agent, queue_ids: dict[str, int]) -> None:
    row.display_name = agent.display_name
    row.role = agent.role
    row.max_chats = agent.max_chats
    if agent.password is not None and not agent.password.is_mask:
        if not verify_password(row.password_hash, agent.password.reveal()):
            row.password_hash = hash_password(agent.password.reveal())
        row.password_env = agent.password.env_var
    row.queue_links = [
        AgentQueueRow(queue_id=queue_ids[name], position=i) for i, name in enumerate(agent.queues)
    ]
