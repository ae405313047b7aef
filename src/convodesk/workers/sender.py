"""The sender: delivers agent replies from the outbox to Sinch's ``messages:send``.

For each claimed job (`storage.outbox.claim_due`): build the request from the conversation
and the configuration, get the OAuth2 token, wait for its slot of the app's and the
project's rate limits (`workers.send_slots`, on the buckets every process shares), send, and
record the outcome:

- accepted: the Sinch message id is stored and reports that came first are applied;
- a transient error (429, 5xx, timeout, connection): retry after the policy's backoff, or
  ``Retry-After``; past the attempts or the age of `RetryPolicy`, the dead letters;
- a permanent error (400, 403, 404, a request we cannot build): the message fails at once,
  with Sinch's message for the agent.

Up to ``send_concurrency`` jobs (default 300) are in flight at once: claimed, waiting for
their slots, or on the wire (at Sinch's answer time of about 0.2 s, 800 sends a second keep
about 160 on the wire and 80 holding slots). The claim loop claims as many due rows as there
is room for in one transaction; while sends run it claims once an eighth of the slots are
free or `CLAIM_GATHER_SECONDS` after the first freed up, and once a claim found fewer due
rows than it had room for it waits for `wake` (a new reply in this process) or
`IDLE_POLL_SECONDS`. Accepted answers are committed together, at most every
`ACCEPT_GATHER_SECONDS`. Every database call runs on the sender's own threads, never on the
event loop. docs/reference/sending.md ("Throughput of the sender") has the figures.

A process killed mid-send leaves its rows ``sending`` with a lease, which a live sender
renews every quarter of ``send_lease_seconds`` (`storage.outbox`); once the lease has run out
another worker, or the restarted one, sends them again. Sinch has no idempotency key, so a
send that Sinch accepted just before the kill, before our commit, is sent twice: the window
is the answer's way back plus at most `ACCEPT_GATHER_SECONDS` and one short transaction. A
graceful stop lets the sends past their slot finish and gives the others back at once.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import certifi
import httpx
from sqlalchemy.orm import Session

from convodesk import logs
from convodesk.domain.config_model import SystemConfig
from convodesk.domain.retry import RetryPolicy
from convodesk.domain.token_bucket import send_buckets
from convodesk.metrics import Metrics
from convodesk.runtime import Runtime
from convodesk.services import attachments as attachment_service
from convodesk.services import chat_events
from convodesk.services.directory import Directory, DirectoryCache
from convodesk.services.live import LiveEvent
from convodesk.sinch import errors as sinch_errors
from convodesk.sinch.auth import TokenCache
from convodesk.sinch.client import ConversationClient
from convodesk.sinch.send_request import SendRequest, Template, build_send_request
from convodesk.storage import outbox
from convodesk.storage.db import is_sqlite, transaction
from convodesk.storage.outbox import SendJob
from convodesk.storage.rate_limits import Bucket
from convodesk.workers.send_slots import SlotScheduler

log = logs.get_logger("convodesk.sender")
T = TypeVar("T")
IDLE_POLL_SECONDS = 0.5
CLAIM_GATHER_SECONDS = 0.25
"""While sends run, the claim loop claims once an eighth of the slots are free, or once
slots have been free this long: one claim for many rows instead of one per row (at 800
sends/s, an eighth of 300 slots frees up every 47 ms; at 20/s, 5 slots in 0.25 s)."""
ACCEPT_GATHER_SECONDS = 0.01
"""The shortest time between two commits of accepted answers (`_write_accepted`)."""
TOKEN_CONNECTIONS = 4
"""Connections kept beyond ``send_concurrency`` for OAuth2 token requests."""
CONNECTIONS_PER_POOL = 8
"""The size of each HTTP connection pool (`_Clients`)."""
POSTGRES_DB_THREADS = 2


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
        concurrency: int | None = None,
        lease_seconds: float | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: Metrics | None = None,
    ) -> None:
        """``concurrency`` and ``lease_seconds`` default to the configuration's
        ``send_concurrency`` and ``send_lease_seconds``."""
        self._runtime = runtime
        self._metrics = metrics
        self._directory = directory
        self._transport = transport
        self._policy = policy or RetryPolicy(
            max_attempts=runtime.config.send_max_attempts,
            max_age_seconds=float(runtime.config.send_max_age_seconds),
        )
        self._concurrency = concurrency or runtime.config.send_concurrency
        self._batch = max(1, self._concurrency // 8)  # the smallest claim while sends run
        self._lease_seconds = float(lease_seconds or runtime.config.send_lease_seconds)
        self._clock = clock
        # The sender's database work runs on threads of its own: one for SQLite, where
        # threads of one process would only queue for the database's write lock (and
        # SQLite's busy handler makes them sleep for milliseconds when they collide), two
        # for PostgreSQL, whose transactions are mostly round trips (more contend for the GIL).
        self._executor = ThreadPoolExecutor(
            max_workers=1 if is_sqlite(runtime.engine) else POSTGRES_DB_THREADS,
            thread_name_prefix="sender-db",
        )
        self._slots = SlotScheduler(runtime.sessions, self._db)
        self._wakeup = asyncio.Event()  # new work: claim now
        self._room = asyncio.Event()  # a send finished: a slot is free
        self._leased: set[int] = set()  # outbox ids this process holds
        self._queued: set[int] = set()  # outbox ids waiting for a slot: a stop releases them
        self._accepted_queue: list[tuple[SendJob, str, asyncio.Future[None]]] = []
        self._writing_accepted = False
        self._last_accepted_commit = 0.0  # loop time

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        async with _Clients(self._concurrency, self._transport) as clients:
            renewer = asyncio.create_task(self._renew_leases())
            rounds = asyncio.create_task(self._slots.run())
            in_flight: dict[asyncio.Task[None], int] = {}  # task -> outbox id
            due = True  # rows may be due that no claim has taken yet
            room_since: float | None = None  # loop time since when slots are free, unclaimed
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                room = self._concurrency - len(in_flight)
                if room == 0:
                    room_since = None
                elif room_since is None:
                    room_since = loop.time()
                if due and room > 0:
                    waited = loop.time() - (room_since or 0.0)
                    if room < self._batch and in_flight and waited < CLAIM_GATHER_SECONDS:
                        # A few slots free: let more sends finish, then claim them together.
                        self._room.clear()
                        await _first(
                            self._room.wait(), stop.wait(), seconds=CLAIM_GATHER_SECONDS - waited
                        )
                        continue
                    room_since = None
                    self._wakeup.clear()
                    claimed = await self._claim_or_none(room)
                    if claimed is None:  # the database is away: try again shortly
                        await _first(stop.wait(), seconds=IDLE_POLL_SECONDS)
                        continue
                    jobs, directory = claimed
                    for job in jobs:
                        self._leased.add(job.outbox_id)
                        task = asyncio.create_task(self._deliver_leased(clients, job, directory))
                        in_flight[task] = job.outbox_id
                        task.add_done_callback(lambda t: in_flight.pop(t, None))
                        task.add_done_callback(self._finished)
                    # A full claim may have left more due rows; a short one took them all.
                    due = len(jobs) == room
                elif due:  # every slot taken: wait for a send to finish
                    self._room.clear()
                    await _first(self._room.wait(), stop.wait())
                else:  # nothing due: wait for a new reply, or poll
                    await _first(self._wakeup.wait(), stop.wait(), seconds=IDLE_POLL_SECONDS)
                    due = True
            # Graceful stop: sends under way finish (their leases still renewed); those queued
            # for a slot are put back at once, for another worker or the next start.
            queued = [(t, i) for t, i in in_flight.items() if i in self._queued]
            for task, _ in queued:
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            if queued:
                await self._release(sorted(i for _, i in queued))
            if self._slots.late:
                log.info("slots given up by late sends", count=self._slots.late)
            renewer.cancel()
            rounds.cancel()
            await asyncio.gather(renewer, rounds, return_exceptions=True)
        self._executor.shutdown(wait=False)

    async def _release(self, outbox_ids: list[int]) -> None:
        def release() -> None:
            with transaction(self._runtime.sessions) as session:
                outbox.release(session, outbox_ids, now=self._clock())

        try:
            await self._db(release)
        except Exception as exc:  # their leases run out instead
            log.warning("queued sends not released", error=f"{type(exc).__name__}: {exc}")
        else:
            log.info("queued sends released for other workers", count=len(outbox_ids))

    async def _claim_or_none(self, room: int) -> tuple[list[SendJob], Directory] | None:
        try:
            return await self._db(self._claim, room)
        except Exception as exc:
            log.warning("sender claim failed", error=f"{type(exc).__name__}: {exc}")
            return None

    async def _deliver_leased(self, clients: _Clients, job: SendJob, directory: Directory) -> None:
        try:
            await self.deliver(clients, job, directory)
        finally:
            self._leased.discard(job.outbox_id)

    async def _db(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._room.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The outcome could not be recorded (the database went away): the row stays
            # "sending" and is sent again once its lease runs out.
            log.error("send outcome not recorded", error=f"{type(exc).__name__}: {exc}")

    def _claim(self, limit: int) -> tuple[list[SendJob], Directory]:
        """The claimed jobs and the configuration to send them with. The configuration is
        read here, on the database thread: reloading it (every 2 s) reads the database and
        decrypts every secret, which on the event loop would hold every send up meanwhile."""
        with transaction(self._runtime.sessions) as session:
            jobs = outbox.claim_due(
                session, now=self._clock(), limit=limit, lease_seconds=self._lease_seconds
            )
            events = self._statuses(session, [job.message_id for job in jobs])
        self._publish(events)
        return jobs, self._directory.get()

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

    async def _renew_leases(self) -> None:
        """Every quarter lease, push the lease of every row this process holds one lease
        ahead, until cancelled: a send may wait for its tokens or for Sinch as long as it
        needs, and still no other worker takes it over while this process lives."""
        while True:
            await asyncio.sleep(self._lease_seconds / 4)
            if not self._leased:
                continue
            try:
                await self._db(self._renew, list(self._leased))
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("lease renewal failed", error=f"{type(exc).__name__}: {exc}")

    def _renew(self, outbox_ids: list[int]) -> None:
        until = self._clock() + timedelta(seconds=self._lease_seconds)
        with transaction(self._runtime.sessions) as session:
            outbox.renew_leases(session, outbox_ids, until=until)

    async def deliver(self, clients: _Clients, job: SendJob, directory: Directory) -> None:
        try:
            target = _target(directory, job)
        except JobError as exc:
            await self._db(self._failed, job, "failed", "CANNOT_SEND", str(exc))
            return
        try:
            # The access token first: a send must leave at its slot, not queue behind a
            # token request (200 sends due in the first second would all leave together
            # once the first token arrived).
            await clients.tokens.get(
                directory.config.oauth_token_url, target.key_id, target.key_secret
            )
            self._queued.add(job.outbox_id)  # until it has its slot, a stop releases it
            try:
                await self._slots.wait(target.buckets)
            finally:
                self._queued.discard(job.outbox_id)
            with clients.one() as client:
                result = await client.send(
                    target.request,
                    url=target.url,
                    token_url=directory.config.oauth_token_url,
                    key_id=target.key_id,
                    key_secret=target.key_secret,
                )
        except sinch_errors.SinchError as exc:
            await self._db(self._after_error, job, exc)
            return
        await self._record_accepted(job, result.message_id)

    async def _record_accepted(self, job: SendJob, sinch_message_id: str) -> None:
        """Commit Sinch's acceptance: at once, or, within `ACCEPT_GATHER_SECONDS` of the
        previous commit, together with the answers that arrive until then."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._accepted_queue.append((job, sinch_message_id, done))
        if not self._writing_accepted:
            self._writing_accepted = True
            asyncio.get_running_loop().create_task(self._write_accepted())
        await done

    async def _write_accepted(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._accepted_queue:
                # Commits at most every ACCEPT_GATHER_SECONDS: at a few sends a second each
                # commits at once; at hundreds, the answers of those milliseconds go together.
                wait = self._last_accepted_commit + ACCEPT_GATHER_SECONDS - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_accepted_commit = loop.time()
                batch, self._accepted_queue = self._accepted_queue, []
                try:
                    await self._db(self._accepted, [(job, sinch_id) for job, sinch_id, _ in batch])
                except Exception as exc:
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for _, _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._writing_accepted = False

    def _accepted(self, accepted: list[tuple[SendJob, str]]) -> None:
        with transaction(self._runtime.sessions) as session:
            outbox.mark_accepted_many(session, accepted, now=self._clock())
            events = self._statuses(session, [job.message_id for job, _ in accepted])
        for job, _ in accepted:
            self._count(job, "accepted")
        self._publish(events)

    def _count(self, job: SendJob, result: str) -> None:
        """``convodesk_sends_total``, once the outcome is committed."""
        if self._metrics is not None:
            self._metrics.sends.labels(job.service, result).inc()

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
        self._count(job, "retry")
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
        self._count(job, state)
        self._publish(events)
        log.warning("send failed", message_id=job.message_id, state=state, code=code, error=reason)


class _Clients:
    """HTTP clients for up to ``concurrency`` sends at once: several small connection pools
    rather than one large one. httpcore's pool looks at every connection it holds (a
    readability check, a system call, for each idle one) whenever a request starts or ends,
    so one pool of 200 connections costs the event loop far more per send than 13 pools of
    16. A send takes the pool with the fewest sends in flight. One token cache serves all:
    its token requests go through the first pool, which has `TOKEN_CONNECTIONS` more
    connections for them."""

    def __init__(self, concurrency: int, transport: httpx.AsyncBaseTransport | None) -> None:
        count = max(1, math.ceil(concurrency / CONNECTIONS_PER_POOL))
        size = min(concurrency, CONNECTIONS_PER_POOL)
        tls = ssl.create_default_context(cafile=certifi.where())  # httpx's default, built once
        self._https = [
            httpx.AsyncClient(
                transport=transport,
                verify=tls,
                limits=httpx.Limits(
                    max_connections=size + (TOKEN_CONNECTIONS if n == 0 else 0),
                    max_keepalive_connections=size + (TOKEN_CONNECTIONS if n == 0 else 0),
                ),
            )
            for n in range(count)
        ]
        self.tokens = TokenCache(self._https[0])
        self._clients = [ConversationClient(http, self.tokens) for http in self._https]
        self._load = [0] * count

    @contextmanager
    def one(self) -> Iterator[ConversationClient]:
        index = min(range(len(self._load)), key=self._load.__getitem__)
        self._load[index] += 1
        try:
            yield self._clients[index]
        finally:
            self._load[index] -= 1

    async def __aenter__(self) -> _Clients:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.gather(*(http.aclose() for http in self._https))


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
    media_url, media_filename = _media(config, job.content) if job.kind == "media" else (None, None)
    try:
        request = build_send_request(
            app_id=job.app_id,
            channel=job.channel,
            identity=job.identity,
            identity_app_id=job.identity_app_id,
            text=job.text if job.kind == "text" else None,
            media_url=media_url,
            media_filename=media_filename,
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


def _media(config: SystemConfig, content: dict[str, Any]) -> tuple[str | None, str | None]:
    """(url, filename) of a media reply: an upload is served by us at
    ``{base}/sms/richcontent/{token}``, the base as configured at the time of sending."""
    upload = content.get("attachment")
    if not isinstance(upload, dict):
        return content.get("url"), content.get("filename")
    url = attachment_service.media_url(config, str(upload.get("token", "")))
    if url is None:
        raise JobError(
            "no public URL for attachments: set chat_settings.attachment_base_url or "
            "public_base_url"
        )
    return url, upload.get("filename")


async def _first(*waits: Coroutine[Any, Any, Any], seconds: float | None = None) -> None:
    """Wait until the first of ``waits`` is done, or ``seconds``; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _describe(exc: sinch_errors.SinchError) -> str:
    status = f"{exc.http_status} " if exc.http_status else ""
    return f"{status}{exc.status or type(exc).__name__}: {exc.message}".strip()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
