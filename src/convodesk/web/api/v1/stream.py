"""``GET /api/v1/stream``: the live events of `services/live.py` as Server-Sent Events.

Each event is one ``id:`` (increasing per process) and one ``data:`` line holding a JSON
object with its ``type`` (no ``event:`` field, so a browser's ``EventSource.onmessage``
sees them all). An agent hears the events of its queues, its conversations and its own
offers; an admin hears everything. A comment line (``: heartbeat``) goes out every
`HEARTBEAT_SECONDS` so proxies keep the connection open; the agent's queues are read again
then, so a change of membership reaches an open stream.

A client that falls too far behind gets ``{"type": "stream.overflow"}`` and the stream
ends; the process stopping ends it too. Either way the desktop reconnects and reloads what
it shows (``Last-Event-ID`` is not replayed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from convodesk.runtime import Runtime
from convodesk.services import conversations
from convodesk.services.live import Audience, Subscription
from convodesk.storage.api_tokens import Principal
from convodesk.storage.db import read_transaction
from convodesk.web.auth import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/api/v1", tags=["chat"])
HEARTBEAT_SECONDS = 15.0
RETRY_MILLISECONDS = 3000


def audience_of(runtime: Runtime, principal: Principal) -> Audience:
    if principal.is_admin:
        return Audience(admin=True, agent=principal.agent_login)
    with read_transaction(runtime.sessions) as session:
        queues = conversations.visible_queues(session, principal) or set()
    return Audience(admin=False, agent=principal.agent_login, queues=frozenset(queues))


@router.get(
    "/stream",
    summary="Live events (Server-Sent Events): messages, receipts, offers, queues, presence",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> StreamingResponse:
    audience = await run_in_threadpool(audience_of, runtime, principal)
    subscription = runtime.live.subscribe(audience)
    heartbeat: float = getattr(request.app.state, "stream_heartbeat_seconds", HEARTBEAT_SECONDS)
    stopping: asyncio.Event | None = getattr(request.app.state, "stopping", None)
    return StreamingResponse(
        _events(runtime, principal, subscription, heartbeat, stopping),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    runtime: Runtime,
    principal: Principal,
    subscription: Subscription,
    heartbeat: float,
    stopping: asyncio.Event | None,
) -> AsyncIterator[str]:
    # The process stopping ends the subscription, which ends the wait below: one waiter
    # for the stream's life, not one per wake-up (a busy queue wakes every stream often).
    stopper = None
    if stopping is not None:
        stopper = asyncio.ensure_future(stopping.wait())
        stopper.add_done_callback(lambda _: subscription.end())
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n: connected\n\n"
        while stopping is None or not stopping.is_set():
            deliveries = await subscription.next_all(heartbeat)
            if deliveries:
                # Everything waiting in one write; each event's JSON is made once for all
                # the streams that send it (`Delivery.payload_json`).
                yield "".join(f"id: {d.id}\ndata: {d.payload_json}\n\n" for d in deliveries)
                continue
            if subscription.overflowed:
                yield 'data: {"type":"stream.overflow"}\n\n'
                return
            if subscription.closed or (stopping is not None and stopping.is_set()):
                return
            yield ": heartbeat\n\n"
            if not principal.is_admin:
                audience = await run_in_threadpool(audience_of, runtime, principal)
                subscription.set_audience(audience)
    finally:
        if stopper is not None:
            stopper.cancel()
        subscription.close()
