"""The in-process live event bus: `services.live`."""

from __future__ import annotations

import asyncio
import threading

from convodesk.services.live import Audience, Delivery, LiveEvent, LocalBus

MESSAGE = LiveEvent(type="message.created", data={"conversation_id": 1}, queues=("support",))
OFFER = LiveEvent(type="offer.created", data={"offer": {"id": 7}}, agents=("anna",))
PRESENCE = LiveEvent(type="presence.updated", data={"agent": "bob"}, agents=("bob",))


def test_each_subscriber_sees_its_audience_only() -> None:
    bus = LocalBus()
    anna = bus.subscribe(Audience(admin=False, agent="anna", queues=frozenset({"support"})))
    carl = bus.subscribe(Audience(admin=False, agent="carl", queues=frozenset({"sales"})))
    admin = bus.subscribe(Audience(admin=True))
    bus.publish([MESSAGE, OFFER, PRESENCE])

    def drain(sub: object) -> list[str]:
        found = []
        while (d := sub.get(0)) is not None:  # type: ignore[attr-defined]
            found.append(d.event.type)
        return found

    assert drain(anna) == ["message.created", "offer.created"]
    assert drain(carl) == []
    assert drain(admin) == ["message.created", "offer.created", "presence.updated"]


def test_ids_increase_and_payload_carries_the_type() -> None:
    bus = LocalBus()
    sub = bus.subscribe(Audience(admin=True))
    bus.publish([MESSAGE, MESSAGE])
    first, second = sub.get(0), sub.get(0)
    assert first is not None
    assert second is not None
    assert second.id > first.id
    assert first.event.payload() == {"type": "message.created", "conversation_id": 1}


def test_a_subscriber_that_falls_behind_is_cut_off() -> None:
    bus = LocalBus()
    sub = bus.subscribe(Audience(admin=True), maxsize=3)
    bus.publish([MESSAGE] * 4)
    assert sub.overflowed
    assert sub.get(0) is None  # nothing more: the stream tells the desktop to reload


def test_closed_subscriptions_hear_nothing_and_leave_the_bus() -> None:
    bus = LocalBus()
    sub = bus.subscribe(Audience(admin=True))
    assert bus.wants_events
    sub.close()
    assert not bus.wants_events
    bus.publish([MESSAGE])
    assert sub.get(0) is None


def test_json_round_trip_for_a_cross_node_bus() -> None:
    assert LiveEvent.from_json(OFFER.to_json()) == OFFER


def test_async_reader_wakes_on_a_publish_from_another_thread() -> None:
    bus = LocalBus()
    sub = bus.subscribe(Audience(admin=True))

    async def main() -> str | None:
        waiting = asyncio.ensure_future(sub.next(5))
        await asyncio.sleep(0.01)
        threading.Thread(target=bus.publish, args=([OFFER],)).start()
        delivery = await waiting
        return delivery.event.type if delivery else None

    assert asyncio.run(main()) == "offer.created"


def test_async_reader_times_out_and_ends_with_the_bus() -> None:
    bus = LocalBus()
    sub = bus.subscribe(Audience(admin=True))

    async def main() -> tuple[object, object]:
        timed_out = await sub.next(0.01)
        closing = asyncio.ensure_future(sub.next(5))
        await asyncio.sleep(0.01)
        bus.close()
        return timed_out, await closing

    assert asyncio.run(main()) == (None, None)
    assert sub.closed


def test_an_agent_hears_its_queue_and_its_own_events_in_order() -> None:
    bus = LocalBus()
    anna = bus.subscribe(Audience(admin=False, agent="anna", queues=frozenset({"support"})))
    bob = bus.subscribe(Audience(admin=False, agent="bob", queues=frozenset({"support"})))
    sales = LiveEvent(type="conversation.updated", data={"n": 2}, queues=("sales",))
    transferred = LiveEvent(
        type="conversation.updated", data={"n": 3}, queues=("sales",), agents=("anna",)
    )
    bus.publish([MESSAGE, sales, transferred, OFFER, MESSAGE])

    def drain(sub: object) -> list[str]:
        found = []
        while (d := sub.get(0)) is not None:  # type: ignore[attr-defined]
            found.append(f"{d.event.type}:{d.id}")
        return found

    assert drain(anna) == [
        "message.created:1",
        "conversation.updated:3",
        "offer.created:4",
        "message.created:5",
    ]
    assert drain(bob) == ["message.created:1", "message.created:5"]


def test_next_all_takes_everything_waiting_and_json_is_made_once() -> None:
    bus = LocalBus()
    first = bus.subscribe(Audience(admin=True))
    second = bus.subscribe(Audience(admin=True))
    bus.publish([MESSAGE, OFFER])
    bus.publish([PRESENCE])

    async def main() -> tuple[list[Delivery], list[Delivery]]:
        return await first.next_all(5), await second.next_all(5)

    taken, other = asyncio.run(main())
    assert [d.event.type for d in taken] == ["message.created", "offer.created", "presence.updated"]
    assert taken[0].payload_json == '{"type":"message.created","conversation_id":1}'
    assert other[0] is taken[0]  # the same delivery: its JSON is made once for both streams
    assert first.get(0) is None


def test_one_publish_from_another_thread_wakes_every_waiting_reader() -> None:
    bus = LocalBus()
    subs = [bus.subscribe(Audience(admin=False, queues=frozenset({"support"}))) for _ in range(50)]

    async def main() -> list[int]:
        readers = [asyncio.ensure_future(sub.next_all(5)) for sub in subs]
        await asyncio.sleep(0.01)
        threading.Thread(target=bus.publish, args=([MESSAGE, MESSAGE],)).start()
        return [len(taken) for taken in await asyncio.gather(*readers)]

    assert asyncio.run(main()) == [2] * 50


def test_next_all_returns_nothing_on_timeout_and_at_the_end() -> None:
    bus = LocalBus()
    sub = bus.subscribe(Audience(admin=True), maxsize=1)

    async def main() -> tuple[object, object]:
        timed_out = await sub.next_all(0.01)
        bus.publish([MESSAGE, MESSAGE])  # over maxsize: cut off
        return timed_out, await sub.next_all(5)

    assert asyncio.run(main()) == ([], [])
    assert sub.overflowed


def test_hears_follows_who_subscribes_changes_audience_and_leaves() -> None:
    bus = LocalBus()
    assert not bus.hears(("support",), ("anna",))  # nobody listens
    anna = bus.subscribe(Audience(admin=False, agent="anna", queues=frozenset({"support"})))
    assert bus.hears((), ("anna",))
    assert bus.hears(("support",), ())
    assert not bus.hears(("sales",), ("bob",))
    anna.set_audience(Audience(admin=False, agent="anna", queues=frozenset({"sales"})))
    assert bus.hears(("sales",), ())
    assert not bus.hears(("support",), ())
    admin = bus.subscribe(Audience(admin=True))
    assert bus.hears(("billing",), ("zoe",))  # an admin hears everything
    admin.close()
    anna.close()
    assert not bus.hears(("sales",), ("anna",))
