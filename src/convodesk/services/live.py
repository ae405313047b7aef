"""Live events for the agent desktops (`GET /api/v1/stream`): an in-process event bus.

Publishers (the Chain Matcher's processor, the sender, routing, the agents' actions) call
`publish` after their transaction has committed, so a desktop never hears of a change it
cannot read yet. Each subscriber (one per open stream) has a bounded queue of its own and
sees only the events of its `Audience`:

- an admin sees every event;
- an agent sees the events of its queues (`LiveEvent.queues`) and those naming it
  (`LiveEvent.agents`: its offers, its conversations, its presence).

A subscriber that falls `maxsize` events behind is cut off (`Subscription.overflowed`):
the stream tells the desktop so and ends, and the desktop reloads what it shows and
subscribes again. Dropping events silently instead would leave a desktop wrong without
knowing it.

Events are plain JSON-ready data on purpose: issue 7 (several nodes on PostgreSQL) adds a bus
with the same interface whose `publish` sends ``NOTIFY`` with `LiveEvent.to_json` and whose
listener hands what it hears to a `LocalBus` on every node (`LiveEvent.from_json`,
`LocalBus.publish`). Until then, events reach the streams of the process that published
them: `serve` runs the web app and the workers in one process, so its desktops hear
everything; a separate `convodesk worker` process publishes to nobody.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_MAXSIZE = 1000


@dataclass(frozen=True, kw_only=True)
class LiveEvent:
    """One event: `type` (``message.created``, ...) and its JSON-ready `data` (without the
    type), with who may see it."""

    type: str
    data: dict[str, Any]
    queues: tuple[str, ...] = ()  # the agents of these queues see it
    agents: tuple[str, ...] = ()  # these agents see it, whatever their queues

    def payload(self) -> dict[str, Any]:
        """What the stream sends as ``data:``: the data with its type."""
        return {"type": self.type, **self.data}

    def to_json(self) -> str:
        return json.dumps(
            {"type": self.type, "data": self.data, "queues": self.queues, "agents": self.agents},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> LiveEvent:
        raw = json.loads(text)
        return cls(
            type=raw["type"],
            data=raw["data"],
            queues=tuple(raw["queues"]),
            agents=tuple(raw["agents"]),
        )


@dataclass(frozen=True, kw_only=True)
class Audience:
    """Who a subscriber is: an admin, or an agent with its queues."""

    admin: bool
    agent: str | None = None
    queues: frozenset[str] = frozenset()

    def sees(self, event: LiveEvent) -> bool:
        if self.admin:
            return True
        if self.agent is not None and self.agent in event.agents:
            return True
        return not self.queues.isdisjoint(event.queues)


@dataclass(frozen=True)
class Delivery:
    id: int  # increasing per bus: the stream's ``id:``
    event: LiveEvent


class Subscription:
    """A subscriber's bounded queue. Fed from any thread; read with `get` (blocking) or
    `next` (asyncio). Both return None on timeout and when the subscription has ended
    (`closed` or `overflowed`)."""

    def __init__(self, bus: LocalBus, audience: Audience, maxsize: int) -> None:
        self._bus = bus
        self.audience = audience
        self._maxsize = maxsize
        self._items: deque[Delivery] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.overflowed = False

    @property
    def ended(self) -> bool:
        return self.closed or self.overflowed

    def set_audience(self, audience: Audience) -> None:
        """Replace who this subscriber is (an agent's queues change while it listens)."""
        self.audience = audience

    def deliver(self, delivery: Delivery) -> None:
        if not self.audience.sees(delivery.event):
            return
        with self._lock:
            if self.ended:
                return
            if len(self._items) >= self._maxsize:
                self.overflowed = True
                self._items.clear()
            else:
                self._items.append(delivery)
            self._wake()

    def end(self) -> None:
        with self._lock:
            self.closed = True
            self._wake()

    def _wake(self) -> None:
        """Called with the lock held."""
        self._cond.notify_all()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._ready.set)

    def get(self, timeout: float) -> Delivery | None:
        with self._cond:
            if not self._items and not self.ended:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items and not self.ended else None

    async def next(self, wait_seconds: float) -> Delivery | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            with self._lock:
                if self._items and not self.ended:
                    return self._items.popleft()
                if self.ended:
                    return None
                self._loop = loop
                self._ready.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except TimeoutError:
                return None

    def close(self) -> None:
        """Unsubscribe (the stream ended)."""
        self._bus.unsubscribe(self)
        self.end()


class LiveBus(Protocol):
    """What publishers and the stream need; `LocalBus` is the in-process implementation."""

    @property
    def wants_events(self) -> bool:
        """False when nobody could hear an event: publishers may skip building them."""
        ...

    def publish(self, events: Iterable[LiveEvent]) -> None: ...

    def subscribe(self, audience: Audience, *, maxsize: int = DEFAULT_MAXSIZE) -> Subscription: ...

    def close(self) -> None:
        """End every subscription of this process (it is stopping)."""
        ...


@dataclass
class LocalBus:
    """Fan-out to the subscribers of this process."""

    _subscribers: set[Subscription] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def wants_events(self) -> bool:
        return bool(self._subscribers)

    def publish(self, events: Iterable[LiveEvent]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
            deliveries = [Delivery(next(self._ids), event) for event in events]
        for delivery in deliveries:
            for subscriber in subscribers:
                subscriber.deliver(delivery)

    def subscribe(self, audience: Audience, *, maxsize: int = DEFAULT_MAXSIZE) -> Subscription:
        subscription = Subscription(self, audience, maxsize)
        with self._lock:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every subscription (the process is stopping): the streams finish."""
        with self._lock:
            subscribers = list(self._subscribers)
            self._subscribers.clear()
        for subscriber in subscribers:
            subscriber.end()
