"""A database error that is not the event's fault never marks an acknowledged callback
failed: the batch is rolled back and tried again; only an error that keeps coming is."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from convodesk.runtime import Runtime
from convodesk.services import chain_matcher
from convodesk.storage.db import transaction
from convodesk.storage.tables import EventRow, MessageRow
from convodesk.workers import processor as processor_module
from tests.support.intake import post_sinch_fixture


def failing(real: Any, failures: list[int]) -> Any:
    """`real`, except that it raises a transient database error while `failures[0]` > 0."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if failures[0] > 0:
            failures[0] -= 1
            raise OperationalError("UPDATE conversations", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    return wrapper


def events(runtime: Runtime) -> list[tuple[str, str | None]]:
    with transaction(runtime.sessions) as session:
        return [(e.state, e.state_reason) for e in session.scalars(select(EventRow))]


def messages(runtime: Runtime) -> int:
    with transaction(runtime.sessions) as session:
        return len(session.scalars(select(MessageRow.id)).all())


def test_a_transient_error_leaves_the_event_pending_then_it_is_threaded(
    served: tuple[TestClient, FastAPI], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, app = served
    assert post_sinch_fixture(client, "message_inbound__text").status_code == 200
    failures = [2]  # the batched run fails, then the one-at-a-time replay of it fails
    monkeypatch.setattr(
        chain_matcher, "thread_inbound_run", failing(chain_matcher.thread_inbound_run, failures)
    )
    monkeypatch.setattr(
        chain_matcher, "process_event", failing(chain_matcher.process_event, failures)
    )
    with pytest.raises(OperationalError):
        app.state.processor.process_batch()
    assert events(runtime) == [("pending", None)]
    assert messages(runtime) == 0

    assert app.state.processor.process_batch() == 1  # the next pass: the database is back
    assert events(runtime) == [("done", None)]
    assert messages(runtime) == 1


def test_an_error_that_keeps_coming_marks_the_event_failed_in_the_end(
    served: tuple[TestClient, FastAPI], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, app = served
    assert post_sinch_fixture(client, "message_inbound__text").status_code == 200
    failures = [10**6]
    monkeypatch.setattr(
        chain_matcher, "thread_inbound_run", failing(chain_matcher.thread_inbound_run, failures)
    )
    monkeypatch.setattr(
        chain_matcher, "process_event", failing(chain_matcher.process_event, failures)
    )
    for _ in range(processor_module.MAX_TRANSIENT_FAILURES - 1):
        with pytest.raises(OperationalError):
            app.state.processor.process_batch()
        assert events(runtime)[0][0] == "pending"
    assert app.state.processor.process_batch() == 1
    [(state, reason)] = events(runtime)
    assert state == "failed"
    assert reason is not None
    assert "database is locked" in reason


def test_a_bad_event_is_still_marked_failed_at_once(
    served: tuple[TestClient, FastAPI], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, app = served
    assert post_sinch_fixture(client, "message_inbound__text").status_code == 200
    monkeypatch.setattr(chain_matcher, "thread_inbound_run", _raise_value_error)
    monkeypatch.setattr(chain_matcher, "process_event", _raise_value_error)
    assert app.state.processor.process_batch() == 1
    assert events(runtime) == [("failed", "ValueError: not a message we understand")]


def _raise_value_error(*_args: Any, **_kwargs: Any) -> Any:
    raise ValueError("not a message we understand")
