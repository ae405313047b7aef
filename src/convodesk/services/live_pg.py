"""Live events across processes on PostgreSQL: `PgBus`, the `LiveBus` of a multi-node
deployment (issue 7), built on ``LISTEN/NOTIFY``.

Publishing: `publish` delivers to this process's subscribers at once (its `LocalBus`), then
sends the events to every other process with ``pg_notify('convodesk_live', ...)``, all the
events of one call in one transaction (PostgreSQL delivers a transaction's notifications
together, in order, and transactions in commit order). Each notification starts with a
header, ``1 <origin> <seq> <part> <parts> ``, then a slice of the JSON array of the events
(`LiveEvent.to_dict`; plain ASCII, so a slice of characters is one of bytes). A payload
must stay under 8000 bytes: a longer array is cut into as many parts as needed and put
back together by the listeners, so an event of any size arrives (no table, nothing to
clean up; the parts of one transaction arrive together or not at all).

Listening: one thread per process that serves desktops (`start_listening`, in the web
app's lifespan), on a connection of its own (``application_name=convodesk-live``, TCP
keepalives on), hands what it hears to the `LocalBus`. Notifications this process sent
are skipped by their origin (a random id per bus): they were delivered locally already,
so nothing arrives twice. A `convodesk worker` process publishes and does not listen.

Losing the database: the listener reconnects with a growing pause (0.1 s doubling up to
5 s). Once it listens again, every subscriber of the process is told to resync
(`LocalBus.resync`, which ends the stream as an overflow does: the desktop reconnects and
reloads), because events sent meanwhile are gone. The same happens when a notification
cannot be read. Publishing while the database is away logs a warning; the change itself
was committed before, and the other nodes' listeners, which lose the database too, resync
their desktops when it is back.

`wants_events` (publishers skip building events when it is false, which is most of the
processor's cost per batch): true while this process has subscribers, or while any process
listens on this database (a listener's connection is named ``convodesk-live`` in
``pg_stat_activity``, which every role may read). That answer is kept 10 s when yes, 0.5 s
when no: a `serve` node that starts is heard by the workers within half a second (its
desktops cannot connect before it has started). A failing check answers yes.
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Collection, Iterable
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, text

from convodesk import logs
from convodesk.services.live import DEFAULT_MAXSIZE, Audience, LiveEvent, LocalBus, Subscription

log = logs.get_logger("convodesk.live")

CHANNEL = "convodesk_live"
APPLICATION_NAME = "convodesk-live"
VERSION = "1"
# PostgreSQL refuses a payload of 8000 bytes or more (its default build); a margin for the
# header is kept inside this.
MAX_PAYLOAD_BYTES = 7900
_HEADER_ROOM = 80  # "1 " + origin (16) + three numbers and spaces, with room to spare
INITIAL_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0
WAIT_SECONDS = 1.0  # how long one wait for notifications lasts before checking for stop
STARTUP_WAIT_SECONDS = 5.0  # `start_listening` waits this long for LISTEN to be in force
CONNECT_TIMEOUT_SECONDS = 5
MAX_PARTIAL = 64  # incomplete multi-part messages kept at most (they complete at once)
LISTENERS_KNOWN_SECONDS = 10.0  # how long "someone listens" is believed
NO_LISTENERS_KNOWN_SECONDS = 0.5  # and "nobody listens"
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
_LISTENERS = text(
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
    " WHERE application_name = :name AND datname = current_database())"
)


def encode(events: list[LiveEvent], origin: str, seq: int, *, limit: int) -> list[str]:
    """The notification payloads carrying `events`: one when they fit, else parts."""
    body = json.dumps([event.to_dict() for event in events], separators=(",", ":"))
    size = max(1, limit - _HEADER_ROOM)
    chunks = [body[i : i + size] for i in range(0, len(body), size)] or [""]
    return [f"{VERSION} {origin} {seq} {n} {len(chunks)} {chunk}" for n, chunk in enumerate(chunks)]


class MalformedNotificationError(ValueError):
    """A notification this version cannot read."""


class Assembler:
    """Puts the parts of multi-part messages back together; skips those of `origin`."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._partial: dict[tuple[str, int], list[str | None]] = {}

    def feed(self, payload: str) -> list[LiveEvent] | None:
        """The events of a complete message, [] for one of our own, None while parts are
        missing. Raises `MalformedNotificationError` for a payload it cannot read."""
        fields = payload.split(" ", 5)
        if len(fields) != 6 or fields[0] != VERSION:
            raise MalformedNotificationError(f"unknown notification format: {payload[:40]!r}")
        _, origin, seq_text, part_text, parts_text, chunk = fields
        if origin == self.origin:
            return []
        try:
            seq, part, parts = int(seq_text), int(part_text), int(parts_text)
        except ValueError as exc:
            raise MalformedNotificationError(f"bad notification header: {payload[:40]!r}") from exc
        if not 0 <= part < parts:
            raise MalformedNotificationError(f"bad notification part {part} of {parts}")
        if parts == 1:
            return _decode(chunk)
        key = (origin, seq)
        slots = self._partial.get(key)
        if slots is None:
            if len(self._partial) >= MAX_PARTIAL:  # never completed: forget the oldest
                self._partial.pop(next(iter(self._partial)))
            slots = self._partial[key] = [None] * parts
        slots[part] = chunk
        if any(slot is None for slot in slots):
            return None
        del self._partial[key]
        return _decode("".join(slot or "" for slot in slots))

    def reset(self) -> None:
        """The connection was lost: parts heard before it will never be completed."""
        self._partial.clear()


def _decode(body: str) -> list[LiveEvent]:
    try:
        return [LiveEvent.from_dict(raw) for raw in json.loads(body)]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedNotificationError(f"cannot read the events: {type(exc).__name__}") from exc


class PgBus:
    """`LiveBus` for several processes on one PostgreSQL database (see the module doc)."""

    def __init__(
        self,
        engine: Engine,
        *,
        local: LocalBus | None = None,
        channel: str = CHANNEL,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._engine = engine
        self.local = local if local is not None else LocalBus()
        self.channel = channel
        self.origin = secrets.token_hex(8)
        self._max_payload = max_payload_bytes
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._listeners = 0  # nested start_listening calls
        self._listener: _Listener | None = None
        self._anyone_listens = True
        self._known_until = 0.0  # monotonic time until which `_anyone_listens` holds

    @property
    def wants_events(self) -> bool:
        if self.local.wants_events:
            return True
        now = time.monotonic()
        if now < self._known_until:
            return self._anyone_listens
        try:
            with self._engine.connect() as conn:
                found = bool(conn.scalar(_LISTENERS, {"name": APPLICATION_NAME}))
        except Exception as exc:  # cannot tell: build the events, publishing will say more
            log.debug("cannot tell whether anyone listens", error=_describe(exc))
            found = True
        self._anyone_listens = found
        self._known_until = now + (LISTENERS_KNOWN_SECONDS if found else NO_LISTENERS_KNOWN_SECONDS)
        return found

    def hears(self, queues: Collection[str], agents: Collection[str]) -> bool:
        """Whether this process's subscribers hear it, or else anyone listens elsewhere
        (who, on the other nodes, is not known here)."""
        return self.local.hears(queues, agents) or self.wants_events

    @property
    def listener(self) -> _Listener | None:
        return self._listener

    def publish(self, events: Iterable[LiveEvent]) -> None:
        batch = list(events)
        if not batch:
            return
        self.local.publish(batch)
        try:
            payloads = encode(batch, self.origin, next(self._seq), limit=self._max_payload)
            with self._engine.begin() as conn:
                conn.execute(_NOTIFY, [{"channel": self.channel, "payload": p} for p in payloads])
        except Exception as exc:  # the change is committed; only the other nodes miss it
            log.warning(
                "live events not sent to the other nodes",
                events=len(batch),
                error=_describe(exc),
            )

    def subscribe(self, audience: Audience, *, maxsize: int = DEFAULT_MAXSIZE) -> Subscription:
        return self.local.subscribe(audience, maxsize=maxsize)

    def start_listening(self, wait_seconds: float = STARTUP_WAIT_SECONDS) -> None:
        """Start the listener and wait (a little) until it listens, so the desktops of a
        starting process miss nothing; if the database does not answer in time, go on: the
        listener keeps trying and resyncs the subscribers once it listens."""
        with self._lock:
            self._listeners += 1
            listener = self._listener
            if listener is None:
                listener = self._listener = _Listener(self)
                listener.start()
        if not listener.listening.wait(wait_seconds):
            listener.late()

    def stop_listening(self) -> None:
        with self._lock:
            self._listeners = max(0, self._listeners - 1)
            if self._listeners or self._listener is None:
                return
            listener, self._listener = self._listener, None
        listener.stop()

    def close(self) -> None:
        with self._lock:
            self._listeners = 0
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        self.local.close()

    def conninfo(self) -> str:
        """libpq's form of the engine's URL (for the listener's own connection)."""
        return self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def wake(self, channel: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(_NOTIFY, {"channel": channel, "payload": ""})


class _Listener:
    """The listening thread of one `PgBus` (see the module doc)."""

    def __init__(self, bus: PgBus) -> None:
        self._bus = bus
        self._stopping = threading.Event()
        # Notified by `stop`, so a thread waiting for notifications wakes at once.
        self._wake_channel = f"{bus.channel}_wake_{bus.origin}"
        self._assembler = Assembler(bus.origin)
        self._thread = threading.Thread(target=self._run, name="live-listener", daemon=True)
        self.listening = threading.Event()  # set while LISTEN is in force
        # A connection after the first (or a first one later than `start_listening` waited)
        # follows a time when nobody listened: the subscribers must resync.
        self._resync_on_connect = False
        self.connections = 0  # successful (re)connections, for tests and diagnostics
        self.backend_pid: int | None = None

    def start(self) -> None:
        self._thread.start()

    def late(self) -> None:
        """`start_listening` stopped waiting: the first connection, too, must resync."""
        self._resync_on_connect = True

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.listening.is_set():
            try:
                self._bus.wake(self._wake_channel)
            except Exception as exc:  # the database is away: the thread stops at its next wait
                log.debug("live listener not woken", error=_describe(exc))
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = INITIAL_BACKOFF_SECONDS
        while not self._stopping.is_set():
            before = self.connections
            try:
                self._listen()
            except Exception as exc:  # the database went away, or does not answer yet
                if self._stopping.is_set():
                    return
                if self.connections != before:  # it was listening until now: start over
                    delay = INITIAL_BACKOFF_SECONDS
                log.warning(
                    "live listener lost the database; reconnecting",
                    error=_describe(exc),
                    retry_in_seconds=delay,
                )
                self._stopping.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    def _listen(self) -> None:
        with psycopg.connect(
            self._bus.conninfo(),
            autocommit=True,
            application_name=APPLICATION_NAME,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        ) as conn:
            for channel in (self._bus.channel, self._wake_channel):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.backend_pid = conn.info.backend_pid
            self.connections += 1
            self._assembler.reset()
            resync, self._resync_on_connect = self._resync_on_connect, True
            self.listening.set()
            try:
                if resync:  # whatever was sent while nobody listened is lost: reload
                    self._bus.local.resync()
                    log.info("live listener connected again; desktops told to reload")
                while not self._stopping.is_set():
                    for notify in conn.notifies(timeout=WAIT_SECONDS):
                        if notify.channel == self._bus.channel:
                            self._hear(notify.payload)
                        if self._stopping.is_set():
                            return
            finally:
                self.listening.clear()

    def _hear(self, payload: str) -> None:
        try:
            events = self._assembler.feed(payload)
        except MalformedNotificationError as exc:
            log.warning("unreadable live notification; desktops told to reload", error=str(exc))
            self._bus.local.resync()
            return
        if events:
            self._bus.local.publish(events)


def _describe(exc: BaseException) -> str:
    """The error's kind and first line, without statement parameters (event data)."""
    cause: Any = getattr(exc, "orig", None) or exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}"[:300]
