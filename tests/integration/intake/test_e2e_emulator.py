"""End to end with the Sinch emulator: customers write on three channels; the emulator signs
and delivers the callbacks (with duplicates and failed first attempts); convodesk threads
them into the right queues, once each."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from convodesk.emulator.config import EmulatorConfig
from convodesk.emulator.server import running_emulator
from convodesk.runtime import Runtime
from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow, EventRow, MessageRow
from convodesk.web.app import create_app
from convodesk.web.serving import serve_in_thread
from tests.support.apps import APP_EU, PROJECT
from tests.support.intake import WEBHOOK_SECRET, configured_runtime


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = configured_runtime(database_url, tmp_path)
    yield rt
    rt.close()


def emulator_config(target: str) -> EmulatorConfig:
    return EmulatorConfig.from_dict(
        {
            "callback_retry": {"max_attempts": 5, "initial_backoff_ms": 20, "timeout_ms": 5000},
            "delivery_delays_ms": {"queued": 1, "delivered": 2, "read": 3},
            "projects": [
                {
                    "id": PROJECT,
                    "region": "eu",
                    "access_keys": [{"key_id": "KEY", "key_secret": "key-secret"}],
                    "apps": [
                        {
                            "id": APP_EU,
                            "channels": ["WHATSAPP", "SMS", "MESSENGER"],
                            "webhooks": [
                                {
                                    "target": target,
                                    "secret": WEBHOOK_SECRET,
                                    "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
                                }
                            ],
                        }
                    ],
                }
            ],
        }
    )


def wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_customers_on_three_channels_land_in_their_queues_once(runtime: Runtime) -> None:
    app = create_app(runtime, workers=True)
    with serve_in_thread(app, name="convodesk") as base_url:
        target = f"{base_url}/sms/sinchconversation/sinch-eu"
        with (
            running_emulator(emulator_config(target)) as emu,
            httpx.Client(base_url=emu.base_url) as control,
        ):
            faults = {"duplicate_callbacks": 1.0, "fail_callback_attempts": 1, "seed": 7}
            assert control.post("/_emulator/faults", json=faults).status_code == 200
            customers = [
                ("WHATSAPP", "46701000001", "Hej! Where is my order?"),
                ("SMS", "46701000002", "Can I change my delivery address?"),
                ("MESSENGER", "6512398745123365", "Hi from Messenger"),
            ]
            for channel, identity, text in customers:
                for n in range(2):
                    answer = control.post(
                        "/_emulator/inbound",
                        json={
                            "app_id": APP_EU,
                            "channel": channel,
                            "identity": identity,
                            "text": f"{text} {n}",
                        },
                    )
                    assert answer.status_code == 202, answer.text

            def all_threaded() -> bool:
                with transaction(runtime.sessions) as session:
                    done = session.scalar(select(func.count()).select_from(MessageRow))
                    pending = session.scalar(
                        select(func.count())
                        .select_from(EventRow)
                        .where(EventRow.state == "pending")
                    )
                return done == 6 and pending == 0

            wait_for(all_threaded)
            callbacks = control.get("/_emulator/callbacks").json()
    with transaction(runtime.sessions) as session:
        convs = {(c.channel, c.queue) for c in session.scalars(select(ConversationRow))}
        outcomes = [e.outcome for e in session.scalars(select(EventRow))]
        texts = sorted(m.text or "" for m in session.scalars(select(MessageRow)))
    assert convs == {("WHATSAPP", "whatsapp"), ("SMS", "sms"), ("MESSENGER", "messenger")}
    assert outcomes.count("accepted") == 6
    assert outcomes.count("duplicate") >= 6  # every callback was delivered at least twice
    assert len(texts) == 6
    assert texts[0].startswith("Can I change")
    assert callbacks  # the emulator's own log saw the deliveries
