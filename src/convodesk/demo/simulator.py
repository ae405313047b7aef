"""The demo's customers: a trickle of people writing in on WhatsApp, Messenger and SMS.

The simulator only uses the emulator's control plane, as a person with a phone would only
use the channel: ``POST /_emulator/inbound`` is the customer writing (the emulator delivers
the signed MESSAGE_INBOUND callback to convodesk), ``GET /_emulator/sent`` is the customer's
phone receiving what convodesk sent through ``messages:send``.

How a visit goes (`CustomerSimulator._visit`):

1. A customer arrives every ``interval`` seconds on average (jittered), at most
   ``max_customers`` at a time. Each visit is one `Persona` with a `Script`
   (demo/scripts.py): an opener about an order, a refund, an address, opening hours or a
   broken product, sometimes with a photo or a location.
2. The customer waits for an answer: a message to their identity on their channel that the
   emulator reports DELIVERED or READ (a FAILED one never reached the phone). Sends that were
   there before the visit started are not answers.
3. After an answer they read it, type (a few seconds, longer for longer texts) and send the
   next follow-up of the script; what the agent adds while they type is read with it.
4. After the answer to the last follow-up they say thanks and leave.
5. With no answer for ``reminder_after`` they write a reminder, once; with no answer for
   ``give_up_after`` after that, they leave.

Everything random (arrivals, who comes, the topic, the words, the delays) comes from one
seed, so a seed replays the same customers; `Timing` is in seconds of simulated time and
``time_scale`` stretches it (tests run at 1/100 or faster). `running_in_thread` runs the
simulator on its own thread and event loop next to the web app (what ``convodesk demo``
does) and cancels it cleanly on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx

from convodesk import logs
from convodesk.demo import APP_EU, APP_US
from convodesk.demo.scripts import PERSONAS, TOPICS, Persona, Say, Script, Turn, build_script

log = logs.get_logger("convodesk.demo.customers")

DEFAULT_APPS: Mapping[str, str] = MappingProxyType(
    {"WHATSAPP": APP_EU, "MESSENGER": APP_EU, "SMS": APP_US}
)
_DELIVERED = frozenset({"DELIVERED", "READ"})
_READY_POLL_SECONDS = 0.1


class SimulatorError(Exception):
    """The emulator refused what a customer did (a bug in the simulator or its settings)."""


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How customers behave in time: seconds of simulated time (see ``time_scale``)."""

    first_customer_after: float = 3.0  # at most the interval
    jitter: float = 0.6  # arrivals every interval x U(1 - jitter, 1 + jitter)
    read: tuple[float, float] = (1.5, 4.0)  # reading an answer before typing
    typing_speed: tuple[float, float] = (4.0, 7.0)  # characters a second
    typing_max: float = 8.0
    attach: tuple[float, float] = (2.0, 5.0)  # picking a photo, sharing a location
    reminder_after: float = 90.0  # no answer this long: one reminder
    give_up_after: float = 300.0  # no answer this long after the reminder: leave
    poll: float = 1.0  # how often a waiting customer looks at their phone

    def __post_init__(self) -> None:
        pairs = {"read": self.read, "typing_speed": self.typing_speed, "attach": self.attach}
        for name, (low, high) in pairs.items():
            if not 0 <= low <= high:
                raise ValueError(f"timing.{name}: expected 0 <= low <= high, got {low}, {high}")
        if self.typing_speed[0] <= 0:
            raise ValueError("timing.typing_speed: must be above 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("timing.jitter: expected 0 <= jitter < 1")
        for name in ("first_customer_after", "typing_max", "reminder_after", "give_up_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"timing.{name}: must not be negative")
        if self.poll <= 0:
            raise ValueError("timing.poll: must be above 0")

    def longest_reply(self) -> float:
        """The most a customer takes from an agent's answer to their first message back."""
        return self.poll + self.read[1] + max(self.typing_max, self.attach[1])


@dataclass(frozen=True, kw_only=True)
class SimulatorSettings:
    emulator_url: str
    # channel -> the app its customers write to
    apps: Mapping[str, str] = field(default_factory=lambda: DEFAULT_APPS)
    media_base_url: str | None = None  # the media host (demo/media.py); None: no photos
    interval: float = 30.0  # seconds between new customers, on average
    max_customers: int = 5  # at the same time
    seed: int | None = None  # None: a fresh one (see CustomerSimulator.seed)
    time_scale: float = 1.0  # real seconds per simulated second
    timing: Timing = field(default_factory=Timing)
    personas: tuple[Persona, ...] = PERSONAS
    max_visits: int | None = None  # None: customers keep coming until cancelled

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"interval: must be above 0 seconds, got {self.interval}")
        if not self.time_scale > 0:
            raise ValueError(f"time_scale: must be above 0, got {self.time_scale}")
        if not self.personas:
            raise ValueError("personas: at least one is needed")
        if not 1 <= self.max_customers <= len(self.personas):
            raise ValueError(
                f"max_customers: expected 1 to {len(self.personas)} (one per persona), "
                f"got {self.max_customers}"
            )
        if self.max_visits is not None and self.max_visits < 0:
            raise ValueError("max_visits: must not be negative")
        for persona in self.personas:
            if persona.channel not in self.apps:
                raise ValueError(f"apps: no app for {persona.channel} ({persona.name})")


@dataclass(frozen=True, kw_only=True)
class Visit:
    number: int  # from 1
    wait: float  # simulated seconds after the previous arrival
    persona: Persona  # who the plan sends; another one of the channel if they are still busy
    topic: str
    seed: int  # the words and the delays of this visit


@dataclass(frozen=True)
class _Customer:
    persona: Persona
    app_id: str
    rng: random.Random


class CustomerSimulator:
    def __init__(
        self, settings: SimulatorSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.seed = settings.seed if settings.seed is not None else random.getrandbits(32)
        self._transport = transport
        self._busy: set[Persona] = set()
        self.visits_started = 0
        self.visits_finished = 0
        self.errors: list[str] = []  # why visits ended early (the emulator refused, ...)

    # --------------------------------------------------------------- the plan

    def plan(self) -> Iterator[Visit]:
        """The arrivals, from the seed alone: who comes when, about what."""
        s = self.settings
        rng = random.Random(self.seed)
        # Nobody comes back while they may still be in their last visit, nor too soon after.
        n = len(s.personas)
        recent: deque[Persona] = deque(maxlen=max(min(s.max_customers, n - 1), n - 3, 0))
        number = 0
        while s.max_visits is None or number < s.max_visits:
            if number == 0:
                wait = min(s.timing.first_customer_after, s.interval) * rng.uniform(0.5, 1.0)
            else:
                wait = s.interval * rng.uniform(1 - s.timing.jitter, 1 + s.timing.jitter)
            persona = rng.choice([p for p in s.personas if p not in recent])
            recent.append(persona)
            number += 1
            yield Visit(
                number=number,
                wait=wait,
                persona=persona,
                topic=rng.choice(TOPICS),
                seed=rng.getrandbits(32),
            )

    def script(self, visit: Visit, persona: Persona | None = None) -> Script:
        """What ``persona`` (default: the visit's) says on this visit."""
        channel = (persona or visit.persona).channel
        pictures = self.settings.media_base_url is not None
        return build_script(visit.topic, visit.seed, channel, pictures=pictures)

    # ---------------------------------------------------------------- running

    async def run(self, *, ready_url: str | None = None) -> None:
        """Send customers until cancelled (or until ``max_visits`` visits have ended).

        ``ready_url``: wait until it answers 200 first (the web app's ``/readyz``).
        """
        s = self.settings
        slots = asyncio.Semaphore(s.max_customers)
        async with httpx.AsyncClient(
            base_url=s.emulator_url, timeout=10.0, transport=self._transport
        ) as client:
            if ready_url is not None:
                await self._wait_ready(client, ready_url)
            log.info(
                "simulated customers start",
                seed=self.seed,
                interval=s.interval,
                max_customers=s.max_customers,
            )
            async with asyncio.TaskGroup() as group:
                for visit in self.plan():
                    await self._sleep(visit.wait)
                    await slots.acquire()
                    persona = self._free_persona(visit.persona)
                    self._busy.add(persona)
                    self.visits_started += 1
                    group.create_task(
                        self._visit(client, visit, persona, slots), name=f"customer {persona.name}"
                    )

    async def _wait_ready(self, client: httpx.AsyncClient, url: str) -> None:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(_READY_POLL_SECONDS)

    def _free_persona(self, wanted: Persona) -> Persona:
        """``wanted``, or if they are still in a visit, someone free on the same channel
        (then anyone free: there is a slot, so someone is)."""
        if wanted not in self._busy:
            return wanted
        free = [p for p in self.settings.personas if p not in self._busy]
        same_channel = [p for p in free if p.channel == wanted.channel]
        return (same_channel or free)[0]

    async def _visit(
        self, client: httpx.AsyncClient, visit: Visit, persona: Persona, slots: asyncio.Semaphore
    ) -> None:
        timing = self.settings.timing
        fields = {"customer": persona.name, "channel": persona.channel, "visit": visit.number}
        try:
            script = self.script(visit, persona)
            customer = _Customer(
                persona=persona,
                app_id=self.settings.apps[persona.channel],
                rng=random.Random(f"{visit.seed}:timing"),
            )
            log.info("customer arrives", topic=script.topic, **fields)
            seen = {r["message_id"] for r in await self._sends(client, customer)}
            await self._say(client, customer, script.opener, opener=True)
            follow_ups = list(script.follow_ups)
            reminded = False
            while True:
                patience = timing.give_up_after if reminded else timing.reminder_after
                if not await self._answers(client, customer, seen, patience):
                    if reminded:
                        log.info("customer gives up", **fields)
                        return
                    reminded = True
                    await self._say(client, customer, script.reminder)
                    continue
                await self._sleep(customer.rng.uniform(*timing.read))
                await self._answers(client, customer, seen, 0.0)  # read what came meanwhile
                if not follow_ups:
                    await self._say(client, customer, script.thanks)
                    log.info("customer leaves happy", **fields)
                    return
                await self._say(client, customer, follow_ups.pop(0))
        except (httpx.HTTPError, SimulatorError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.errors.append(f"{persona.name}: {error}")
            log.warning("customer stopped", error=error, **fields)
        finally:
            self._busy.discard(persona)
            self.visits_finished += 1
            slots.release()

    async def _say(
        self, client: httpx.AsyncClient, customer: _Customer, turn: Turn, *, opener: bool = False
    ) -> None:
        timing = self.settings.timing
        for i, say in enumerate(turn):
            if not (opener and i == 0):  # the opener was typed before the visit began
                if say.text is not None:
                    speed = customer.rng.uniform(*timing.typing_speed)
                    await self._sleep(min(len(say.text) / speed, timing.typing_max))
                else:
                    await self._sleep(customer.rng.uniform(*timing.attach))
            await self._inject(client, customer, say)

    async def _inject(self, client: httpx.AsyncClient, customer: _Customer, say: Say) -> None:
        persona = customer.persona
        body: dict[str, Any] = {
            "app_id": customer.app_id,
            "channel": persona.channel,
            "identity": persona.identity,
        }
        if persona.profile_name:
            body["contact_name"] = persona.profile_name
        if say.text is not None:
            body["text"] = say.text
        elif say.picture is not None:
            if self.settings.media_base_url is None:
                raise SimulatorError("a photo to send, but no media host")
            body["media_url"] = f"{self.settings.media_base_url}/media/{say.picture}"
        elif say.location is not None:
            loc = say.location
            body["location"] = {
                "latitude": loc.latitude,
                "longitude": loc.longitude,
                "title": loc.title,
                "label": loc.label,
            }
        answer = await client.post("/_emulator/inbound", json=body)
        if answer.status_code != 202:
            raise SimulatorError(
                f"POST /_emulator/inbound answered {answer.status_code}: {answer.text[:300]}"
            )
        log.debug("customer writes", customer=persona.name, message=say.describe())

    async def _answers(
        self, client: httpx.AsyncClient, customer: _Customer, seen: set[str], patience: float
    ) -> list[dict[str, Any]]:
        """The agent's messages that reached the customer and are new to them, waiting up
        to ``patience`` simulated seconds for the first; marks them seen."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience * self.settings.time_scale
        while True:
            answers: list[dict[str, Any]] = []
            for record in await self._sends(client, customer):
                if record["message_id"] in seen:
                    continue
                status = record.get("outcome", {}).get("status")
                if status == "FAILED":  # it never reached the phone
                    seen.add(record["message_id"])
                elif status in _DELIVERED:
                    seen.add(record["message_id"])
                    answers.append(record)
            if answers or loop.time() >= deadline:
                return answers
            await self._sleep(self.settings.timing.poll)

    async def _sends(self, client: httpx.AsyncClient, customer: _Customer) -> list[dict[str, Any]]:
        """What was sent to the customer's identity on their channel (any state)."""
        persona = customer.persona
        answer = await client.get(
            "/_emulator/sent", params={"app_id": customer.app_id, "identity": persona.identity}
        )
        if answer.status_code != 200:
            raise SimulatorError(
                f"GET /_emulator/sent answered {answer.status_code}: {answer.text[:300]}"
            )
        records: list[dict[str, Any]] = answer.json()["sent"]
        return [r for r in records if _sent_on(r, persona.channel)]

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.settings.time_scale)


def _sent_on(record: Mapping[str, Any], channel: str) -> bool:
    """Whether a sent record went (or is going) to ``channel``."""
    if record.get("channel"):
        return bool(record["channel"] == channel)
    recipient = record.get("request", {}).get("recipient", {})
    identities = recipient.get("identified_by", {}).get("channel_identities", [])
    return any(i.get("channel") == channel for i in identities)


class _Thread:
    """A simulator on its own thread and event loop; `stop` cancels it and joins."""

    def __init__(self, simulator: CustomerSimulator, ready_url: str | None) -> None:
        self._simulator = simulator
        self._ready_url = ready_url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="customer simulator", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(timeout=10)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        try:
            await self._simulator.run(ready_url=self._ready_url)
        except asyncio.CancelledError:
            log.info("simulated customers stop")
        except Exception:
            log.exception("the customer simulator failed")

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout=10)


@contextlib.contextmanager
def running_in_thread(
    simulator: CustomerSimulator, *, ready_url: str | None = None
) -> Iterator[CustomerSimulator]:
    """Run ``simulator`` on a background thread for the ``with`` block, then stop it."""
    thread = _Thread(simulator, ready_url)
    thread.start()
    try:
        yield simulator
    finally:
        thread.stop()
