"""The operations endpoints' answers, shared by the web app (`web/app.py`) and the intake
process (`web/intake_process.py`): readiness and Prometheus metrics."""

from __future__ import annotations

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from convodesk.metrics import Metrics
from convodesk.storage import db
from convodesk.web import errors

METRICS_MEDIA_TYPE = "text/plain; version=0.0.4"


async def readiness(engine: Engine) -> JSONResponse:
    """200 when the database answers, 503 naming the kind of failure otherwise."""
    try:
        await run_in_threadpool(db.ping, engine)
    except Exception as exc:  # any failure to reach the database means "not ready"
        body = errors.error_body("not_ready", f"database unreachable: {type(exc).__name__}")
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready"})


def metrics_response(metrics: Metrics) -> Response:
    return Response(metrics.render(), media_type=METRICS_MEDIA_TYPE)
