"""The background workers of one process, started and stopped together: the processor
(Chain Matcher), the media fetcher, the sender, the router (Chat Server), housekeeping and
the sampler of the database gauges of ``/metrics``.

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
from prometheus_client import start_http_server

from convodesk import logs
from convodesk.metrics import Metrics
from convodesk.runtime import Runtime
from convodesk.services.directory import DirectoryCache
from convodesk.workers import housekeeping
from convodesk.workers.gauges import GaugeSampler
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
        self.sender = Sender(runtime, directory, transport=sinch_transport, metrics=metrics)
        self.router = Router(runtime, directory, metrics=metrics)
        self.gauges = GaugeSampler(runtime, metrics)
        self.processor.on_threaded = self.router.wake
        self.router.on_prompts = self.sender.wake

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self.processor.run(stop)),
            asyncio.create_task(self.media.run(stop)),
            asyncio.create_task(self.sender.run(stop)),
            asyncio.create_task(self.router.run(stop)),
            asyncio.create_task(housekeeping.run(self.runtime, stop)),
            asyncio.create_task(self.gauges.run(stop)),
        ]


def run_workers(
    runtime: Runtime, *, metrics_host: str = "127.0.0.1", metrics_port: int | None = None
) -> None:
    """`convodesk worker`: run until SIGINT or SIGTERM, then let started sends finish.

    With `metrics_port`, the process's metrics are served for Prometheus at
    ``http://{metrics_host}:{metrics_port}/metrics`` (a worker has no web app of its own)."""
    logs.configure()
    metrics = Metrics()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        workers = Workers(runtime, DirectoryCache(runtime), metrics)
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

    server = None
    if metrics_port is not None:
        server, _ = start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)
        log.info("metrics served", url=f"http://{metrics_host}:{server.server_port}/metrics")
    try:
        asyncio.run(main())
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        runtime.close()
