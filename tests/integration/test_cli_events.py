"""`convodesk events list|replay|cleanup`, run as real subprocesses, on SQLite and
PostgreSQL. Rows are written in-process with the factories, against the same database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from convodesk.domain.config_model import SystemConfig
from convodesk.runtime import Runtime, open_runtime
from convodesk.services import configuration
from convodesk.storage.db import transaction
from convodesk.storage.tables import EventRow
from tests.support.factories import make_event

SECRET_KEY = "cli-events-test-key"

# Runs `convodesk` with the events group registered even before cli.py registers it
# itself (then this is the same as `python -m convodesk`).
BOOT = """
import sys
from convodesk import cli
from convodesk.cli_events import events_app
if not any(group.name == "events" for group in cli.app.registered_groups):
    cli.app.add_typer(events_app, name="events")
sys.argv[0] = "convodesk"
cli.main()
"""


def run(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONVODESK_CONFIG"}
    env["CONVODESK_SECRET_KEY"] = SECRET_KEY
    extra = ["--config", str(config)] if config is not None else []
    return subprocess.run(
        [sys.executable, "-c", BOOT, "events", *args, *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    config = SystemConfig(database_url=database_url, data_dir=str(tmp_path))
    rt = open_runtime(config, environ={"CONVODESK_SECRET_KEY": SECRET_KEY})
    yield rt
    rt.close()


@pytest.fixture
def config_file(database_url: str, tmp_path: Path) -> Path:
    path = tmp_path / "convodesk.yaml"
    path.write_text(yaml.safe_dump({"database_url": database_url, "data_dir": str(tmp_path)}))
    return path


def add_events(runtime: Runtime, *specs: dict[str, Any]) -> list[int]:
    with transaction(runtime.sessions) as session:
        return [make_event(session, **spec).id for spec in specs]


def state_of(runtime: Runtime, event_id: int) -> str | None:
    with transaction(runtime.sessions) as session:
        row = session.get(EventRow, event_id)
        return None if row is None else row.state


def test_list_prints_a_table_or_json_lines(runtime: Runtime, config_file: Path) -> None:
    accepted, rejected, delivery = add_events(
        runtime,
        {"state": "done"},
        {"outcome": "rejected", "reason": "401 invalid_signature: stale\ntimestamp"},
        {"trigger": "MESSAGE_DELIVERY"},
    )
    table = run("list", config=config_file)
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == [
        "id",
        "received_at",
        "service",
        "trigger",
        "outcome",
        "state",
        "identity",
        "reason",
    ]
    assert [int(line.split()[0]) for line in lines] == [delivery, rejected, accepted]
    assert "401 invalid_signature: stale timestamp" in lines[1]  # one line per event

    as_json = run("list", "--json", "--outcome", "rejected", config=config_file)
    assert as_json.returncode == 0, as_json.stderr
    [item] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert (item["id"], item["outcome"], item["state"]) == (rejected, "rejected", "none")
    assert json.loads(item["body"])["message"]["direction"] == "TO_APP"
    assert datetime.fromisoformat(item["received_at"]).tzinfo is not None

    limited = run("list", "--json", "--limit", "2", "--since", "2000-01-01", config=config_file)
    assert [json.loads(line)["id"] for line in limited.stdout.splitlines()] == [delivery, rejected]


def test_replay_by_filter_and_by_id(runtime: Runtime, config_file: Path) -> None:
    failed, done, rejected = add_events(
        runtime,
        {"state": "failed", "state_reason": "boom"},
        {"state": "done"},
        {"outcome": "rejected"},
    )
    by_state = run("replay", "--state", "failed", config=config_file)
    assert by_state.returncode == 0, by_state.stderr
    assert by_state.stdout.strip() == "1 event(s) marked pending for replay"
    assert state_of(runtime, failed) == "pending"

    by_id = run("replay", "--id", str(done), "--id", str(rejected), config=config_file)
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout.startswith("1 event(s)")
    assert [state_of(runtime, i) for i in (done, rejected)] == ["pending", "none"]


def test_cleanup_deletes_only_old_events(runtime: Runtime, config_file: Path) -> None:
    now = datetime.now(UTC)
    old, middle, recent = add_events(
        runtime,
        {"received_at": now - timedelta(days=40), "state": "done"},
        {"received_at": now - timedelta(days=12), "state": "done"},
        {"received_at": now - timedelta(days=2), "state": "done"},
    )
    result = run("cleanup", config=config_file)  # the default retention: 30 days
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted 1 event(s)")
    assert "older than 30 days" in result.stdout

    configuration.replace_chat_settings(runtime, {"event_retention_days": 10})
    assert run("cleanup", config=config_file).stdout.startswith("deleted 1 event(s)")
    assert state_of(runtime, middle) is None

    explicit = run("cleanup", "--older-than-days", "1", config=config_file)
    assert explicit.stdout.startswith("deleted 1 event(s)")
    assert [state_of(runtime, i) for i in (old, recent)] == [None, None]


def test_usage_errors_exit_2_and_touch_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "never-read.yaml"
    for args, needle in [
        (["replay"], "at least one filter"),
        (["replay", "--id", "3", "--service", "sinch-eu"], "not both"),
        (["replay", "--id", "0"], "not an event id"),
        (["list", "--since", "last tuesday"], "--since"),
        (["list", "--outcome", "maybe"], "--outcome"),
        (["cleanup", "--older-than-days", "0"], "--older-than-days"),
    ]:
        result = run(*args, config=missing)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
