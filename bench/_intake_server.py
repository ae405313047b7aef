"""The server side of the intake benchmark, run in its own process.

``python -m bench._intake_server intake DATABASE_URL DATA_DIR PORT`` serves convodesk's app
(`create_app`, as ``convodesk serve`` builds it) without the background workers, mode
``intake+workers`` with them;
``python -m bench._intake_server bare - - PORT`` serves a bare Starlette app whose only
route, at the same path, reads the body and answers 200. Both run under the same uvicorn
options (`uvicorn_config`), so the ratio between them is the intake's own cost.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from convodesk.domain.config_model import SystemConfig
from convodesk.runtime import open_runtime
from convodesk.web.app import create_app
from convodesk.web.serving import GracefulServer

CALLBACK_PATH = "/sms/sinchconversation/{service}"
SECRET_KEY = "bench-secret-key-0123456789abcdef"  # encrypts the stored config; bench only


def uvicorn_config(app: Any, port: int) -> uvicorn.Config:
    # uvicorn picks httptools/uvloop when installed ("auto"); neither is a dependency, so
    # both servers run on h11 and the asyncio loop.
    return uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on"
    )


def bare_app() -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "accepted", "event_id": 1})

    return Starlette(routes=[Route(CALLBACK_PATH, receive, methods=["POST"])])


def main(argv: list[str]) -> None:
    mode, database_url, data_dir, port = argv[0], argv[1], argv[2], int(argv[3])
    runtime = None
    if mode == "bare":
        app: Any = bare_app()
    else:
        config = SystemConfig(database_url=database_url, data_dir=data_dir)
        runtime = open_runtime(config, upgrade=False, environ={"CONVODESK_SECRET_KEY": SECRET_KEY})
        app = create_app(runtime, workers=mode == "intake+workers")
    try:
        GracefulServer(uvicorn_config(app, port)).run()
    finally:
        if runtime is not None:
            runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
