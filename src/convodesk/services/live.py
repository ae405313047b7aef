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

Several processes (issue 7): on PostgreSQL the bus is `services.live_pg.PgBus`, with the
same interface. Its `publish` delivers to the subscribers of this process at once, as
`LocalBus` does, and sends the events to the other processes with ``NOTIFY``
(`LiveEvent.to_dict`); a listener thread per `serve` process hands what it hears from
*other* processes to its `LocalBus` (its own notifications are skipped, so nothing is
delivered twice). When the listener loses the database and gets it back, every subscriber
of its process is told to resync (`LocalBus.resync`: the same end as an overflow), since
events may have been missed meanwhile. On SQLite (one process) the bus is a `LocalBus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import threading
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Sequence
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

    def to_dict(self) -> dict[str, Any]:
        """The whole event as JSON-ready data (what crosses to other processes)."""
        return {"type": self.type, "data": self.data, "queues": self.queues, "agents": self.agents}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LiveEvent:
        return cls(
            type=raw["type"],
            data=raw["data"],
            queues=tuple(raw["queues"]),
            agents=tuple(raw["agents"]),
        )

    @classmethod
    def from_json(cls, text: str) -> LiveEvent:
        return cls.from_dict(json.loads(text))


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

    @functools.cached_property
    def payload_json(self) -> str:
        """`LiveEvent.payload` as compact JSON: made once, however many streams send it."""
        return json.dumps(self.event.payload(), separators=(",", ":"))


class Subscription:
    """A subscriber's bounded queue. Fed from any thread; read with `get` (blocking) or
    `next` (asyncio), which return None on timeout and when the subscription has ended
    (`closed` or `overflowed`), or `next_all` (asyncio: everything waiting, [] instead of
    None)."""

    def __init__(self, bus: LocalBus, audience: Audience, maxsize: int) -> None:
        self._bus = bus
        self.audience = audience
        self._maxsize = maxsize
        self._items: deque[Delivery] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Set while an asyncio reader waits; whoever adds to the queue resolves it, once.
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.overflowed = False

    @property
    def ended(self) -> bool:
        return self.closed or self.overflowed

    def set_audience(self, audience: Audience) -> None:
        """Replace who this subscriber is (an agent's queues change while it listens)."""
        self.audience = audience
        self._bus.audiences_changed()

    def deliver(self, delivery: Delivery) -> None:
        self.deliver_all((delivery,))

    def deliver_all(self, deliveries: Sequence[Delivery]) -> None:
        """Queue those of `deliveries` this subscriber sees, in order, with one wake-up."""
        _wake_all([self._offer(deliveries)])

    def _offer(self, deliveries: Sequence[Delivery]) -> asyncio.Future[None] | None:
        """Queue what this subscriber sees; returns the waiting reader to wake, if any."""
        audience = self.audience
        return self._queue([d for d in deliveries if audience.sees(d.event)])

    def _queue(self, seen: Sequence[Delivery]) -> asyncio.Future[None] | None:
        """Queue `seen` (what this subscriber sees, in order); returns the reader to wake."""
        if not seen:
            return None
        with self._lock:
            if self.ended:
                return None
            if len(self._items) + len(seen) > self._maxsize:
                self.overflowed = True
                self._items.clear()
            else:
                self._items.extend(seen)
            return self._wake()

    def end(self) -> None:
        with self._lock:
            self.closed = True
            waiter = self._wake()
        _wake_all([waiter])

    def resync(self) -> None:
        """End as an overflow does: events may have been missed (the bus lost the other
        processes for a while), so the subscriber must reload what it shows."""
        with self._lock:
            if self.ended:
                return
            self.overflowed = True
            self._items.clear()
            waiter = self._wake()
        _wake_all([waiter])

    def _wake(self) -> asyncio.Future[None] | None:
        """Called with the lock held: wakes a blocked `get`, and returns the asyncio reader's
        waiter for the caller to resolve (`_wake_all`) after the lock is released."""
        self._cond.notify_all()
        waiter, self._waiter = self._waiter, None
        return waiter

    def get(self, timeout: float) -> Delivery | None:
        with self._cond:
            if not self._items and not self.ended:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items and not self.ended else None

    async def next(self, wait_seconds: float) -> Delivery | None:
        taken = await self._take(wait_seconds, everything=False)
        return taken[0] if taken else None

    async def next_all(self, wait_seconds: float) -> list[Delivery]:
        """Every delivery waiting now, once there is one; [] on timeout and at the end."""
        return await self._take(wait_seconds, everything=True)

    async def _take(self, wait_seconds: float, *, everything: bool) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            with self._lock:
                if self.ended:
                    return []
                if self._items:
                    if not everything:
                        return [self._items.popleft()]
                    taken = list(self._items)
                    self._items.clear()
                    return taken
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiter = waiter
            # A plain future and a timer: the cheapest wait asyncio has (no task per wait).
            timer = loop.call_later(remaining, _resolve, (waiter,))
            try:
                await waiter
            finally:
                timer.cancel()

    def close(self) -> None:
        """Unsubscribe (the stream ended)."""
        self._bus.unsubscribe(self)
        self.end()


class LiveBus(Protocol):
    """What publishers and the stream need; `LocalBus` is the in-process implementation,
    `services.live_pg.PgBus` the one for several processes on PostgreSQL."""

    @property
    def wants_events(self) -> bool:
        """False when nobody could hear an event: publishers may skip building them."""
        ...

    def hears(self, queues: Collection[str], agents: Collection[str]) -> bool:
        """Whether an event for these queues and agents has anyone to hear it (an admin
        hears everything): publishers skip building those that have not. May say yes
        when unsure, never no when someone listens."""
        ...

    def publish(self, events: Iterable[LiveEvent]) -> None: ...

    def subscribe(self, audience: Audience, *, maxsize: int = DEFAULT_MAXSIZE) -> Subscription: ...

    def start_listening(self) -> None:
        """Begin hearing the events of other processes (a `serve` process does, in its
        app's lifespan; it may wait a few seconds for the database); nothing to do for
        `LocalBus`. Calls nest with `stop_listening`."""
        ...

    def stop_listening(self) -> None: ...

    def close(self) -> None:
        """End every subscription of this process and stop listening (it is stopping)."""
        ...


@dataclass
class LocalBus:
    """Fan-out to the subscribers of this process."""

    _subscribers: set[Subscription] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Who listens, summed up for `hears` (admins?, agents, queues); None: work it out again.
    _listeners: tuple[bool, frozenset[str], frozenset[str]] | None = None

    @property
    def wants_events(self) -> bool:
        return bool(self._subscribers)

    def hears(self, queues: Collection[str], agents: Collection[str]) -> bool:
        listeners = self._listeners
        if listeners is None:
            with self._lock:
                audiences = [s.audience for s in self._subscribers]
                listeners = self._listeners = (
                    any(a.admin for a in audiences),
                    frozenset(a.agent for a in audiences if a.agent is not None),
                    frozenset(q for a in audiences for q in a.queues),
                )
        admins, listening_agents, listening_queues = listeners
        return (
            admins
            or any(agent in listening_agents for agent in agents)
            or any(queue in listening_queues for queue in queues)
        )

    def audiences_changed(self) -> None:
        with self._lock:
            self._listeners = None

    def publish(self, events: Iterable[LiveEvent]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
            deliveries = [Delivery(next(self._ids), event) for event in events]
        _wake_all(subscriber._queue(seen) for subscriber, seen in _fan_out(subscribers, deliveries))

    def subscribe(self, audience: Audience, *, maxsize: int = DEFAULT_MAXSIZE) -> Subscription:
        subscription = Subscription(self, audience, maxsize)
        with self._lock:
            self._subscribers.add(subscription)
            self._listeners = None
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)
            self._listeners = None

    def resync(self) -> None:
        """Tell every subscriber to reload (`Subscription.resync`); they leave the bus as
        their streams end."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.resync()

    def start_listening(self) -> None:
        """In-process only: nothing to hear from elsewhere."""

    def stop_listening(self) -> None:
        """In-process only: nothing to stop."""

    def close(self) -> None:
        """End every subscription (the process is stopping): the streams finish."""
        with self._lock:
            subscribers = list(self._subscribers)
            self._subscribers.clear()
            self._listeners = None
        for subscriber in subscribers:
            subscriber.end()


def _fan_out(
    subscribers: list[Subscription], deliveries: list[Delivery]
) -> Iterator[tuple[Subscription, Sequence[Delivery]]]:
    """Each subscriber with what it sees (`Audience.sees`), in order. The queue part is
    worked out once per set of queues, not once per subscriber: the agents of a queue share
    it, and a busy queue's events times its agents would otherwise be checked one by one."""
    by_queues: dict[frozenset[str], list[Delivery]] = {}
    naming: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        for agent in delivery.event.agents:
            naming.setdefault(agent, []).append(delivery)
    for subscriber in subscribers:
        audience = subscriber.audience
        if audience.admin:
            yield subscriber, deliveries
            continue
        queued = by_queues.get(audience.queues)
        if queued is None:
            queues = audience.queues
            queued = [d for d in deliveries if not queues.isdisjoint(d.event.queues)]
            by_queues[queues] = queued
        named = naming.get(audience.agent) if audience.agent is not None else None
        if named:
            merged = {d.id: d for d in (*queued, *named)}
            yield subscriber, [merged[i] for i in sorted(merged)]
        else:
            yield subscriber, queued


def _wake_all(waiters: Iterable[asyncio.Future[None] | None]) -> None:
    """Resolve the waiting readers' futures from any thread: one `call_soon_threadsafe`
    per event loop (each one is a write to the loop's self-pipe), not one per reader."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiter in waiters:
        if waiter is not None:
            by_loop.setdefault(waiter.get_loop(), []).append(waiter)
    for loop, found in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
            loop.call_soon_threadsafe(_resolve, found)


def _resolve(waiters: Iterable[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
