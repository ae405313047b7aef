"""SQL of the Chat Server: agents' presence and load, offers, waiting conversations.

Lock order (PostgreSQL; SQLite runs one writer at a time anyway): a transaction that
changes an agent's load or presence locks that agent's `agent_presence` row first
(`lock_presence`, in agent id order), then offers, then conversations. The routing pass
locks every presence row at its start, and takes the conversations it may change with
``SKIP LOCKED`` (`skip_locked`), so it never waits for the processor, which updates
conversations in its own order. Keeping to this means no two transactions wait for each
other in a circle.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Table, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from convodesk.storage.tables import (
    AgentPresenceRow,
    AgentQueueRow,
    AgentRow,
    ConversationRow,
    MessageRow,
    OfferRow,
    QueueRow,
)

_presence = cast(Table, AgentPresenceRow.__table__)
# An arbitrary constant: the key of the routing pass's advisory lock on PostgreSQL.
ROUTING_LOCK_ID = 0x636F6E7672  # "convr"


@dataclass(frozen=True, kw_only=True)
class AgentInfo:
    id: int
    login: str
    display_name: str
    role: str
    max_chats: int | None
    queues: tuple[str, ...]


def agents(session: Session, logins: Collection[str] | None = None) -> dict[str, AgentInfo]:
    """Agents by login, with their queues in order (every agent when `logins` is None)."""
    stmt = select(AgentRow.id, AgentRow.login, AgentRow.display_name, AgentRow.role)
    stmt = stmt.add_columns(AgentRow.max_chats)
    if logins is not None:
        stmt = stmt.where(AgentRow.login.in_(sorted(logins)))
    rows = session.execute(stmt).all()
    queues: dict[int, list[str]] = {row.id: [] for row in rows}
    if queues:
        links = session.execute(
            select(AgentQueueRow.agent_id, QueueRow.name)
            .join(QueueRow, QueueRow.id == AgentQueueRow.queue_id)
            .where(AgentQueueRow.agent_id.in_(list(queues)))
            .order_by(AgentQueueRow.agent_id, AgentQueueRow.position)
        ).all()
        for agent_id, name in links:
            queues[agent_id].append(name)
    return {
        row.login: AgentInfo(
            id=row.id,
            login=row.login,
            display_name=row.display_name,
            role=row.role,
            max_chats=row.max_chats,
            queues=tuple(queues[row.id]),
        )
        for row in rows
    }


def agent_logins(session: Session, ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return dict(
        session.execute(select(AgentRow.id, AgentRow.login).where(AgentRow.id.in_(wanted))).all()
    )


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def try_routing_lock(session: Session) -> bool:
    """On PostgreSQL, the routing pass's lock for this transaction, if no other node holds
    it (then that node is routing and this one skips its pass). SQLite: always True."""
    if not is_postgres(session):
        return True
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(ROUTING_LOCK_ID))))


@functools.cache
def _insert_presence(dialect: str) -> Any:
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return dialect_insert(_presence).on_conflict_do_nothing(index_elements=["agent_id"])


def lock_presence(
    session: Session, agent_ids: Iterable[int], now: datetime
) -> dict[int, AgentPresenceRow]:
    """The presence rows of these agents, created (offline) where missing and locked for
    this transaction, in agent id order."""
    wanted = sorted(set(agent_ids))
    if not wanted:
        return {}
    session.execute(
        _insert_presence(session.get_bind().dialect.name),
        [
            {"agent_id": i, "state": "offline", "since": now, "idle_since": now, "missed_offers": 0}
            for i in wanted
        ],
    )
    rows = session.scalars(
        select(AgentPresenceRow)
        .where(AgentPresenceRow.agent_id.in_(wanted))
        .order_by(AgentPresenceRow.agent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {row.agent_id: row for row in rows}


def lock_all_presence(session: Session) -> dict[int, AgentPresenceRow]:
    rows = session.scalars(
        select(AgentPresenceRow)
        .order_by(AgentPresenceRow.agent_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {row.agent_id: row for row in rows}


def presence_of(session: Session, agent_id: int) -> AgentPresenceRow | None:
    return session.get(AgentPresenceRow, agent_id)


def active_counts(session: Session, logins: Collection[str] | None = None) -> dict[str, int]:
    """Active conversations per assigned agent."""
    stmt = (
        select(ConversationRow.assigned_agent, func.count())
        .where(ConversationRow.status == "active", ConversationRow.assigned_agent.is_not(None))
        .group_by(ConversationRow.assigned_agent)
    )
    if logins is not None:
        stmt = stmt.where(ConversationRow.assigned_agent.in_(sorted(logins)))
    return {login: int(count) for login, count in session.execute(stmt).all() if login}


def offered_counts(session: Session, agent_ids: Collection[int] | None = None) -> dict[int, int]:
    """Outstanding offers per agent."""
    stmt = (
        select(OfferRow.agent_id, func.count())
        .where(OfferRow.state == "offered")
        .group_by(OfferRow.agent_id)
    )
    if agent_ids is not None:
        stmt = stmt.where(OfferRow.agent_id.in_(sorted(agent_ids)))
    return {agent_id: int(count) for agent_id, count in session.execute(stmt).all()}


def outstanding_offers(
    session: Session,
    *,
    conversation_id: int | None = None,
    agent_id: int | None = None,
) -> list[OfferRow]:
    stmt = select(OfferRow).where(OfferRow.state == "offered")
    if conversation_id is not None:
        stmt = stmt.where(OfferRow.conversation_id == conversation_id)
    if agent_id is not None:
        stmt = stmt.where(OfferRow.agent_id == agent_id)
    return list(session.scalars(stmt.order_by(OfferRow.id)))


def lock_offers_of(session: Session, conversation_id: int) -> list[OfferRow]:
    """The conversation's outstanding offers, locked (the second step of the lock order)."""
    return list(
        session.scalars(
            select(OfferRow)
            .where(OfferRow.conversation_id == conversation_id, OfferRow.state == "offered")
            .order_by(OfferRow.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def lock_conversation(session: Session, conversation_id: int) -> ConversationRow | None:
    """The conversation as it is now, locked (the last step of the lock order)."""
    return session.scalars(
        select(ConversationRow)
        .where(ConversationRow.id == conversation_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def close_offer(offer: OfferRow, state: str, now: datetime) -> None:
    offer.state = state
    offer.closed_at = now
    offer.open_conversation_id = None


def waiting_conversations(
    session: Session,
    *,
    lock: bool = False,
    queues: Collection[str] | None = None,
    preferred: Collection[str] = (),
) -> list[ConversationRow]:
    """Every waiting conversation, oldest first (the caller orders by queue priority).
    `lock`: lock them, skipping those another transaction holds (`skip_locked`).
    `queues`: only those in these queues, or whose `preferred_agent` is in `preferred`."""
    stmt = (
        select(ConversationRow)
        .where(ConversationRow.status == "waiting")
        .order_by(ConversationRow.waiting_since, ConversationRow.id)
    )
    if queues is not None:
        among: ColumnElement[bool] = ConversationRow.queue.in_(sorted(queues))
        if preferred:
            among = or_(among, ConversationRow.preferred_agent.in_(sorted(preferred)))
        stmt = stmt.where(among)
    return list(session.scalars(skip_locked(stmt) if lock else stmt))


def skip_locked(stmt: Select[Any]) -> Select[Any]:
    """``FOR UPDATE SKIP LOCKED`` (nothing on SQLite, where one transaction writes at a
    time). The routing pass reads the conversations it may change this way: a row that the
    processor (a customer's new message) or an agent's action holds is left for the next
    pass instead of waited for, so the pass never waits in a circle with them."""
    return stmt.with_for_update(skip_locked=True).execution_options(populate_existing=True)


def assign_if_waiting(session: Session, conversation_id: int, login: str, now: datetime) -> bool:
    """The race-free assignment: the conversation becomes the agent's only if it is still
    waiting and unassigned at this instant. Of two transactions doing this for the same
    conversation (two agents, two nodes), exactly one sees a row change."""
    result = session.execute(
        update(ConversationRow)
        .where(
            ConversationRow.id == conversation_id,
            ConversationRow.status == "waiting",
            ConversationRow.assigned_agent.is_(None),
        )
        .values(
            status="active",
            assigned_agent=login,
            assigned_at=now,
            preferred_agent=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def last_message_previews(
    session: Session, conversation_ids: Collection[int], *, inbound_only: bool = False
) -> dict[int, str | None]:
    """The text of each conversation's last message (its last inbound one)."""
    if not conversation_ids:
        return {}
    last = select(MessageRow.conversation_id, func.max(MessageRow.id).label("last_id")).where(
        MessageRow.conversation_id.in_(sorted(conversation_ids))
    )
    if inbound_only:
        last = last.where(MessageRow.direction == "inbound")
    sub = last.group_by(MessageRow.conversation_id).subquery()
    rows = session.execute(
        select(MessageRow.conversation_id, MessageRow.text).join(
            sub, MessageRow.id == sub.c.last_id
        )
    ).all()
    return dict(rows)


@dataclass(frozen=True, kw_only=True)
class QueueStats:
    queue: str
    priority: int
    waiting: int
    oldest_waiting_since: datetime | None
    agents_ready: int  # members whose presence is ready
    agents_busy: int  # members handling at least one active conversation


def queue_stats(session: Session, names: Collection[str] | None = None) -> list[QueueStats]:
    """The queues (all, or those named) in priority order, with their counts."""
    queues_stmt = select(QueueRow.name, QueueRow.priority).order_by(
        QueueRow.priority.desc(), QueueRow.name
    )
    if names is not None:
        queues_stmt = queues_stmt.where(QueueRow.name.in_(sorted(names)))
    queues = session.execute(queues_stmt).all()
    if not queues:
        return []
    wanted = [name for name, _ in queues]
    waiting = {
        queue: (int(count), oldest)
        for queue, count, oldest in session.execute(
            select(ConversationRow.queue, func.count(), func.min(ConversationRow.waiting_since))
            .where(ConversationRow.status == "waiting", ConversationRow.queue.in_(wanted))
            .group_by(ConversationRow.queue)
        ).all()
    }
    members = (
        select(QueueRow.name, func.count(func.distinct(AgentQueueRow.agent_id)))
        .join(AgentQueueRow, AgentQueueRow.queue_id == QueueRow.id)
        .where(QueueRow.name.in_(wanted))
        .group_by(QueueRow.name)
    )
    ready = dict(
        session.execute(
            members.join(
                AgentPresenceRow, AgentPresenceRow.agent_id == AgentQueueRow.agent_id
            ).where(AgentPresenceRow.state == "ready")
        ).all()
    )
    busy_agents = (
        select(AgentRow.id)
        .join(ConversationRow, ConversationRow.assigned_agent == AgentRow.login)
        .where(ConversationRow.status == "active")
    )
    busy = dict(session.execute(members.where(AgentQueueRow.agent_id.in_(busy_agents))).all())
    return [
        QueueStats(
            queue=name,
            priority=priority,
            waiting=waiting.get(name, (0, None))[0],
            oldest_waiting_since=waiting.get(name, (0, None))[1],
            agents_ready=int(ready.get(name, 0)),
            agents_busy=int(busy.get(name, 0)),
        )
        for name, priority in queues
    ]
