"""Several processors on one database keep the messages of a customer in the order they were
stored (`workers/processor.py`, `_in_order`): a later message never overtakes an earlier
one that another processor holds."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from convodesk.runtime import Runtime
from convodesk.services import chain_matcher
from convodesk.services.directory import DirectoryCache
from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow, EventRow, MessageRow
from convodesk.workers.processor import Processor
from tests.support.factories import inbound_body, make_event
from tests.support.intake import configured_runtime


def store(runtime: Runtime, messages: list[tuple[str, str]]) -> None:
    """Pending inbound events, in this order: (identity, text)."""
    with transaction(runtime.sessions) as session:
        for identity, text in messages:
            make_event(session, identity=identity, body=inbound_body(identity=identity, text=text))


def texts_by_identity(runtime: Runtime) -> dict[str, list[str]]:
    """Each customer's inbound messages in the order the conversation shows them (id)."""
    with runtime.sessions() as session:
        rows = session.execute(
            select(ConversationRow.identity, MessageRow.text)
            .join(MessageRow, MessageRow.conversation_id == ConversationRow.id)
            .order_by(MessageRow.id)
        ).all()
    found: dict[str, list[str]] = {}
    for identity, text in rows:
        found.setdefault(identity, []).append(text)
    return found


def pending(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return (
            session.scalar(
                select(func.count()).select_from(EventRow).where(EventRow.state == "pending")
            )
            or 0
        )


@pytest.mark.postgres
def test_a_later_message_waits_for_the_earlier_one_another_processor_holds(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = configured_runtime(postgres_url, tmp_path)
    try:
        store(runtime, [("4670001", "first"), ("4670002", "y"), ("+4670001", "second")])
        store(runtime, [("4670003", "z")])
        holding, release = threading.Event(), threading.Event()
        original = chain_matcher.thread_inbound_run

        def held(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread().name == "node-a":
                holding.set()
                assert release.wait(10)
            return original(*args, **kwargs)

        monkeypatch.setattr(chain_matcher, "thread_inbound_run", held)
        node_a = Processor(runtime, DirectoryCache(runtime), batch=2)
        node_b = Processor(runtime, DirectoryCache(runtime), batch=2)
        results: list[int] = []
        thread = threading.Thread(
            target=lambda: results.append(node_a.process_batch()), name="node-a"
        )
        thread.start()
        try:
            assert holding.wait(10)  # node A holds "first" (and "y"), not committed yet
            # Node B claims "second" (the same customer, in +-form) and "z": "z" goes,
            # "second" waits for "first".
            assert node_b.process_batch() == 1
            assert node_b.deferred == 1
            assert texts_by_identity(runtime) == {"4670003": ["z"]}
        finally:
            release.set()
            thread.join(10)
        assert results == [2]
        assert node_b.process_batch() == 1
        assert node_b.deferred == 0
        assert texts_by_identity(runtime)["4670001"] == ["first", "second"]
        assert pending(runtime) == 0
    finally:
        runtime.close()


def test_two_processors_keep_every_customers_order(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processors (two runtimes, as two nodes) drain interleaved messages of a few
    customers in small batches at the same time, each pausing a little at random before
    threading (so either may get ahead); every conversation reads in order."""
    customers, per_customer = 8, 25
    first = configured_runtime(database_url, tmp_path)
    second = configured_runtime(database_url, tmp_path)
    original = chain_matcher.thread_inbound_run
    jitter = random.Random(7)

    def late(*args: Any, **kwargs: Any) -> Any:
        time.sleep(jitter.random() * 0.004)
        return original(*args, **kwargs)

    monkeypatch.setattr(chain_matcher, "thread_inbound_run", late)
    try:
        store(
            first,
            [(f"467100{c:02d}", f"{n:03d}") for n in range(per_customer) for c in range(customers)],
        )
        failures: list[BaseException] = []

        def drain(runtime: Runtime) -> None:
            processor = Processor(runtime, DirectoryCache(runtime), batch=7)
            deadline = time.monotonic() + 30
            try:
                while time.monotonic() < deadline:
                    if not processor.process_batch() and not processor.deferred:
                        if pending(runtime) == 0:
                            return
                        time.sleep(0.005)  # the other node holds the rest: look again
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=drain, args=(rt,)) for rt in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)
        assert not failures, failures
        assert pending(first) == 0
        found = texts_by_identity(first)
        expected = [f"{n:03d}" for n in range(per_customer)]
        assert len(found) == customers
        assert all(texts == expected for texts in found.values()), found
    finally:
        first.close()
        second.close()


def test_the_order_check_is_cheap_when_nothing_is_held(database_url: str, tmp_path: Path) -> None:
    """One processor alone never defers anything (the check finds no older event)."""
    runtime = configured_runtime(database_url, tmp_path)
    try:
        store(runtime, [("4670001", "a"), ("4670001", "b"), ("4670002", "c")])
        processor = Processor(
            runtime, DirectoryCache(runtime), batch=2, clock=lambda: datetime.now(UTC)
        )
        assert processor.process_batch() == 2
        assert processor.deferred == 0
        assert processor.process_batch() == 1
        assert texts_by_identity(runtime) == {"4670001": ["a", "b"], "4670002": ["c"]}
    finally:
        runtime.close()
