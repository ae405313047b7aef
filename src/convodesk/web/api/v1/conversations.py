"""Conversations and their messages, read-only. Admin tokens see every conversation; an
agent token sees those of its agent's queues, and gets 404 for any other (as for an id
that does not exist), so ids reveal nothing. A WhatsApp conversation shows its 24-hour
window; ``/templates`` lists the approved templates an agent may send in it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from convodesk.services import conversations
from convodesk.services.conversations import (
    ConversationItem,
    ConversationPage,
    ConversationStatus,
    ConversationTemplates,
    MessagePage,
)
from convodesk.services.event_log import MAX_PAGE
from convodesk.storage.conversations import MAX_CONVERSATION_ID, MAX_MESSAGE_ID
from convodesk.web.auth import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["conversations"])

ConversationId = Annotated[int, Path(ge=1, le=MAX_CONVERSATION_ID)]


@router.get("/conversations", summary="List conversations, newest first")
async def list_conversations(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    queue: Annotated[str | None, Query(max_length=100)] = None,
    status: ConversationStatus | None = None,
    channel: Annotated[
        str | None, Query(max_length=40, description="as stored, e.g. WHATSAPP")
    ] = None,
    identity: Annotated[str | None, Query(max_length=200)] = None,
    assigned: Annotated[
        str | None,
        Query(max_length=64, description="an agent's login, or `me` for the caller's agent"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    before: Annotated[
        int | None,
        Query(ge=1, le=MAX_CONVERSATION_ID, description="the `next` of the previous page"),
    ] = None,
) -> ConversationPage:
    return await run_in_threadpool(
        conversations.list_conversations,
        runtime,
        principal,
        queue=queue,
        status=status,
        channel=channel,
        identity=identity,
        assigned=assigned,
        limit=limit,
        before=before,
    )


@router.get("/conversations/{conversation_id}", summary="One conversation")
async def get_conversation(
    runtime: RuntimeDep, principal: PrincipalDep, conversation_id: ConversationId
) -> ConversationItem:
    return await run_in_threadpool(
        conversations.get_conversation, runtime, principal, conversation_id
    )


@router.get(
    "/conversations/{conversation_id}/templates",
    summary="The WhatsApp window and the templates an agent may send in a conversation",
)
async def conversation_templates(
    runtime: RuntimeDep, principal: PrincipalDep, conversation_id: ConversationId
) -> ConversationTemplates:
    return await run_in_threadpool(
        conversations.conversation_templates, runtime, principal, conversation_id
    )


@router.get(
    "/conversations/{conversation_id}/messages",
    summary="The messages of a conversation, oldest first, with their attachments",
)
async def list_messages(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    conversation_id: ConversationId,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    after: Annotated[
        int | None,
        Query(ge=1, le=MAX_MESSAGE_ID, description="the `next` of the previous page"),
    ] = None,
) -> MessagePage:
    return await run_in_threadpool(
        conversations.list_messages, runtime, principal, conversation_id, limit=limit, after=after
    )
