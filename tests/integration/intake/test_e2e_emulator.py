"""End to end with the Sinch emulator: customers write on three channels; the emulator signs
and delivers the callbacks (with duplicates and failed first attempts); convodesk threads
them into the right queues, once each."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
from sqlalchemy import func, select

from convodesk.emulator.config import EmulatorConfig
from convodesk.emulator.server import running_emulator
from convodesk.runtime import Runtime
from convodesk.services.chain_matcher import apply_parked_reports
from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow, DeliveryReportRow, EventRow, MessageRow
from convodesk.web.app import create_app
from convodesk.web.serving import serve_in_thread
from tests.support.apps import APP_EU, PROJECT
from tests.support.intake import WEBHOOK_SECRET


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


def test_reordered_and_duplicated_receipts_end_at_read(runtime: Runtime) -> None:
    """A send through the emulator; its receipts arrive duplicated, in reverse order, and
    possibly before we store the Sinch id (the sender's race): the status ends at READ."""
    app = create_app(runtime, workers=True)
    with serve_in_thread(app, name="convodesk") as base_url:
        target = f"{base_url}/sms/sinchconversation/sinch-eu"
        with (
            running_emulator(emulator_config(target)) as emu,
            httpx.Client(base_url=emu.base_url) as api,
        ):
            api.post(
                "/_emulator/faults",
                json={"duplicate_callbacks": 1.0, "reorder_callbacks": True, "seed": 3},
            )
            # The customer writes first: that opens WhatsApp's 24 h window on the emulator.
            api.post(
                "/_emulator/inbound",
                json={
                    "app_id": APP_EU,
                    "channel": "WHATSAPP",
                    "identity": "46701000009",
                    "text": "Hi",
                },
            )

            def conversation_id() -> int | None:
                with transaction(runtime.sessions) as session:
                    return session.scalar(select(ConversationRow.id))

            wait_for(lambda: conversation_id() is not None)
            with transaction(runtime.sessions) as session:
                message = MessageRow(
                    conversation_id=conversation_id(),
                    direction="outbound",
                    kind="text",
                    text="Hello",
                    content={},
                    status="sending",
                )
                session.add(message)
                session.flush()
                message_id = message.id
            sent = api.post(
                f"/eu/v1/projects/{PROJECT}/messages:send",
                auth=("KEY", "key-secret"),
                json={
                    "app_id": APP_EU,
                    "recipient": {
                        "identified_by": {
                            "channel_identities": [
                                {"channel": "WHATSAPP", "identity": "46701000009"}
                            ]
                        }
                    },
                    "message": {"text_message": {"text": "Hello"}},
                },
            )
            assert sent.status_code == 200, sent.text
            time.sleep(0.2)  # let some receipts arrive first and be parked
            with transaction(runtime.sessions) as session:
                row = session.get(MessageRow, message_id)
                assert row is not None
                row.sinch_message_id = sent.json()["message_id"]
                row.status = "accepted"
                apply_parked_reports(session, row, datetime.now(UTC))

            def read() -> bool:
                with transaction(runtime.sessions) as session:
                    row = session.get(MessageRow, message_id)
                    pending = session.scalar(
                        select(func.count())
                        .select_from(EventRow)
                        .where(EventRow.state == "pending")
                    )
                    return row is not None and row.status == "READ" and pending == 0

            wait_for(read)
            time.sleep(0.3)  # late duplicates must not move it back
    with transaction(runtime.sessions) as session:
        row = session.get(MessageRow, message_id)
        reports = list(session.scalars(select(DeliveryReportRow.status)))
    assert row is not None
    assert row.status == "READ"
    assert sorted(reports) == ["DELIVERED", "QUEUED_ON_CHANNEL", "READ"]
