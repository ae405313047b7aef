"""Agent replies and the outbox: ``POST /api/v1/conversations/{id}/messages`` answers 202
with our message id once the message and its outbox row are committed; the sender delivers
it. Admins see the outbox and put dead letters back in the queue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from convodesk.services import outbox as outbox_service
from convodesk.services import replies
from convodesk.storage.conversations import MAX_CONVERSATION_ID
from convodesk.web.auth import AdminDep, PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["replies"])


@router.post(
    "/conversations/{conversation_id}/messages",
    status_code=202,
    summary="Send a reply (text or WhatsApp template); delivered by the outbox",
)
async def send_reply(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    conversation_id: Annotated[int, Path(ge=1, le=MAX_CONVERSATION_ID)],
    body: dict[str, Any] = Body(..., description='{"text": ...} or {"template": {...}}'),
    idempotency_key: Annotated[str | None, Header(max_length=150)] = None,
) -> JSONResponse:
    reply = await run_in_threadpool(
        replies.send_agent_reply,
        runtime,
        conversation_id,
        principal,
        body,
        idempotency_key=idempotency_key,
    )
    if reply.created:
        request.app.state.sender.wake()
    return JSONResponse(jsonable_encoder(reply.message), status_code=202 if reply.created else 200)


@router.get("/outbox", summary="Outbox entries by state (default: dead letters and failures)")
async def list_outbox(
    runtime: RuntimeDep,
    _admin: AdminDep,
    state: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    states = tuple(state or ("dead", "failed"))
    return await run_in_threadpool(outbox_service.list_entries, runtime, states, limit)


@router.post("/outbox/retry", summary="Queue dead or failed sends again")
async def retry_outbox(
    request: Request,
    runtime: RuntimeDep,
    _admin: AdminDep,
    body: dict[str, Any] = Body(..., description='{"ids": [...]} or {"all": true}'),
) -> dict[str, int]:
    count = await run_in_threadpool(outbox_service.retry_entries, runtime, body)
    request.app.state.sender.wake()
    return {"retried": count}
