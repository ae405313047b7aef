"""Live events to the agent desktops under load: latency and the server's memory (issue 6).

Processes: the server (`convodesk serve`'s own `run_server`: the web app and every worker in
one process), the agent desktops (`bench._desktop_readers`: each agent loads what the
desktop loads when it opens, then holds ``GET /api/v1/stream`` open; raw sockets, one
process for all of them) and this one, which sends the callbacks (raw keep-alive HTTP/1.1,
`bench._http_load`'s client), reads the server's ``/proc/PID/status`` and computes the
figures. Both load processes timestamp on the system-wide monotonic clock.

The contact center: one queue (WhatsApp, ``max_size`` 20,000) with `OPEN_CONVERSATIONS`
open conversations; its agents are ready and each holds its limit of 3 active chats, the
rest of the conversations wait in the queue (admitted, as routing leaves them). So the
router runs its passes (woken when a message opens a conversation) but has nobody free to
offer to. Each inbound message reaches the stream of the agent its conversation is assigned to
(``message.created`` and ``conversation.updated``); a message that opens a conversation
reaches every agent of the queue (``conversation.updated``); a message to a waiting
conversation reaches no agent's stream (`services/chat_events.py`, "Audience").

The load: signed MESSAGE_INBOUND callbacks of the captured fixture's size, open loop
(message *i* is due at ``start + i / rate`` whatever the answers do); 1 in 20 comes from a
new customer, whose conversation is opened and admitted to the queue; of the others, half
come from the customers of the active chats (spread evenly: at 1,000/s each of the 150
writes about every 0.3 s) and half from those waiting (each every 20 s). Latency: from a
message's due time (so the sender's own lateness counts in) to its ``message.created``
arriving on its agent's stream, for every message of an active chat. Rows:

1. latency p50 and p99 at `RATE` callbacks/s with `AGENTS` agents connected (target: p99
   <= 50 ms), `REPETITIONS` runs of `RUN_SECONDS` after a warm-up run; the median of the
   runs' percentiles; then the same on a `serve --intake-port`, whose child process takes
   the callbacks (sent to its port; the CPU figure is both processes');
2. the server's memory (``VmRSS``, and the peak ``VmHWM``) with `OPEN_CONVERSATIONS` open
   conversations and `MEMORY_AGENTS` agents connected: once all desktops are open, and
   after `MEMORY_SECONDS` of `MEMORY_RATE` callbacks/s with them all listening (target:
   <= 250 MB); the latency of that load too;
3. both on PostgreSQL when ``CONVODESK_BENCH_POSTGRES_URL`` (or
   ``CONVODESK_TEST_POSTGRES_URL``) names a server (a throwaway database, dropped
   afterwards); the PostgreSQL server's own memory is not counted.

SQLite files live in a temporary folder under /tmp, removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy import Table, insert, select

from bench import _http_load, _intake_data
from bench._desktop_readers import RUN_FACTOR, message_id, read_dump
from bench._intake_server import SECRET_KEY
from convodesk.services import configuration
from convodesk.sinch.signature import sign_headers
from convodesk.storage import api_tokens
from convodesk.storage.db import transaction
from convodesk.storage.tables import AgentPresenceRow, AgentRow, ConversationRow

RATE = 1000
AGENTS = 50
RUN_SECONDS = 5.0
WARMUP_SECONDS = 1.5
REPETITIONS = 3
MEMORY_AGENTS = 200
MEMORY_RATE = 100
MEMORY_SECONDS = 5.0
OPEN_CONVERSATIONS = 10_000
CHATS_PER_AGENT = 3  # chat_settings.max_concurrent_chats, the default
NEW_EVERY = 20  # one message in 20 comes from a new customer
LATENCY_TARGET_MS = 50
MEMORY_TARGET_MB = 250
DELIVERY_WAIT_SECONDS = 20.0  # after the last answer, for the streams to catch up
QUEUE = "whatsapp"
POSTGRES_ENVS = ("CONVODESK_BENCH_POSTGRES_URL", "CONVODESK_TEST_POSTGRES_URL")
ROOT = Path(__file__).parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- database


def _config(agents: int) -> dict[str, Any]:
    raw = _intake_data.config()
    for queue in raw["queues"]:
        queue["max_size"] = 2 * OPEN_CONVERSATIONS
    raw["agents"] = [
        {"login": _login(n), "display_name": f"Agent {n}", "queues": [QUEUE]} for n in range(agents)
    ]
    return raw


def _login(n: int) -> str:
    return f"agent{n:03d}"


def _identity(n: int) -> str:
    return f"4670{n:07d}"  # the fixture's identity has 11 characters too


def _prepare(database_url: str, data_dir: Path, agents: int) -> list[str]:
    """Migrate, configure, store the open conversations and the agents' presence; returns
    one API token per agent."""
    rt = _intake_data.runtime(database_url, data_dir, upgrade=True)
    try:
        _, problems = configuration.apply_config(rt, _config(agents))
        if any(p.severity == "error" for p in problems):
            raise RuntimeError(f"the benchmark configuration is invalid: {problems}")
        now = datetime.now(UTC)
        service, app = _intake_data.SERVICE, _intake_data.APP_ID
        active = agents * CHATS_PER_AGENT
        rows = []
        for n in range(OPEN_CONVERSATIONS):
            identity = _identity(n)
            agent = _login(n % agents) if n < active else None
            rows.append(
                {
                    "service": service,
                    "app_id": app,
                    "channel": "WHATSAPP",
                    "identity": identity,
                    "queue": QUEUE,
                    "status": "active" if agent else "waiting",
                    "open_key": f"{service}|{app}|WHATSAPP|{identity}",
                    "opened_at": now - timedelta(minutes=10),
                    "last_inbound_at": now - timedelta(minutes=1),
                    "last_activity_at": now - timedelta(minutes=1),
                    "reopen_count": 0,
                    "sender_id": "46700000000",
                    "assigned_agent": agent,
                    "assigned_at": now - timedelta(minutes=5) if agent else None,
                    "waiting_since": now - timedelta(minutes=10) + timedelta(milliseconds=n),
                    "admitted_at": now - timedelta(minutes=10),
                }
            )
        tokens = []
        with transaction(rt.sessions) as session:
            session.execute(insert(cast(Table, ConversationRow.__table__)), rows)
            ids = dict(session.execute(select(AgentRow.login, AgentRow.id)).all())
            session.execute(
                insert(cast(Table, AgentPresenceRow.__table__)),
                [
                    {
                        "agent_id": ids[_login(n)],
                        "state": "ready",
                        "since": now,
                        "idle_since": now,
                        "missed_offers": 0,
                    }
                    for n in range(agents)
                ],
            )
            for n in range(agents):
                tokens.append(api_tokens.create_token(session, role="agent", agent_login=_login(n)))
        return tokens
    finally:
        rt.close()


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB (10^6 bytes)."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024 / 1e6
    return found["VmRSS"], found["VmHWM"]


@dataclass(frozen=True)
class _Server:
    pids: list[int]  # serve's, then its intake process's if any
    port: int  # the desktops' (and the callbacks' unless there is an intake process)
    callback_port: int

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(pid) for pid in self.pids)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _server(
    database_url: str, data_dir: Path, log: Path, *, intake_process: bool = False
) -> Iterator[_Server]:
    """`convodesk serve` on a free port (its `run_server`), with `--intake-port` when
    `intake_process`; yields its pids and ports."""
    port = _free_port()
    intake_port = _free_port() if intake_process else None
    code = (
        "from convodesk.domain.config_model import SystemConfig\n"
        "from convodesk.runtime import open_runtime\n"
        "from convodesk.server import run_server\n"
        f"config = SystemConfig(database_url={database_url!r}, data_dir={str(data_dir)!r})\n"
        f"runtime = open_runtime(config, upgrade=False, environ={{'CONVODESK_SECRET_KEY': "
        f"{SECRET_KEY!r}}})\n"
        f"run_server(runtime, host='127.0.0.1', port={port}, intake_port={intake_port})\n"
    )
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited during start-up; see {log}")
            if all(_listening(p) for p in (port, intake_port) if p is not None):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in time; see {log}")
            time.sleep(0.05)
        pids = [process.pid]
        if intake_port is not None:  # the intake process: serve's child (started by a thread)
            for task in Path(f"/proc/{process.pid}/task").iterdir():
                pids += [int(child) for child in (task / "children").read_text().split()]
        yield _Server(pids=pids, port=port, callback_port=intake_port or port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Readers:
    """The desktops' process: `bench._desktop_readers`, driven over its stdin."""

    def __init__(self, port: int, tokens: list[str], tmp: Path) -> None:
        self.tmp = tmp
        spec = tmp / "readers.json"
        spec.write_text(json.dumps({"host": "127.0.0.1", "port": port, "tokens": tokens}))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench._desktop_readers", str(spec)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.streams = int(self._answer("ready").split()[1])
        if self.streams != len(tokens):
            raise RuntimeError(f"only {self.streams} of {len(tokens)} streams opened")
        self.dumps = 0

    def _answer(self, expected: str) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(expected):
            raise RuntimeError(f"the desktops' process said {line!r}, not {expected!r}")
        return line

    def _command(self, line: str) -> None:
        stdin = cast(IO[str], self.process.stdin)
        stdin.write(line + "\n")
        stdin.flush()

    def wait(self, entries: int, seconds: float) -> int:
        self._command(f"wait {entries} {seconds}")
        return int(self._answer("waited").split()[1])

    def dump(self) -> tuple[dict[str, Any], list[int], list[int], list[float]]:
        self.dumps += 1
        path = self.tmp / f"dump-{self.dumps}.bin"
        self._command(f"dump {path}")
        self._answer("dumped")
        counts, numbers, streams, times = read_dump(path)
        path.unlink()
        return counts, list(numbers), list(streams), list(times)

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.process.pid)

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._command("quit")
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------- load


def _requests(run: int, count: int, port: int, active: int) -> tuple[list[bytes], int]:
    """Signed callbacks, and how many of them go to the `active` chats (each heard by one
    agent): message *i* of run `run` has id `message_id(run, i)`; every `NEW_EVERY`-th
    comes from a new customer, the others alternately from an active chat's customer and a
    waiting one's."""
    template = _intake_data.FIXTURE.read_bytes().strip()
    out = []
    to_active = 0
    for n in range(count):
        if n % NEW_EVERY == NEW_EVERY - 1:
            identity = f"4672{run * 200_000 + n:07d}"
        elif n % 2 == 0:
            identity = _identity(n // 2 % active)
            to_active += 1
        else:  # 7919 is prime: every waiting conversation in turn
            identity = _identity(active + n * 7919 % (OPEN_CONVERSATIONS - active))
        body = template.replace(
            _intake_data.FIXTURE_MESSAGE_ID, message_id(run, n).encode()
        ).replace(_intake_data.FIXTURE_IDENTITY, identity.encode())
        headers = sign_headers(_intake_data.WEBHOOK_SECRET, body)
        lines = [
            f"POST {_intake_data.CALLBACK_PATH} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            *(f"{name}: {value}" for name, value in headers.items()),
            f"Content-Length: {len(body)}",
        ]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    return out, to_active


@dataclass
class _Run:
    rate: float
    agents: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    expected: int  # messages to the active chats, each heard by its agent
    heard: int
    send_lag_p99_ms: float
    non_200: int
    server_cpu: float  # of one core, over the sending
    readers_cpu: float
    sender_cpu: float
    events: int = 0
    megabytes: float = 0.0
    overflows: int = 0
    closed: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)


def _load_run(run: int, rate: float, seconds: float, server: _Server, readers: _Readers) -> _Run:
    count = int(rate * seconds)
    port = server.callback_port
    requests, expected = _requests(run, count, port, readers.streams * CHATS_PER_AGENT)
    cpu0, readers0, own0 = server.cpu_seconds(), readers.cpu_seconds(), time.process_time()
    sent = asyncio.run(_http_load.paced("127.0.0.1", port, requests, rate))
    server_cpu = (server.cpu_seconds() - cpu0) / sent.seconds
    readers_cpu = (readers.cpu_seconds() - readers0) / sent.seconds
    sender_cpu = (time.process_time() - own0) / sent.seconds
    readers.wait(expected, DELIVERY_WAIT_SECONDS)
    counts, numbers, _streams, times = readers.dump()
    latencies = []
    base = run * RUN_FACTOR
    for number, at in zip(numbers, times, strict=True):
        if base <= number < base + RUN_FACTOR:
            latencies.append(at - (sent.started + (number - base) / rate))
    non_200 = sum(n for status, n in sent.statuses.items() if status != 200)
    if not latencies:
        raise RuntimeError(
            f"no message of run {run} reached a desktop: answers {sent.statuses}, desktops' "
            f"process heard {counts}"
        )
    return _Run(
        rate=rate,
        agents=readers.streams,
        p50_ms=_http_load.percentile(latencies, 0.50) * 1000,
        p99_ms=_http_load.percentile(latencies, 0.99) * 1000,
        max_ms=max(latencies) * 1000,
        expected=expected,
        heard=len(latencies),
        send_lag_p99_ms=_http_load.percentile(sent.send_lags, 0.99) * 1000,
        non_200=non_200,
        server_cpu=server_cpu,
        readers_cpu=readers_cpu,
        sender_cpu=sender_cpu,
        events=counts["events"],
        megabytes=counts["bytes"] / 1e6,
        overflows=counts["overflows"],
        closed=counts["closed"],
        latencies=latencies,
    )


# --------------------------------------------------------------------------- scenarios


def _row(name: str, value: float, unit: str, notes: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": round(value, 1), "unit": unit, "notes": notes, **extra}


def _runs_text(values: list[float], fmt: str = "{:.1f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def _latency_rows(label: str, runs: list[_Run], hwm: float) -> list[dict[str, Any]]:
    p50 = [r.p50_ms for r in runs]
    p99 = [r.p99_ms for r in runs]
    pooled = _http_load.percentile([v for r in runs for v in r.latencies], 0.99) * 1000
    lost = sum(r.expected - r.heard for r in runs)
    met = "met" if statistics.median(p99) <= LATENCY_TARGET_MS else "MISSED"
    load = (
        f"{runs[0].rate:,.0f} callbacks/s open loop for {RUN_SECONDS:g}s x {len(runs)}, "
        f"{runs[0].agents} agents' streams, {OPEN_CONVERSATIONS:,} open conversations"
    )
    return [
        _row(
            f"desktop latency p50, {RATE:,}/s, {AGENTS} agents ({label})",
            statistics.median(p50),
            "ms",
            f"callback due -> message.created on its agent's stream; {load}; "
            f"runs {_runs_text(p50)}",
        ),
        _row(
            f"desktop latency p99, {RATE:,}/s, {AGENTS} agents ({label})",
            statistics.median(p99),
            "ms",
            f"target <= {LATENCY_TARGET_MS} ms: {met}; runs {_runs_text(p99)}; all runs pooled "
            f"{pooled:.1f}; max {max(r.max_ms for r in runs):.0f} ms; deliveries missing "
            f"{lost} of {sum(r.expected for r in runs):,}; overflows "
            f"{sum(r.overflows for r in runs)}; non-200 answers {sum(r.non_200 for r in runs)}; "
            f"sender lag p99 <= {max(r.send_lag_p99_ms for r in runs):.1f} ms (counted in); "
            f"CPU (of a core): server {_runs_text([r.server_cpu * 100 for r in runs], '{:.0f}')}"
            f" %, desktops' process {statistics.median(r.readers_cpu for r in runs):.0%}, "
            f"sender {statistics.median(r.sender_cpu for r in runs):.0%}; "
            f"{statistics.median(r.events for r in runs) / RUN_SECONDS:,.0f} events/s and "
            f"{statistics.median(r.megabytes for r in runs) / RUN_SECONDS:,.1f} MB/s over "
            f"all streams; server VmHWM {hwm:.0f} MB",
        ),
    ]


def _latency_scenario(
    label: str, database_url: str, tmp: Path, *, intake_process: bool = False
) -> list[dict[str, Any]]:
    tokens = _prepare(database_url, tmp, AGENTS)
    log = tmp / f"server-{label}{'-intake' if intake_process else ''}.log"
    with _server(database_url, tmp, log, intake_process=intake_process) as server:
        readers = _Readers(server.port, tokens, tmp)
        try:
            _load_run(0, RATE, WARMUP_SECONDS, server, readers)
            runs = [
                _load_run(run, RATE, RUN_SECONDS, server, readers)
                for run in range(1, REPETITIONS + 1)
            ]
            hwm = max(_memory_mb(pid)[1] for pid in server.pids)
        finally:
            readers.close()
    if intake_process:
        label += ", serve --intake-port"
    return _latency_rows(label, runs, hwm)


def _memory_scenario(label: str, database_url: str, tmp: Path) -> list[dict[str, Any]]:
    tokens = _prepare(database_url, tmp, MEMORY_AGENTS)
    with _server(database_url, tmp, tmp / f"server-{label}-memory.log") as server:
        pid = server.pids[0]
        started_rss, _ = _memory_mb(pid)
        readers = _Readers(server.port, tokens, tmp)
        try:
            connected_rss, _ = _memory_mb(pid)
            run = _load_run(1, MEMORY_RATE, MEMORY_SECONDS, server, readers)
            loaded_rss, hwm = _memory_mb(pid)
        finally:
            readers.close()
    met = "met" if max(loaded_rss, hwm) <= MEMORY_TARGET_MB else "MISSED"
    conditions = (
        f"{OPEN_CONVERSATIONS:,} open conversations ({MEMORY_AGENTS * CHATS_PER_AGENT} active), "
        f"{MEMORY_AGENTS} agents' streams open"
    )
    return [
        _row(
            f"server RSS, {MEMORY_AGENTS} agents connected ({label})",
            connected_rss,
            "MB",
            f"VmRSS once every desktop has opened (loaded its lists, stream open); {conditions}; "
            f"at start-up {started_rss:.0f} MB",
        ),
        _row(
            f"server peak RSS (VmHWM), {MEMORY_AGENTS} agents ({label})",
            hwm,
            "MB",
            f"target <= {MEMORY_TARGET_MB} MB: {met}; after {MEMORY_SECONDS:g}s of "
            f"{MEMORY_RATE}/s callbacks with every stream listening (VmRSS then "
            f"{loaded_rss:.0f} MB); {conditions}",
        ),
        _row(
            f"desktop latency p99, {MEMORY_RATE}/s, {MEMORY_AGENTS} agents ({label})",
            run.p99_ms,
            "ms",
            f"p50 {run.p50_ms:.1f} ms, max {run.max_ms:.0f} ms; deliveries missing "
            f"{run.expected - run.heard} of {run.expected:,}; overflows {run.overflows}; "
            f"server CPU {run.server_cpu:.0%} of a core",
        ),
    ]


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="convodesk-bench-desktop-", dir="/tmp") as name:
        tmp = Path(name)
        load = os.getloadavg()[0]
        rows = _latency_scenario("SQLite", _intake_data.sqlite_url(tmp / "latency.db"), tmp)
        rows[0]["notes"] += f"; load average before the runs: {load:.2f}"
        # Side by side: the same load on a `serve` whose callbacks a child process takes.
        rows += _latency_scenario(
            "SQLite", _intake_data.sqlite_url(tmp / "latency-intake.db"), tmp, intake_process=True
        )
        rows += _memory_scenario("SQLite", _intake_data.sqlite_url(tmp / "memory.db"), tmp)
        admin_url = next((os.environ[e] for e in POSTGRES_ENVS if os.environ.get(e)), None)
        if admin_url is None:
            rows.append(_row("PostgreSQL figures", 0, "skipped", f"{POSTGRES_ENVS[0]} is not set"))
            return rows
        scenarios = (
            _latency_scenario,
            functools.partial(_latency_scenario, intake_process=True),
            _memory_scenario,
        )
        for scenario in scenarios:
            database = _intake_data.PostgresDatabase(admin_url)
            try:
                rows += scenario("PostgreSQL", database.url, tmp)
            finally:
                database.drop()
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
