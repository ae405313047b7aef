"""Databases, stored rows and signed requests for the intake benchmark.

Everything is built fast, since it is not what is measured: the configured database once
(migrations and the config apply, through convodesk's own code), then file copies of it;
conversations by one ``INSERT ... SELECT`` from a recursive CTE; events by one executemany.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, create_engine, insert, make_url, text

from bench._intake_server import SECRET_KEY
from convodesk.domain.config_model import SystemConfig
from convodesk.runtime import Runtime, open_runtime
from convodesk.services import configuration
from convodesk.sinch.ids import new_ulid
from convodesk.sinch.signature import sign_headers
from convodesk.storage.tables import EventRow

SERVICE = "sinch-eu"
APP_ID = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
PROJECT = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"
WEBHOOK_SECRET = "bench-webhook-secret"
CALLBACK_PATH = f"/sms/sinchconversation/{SERVICE}"
FIXTURE = Path(__file__).parents[1] / "tests/fixtures/sinch/message_inbound__text.json"
# The fixture's message id and identity, replaced by values of the same length, so every
# request has the size of the captured callback.
FIXTURE_MESSAGE_ID = b"01J0A1B2C3D4E5F6G7H8J9K0MN"
FIXTURE_IDENTITY = b"46701234567"


def config() -> dict[str, Any]:
    """One messaging service with one app; queues for its WhatsApp and SMS addresses."""
    return {
        "messaging_services": [
            {
                "name": SERVICE,
                "type": "sinchconversation",
                "service_connection": (
                    f"https://eu.conversation.api.sinch.com/v1/projects/{PROJECT}/messages:send"
                ),
                "authentication": [
                    {"auth_id": f"KEY@{APP_ID}", "password": "bench-key-secret"},
                    {
                        "auth_id": "webhook",
                        "password": WEBHOOK_SECRET,
                        "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY", "EVENT_INBOUND"],
                    },
                ],
            }
        ],
        "queues": [
            {
                "name": "whatsapp",
                "type": "chat",
                "addresses": [f"{APP_ID}@whatsapp.sinchconversation.com"],
            },
            {"name": "sms", "type": "chat", "addresses": [f"{APP_ID}@sms.sinchconversation.com"]},
        ],
        "chat_settings": {"reopen_window_seconds": 3600},
    }


def runtime(database_url: str, data_dir: Path, *, upgrade: bool = False) -> Runtime:
    system = SystemConfig(database_url=database_url, data_dir=str(data_dir))
    return open_runtime(system, upgrade=upgrade, environ={"CONVODESK_SECRET_KEY": SECRET_KEY})


def configure(database_url: str, data_dir: Path, raw: dict[str, Any] | None = None) -> None:
    """Migrate the database (if it is not yet) and apply the benchmark's configuration, or
    `raw` (a variant of `config()`)."""
    rt = runtime(database_url, data_dir, upgrade=True)
    try:
        _, problems = configuration.apply_config(rt, raw or config())
        if any(p.severity == "error" for p in problems):
            raise RuntimeError(f"the benchmark configuration is invalid: {problems}")
    finally:
        rt.close()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def build_sqlite_template(directory: Path) -> Path:
    path = directory / "template.db"
    configure(sqlite_url(path), directory)
    with sqlite3.connect(path) as conn:  # fold the WAL in, so a file copy is the database
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def copy_database(template: Path, path: Path) -> Path:
    shutil.copyfile(template, path)
    return path


def add_conversations(path: Path, count: int) -> None:
    """`count` conversations in one statement: one per customer identity, 5 % of them open
    (``waiting``), the rest closed two days ago (outside the reopen window), on WhatsApp;
    identities ``4671xxxxxxx``, none of which the benchmark's messages use."""
    first_open = count - count // 20
    identity = "printf('4671%07d', x)"
    opened = f"x > {first_open}"
    sql = f"""
        WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {count})
        INSERT INTO conversations (
            service, app_id, channel, identity, queue, status, open_key, opened_at,
            closed_at, last_inbound_at, last_activity_at, reopen_count, sender_id)
        SELECT '{SERVICE}', '{APP_ID}', 'WHATSAPP', {identity}, 'whatsapp',
            CASE WHEN {opened} THEN 'waiting' ELSE 'closed' END,
            CASE WHEN {opened} THEN '{SERVICE}|{APP_ID}|WHATSAPP|' || {identity} END,
            :at, CASE WHEN {opened} THEN NULL ELSE :at END, :at, :at, 0, '46700000000'
        FROM n
    """
    at = datetime(2024, 1, 1, tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # building, not measuring
        conn.execute("BEGIN")
        conn.execute(sql, {"at": at})
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def signed_requests(
    count: int, port: int, *, identities: int, first_identity: int = 0
) -> list[bytes]:
    """Complete HTTP/1.1 requests, signed now (the signature window is 300 s)."""
    template = FIXTURE.read_bytes().strip()
    out = []
    for n in range(count):
        identity = f"4670{first_identity + n % identities:07d}".encode()
        body = template.replace(FIXTURE_MESSAGE_ID, new_ulid().encode()).replace(
            FIXTURE_IDENTITY, identity
        )
        lines = [
            f"POST {CALLBACK_PATH} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            *(f"{name}: {value}" for name, value in sign_headers(WEBHOOK_SECRET, body).items()),
            f"Content-Length: {len(body)}",
        ]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    return out


def store_pending_events(
    database_url: str, data_dir: Path, count: int, *, identities: int, first_identity: int
) -> None:
    """`count` accepted MESSAGE_INBOUND events, pending for the Chain Matcher, inserted as
    the intake would have stored them."""
    numbers = [first_identity + n % identities for n in range(count)]
    store_pending_messages(database_url, data_dir, numbers)


def store_pending_messages(database_url: str, data_dir: Path, customers: list[int]) -> None:
    """One accepted MESSAGE_INBOUND event per entry, from customer ``4670`` + the number
    (7 digits), in this order, pending for the Chain Matcher; earlier pending events (the
    intake runs' leftovers) are set aside, so the processor's work is exactly these."""
    template = FIXTURE.read_bytes().strip()
    now = datetime.now(UTC)
    rows = []
    for number in customers:
        message_id = new_ulid()
        identity = f"4670{number:07d}"
        body = template.replace(FIXTURE_MESSAGE_ID, message_id.encode()).replace(
            FIXTURE_IDENTITY, identity.encode()
        )
        rows.append(
            {
                "received_at": now,
                "service": SERVICE,
                "trigger": "MESSAGE_INBOUND",
                "app_id": APP_ID,
                "channel": "WHATSAPP",
                "identity": identity,
                "outcome": "accepted",
                "reason": None,
                "dedup_key": f"message:{message_id}",
                "body": body,
                "state": "pending",
            }
        )
    rt = runtime(database_url, data_dir)
    try:
        with rt.engine.begin() as conn:
            conn.execute(text("UPDATE events SET state = 'none' WHERE state = 'pending'"))
            conn.execute(insert(cast(Table, EventRow.__table__)), rows)
    finally:
        rt.close()


def pending_events(path: Path) -> int:
    """Events of a SQLite file still waiting for the processor (read-only, beside the server)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (count,) = conn.execute("SELECT count(*) FROM events WHERE state = 'pending'").fetchone()
        return int(count)
    finally:
        conn.close()


class PostgresDatabase:
    """A throwaway PostgreSQL database on the server at `admin_url`, dropped by `drop`."""

    def __init__(self, admin_url: str) -> None:
        self._admin = create_engine(
            make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
        )
        self.name = f"cdk_bench_{uuid.uuid4().hex[:10]}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = (
            make_url(admin_url)
            .set(drivername="postgresql", database=self.name)
            .render_as_string(hide_password=False)
        )

    def drop(self) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()
