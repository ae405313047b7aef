"""Event-log use cases shared by the admin API (`/api/v1/events`) and the CLI
(`convodesk events`): browse, replay, clean up. docs/reference/event-log.md tells the story.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from convodesk.runtime import Runtime
from convodesk.services.errors import NotFoundError
from convodesk.storage import config_store, event_log
from convodesk.storage.db import transaction
from convodesk.storage.event_log import EventFilters
from convodesk.storage.tables import EventRow

MAX_PAGE = 500
CLEANUP_BATCH = 5000


@dataclass(frozen=True, kw_only=True)
class EventItem:
    id: int
    received_at: datetime
    service: str | None
    trigger: str | None
    app_id: str | None
    channel: str | None
    identity: str | None
    outcome: str
    reason: str | None
    state: str
    state_reason: str | None
    processed_at: datetime | None
    conversation_id: int | None
    body: str  # the raw body as UTF-8, invalid bytes replaced by U+FFFD


@dataclass(frozen=True, kw_only=True)
class EventPage:
    items: list[EventItem]
    next: int | None  # pass as `before` for the next (older) page; None: this is the last


@dataclass(frozen=True, kw_only=True)
class CleanupResult:
    deleted: int
    older_than_days: int
    cutoff: datetime


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_instant(text: str) -> datetime:
    """ISO-8601 date or date-time; without an offset it is taken as UTC. Raises ValueError."""
    value = datetime.fromisoformat(text.strip())
    return as_utc(value)


def event_item(row: EventRow) -> EventItem:
    return EventItem(
        id=row.id,
        received_at=as_utc(row.received_at),
        service=row.service,
        trigger=row.trigger,
        app_id=row.app_id,
        channel=row.channel,
        identity=row.identity,
        outcome=row.outcome,
        reason=row.reason,
        state=row.state,
        state_reason=row.state_reason,
        processed_at=as_utc(row.processed_at) if row.processed_at is not None else None,
        conversation_id=row.conversation_id,
        body=bytes(row.body).decode("utf-8", errors="replace"),
    )


def list_events(
    runtime: Runtime, filters: EventFilters, *, limit: int = 50, before: int | None = None
) -> EventPage:
    limit = max(1, min(limit, MAX_PAGE))
    with transaction(runtime.sessions) as session:
        rows = event_log.list_events(session, filters, limit=limit + 1, before_id=before)
        items = [event_item(row) for row in rows[:limit]]
    return EventPage(items=items, next=items[-1].id if len(rows) > limit else None)


def get_event(runtime: Runtime, event_id: int) -> EventItem:
    with transaction(runtime.sessions) as session:
        row = event_log.get_event(session, event_id)
        if row is None:
            raise NotFoundError(f"no event with id {event_id}")
        return event_item(row)


def replay_events(runtime: Runtime, selection: EventFilters | Sequence[int]) -> int:
    """Mark the selected accepted events ``pending`` again; the Chain Matcher picks them up.

    Raises `event_log.EmptySelectionError` for an empty selection: callers check first and
    answer with their own usage error, this is the last guard.
    """
    with transaction(runtime.sessions) as session:
        return event_log.mark_for_replay(session, selection)


def retention_days(runtime: Runtime) -> int:
    """`chat_settings.event_retention_days` of the stored configuration."""
    with transaction(runtime.sessions) as session:
        config = config_store.load(session, runtime.box, runtime.config)
    return config.chat_settings.event_retention_days


def cleanup_events(
    runtime: Runtime,
    *,
    older_than_days: int | None = None,
    now: datetime | None = None,
    batch: int = CLEANUP_BATCH,
) -> CleanupResult:
    """Delete events older than `older_than_days` (default: the configured retention),
    except those still pending; in batches, each its own short transaction."""
    days = retention_days(runtime) if older_than_days is None else older_than_days
    if days < 1:
        raise ValueError("older_than_days must be at least 1")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    with runtime.sessions() as session:
        deleted = event_log.delete_older_than(session, cutoff, batch=batch)
    return CleanupResult(deleted=deleted, older_than_days=days, cutoff=cutoff)
