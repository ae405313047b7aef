"""Event-log API (admin only): browse every callback the SMS Server received, and replay
accepted ones through the Chain Matcher. docs/reference/event-log.md has the semantics.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from convodesk.services import event_log
from convodesk.services.event_log import EventItem, EventPage
from convodesk.storage.event_log import MAX_EVENT_ID, EventFilters, Outcome, State
from convodesk.web.auth import AdminDep, RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["events"])

MAX_REPLAY_IDS = 1000

ServiceQuery = Annotated[str | None, Query(max_length=100, description="messaging service name")]
TriggerQuery = Annotated[str | None, Query(max_length=60, description="e.g. MESSAGE_INBOUND")]
AppQuery = Annotated[str | None, Query(max_length=40, description="Sinch app id")]
IdentityQuery = Annotated[
    str | None, Query(max_length=200, description="the customer's channel identity")
]
SinceQuery = Annotated[
    datetime | None,
    Query(description="received at or after (ISO-8601; no offset means UTC)"),
]
UntilQuery = Annotated[
    datetime | None, Query(description="received before (ISO-8601; no offset means UTC)")
]


class ReplayRequest(BaseModel):
    """Either `ids`, or at least one filter: an empty selection would replay the whole log.

    Unknown fields are refused, so a misspelt filter cannot widen the selection."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=MAX_EVENT_ID)]] | None = Field(
        None, min_length=1, max_length=MAX_REPLAY_IDS
    )
    service: str | None = Field(None, max_length=100)
    trigger: str | None = Field(None, max_length=60)
    state: State | None = None
    app_id: str | None = Field(None, max_length=40)
    identity: str | None = Field(None, max_length=200)
    since: datetime | None = None
    until: datetime | None = None

    def filters(self) -> EventFilters:
        return EventFilters(
            service=self.service,
            trigger=self.trigger,
            state=self.state,
            app_id=self.app_id,
            identity=self.identity,
            since=self.since,
            until=self.until,
        )

    @model_validator(mode="after")
    def _ids_or_filters(self) -> Self:
        has_filters = not self.filters().is_empty()
        if self.ids is None and not has_filters:
            raise ValueError(
                "give ids or at least one filter: an empty selection would replay every event"
            )
        if self.ids is not None and has_filters:
            raise ValueError("give either ids or filters, not both")
        return self


class ReplayAnswer(BaseModel):
    replayed: int = Field(description="accepted events put back to pending")


@router.get("/events", summary="Browse the event log, newest first")
async def list_events(
    runtime: RuntimeDep,
    _admin: AdminDep,
    service: ServiceQuery = None,
    trigger: TriggerQuery = None,
    outcome: Outcome | None = None,
    state: State | None = None,
    app_id: AppQuery = None,
    identity: IdentityQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Annotated[int, Query(ge=1, le=event_log.MAX_PAGE)] = 50,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_EVENT_ID, description="the `next` of the previous page"),
    ] = None,
) -> EventPage:
    filters = EventFilters(
        service=service,
        trigger=trigger,
        outcome=outcome,
        state=state,
        app_id=app_id,
        identity=identity,
        since=since,
        until=until,
    )
    return await run_in_threadpool(
        event_log.list_events, runtime, filters, limit=limit, before=before
    )


@router.post("/events/replay", summary="Process accepted events again")
async def replay_events(
    runtime: RuntimeDep, _admin: AdminDep, request: ReplayRequest
) -> ReplayAnswer:
    selection = request.ids if request.ids is not None else request.filters()
    count = await run_in_threadpool(event_log.replay_events, runtime, selection)
    return ReplayAnswer(replayed=count)


@router.get("/events/{event_id}", summary="One event of the log")
async def get_event(
    runtime: RuntimeDep, _admin: AdminDep, event_id: Annotated[int, Path(ge=1, le=MAX_EVENT_ID)]
) -> EventItem:
    return await run_in_threadpool(event_log.get_event, runtime, event_id)
