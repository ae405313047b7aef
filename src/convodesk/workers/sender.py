"""The sender: delivers agent replies from the outbox to Sinch's ``messages:send``.

For each claimed job (`storage.outbox.claim_due`): build the request from the conversation
and the configuration, wait for a token of the app's and the project's rate limits (held
across every process, `storage.rate_limits`), send, and record the outcome at once:

- accepted: the Sinch message id is stored and reports that came first are applied;
- a transient error (429, 5xx, timeout, connection): retry after the policy's backoff, or
  ``Retry-After``; past the attempts or the age of `RetryPolicy`, the dead letters;
- a permanent error (400, 403, 404, a request we cannot build): the message fails at once,
  with Sinch's message for the agent.

A process killed mid-send leaves the row ``sending`` with a lease; when the lease runs out
another worker sends it again. Sinch has no idempotency key, so a send that Sinch accepted
just before the kill, before our commit, is sent twice: the window is the time between
Sinch's answer and our commit of it, which the sender keeps to one short transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.orm import Session

from convodesk import logs
from convodesk.domain.config_model import SystemConfig
from convodesk.domain.retry import RetryPolicy
from convodesk.domain.token_bucket import send_buckets
from convodesk.runtime import Runtime
from convodesk.services import chat_events
from convodesk.services.directory import Directory, DirectoryCache
from convodesk.services.live import LiveEvent
from convodesk.sinch import errors as sinch_errors
from convodesk.sinch.auth import TokenCache
from convodesk.sinch.client import ConversationClient
from convodesk.sinch.send_request import SendRequest, Template, build_send_request
from convodesk.storage import outbox
from convodesk.storage.db import transaction
from convodesk.storage.outbox import SendJob
from convodesk.storage.rate_limits import Bucket, RateLimiter

log = logs.get_logger("convodesk.sender")
IDLE_POLL_SECONDS = 0.5


class JobError(Exception):
    """The job cannot be sent as configured (no credentials, a request Sinch would refuse)."""


class Sender:
    def __init__(
        self,
        runtime: Runtime,
        directory: DirectoryCache,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy | None = None,
        concurrency: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._runtime = runtime
        self._directory = directory
        self._transport = transport
        self._policy = policy or RetryPolicy(
            max_attempts=runtime.config.send_max_attempts,
            max_age_seconds=float(runtime.config.send_max_age_seconds),
        )
        self._concurrency = concurrency
        self._clock = clock
        self._limiter = RateLimiter(runtime.sessions)
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(transport=self._transport) as http:
            client = ConversationClient(http, TokenCache(http))
            in_flight: set[asyncio.Task[None]] = set()
            while not stop.is_set():
                self._wakeup.clear()
                room = self._concurrency - len(in_flight)
                jobs: list[SendJob] = []
                if room > 0:
                    try:
                        jobs = await asyncio.to_thread(self._claim, room)
                    except Exception as exc:  # the database is away: try again shortly
                        log.warning("sender claim failed", error=f"{type(exc).__name__}: {exc}")
                for job in jobs:
                    task = asyncio.create_task(self.deliver(client, job))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    task.add_done_callback(self._finished)
                if jobs and len(in_flight) < self._concurrency:
                    continue
                waiters = [
                    asyncio.ensure_future(self._wakeup.wait()),
                    asyncio.ensure_future(stop.wait()),
                ]
                _, pending = await asyncio.wait(
                    waiters, timeout=IDLE_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                for waiter in pending:
                    waiter.cancel()
            # Graceful stop: finish the sends already started.
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._wakeup.set()  # room for another job
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The outcome could not be recorded (the database went away): the row stays
            # "sending" and is sent again once its lease runs out.
            log.error("send outcome not recorded", error=f"{type(exc).__name__}: {exc}")

    def _claim(self, limit: int) -> list[SendJob]:
        with transaction(self._runtime.sessions) as session:
            jobs = outbox.claim_due(session, now=self._clock(), limit=limit)
            events = self._statuses(session, [job.message_id for job in jobs])
        self._publish(events)
        return jobs

    def _statuses(self, session: Session, message_ids: list[int]) -> list[LiveEvent]:
        """``message.status`` for the agent desktops, built inside the transaction that
        changed the messages (published after its commit); none when nobody listens."""
        if not message_ids or not self._runtime.live.wants_events:
            return []
        session.flush()
        return chat_events.message_statuses(session, message_ids)

    def _publish(self, events: list[LiveEvent]) -> None:
        if events:
            self._runtime.live.publish(events)

    async def deliver(self, client: ConversationClient, job: SendJob) -> None:
        directory = self._directory.get()
        try:
            target = _target(directory, job)
        except JobError as exc:
            await asyncio.to_thread(self._failed, job, "failed", "CANNOT_SEND", str(exc))
            return
        await self._limiter.wait_for(target.buckets)
        try:
            result = await client.send(
                target.request,
                url=target.url,
                token_url=directory.config.oauth_token_url,
                key_id=target.key_id,
                key_secret=target.key_secret,
            )
        except sinch_errors.SinchError as exc:
            await asyncio.to_thread(self._after_error, job, exc)
            return
        await asyncio.to_thread(self._accepted, job, result.message_id)

    def _accepted(self, job: SendJob, sinch_message_id: str) -> None:
        with transaction(self._runtime.sessions) as session:
            outbox.mark_accepted(session, job, sinch_message_id=sinch_message_id, now=self._clock())
            events = self._statuses(session, [job.message_id])
        self._publish(events)

    def _after_error(self, job: SendJob, exc: sinch_errors.SinchError) -> None:
        reason = _describe(exc)
        if exc.permanent:
            code = exc.status or f"HTTP_{exc.http_status or 0}"
            self._failed(job, "failed", code, reason)
            return
        now = self._clock()
        delay = self._policy.delay(job.attempts, retry_after=exc.retry_after)
        age = (now - _aware(job.created_at)).total_seconds()
        if self._policy.gives_up(job.attempts, age_seconds=age, next_delay=delay):
            self._failed(
                job, "dead", "SEND_GAVE_UP", f"gave up after {job.attempts} attempts: {reason}"
            )
            return
        with transaction(self._runtime.sessions) as session:
            outbox.mark_retry(
                session, job, error=reason, at=now + timedelta(seconds=delay), now=now
            )
            events = self._statuses(session, [job.message_id])
        self._publish(events)
        log.info(
            "send will be retried",
            message_id=job.message_id,
            attempts=job.attempts,
            delay=round(delay, 2),
            error=reason,
        )

    def _failed(self, job: SendJob, state: str, code: str, reason: str) -> None:
        with transaction(self._runtime.sessions) as session:
            outbox.mark_failed(
                session, job, state=state, code=code, error=reason, now=self._clock()
            )
            events = self._statuses(session, [job.message_id])
        self._publish(events)
        log.warning("send failed", message_id=job.message_id, state=state, code=code, error=reason)


@dataclass(frozen=True)
class _Target:
    """Everything one send needs besides the job: the request and where and as whom."""

    request: SendRequest
    url: str
    key_id: str
    key_secret: str
    buckets: list[Bucket]


def _target(directory: Directory, job: SendJob) -> _Target:
    config: SystemConfig = directory.config
    service = directory.service(job.service)
    if service is None:
        raise JobError(f"messaging service {job.service!r} no longer exists")
    credential = next((c for c in service.outbound if c.app_id == job.app_id), None)
    if credential is None:
        raise JobError(
            f"app {job.app_id} has no outbound entry in messaging service {service.name}"
        )
    queue = directory.queue(job.queue)
    template = job.content.get("template")
    try:
        request = build_send_request(
            app_id=job.app_id,
            channel=job.channel,
            identity=job.identity,
            identity_app_id=job.identity_app_id,
            text=job.text if job.kind == "text" else None,
            media_url=job.content.get("url") if job.kind == "media" else None,
            media_filename=job.content.get("filename") if job.kind == "media" else None,
            template=Template(
                name=template["name"],
                language=template["language"],
                parameters=template.get("parameters", {}),
            )
            if job.kind == "template" and isinstance(template, dict)
            else None,
            sms_sender=queue.sms_sender_id if queue else None,
            agent_name=job.author_name,
            metadata=f"cd:{job.message_id}",
            ttl_seconds=config.send_ttl_seconds,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise JobError(f"cannot build the request: {exc}") from exc
    buckets = list(
        send_buckets(
            job.app_id,
            service.project_id,
            app_rate=config.send_rate_per_app,
            project_rate=config.send_rate_per_project,
        )
    )
    return _Target(
        request, service.service_connection, credential.key_id, credential.secret.reveal(), buckets
    )


def _describe(exc: sinch_errors.SinchError) -> str:
    status = f"{exc.http_status} " if exc.http_status else ""
    return f"{status}{exc.status or type(exc).__name__}: {exc.message}".strip()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
