"""`create_app(runtime)` builds the whole web application. No module-level app, engine or
settings: tests build one per test, the CLI builds one per process."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

import convodesk
from convodesk.runtime import Runtime
from convodesk.storage import db
from convodesk.web import errors
from convodesk.web.api.v1 import admin
from convodesk.web.auth import PrincipalDep


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="convodesk",
        version=convodesk.__version__,
        description="Contact-center messaging for the Sinch Conversation API.",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    errors.install(app)
    app.include_router(admin.router)

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="The database answers")
    async def readyz() -> JSONResponse:
        try:
            await run_in_threadpool(db.ping, runtime.engine)
        except Exception as exc:  # any failure to reach the database means "not ready"
            body = errors.error_body("not_ready", f"database unreachable: {type(exc).__name__}")
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/api/v1/me", tags=["auth"], summary="Who the token belongs to")
    async def me(principal: PrincipalDep) -> dict[str, Any]:
        return {"role": principal.role, "agent": principal.agent_login}

    return app
