"""`convodesk worker` threads stored callbacks without any web server, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from sqlalchemy import select

from convodesk.services import configuration
from convodesk.storage.db import transaction
from convodesk.storage.event_store import EventEntry, EventWriter
from convodesk.storage.tables import ConversationRow, EventRow
from tests.support.apps import APP_EU, TEST_SECRET_KEY, make_runtime
from tests.support.intake import intake_config
from tests.support.sinch_fixtures import load_fixture


def test_worker_processes_events_and_stops_cleanly(database_url: str, tmp_path: Path) -> None:
    runtime = make_runtime(database_url, tmp_path)
    try:
        configuration.apply_config(runtime, intake_config())
        body = load_fixture("message_inbound__text")
        event_id = (
            EventWriter(runtime.engine)
            .write_now(
                EventEntry(
                    service="sinch-eu",
                    trigger="MESSAGE_INBOUND",
                    app_id=APP_EU,
                    channel="WHATSAPP",
                    identity="46701234567",
                    outcome="accepted",
                    reason=None,
                    dedup_key="message:worker-test",
                    body=body,
                    state="pending",
                )
            )
            .event_id
        )
        config = tmp_path / "worker.yaml"
        config.write_text(yaml.safe_dump({"database_url": database_url, "data_dir": str(tmp_path)}))
        proc = subprocess.Popen(
            [sys.executable, "-m", "convodesk", "worker", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY},
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                with transaction(runtime.sessions) as session:
                    state = session.get(EventRow, event_id).state  # type: ignore[union-attr]
                if state != "pending":
                    break
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "the worker did not process the event"
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert state == "done"
        with transaction(runtime.sessions) as session:
            assert [c.queue for c in session.scalars(select(ConversationRow))] == ["whatsapp"]
    finally:
        runtime.close()
