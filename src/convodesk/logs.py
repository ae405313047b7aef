"""Structured logging (structlog) for every process.

Secrets never reach a log line: configuration objects carry them as `Secret`, which prints
as ``********``, and `redact` masks values of keys that look secret as a second line of
defence for dictionaries logged whole.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import structlog

from convodesk.domain.secrets import MASK

_SECRET_KEY = re.compile(r"(secret|password|token|authorization|api_key)", re.IGNORECASE)


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key != "event" and _SECRET_KEY.search(key) and event[key] is not None:
            event[key] = MASK
    return event


def configure(level: str = "INFO", *, json: bool = False) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s")
    # httpx logs every request at INFO: at 800 sends a second, a line per send (and a share
    # of the sender's CPU). Its warnings still show.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
