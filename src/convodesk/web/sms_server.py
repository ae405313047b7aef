"""The SMS Server's HTTP side: ``POST /sms/sinchconversation/{service}``.

Reads the raw body (refusing more than the configured limit without reading it all),
hands it to `services.intake.Intake`, and turns the answer into HTTP. A database that
cannot commit answers 503 with ``Retry-After``: Sinch retries, and nothing was
acknowledged that is not stored.

The route is served by a plain Starlette route rather than a FastAPI one: FastAPI's
per-request machinery (dependency solving, an exit stack per request) took about 15 % of
the intake's throughput, and this handler needs none of it (docs/benchmarks.md). A FastAPI
route with the same path stays behind it, so that the OpenAPI description still lists the
callback; the plain route matches first and serves every request.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from convodesk import logs
from convodesk.metrics import Metrics
from convodesk.services.intake import Answer, Intake
from convodesk.web.errors import error_body

CALLBACK_PATH = "/sms/sinchconversation/{service}"
router = APIRouter(tags=["callbacks"])
log = logs.get_logger("convodesk.sms_server")


async def receive_callback(request: Request) -> Response:
    service: str = request.path_params["service"]
    intake: Intake = request.app.state.intake
    metrics: Metrics = request.app.state.metrics
    started = time.perf_counter()
    try:
        answer = await _receive(service, request, intake)
    finally:
        metrics.intake_latency.observe(time.perf_counter() - started)
    if answer is None:
        return JSONResponse(
            error_body("unavailable", "the callback could not be stored; retry"),
            status_code=503,
            headers={"Retry-After": "5"},
        )
    if answer.status >= 400:
        log.info("callback rejected", service=service[:100], status=answer.status, code=answer.code)
    return Response(answer.json(), status_code=answer.status, media_type="application/json")


async def _receive(service: str, request: Request, intake: Intake) -> Answer | None:
    """The intake's answer, or None if the callback could not be stored."""
    limit = intake.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return await intake.too_large(service, b"")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return await intake.too_large(service, bytes(body[:4096]))
    try:
        return await intake.handle(service, bytes(body), request.headers)
    except Exception as exc:  # the event could not be stored: never answer 2xx
        log.error("callback not stored", service=service[:100], error=type(exc).__name__)
        return None


router.add_route(CALLBACK_PATH, receive_callback, methods=["POST"], include_in_schema=False)


@router.post(
    CALLBACK_PATH,
    summary="Sinch Conversation API callback (signed)",
    responses={
        200: {"description": "stored (or a duplicate of a stored callback)"},
        400: {"description": "not a recognisable callback"},
        401: {"description": "signature missing, wrong or stale"},
        403: {"description": "the app is not one of this messaging service's apps"},
        404: {"description": "no such messaging service"},
        413: {"description": "body over the size limit"},
        503: {"description": "the event could not be stored; retry"},
    },
)
async def documented_callback(service: str, request: Request) -> Response:
    """Lists the callback in the OpenAPI description; the plain route above serves it
    (and this would answer the same, should it ever be reached)."""
    del service  # read from the path by receive_callback
    return await receive_callback(request)
