"""The Chat Server's API for the agent desktop: who I am and my presence, the queues, my
offers, picking, transferring and ending chats, a customer's earlier conversations.

Agents see their queues (and the conversations assigned or offered to them); admins see
everything. Actions that change routing wake the router, so the next pass runs at once.
Rules and decisions: docs/reference/routing.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from convodesk.services import chat_server
from convodesk.services.assignment import OfferItem
from convodesk.services.chat_server import (
    HistoryItem,
    MeItem,
    PresenceItem,
    QueueOverview,
    WaitingItem,
)
from convodesk.services.conversations import ConversationItem
from convodesk.services.directory import Directory
from convodesk.services.event_log import MAX_PAGE
from convodesk.storage.conversations import MAX_CONVERSATION_ID
from convodesk.web.auth import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["chat"])

ConversationId = Annotated[int, Path(ge=1, le=MAX_CONVERSATION_ID)]
OfferId = Annotated[int, Path(ge=1, le=MAX_CONVERSATION_ID)]


class PresenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["ready", "not_ready"]


def _wake(request: Request) -> None:
    """Route at once; and send at once what the action queued (the closed prompt)."""
    request.app.state.router.wake()
    request.app.state.sender.wake()


async def _directory(request: Request) -> Directory:
    directory: Directory = await run_in_threadpool(request.app.state.directory.get)
    return directory


@router.get("/me", tags=["auth"], summary="Who the token belongs to, with presence and queues")
async def me(request: Request, runtime: RuntimeDep, principal: PrincipalDep) -> MeItem:
    return await run_in_threadpool(chat_server.me, runtime, principal, await _directory(request))


@router.put("/me/presence", summary="Set my presence: ready (offers come) or not_ready")
async def set_presence(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, body: PresenceBody
) -> PresenceItem:
    item = await run_in_threadpool(chat_server.set_presence, runtime, principal, body.state)
    _wake(request)
    return item


@router.get("/queues/overview", summary="My queues (all, for an admin) with their counts")
async def queues_overview(runtime: RuntimeDep, principal: PrincipalDep) -> list[QueueOverview]:
    return await run_in_threadpool(chat_server.queue_overview, runtime, principal)


@router.get(
    "/queues/{name}/waiting",
    summary="A queue's waiting conversations in the order they are served (for picking)",
)
async def queue_waiting(
    runtime: RuntimeDep, principal: PrincipalDep, name: Annotated[str, Path(max_length=100)]
) -> list[WaitingItem]:
    return await run_in_threadpool(chat_server.waiting_list, runtime, principal, name)


@router.get("/offers", summary="My outstanding offers, oldest first")
async def list_offers(runtime: RuntimeDep, principal: PrincipalDep) -> list[OfferItem]:
    return await run_in_threadpool(chat_server.list_offers, runtime, principal)


@router.post(
    "/offers/{offer_id}/accept",
    summary="Accept an offer: the conversation becomes mine (409 if expired, withdrawn, taken)",
)
async def accept_offer(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, offer_id: OfferId
) -> ConversationItem:
    try:
        return await run_in_threadpool(chat_server.accept_offer, runtime, principal, offer_id)
    finally:
        _wake(request)


@router.post(
    "/offers/{offer_id}/reject",
    status_code=204,
    summary="Reject an offer: the conversation goes to the next agent",
)
async def reject_offer(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, offer_id: OfferId
) -> Response:
    await run_in_threadpool(chat_server.reject_offer, runtime, principal, offer_id)
    _wake(request)
    return Response(status_code=204)


@router.post(
    "/conversations/{conversation_id}/pick",
    summary="Take a waiting conversation of my queue (409 if not waiting or no room)",
)
async def pick(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, conversation_id: ConversationId
) -> ConversationItem:
    directory = await _directory(request)
    item = await run_in_threadpool(chat_server.pick, runtime, principal, conversation_id, directory)
    _wake(request)
    return item


@router.post(
    "/conversations/{conversation_id}/transfer",
    summary='Transfer to a queue ({"queue": name}) or to a ready agent ({"agent": login})',
)
async def transfer(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    conversation_id: ConversationId,
    body: dict[str, Any] = Body(..., description='{"queue": name} or {"agent": login}'),
) -> ConversationItem:
    directory = await _directory(request)
    item = await run_in_threadpool(
        chat_server.transfer, runtime, principal, conversation_id, body, directory
    )
    _wake(request)
    return item


@router.post(
    "/conversations/{conversation_id}/end",
    summary="End the chat, with an optional wrap-up code; the customer gets the closed prompt",
)
async def end(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    conversation_id: ConversationId,
    body: dict[str, Any] | None = Body(None, description='{"wrapup_code": "resolved"} or {}'),
) -> ConversationItem:
    directory = await _directory(request)
    item = await run_in_threadpool(
        chat_server.end, runtime, principal, conversation_id, body or {}, directory
    )
    _wake(request)
    return item


@router.get(
    "/conversations/{conversation_id}/history",
    summary="The same customer's other conversations (same app, channel, identity), newest first",
)
async def history(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    conversation_id: ConversationId,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> list[HistoryItem]:
    return await run_in_threadpool(
        chat_server.history, runtime, principal, conversation_id, limit=limit
    )
