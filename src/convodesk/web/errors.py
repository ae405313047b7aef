"""The one place where our errors become HTTP answers.

Every error body is ``{"error": {"code": <slug>, "message": <text>}}``; a configuration
rule that fails answers 422 with ``"errors": [{"path", "message"}]`` beside it, the same
list `config validate` prints. An error's named `data` fields go beside them (a WhatsApp
reply refused outside the window carries ``"templates"``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from convodesk.services.errors import (
    ConflictError,
    ForbiddenError,
    InvalidConfigError,
    InvalidRequestError,
    NotFoundError,
    ServiceError,
)

_STATUS: list[tuple[type[ServiceError], int, str]] = [
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (InvalidRequestError, 422, "invalid_request"),
    (InvalidConfigError, 422, "invalid_configuration"),
]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}, **extra}


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    status, code = next(
        ((status, code) for cls, status, code in _STATUS if isinstance(exc, cls)),
        (400, "bad_request"),
    )
    extra: dict[str, Any] = {k: v for k, v in exc.data.items() if k not in ("error", "errors")}
    if isinstance(exc, InvalidConfigError):
        extra["errors"] = [
            {"path": p.path, "message": p.message, "severity": p.severity} for p in exc.problems
        ]
        kind = "request" if isinstance(exc, InvalidRequestError) else "configuration"
        message = f"{len(exc.problems)} {kind} error(s)"
    else:
        message = str(exc)
    return JSONResponse(error_body(code, message, **extra), status_code=status)


async def _request_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        errors.append({"path": ".".join(loc), "message": str(err.get("msg", "invalid"))})
    return JSONResponse(
        error_body("invalid_request", "the request is not valid", errors=errors),
        status_code=422,
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {
        400: "bad_request",
        401: "unauthenticated",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
    }.get(exc.status_code, "error")
    return JSONResponse(
        error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
