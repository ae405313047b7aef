"""SQL for browsing and operating on the event log (`events`): filter and page, mark for
replay, delete by age.

The writer side lives in `storage/event_store.py`; this module never inserts.

Times: SQLite keeps these columns as naive text in UTC, so every datetime bound here is
converted to UTC first (an aware value in another zone would otherwise be compared by its
wall-clock digits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Literal, get_args

from sqlalchemy import ColumnElement, CursorResult, Executable, delete, select, update
from sqlalchemy.orm import Session

from convodesk.storage.tables import EventRow

Outcome = Literal["accepted", "duplicate", "rejected", "ignored"]
State = Literal["none", "pending", "done", "unrouted", "failed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
STATES: tuple[str, ...] = get_args(State)
MAX_EVENT_ID = 2**63 - 1  # BIGINT: a larger id (or cursor) cannot even be bound


@dataclass(frozen=True, kw_only=True)
class EventFilters:
    """Each set field narrows the selection (AND). `since` is inclusive, `until` exclusive."""

    service: str | None = None
    trigger: str | None = None
    outcome: str | None = None
    state: str | None = None
    app_id: str | None = None
    identity: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


class EmptySelectionError(ValueError):
    """A replay needs at least one filter or id: an empty one would select the whole log."""


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _conditions(filters: EventFilters) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    for column, value in (
        (EventRow.service, filters.service),
        (EventRow.trigger, filters.trigger),
        (EventRow.outcome, filters.outcome),
        (EventRow.state, filters.state),
        (EventRow.app_id, filters.app_id),
        (EventRow.identity, filters.identity),
    ):
        if value is not None:
            out.append(column == value)
    if filters.since is not None:
        out.append(EventRow.received_at >= _utc(filters.since))
    if filters.until is not None:
        out.append(EventRow.received_at < _utc(filters.until))
    return out


def list_events(
    session: Session, filters: EventFilters, *, limit: int, before_id: int | None = None
) -> list[EventRow]:
    """Newest first (by id); `before_id` is the keyset cursor: only ids below it."""
    stmt = select(EventRow).where(*_conditions(filters))
    if before_id is not None:
        stmt = stmt.where(EventRow.id < before_id)
    return list(session.scalars(stmt.order_by(EventRow.id.desc()).limit(limit)))


def get_event(session: Session, event_id: int) -> EventRow | None:
    return session.get(EventRow, event_id)


def mark_for_replay(session: Session, selection: EventFilters | Sequence[int]) -> int:
    """Put the selected *accepted* events back to ``pending`` for the Chain Matcher, and
    return how many changed.

    Events of other outcomes have nothing to process and are left alone, as are events
    already pending (they will be processed anyway; they are not counted). Processing is
    idempotent, so replaying a ``done`` event is safe. Raises `EmptySelectionError` for an
    empty filter set or id list rather than selecting the whole log.
    """
    if isinstance(selection, EventFilters):
        if selection.is_empty():
            raise EmptySelectionError("give at least one filter or id")
        where = _conditions(selection)
    else:
        ids = sorted(set(selection))
        if not ids:
            raise EmptySelectionError("give at least one filter or id")
        where = [EventRow.id.in_(ids)]
    stmt = (
        update(EventRow)
        .where(EventRow.outcome == "accepted", EventRow.state != "pending", *where)
        .values(state="pending", state_reason=None, processed_at=None)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(session, stmt)


def delete_older_than(session: Session, cutoff: datetime, *, batch: int = 5000) -> int:
    """Delete events received before `cutoff`, `batch` rows per transaction; return the count.

    Commits after each batch, so that a large cleanup never holds the write lock for long
    (SQLite has one writer at a time): call it with a session that is not inside a
    ``session.begin()`` block. Events still ``pending`` are kept whatever their age: they
    have not been processed yet. Once an accepted event is gone, its idempotency key is
    gone too; Sinch stops retrying long before any sensible retention period ends.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    old = (
        select(EventRow.id)
        .where(EventRow.received_at < _utc(cutoff), EventRow.state != "pending")
        .order_by(EventRow.id)
        .limit(batch)
    )
    stmt = delete(EventRow).where(EventRow.id.in_(old)).execution_options(synchronize_session=False)
    total = 0
    while True:
        deleted = _rowcount(session, stmt)
        session.commit()
        total += deleted
        if deleted < batch:
            return total


def _rowcount(session: Session, stmt: Executable) -> int:
    result = session.execute(stmt)
    assert isinstance(result, CursorResult)  # DML statements answer with a cursor result
    return result.rowcount
