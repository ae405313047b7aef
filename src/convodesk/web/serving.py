"""A uvicorn server that exits cleanly on SIGINT and SIGTERM.

uvicorn re-raises a caught SIGTERM/SIGINT after its graceful shutdown, so the process dies
of the signal (or prints a KeyboardInterrupt traceback). Our processes return instead, so
`convodesk serve`, `convodesk emulator` and `convodesk demo` exit 0 after a clean shutdown:
in-flight requests finish, the lifespan shutdown runs, then the command returns.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Generator

import uvicorn

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulServer(uvicorn.Server):
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
