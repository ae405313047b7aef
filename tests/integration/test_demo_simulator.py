"""The demo's simulated customers against an in-process emulator (callbacks go to a sink).

The simulator runs at a fast time scale; what it does is read back from the emulator's
control plane (``/_emulator/inbound``) and from the signed callbacks the sink received.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from typer.testing import CliRunner

from convodesk.cli import app as cli_app
from convodesk.demo import (
    APP_EU,
    APP_US,
    PROJECT_EU,
    PROJECT_US,
    DemoSecrets,
    emulator_config,
    print_banner,
)
from convodesk.demo.media import PICTURES, media_app
from convodesk.demo.scripts import PERSONAS, TOPICS, Say, Turn, build_script
from convodesk.demo.simulator import (
    CustomerSimulator,
    SimulatorSettings,
    Timing,
    Visit,
    running_in_thread,
)
from convodesk.emulator.channels import identity_is_valid
from convodesk.emulator.config import EmulatorConfig
from convodesk.emulator.server import running_emulator
from convodesk.sinch import signature
from convodesk.web.serving import serve_in_thread
from tests.emulator.conftest import Receiver, serving_receiver

T = TypeVar("T")
SCALE = 0.01  # 1 simulated second = 10 ms
APPS = {"WHATSAPP": APP_EU, "MESSENGER": APP_EU, "SMS": APP_US}


@dataclass
class Demo:
    url: str
    media_url: str
    secrets: DemoSecrets
    receiver: Receiver
    http: httpx.Client

    def settings(self, **overrides: Any) -> SimulatorSettings:
        values: dict[str, Any] = {
            "emulator_url": self.url,
            "media_base_url": self.media_url,
            "time_scale": SCALE,
            "seed": 7,
        }
        values.update(overrides)
        return SimulatorSettings(**values)

    def inbound(self, identity: str | None = None) -> list[dict[str, Any]]:
        """What customers wrote, oldest first: the callbacks' ``message`` objects."""
        items = self.http.get("/_emulator/inbound").json()["inbound"]
        messages = [i["body"]["message"] for i in items]
        if identity is not None:
            messages = [m for m in messages if m["channel_identity"]["identity"] == identity]
        return messages

    def agent_sends(self, channel: str, identity: str, text: str) -> str:
        """What convodesk's sender does: OAuth2, then messages:send on the app's region."""
        region, project, key_id, key = (
            ("us", PROJECT_US, "demo-key-us", self.secrets.key_us)
            if channel == "SMS"
            else ("eu", PROJECT_EU, "demo-key-eu", self.secrets.key_eu)
        )
        token = self.http.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(key_id, key)
        ).json()["access_token"]
        app_id = APPS[channel]
        target: dict[str, str] = {"channel": channel, "identity": identity}
        if channel == "MESSENGER":
            target["app_id"] = app_id
        answer = self.http.post(
            f"/{region}/v1/projects/{project}/messages:send",
            headers={"authorization": f"Bearer {token}"},
            json={
                "app_id": app_id,
                "recipient": {"identified_by": {"channel_identities": [target]}},
                "message": {"text_message": {"text": text}},
                "channel_priority_order": [channel],
            },
        )
        assert answer.status_code == 200, answer.text
        message_id: str = answer.json()["message_id"]
        return message_id


@pytest.fixture
def demo() -> Iterator[Demo]:
    secrets = DemoSecrets.generate()
    with serving_receiver() as receiver:
        config = emulator_config(0, secrets, callback_base=receiver.url)
        with (
            running_emulator(EmulatorConfig.from_dict(config)) as emu,
            serve_in_thread(media_app(), name="demo media host") as media_url,
            httpx.Client(base_url=emu.base_url, timeout=10) as http,
        ):
            yield Demo(emu.base_url, media_url, secrets, receiver, http)


def wait_for(probe: Callable[[], T | None], timeout: float = 5.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def contact_message(say: Say, media_url: str) -> dict[str, Any]:
    """The ``contact_message`` the emulator builds for one `Say`."""
    if say.text is not None:
        return {"text_message": {"text": say.text}}
    if say.picture is not None:
        return {"media_message": {"url": f"{media_url}/media/{say.picture}"}}
    assert say.location is not None
    return {
        "location_message": {
            "coordinates": {"latitude": say.location.latitude, "longitude": say.location.longitude},
            "title": say.location.title,
            "label": say.location.label,
        }
    }


def first_visit(settings: SimulatorSettings) -> tuple[CustomerSimulator, Visit]:
    simulator = CustomerSimulator(settings)
    return simulator, next(simulator.plan())


def wait_turn(demo: Demo, identity: str, before: int, turn: Turn) -> list[dict[str, Any]]:
    """Wait until ``turn`` follows the ``before`` messages of ``identity``, and check it."""

    def arrived() -> list[dict[str, Any]] | None:
        messages = demo.inbound(identity)
        return messages if len(messages) >= before + len(turn) else None

    messages = wait_for(arrived, what=f"{len(turn)} message(s) after {before}")
    got = [m["contact_message"] for m in messages[before:]]
    assert got == [contact_message(say, demo.media_url) for say in turn]
    return messages


def test_customers_write_on_all_three_channels_in_shapes_the_emulator_accepts(
    demo: Demo,
) -> None:
    simulator = CustomerSimulator(demo.settings(interval=2.0, max_customers=5))
    with running_in_thread(simulator):

        def channels() -> set[str] | None:
            seen = {m["channel_identity"]["channel"] for m in demo.inbound()}
            return seen if seen == {"WHATSAPP", "MESSENGER", "SMS"} else None

        wait_for(channels, timeout=10, what="customers on WhatsApp, Messenger and SMS")
    assert simulator.errors == []
    callbacks = [r.json() for r in demo.receiver.snapshot()]
    inbound = [c for c in callbacks if "message" in c]
    assert {c["message"]["channel_identity"]["channel"] for c in inbound} == set(APPS)
    personas = {(p.channel, p.identity) for p in PERSONAS}
    for callback in inbound:
        message = callback["message"]
        channel, identity = (message["channel_identity"][k] for k in ("channel", "identity"))
        assert callback["app_id"] == APPS[channel]
        assert (channel, identity) in personas
        assert identity_is_valid(channel, identity)
        assert not identity.startswith("+")
        assert message["direction"] == "TO_APP"
        (kind,) = message["contact_message"]
        assert kind in ("text_message", "media_message", "location_message")
        if channel == "SMS":
            assert kind == "text_message"  # no photos or locations over plain SMS
    # signed callbacks to the eu service for WhatsApp and Messenger, to the us one for SMS
    for received in demo.receiver.snapshot():
        channel = received.json()["message"]["channel_identity"]["channel"]
        service, secret = (
            ("sinch-us", demo.secrets.webhook_us)
            if channel == "SMS"
            else ("sinch-eu", demo.secrets.webhook_eu)
        )
        assert received.path == f"/sms/sinchconversation/{service}"
        headers = received.headers
        assert headers[signature.SIGNATURE_HEADER] == signature.compute_signature(
            secret,
            received.body,
            headers[signature.NONCE_HEADER],
            headers[signature.TIMESTAMP_HEADER],
        )


def test_photos_come_from_the_media_host(demo: Demo) -> None:
    def opens_with_photo(seed: int) -> bool:
        simulator, visit = first_visit(demo.settings(seed=seed))
        return any(say.picture for say in simulator.script(visit).opener)

    seed = next(s for s in range(1000) if opens_with_photo(s))  # the plan is a pure function
    settings = demo.settings(seed=seed, max_visits=1, timing=Timing(reminder_after=1000))
    simulator, visit = first_visit(settings)
    script = simulator.script(visit)
    with running_in_thread(simulator):
        messages = wait_turn(demo, visit.persona.identity, 0, script.opener)
    (url,) = (m["contact_message"]["media_message"]["url"] for m in messages[1:])
    picture = httpx.get(url)
    assert picture.status_code == 200
    assert picture.headers["content-type"] == "image/png"
    assert picture.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert httpx.get(f"{demo.media_url}/media/nothing.png").status_code == 404


def test_a_customer_answers_each_reply_after_a_human_delay_then_thanks_and_leaves(
    demo: Demo,
) -> None:
    timing = Timing(reminder_after=1000)

    def visit_of(seed: int) -> tuple[CustomerSimulator, Visit]:
        return first_visit(demo.settings(seed=seed, max_visits=1, timing=timing))

    # not WhatsApp: a message before the customer writes would fail there (24-hour window)
    seed = next(s for s in range(100) if visit_of(s)[1].persona.channel != "WHATSAPP")
    simulator, visit = visit_of(seed)
    script = simulator.script(visit)
    persona = visit.persona
    assert len(script.follow_ups) >= 2
    # delivered before the visit: not an answer to it
    old = demo.agent_sends(persona.channel, persona.identity, "An old message")
    wait_for(
        lambda: (
            demo.http.get("/_emulator/sent", params={"message_id": old}).json()["sent"][0][
                "outcome"
            ]["status"]
            in ("DELIVERED", "READ")
        ),
        what="the old message to be delivered",
    )
    quiet = timing.longest_reply() * SCALE + 0.2
    with running_in_thread(simulator):
        count = len(wait_turn(demo, persona.identity, 0, script.opener))
        # a reply the phone never got (FAILED) is not an answer either
        demo.http.post(
            "/_emulator/outcomes",
            json={"identity": persona.identity, "fail_reason": "RECIPIENT_NOT_REACHABLE"},
        ).raise_for_status()
        demo.agent_sends(persona.channel, persona.identity, "This one fails")
        time.sleep(quiet)  # the absence of an answer: give it its longest reply time
        assert len(demo.inbound(persona.identity)) == count
        for turn in (*script.follow_ups, script.thanks):
            sent_at = time.monotonic()
            demo.agent_sends(persona.channel, persona.identity, "Let me check that for you.")
            messages = wait_turn(demo, persona.identity, count, turn)
            elapsed = time.monotonic() - sent_at
            assert timing.read[0] * SCALE <= elapsed <= timing.longest_reply() * SCALE + 1.0
            count = len(messages)
        wait_for(lambda: simulator.visits_finished == 1, what="the customer to leave")
        demo.agent_sends(persona.channel, persona.identity, "Anything else?")
        time.sleep(quiet)
        assert len(demo.inbound(persona.identity)) == count  # gone: no more answers
    assert simulator.errors == []


def test_no_answer_brings_one_reminder_then_the_customer_gives_up(demo: Demo) -> None:
    timing = Timing(reminder_after=20, give_up_after=30)
    simulator, visit = first_visit(demo.settings(seed=5, max_visits=1, timing=timing))
    script = simulator.script(visit)
    started = time.monotonic()
    asyncio.run(simulator.run())  # returns when the one visit has ended
    took = time.monotonic() - started
    messages = demo.inbound(visit.persona.identity)
    assert [m["contact_message"] for m in messages] == [
        contact_message(say, demo.media_url) for say in (*script.opener, *script.reminder)
    ]
    assert took >= (timing.reminder_after + timing.give_up_after) * SCALE
    assert simulator.visits_finished == 1
    assert simulator.errors == []


def transcript(demo: Demo) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for m in demo.inbound():
        out.setdefault(m["channel_identity"]["identity"], []).append(m["contact_message"])
    return out


def test_the_same_seed_brings_the_same_customers(demo: Demo) -> None:
    fast = Timing(reminder_after=5, give_up_after=5)
    settings = demo.settings(seed=11, max_visits=4, interval=3.0, timing=fast, time_scale=0.002)
    runs = []
    for _ in range(2):
        demo.http.post("/_emulator/reset").raise_for_status()
        asyncio.run(CustomerSimulator(settings).run())
        runs.append(transcript(demo))
    assert runs[0] == runs[1]
    assert sum(len(v) for v in runs[0].values()) >= 8  # four openers and four reminders

    def plan(seed: int) -> list[Visit]:
        return list(CustomerSimulator(replace(settings, seed=seed, max_visits=20)).plan())

    assert plan(11) == plan(11)
    assert plan(11) != plan(12)
    words = [build_script(v.topic, v.seed, v.persona.channel, pictures=True) for v in plan(11)]
    assert words == [
        build_script(v.topic, v.seed, v.persona.channel, pictures=True) for v in plan(11)
    ]


def test_the_plan_spreads_customers_over_channels_topics_and_time() -> None:
    settings = SimulatorSettings(emulator_url="http://unused", seed=1, interval=30.0)
    visits = list(CustomerSimulator(replace(settings, max_visits=300)).plan())
    assert {v.persona.channel for v in visits} == {"WHATSAPP", "MESSENGER", "SMS"}
    assert {v.topic for v in visits} == set(TOPICS)
    waits = [v.wait for v in visits[1:]]
    assert all(12.0 <= w <= 48.0 for w in waits)
    assert 27.0 <= sum(waits) / len(waits) <= 33.0
    assert visits[0].wait <= 3.0  # the first customer comes soon
    window = len(PERSONAS) - 2  # nobody comes back within the next dozen visits
    for i in range(len(visits) - window):
        assert len({v.persona for v in visits[i : i + window]}) == window


def test_cancelling_the_simulator_leaves_no_task_behind(demo: Demo) -> None:
    simulator = CustomerSimulator(demo.settings(interval=1.0, max_customers=3))

    async def main() -> set[asyncio.Task[Any]]:
        task = asyncio.create_task(simulator.run())
        async with httpx.AsyncClient(base_url=demo.url) as http:
            deadline = time.monotonic() + 5
            while not (await http.get("/_emulator/inbound")).json()["inbound"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
        assert simulator.visits_started >= 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(main()) == set()
    assert simulator.visits_finished == simulator.visits_started


def test_running_in_thread_stops_and_joins_on_exit(demo: Demo) -> None:
    simulator = CustomerSimulator(demo.settings(interval=1.0))
    with running_in_thread(simulator, ready_url=f"{demo.url}/_emulator"):
        wait_for(lambda: demo.inbound(), what="a first customer")
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    assert not [t for t in threading.enumerate() if t.name == "customer simulator"]


def test_the_simulator_waits_for_the_web_app_to_be_ready(demo: Demo) -> None:
    simulator = CustomerSimulator(demo.settings(interval=0.5))
    with running_in_thread(simulator, ready_url=f"{demo.url}/no-such-path"):
        time.sleep(0.3)  # more than ten arrivals' worth at this scale
        assert demo.inbound() == []
        assert simulator.visits_started == 0


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"interval": 0.0}, "interval"),
        ({"time_scale": -1.0}, "time_scale"),
        ({"max_customers": 0}, "max_customers"),
        ({"max_customers": len(PERSONAS) + 1}, "max_customers"),
        ({"apps": {"WHATSAPP": APP_EU}}, "apps"),
    ],
)
def test_settings_refuse_impossible_values(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SimulatorSettings(emulator_url="http://unused", **overrides)


def test_scripts_are_valid_for_every_topic_and_channel() -> None:
    for topic in TOPICS:
        for channel in ("WHATSAPP", "MESSENGER", "SMS"):
            for seed in range(20):
                script = build_script(topic, seed, channel, pictures=True)
                turns = (script.opener, *script.follow_ups, script.reminder, script.thanks)
                says = [say for turn in turns for say in turn]
                assert script.follow_ups
                assert all(turns)
                if channel != "WHATSAPP":
                    assert not any(say.location for say in says)
                if channel == "SMS":
                    assert not any(say.picture for say in says)
                assert all(say.picture in PICTURES for say in says if say.picture)
                assert build_script(topic, seed, channel, pictures=False) == build_script(
                    topic, seed, channel, pictures=False
                )
                plain = build_script(topic, seed, channel, pictures=False)
                assert not any(s.picture for t in (plain.opener, *plain.follow_ups) for s in t)
    with pytest.raises(ValueError, match="unknown topic"):
        build_script("weather", 1, "SMS", pictures=False)


def test_demo_command_refuses_a_customer_interval_of_zero() -> None:
    result = CliRunner().invoke(cli_app, ["demo", "--customer-interval", "0"])
    assert result.exit_code == 2
    assert "customer-interval" in result.output


def test_the_banner_says_whether_customers_come(capsys: pytest.CaptureFixture[str]) -> None:
    common: dict[str, Any] = {
        "port": 8000,
        "emulator_url": "http://127.0.0.1:1",
        "data_dir": Path("/tmp/d"),
        "token": "cdk_x",
    }
    print_banner(**common, customer_interval=12.5)
    on = capsys.readouterr().out
    assert "a new one about every 12.5 s" in on
    assert "--no-customers" in on
    print_banner(**common, customer_interval=None)
    assert "customers      none (--no-customers)" in capsys.readouterr().out
