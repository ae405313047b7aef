"""Running the emulator: as a process (`serve_forever`) or on a background thread.

`serve_forever` is what ``convodesk emulator --config FILE --port N`` calls; uvicorn handles
Ctrl-C and SIGTERM and shuts the app down cleanly (callback tasks cancelled, clients closed).

`running_emulator` is the in-process form for the demo and the tests: its own thread, its own
event loop, a real socket (port 0 picks a free one), stopped and joined on exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from convodesk.emulator.app import create_emulator_app, emulator_of
from convodesk.emulator.config import EmulatorConfig, load_emulator_config
from convodesk.emulator.core import Emulator, SendListener
from convodesk.web.serving import GracefulServer, serve_in_thread

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
    with serve_in_thread(app, host, port, name="Sinch emulator") as base_url:
        yield RunningEmulator(base_url=base_url, emulator=emulator_of(app))
