"""The Chat Server's use cases for agents and admins: presence, offers (accept, reject),
picking a waiting chat, transfer, end with wrap-up, and what the desktop reads (the queues'
overview, the waiting list, my offers, the customer's earlier conversations).

Every change commits first and then publishes its live events (`runtime.live`); the web
layer wakes the router afterwards, so the next routing pass runs at once.

Decisions (docs/reference/routing.md has them all):

- Accept is race-free: the offer and then the conversation are changed by conditional
  updates (`storage.chat.assign_if_waiting`), so of two agents, or two nodes, accepting or
  picking the same conversation, exactly one succeeds and the other gets 409.
- Pick needs room: the agent's active chats plus outstanding offers below its limit.
- Transfer to a queue puts the conversation back to waiting there, keeping its place by
  the time it first waited; transfer to an agent offers it to that agent at once, without
  regard to the agent's limit (someone chose them), but only if the agent is ready. Both
  release the agent who had it (cold transfer).
- Only the agent handling a conversation, or an admin, transfers or ends it.
- A wrap-up code is optional; when ``chat_settings.wrapup_codes`` lists codes, a code given
  must be one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from convodesk.domain.config_model import Problem
from convodesk.domain.configurator import WRAPUP_CODE_MAX
from convodesk.runtime import Runtime
from convodesk.services import assignment, chat_events
from convodesk.services import conversations as conversation_service
from convodesk.services.assignment import Changes, OfferItem
from convodesk.services.conversations import ConversationItem, conversation_item
from convodesk.services.directory import Directory
from convodesk.services.errors import (
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
)
from convodesk.services.event_log import MAX_PAGE, as_utc
from convodesk.services.live import LiveEvent
from convodesk.storage import chat
from convodesk.storage.api_tokens import Principal
from convodesk.storage.chat import AgentInfo
from convodesk.storage.db import read_transaction, transaction
from convodesk.storage.tables import AgentPresenceRow, ConversationRow, OfferRow, QueueRow

PRESENCE_STATES = ("ready", "not_ready")
HISTORY_SCAN = 200  # the customer's most recent conversations looked at for the history


@dataclass(frozen=True, kw_only=True)
class PresenceItem:
    agent: str
    state: str  # ready | not_ready | offline
    since: datetime


@dataclass(frozen=True, kw_only=True)
class MeItem:
    role: str
    agent: str | None
    display_name: str | None
    presence: str | None  # ready | not_ready | offline; None for a token of no agent
    presence_since: datetime | None
    max_chats: int | None  # the agent's limit (its own, else chat_settings.max_concurrent_chats)
    queues: list[str]  # the agent's queues; for an admin token of no agent, every queue


@dataclass(frozen=True, kw_only=True)
class QueueOverview:
    queue: str
    priority: int
    waiting: int
    longest_wait_seconds: float  # 0 when none waits
    agents_ready: int  # members whose presence is ready
    agents_busy: int  # members handling at least one active conversation


@dataclass(frozen=True, kw_only=True)
class WaitingItem(ConversationItem):
    position: int  # 1 is next
    waiting_seconds: float
    offered: bool  # an offer to some agent is outstanding
    preview: str | None  # the customer's last message, shortened


@dataclass(frozen=True, kw_only=True)
class HistoryItem:
    id: int
    queue: str
    status: str
    opened_at: datetime
    closed_at: datetime | None
    assigned_agent: str | None
    wrapup_code: str | None
    close_reason: str | None
    preview: str | None  # its last message, shortened


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _publish(runtime: Runtime, events: list[LiveEvent]) -> None:
    if events:
        runtime.live.publish(events)


def _agent(session: Session, principal: Principal) -> AgentInfo:
    login = principal.agent_login
    found = chat.agents(session, [login]).get(login) if login else None
    if found is None:
        raise ForbiddenError("this is for agents: the token belongs to no agent")
    return found


def _capacity(agent: AgentInfo, directory: Directory) -> int:
    return agent.max_chats or directory.chat_settings.max_concurrent_chats


def _queue_events(session: Session, names: set[str], now: datetime) -> list[LiveEvent]:
    return [_queue_event(stats, now) for stats in chat.queue_stats(session, names)]


def _queue_event(stats: chat.QueueStats, now: datetime) -> LiveEvent:
    return chat_events.queue_updated(
        stats.queue,
        priority=stats.priority,
        waiting=stats.waiting,
        longest_wait_seconds=_waited(stats.oldest_waiting_since, now),
        agents_ready=stats.agents_ready,
        agents_busy=stats.agents_busy,
    )


def _waited(since: datetime | None, now: datetime) -> float:
    return round(max(0.0, (now - as_utc(since)).total_seconds()), 1) if since else 0.0


def _finish(session: Session, changes: Changes, now: datetime) -> list[LiveEvent]:
    events = changes.build_events(session, now)
    return events + _queue_events(session, changes.queues, now)


# --------------------------------------------------------------------------- presence


def me(runtime: Runtime, principal: Principal, directory: Directory) -> MeItem:
    with transaction(runtime.sessions) as session:
        login = principal.agent_login
        agent = chat.agents(session, [login]).get(login) if login else None
        if agent is None:
            queues = list(session.scalars(select(QueueRow.name).order_by(QueueRow.name)))
            return MeItem(
                role=principal.role,
                agent=None,
                display_name=None,
                presence=None,
                presence_since=None,
                max_chats=None,
                queues=queues if principal.is_admin else [],
            )
        presence = chat.presence_of(session, agent.id)
        return MeItem(
            role=principal.role,
            agent=agent.login,
            display_name=agent.display_name,
            presence=presence.state if presence else "offline",
            presence_since=as_utc(presence.since) if presence else None,
            max_chats=_capacity(agent, directory),
            queues=list(agent.queues),
        )


def set_presence(
    runtime: Runtime, principal: Principal, state: str, *, now: datetime | None = None
) -> PresenceItem:
    """ready or not_ready. Ready: the agent is idle from now (longest-idle order) and its
    missed-offer count starts again. Not ready: its outstanding offers are withdrawn (the
    conversations go to the next agent); its active chats stay its own."""
    if state not in PRESENCE_STATES:
        raise InvalidRequestError(
            [Problem(path="state", message=f"expected ready or not_ready, got {state!r}")]
        )
    now = _now(now)
    changes = Changes()
    with transaction(runtime.sessions) as session:
        agent = _agent(session, principal)
        presence = chat.lock_presence(session, [agent.id], now)[agent.id]
        if presence.state != state:
            presence.state = state
            presence.since = now
            if state == "ready":
                presence.idle_since = now
                presence.missed_offers = 0
            else:
                for offer in chat.outstanding_offers(session, agent_id=agent.id):
                    assignment.close_offer(changes, offer, "withdrawn", agent.login, now)
            changes.events.append(chat_events.presence_updated(agent.login, state, now))
            changes.queues.update(agent.queues)
        item = PresenceItem(agent=agent.login, state=presence.state, since=as_utc(presence.since))
        events = _finish(session, changes, now)
    _publish(runtime, events)
    return item


# --------------------------------------------------------------------------- offers


def list_offers(
    runtime: Runtime, principal: Principal, *, now: datetime | None = None
) -> list[OfferItem]:
    """The caller's outstanding offers, oldest first."""
    now = _now(now)
    with transaction(runtime.sessions) as session:
        agent = _agent(session, principal)
        rows = session.execute(
            select(OfferRow, ConversationRow)
            .join(ConversationRow, ConversationRow.id == OfferRow.conversation_id)
            .where(
                OfferRow.agent_id == agent.id,
                OfferRow.state == "offered",
                OfferRow.expires_at > now,
            )
            .order_by(OfferRow.id)
        ).all()
        texts = chat.last_message_previews(session, {c.id for _, c in rows}, inbound_only=True)
        return [assignment.offer_item(o, c, texts.get(c.id)) for o, c in rows]


def _my_offer(session: Session, agent: AgentInfo, offer_id: int) -> OfferRow:
    offer = session.get(OfferRow, offer_id)
    if offer is None or offer.agent_id != agent.id:
        raise NotFoundError(f"no offer with id {offer_id}")
    return offer


def _close_my_offer(session: Session, offer: OfferRow, state: str, now: datetime) -> None:
    """The conditional update that answers an offer: only an outstanding, unexpired offer
    changes; anything else is 409 saying what became of it."""
    result = session.execute(
        update(OfferRow)
        .where(OfferRow.id == offer.id, OfferRow.state == "offered", OfferRow.expires_at > now)
        .values(state=state, closed_at=now, open_conversation_id=None)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) == 1:
        session.refresh(offer)
        return
    session.refresh(offer)
    what = "expired" if offer.state in ("offered", "expired") else offer.state
    raise ConflictError(f"offer {offer.id} was {what}", data={"state": what})


def accept_offer(
    runtime: Runtime, principal: Principal, offer_id: int, *, now: datetime | None = None
) -> ConversationItem:
    now = _now(now)
    changes = Changes()
    with transaction(runtime.sessions) as session:
        agent = _agent(session, principal)
        presence = chat.lock_presence(session, [agent.id], now)[agent.id]
        offer = _my_offer(session, agent, offer_id)
        _close_my_offer(session, offer, "accepted", now)
        if not chat.assign_if_waiting(session, offer.conversation_id, agent.login, now):
            raise ConflictError(
                f"conversation {offer.conversation_id} is no longer waiting: another agent "
                "took it, or it ended",
                data={"state": "taken"},
            )
        conversation = session.get(ConversationRow, offer.conversation_id)
        assert conversation is not None  # the update above just changed it
        session.refresh(conversation)
        _assigned(session, changes, conversation, presence, agent, now, how=f"offer {offer.id}")
        changes.events.append(
            chat_events.offer_closed(offer.id, conversation.id, "accepted", agent.login)
        )
        item = conversation_item(conversation, now=now)
        events = _finish(session, changes, now)
    _publish(runtime, events)
    return item


def _assigned(
    session: Session,
    changes: Changes,
    conversation: ConversationRow,
    presence: AgentPresenceRow,
    agent: AgentInfo,
    now: datetime,
    *,
    how: str,
) -> None:
    presence.missed_offers = 0
    presence.idle_since = now
    conversation.position_prompted = None
    assignment.log(
        session, conversation, "assigned", now, agent=agent.login, actor=agent.login, detail=how
    )
    changes.touch(conversation)


def reject_offer(
    runtime: Runtime, principal: Principal, offer_id: int, *, now: datetime | None = None
) -> None:
    """The conversation goes to the next agent; this one is skipped for it for one offer
    timeout. A rejected transfer (or reopen) offer leaves it to the queue."""
    now = _now(now)
    changes = Changes()
    with transaction(runtime.sessions) as session:
        agent = _agent(session, principal)
        presence = chat.lock_presence(session, [agent.id], now)[agent.id]
        offer = _my_offer(session, agent, offer_id)
        _close_my_offer(session, offer, "rejected", now)
        presence.missed_offers = 0
        conversation = session.get(ConversationRow, offer.conversation_id)
        if conversation is not None:
            if offer.kind != "route":
                conversation.preferred_agent = None
            assignment.log(
                session, conversation, "rejected", now, agent=agent.login, actor=agent.login
            )
            changes.queues.add(conversation.queue)
        changes.events.append(
            chat_events.offer_closed(offer.id, offer.conversation_id, "rejected", agent.login)
        )
        events = _finish(session, changes, now)
    _publish(runtime, events)


# --------------------------------------------------------------------------- pick


def pick(
    runtime: Runtime,
    principal: Principal,
    conversation_id: int,
    directory: Directory,
    *,
    now: datetime | None = None,
) -> ConversationItem:
    now = _now(now)
    changes = Changes()
    with transaction(runtime.sessions) as session:
        agent = _agent(session, principal)
        presence = chat.lock_presence(session, [agent.id], now)[agent.id]
        conversation = conversation_service.visible_conversation(
            session, principal, conversation_id
        )
        if conversation.status != "waiting":
            raise ConflictError(_not_waiting(conversation), data={"status": conversation.status})
        own = [
            o
            for o in chat.outstanding_offers(session, agent_id=agent.id)
            if o.conversation_id != conversation.id
        ]
        active = chat.active_counts(session, [agent.login]).get(agent.login, 0)
        capacity = _capacity(agent, directory)
        if active + len(own) >= capacity:
            raise ConflictError(
                f"no room for another chat: {active} active and {len(own)} offered of "
                f"{capacity}; end a chat or reject an offer first"
            )
        offers = chat.lock_offers_of(session, conversation.id)
        if not chat.assign_if_waiting(session, conversation.id, agent.login, now):
            session.refresh(conversation)
            raise ConflictError(_not_waiting(conversation), data={"status": conversation.status})
        session.refresh(conversation)
        for offer in offers:
            if offer.agent_id == agent.id:
                assignment.close_offer(changes, offer, "accepted", agent.login, now)
            else:
                login = chat.agent_logins(session, [offer.agent_id]).get(offer.agent_id, "")
                assignment.close_offer(changes, offer, "withdrawn", login, now)
        _assigned(session, changes, conversation, presence, agent, now, how="picked")
        item = conversation_item(conversation, now=now)
        events = _finish(session, changes, now)
    _publish(runtime, events)
    return item


def _not_waiting(conversation: ConversationRow) -> str:
    if conversation.status == "active":
        return f"conversation {conversation.id} is no longer waiting: another agent took it"
    return f"conversation {conversation.id} is {conversation.status}, not waiting"


# --------------------------------------------------------------------------- transfer, end


def _handled_by_caller(principal: Principal, conversation: ConversationRow, action: str) -> None:
    if conversation.status == "closed":
        raise ConflictError(f"conversation {conversation.id} is closed")
    if principal.is_admin:
        return
    mine = conversation.status == "active" and conversation.assigned_agent == principal.agent_login
    if not mine:
        raise ConflictError(
            f"only the agent handling conversation {conversation.id}, or an admin, can {action} it"
        )


def _lock_unchanged(session: Session, conversation: ConversationRow, agent: str | None) -> None:
    """Lock the conversation's offers, then the conversation (the lock order), and make
    sure it is still as the caller saw it before it waited for the locks."""
    chat.lock_offers_of(session, conversation.id)
    status, assigned = conversation.status, conversation.assigned_agent
    chat.lock_conversation(session, conversation.id)
    now_agent = conversation.assigned_agent if conversation.status == "active" else None
    if conversation.status == "closed":
        raise ConflictError(f"conversation {conversation.id} is closed")
    if (conversation.status, conversation.assigned_agent) != (status, assigned) or (
        now_agent != agent
    ):
        raise ConflictError(f"conversation {conversation.id} changed meanwhile: try again")


def transfer(
    runtime: Runtime,
    principal: Principal,
    conversation_id: int,
    body: dict[str, Any],
    directory: Directory,
    *,
    now: datetime | None = None,
) -> ConversationItem:
    target_queue, target_agent = _transfer_target(body)
    now = _now(now)
    changes = Changes()
    actor = principal.agent_login or "admin"
    with transaction(runtime.sessions) as session:
        conversation = conversation_service.visible_conversation(
            session, principal, conversation_id
        )
        _handled_by_caller(principal, conversation, "transfer")
        previous = conversation.assigned_agent if conversation.status == "active" else None
        target = None
        if target_agent is not None:
            target = chat.agents(session, [target_agent]).get(target_agent)
            if target is None:
                raise InvalidRequestError(
                    [Problem(path="agent", message=f"no agent with login {target_agent!r}")]
                )
            if target.login == previous:
                raise ConflictError(f"conversation {conversation.id} is {target.login}'s already")
        elif session.scalar(select(QueueRow.id).where(QueueRow.name == target_queue)) is None:
            raise InvalidRequestError(
                [Problem(path="queue", message=f"no queue named {target_queue!r}")]
            )
        ids = [a.id for a in (target,) if a is not None]
        old = chat.agents(session, [previous]).get(previous) if previous else None
        locked = chat.lock_presence(session, ids + ([old.id] if old else []), now)
        _lock_unchanged(session, conversation, previous)
        if target is not None and locked[target.id].state != "ready":
            raise ConflictError(
                f"agent {target.login} is {locked[target.id].state.replace('_', ' ')}: a "
                "conversation can be transferred only to a ready agent"
            )
        old_queue = conversation.queue
        assignment.withdraw_offers(session, changes, conversation.id, now)
        conversation.status = "waiting"
        conversation.assigned_agent = None
        conversation.assigned_at = None
        conversation.preferred_agent = None
        conversation.admitted_at = now  # no welcome: the customer is in a chat already
        conversation.position_prompted = None
        conversation.position_prompted_at = None
        if conversation.waiting_since is None:
            conversation.waiting_since = now
        if old is not None:
            locked[old.id].idle_since = now
        changes.moved(conversation, (old_queue,), (previous,) if previous else ())
        if target is not None:
            timeout = assignment.offer_timeout(
                directory.queue(conversation.queue), directory.chat_settings
            )
            offer = assignment.make_offer(
                session,
                changes,
                conversation,
                target.id,
                target.login,
                kind="direct",
                timeout_seconds=timeout,
                now=now,
            )
            if offer is None:
                raise ConflictError(f"conversation {conversation.id} was offered meanwhile")
            detail = f"to agent {target.login}"
        else:
            conversation.queue = str(target_queue)
            detail = f"to queue {target_queue}"
        assignment.log(
            session,
            conversation,
            "transferred",
            now,
            agent=previous,
            actor=actor,
            queue=old_queue,
            detail=detail,
        )
        changes.touch(conversation)
        item = conversation_item(conversation, now=now)
        events = _finish(session, changes, now)
    _publish(runtime, events)
    return item


def _transfer_target(body: dict[str, Any]) -> tuple[str | None, str | None]:
    unknown = sorted(set(body) - {"queue", "agent"})
    problems = [Problem(path=k, message="unknown field: expected queue or agent") for k in unknown]
    given = [k for k in ("queue", "agent") if k in body]
    if len(given) != 1:
        problems.append(Problem(path="", message="expected exactly one of queue or agent"))
    for key in given:
        value = body[key]
        if not isinstance(value, str) or not value.strip() or len(value) > 100:
            problems.append(Problem(path=key, message="expected a name (text)"))
    if problems:
        raise InvalidRequestError(problems)
    return body.get("queue"), body.get("agent")


def end(
    runtime: Runtime,
    principal: Principal,
    conversation_id: int,
    body: dict[str, Any],
    directory: Directory,
    *,
    now: datetime | None = None,
) -> ConversationItem:
    settings = directory.chat_settings
    code = _wrapup_code(body, settings.wrapup_codes)
    now = _now(now)
    changes = Changes()
    with transaction(runtime.sessions) as session:
        conversation = conversation_service.visible_conversation(
            session, principal, conversation_id
        )
        _handled_by_caller(principal, conversation, "end")
        agent_login = conversation.assigned_agent if conversation.status == "active" else None
        agent = chat.agents(session, [agent_login]).get(agent_login) if agent_login else None
        presence = chat.lock_presence(session, [agent.id], now)[agent.id] if agent else None
        _lock_unchanged(session, conversation, agent_login)
        assignment.close_conversation(
            session,
            changes,
            conversation,
            reason="agent",
            ended_by=principal.agent_login or "admin",
            settings=settings,
            now=now,
            presence=presence,
            wrapup_code=code,
        )
        item = conversation_item(conversation, now=now)
        events = _finish(session, changes, now)
    _publish(runtime, events)
    return item


def _wrapup_code(body: dict[str, Any], codes: tuple[str, ...]) -> str | None:
    unknown = sorted(set(body) - {"wrapup_code"})
    problems = [Problem(path=k, message="unknown field: expected wrapup_code") for k in unknown]
    code = body.get("wrapup_code")
    if code is not None:
        if not isinstance(code, str) or not code.strip() or len(code) > WRAPUP_CODE_MAX:
            problems.append(
                Problem(
                    path="wrapup_code",
                    message=f"expected a text of at most {WRAPUP_CODE_MAX} characters, or null",
                )
            )
        elif codes and code not in codes:
            problems.append(
                Problem(
                    path="wrapup_code",
                    message=f"unknown wrap-up code {code!r}: expected one of {', '.join(codes)}",
                )
            )
    if problems:
        raise InvalidRequestError(problems)
    return code


# --------------------------------------------------------------------------- reading


def queue_overview(
    runtime: Runtime, principal: Principal, *, now: datetime | None = None
) -> list[QueueOverview]:
    now = _now(now)
    with transaction(runtime.sessions) as session:
        allowed = conversation_service.visible_queues(session, principal)
        stats = chat.queue_stats(session, allowed)
    return [
        QueueOverview(
            queue=s.queue,
            priority=s.priority,
            waiting=s.waiting,
            longest_wait_seconds=_waited(s.oldest_waiting_since, now),
            agents_ready=s.agents_ready,
            agents_busy=s.agents_busy,
        )
        for s in stats
    ]


def waiting_list(
    runtime: Runtime, principal: Principal, queue: str, *, now: datetime | None = None
) -> list[WaitingItem]:
    """The queue's waiting conversations in the order routing serves them."""
    now = _now(now)
    with transaction(runtime.sessions) as session:
        allowed = conversation_service.visible_queues(session, principal)
        exists = session.scalar(select(QueueRow.id).where(QueueRow.name == queue))
        if exists is None or (allowed is not None and queue not in allowed):
            raise NotFoundError(f"no queue named {queue!r}")
        rows = [c for c in chat.waiting_conversations(session) if c.queue == queue]
        offered = set(
            session.scalars(
                select(OfferRow.conversation_id).where(
                    OfferRow.state == "offered",
                    OfferRow.conversation_id.in_([c.id for c in rows]),
                )
            )
        )
        texts = chat.last_message_previews(session, {c.id for c in rows}, inbound_only=True)
        items = []
        for position, row in enumerate(rows, start=1):
            base = conversation_item(row, now=now)
            items.append(
                WaitingItem(
                    **vars(base),
                    position=position,
                    waiting_seconds=_waited(row.waiting_since or row.opened_at, now),
                    offered=row.id in offered,
                    preview=assignment.preview(texts.get(row.id)),
                )
            )
        return items


def history(
    runtime: Runtime, principal: Principal, conversation_id: int, *, limit: int = 20
) -> list[HistoryItem]:
    """The same customer's other conversations (same service, app, channel and identity)
    that the caller may see, newest first."""
    limit = max(1, min(limit, MAX_PAGE))
    with transaction(runtime.sessions) as session:
        current = conversation_service.visible_conversation(session, principal, conversation_id)
        rows = session.scalars(
            select(ConversationRow)
            .where(
                ConversationRow.service == current.service,
                ConversationRow.app_id == current.app_id,
                ConversationRow.channel == current.channel,
                ConversationRow.identity == current.identity,
                ConversationRow.id != current.id,
            )
            .order_by(ConversationRow.opened_at.desc(), ConversationRow.id.desc())
            .limit(HISTORY_SCAN)
        ).all()
        visible = [r for r in rows if conversation_service.can_see(session, principal, r)][:limit]
        texts = chat.last_message_previews(session, {r.id for r in visible})
        return [
            HistoryItem(
                id=r.id,
                queue=r.queue,
                status=r.status,
                opened_at=as_utc(r.opened_at),
                closed_at=as_utc(r.closed_at) if r.closed_at else None,
                assigned_agent=r.assigned_agent,
                wrapup_code=r.wrapup_code,
                close_reason=r.close_reason,
                preview=assignment.preview(texts.get(r.id)),
            )
            for r in visible
        ]


def queue_events(runtime: Runtime, names: set[str] | None, now: datetime) -> list[LiveEvent]:
    """``queue.updated`` for these queues (all when None), for the router's periodic update."""
    with read_transaction(runtime.sessions) as session:
        return [_queue_event(s, now) for s in chat.queue_stats(session, names)]
