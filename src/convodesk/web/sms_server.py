"""The SMS Server's HTTP side: ``POST /sms/sinchconversation/{service}``.

Reads the raw body (refusing more than the configured limit without reading it all),
hands it to `services.intake.Intake`, and turns the answer into HTTP. A database that
cannot commit answers 503 with ``Retry-After``: Sinch retries, and nothing was
acknowledged that is not stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from convodesk import logs
from convodesk.services.intake import Intake
from convodesk.web.errors import error_body

router = APIRouter(tags=["callbacks"])
log = logs.get_logger("convodesk.sms_server")


@router.post(
    "/sms/sinchconversation/{service}",
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
async def receive_callback(service: str, request: Request) -> JSONResponse:
    intake: Intake = request.app.state.intake
    metrics = request.app.state.metrics
    limit = intake.settings.max_body_bytes
    with metrics.intake_latency.time():
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            answer = await intake.too_large(service, b"")
            return JSONResponse(answer.body(), status_code=answer.status)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                answer = await intake.too_large(service, bytes(body[:4096]))
                return JSONResponse(answer.body(), status_code=answer.status)
        try:
            answer = await intake.handle(service, bytes(body), request.headers)
        except Exception as exc:  # the event could not be stored: never answer 2xx
            log.error("callback not stored", service=service[:100], error=type(exc).__name__)
            return JSONResponse(
                error_body("unavailable", "the callback could not be stored; retry"),
                status_code=503,
                headers={"Retry-After": "5"},
            )
    if answer.status >= 400:
        log.info("callback rejected", service=service[:100], status=answer.status, code=answer.code)
    return JSONResponse(answer.body(), status_code=answer.status)
