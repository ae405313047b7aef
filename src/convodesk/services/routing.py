"""The routing pass of the Chat Server: one transaction that brings every queue up to date.

The router worker (`workers/router.py`) runs it when woken (a new conversation, an agent
ready, an offer answered, a chat ended) and once a second for the timers. Steps, in order:

1. On PostgreSQL, take the routing lock (`pg_try_advisory_xact_lock`); if another node holds
   it, that node is routing: skip. Then lock every presence row (the lock order of
   `storage/chat.py`), so agents' actions wait for the pass rather than race it. The
   conversations the pass may change are read ``FOR UPDATE SKIP LOCKED``: one that the
   processor or an action holds at that moment waits for the next pass.
2. Expire offers past their time: the agent's missed-offer count goes up, and at
   ``missed_offers_before_not_ready`` in a row the agent is set not ready (its other offers
   withdrawn). The conversation goes to the next agent.
3. Withdraw offers that no longer make sense: the conversation is not waiting any more
   (picked, ended, closed), or the agent is not ready. An active conversation whose agent
   was removed from the configuration waits again.
4. Admit conversations that entered a queue (new, or reopened): a new one beyond the queue's
   size limit gets the ``queue_full`` prompt and is closed (reason ``queue_full``); otherwise
   it gets ``welcome``, or ``outside_business_hours`` (once per conversation) when the queue
   is closed. Admitted conversations wait and are routed in any case.
5. Inactivity: an active conversation where the customer has been silent since the agent's
   last message gets ``idle_warning`` after ``idle_warning_seconds`` and is closed (reason
   ``inactivity``, prompt ``closed``) after ``inactivity_close_seconds``.
6. Offer waiting conversations without an outstanding offer, by queue priority (higher
   first), then by ``waiting_since`` (oldest first): a reopened conversation to its last
   agent if that agent is ready with room, otherwise (and for all others) to the member of
   the queue with room who is least loaded, then idle longest (`domain.routing`). An agent
   who let this conversation's offer expire or rejected it is skipped for one offer timeout.
7. Queue-position prompts (`domain.routing.position_prompt_due`).

The pass returns the live events to publish after its commit.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from convodesk.domain import business_hours, routing
from convodesk.domain.config_model import ChatSettings, Queue
from convodesk.services import assignment, chat_events
from convodesk.services.assignment import Changes
from convodesk.services.directory import Directory
from convodesk.services.event_log import as_utc
from convodesk.services.live import LiveEvent
from convodesk.storage import chat
from convodesk.storage.chat import AgentInfo
from convodesk.storage.tables import AgentPresenceRow, ConversationRow, OfferRow


@dataclass
class PassReport:
    skipped: bool = False  # another node holds the routing lock
    events: list[LiveEvent] = field(default_factory=list)
    offers: int = 0
    expired: int = 0
    prompts: int = 0
    closed: int = 0


def run_pass(
    session: Session, directory: Directory, now: datetime, *, events: bool = True
) -> PassReport:
    """`events`: build the live events (False when nobody listens: saves the work)."""
    if not chat.try_routing_lock(session):
        return PassReport(skipped=True)
    pass_ = _Pass(session, directory, now)
    pass_.run(events=events)
    return pass_.report


class _Pass:
    def __init__(self, session: Session, directory: Directory, now: datetime) -> None:
        self.session = session
        self.directory = directory
        self.settings: ChatSettings = directory.chat_settings
        self.now = now
        self.changes = Changes()
        self.report = PassReport()
        self.presence: dict[int, AgentPresenceRow] = {}
        self.agents: dict[str, AgentInfo] = {}
        self.logins: dict[int, str] = {}

    def run(self, *, events: bool) -> None:
        self.presence = chat.lock_all_presence(self.session)
        self.agents = chat.agents(self.session)
        self.logins = {a.id: a.login for a in self.agents.values()}
        self.expire_offers()
        self.withdraw_stale_offers()
        self.requeue_orphans()
        self.admit()
        self.inactivity()
        self.route()
        self.position_prompts()
        self.report.prompts = len(self.changes.prompts)
        if events:
            self.report.events = self.changes.build_events(self.session, self.now)

    # ------------------------------------------------------------------ helpers

    def queue(self, name: str) -> Queue | None:
        return self.directory.queue(name)

    def presence_of(self, login: str | None) -> AgentPresenceRow | None:
        agent = self.agents.get(login) if login else None
        return self.presence.get(agent.id) if agent else None

    def set_not_ready(self, presence: AgentPresenceRow, login: str) -> None:
        presence.state = "not_ready"
        presence.since = self.now
        self.changes.events.append(chat_events.presence_updated(login, "not_ready", self.now))
        agent = self.agents.get(login)
        for offer in chat.outstanding_offers(self.session, agent_id=presence.agent_id):
            assignment.close_offer(self.changes, offer, "withdrawn", login, self.now)
            self.changes.queues.update(agent.queues if agent else ())

    # ------------------------------------------------------------------ 2. expiry

    def expire_offers(self) -> None:
        due = self.session.scalars(
            select(OfferRow)
            .where(OfferRow.state == "offered", OfferRow.expires_at <= self.now)
            .order_by(OfferRow.id)
        ).all()
        limit = self.settings.missed_offers_before_not_ready
        for offer in due:
            if offer.state != "offered":  # withdrawn just now with its agent's other offers
                continue
            login = self.logins.get(offer.agent_id, "")
            assignment.close_offer(self.changes, offer, "expired", login, self.now)
            self.report.expired += 1
            queue = self.session.scalar(
                select(ConversationRow.queue).where(ConversationRow.id == offer.conversation_id)
            )
            if queue is not None:
                self.changes.queues.add(queue)
            presence = self.presence.get(offer.agent_id)
            if presence is None:
                continue
            presence.missed_offers += 1
            if presence.state == "ready" and presence.missed_offers >= limit:
                self.set_not_ready(presence, login)

    # ------------------------------------------------------------------ 3. stale offers

    def withdraw_stale_offers(self) -> None:
        rows = self.session.execute(
            select(OfferRow, ConversationRow.status)
            .join(ConversationRow, ConversationRow.id == OfferRow.conversation_id)
            .where(OfferRow.state == "offered")
            .order_by(OfferRow.id)
        ).all()
        for offer, status in rows:
            presence = self.presence.get(offer.agent_id)
            ready = presence is not None and presence.state == "ready"
            if status != "waiting" or not ready:
                login = self.logins.get(offer.agent_id, "")
                assignment.close_offer(self.changes, offer, "withdrawn", login, self.now)

    def requeue_orphans(self) -> None:
        """Active conversations of agents removed from the configuration wait again."""
        stmt = select(ConversationRow).where(ConversationRow.status == "active")
        if self.agents:
            stmt = stmt.where(ConversationRow.assigned_agent.not_in(sorted(self.agents)))
        stmt = chat.skip_locked(stmt.order_by(ConversationRow.id))
        for conversation in self.session.scalars(stmt).all():
            gone = conversation.assigned_agent
            conversation.status = "waiting"
            conversation.assigned_agent = None
            conversation.assigned_at = None
            assignment.log(
                self.session,
                conversation,
                "requeued",
                self.now,
                agent=gone,
                actor="system",
                detail="the agent was removed",
            )
            self.changes.touch(conversation)

    # ------------------------------------------------------------------ 4. admission

    def admit(self) -> None:
        entering = self.session.scalars(
            chat.skip_locked(
                select(ConversationRow)
                .where(ConversationRow.status == "waiting", ConversationRow.admitted_at.is_(None))
                .order_by(ConversationRow.id)
            )
        ).all()
        if not entering:
            return
        waiting: dict[str, int] = dict(
            self.session.execute(
                select(ConversationRow.queue, func.count())
                .where(
                    ConversationRow.status == "waiting", ConversationRow.admitted_at.is_not(None)
                )
                .group_by(ConversationRow.queue)
            ).all()
        )
        for conversation in entering:
            self.admit_one(conversation, waiting)

    def admit_one(self, conversation: ConversationRow, waiting: dict[str, int]) -> None:
        queue = self.queue(conversation.queue)
        conversation.admitted_at = self.now
        if conversation.waiting_since is None:
            conversation.waiting_since = self.now
        self.changes.touch(conversation)
        served_before = conversation.preferred_agent is not None
        if queue is None:  # the queue was removed: it waits for an admin's transfer
            return
        limit = queue.max_size if queue.max_size is not None else self.settings.queue_max_size
        if not served_before and waiting.get(queue.name, 0) >= limit:
            assignment.send_prompt(
                self.session, self.changes, conversation, "queue_full", self.settings, self.now
            )
            assignment.close_conversation(
                self.session,
                self.changes,
                conversation,
                reason="queue_full",
                ended_by="system",
                settings=self.settings,
                now=self.now,
                logins=self.logins,
            )
            self.report.closed += 1
            return
        waiting[queue.name] = waiting.get(queue.name, 0) + 1
        assignment.log(
            self.session,
            conversation,
            "queued",
            self.now,
            actor="system",
            detail="reopened" if conversation.reopen_count else "new",
        )
        prompts = self.settings.prompts
        is_open = business_hours.is_open(queue.business_hours, self.now)
        if not is_open and conversation.outside_hours_prompted_at is None:
            if prompts.outside_business_hours is not None:
                conversation.outside_hours_prompted_at = self.now
                assignment.send_prompt(
                    self.session,
                    self.changes,
                    conversation,
                    "outside_business_hours",
                    self.settings,
                    self.now,
                )
                return
        if not served_before:
            assignment.send_prompt(
                self.session, self.changes, conversation, "welcome", self.settings, self.now
            )

    # ------------------------------------------------------------------ 5. inactivity

    def inactivity(self) -> None:
        settings = self.settings
        earliest = min(settings.idle_warning_seconds, settings.inactivity_close_seconds)
        rows = self.session.scalars(
            chat.skip_locked(
                select(ConversationRow)
                .where(
                    ConversationRow.status == "active",
                    ConversationRow.last_activity_at <= self.now - timedelta(seconds=earliest),
                    or_(
                        ConversationRow.last_inbound_at.is_(None),
                        ConversationRow.last_activity_at > ConversationRow.last_inbound_at,
                    ),
                )
                .order_by(ConversationRow.id)
            )
        ).all()
        for conversation in rows:
            step = routing.inactivity_step(
                last_inbound_at=_aware(conversation.last_inbound_at),
                last_activity_at=as_utc(conversation.last_activity_at),
                idle_warned_at=_aware(conversation.idle_warned_at),
                now=self.now,
                warning_seconds=settings.idle_warning_seconds,
                close_seconds=settings.inactivity_close_seconds,
            )
            if step == "warn":
                conversation.idle_warned_at = self.now
                assignment.send_prompt(
                    self.session, self.changes, conversation, "idle_warning", settings, self.now
                )
                assignment.log(self.session, conversation, "idle_warning", self.now, actor="system")
                self.changes.touch(conversation)
            elif step == "close":
                assignment.close_conversation(
                    self.session,
                    self.changes,
                    conversation,
                    reason="inactivity",
                    ended_by="system",
                    settings=settings,
                    now=self.now,
                    presence=self.presence_of(conversation.assigned_agent),
                    logins=self.logins,
                )
                self.report.closed += 1

    # ------------------------------------------------------------------ 6. offers

    def candidates(self) -> dict[str, routing.Candidate]:
        ready = {
            self.logins[p.agent_id]: p
            for p in self.presence.values()
            if p.state == "ready" and p.agent_id in self.logins
        }
        if not ready:
            return {}
        active = chat.active_counts(self.session, ready)
        offered = chat.offered_counts(self.session, [p.agent_id for p in ready.values()])
        found = {}
        for login, presence in ready.items():
            agent = self.agents[login]
            found[login] = routing.Candidate(
                login=login,
                agent_id=agent.id,
                queues=frozenset(agent.queues),
                capacity=agent.max_chats or self.settings.max_concurrent_chats,
                load=active.get(login, 0) + offered.get(agent.id, 0),
                idle_since=as_utc(presence.idle_since),
            )
        return found

    def route(self) -> None:
        candidates = self.candidates()
        free = [c for c in candidates.values() if c.free]
        if not free:  # nobody could take an offer: the queues stay as they are
            return
        offered = set(
            self.session.scalars(
                select(OfferRow.conversation_id).where(OfferRow.state == "offered")
            )
        )
        # Only what a free agent could get: its queues' conversations, and those whose last
        # agent (`preferred_agent`) it is. With every member of a queue busy, its waiting
        # conversations (thousands, in a busy hour) are not read, let alone locked.
        reachable = chat.waiting_conversations(
            self.session,
            lock=True,
            queues={queue for agent in free for queue in agent.queues},
            preferred={agent.login for agent in free},
        )
        waiting = [c for c in reachable if c.id not in offered]
        declined = self._declined_by_login()

        def order(c: ConversationRow) -> tuple[int, datetime, int]:
            queue = self.queue(c.queue)
            since = as_utc(c.waiting_since) if c.waiting_since else as_utc(c.opened_at)
            return (-(queue.priority if queue else 0), since, c.id)

        for conversation in sorted(waiting, key=order):
            queue = self.queue(conversation.queue)
            if queue is None:
                continue
            timeout = assignment.offer_timeout(queue, self.settings)
            excluded = {
                login
                for login, closed_at in declined.get(conversation.id, [])
                if closed_at > self.now - timedelta(seconds=timeout)
            }
            chosen, kind = self._preferred(conversation, candidates, excluded), "preferred"
            if chosen is None:
                chosen = routing.choose_agent(
                    candidates.values(), conversation.queue, excluded=excluded
                )
                kind = "route"
            if chosen is None:
                continue
            offer = assignment.make_offer(
                self.session,
                self.changes,
                conversation,
                chosen.agent_id,
                chosen.login,
                kind=kind,
                timeout_seconds=timeout,
                now=self.now,
            )
            if offer is None:
                continue
            self.report.offers += 1
            candidates[chosen.login] = dataclasses.replace(chosen, load=chosen.load + 1)
            if not any(c.free for c in candidates.values()):
                return

    def _declined_by_login(self) -> dict[int, list[tuple[str, datetime]]]:
        """Conversation -> (agent, when) of the offers let go (rejected, expired) within the
        longest offer timeout; `route` narrows it to the conversation's queue's timeout."""
        longest = max(
            [self.settings.offer_timeout_seconds]
            + [q.offer_timeout_seconds or 0 for q in self.directory.config.queues]
        )
        rows = self.session.execute(
            select(OfferRow.conversation_id, OfferRow.agent_id, OfferRow.closed_at).where(
                OfferRow.state.in_(("rejected", "expired")),
                OfferRow.closed_at > self.now - timedelta(seconds=longest),
            )
        ).all()
        found: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
        for conversation_id, agent_id, closed_at in rows:
            login = self.logins.get(agent_id)
            if login is not None and closed_at is not None:
                found[conversation_id].append((login, as_utc(closed_at)))
        return found

    def _preferred(
        self,
        conversation: ConversationRow,
        candidates: dict[str, routing.Candidate],
        excluded: set[str],
    ) -> routing.Candidate | None:
        """A reopened conversation's last agent, if ready with room; otherwise the
        preference is dropped and the conversation is routed like any other."""
        login = conversation.preferred_agent
        if login is None:
            return None
        candidate = candidates.get(login)
        if candidate is not None and candidate.free and login not in excluded:
            return candidate
        conversation.preferred_agent = None
        return None

    # ------------------------------------------------------------------ 7. position

    def position_prompts(self) -> None:
        if self.settings.prompts.queue_position is None:
            return
        by_queue: dict[str, list[ConversationRow]] = defaultdict(list)
        for conversation in chat.waiting_conversations(self.session, lock=True):
            if conversation.admitted_at is not None:
                by_queue[conversation.queue].append(conversation)
        for conversations in by_queue.values():
            for index, conversation in enumerate(conversations):
                since = conversation.waiting_since or conversation.opened_at
                last_at = _aware(conversation.position_prompted_at)
                due = routing.position_prompt_due(
                    waited_seconds=(self.now - as_utc(since)).total_seconds(),
                    position=index + 1,
                    last_position=conversation.position_prompted,
                    seconds_since_last=(self.now - last_at).total_seconds() if last_at else None,
                )
                if not due:
                    continue
                conversation.position_prompted = index + 1
                conversation.position_prompted_at = self.now
                assignment.send_prompt(
                    self.session,
                    self.changes,
                    conversation,
                    "queue_position",
                    self.settings,
                    self.now,
                    position=index + 1,
                )


def _aware(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None
