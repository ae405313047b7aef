"""A uvicorn server that exits cleanly on SIGINT and SIGTERM.

uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown, so the process dies
of the signal (or prints a KeyboardInterrupt traceback). Our processes return instead, so
`convodesk serve`, `convodesk emulator` and `convodesk demo` exit 0 after a clean shutdown:
in-flight requests finish, the lifespan shutdown runs, then the command returns.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import uvicorn

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Long-lived responses (the live event stream) would hold the graceful shutdown
        # open for ever: an app that has `state.begin_shutdown` is told first, and ends them.
        begin = getattr(getattr(self.config.app, "state", None), "begin_shutdown", None)
        if callable(begin):
            begin()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signal handlers can only be installed on the main thread; a server on a background
        # thread (tests, the in-process emulator) is stopped with `should_exit` instead.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


STARTUP_TIMEOUT_SECONDS = 15.0


@contextlib.contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, name: str = "server"
) -> Iterator[str]:
    """Serve an ASGI app on a background thread (its own event loop, a real socket; port 0
    picks a free one) for the duration of the block; yields the base URL."""
    server = GracefulServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if failure or not thread.is_alive():
            thread.join(timeout=1)
            raise RuntimeError(f"the {name} failed to start") from (failure[0] if failure else None)
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=5)
            raise RuntimeError(f"the {name} did not start in time")
        time.sleep(0.005)
    try:
        sockets = [s for srv in server.servers for s in (srv.sockets or ())]
        bound_host, bound_port = sockets[0].getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
