"""Every way a call to Sinch can fail, as one error tree that says whether to try again.

This is the single place where transport failures (``httpx`` exceptions) and HTTP error answers
become our errors; callers only ever see a :class:`SinchError`. Each error says whether it is
``permanent`` (the same request will fail again: stop and show the reason to the agent) or
transient (try again later, after ``retry_after`` seconds when Sinch said so). The client does
not retry: retries and backoff belong to the outbox worker that calls it.

Errors::

    SinchError
    ├── TransientError              permanent = False
    │   ├── RateLimitedError        429
    │   ├── ServerError             5xx
    │   ├── SinchTimeoutError       connect/read/write/pool timeout; HTTP 408
    │   ├── ConnectionFailedError   connection refused or lost, proxy failure
    │   ├── TokenExpiredError       401 "expired" even after a fresh token
    │   ├── ProtocolViolationError  a 2xx we cannot use (no message_id, not JSON, bad token)
    │   └── RetryLaterError         other answers that ask to try again (425 Too Early)
    └── PermanentError              permanent = True
        ├── BadRequestError         400 (Sinch's synchronous validation, INVALID_ARGUMENT)
        ├── AuthenticationError     401 (bad credentials at the token endpoint, bad token)
        ├── ForbiddenError          403 (the key belongs to another project)
        ├── NotFoundError           404 (unknown project or app, or the app's wrong region)
        ├── ClientError             any other 4xx
        ├── UnexpectedResponseError 1xx/3xx answers, redirect loops (a wrong service URL)
        └── InvalidRequestError     a request httpx could not send (bad URL, bad header)

Every error carries ``http_status`` (None for transport failures), Sinch's ``status`` string
(``INVALID_ARGUMENT``, or OAuth2's ``invalid_client`` from the token endpoint), a ``message``
that is safe to show to an agent (Sinch's own text, or ours; never a token or a secret) and
``retry_after``. ``maybe_accepted`` is True when the request may have reached Sinch and been
accepted although we got no usable answer (a read timeout, a connection lost after sending, a
2xx we cannot read): a retry of a send may then deliver the message twice, as Sinch's
``messages:send`` takes no idempotency key.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import ClassVar

import httpx

MAX_MESSAGE_LENGTH = 500
_MAX_BODY_BYTES = 64 * 1024  # larger error bodies are not parsed
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class SinchError(Exception):
    """Sinch did not accept the request.

    To add a kind of failure: subclass :class:`TransientError` or :class:`PermanentError`
    (never this class directly), give it a docstring whose first line is its default message,
    map it in ``_STATUS_CLASSES`` or ``_TRANSPORT_CLASSES`` below, and add it to the expected
    tables in ``tests/unit/sinch/test_errors.py``.
    """

    permanent: ClassVar[bool] = False

    def __init__(
        self,
        message: str | None = None,
        *,
        http_status: int | None = None,
        status: str | None = None,
        retry_after: float | None = None,
        maybe_accepted: bool = False,
    ) -> None:
        self.message = _clean(message) or _default_message(type(self))
        self.http_status = http_status
        self.status = status
        self.retry_after = retry_after
        self.maybe_accepted = maybe_accepted
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = [str(self.http_status)] if self.http_status is not None else []
        if self.status:
            parts.append(self.status)
        return f"{self.message} (HTTP {' '.join(parts)})" if parts else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, http_status={self.http_status!r}, "
            f"status={self.status!r}, retry_after={self.retry_after!r})"
        )


class TransientError(SinchError):
    """Sinch could not take the request now; the same request may succeed later."""

    permanent = False


class PermanentError(SinchError):
    """Sinch refused the request; sending it again will not help."""

    permanent = True


# ------------------------------------------------------------------------------- transient


class RateLimitedError(TransientError):
    """Sinch is rate limiting this project or app; try again later."""


class ServerError(TransientError):
    """Sinch had a server error; try again later."""


class SinchTimeoutError(TransientError):
    """Sinch did not answer in time."""


class ConnectionFailedError(TransientError):
    """Could not reach Sinch (connection refused, reset or lost)."""


class TokenExpiredError(TransientError):
    """Sinch said the access token has expired (the client has already retried once)."""


class ProtocolViolationError(TransientError):
    """Sinch answered with something we could not use."""


class RetryLaterError(TransientError):
    """Sinch asked to try the request again later."""


# ------------------------------------------------------------------------------- permanent


class BadRequestError(PermanentError):
    """Sinch refused the request as invalid."""


class AuthenticationError(PermanentError):
    """Sinch refused the credentials (check the access key id and secret)."""


class ForbiddenError(PermanentError):
    """The access key may not use this project or app."""


class NotFoundError(PermanentError):
    """Sinch does not know this project or app (or it is in another region)."""


class ClientError(PermanentError):
    """Sinch refused the request."""


class UnexpectedResponseError(PermanentError):
    """Sinch answered in a way a send never expects (check the service connection URL)."""


class InvalidRequestError(PermanentError):
    """The request could not be sent as built (check the service connection URL)."""


# --------------------------------------------------------------------------- HTTP answers

_STATUS_CLASSES: dict[int, type[SinchError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    408: SinchTimeoutError,
    425: RetryLaterError,
    429: RateLimitedError,
}


def class_for_status(http_status: int) -> type[SinchError]:
    """The error class for a non-2xx HTTP status (401 "expired" is decided by the headers).

    Known statuses first; then 4xx permanent, 5xx transient; 2xx is a protocol violation when
    it gets here (the caller could not use the answer); anything else (1xx, 3xx, nonsense) an
    unexpected answer.
    """
    known = _STATUS_CLASSES.get(http_status)
    if known is not None:
        return known
    if 400 <= http_status < 500:
        return ClientError
    if 500 <= http_status < 600:
        return ServerError
    if 200 <= http_status < 300:
        return ProtocolViolationError
    return UnexpectedResponseError


def is_token_expired(response: httpx.Response) -> bool:
    """A 401 whose ``www-authenticate`` says ``expired``, the signal every Sinch SDK keys on."""
    return (
        response.status_code == 401
        and "expired" in response.headers.get("www-authenticate", "").lower()
    )


def error_from_response(
    response: httpx.Response, *, now: Callable[[], datetime] | None = None
) -> SinchError:
    """Map an HTTP answer we cannot use to its error, with Sinch's status and message.

    Reads both error shapes Sinch uses: the API's ``{"error": {"code", "message", "status",
    "details"}}`` and the token endpoint's OAuth2 ``{"error", "error_description"}``. ``now``
    (default the wall clock) turns an HTTP-date ``Retry-After`` into seconds.
    """
    http_status = response.status_code
    cls: type[SinchError] = class_for_status(http_status)
    if is_token_expired(response):
        cls = TokenExpiredError
    status, message = _error_fields(response)
    return cls(
        message,
        http_status=http_status,
        status=status,
        retry_after=parse_retry_after(response.headers.get("retry-after"), now=now),
        maybe_accepted=cls is ProtocolViolationError,
    )


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    """Sinch's ``status`` and ``message`` from an error body, when it has them."""
    try:
        raw = response.content
    except httpx.ResponseNotRead:
        return None, None
    if not raw or len(raw) > _MAX_BODY_BYTES:
        return None, None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    if isinstance(error, dict):  # the Conversation API (Google API style)
        return _text(error.get("status")), _text(error.get("message"))
    if isinstance(error, str):  # the OAuth2 token endpoint
        return _text(error), _text(data.get("error_description"))
    return None, _text(data.get("message"))


def parse_retry_after(
    value: str | None, *, now: Callable[[], datetime] | None = None
) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    None when absent or unreadable; never negative (a date in the past means now).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


# ----------------------------------------------------------------------- transport errors

# httpx exception -> (error class, maybe_accepted, include the exception's text). Looked up
# along the exception's MRO, most specific first, like httpx's own map_httpcore_exceptions.
# The text of h11's LocalProtocolError can quote a header value (our bearer token) and a
# ProxyError's can quote the proxy URL with its password: those get a fixed message.
_TRANSPORT_CLASSES: dict[type[httpx.HTTPError], tuple[type[SinchError], bool, bool]] = {
    httpx.ConnectTimeout: (SinchTimeoutError, False, True),
    httpx.PoolTimeout: (SinchTimeoutError, False, True),
    httpx.WriteTimeout: (SinchTimeoutError, False, True),
    httpx.ReadTimeout: (SinchTimeoutError, True, True),
    httpx.TimeoutException: (SinchTimeoutError, True, True),
    httpx.ConnectError: (ConnectionFailedError, False, True),
    httpx.WriteError: (ConnectionFailedError, False, True),
    httpx.ReadError: (ConnectionFailedError, True, True),
    httpx.CloseError: (ConnectionFailedError, True, True),
    httpx.NetworkError: (ConnectionFailedError, True, True),
    httpx.ProxyError: (ConnectionFailedError, False, False),
    httpx.RemoteProtocolError: (ConnectionFailedError, True, True),
    httpx.LocalProtocolError: (InvalidRequestError, False, False),
    httpx.ProtocolError: (ConnectionFailedError, True, False),
    httpx.UnsupportedProtocol: (InvalidRequestError, False, True),
    httpx.DecodingError: (ProtocolViolationError, True, False),
    httpx.TooManyRedirects: (UnexpectedResponseError, False, False),
    httpx.TransportError: (ConnectionFailedError, True, False),
    httpx.RequestError: (ConnectionFailedError, True, False),
    httpx.HTTPError: (ConnectionFailedError, True, False),
}


def error_from_transport(exc: httpx.HTTPError | httpx.InvalidURL) -> SinchError:
    """Map an httpx exception to its error. Raise the result ``from exc``.

    ``HTTPStatusError`` (from ``raise_for_status``) is mapped by its response. An unknown
    subclass maps as its nearest known base; the unit tests fail on any new httpx exception
    class so that someone decides.
    """
    if isinstance(exc, httpx.InvalidURL):  # not an HTTPError, but raised by the same calls
        return InvalidRequestError(f"{_default_message(InvalidRequestError)}: invalid URL")
    if isinstance(exc, httpx.HTTPStatusError):
        return error_from_response(exc.response)
    for base in type(exc).__mro__:
        entry = _TRANSPORT_CLASSES.get(base)
        if entry is None:
            continue
        cls, maybe_accepted, with_text = entry
        detail = _clean(str(exc)) if with_text else ""
        name = type(exc).__name__
        message = f"{_default_message(cls)} ({name}: {detail})" if detail else None
        message = message or f"{_default_message(cls)} ({name})"
        return cls(message, maybe_accepted=maybe_accepted)
    raise TypeError(f"not an httpx exception: {type(exc).__name__}")  # pragma: no cover


# ----------------------------------------------------------------------------- helpers


def _default_message(cls: type[SinchError]) -> str:
    doc = cls.__doc__ or cls.__name__
    return doc.strip().splitlines()[0].rstrip(".")


def _clean(text: str | None) -> str:
    """One line, no control characters, at most MAX_MESSAGE_LENGTH characters."""
    if not text:
        return ""
    text = _CONTROL.sub(" ", text).strip()
    if len(text) > MAX_MESSAGE_LENGTH:
        text = text[: MAX_MESSAGE_LENGTH - 1] + "…"
    return text


def _text(value: object) -> str | None:
    if isinstance(value, str):
        cleaned = _clean(value)
        return cleaned or None
    return None
