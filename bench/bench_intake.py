"""The callback intake and the Chain Matcher under load (issue 4's targets).

Every server runs in its own process (`bench._intake_server`, uvicorn with the same options
for all of them); the load comes from this process (`bench._http_load`, raw keep-alive
HTTP/1.1). Requests are signed MESSAGE_INBOUND callbacks of the captured fixture's size,
each with its own message id, spread over 2,000 identities, signed before the timed part.
Every figure is a median: of `THROUGHPUT_REPETITIONS` closed-loop runs (the noisiest
figures), of `REPETITIONS` otherwise; figures compared with each other are measured
alternately in the same run. The intake's servers run without the background workers
(the processor would share their CPU), except the one that shows what ``convodesk serve``
does. Rows:

1. callbacks/s through the intake (SQLite) against requests/s of a bare Starlette endpoint
   that only reads the body (target: intake >= 0.5x bare); the same with the workers on;
2. p50 and p99 latency of the intake under open-loop load at half its measured maximum
   (target: p99 <= 10 ms); latency counts from each request's due time;
3. inbound messages/s through the processor (Chain Matcher) on SQLite: 20,000 stored
   events over 2,000 identities, `Processor.process_batch()` until none is pending
   (target >= 5,000/s);
4. intake callbacks/s with 1 M stored conversations against 10 k (target: within 1.1x),
   and the processor's rate on both;
5. items 1 and 3 on PostgreSQL when ``CONVODESK_TEST_POSTGRES_URL`` is set (a throwaway
   database, dropped afterwards; 10,000 events for the processor); otherwise a row saying
   they were skipped.

SQLite files live in a temporary folder under /tmp, removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench import _http_load, _intake_data
from convodesk.metrics import Metrics
from convodesk.services.directory import DirectoryCache
from convodesk.storage.tables import ConversationRow, EventRow
from convodesk.workers.processor import Processor

REPETITIONS = 3
THROUGHPUT_REPETITIONS = 5  # closed-loop pairs: the noisiest figures
CONNECTIONS = 32
WARMUP_REQUESTS = 1500
INTAKE_REQUESTS = 4000  # per repetition of a closed-loop run
PACED_SECONDS = 2.0
IDENTITIES = 2000
THREADING_EVENTS = 20_000
PG_THREADING_EVENTS = 10_000  # PostgreSQL shares the 2 cores: half the work, same mix
SMALL, LARGE = 10_000, 1_000_000
POSTGRES_ENV = "CONVODESK_TEST_POSTGRES_URL"
ROOT = Path(__file__).parents[1]


# --------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _servers(specs: dict[str, tuple[str, str]], data_dir: Path) -> Iterator[dict[str, int]]:
    """Start one server process per ``name: (mode, database_url)``; yields name -> port."""
    ports = {name: _free_port() for name in specs}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench._intake_server", mode, url, str(data_dir), str(port)],
            cwd=ROOT,
            env=dict(os.environ),
        )
        for (mode, url), port in zip(specs.values(), ports.values(), strict=True)
    ]
    try:
        for process, port in zip(processes, ports.values(), strict=True):
            _wait_for(process, port)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)


def _wait_for(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError("a benchmark server exited during start-up")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("a benchmark server did not start in time")
        time.sleep(0.05)


# --------------------------------------------------------------------------- load


class _Rates:
    """Closed-loop rates per server, measured alternately, `THROUGHPUT_REPETITIONS` times."""

    def __init__(self) -> None:
        self.rates: dict[str, list[float]] = {}
        self.drained: dict[str, list[float]] = {}  # accepted and threaded, per second
        self.non_200: dict[str, int] = {}

    def median(self, name: str) -> float:
        return statistics.median(self.rates[name])

    def ratios(self, numerator: str, denominator: str) -> list[float]:
        """Per-repetition ratios: each pair was measured back to back."""
        return [a / b for a, b in zip(self.rates[numerator], self.rates[denominator], strict=True)]

    def runs(self, name: str) -> str:
        return ", ".join(f"{r:,.0f}" for r in self.rates[name])


async def _warm_up(ports: dict[str, int]) -> None:
    for port in ports.values():
        requests = _intake_data.signed_requests(WARMUP_REQUESTS, port, identities=IDENTITIES)
        await _http_load.closed_loop("127.0.0.1", port, requests, CONNECTIONS)


async def _alternate(
    ports: dict[str, int], names: list[str], pending: dict[str, Path] | None = None
) -> _Rates:
    """For a server that runs its workers (`pending` names its SQLite file), also wait
    until the processor has threaded everything: its backlog must not eat into the next
    server's run, and accepted-and-threaded per second is a figure of its own."""
    result = _Rates()
    for _ in range(THROUGHPUT_REPETITIONS):
        for name in names:
            port = ports[name]
            requests = _intake_data.signed_requests(INTAKE_REQUESTS, port, identities=IDENTITIES)
            started = time.perf_counter()
            run = await _http_load.closed_loop("127.0.0.1", port, requests, CONNECTIONS)
            result.rates.setdefault(name, []).append(run.rate)
            result.non_200[name] = result.non_200.get(name, 0) + run.non_200
            if pending and name in pending:
                await _drain(pending[name])
                elapsed = time.perf_counter() - started
                result.drained.setdefault(name, []).append(len(requests) / elapsed)
    return result


async def _drain(path: Path) -> None:
    deadline = time.monotonic() + 120
    while _intake_data.pending_events(path):
        if time.monotonic() > deadline:
            raise RuntimeError("the processor did not catch up within 120 s")
        await asyncio.sleep(0.01)


async def _paced(port: int, rate: float) -> list[_http_load.PacedResult]:
    runs = []
    for _ in range(REPETITIONS):
        count = int(rate * PACED_SECONDS)
        requests = _intake_data.signed_requests(count, port, identities=IDENTITIES)
        runs.append(await _http_load.paced("127.0.0.1", port, requests, rate))
    return runs


# --------------------------------------------------------------------------- threading


def _threading(
    database_url: str, data_dir: Path, events: int = THREADING_EVENTS
) -> tuple[list[float], str]:
    """Processor rates over `REPETITIONS` fresh sets of events, ten per identity (new
    identities each time: with 20,000 events, every repetition opens 2,000 conversations
    and threads 18,000 more messages into them)."""
    identities = events // 10
    rates = []
    problems = 0
    for rep in range(REPETITIONS):
        _intake_data.store_pending_events(
            database_url,
            data_dir,
            events,
            identities=identities,
            first_identity=1_000_000 + rep * identities,
        )
        rt = _intake_data.runtime(database_url, data_dir)
        try:
            processor = Processor(rt, DirectoryCache(rt), metrics=Metrics())
            started = time.perf_counter()
            done = 0
            while taken := processor.process_batch():
                done += taken
            elapsed = time.perf_counter() - started
            with rt.sessions() as session:
                not_done = session.scalar(
                    select(func.count())
                    .select_from(EventRow)
                    .where(EventRow.state.in_(("failed", "unrouted", "pending")))
                )
                conversations = session.scalar(select(func.count()).select_from(ConversationRow))
        finally:
            rt.close()
        problems += (not_done or 0) + (events - done)
        rates.append(done / elapsed)
    return rates, f"{conversations:,} conversations at the end; events not done: {problems}"


# --------------------------------------------------------------------------- rows


def _row(name: str, value: float, unit: str, notes: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": round(value, 1), "unit": unit, "notes": notes, **extra}


def _throughput_rows(rates: _Rates, intake: str, label: str) -> list[dict[str, Any]]:
    ratios = rates.ratios(intake, "bare")
    return [
        _row(
            f"bare Starlette endpoint ({label} run)",
            rates.median("bare"),
            "requests/s",
            f"reads the body, answers 200; runs {rates.runs('bare')}",
        ),
        _row(
            f"intake, signed callbacks ({label})",
            rates.median(intake),
            "callbacks/s",
            f"target >= 0.5x bare; x{statistics.median(ratios):.2f} of bare "
            f"(per run {', '.join(f'{r:.2f}' for r in ratios)}); runs {rates.runs(intake)}; "
            f"non-200 answers: {rates.non_200[intake]}",
            ratio=round(statistics.median(ratios), 3),
        ),
    ]


def _latency_rows(runs: list[_http_load.PacedResult]) -> list[dict[str, Any]]:
    p50 = [_http_load.percentile(r.latencies, 0.50) * 1000 for r in runs]
    p99 = [_http_load.percentile(r.latencies, 0.99) * 1000 for r in runs]
    lag = max(_http_load.percentile(r.send_lags, 0.99) for r in runs) * 1000
    pooled = _http_load.percentile([v for r in runs for v in r.latencies], 0.99) * 1000
    worst = max(max(r.latencies) for r in runs) * 1000
    non_200 = sum(n for r in runs for status, n in r.statuses.items() if status != 200)
    load = (
        f"open loop at {runs[0].rate:,.0f}/s for {PACED_SECONDS:g}s x {len(runs)} "
        f"(achieved {', '.join(f'{r.achieved_rate:,.0f}' for r in runs)}/s)"
    )
    return [
        _row(
            "intake latency p50 at half max rate",
            statistics.median(p50),
            "ms",
            f"{load}; runs {', '.join(f'{v:.2f}' for v in p50)}",
        ),
        _row(
            "intake latency p99 at half max rate",
            statistics.median(p99),
            "ms",
            f"target <= 10 ms; runs {', '.join(f'{v:.2f}' for v in p99)}; "
            f"all runs pooled {pooled:.2f}; max {worst:.1f} ms; "
            f"client send lag p99 <= {lag:.2f} ms (counted in); non-200 answers: {non_200}",
        ),
    ]


def _room_for_everyone(path: Path, tmp: Path) -> None:
    """The `serve` run's WhatsApp queue takes every new customer. With the default
    ``queue_max_size`` (100), below the 500 waiting conversations the database starts
    with, the router closed each conversation the run opened as ``queue_full`` (a write and
    a prompt each), in the same process: the row measured that, not `serve` threading."""
    raw = _intake_data.config()
    raw["queues"][0]["max_size"] = 1_000_000
    _intake_data.configure(_intake_data.sqlite_url(path), tmp, raw)


def _sqlite_rows(tmp: Path) -> list[dict[str, Any]]:
    template = _intake_data.build_sqlite_template(tmp)
    small = _intake_data.copy_database(template, tmp / "small.db")
    _intake_data.add_conversations(small, SMALL)
    small_4 = _intake_data.copy_database(small, tmp / "small-4.db")
    serve = _intake_data.copy_database(small, tmp / "serve.db")
    _room_for_everyone(serve, tmp)
    threading_small = _intake_data.copy_database(small, tmp / "threading-small.db")
    large = _intake_data.copy_database(template, tmp / "large.db")
    started = time.perf_counter()
    _intake_data.add_conversations(large, LARGE)
    built_in = time.perf_counter() - started
    url = _intake_data.sqlite_url
    specs = {
        "bare": ("bare", "-"),
        "intake": ("intake", url(small)),
        "serve": ("intake+workers", url(serve)),
        "small": ("intake", url(small_4)),
        "large": ("intake", url(large)),
    }
    with _servers(specs, tmp) as ports:
        asyncio.run(_warm_up(ports))
        load = os.getloadavg()[0]
        throughput = asyncio.run(
            _alternate(ports, ["bare", "intake", "serve"], pending={"serve": serve})
        )
        half = throughput.median("intake") / 2
        paced = asyncio.run(_paced(ports["intake"], half))
        sizes = asyncio.run(_alternate(ports, ["small", "large"]))
    rows = _throughput_rows(throughput, "intake", "SQLite")
    rows[0]["notes"] += f"; load average before the runs: {load:.2f}"
    drained = throughput.drained["serve"]
    rows.append(
        _row(
            "intake with the workers running (SQLite)",
            throughput.median("serve"),
            "callbacks/s",
            f"as `convodesk serve` runs: the processor threads them meanwhile, in the same "
            f"process; x{statistics.median(throughput.ratios('serve', 'bare')):.2f} of bare; "
            f"accepted and threaded: {statistics.median(drained):,.0f}/s "
            f"(runs {', '.join(f'{r:,.0f}' for r in drained)}); runs {throughput.runs('serve')}; "
            f"non-200 answers: {throughput.non_200['serve']}",
            ratio=round(statistics.median(throughput.ratios("serve", "bare")), 3),
        )
    )
    rows += _latency_rows(paced)
    small_rates, small_notes = _threading(url(threading_small), tmp)
    large_rates, large_notes = _threading(url(large), tmp)
    rows.append(
        _row(
            "threading, inbound msgs (SQLite, 10k conversations)",
            statistics.median(small_rates),
            "msgs/s",
            f"target >= 5,000/s; {THREADING_EVENTS:,} events over {IDENTITIES:,} identities; "
            f"runs {', '.join(f'{r:,.0f}' for r in small_rates)}; {small_notes}",
        )
    )
    cost = [1 / r for r in sizes.ratios("large", "small")]
    rows += [
        _row(
            "intake with 10k conversations (SQLite)",
            sizes.median("small"),
            "callbacks/s",
            f"runs {sizes.runs('small')}",
        ),
        _row(
            "intake with 1M conversations (SQLite)",
            sizes.median("large"),
            "callbacks/s",
            f"target: cost within 1.1x of 10k; cost x{statistics.median(cost):.3f} "
            f"(per run {', '.join(f'{c:.3f}' for c in cost)}); runs {sizes.runs('large')}; "
            f"1M rows built in {built_in:.1f}s; non-200 answers: {sizes.non_200['large']}",
            ratio=round(statistics.median(sizes.ratios("large", "small")), 3),
        ),
        _row(
            "threading with 1M conversations (SQLite)",
            statistics.median(large_rates),
            "msgs/s",
            f"x{statistics.median(large_rates) / statistics.median(small_rates):.2f} of the "
            f"10k figure; runs {', '.join(f'{r:,.0f}' for r in large_rates)}; {large_notes}",
            ratio=round(statistics.median(large_rates) / statistics.median(small_rates), 3),
        ),
    ]
    return rows


def _postgres_rows(admin_url: str, tmp: Path) -> list[dict[str, Any]]:
    database = _intake_data.PostgresDatabase(admin_url)
    try:
        _intake_data.configure(database.url, tmp)
        specs = {"bare": ("bare", "-"), "intake-pg": ("intake", database.url)}
        with _servers(specs, tmp) as ports:
            asyncio.run(_warm_up(ports))
            throughput = asyncio.run(_alternate(ports, ["bare", "intake-pg"]))
        rows = _throughput_rows(throughput, "intake-pg", "PostgreSQL")
        rates, notes = _threading(database.url, tmp, PG_THREADING_EVENTS)
        rows.append(
            _row(
                "threading, inbound msgs (PostgreSQL)",
                statistics.median(rates),
                "msgs/s",
                f"{PG_THREADING_EVENTS:,} events over {PG_THREADING_EVENTS // 10:,} identities; "
                f"runs {', '.join(f'{r:,.0f}' for r in rates)}; {notes}",
            )
        )
        return rows
    finally:
        database.drop()


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="convodesk-bench-", dir="/tmp") as name:
        tmp = Path(name)
        rows = _sqlite_rows(tmp)
        admin_url = os.environ.get(POSTGRES_ENV)
        if admin_url:
            rows += _postgres_rows(admin_url, tmp)
        else:
            rows.append(
                _row(
                    "PostgreSQL figures",
                    0,
                    "skipped",
                    f"{POSTGRES_ENV} is not set (scripts/start-postgres prints one)",
                )
            )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
