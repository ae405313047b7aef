"""The sender against the Sinch emulator with 200 ms of latency (issue 5's send-rate targets).

Processes: the emulator (`convodesk emulator`'s `serve_forever`, its own process), the
sender (``convodesk worker``, its own process: the sender plus the idle processor, media
fetcher and housekeeping, as deployed), and this one, which seeds the outbox, watches
``GET /_emulator/stats`` and reads the worker's CPU time from ``/proc/PID/stat`` (Linux).
The emulator adds ``latency_ms`` 200 before answering every call, so about 160 sends must be
in flight for 800 a second.

Scenarios, each `REPETITIONS` times with a new worker process on the same database (rows
left unsent by a run are retired before the next one):

- **one app**: 400 replies in one app, ``send_rate_per_app`` 20 (the emulator's limit for the
  app is 20/s too): target >= 95 % of 20/s;
- **50 apps**: 6,000 replies spread round-robin over 50 apps of 20/s each (1,000/s offered)
  in one project whose limit is 800/s (``send_rate_per_project``, and the emulator's): target
  >= 95 % of 800/s.

A run: start the worker; once the emulator has accepted its first send, `WARMUP_SECONDS`;
then the rate and the worker's CPU over `MEASURE_SECONDS`; then SIGTERM. Reported: the
median rate and CPU time per send over the runs, and, over every second of every run (start
and end included), the emulator's ``intervals_over_limit`` (wall-clock seconds with more
accepted sends than the limit, per app and per project: target 0), its largest
``max_in_any_second`` and the 429s it answered. SQLite always; PostgreSQL too when
``CONVODESK_BENCH_POSTGRES_URL`` (or ``CONVODESK_TEST_POSTGRES_URL``) names a server (a
throwaway database, dropped afterwards).
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import yaml
from sqlalchemy import Connection, Table, insert, update

from bench import _intake_data
from bench._intake_server import SECRET_KEY
from convodesk.domain.config_model import SystemConfig
from convodesk.runtime import Runtime, open_runtime
from convodesk.services import configuration
from convodesk.storage.tables import ConversationRow, MessageRow, OutboxRow

PROJECT = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"
KEY_ID, KEY_SECRET = "bench-key", "bench-key-secret"
SERVICE = "sinch-bench"
APPS = 50
APP_RATE, PROJECT_RATE = 20, 800
LATENCY_MS = 200
REPETITIONS = 3
WARMUP_SECONDS = 1.0
MEASURE_SECONDS = 3.0
IDLE_START_SECONDS, IDLE_SECONDS = 1.5, 1.5
TARGET_SHARE = 0.95
POSTGRES_ENVS = ("CONVODESK_BENCH_POSTGRES_URL", "CONVODESK_TEST_POSTGRES_URL")
ROOT = Path(__file__).parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def app_id(n: int) -> str:
    return f"01BENCH{n:019d}"  # 26 characters of Crockford's base 32, like a Sinch app id


@dataclass(frozen=True)
class Scenario:
    name: str
    apps: int
    replies: int
    limit: int  # the limit that binds: the app's (one app) or the project's (50 apps)

    @property
    def target(self) -> float:
        return TARGET_SHARE * self.limit


SCENARIOS = (
    Scenario("one app at 20/s", apps=1, replies=400, limit=APP_RATE),
    Scenario(f"{APPS} apps under 800/s", apps=APPS, replies=6000, limit=PROJECT_RATE),
)


@dataclass
class Run:
    rate: float  # sends/s accepted by the emulator during the measured window
    cpu_per_send_us: float  # the worker's CPU time over the window / sends in it
    cpu_share: float  # the worker's CPU seconds per wall second over the window
    emulator_cpu_share: float
    stats: dict[str, Any] = field(default_factory=dict)  # the emulator's, at the end
    late: int = 0  # slots the worker gave up because a send woke too late (its log)


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _emulator_config() -> dict[str, Any]:
    return {
        "delivery_delays_ms": {"queued": 0, "delivered": 0, "read": 0},
        "history_limit": 1000,
        "projects": [
            {
                "id": PROJECT,
                "region": "eu",
                "access_keys": [{"key_id": KEY_ID, "key_secret": KEY_SECRET}],
                "rate_limit": PROJECT_RATE,
                "apps": [
                    {
                        "id": app_id(n),
                        "processing_mode": "DISPATCH",
                        "channels": ["SMS"],
                        "rate_limit": APP_RATE,
                    }
                    for n in range(APPS)
                ],
            }
        ],
    }


def _convodesk_config(emulator_url: str) -> dict[str, Any]:
    """Top-level settings (the worker's file) and one messaging service with every app."""
    return {
        "allow_custom_endpoints": True,
        "oauth_token_url": f"{emulator_url}/oauth2/token",
        "send_rate_per_app": APP_RATE,
        "send_rate_per_project": PROJECT_RATE,
        "messaging_services": [
            {
                "name": SERVICE,
                "service_connection": f"{emulator_url}/eu/v1/projects/{PROJECT}/messages:send",
                "authentication": [
                    *(
                        {"auth_id": f"{KEY_ID}@{app_id(n)}", "password": KEY_SECRET}
                        for n in range(APPS)
                    ),
                    {
                        "auth_id": "webhook",
                        "password": "bench-webhook-secret",
                        "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
                    },
                ],
            }
        ],
        "queues": [{"name": "sms", "addresses": [f"{app_id(0)}@sms.sinchconversation.com"]}],
    }


def _start_emulator(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    path = tmp / "emulator.yaml"
    path.write_text(yaml.safe_dump(_emulator_config()))
    code = (
        "from convodesk.emulator.server import serve_forever; "
        f"serve_forever({str(path)!r}, '127.0.0.1', {port})"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError("the emulator exited during start-up")
        try:
            if httpx.get(f"{url}/_emulator/", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the emulator did not start in time")
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (``/proc/PID/stat`` fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# --------------------------------------------------------------------------- database


@dataclass
class Database:
    label: str
    url: str
    config_file: Path
    identities: int = 0  # conversations created so far, for fresh identities


def _prepare(label: str, url: str, tmp: Path, emulator_url: str) -> Database:
    raw = _convodesk_config(emulator_url)
    runtime = open_runtime(
        SystemConfig(database_url=url, data_dir=str(tmp)),
        environ={"CONVODESK_SECRET_KEY": SECRET_KEY},
    )
    try:
        _, problems = configuration.apply_config(runtime, raw)
        if any(p.severity == "error" for p in problems):
            raise RuntimeError(f"the benchmark configuration is invalid: {problems}")
    finally:
        runtime.close()
    top = {k: v for k, v in raw.items() if k not in ("messaging_services", "queues")}
    config_file = tmp / f"worker-{label}.yaml"
    config_file.write_text(yaml.safe_dump({"database_url": url, "data_dir": str(tmp), **top}))
    return Database(label, url, config_file)


def _runtime(database: Database, tmp: Path) -> Runtime:
    return open_runtime(
        SystemConfig(database_url=database.url, data_dir=str(tmp)),
        upgrade=False,
        environ={"CONVODESK_SECRET_KEY": SECRET_KEY},
    )


def _retire(conn: Connection) -> None:
    """What earlier runs left unsent is not this run's work."""
    conn.execute(
        update(cast(Table, OutboxRow.__table__))
        .where(OutboxRow.state.in_(("pending", "sending")))
        .values(state="dead")
    )


def _seed(database: Database, tmp: Path, scenario: Scenario) -> None:
    """Retire what earlier runs left unsent; then ``scenario.replies`` pending replies, one
    conversation per reply, round-robin over the scenario's apps, all due now."""
    runtime = _runtime(database, tmp)
    now = datetime.now(UTC)
    first = database.identities
    database.identities += scenario.replies
    conversations = [
        {
            "service": SERVICE,
            "app_id": app_id(n % scenario.apps),
            "channel": "SMS",
            "identity": f"4670{first + n:07d}",
            "queue": "sms",
            "status": "active",
            "open_key": f"{SERVICE}|{app_id(n % scenario.apps)}|SMS|4670{first + n:07d}",
            "opened_at": now,
            "last_inbound_at": now,
            "last_activity_at": now,
            "reopen_count": 0,
        }
        for n in range(scenario.replies)
    ]
    try:
        with runtime.engine.begin() as conn:
            _retire(conn)
            conversation_ids = conn.execute(
                insert(cast(Table, ConversationRow.__table__)).returning(
                    ConversationRow.id, sort_by_parameter_order=True
                ),
                conversations,
            ).scalars()
            message_ids = conn.execute(
                insert(cast(Table, MessageRow.__table__)).returning(
                    MessageRow.id, sort_by_parameter_order=True
                ),
                [
                    {
                        "conversation_id": conversation_id,
                        "direction": "outbound",
                        "kind": "text",
                        "text": "Your order has shipped.",
                        "content": {},
                        "status": "pending",
                        "created_at": now,
                        "status_at": now,
                        "author": "bench",
                    }
                    for conversation_id in list(conversation_ids)
                ],
            ).scalars()
            due = now - timedelta(seconds=1)
            conn.execute(
                insert(cast(Table, OutboxRow.__table__)),
                [
                    {
                        "message_id": message_id,
                        "state": "pending",
                        "attempts": 0,
                        "next_attempt_at": due,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for message_id in list(message_ids)
                ],
            )
    finally:
        runtime.close()


# --------------------------------------------------------------------------- runs


def _stats(client: httpx.Client) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/_emulator/stats").json()
    return data


def _accepted(stats: dict[str, Any]) -> int:
    return int(stats["projects"][PROJECT]["accepted"])


def _start_worker(database: Database, tmp: Path) -> subprocess.Popen[bytes]:
    with (tmp / f"worker-{database.label}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "convodesk", "worker", "--config", str(database.config_file)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CONVODESK_SECRET_KEY": SECRET_KEY},
        )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _idle_cpu(database: Database, tmp: Path) -> float:
    """The worker's CPU share with nothing to send: its fixed cost (polls, reloads)."""
    runtime = _runtime(database, tmp)
    try:
        with runtime.engine.begin() as conn:
            _retire(conn)
    finally:
        runtime.close()
    worker = _start_worker(database, tmp)
    try:
        time.sleep(IDLE_START_SECONDS)
        cpu0, started = _cpu_seconds(worker.pid), time.perf_counter()
        time.sleep(IDLE_SECONDS)
        return (_cpu_seconds(worker.pid) - cpu0) / (time.perf_counter() - started)
    finally:
        _stop(worker)


def _one_run(
    database: Database,
    tmp: Path,
    scenario: Scenario,
    emulator: subprocess.Popen[bytes],
    client: httpx.Client,
) -> Run:
    _seed(database, tmp, scenario)
    assert client.post("/_emulator/reset").status_code == 200
    assert client.post("/_emulator/faults", json={"latency_ms": LATENCY_MS}).status_code == 200
    log = tmp / f"worker-{database.label}.log"
    log_offset = log.stat().st_size if log.exists() else 0
    worker = _start_worker(database, tmp)
    try:
        deadline = time.monotonic() + 30
        while _accepted(_stats(client)) == 0:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker sent nothing; see {tmp}/worker-*.log")
            time.sleep(0.02)
        time.sleep(WARMUP_SECONDS)
        started, cpu0 = time.perf_counter(), _cpu_seconds(worker.pid)
        emu0 = _cpu_seconds(emulator.pid)
        accepted0 = _accepted(_stats(client))
        time.sleep(MEASURE_SECONDS)
        accepted1 = _accepted(_stats(client))
        cpu1, emu1 = _cpu_seconds(worker.pid), _cpu_seconds(emulator.pid)
        elapsed = time.perf_counter() - started
    finally:
        _stop(worker)
    sends = accepted1 - accepted0
    return Run(
        rate=sends / elapsed,
        cpu_per_send_us=(cpu1 - cpu0) / max(sends, 1) * 1e6,
        cpu_share=(cpu1 - cpu0) / elapsed,
        emulator_cpu_share=(emu1 - emu0) / elapsed,
        stats=_stats(client),
        late=_late_slots(log, log_offset),
    )


def _late_slots(log: Path, offset: int) -> int:
    """The count the sender logs at its stop ("slots given up by late sends count=N")."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    found = re.findall(r"slots given up by late sends\s+count=(\d+)", text)
    return int(found[-1]) if found else 0


def _rows(
    database: Database, scenario: Scenario, runs: list[Run], idle: float
) -> list[dict[str, Any]]:
    rate = statistics.median(r.rate for r in runs)
    cpu = statistics.median(r.cpu_per_send_us for r in runs)
    apps = [app_id(n) for n in range(scenario.apps)]
    over_apps = sum(r.stats["apps"][a]["intervals_over_limit"] for r in runs for a in apps)
    over_project = sum(r.stats["projects"][PROJECT]["intervals_over_limit"] for r in runs)
    max_app = max(r.stats["apps"][a]["max_in_any_second"] for r in runs for a in apps)
    max_project = max(r.stats["projects"][PROJECT]["max_in_any_second"] for r in runs)
    rejected = sum(r.stats["projects"][PROJECT]["rejected_429"] for r in runs)
    seconds = sum(r.stats["projects"][PROJECT]["accepted"] for r in runs) / max(rate, 1)
    emulator_share = statistics.median(r.emulator_cpu_share for r in runs)
    met = "met" if rate >= scenario.target else "MISSED"
    label = f"{scenario.name} ({database.label})"
    runs_text = ", ".join(f"{r.rate:,.1f}" for r in runs)
    return [
        {
            "name": f"{label}: achieved",
            "value": round(rate, 1),
            "unit": "sends/s",
            "notes": f"target >= {scenario.target:g}/s: {met}; runs {runs_text}; "
            f"{LATENCY_MS} ms latency; {WARMUP_SECONDS:g}s warm-up, {MEASURE_SECONDS:g}s "
            f"measured x {len(runs)}",
            "ratio": round(rate / scenario.limit, 3),
        },
        {
            "name": f"{label}: seconds over a limit",
            "value": over_apps + over_project,
            "unit": "intervals",
            "notes": "target 0: "
            f"{'met' if over_apps + over_project == 0 else 'MISSED'}; apps {over_apps}, "
            f"project {over_project}, over about {seconds:,.0f}s of sending; most in any "
            f"sliding second: app {max_app} (limit {APP_RATE}), project {max_project} "
            f"(limit {PROJECT_RATE}); 429s: {rejected}",
        },
        {
            "name": f"{label}: CPU per send",
            "value": round(cpu, 1),
            "unit": "us/send",
            "notes": "`convodesk worker` process (sender busy, other workers idle), user+system "
            f"over the window; runs {', '.join(f'{r.cpu_per_send_us:,.0f}' for r in runs)}; "
            f"worker CPU {statistics.median(r.cpu_share for r in runs):.0%} of a core "
            f"(idle: {idle:.0%}), emulator {emulator_share:.0%}; slots given up by late sends "
            f"per run: {', '.join(str(r.late) for r in runs)}",
        },
    ]


def _database_rows(
    database: Database, tmp: Path, emulator: subprocess.Popen[bytes], client: httpx.Client
) -> list[dict[str, Any]]:
    idle = _idle_cpu(database, tmp)
    rows = []
    for scenario in SCENARIOS:
        runs = [_one_run(database, tmp, scenario, emulator, client) for _ in range(REPETITIONS)]
        rows += _rows(database, scenario, runs, idle)
    return rows


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="convodesk-bench-send-", dir="/tmp") as name:
        tmp = Path(name)
        emulator, emulator_url = _start_emulator(tmp)
        try:
            with httpx.Client(base_url=emulator_url, timeout=30) as client:
                load = os.getloadavg()[0]
                sqlite = _prepare("SQLite", f"sqlite:///{tmp / 'send.db'}", tmp, emulator_url)
                rows = _database_rows(sqlite, tmp, emulator, client)
                rows[0]["notes"] += f"; load average before the runs: {load:.2f}"
                admin_url = next((os.environ[e] for e in POSTGRES_ENVS if os.environ.get(e)), None)
                if admin_url is None:
                    rows.append(
                        {
                            "name": "PostgreSQL figures",
                            "value": 0,
                            "unit": "skipped",
                            "notes": f"{POSTGRES_ENVS[0]} is not set",
                        }
                    )
                else:
                    pg = _intake_data.PostgresDatabase(admin_url)
                    try:
                        database = _prepare("PostgreSQL", pg.url, tmp, emulator_url)
                        rows += _database_rows(database, tmp, emulator, client)
                    finally:
                        pg.drop()
        finally:
            emulator.terminate()
            emulator.wait(timeout=15)
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
