"""`create_app(runtime)` builds the whole web application. No module-level app, engine or
settings: tests build one per test, the CLI builds one per process.

With `workers=True` (what `serve` does) the app's lifespan also runs the background
workers of this process: the event writer thread, the processor (Chain Matcher), the
media fetcher, the sender and the router (Chat Server). Tests that want to drive the
workers themselves pass `workers=False`; the event writer runs either way, since the intake
cannot answer without it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

import convodesk
from convodesk.metrics import Metrics
from convodesk.runtime import Runtime
from convodesk.services import attachments as attachment_service
from convodesk.services.directory import DirectoryCache
from convodesk.services.errors import NotFoundError
from convodesk.services.intake import Intake, IntakeSettings
from convodesk.storage.event_store import EventWriter
from convodesk.web import errors, health, pages, sessions, sms_server
from convodesk.web.api.v1 import admin, attachments, chat, conversations, events, replies, stream
from convodesk.web.intake_process import IntakeProcess
from convodesk.workers.runner import Workers


def create_app(
    runtime: Runtime,
    *,
    workers: bool = False,
    sinch_transport: httpx.AsyncBaseTransport | None = None,
    intake_port: int | None = None,
    intake_host: str = "127.0.0.1",
) -> FastAPI:
    metrics = Metrics()
    directory = DirectoryCache(runtime)
    writer = EventWriter(runtime.engine)
    background = Workers(runtime, directory, metrics, sinch_transport=sinch_transport)
    processor, media, sender = background.processor, background.media, background.sender
    intake = Intake(
        directory,
        writer,
        settings=IntakeSettings(
            tolerance_seconds=runtime.config.callback_tolerance_seconds,
            max_body_bytes=runtime.config.callback_max_bytes,
        ),
        metrics=metrics,
        on_accepted=processor.wake,
    )
    # The callbacks in a process of their own (`serve --intake-port`): it wakes our processor.
    intake_process = (
        IntakeProcess(runtime, host=intake_host, port=intake_port, on_wake=processor.wake)
        if intake_port is not None
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        writer.start()
        if intake_process is not None:  # first: if it cannot start, neither does serve
            try:
                await intake_process.start()
            except BaseException:
                writer.stop()
                raise
        # The desktops of this process hear the other processes' events (PostgreSQL).
        await asyncio.to_thread(runtime.live.start_listening)
        stop = asyncio.Event()
        tasks = background.start(stop)
        if not workers:
            stop.set()
        # What start-up allocated lives as long as the process: moving it out of the
        # collector's reach keeps full collections (tens of ms under load) off the p99.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            app.state.stopping.set()
            if intake_process is not None:
                await intake_process.stop()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(runtime.live.stop_listening)
            writer.stop()

    app = FastAPI(
        title="convodesk",
        version=convodesk.__version__,
        description="Contact-center messaging for the Sinch Conversation API.",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.directory = directory
    app.state.writer = writer
    app.state.intake = intake
    app.state.processor = processor
    app.state.media = media
    app.state.sender = sender
    app.state.router = background.router
    # Set when the server begins to stop (`serving.GracefulServer`): live streams end, so
    # the graceful shutdown does not wait on them for ever.
    app.state.stopping = asyncio.Event()

    def begin_shutdown() -> None:
        app.state.stopping.set()
        if intake_process is not None:  # a child that exits from now on is not replaced
            intake_process.stopping()

    app.state.begin_shutdown = begin_shutdown
    app.state.csrf_key = runtime.box.derive_key(sessions.CSRF_KEY_PURPOSE)
    app.state.login_throttle = sessions.LoginThrottle()
    errors.install(app)
    # The callback route first: routes are matched in order, and it is the hot path.
    app.include_router(sms_server.router)
    # Before admin: /api/v1/queues/overview must not be taken for the queue "overview".
    app.include_router(chat.router)
    app.include_router(admin.router)
    app.include_router(events.router)
    app.include_router(conversations.router)
    app.include_router(replies.router)
    app.include_router(attachments.router)
    app.include_router(stream.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="The database answers")
    async def readyz() -> JSONResponse:
        return await health.readiness(runtime.engine)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return health.metrics_response(metrics)

    @app.get(
        "/sms/richcontent/{token}",
        tags=["callbacks"],
        summary="A stored attachment, by its unguessable token (no login); 410 once expired",
    )
    async def richcontent(token: str) -> Response:
        try:
            served = await run_in_threadpool(attachment_service.served_file, runtime, token)
        except NotFoundError:
            return _not_served(404, "not_found", "no such attachment")
        except attachment_service.AttachmentGoneError:
            return _not_served(410, "gone", "this attachment has expired")
        return _file_response(served)

    # HEAD too (media fetchers ask for the size and type first); one entry in the schema.
    app.add_api_route(
        "/sms/richcontent/{token}", richcontent, methods=["HEAD"], include_in_schema=False
    )

    return app


# Served files are other people's content: never sniffed into something else, never run as
# a page of ours (no scripts, no plugins, a unique origin), shown inline only when harmless.
_SERVED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Referrer-Policy": "no-referrer",
}


def _file_response(served: attachment_service.ServedFile) -> FileResponse:
    disposition = "inline" if served.inline else "attachment"
    headers = {**_SERVED_HEADERS, "Cache-Control": f"public, max-age={served.max_age}"}
    if served.filename is None:
        headers["Content-Disposition"] = disposition
    return FileResponse(
        served.path,
        media_type=served.content_type,
        filename=served.filename,
        content_disposition_type=disposition,
        stat_result=served.stat,
        headers=headers,
    )


def _not_served(status: int, code: str, message: str) -> JSONResponse:
    # no-store: a download still under way answers 404 now and 200 a moment later
    return JSONResponse(
        errors.error_body(code, message),
        status_code=status,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
