"""The emulator's state and behaviour, apart from HTTP: what the routes in `app` call.

Everything here runs on the emulator's event loop; the few things other threads may touch
(listeners, snapshots of the logs) are guarded by a lock. Delivery reports are simulated by one
task per accepted send, so the send's HTTP answer never waits for them.

Delivery-outcome rules (docs/emulator.md keeps the same list):

1. A scripted outcome (``POST /_emulator/outcomes``) for the recipient wins: its reason fails
   the send, its delay postpones the first report, ``read: false`` suppresses READ.
2. The channel must be configured on the app, else CHANNEL_CONFIGURATION_MISSING.
3. The identity must be possible on the channel, else RECIPIENT_INVALID_CHANNEL_IDENTITY.
4. WhatsApp free-form messages need an inbound message from that identity to that app within
   the last 24 h, else OUTSIDE_ALLOWED_SENDING_WINDOW; a WHATSAPP channel template passes.
5. Media URLs are fetched for real; anything but a 2xx in time is MEDIA_NOT_REACHABLE.

A failure on one channel with more candidates left reports SWITCHING_CHANNEL and tries the next
(channel_priority_order, or the order of the identities); a failure on the last is FAILED.
Success reports QUEUED_ON_CHANNEL, DELIVERED, then READ where the channel has read receipts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from convodesk.emulator import channels as channel_rules
from convodesk.emulator import payloads
from convodesk.emulator.auth import Principal, TokenIssuer
from convodesk.emulator.callbacks import CallbackDispatcher, Destination
from convodesk.emulator.config import (
    MAX_WEBHOOKS_PER_APP,
    AppConfig,
    EmulatorConfig,
    ProjectConfig,
)
from convodesk.emulator.errors import ApiError, dumps, not_found
from convodesk.emulator.ratelimit import TokenBucket
from convodesk.emulator.stats import SendStats
from convodesk.emulator.validation import SendRequest, Target
from convodesk.sinch.ids import new_ulid

logger = logging.getLogger(__name__)

WHATSAPP_WINDOW_SECONDS = 24 * 3600
SendListener = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (503,)
    retry_after_s: int = 1
    duplicate_callbacks: float = 0.0
    reorder_callbacks: bool = False
    fail_callback_attempts: int = 0
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "error_statuses": list(self.error_statuses),
            "retry_after_s": self.retry_after_s,
            "duplicate_callbacks": self.duplicate_callbacks,
            "reorder_callbacks": self.reorder_callbacks,
            "fail_callback_attempts": self.fail_callback_attempts,
            "seed": self.seed,
        }


@dataclass(frozen=True, kw_only=True)
class ScriptedOutcome:
    fail_reason: str | None = None
    delay_ms: int = 0
    read: bool = True
    app_id: str | None = None
    channel: str | None = None

    def matches(self, app_id: str, channel: str | None) -> bool:
        return (self.app_id is None or self.app_id == app_id) and (
            self.channel is None or channel is None or self.channel == channel
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "fail_reason": self.fail_reason,
            "delay_ms": self.delay_ms,
            "read": self.read,
            "app_id": self.app_id,
            "channel": self.channel,
        }


@dataclass(kw_only=True)
class Webhook:
    id: str
    app_id: str
    project_id: str
    target: str
    triggers: tuple[str, ...]
    secret: str | None = None
    target_type: str = "HTTP"
    client_credentials: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "app_id": self.app_id,
            "target": self.target,
            "target_type": self.target_type,
            "secret": self.secret or "",
            "triggers": list(self.triggers),
        }
        if self.client_credentials is not None:
            data["client_credentials"] = dict(self.client_credentials)
        return data


@dataclass(kw_only=True)
class Contact:
    id: str
    project_id: str
    display_name: str = ""
    identities: dict[str, str] = field(default_factory=dict)  # channel -> identity
    last_channel: str | None = None


@dataclass(kw_only=True)
class SentRecord:
    message_id: str
    app_id: str
    project_id: str
    accepted_time: str
    request: Mapping[str, Any]
    recipients: tuple[str, ...]
    channel: str | None = None
    identity: str | None = None
    status: str = "PENDING"
    reason: dict[str, str] | None = None
    statuses: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "app_id": self.app_id,
            "project_id": self.project_id,
            "accepted_time": self.accepted_time,
            "request": self.request,
            "channel": self.channel,
            "identity": self.identity,
            "outcome": {"status": self.status, "reason": self.reason, "reports": self.statuses},
        }


@dataclass(frozen=True, kw_only=True)
class AppEntry:
    project: ProjectConfig
    app: AppConfig


class Emulator:
    """The Conversation API's state for a set of projects, plus the control plane's knobs."""

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        token_ttl_seconds: int,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.clock = clock
        self.tokens = TokenIssuer(config, ttl_seconds=token_ttl_seconds, clock=clock)
        self.projects: dict[str, ProjectConfig] = {p.id: p for p in config.projects}
        self.apps: dict[str, AppEntry] = {
            app.id: AppEntry(project=project, app=app)
            for project in config.projects
            for app in project.apps
        }
        self.dispatcher = CallbackDispatcher(
            retry=config.callback_retry, clock=clock, history_limit=config.history_limit
        )
        self._lock = threading.RLock()
        self._listeners: list[SendListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._media_client: httpx.AsyncClient | None = None
        self._initial_webhooks = self._webhooks_from_config()
        self.stats = SendStats(
            [(e.app.id, e.project.id, e.app.rate_limit) for e in self.apps.values()],
            [(p.id, p.rate_limit) for p in config.projects],
        )
        self.reset()

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.dispatcher.start()
        self._media_client = httpx.AsyncClient(follow_redirects=True)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.dispatcher.stop()
        if self._media_client is not None:
            await self._media_client.aclose()
            self._media_client = None

    def reset(self) -> None:
        """Back to the configuration's state: no sends, inbounds, scripts, faults or callbacks."""
        with self._lock:
            for task in list(self._tasks):
                task.cancel()
            self.faults = Faults()
            self._random = random.Random()  # fault injection, not security
            self.webhooks: dict[str, Webhook] = {
                w.id: replace(w) for w in self._initial_webhooks.values()
            }
            self.sent: OrderedDict[str, SentRecord] = OrderedDict()
            self.inbound: deque[dict[str, Any]] = deque(maxlen=self.config.history_limit)
            self.last_inbound: dict[tuple[str, str, str], float] = {}
            self.last_sent_to: dict[tuple[str, str, str], str] = {}
            self.contacts: dict[str, Contact] = {}
            self.contact_index: dict[tuple[str, str, str], str] = {}
            self.conversations: dict[tuple[str, str], str] = {}
            self.outcomes: dict[str, deque[ScriptedOutcome]] = {}
            self.project_buckets = {p.id: TokenBucket(p.rate_limit) for p in self.config.projects}
            self.app_buckets = {a.app.id: TokenBucket(a.app.rate_limit) for a in self.apps.values()}
            self.stats.reset()
        self.dispatcher.clear()

    def _webhooks_from_config(self) -> dict[str, Webhook]:
        hooks: dict[str, Webhook] = {}
        for entry in self.apps.values():
            for hook in entry.app.webhooks:
                hook_id = hook.id or new_ulid()
                hooks[hook_id] = Webhook(
                    id=hook_id,
                    app_id=entry.app.id,
                    project_id=entry.project.id,
                    target=hook.target,
                    triggers=hook.triggers,
                    secret=hook.secret,
                )
        return hooks

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("emulator task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ listeners

    def add_send_listener(self, listener: SendListener) -> Callable[[], None]:
        """Call ``listener(sent_record_json)`` on the emulator's loop for every accepted send.

        Returns a function that removes the listener. Listeners must be quick and must not
        raise; an exception is logged and ignored.
        """
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    # --------------------------------------------------------------- API helpers

    def project_for(self, project_id: str, region: str) -> ProjectConfig:
        project = self.projects.get(project_id)
        if project is None:
            raise not_found(f"Project {project_id}")
        return project

    def app_for(self, project_id: str, app_id: str, region: str) -> AppEntry:
        entry = self.apps.get(app_id)
        if entry is None or entry.project.id != project_id or entry.project.region != region:
            # An app in another region is invisible under this region's host, as on Sinch.
            raise not_found(f"App {app_id}")
        return entry

    def check_project_rate(self, project_id: str) -> None:
        wait = self.project_buckets[project_id].take()
        if wait:
            raise _rate_limited(f"Project {project_id} exceeded its request rate", wait)

    def apps_in(self, project_id: str, region: str) -> list[AppConfig]:
        return [
            e.app
            for e in self.apps.values()
            if e.project.id == project_id and e.project.region == region
        ]

    # ---------------------------------------------------------------- webhooks

    def webhooks_of(self, app_id: str) -> list[Webhook]:
        with self._lock:
            return [w for w in self.webhooks.values() if w.app_id == app_id]

    def webhook_for(self, project_id: str, webhook_id: str, region: str) -> Webhook:
        with self._lock:
            hook = self.webhooks.get(webhook_id)
        if hook is None or hook.project_id != project_id:
            raise not_found(f"Webhook {webhook_id}")
        self.app_for(project_id, hook.app_id, region)
        return hook

    def add_webhook(self, hook: Webhook) -> Webhook:
        with self._lock:
            if len(self.webhooks_of(hook.app_id)) >= MAX_WEBHOOKS_PER_APP:
                raise ApiError(400, f"An app can have at most {MAX_WEBHOOKS_PER_APP} webhooks")
            self.webhooks[hook.id] = hook
        return hook

    def delete_webhook(self, webhook_id: str) -> None:
        with self._lock:
            self.webhooks.pop(webhook_id, None)

    # -------------------------------------------------------------------- sends

    def accept_send(
        self, principal: Principal, entry: AppEntry, request: SendRequest
    ) -> SentRecord:
        """Rate limits and injected errors, then record the send and start its reports."""
        wait = self.app_buckets[entry.app.id].take()
        if wait:
            self.stats.rejected(entry.app.id, entry.project.id)
            raise _rate_limited(f"App {entry.app.id} exceeded its send rate", wait)
        faults = self.faults
        if faults.error_rate and self._random.random() < faults.error_rate:
            status = self._random.choice(faults.error_statuses)
            if status == 429:
                self.stats.rejected(entry.app.id, entry.project.id)
            headers = {"retry-after": str(faults.retry_after_s)} if status == 429 else {}
            raise ApiError(
                status, _INJECTED_MESSAGES.get(status, "Injected error"), headers=headers
            )
        if request.channel_priority_order:
            for i, channel in enumerate(request.channel_priority_order):
                if channel not in entry.app.channels:
                    raise ApiError(
                        400,
                        f"Invalid argument 'channel_priority_order[{i}]': channel {channel} "
                        f"is not configured for app {entry.app.id}",
                    )
        now = self.clock()
        self.stats.accepted(entry.app.id, entry.project.id, now)
        message_id = new_ulid(now)
        record = SentRecord(
            message_id=message_id,
            app_id=entry.app.id,
            project_id=entry.project.id,
            accepted_time=payloads.iso(now),
            request=request.body,
            recipients=tuple(
                channel_rules.normalize_identity(t.identity) for t in request.identities
            ),
        )
        scripted = self._take_outcome(entry.app.id, request)
        with self._lock:
            self.sent[message_id] = record
            while len(self.sent) > self.config.history_limit:
                self.sent.popitem(last=False)
            listeners = list(self._listeners)
        for target in request.identities:
            key = (entry.app.id, target.channel, channel_rules.normalize_identity(target.identity))
            self.last_sent_to[key] = message_id
        if listeners:
            snapshot = record.to_json()
            for listener in listeners:
                try:
                    listener(snapshot)
                except Exception:
                    logger.exception("send listener failed")
        self.spawn(self._deliver_reports(entry, record, request, scripted))
        return record

    def _take_outcome(self, app_id: str, request: SendRequest) -> ScriptedOutcome | None:
        with self._lock:
            for target in request.identities:
                queue = self.outcomes.get(channel_rules.normalize_identity(target.identity))
                if not queue:
                    continue
                for outcome in queue:
                    if outcome.matches(app_id, target.channel):
                        queue.remove(outcome)
                        return outcome
            return None

    def script_outcomes(self, identity: str, outcome: ScriptedOutcome, count: int) -> int:
        key = channel_rules.normalize_identity(identity)
        with self._lock:
            queue = self.outcomes.setdefault(key, deque())
            queue.extend([outcome] * count)
            return len(queue)

    def sent_records(self, app_id: str | None, identity: str | None) -> list[dict[str, Any]]:
        wanted = channel_rules.normalize_identity(identity) if identity else None
        with self._lock:
            records = list(self.sent.values())
        return [
            r.to_json()
            for r in records
            if (app_id is None or r.app_id == app_id)
            and (
                wanted is None
                or wanted in r.recipients
                or (
                    r.identity is not None
                    and channel_rules.normalize_identity(r.identity) == wanted
                )
            )
        ]

    def _candidates(self, entry: AppEntry, request: SendRequest) -> tuple[list[Target], str | None]:
        """The (channel, identity) pairs to try in order, or a reason why there are none."""
        if request.contact_id is not None:
            contact = self.contacts.get(request.contact_id)
            if contact is None or contact.project_id != entry.project.id:
                return [], "CONTACT_NOT_FOUND"
            ordered = list(contact.identities.items())
            if contact.last_channel is not None:
                ordered.sort(key=lambda item: item[0] != contact.last_channel)
            targets = [Target(channel=c, identity=i) for c, i in ordered]
        else:
            targets = list(request.identities)
        if request.channel_priority_order:
            targets = [
                t
                for channel in request.channel_priority_order
                for t in targets
                if t.channel == channel
            ]
        if not targets:
            return [], "NO_CHANNEL_IDENTITY_FOR_CONTACT"
        return targets, None

    def _contact_for(self, entry: AppEntry, channel: str, identity: str) -> tuple[str, str]:
        """(contact_id, conversation_id) in CONVERSATION mode, created on first sight."""
        if entry.app.processing_mode != "CONVERSATION":
            return "", ""
        key = (entry.project.id, channel, channel_rules.normalize_identity(identity))
        with self._lock:
            contact_id = self.contact_index.get(key)
            if contact_id is None:
                contact_id = new_ulid(self.clock())
                self.contacts[contact_id] = Contact(id=contact_id, project_id=entry.project.id)
                self.contact_index[key] = contact_id
            contact = self.contacts[contact_id]
            contact.identities.setdefault(channel, identity)
            contact.last_channel = channel
            conversation_id = self.conversations.setdefault(
                (entry.app.id, contact_id), new_ulid(self.clock())
            )
        return contact_id, conversation_id

    async def _failure_reason(
        self,
        entry: AppEntry,
        target: Target,
        request: SendRequest,
        media_check: asyncio.Task[bool] | None,
    ) -> str | None:
        if target.channel not in entry.app.channels:
            return "CHANNEL_CONFIGURATION_MISSING"
        if not channel_rules.identity_is_valid(target.channel, target.identity):
            return "RECIPIENT_INVALID_CHANNEL_IDENTITY"
        if target.channel == "WHATSAPP" and "WHATSAPP" not in request.template_channels:
            key = (entry.app.id, "WHATSAPP", channel_rules.normalize_identity(target.identity))
            last = self.last_inbound.get(key)
            if last is None or self.clock() - last > WHATSAPP_WINDOW_SECONDS:
                return "OUTSIDE_ALLOWED_SENDING_WINDOW"
        if media_check is not None and not await media_check:
            return "MEDIA_NOT_REACHABLE"
        return None

    async def _deliver_reports(
        self,
        entry: AppEntry,
        record: SentRecord,
        request: SendRequest,
        scripted: ScriptedOutcome | None,
    ) -> None:
        delays = self.config.delivery_delays
        media_check = (
            asyncio.get_running_loop().create_task(self._media_reachable(request.media_urls))
            if request.media_urls
            else None
        )
        reorder = self.faults.reorder_callbacks
        held: list[tuple[str, bytes]] = []

        def report(target: Target, status: str, reason_code: str | None) -> None:
            now = self.clock()
            contact_id, conversation_id = self._contact_for(entry, target.channel, target.identity)
            record.channel, record.identity = target.channel, target.identity
            record.status = status
            entry_json: dict[str, Any] = {"status": status, "at": payloads.iso(now)}
            if reason_code is not None:
                entry_json["reason"] = reason_code
                record.reason = payloads.reason(reason_code)
            record.statuses.append(entry_json)
            body = payloads.delivery_report(
                project_id=entry.project.id,
                app_id=entry.app.id,
                message_id=record.message_id,
                status=status,
                channel=target.channel,
                identity=target.identity,
                processing_mode=entry.app.processing_mode,
                now=now,
                reason_code=reason_code,
                contact_id=contact_id,
                conversation_id=conversation_id,
                metadata=request.message_metadata,
                correlation_id=request.correlation_id,
            )
            if reorder:
                held.append((status, dumps(body)))
            else:
                self._emit_delivery(entry, request, record.message_id, status, dumps(body))

        try:
            await _sleep_ms(delays.queued + (scripted.delay_ms if scripted else 0))
            targets, no_target_reason = self._candidates(entry, request)
            if no_target_reason is not None:
                fallback = request.identities[0] if request.identities else None
                target = fallback or Target(channel=entry.app.channels[0], identity="")
                report(target, "FAILED", no_target_reason)
                return
            for index, target in enumerate(targets):
                reason_code = await self._failure_reason(entry, target, request, media_check)
                if index == 0 and scripted is not None and scripted.fail_reason:
                    reason_code = scripted.fail_reason
                if reason_code is None:
                    read = scripted.read if scripted is not None else True
                    statuses = channel_rules.report_statuses(target.channel, read=read)
                    gaps = {
                        "QUEUED_ON_CHANNEL": 0,
                        "DELIVERED": delays.delivered,
                        "READ": delays.read,
                    }
                    for status in statuses:
                        await _sleep_ms(gaps[status] if status != statuses[0] else 0)
                        report(target, status, None)
                    return
                last = index == len(targets) - 1
                report(target, "FAILED" if last else "SWITCHING_CHANNEL", reason_code)
                if last:
                    return
        except asyncio.CancelledError:
            held.clear()  # reset or shutdown: nothing more goes out for this send
            raise
        finally:
            if media_check is not None and not media_check.done():
                media_check.cancel()
            for status, body in reversed(held):
                self._emit_delivery(entry, request, record.message_id, status, body)

    def _emit_delivery(
        self, entry: AppEntry, request: SendRequest, message_id: str, status: str, body: bytes
    ) -> None:
        if request.callback_url is not None:
            destinations = [
                Destination(target=request.callback_url, secret=entry.app.callback_secret)
            ]
        else:
            destinations = self._subscribers(entry.app.id, "MESSAGE_DELIVERY")
        if destinations:
            self._dispatch(destinations, "MESSAGE_DELIVERY", entry.app.id, body, message_id, status)

    def _subscribers(self, app_id: str, trigger: str) -> list[Destination]:
        with self._lock:
            return [
                Destination(target=w.target, secret=w.secret, webhook_id=w.id)
                for w in self.webhooks.values()
                if w.app_id == app_id and trigger in w.triggers
            ]

    def _dispatch(
        self,
        destinations: list[Destination],
        trigger: str,
        app_id: str,
        body: bytes,
        message_id: str | None,
        status: str | None,
    ) -> None:
        faults = self.faults
        duplicate = bool(
            faults.duplicate_callbacks and self._random.random() < faults.duplicate_callbacks
        )
        self.dispatcher.deliver(
            destinations,
            trigger=trigger,
            app_id=app_id,
            body=body,
            message_id=message_id,
            status=status,
            fail_first=faults.fail_callback_attempts,
            duplicate=duplicate,
        )

    async def _media_reachable(self, urls: tuple[str, ...]) -> bool:
        client = self._media_client
        if client is None:
            return False
        timeout = self.config.media_fetch_timeout_ms / 1000
        for url in urls:
            if not url.lower().startswith(("http://", "https://")):
                return False
            try:
                async with client.stream("GET", url, timeout=timeout) as answer:
                    if not 200 <= answer.status_code < 300:
                        return False
                    async for _chunk in answer.aiter_bytes():
                        break
            except (httpx.HTTPError, ValueError):
                return False
        return True

    # ------------------------------------------------------------------ inbound

    def inject_inbound(
        self,
        entry: AppEntry,
        *,
        channel: str,
        identity: str,
        contact_message: dict[str, Any],
        contact_name: str | None = None,
        sender_id: str | None = None,
    ) -> str:
        """Deliver a customer's message as MESSAGE_INBOUND; returns its message id."""
        now = self.clock()
        message_id = new_ulid(now)
        contact_id, conversation_id = self._contact_for(entry, channel, identity)
        if contact_id and contact_name:
            self.contacts[contact_id].display_name = contact_name
        key = (entry.app.id, channel, channel_rules.normalize_identity(identity))
        with self._lock:
            self.last_inbound[key] = now
        body = payloads.inbound_message(
            project_id=entry.project.id,
            app_id=entry.app.id,
            message_id=message_id,
            channel=channel,
            identity=identity,
            contact_message=contact_message,
            processing_mode=entry.app.processing_mode,
            now=now,
            sender_id=sender_id if sender_id is not None else entry.app.sender_ids.get(channel, ""),
            contact_id=contact_id,
            conversation_id=conversation_id,
        )
        with self._lock:
            self.inbound.append(
                {"message_id": message_id, "contact_name": contact_name, "body": body}
            )
        destinations = self._subscribers(entry.app.id, "MESSAGE_INBOUND")
        if destinations:
            self._dispatch(
                destinations, "MESSAGE_INBOUND", entry.app.id, dumps(body), message_id, None
            )
        return message_id

    def last_message_to(self, app_id: str, channel: str, identity: str) -> str:
        return self.last_sent_to.get(
            (app_id, channel, channel_rules.normalize_identity(identity)), ""
        )


_INJECTED_MESSAGES = {
    429: "Too many requests (injected by the emulator's fault settings)",
    500: "Internal error (injected by the emulator's fault settings)",
    502: "Bad gateway (injected by the emulator's fault settings)",
    503: "The service is currently unavailable (injected by the emulator's fault settings)",
    504: "Deadline exceeded (injected by the emulator's fault settings)",
}


def _rate_limited(message: str, wait: float) -> ApiError:
    seconds = max(1, int(wait + 0.999))
    return ApiError(429, message, headers={"retry-after": str(seconds)})


async def _sleep_ms(ms: int) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)
