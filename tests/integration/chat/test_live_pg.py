"""Live events across processes on PostgreSQL (`services/live_pg.py`): two runtimes on one
database stand for two nodes. What one publishes reaches the other's subscribers (once, to
their audience), events of any size arrive whole, and a listener that loses its connection
comes back and tells its subscribers to reload."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from convodesk.runtime import Runtime
from convodesk.services.live import Audience, LiveEvent, LocalBus, Subscription
from convodesk.services.live_pg import (
    APPLICATION_NAME,
    CHANNEL,
    Assembler,
    MalformedNotificationError,
    PgBus,
    encode,
)
from convodesk.web.app import create_app
from convodesk.web.serving import serve_in_thread
from tests.support.apps import make_runtime, make_token
from tests.support.intake import configured_runtime, intake_config

MESSAGE = LiveEvent(type="message.created", data={"conversation_id": 1}, queues=("support",))
OFFER = LiveEvent(type="offer.created", data={"offer": {"id": 7}}, agents=("carl",))
ANNA = Audience(admin=False, agent="anna", queues=frozenset({"support"}))


@pytest.fixture
def nodes(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Runtime, Runtime]]:
    """Node A listens (as a `serve` process does); node B only publishes (as a worker)."""
    a = make_runtime(postgres_url, tmp_path / "a")
    b = make_runtime(postgres_url, tmp_path / "b")
    try:
        a.live.start_listening()
        yield a, b
    finally:
        a.close()
        b.close()


def bus_of(runtime: Runtime) -> PgBus:
    assert isinstance(runtime.live, PgBus)
    return runtime.live


def received(subscription: Subscription, count: int, timeout: float = 5.0) -> list[LiveEvent]:
    found = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"got {len(found)} of {count} events: {found}"
        delivery = subscription.get(remaining)
        if delivery is not None:
            found.append(delivery.event)
    return found


def wait_until(condition: Callable[[], Any], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.01)


def test_the_runtime_picks_the_bus_of_its_database(database_url: str, tmp_path: Path) -> None:
    runtime = make_runtime(database_url, tmp_path)
    try:
        expected = LocalBus if database_url.startswith("sqlite") else PgBus
        assert isinstance(runtime.live, expected)
        assert not runtime.live.wants_events  # nobody listens, here or anywhere
    finally:
        runtime.close()


@pytest.mark.postgres
def test_events_are_wanted_while_any_node_listens(postgres_url: str, tmp_path: Path) -> None:
    a = make_runtime(postgres_url, tmp_path / "a")
    worker = make_runtime(postgres_url, tmp_path / "worker")
    try:
        assert not worker.live.wants_events  # no serve node: the workers skip building events
        a.live.start_listening()
        wait_until(lambda: worker.live.wants_events, 2, "the worker did not see the listener")
        a.live.stop_listening()
        assert worker.live.wants_events  # believed for a while; it costs only some work
        subscription = a.live.subscribe(ANNA)
        assert a.live.wants_events  # its own subscriber
        subscription.close()
    finally:
        a.close()
        worker.close()


@pytest.mark.postgres
def test_an_event_published_on_one_node_reaches_the_other(nodes: tuple[Runtime, Runtime]) -> None:
    a, b = nodes
    anna, admin_a = a.live.subscribe(ANNA), a.live.subscribe(Audience(admin=True))
    admin_b = b.live.subscribe(Audience(admin=True))
    b.live.publish([MESSAGE, OFFER])
    assert received(admin_a, 2) == [MESSAGE, OFFER]
    assert received(anna, 1) == [MESSAGE]  # the offer is carl's
    # On the publishing node, delivered at once (before the call returned), once each.
    assert [d.event for d in (admin_b.get(0), admin_b.get(0))] == [MESSAGE, OFFER]
    assert admin_b.get(0.2) is None
    assert anna.get(0.2) is None


@pytest.mark.postgres
def test_a_listening_node_does_not_hear_its_own_events_twice(
    nodes: tuple[Runtime, Runtime],
) -> None:
    a, b = nodes
    admin_a = a.live.subscribe(Audience(admin=True))
    a.live.publish([MESSAGE])  # delivered locally at once; its notification is skipped
    marker = LiveEvent(type="marker", data={})
    b.live.publish([marker])  # committed after A's notification: heard after it
    assert received(admin_a, 2) == [MESSAGE, marker]
    assert admin_a.get(0.2) is None


@pytest.mark.postgres
def test_events_of_any_size_arrive_whole_and_in_order(nodes: tuple[Runtime, Runtime]) -> None:
    a, b = nodes
    admin_a = a.live.subscribe(Audience(admin=True))
    # Far past the 8000-byte payload limit, with characters JSON escapes (6-12 bytes each).
    big_text = "".join(random.choice('aé€😀\n"\\') for _ in range(30_000))
    big = LiveEvent(type="message.created", data={"text": big_text}, queues=("support",))
    many = [LiveEvent(type="typing", data={"n": n}, queues=("support",)) for n in range(300)]
    b.live.publish([MESSAGE, big, OFFER])
    b.live.publish(many)
    assert len(encode([big], "x", 1, limit=7900)) > 10  # it did go in many parts
    assert received(admin_a, 303) == [MESSAGE, big, OFFER, *many]


@pytest.mark.postgres
def test_a_killed_listener_reconnects_and_its_subscribers_reload(
    nodes: tuple[Runtime, Runtime], postgres_url: str
) -> None:
    a, b = nodes
    listener = bus_of(a).listener
    assert listener is not None
    assert listener.listening.is_set()
    anna = a.live.subscribe(ANNA)
    terminate(postgres_url, listener.backend_pid)
    # Reconnected within moments; the subscriber that may have missed events is told.
    wait_until(lambda: listener.connections == 2, 5, "the listener did not reconnect")
    wait_until(lambda: anna.overflowed, 5, "the subscriber was not told to reload")
    assert anna.get(0) is None  # its stream ends (as on overflow) and the desktop reloads
    # The desktop subscribes again and hears the other node as before.
    again = a.live.subscribe(ANNA)
    b.live.publish([MESSAGE])
    assert received(again, 1) == [MESSAGE]


@pytest.mark.postgres
def test_a_desktop_stream_ends_with_overflow_when_its_node_lost_the_others(
    postgres_url: str, tmp_path: Path
) -> None:
    """Through the served app: an agent's SSE stream hears node B, and when node A's
    listener loses its connection, the stream says ``stream.overflow`` and ends (the
    desktop reconnects and reloads)."""
    raw = {
        **intake_config(),
        "agents": [{"login": "anna", "display_name": "Anna", "queues": ["whatsapp"]}],
    }
    a = configured_runtime(postgres_url, tmp_path / "a", raw)
    b = make_runtime(postgres_url, tmp_path / "b")
    try:
        token = make_token(a, "agent", "anna")
        app = create_app(a)
        app.state.stream_heartbeat_seconds = 0.2
        with (
            serve_in_thread(app, name="node-a") as url,
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client,
            client.stream("GET", "/api/v1/stream", timeout=5) as response,
        ):
            lines = response.iter_lines()
            assert next(lines).startswith("retry:")
            b.live.publish([LiveEvent(type="typing", data={"n": 1}, queues=("whatsapp",))])
            data = next(line for line in lines if line.startswith("data:"))
            assert data == 'data: {"type":"typing","n":1}'
            listener = bus_of(a).listener
            assert listener is not None
            terminate(postgres_url, listener.backend_pid)
            rest = [line for line in lines if line.startswith("data:")]  # until it ends
            assert rest == ['data: {"type":"stream.overflow"}']
    finally:
        a.close()
        b.close()


def terminate(postgres_url: str, pid: int | None) -> None:
    admin = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with admin.begin() as conn:
            killed = conn.scalar(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = :name AND pid = :pid"
                ),
                {"name": APPLICATION_NAME, "pid": pid},
            )
        assert killed
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_an_unreadable_notification_makes_subscribers_reload(
    nodes: tuple[Runtime, Runtime],
) -> None:
    a, b = nodes
    anna = a.live.subscribe(ANNA)
    with b.engine.begin() as conn:
        conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": "2 from the future"})
    wait_until(lambda: anna.overflowed, 5, "the subscriber was not told to reload")


@pytest.mark.postgres
def test_listening_nests_and_stops_at_once(postgres_url: str, tmp_path: Path) -> None:
    runtime = make_runtime(postgres_url, tmp_path)
    try:
        bus = bus_of(runtime)
        bus.start_listening()
        bus.start_listening()  # a second app on the same runtime
        listener = bus.listener
        assert listener is not None
        bus.stop_listening()
        assert bus.listener is listener  # the other still listens
        started = time.monotonic()
        bus.stop_listening()
        assert bus.listener is None
        assert time.monotonic() - started < 1.0  # woken, not waiting out its poll
        assert not listener.listening.is_set()
    finally:
        runtime.close()


def test_parts_are_put_back_together_whatever_their_order() -> None:
    events = [LiveEvent(type="message.created", data={"text": "x" * 5000}, queues=("q",))] * 3
    parts = encode(events, "other", 9, limit=2000) + encode([MESSAGE], "other", 10, limit=2000)
    assert all(len(p.encode()) < 2000 for p in parts)
    assembler = Assembler("mine")
    *first, last = parts[:-1]
    random.Random(3).shuffle(first)
    assert [assembler.feed(p) for p in first] == [None] * len(first)
    assert assembler.feed(parts[-1]) == [MESSAGE]  # another message, complete on its own
    assert assembler.feed(last) == events
    assert assembler.feed(encode([MESSAGE], "mine", 1, limit=2000)[0]) == []  # our own
    for bad in ("1 other 1 3 3 x", "1 other x 0 1 []", "1 other 1 0 1 {", "9 a b"):
        with pytest.raises(MalformedNotificationError):
            assembler.feed(bad)


def test_a_publish_the_database_refuses_still_reaches_this_node() -> None:
    """The change was committed before: the desktops of this node hear it, and the caller
    (a request, a worker) does not fail because the other nodes could not be told."""
    engine = create_engine("postgresql+psycopg://convodesk@127.0.0.1:1/none")  # nobody there
    bus = PgBus(engine)
    try:
        assert bus.wants_events  # cannot tell whether anyone listens: build the events
        admin = bus.subscribe(Audience(admin=True))
        bus.publish([MESSAGE])
        delivery = admin.get(0)
        assert delivery is not None
        assert delivery.event == MESSAGE
    finally:
        bus.close()
        engine.dispose()
