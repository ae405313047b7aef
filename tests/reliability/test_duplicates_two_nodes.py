"""The same callback delivered three times to each of two `convodesk serve` nodes on one
database, all at the same instant: one stored event, one message, every copy answered 200."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from convodesk.sinch.signature import sign_headers
from convodesk.storage import db
from convodesk.storage.tables import EventRow, MessageRow
from tests.integration.test_cli import free_port
from tests.reliability.test_intake_crash import Node, wait_for
from tests.support.apps import TEST_SECRET_KEY
from tests.support.factories import inbound_body, sinch_id
from tests.support.intake import WEBHOOK_SECRET, intake_config

COPIES_PER_NODE = 3


@pytest.fixture
def two_nodes(database_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    raw = {**intake_config(), "database_url": database_url, "data_dir": str(tmp_path / "data")}
    config = tmp_path / "convodesk.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY}
    applied = subprocess.run(
        [sys.executable, "-m", "convodesk", "config", "apply", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    nodes = [Node(config, free_port(), tmp_path / f"node{n}.log") for n in (1, 2)]
    try:
        for node in nodes:
            node.start()
        yield f"http://127.0.0.1:{nodes[0].port}", f"http://127.0.0.1:{nodes[1].port}"
    finally:
        for node in nodes:
            node.stop()


def test_one_effect_for_copies_racing_on_two_nodes(
    two_nodes: tuple[str, str], database_url: str
) -> None:
    message_id = sinch_id()
    body = inbound_body(message_id=message_id, identity="46709990001", text="twice, twice")
    targets = [url for url in two_nodes for _ in range(COPIES_PER_NODE)]
    barrier = threading.Barrier(len(targets))
    answers: list[int] = []
    lock = threading.Lock()

    def deliver(url: str) -> None:
        # Each copy signed afresh, as Sinch signs each retry.
        headers = sign_headers(WEBHOOK_SECRET, body)
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            status = client.post(
                f"{url}/sms/sinchconversation/sinch-eu", content=body, headers=headers
            ).status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=deliver, args=(url,)) for url in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == [200] * len(targets)

    engine = db.create_db_engine(database_url)
    try:

        def messages() -> int:
            with engine.connect() as conn:
                return conn.scalar(select(func.count()).select_from(MessageRow)) or 0

        wait_for(lambda: messages() >= 1, 30, "the message was not threaded")
        with engine.connect() as conn:
            outcomes = sorted(conn.scalars(select(EventRow.outcome)).all())
            stored = conn.scalars(select(MessageRow.sinch_message_id)).all()
    finally:
        engine.dispose()
    assert outcomes.count("accepted") == 1
    assert len(outcomes) == len(targets)
    assert set(outcomes) == {"accepted", "duplicate"}
    assert stored == [message_id]
