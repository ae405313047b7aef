"""Run the web app under uvicorn, in the foreground, until SIGINT or SIGTERM.

uvicorn's own shutdown lets in-flight requests finish before the process exits.
"""

from __future__ import annotations

import uvicorn

from convodesk import logs
from convodesk.runtime import Runtime
from convodesk.web.app import create_app
from convodesk.web.serving import GracefulServer


def run_server(runtime: Runtime, *, host: str, port: int, intake_port: int | None = None) -> None:
    logs.configure()
    log = logs.get_logger("convodesk.server")
    app = create_app(runtime, workers=True, intake_port=intake_port, intake_host=host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False, lifespan="on"
    )
    server = GracefulServer(config)
    log.info(
        "serving",
        url=f"http://{host}:{port}",
        callbacks_also_at=None if intake_port is None else f"http://{host}:{intake_port}",
        database=runtime.engine.url.get_backend_name(),
    )
    try:
        server.run()
    finally:
        runtime.close()
