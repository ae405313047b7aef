"""One node against two: the intake and the processor on PostgreSQL, SQLite beside (issue 7).

Two convodesk nodes on this machine share one PostgreSQL database; the question is how much
the second node adds. Everything runs on the benchmark's machine: the nodes, PostgreSQL and
the load generator, so the CPU each of them used during every run is measured too
(``/proc``: the node processes, the PostgreSQL processes serving the benchmark's database
plus the server's own, this process, and the whole machine), and the notes say where the
cores went.

**Intake** (callbacks/s): every server runs in its own process (`bench._intake_server`,
``create_app`` as ``convodesk serve`` builds it, without the background workers, as
`bench_intake` measures it). The "load split" is the load generator's: `CONNECTIONS`
keep-alive connections for each node (connection *i* goes to node *i* mod *n*), each sending
its next request when its previous answer arrived, every request signed before the timed
part (closed loop, `_http_load.closed_loop` over the nodes' ports). No proxy: a proxy
process would take CPU from the nodes on a 2-core machine. Each node gets as many
connections as the single node does, so each sees the same concurrency: the intake commits
the callbacks waiting at once together (`EventWriter`), and 32 connections split over two
nodes would halve each node's batches and add about 12 % CPU per callback (measured while
writing this benchmark), which is a property of the load, not of a second node. Pairs
measured alternately, `REPETITIONS` times (which of the pair goes first alternates too); the
ratio is the median of the per-repetition ratios:

1. a bare Starlette endpoint, one process against two: what this machine gives a second
   Python web process at all (the ceiling for the others);
2. the intake on PostgreSQL, one node against two (target >= 1.6x);
3. the intake on SQLite, one process against two processes on the same file (one machine
   only; not a multi-node deployment, shown for comparison).

**Threading** (messages/s): `EVENTS` accepted MESSAGE_INBOUND events, ten for each of
`IDENTITIES` new customers in a shuffled order (a customer's messages stay in order), are
inserted as the intake stores them; then one or two processor processes
(`bench._processor_node`, started and warmed up beforehand) run ``process_batch()`` until
nothing is pending. Timed from the start signal until the last process is done. Checked
after each run: no event pending or failed, one conversation per customer. On PostgreSQL,
one process against two (alternately, `THREADING_REPETITIONS` times), on a database of its
own (not the intake's, whose leftover events would be measured too); on SQLite one process.

Without ``CONVODESK_TEST_POSTGRES_URL`` only the SQLite rows are measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy import func, make_url, select

from bench import _http_load, _intake_data
from bench.bench_intake import _servers
from convodesk.storage.tables import ConversationRow, EventRow

REPETITIONS = 5
THREADING_REPETITIONS = 3
CONNECTIONS = 32  # per node
WARMUP_REQUESTS = 1500
INTAKE_REQUESTS = 4000  # per node and run
IDENTITIES = 1000  # callers of the intake's requests; customers of a threading run
EVENTS = 10_000
WARMUP_EVENTS = 1000
POSTGRES_ENV = "CONVODESK_TEST_POSTGRES_URL"
DISTURBED_CORES = 0.15  # other processes busier than this during a run: measured again
INTAKE_REPEATS, THREADING_REPEATS = 10, 6  # pairs measured again at most (time budget)
QUIET_WAIT_SECONDS = 60.0  # at the start, wait at most this long for the machine to calm
ROOT = Path(__file__).parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES_AUXILIARY = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
    "stats collector",
    "archiver",
)


# --------------------------------------------------------------------------- CPU


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process, all its threads; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values)
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def _postgres_pids(database: str | None) -> list[int]:
    """The PostgreSQL processes that work for `database`: its backends (and autovacuum
    workers), the postmaster and the server's own (WAL writer, checkpointer, ...)."""
    if database is None:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if not title.startswith("postgres:"):
            pids.append(int(entry.name))  # the postmaster
            continue
        title = title.removeprefix("postgres:").strip()
        if database in title.split() or title.startswith(POSTGRES_AUXILIARY):
            pids.append(int(entry.name))
    return pids


@dataclass
class _Usage:
    """Cores used during one run, by part (1.0 = one core busy for the whole run)."""

    parts: dict[str, float]
    machine: float  # cores busy on the whole machine (out of os.cpu_count())

    @property
    def other(self) -> float:
        return max(0.0, self.machine - sum(self.parts.values()))


class _Repeats:
    """Pairs disturbed by other work on the machine are measured again, within a budget."""

    def __init__(self, budget: int) -> None:
        self.left = budget
        self.repeated = 0
        self.kept_disturbed = 0

    def again(self, usages: Sequence[_Usage]) -> bool:
        """True when the pair just measured should be measured again."""
        if max(u.other for u in usages) <= DISTURBED_CORES:
            return False
        if self.left > 0:
            self.left -= 1
            self.repeated += 1
            return True
        self.kept_disturbed += 1
        return False

    def note(self) -> str:
        return (
            f"pairs measured again because other processes used more than "
            f"{DISTURBED_CORES} core: {self.repeated}; kept although disturbed: "
            f"{self.kept_disturbed}"
        )


def _wait_for_quiet() -> float:
    """Wait (at most `QUIET_WAIT_SECONDS`) until the machine is nearly idle; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < QUIET_WAIT_SECONDS:
        busy, total = _machine_busy()
        time.sleep(2)
        busy2, total2 = _machine_busy()
        if (busy2 - busy) / (total2 - total) * (os.cpu_count() or 1) < DISTURBED_CORES:
            break
    return time.monotonic() - started


class _Probe:
    """Measures the CPU of named groups of processes over one run."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self._groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self._machine = (0.0, 0.0)
        self._started = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for name, pids in self._groups.items():
            out[name] = {}
            for pid in pids():
                cpu = _cpu_seconds(pid)
                if cpu is not None:
                    out[name][pid] = cpu
        return out

    def start(self) -> None:
        self._before = self._sample()
        self._machine = _machine_busy()
        self._started = time.perf_counter()

    def stop(self) -> _Usage:
        wall = time.perf_counter() - self._started
        after = self._sample()
        busy, _ = _machine_busy()
        parts = {
            name: sum(cpu - self._before[name].get(pid, 0.0) for pid, cpu in pids.items()) / wall
            for name, pids in after.items()
        }
        return _Usage(parts, (busy - self._machine[0]) / wall)


def _fixed(pids: list[int]) -> Callable[[], list[int]]:
    return lambda: pids


def _usage_note(usages: Sequence[_Usage], rates: Sequence[float], item: str) -> str:
    """Median cores per part over the runs, and CPU time per `item` (microseconds), e.g.
    ``cores: nodes 1.21, PostgreSQL 0.45, ...; CPU per callback: nodes 250 us, ...``."""
    names = list(usages[0].parts)
    cores = [f"{name} {statistics.median(u.parts[name] for u in usages):.2f}" for name in names]
    cores.append(f"other processes {statistics.median(u.other for u in usages):.2f}")
    machine = statistics.median(u.machine for u in usages)
    pairs = list(zip(usages, rates, strict=True))
    per_item = [
        f"{name} {statistics.median(u.parts[name] / r for u, r in pairs) * 1e6:,.0f}"
        for name in names
        if any(u.parts[name] for u in usages)
    ]
    per_item.append(f"machine {statistics.median(u.machine / r for u, r in pairs) * 1e6:,.0f}")
    return (
        f"cores used: {', '.join(cores)}; machine {machine:.2f} of {os.cpu_count()}; "
        f"CPU per {item} (us): {', '.join(per_item)}"
    )


# --------------------------------------------------------------------------- load


@dataclass
class _Pair:
    """Rates of one setup against another, measured alternately."""

    one: list[float] = field(default_factory=list)
    two: list[float] = field(default_factory=list)
    usage_one: list[_Usage] = field(default_factory=list)
    usage_two: list[_Usage] = field(default_factory=list)
    non_200: int = 0

    def ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.one, self.two, strict=True)]

    def ratio(self) -> float:
        return statistics.median(self.ratios())


def _runs(values: Sequence[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


async def _intake_pair(
    ports: tuple[int, int],
    probe: _Probe,
    requests_port: int,
    pair: _Pair,
    rep: int,
    repeats: _Repeats,
) -> None:
    setups = [(1, [ports[0]]), (2, list(ports))]
    if rep % 2:
        setups.reverse()
    while True:
        measured: dict[int, tuple[_http_load.ClosedLoopResult, _Usage]] = {}
        for count, targets in setups:
            requests = _intake_data.signed_requests(
                INTAKE_REQUESTS * count, requests_port, identities=IDENTITIES
            )
            probe.start()
            run = await _http_load.closed_loop("127.0.0.1", targets, requests, CONNECTIONS * count)
            measured[count] = (run, probe.stop())
        if not repeats.again([usage for _, usage in measured.values()]):
            break
        await asyncio.sleep(1)
    for count, (run, usage) in sorted(measured.items()):
        pair.non_200 += run.non_200
        (pair.one if count == 1 else pair.two).append(run.rate)
        (pair.usage_one if count == 1 else pair.usage_two).append(usage)


def _intake(pg_url: str | None, tmp: Path, repeats: _Repeats) -> dict[str, _Pair]:
    template = _intake_data.build_sqlite_template(tmp)
    sqlite = _intake_data.sqlite_url(_intake_data.copy_database(template, tmp / "intake.db"))
    specs = {"bare-a": ("bare", "-"), "bare-b": ("bare", "-")}
    specs |= {"sqlite-a": ("intake", sqlite), "sqlite-b": ("intake", sqlite)}
    if pg_url is not None:
        specs |= {"pg-a": ("intake", pg_url), "pg-b": ("intake", pg_url)}
    database = make_url(pg_url).database if pg_url else None
    pairs = {name: _Pair() for name in ("bare", "pg", "sqlite") if f"{name}-a" in specs}
    with _servers(specs, tmp) as ports:
        pids = _server_pids(ports)

        async def main() -> None:
            for port in ports.values():
                requests = _intake_data.signed_requests(
                    WARMUP_REQUESTS, port, identities=IDENTITIES
                )
                await _http_load.closed_loop("127.0.0.1", port, requests, CONNECTIONS)
            for rep in range(REPETITIONS):
                for name, pair in pairs.items():
                    a, b = f"{name}-a", f"{name}-b"
                    probe = _Probe(
                        {
                            "nodes": _fixed([pids[a], pids[b]]),
                            "PostgreSQL": partial(
                                _postgres_pids, database if name == "pg" else None
                            ),
                            "load generator": _fixed([os.getpid()]),
                        }
                    )
                    await _intake_pair((ports[a], ports[b]), probe, ports[a], pair, rep, repeats)

        asyncio.run(main())
    return pairs


def _server_pids(ports: dict[str, int]) -> dict[str, int]:
    """The pid of each `bench._intake_server` process, found by the port on its command line."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "bench._intake_server" in args and len(args) >= 2 and args[-2].isdigit():
            found[int(args[-2])] = int(entry.name)  # cmdline ends with a NUL
    missing = [name for name, port in ports.items() if port not in found]
    if missing:
        raise RuntimeError(f"no server process found for {', '.join(missing)}")
    return {name: found[port] for name, port in ports.items()}


# --------------------------------------------------------------------------- threading


def _store_events(database_url: str, data_dir: Path, first_identity: int, seed: int) -> None:
    """`EVENTS` pending MESSAGE_INBOUND events, ten per customer, customers shuffled."""
    identities = [first_identity + n % IDENTITIES for n in range(EVENTS)]
    random.Random(seed).shuffle(identities)
    _intake_data.store_pending_messages(database_url, data_dir, identities)


class _Node:
    """A `bench._processor_node` process."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench._processor_node", database_url, str(data_dir)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._line() != "ready":
            raise RuntimeError("a processor node did not start")

    def _line(self) -> str:
        stdout = cast(IO[str], self.process.stdout)
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"a processor node exited ({self.process.wait()})")
        return line.strip()

    def go(self) -> None:
        stdin = cast(IO[str], self.process.stdin)
        stdin.write("go\n")
        stdin.flush()

    def result(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self._line())
        return answer

    def close(self) -> None:
        stdin = cast(IO[str], self.process.stdin)
        with contextlib.suppress(OSError):
            stdin.write("quit\n")
            stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class _ThreadingRun:
    rate: float
    usage: _Usage
    failures: int
    waits: int  # passes that found only events another node had to finish first
    shares: list[int]  # events each node took


class _Threading:
    def __init__(self, database_url: str, data_dir: Path, nodes: int) -> None:
        self.url = database_url
        self.data_dir = data_dir
        self.nodes = [_Node(database_url, data_dir) for _ in range(nodes)]
        name = make_url(database_url).database if database_url.startswith("postgresql") else None
        self.database = name
        self.customers = 0  # identities used so far
        self.problems: list[str] = []

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def warm_up(self) -> None:
        identities = [5_000_000 + n % 100 for n in range(WARMUP_EVENTS)]
        _intake_data.store_pending_messages(self.url, self.data_dir, identities)
        for node in self.nodes:
            node.go()
        for node in self.nodes:
            node.result()

    def run(self, count: int, seed: int) -> _ThreadingRun:
        first = 1_000_000 + self.customers
        self.customers += IDENTITIES
        _store_events(self.url, self.data_dir, first, seed)
        conversations_before = self._conversations()
        nodes = self.nodes[:count]
        probe = _Probe(
            {
                "nodes": _fixed([n.process.pid for n in nodes]),
                "PostgreSQL": partial(_postgres_pids, self.database),
            }
        )
        probe.start()
        started = time.perf_counter()
        for node in nodes:
            node.go()
        results = [node.result() for node in nodes]
        elapsed = time.perf_counter() - started
        usage = probe.stop()
        taken = [int(r["taken"]) for r in results]
        failures = sum(int(r["failures"]) for r in results)
        waits = sum(int(r.get("waits", 0)) for r in results)
        self._check(sum(taken), self._conversations() - conversations_before)
        return _ThreadingRun(sum(taken) / elapsed, usage, failures, waits, taken)

    def _conversations(self) -> int:
        rt = _intake_data.runtime(self.url, self.data_dir)
        try:
            with rt.sessions() as session:
                return session.scalar(select(func.count()).select_from(ConversationRow)) or 0
        finally:
            rt.close()

    def _check(self, taken: int, conversations: int) -> None:
        rt = _intake_data.runtime(self.url, self.data_dir)
        try:
            with rt.sessions() as session:
                states = dict(
                    session.execute(
                        select(EventRow.state, func.count())
                        .where(EventRow.state.in_(("pending", "failed", "unrouted")))
                        .group_by(EventRow.state)
                    ).all()
                )
        finally:
            rt.close()
        if states or taken != EVENTS or conversations != IDENTITIES:
            self.problems.append(
                f"taken {taken} of {EVENTS}, {conversations} conversations for {IDENTITIES} "
                f"customers, left: {states}"
            )


def _threading(
    pg_url: str | None, tmp: Path, repeats: _Repeats
) -> tuple[dict[str, list[_ThreadingRun]], list[str]]:
    runs: dict[str, list[_ThreadingRun]] = {}
    problems: list[str] = []
    template = _intake_data.build_sqlite_template(tmp)
    sqlite = _intake_data.sqlite_url(_intake_data.copy_database(template, tmp / "threading.db"))
    setups: list[tuple[str, str, int]] = [("sqlite", sqlite, 1)]
    if pg_url is not None:
        setups.insert(0, ("pg", pg_url, 2))
    for label, url, nodes in setups:
        bench = _Threading(url, tmp, nodes)
        try:
            bench.warm_up()
            for rep in range(THREADING_REPETITIONS):
                counts = list(range(1, nodes + 1))
                if rep % 2:
                    counts.reverse()
                while True:
                    measured = {count: bench.run(count, seed=rep) for count in counts}
                    if not repeats.again([r.usage for r in measured.values()]):
                        break
                for count, result in sorted(measured.items()):
                    runs.setdefault(f"{label}-{count}", []).append(result)
        finally:
            bench.close()
        problems += [f"{label}: {p}" for p in bench.problems]
    return runs, problems


# --------------------------------------------------------------------------- rows


def _row(name: str, value: float, unit: str, notes: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": round(value, 1), "unit": unit, "notes": notes, **extra}


def _intake_rows(pairs: dict[str, _Pair]) -> list[dict[str, Any]]:
    labels = {
        "bare": ("bare Starlette endpoint", "process", "processes", "requests/s"),
        "pg": ("intake (PostgreSQL)", "node", "nodes", "callbacks/s"),
        "sqlite": ("intake (SQLite, one file)", "process", "processes", "callbacks/s"),
    }
    rows = []
    for key in ("bare", "pg", "sqlite"):
        if key not in pairs:
            continue
        pair = pairs[key]
        what, one, two, unit = labels[key]
        item = "request" if key == "bare" else "callback"
        target = "target >= 1.6x; " if key == "pg" else ""
        rows += [
            _row(
                f"{what}, 1 {one}",
                statistics.median(pair.one),
                unit,
                f"runs {_runs(pair.one)}; {_usage_note(pair.usage_one, pair.one, item)}",
            ),
            _row(
                f"{what}, 2 {two}",
                statistics.median(pair.two),
                unit,
                f"{target}x{pair.ratio():.2f} of 1 (per run "
                f"{', '.join(f'{r:.2f}' for r in pair.ratios())}); runs {_runs(pair.two)}; "
                f"{_usage_note(pair.usage_two, pair.two, item)}; "
                f"non-200 answers (all runs): {pair.non_200}",
                ratio=round(pair.ratio(), 3),
            ),
        ]
    return rows


def _threading_rows(
    runs: dict[str, list[_ThreadingRun]], problems: list[str]
) -> list[dict[str, Any]]:
    workload = f"{EVENTS:,} events, 10 each from {IDENTITIES:,} new customers, shuffled"
    checked = "; checks: " + ("; ".join(problems) if problems else "all threaded, none failed")
    rows = []
    for key, what in (("pg-1", "PostgreSQL, 1 worker"), ("pg-2", "PostgreSQL, 2 workers")):
        if key not in runs:
            continue
        rates = [r.rate for r in runs[key]]
        usage = _usage_note([r.usage for r in runs[key]], rates, "message")
        notes = f"{workload}; runs {_runs(rates)}; {usage}"
        extra: dict[str, Any] = {}
        if key == "pg-2":
            ratios = [b.rate / a.rate for a, b in zip(runs["pg-1"], runs["pg-2"], strict=True)]
            shares = "; ".join("/".join(f"{n:,}" for n in r.shares) for r in runs[key])
            failures = sum(r.failures for r in runs[key])
            waits = sum(r.waits for r in runs[key])
            notes = (
                f"x{statistics.median(ratios):.2f} of 1 (per run "
                f"{', '.join(f'{r:.2f}' for r in ratios)}); events taken per worker: {shares}; "
                f"passes aborted by PostgreSQL and retried: {failures}; passes that waited "
                f"for the other worker (a customer's older message): {waits}; {notes}{checked}"
            )
            extra["ratio"] = round(statistics.median(ratios), 3)
        rows.append(_row(f"threading ({what})", statistics.median(rates), "msgs/s", notes, **extra))
    rates = [r.rate for r in runs["sqlite-1"]]
    rows.append(
        _row(
            "threading (SQLite, 1 worker)",
            statistics.median(rates),
            "msgs/s",
            f"{workload}; runs {_runs(rates)}; "
            f"{_usage_note([r.usage for r in runs['sqlite-1']], rates, 'message')}",
        )
    )
    return rows


@contextlib.contextmanager
def _postgres(admin_url: str | None, tmp: Path) -> Iterator[str | None]:
    """A configured throwaway PostgreSQL database (None without a server), dropped after."""
    if admin_url is None:
        yield None
        return
    database = _intake_data.PostgresDatabase(admin_url)
    try:
        _intake_data.configure(database.url, tmp)
        yield database.url
    finally:
        database.drop()


def run() -> list[dict[str, Any]]:
    admin_url = os.environ.get(POSTGRES_ENV)
    waited = _wait_for_quiet()
    load = os.getloadavg()[0]
    intake_repeats, threading_repeats = _Repeats(INTAKE_REPEATS), _Repeats(THREADING_REPEATS)
    with tempfile.TemporaryDirectory(prefix="convodesk-bench-", dir="/tmp") as name:
        tmp = Path(name)
        # A database of its own for each part: each leaves tens of thousands of events
        # behind, which the other part would measure too. Threading first: it is the part
        # most sensitive to other work on the machine, and the machine was just quiet.
        with _postgres(admin_url, tmp) as pg_url:
            threading, problems = _threading(pg_url, tmp, threading_repeats)
        with _postgres(admin_url, tmp) as pg_url:
            pairs = _intake(pg_url, tmp, intake_repeats)
    intake_rows, threading_rows = _intake_rows(pairs), _threading_rows(threading, problems)
    intake_rows[0]["notes"] += (
        f"; load average before the runs: {load:.2f} (after waiting {waited:.0f}s for the "
        f"machine to calm); {intake_repeats.note()}"
    )
    threading_rows[0]["notes"] += f"; {threading_repeats.note()}"
    rows = intake_rows + threading_rows
    if admin_url is None:
        rows.append(_row("PostgreSQL figures", 0, "skipped", f"{POSTGRES_ENV} is not set"))
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
