"""The SMS Server's callback intake: verify, classify, store durably, answer.

Order of checks (each failure is logged in the event log and answered at once):

1. the messaging service: by name, or for ``all`` by the body's ``app_id`` (404 / 403);
2. the signature over the raw bytes with that service's webhook secret, and the timestamp
   window (401);
3. the body: JSON with a recognisable callback (400);
4. the app: ``app_id`` must be one of the service's apps (403);
5. the trigger: one we act on is stored as ``pending`` for the Chain Matcher; one we know
   but do not act on is logged as ``ignored`` (200). A trigger the service is not
   configured for is still accepted, with a warning in the log entry.

Nothing is answered 2xx before its event-log row is committed (`EventWriter`). The same
callback twice has one effect: the second copy finds its idempotency key taken.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from convodesk.metrics import Metrics
from convodesk.services.directory import DirectoryCache
from convodesk.sinch import events as sinch_events
from convodesk.sinch import signature
from convodesk.storage.event_store import EventEntry, EventWriter

REJECTED_BODY_KEEP = 4096  # bytes of an unauthenticated body kept in the log
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MAX_CACHED_COUNTERS = 1024  # label sets of the callbacks counter kept at hand


@dataclass(frozen=True)
class IntakeSettings:
    tolerance_seconds: int = signature.DEFAULT_TOLERANCE_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True)
class Answer:
    status: int
    code: str
    message: str
    event_id: int | None = None

    def body(self) -> dict[str, Any]:
        if self.status < 300:
            return {"status": self.code, "event_id": self.event_id}
        return {"error": {"code": self.code, "message": self.message}}

    def json(self) -> bytes:
        """`body` as JSON bytes (the 2xx form written directly: it is on the hot path)."""
        if self.status < 300 and self.code.isidentifier():
            event_id = "null" if self.event_id is None else str(int(self.event_id))
            return f'{{"status":"{self.code}","event_id":{event_id}}}'.encode()
        return json.dumps(self.body(), ensure_ascii=False, separators=(",", ":")).encode()


class Intake:
    def __init__(
        self,
        directory: DirectoryCache,
        writer: EventWriter,
        *,
        settings: IntakeSettings | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        on_accepted: Callable[[], None] | None = None,
    ) -> None:
        self._directory = directory
        self._writer = writer
        self.settings = settings or IntakeSettings()
        self._metrics = metrics
        self._clock = clock
        self._on_accepted = on_accepted
        self._counters: dict[tuple[str, str, str], Any] = {}

    async def too_large(self, service: str, head: bytes) -> Answer:
        limit = self.settings.max_body_bytes
        return await self._reject(
            413,
            "payload_too_large",
            f"body over {limit} bytes",
            service,
            head,
            keep=REJECTED_BODY_KEEP,
        )

    async def handle(self, service_name: str, raw: bytes, headers: Mapping[str, str]) -> Answer:
        directory = self._directory.get()
        if service_name == "all":
            app_id = _peek_app_id(raw)
            if app_id is None:
                return await self._reject(
                    400,
                    "malformed",
                    "no app_id in the body to pick the messaging service by",
                    None,
                    raw,
                )
            service = directory.service_for_app(app_id)
            if service is None:
                return await self._reject(
                    403,
                    "unknown_app",
                    f"app {app_id[:40]!r} belongs to no messaging service",
                    None,
                    raw,
                    keep=REJECTED_BODY_KEEP,
                )
        else:
            service = directory.service(service_name)
            if service is None:
                return await self._reject(
                    404,
                    "unknown_service",
                    f"no messaging service named {service_name[:100]!r}",
                    service_name[:100],
                    raw,
                    keep=REJECTED_BODY_KEEP,
                )
        try:
            signature.verify(
                service.inbound.secret.reveal(),
                raw,
                headers,
                now=self._clock(),
                tolerance_seconds=self.settings.tolerance_seconds,
            )
        except signature.SignatureError as exc:
            return await self._reject(
                401,
                "invalid_signature",
                f"{exc.reason}: {exc}",
                service.name,
                raw,
                keep=REJECTED_BODY_KEEP,
            )
        try:
            callback = sinch_events.parse_callback(raw)
        except sinch_events.CallbackError as exc:
            return await self._reject(400, "malformed", str(exc), service.name, raw)
        if callback.app_id not in service.app_ids:
            return await self._reject(
                403,
                "foreign_app",
                f"app {callback.app_id[:40]!r} is not an app of messaging service {service.name!r}",
                service.name,
                raw,
                callback=callback,
            )
        handled = callback.trigger in sinch_events.HANDLED_TRIGGERS
        reason = None
        if callback.trigger not in service.inbound.triggers:
            reason = f"warning: trigger {callback.trigger} is not configured for {service.name}"
        entry = EventEntry(
            service=service.name,
            trigger=callback.trigger,
            app_id=callback.app_id,
            channel=callback.channel,
            identity=callback.identity,
            outcome="accepted" if handled else "ignored",
            reason=reason if handled else (reason or "known trigger, not acted on"),
            dedup_key=callback.dedup_key,
            body=raw,
            state="pending" if handled else "none",
        )
        result = await self._writer.write(entry)
        outcome = "duplicate" if result.duplicate else entry.outcome
        self._count(service.name, callback.trigger, outcome)
        if handled and not result.duplicate and self._on_accepted is not None:
            self._on_accepted()
        return Answer(200, outcome, outcome, result.event_id)

    async def _reject(
        self,
        status: int,
        code: str,
        message: str,
        service: str | None,
        raw: bytes,
        *,
        keep: int | None = None,
        callback: sinch_events.Callback | None = None,
    ) -> Answer:
        entry = EventEntry(
            service=service,
            trigger=callback.trigger if callback else None,
            app_id=callback.app_id[:40] if callback else None,
            channel=callback.channel if callback else None,
            identity=callback.identity if callback else None,
            outcome="rejected",
            reason=f"{status} {code}: {message}",
            dedup_key=None,
            body=raw[:keep] if keep is not None else raw,
            state="none",
        )
        # A service name that is not configured comes from the URL, that is from anyone:
        # as a metric label it would let a stranger create any number of series.
        known = service is not None and self._directory.get().service(service) is not None
        self._count(service if known and service else "-", entry.trigger or "-", "rejected")
        try:
            result = await self._writer.write(entry)
        except Exception:  # the refusal stands even if its log entry fails
            return Answer(status, code, message)
        return Answer(status, code, message, result.event_id)

    def _count(self, service: str, trigger: str, outcome: str) -> None:
        if self._metrics is None:
            return
        key = (service, trigger, outcome)
        counter = self._counters.get(key)
        if counter is None:  # labels() takes a lock and builds a key: once per label set
            counter = self._metrics.callbacks.labels(*key)
            if len(self._counters) < MAX_CACHED_COUNTERS:
                self._counters[key] = counter
        counter.inc()


def _peek_app_id(raw: bytes) -> str | None:
    """The body's top-level ``app_id``, read before the signature can be checked (the
    service, and so the secret, depend on it). Nothing else is trusted before the check."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    app_id = body.get("app_id") if isinstance(body, dict) else None
    return app_id if isinstance(app_id, str) and app_id else None
