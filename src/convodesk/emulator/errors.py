"""Sinch's error answers: ``{"error": {"code", "message", "status", "details"}}``.

The Conversation API answers errors the Google-API way (reference section 4): the HTTP code,
a message, and the gRPC status name. Handlers raise `ApiError`; the app turns it into that body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

STATUS_NAMES: Mapping[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    # grpc-gateway answers a known path with the wrong verb 405 with status UNIMPLEMENTED.
    405: "UNIMPLEMENTED",
    409: "ALREADY_EXISTS",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ApiError(Exception):
    """An error answer in Sinch's shape; ``headers`` go out with it (Retry-After, ...)."""

    def __init__(
        self,
        http_status: int,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})

    @property
    def status(self) -> str:
        return STATUS_NAMES.get(self.http_status, "UNKNOWN")

    def body(self) -> dict[str, Any]:
        return error_body(self.http_status, self.message, details=self.details)


def error_body(
    http_status: int, message: str, *, details: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    return {
        "error": {
            "code": http_status,
            "message": message,
            "status": STATUS_NAMES.get(http_status, "UNKNOWN"),
            "details": [dict(d) for d in details],
        }
    }


def invalid(field: str, problem: str) -> ApiError:
    """A 400 naming the offending field, e.g. ``recipient.identified_by``."""
    return ApiError(400, f"Invalid argument '{field}': {problem}")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON, as Sinch writes it (no spaces, non-ASCII kept as is)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
