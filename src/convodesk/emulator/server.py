"""Running the emulator: as a process (`serve_forever`) or on a background thread.

`serve_forever` is what ``convodesk emulator --config FILE --port N`` calls; uvicorn handles
Ctrl-C and SIGTERM and shuts the app down cleanly (callback tasks cancelled, clients closed).

`running_emulator` is the in-process form for the demo and the tests: its own thread, its own
event loop, a real socket (port 0 picks a free one), stopped and joined on exit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from convodesk.emulator.app import create_emulator_app, emulator_of
from convodesk.emulator.config import EmulatorConfig, load_emulator_config
from convodesk.emulator.core import Emulator, SendListener
from convodesk.web.serving import GracefulServer

STARTUP_TIMEOUT_SECONDS = 15.0


_Server = GracefulServer


def serve_forever(config_path: str, host: str, port: int) -> None:
    """Load the config at ``config_path`` and serve until SIGINT/SIGTERM (blocking)."""
    config = load_emulator_config(config_path)
    app = create_emulator_app(config)
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    server.run()
    if not server.started:
        raise RuntimeError(f"the Sinch emulator could not start on {host}:{port}")


@dataclass(frozen=True)
class RunningEmulator:
    """A started emulator: where it listens and its state, for observers in the same process."""

    base_url: str
    emulator: Emulator

    def region_url(self, region: str) -> str:
        """The origin the SDKs call for ``region``, e.g. ``http://127.0.0.1:54321/eu``."""
        return f"{self.base_url}/{region}"

    def add_send_listener(self, listener: SendListener) -> Callable[[], None]:
        """See `Emulator.add_send_listener`; runs on the emulator's thread."""
        return self.emulator.add_send_listener(listener)


@contextmanager
def running_emulator(
    config: EmulatorConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token_ttl_seconds: int | None = None,
    clock: Callable[[], float] = time.time,
) -> Iterator[RunningEmulator]:
    """Serve ``config`` on a background thread for the duration of the ``with`` block."""
    app = create_emulator_app(config, token_ttl_seconds=token_ttl_seconds, clock=clock)
    # uvicorn installs signal handlers only on the main thread, so Ctrl-C stays the caller's.
    server = uvicorn.Server(
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

    thread = threading.Thread(target=run, name="sinch-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not server.started:
        if failure or not thread.is_alive():
            thread.join(timeout=1)
            raise RuntimeError("the Sinch emulator failed to start") from (
                failure[0] if failure else None
            )
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=5)
            raise RuntimeError("the Sinch emulator did not start in time")
        time.sleep(0.005)
    try:
        sockets = [s for srv in server.servers for s in (srv.sockets or ())]
        bound_host, bound_port = sockets[0].getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield RunningEmulator(base_url=f"http://{shown}:{bound_port}", emulator=emulator_of(app))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
