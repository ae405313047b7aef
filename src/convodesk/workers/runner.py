"""The background workers of one process, started and stopped together: the processor
(Chain Matcher), the media fetcher, the sender, the router (Chat Server) and housekeeping.

`serve` runs them inside the web app's lifespan; `convodesk worker` runs them alone (no
HTTP), for deployments that keep web nodes and worker nodes apart. Several worker
processes may run at once on PostgreSQL: each claims its own rows (`FOR UPDATE SKIP
LOCKED`) and the send rate limits are shared through the database.
"""

from __future__ import annotations

import asyncio
import gc
import signal

import httpx

from convodesk import logs
from convodesk.metrics import Metrics
from convodesk.runtime import Runtime
from convodesk.services.directory import DirectoryCache
from convodesk.workers import housekeeping
from convodesk.workers.media import MediaFetcher
from convodesk.workers.processor import Processor
from convodesk.workers.router import Router
from convodesk.workers.sender import Sender

log = logs.get_logger("convodesk.worker")


class Workers:
    def __init__(
        self,
        runtime: Runtime,
        directory: DirectoryCache,
        metrics: Metrics,
        *,
        sinch_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.runtime = runtime
        self.processor = Processor(runtime, directory, metrics=metrics)
        self.media = MediaFetcher(runtime, metrics=metrics)
        self.sender = Sender(runtime, directory, transport=sinch_transport)
        self.router = Router(runtime, directory)
        self.processor.on_threaded = self.router.wake
        self.router.on_prompts = self.sender.wake

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self.processor.run(stop)),
            asyncio.create_task(self.media.run(stop)),
            asyncio.create_task(self.sender.run(stop)),
            asyncio.create_task(self.router.run(stop)),
            asyncio.create_task(housekeeping.run(self.runtime, stop)),
        ]


def run_workers(runtime: Runtime) -> None:
    """`convodesk worker`: run until SIGINT or SIGTERM, then let started sends finish."""
    logs.configure()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        workers = Workers(runtime, DirectoryCache(runtime), Metrics())
        tasks = workers.start(stop)
        # As `serve` does after start-up: the long-lived objects (modules, the configuration,
        # SQLAlchemy's caches) leave the collector's view, so a full collection no longer
        # stops the event loop for tens of milliseconds (sends would miss their slots).
        gc.collect()
        gc.freeze()
        log.info("workers running", database=runtime.engine.url.get_backend_name())
        await stop.wait()
        log.info("stopping: finishing started work")
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        runtime.close()
