"""The Chat Server's rules, without I/O: which agent gets an offer, when a customer hears
their place in the queue, when a silent customer is warned and when their chat is closed.

docs/reference/routing.md explains each rule and why it is so.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

# The queue-position prompt: first after a conversation has waited this long (a chat that
# an agent takes at once needs no position), then again only when the position got better
# and at least POSITION_REPEAT_SECONDS after the last one.
POSITION_FIRST_AFTER_SECONDS = 60.0
POSITION_REPEAT_SECONDS = 120.0


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A ready agent as routing sees it."""

    login: str
    agent_id: int
    queues: frozenset[str]
    capacity: int  # the agent's max_chats, else chat_settings.max_concurrent_chats
    load: int  # active conversations plus outstanding offers
    idle_since: datetime

    @property
    def free(self) -> bool:
        return self.load < self.capacity


def choose_agent(
    candidates: Iterable[Candidate], queue: str, *, excluded: Collection[str] = ()
) -> Candidate | None:
    """The agent to offer a conversation of `queue` to: a member of the queue with free
    capacity, not `excluded` (those who just let this conversation go); the least loaded
    first, then the one idle longest, then by login so the choice is repeatable."""
    eligible = [c for c in candidates if queue in c.queues and c.free and c.login not in excluded]
    if not eligible:
        return None
    return min(eligible, key=lambda c: (c.load, c.idle_since, c.login))


def position_prompt_due(
    *,
    waited_seconds: float,
    position: int,
    last_position: int | None,
    seconds_since_last: float | None,
) -> bool:
    if waited_seconds < POSITION_FIRST_AFTER_SECONDS:
        return False
    if last_position is None or seconds_since_last is None:
        return True
    return position < last_position and seconds_since_last >= POSITION_REPEAT_SECONDS


InactivityStep = Literal["warn", "close"]


def inactivity_step(
    *,
    last_inbound_at: datetime | None,
    last_activity_at: datetime,
    idle_warned_at: datetime | None,
    now: datetime,
    warning_seconds: float,
    close_seconds: float,
) -> InactivityStep | None:
    """What to do about an active conversation's silence.

    The clock runs only while it is the customer's turn: the agent wrote after the
    customer's last message (`last_activity_at` is the agent's last message then). While the
    customer waits for the agent, nothing happens: closing a chat because the agent is slow
    would punish the customer. Prompts do not move `last_activity_at`, so the warning does
    not restart the clock; a new agent message does (and may earn a new warning).
    """
    customers_turn = last_inbound_at is None or last_activity_at > last_inbound_at
    if not customers_turn:
        return None
    silent = (now - last_activity_at).total_seconds()
    if silent >= close_seconds:
        return "close"
    warned = idle_warned_at is not None and idle_warned_at >= last_activity_at
    if silent >= warning_seconds and not warned:
        return "warn"
    return None
