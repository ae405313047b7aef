"""The callback intake in a process of its own: ``convodesk serve --intake-port P``.

One `serve` process runs everything in one interpreter, and so under one GIL: the intake
(HTTP, signature, parse, the event writer), the processor (Chain Matcher), the router, the
sender and the desktops' streams. At several hundred callbacks a second they wait for each
other: the processor's batches took twice their CPU time in wall time, and a callback's
way to the desktop grew with them (docs/benchmarks.md, "Agent desktops"). With
``--intake-port`` the callbacks are served by a child process instead, on that port, and
`serve` keeps the rest; each has a core of its own. The main port still serves the
callback path as well, so webhooks need not change at once.

Hand-over: the child stores each callback (the same `Intake` and `EventWriter`, so the
same checks, answers and durability: nothing is acknowledged before its commit) and then
writes one byte on a socket pair shared with `serve`, whose reader wakes the processor at
once. The byte carries no data: a lost one (the socket's buffer full under a burst) only
means the processor finds the events in the same pass as the others, or at its idle poll.
Both processes write the same database; on SQLite, their writers take turns through
`storage.db`'s write lock (a file lock beside the database), not SQLite's sleeping busy
handler.

Life: `serve` starts the child during start-up and fails if it cannot (the port taken);
afterwards, a child that exits is started again (after 1 s, doubling to 30 s while it keeps
failing). `serve` stops it with SIGTERM at shutdown (in-flight callbacks finish, as in
`serve`). If `serve` itself dies, even by SIGKILL, the child sees its end of the socket
pair close and shuts down the same way: it never outlives its parent.

The child serves ``POST /sms/sinchconversation/{service}``, ``/healthz``, ``/readyz`` and
its own ``/metrics`` (the intake's counters and latency live there, not on the main port).
Settings reach it on its standard input as JSON, never on its command line or in its
environment (``CONVODESK_SECRET_KEY`` is taken out of the environment it inherits): the
database URL may hold a password, and the secret keys are there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from convodesk import logs
from convodesk.domain.config_model import SystemConfig
from convodesk.metrics import Metrics
from convodesk.runtime import Runtime, open_runtime
from convodesk.services.directory import DirectoryCache
from convodesk.services.intake import Intake, IntakeSettings
from convodesk.storage.crypto import KEY_ENV
from convodesk.storage.event_store import EventWriter
from convodesk.web import health, sms_server
from convodesk.web.serving import GracefulServer

log = logs.get_logger("convodesk.intake_process")

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
WAKE = b"w"  # child to parent: callbacks were stored
READY = b"r"  # child to parent: listening


# --------------------------------------------------------------------------- the child


def intake_app(runtime: Runtime, on_accepted: Callable[[], None]) -> Starlette:
    """The child's web app: the callback path, health, readiness and its metrics."""
    metrics = Metrics()
    writer = EventWriter(runtime.engine)
    intake = Intake(
        DirectoryCache(runtime),
        writer,
        settings=IntakeSettings(
            tolerance_seconds=runtime.config.callback_tolerance_seconds,
            max_body_bytes=runtime.config.callback_max_bytes,
        ),
        metrics=metrics,
        on_accepted=on_accepted,
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        writer.start()
        # As `serve` does: what start-up made lives as long as the process; out of the
        # collector's view, a full collection takes a few ms, not 50 (a stall of the acks).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            writer.stop()

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> JSONResponse:
        return await health.readiness(runtime.engine)

    async def prometheus(_request: Request) -> Response:
        return health.metrics_response(metrics)

    app = Starlette(
        routes=[
            Route(sms_server.CALLBACK_PATH, sms_server.receive_callback, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", prometheus),
        ],
        lifespan=lifespan,
    )
    app.state.intake = intake
    app.state.metrics = metrics
    app.state.writer = writer
    return app


def child_main() -> None:
    """``python -m convodesk.web.intake_process``: the settings arrive on standard input."""
    settings = json.loads(sys.stdin.read())
    logs.configure()
    config = SystemConfig(**settings["config"])
    runtime = open_runtime(config, upgrade=False, environ={KEY_ENV: ",".join(settings["keys"])})
    parent = socket.socket(fileno=settings["wake_fd"])
    parent.setblocking(False)

    def wake() -> None:
        with contextlib.suppress(OSError):  # full (a burst: one byte is as good) or gone
            parent.send(WAKE)

    app = intake_app(runtime, wake)
    server = GracefulServer(
        uvicorn.Config(
            app,
            host=settings["host"],
            port=settings["port"],
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
    )

    def parent_gone() -> None:
        try:
            if parent.recv(64):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        asyncio.get_running_loop().remove_reader(parent.fileno())
        log.warning("serve is gone; the intake process stops")
        server.should_exit = True

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.01)
        with contextlib.suppress(OSError):
            parent.send(READY)

    async def serve() -> None:
        asyncio.get_running_loop().add_reader(parent.fileno(), parent_gone)
        announced = asyncio.create_task(announce())
        await server.serve()
        announced.cancel()

    log.info("intake process serving", url=f"http://{settings['host']}:{settings['port']}")
    try:
        asyncio.run(serve())
    finally:
        runtime.close()


# --------------------------------------------------------------------------- the parent


def _process_settings(config: SystemConfig) -> dict[str, Any]:
    """The top-level (per-process) settings; the rest is read from the database."""
    plain = (str, int, float, bool, type(None))
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if isinstance(getattr(config, f.name), plain)
    }


def _popen(settings: dict[str, Any], fd: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "convodesk.web.intake_process"],
        stdin=subprocess.PIPE,
        pass_fds=(fd,),
        env={k: v for k, v in os.environ.items() if k != KEY_ENV},  # it gets the keys on stdin
        # Not in the terminal's process group: Ctrl-C reaches `serve`, which stops the child
        # in its own shutdown (instead of both at once, and the child started again).
        start_new_session=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(settings).encode("utf-8"))
    process.stdin.close()
    return process


class IntakeProcessError(RuntimeError):
    """The intake process could not be started."""


class IntakeProcess:
    """`serve`'s side: starts the child, wakes the processor when it says so, starts it
    again if it exits, stops it at shutdown."""

    def __init__(
        self, runtime: Runtime, *, host: str, port: int, on_wake: Callable[[], None]
    ) -> None:
        self._runtime = runtime
        self.host = host
        self.port = port
        self._on_wake = on_wake
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = threading.Event()  # the present child said it listens
        self.starts = 0  # how many times a child was started (restarts are starts - 1)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The present child's exit code once it has exited (0 after a clean stop)."""
        return self._process.poll() if self._process is not None else None

    async def start(self) -> None:
        """Start the child and wait until it accepts connections; `IntakeProcessError` if
        it exits first or is not up in time."""
        self._loop = asyncio.get_running_loop()
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        settings = {
            "config": _process_settings(self._runtime.config),
            "keys": self._runtime.box.key_material(),
            "host": self.host,
            "port": self.port,
            "wake_fd": theirs.fileno(),
        }
        try:
            process = await asyncio.to_thread(_popen, settings, theirs.fileno())
        finally:
            theirs.close()
        self.starts += 1
        self._process, self._socket = process, ours
        self._ready = threading.Event()
        assert self._loop is not None
        self._loop.add_reader(ours.fileno(), self._readable, ours)
        try:
            await asyncio.to_thread(self._wait_until_up, process, self._ready)
        except BaseException:
            self._drop_socket()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.to_thread(process.wait)
            raise

    def _wait_until_up(self, process: subprocess.Popen[bytes], ready: threading.Event) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not ready.wait(0.05):
            if process.poll() is not None:
                raise IntakeProcessError(
                    f"the intake process exited during start-up (code {process.returncode}); "
                    f"is port {self.port} free?"
                )
            if time.monotonic() > deadline:
                raise IntakeProcessError(
                    f"the intake process did not listen on {self.port} in time"
                )

    def _readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            if READY in data and sock is self._socket:
                self._ready.set()
            if WAKE in data:
                self._on_wake()
        elif self._socket is sock:  # the child closed its end: it is exiting
            self._drop_socket()

    def _drop_socket(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()

    async def _supervise(self) -> None:
        delay = RESTART_FIRST_SECONDS
        while not self._stopping:
            process = self._process
            assert process is not None
            code = await asyncio.to_thread(process.wait)
            if self._stopping:
                return
            self._drop_socket()
            log.error("the intake process exited; starting it again", code=code, in_seconds=delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn()
                delay = RESTART_FIRST_SECONDS
            except Exception as exc:  # not started (port taken meanwhile, no memory...): later
                log.error("the intake process did not start", error=f"{type(exc).__name__}: {exc}")
                delay = min(delay * 2, RESTART_MAX_SECONDS)

    def stopping(self) -> None:
        """`serve` has begun to stop: a child that exits now (systemd's SIGTERM reaches the
        whole control group) is not started again; `stop` follows."""
        self._stopping = True

    async def stop(self) -> None:
        """SIGTERM: the child finishes its in-flight callbacks and exits; killed if it has
        not after `STOP_TIMEOUT_SECONDS`."""
        self._stopping = True
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("the intake process did not stop in time; killed")
                process.kill()
                await asyncio.to_thread(process.wait)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._drop_socket()


if __name__ == "__main__":
    child_main()
