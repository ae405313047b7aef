"""Callback delivery: signed POSTs to webhook targets, retried with exponential backoff.

Each callback to each webhook is its own asyncio task, so deliveries to one target run
concurrently (at most `PER_TARGET_CONCURRENCY` at a time) and a slow receiver never holds up
sends. An attempt succeeds on a 2xx answer within ``callback_retry.timeout_ms``; otherwise it is
retried after ``initial_backoff_ms * 2**(n-1)`` (capped at ``max_backoff_ms``) until
``max_attempts`` have been made. Every attempt is signed afresh (new nonce and timestamp):
whether Sinch re-signs retries is not documented (reference section 1.3), and a fresh nonce keeps
receivers that de-duplicate nonces from refusing a legitimate retry.

The fault ``fail_callback_attempts: N`` makes the first N attempts of each callback count as
failed whatever the receiver answers: the request really goes out and the answer is dropped, as
when a 2xx is lost on the way back, so the receiver sees the same callback N+1 times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from convodesk.emulator.config import CallbackRetry
from convodesk.emulator.http1 import Http1Error, Http1Pool
from convodesk.sinch.ids import new_ulid
from convodesk.sinch.signature import sign_headers

logger = logging.getLogger(__name__)

PER_TARGET_CONCURRENCY = 64
USER_AGENT = "convodesk-sinch-emulator/1"


@dataclass(frozen=True, kw_only=True)
class Destination:
    target: str
    secret: str | None
    webhook_id: str | None = None


@dataclass(kw_only=True)
class CallbackRecord:
    id: str
    target: str
    webhook_id: str | None
    trigger: str
    app_id: str
    message_id: str | None
    status: str | None
    duplicate: bool
    created_at: float
    body: bytes = field(repr=False)
    attempts: int = 0
    answer_status: int | None = None
    state: str = "pending"
    error: str | None = None
    last_attempt_at: float | None = None
    simulated_failures: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "webhook_id": self.webhook_id,
            "trigger": self.trigger,
            "app_id": self.app_id,
            "message_id": self.message_id,
            "status": self.status,
            "duplicate": self.duplicate,
            "attempts": self.attempts,
            "answer_status": self.answer_status,
            "state": self.state,
            "error": self.error,
            "simulated_failures": self.simulated_failures,
            "created_at": self.created_at,
            "last_attempt_at": self.last_attempt_at,
            "body": self.body.decode("utf-8"),
        }


class CallbackDispatcher:
    """Owns the HTTP client, the delivery tasks and the delivery log."""

    def __init__(
        self,
        *,
        retry: CallbackRetry,
        clock: Callable[[], float],
        history_limit: int,
    ) -> None:
        self.retry = retry
        self._clock = clock
        self.log: deque[CallbackRecord] = deque(maxlen=history_limit)
        self._lock = threading.Lock()
        self._client: Http1Pool | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self.delivered_total = 0
        self.failed_total = 0

    async def start(self) -> None:
        self._client = Http1Pool()

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def clear(self) -> None:
        """Forget the log and drop deliveries still under way (control-plane reset)."""
        for task in list(self._tasks):
            task.cancel()
        with self._lock:
            self.log.clear()
        self.delivered_total = 0
        self.failed_total = 0

    def records(self) -> list[CallbackRecord]:
        with self._lock:
            return list(self.log)

    def deliver(
        self,
        destinations: Iterable[Destination],
        *,
        trigger: str,
        app_id: str,
        body: bytes,
        message_id: str | None,
        status: str | None = None,
        fail_first: int = 0,
        duplicate: bool = False,
    ) -> list[CallbackRecord]:
        """Start delivering ``body`` to each destination (twice each if ``duplicate``)."""
        created: list[CallbackRecord] = []
        now = self._clock()
        for destination in destinations:
            for copy in range(2 if duplicate else 1):
                record = CallbackRecord(
                    id=new_ulid(now),
                    target=destination.target,
                    webhook_id=destination.webhook_id,
                    trigger=trigger,
                    app_id=app_id,
                    message_id=message_id,
                    status=status,
                    duplicate=copy > 0,
                    created_at=now,
                    body=body,
                )
                with self._lock:
                    self.log.append(record)
                task = asyncio.get_running_loop().create_task(
                    self._run(record, destination.secret, fail_first)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                created.append(record)
        return created

    async def _run(self, record: CallbackRecord, secret: str | None, fail_first: int) -> None:
        semaphore = self._semaphores.get(record.target)
        if semaphore is None:
            semaphore = self._semaphores[record.target] = asyncio.Semaphore(PER_TARGET_CONCURRENCY)
        timeout = self.retry.timeout_ms / 1000
        while True:
            record.attempts += 1
            record.last_attempt_at = self._clock()
            async with semaphore:
                ok = await self._attempt(record, secret, timeout)
            if ok and record.attempts <= fail_first:
                ok = False
                record.simulated_failures += 1
                record.error = "simulated failure (fault fail_callback_attempts)"
            if ok:
                record.state = "delivered"
                record.error = None
                self.delivered_total += 1
                return
            if record.attempts >= self.retry.max_attempts:
                record.state = "failed"
                self.failed_total += 1
                logger.info(
                    "callback %s to %s failed after %d attempts: %s",
                    record.id,
                    record.target,
                    record.attempts,
                    record.error,
                )
                return
            await asyncio.sleep(self.retry.backoff_seconds(record.attempts))

    async def _attempt(self, record: CallbackRecord, secret: str | None, limit_s: float) -> bool:
        client = self._client
        if client is None:
            record.error = "emulator is shutting down"
            return False
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        if secret:
            headers.update(sign_headers(secret, record.body, timestamp=str(int(self._clock()))))
        try:
            status = await client.post(record.target, record.body, headers, limit_s=limit_s)
        except TimeoutError:
            record.answer_status = None
            record.error = f"no answer within {limit_s:g} s"
            return False
        except Http1Error as exc:
            record.answer_status = None
            record.error = str(exc)[:300]
            return False
        record.answer_status = status
        if 200 <= status < 300:
            return True
        record.error = f"answered {status}"
        return False
