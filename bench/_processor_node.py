"""One processor (Chain Matcher) node for the nodes benchmark, run in its own process.

``python -m bench._processor_node DATABASE_URL DATA_DIR`` opens the runtime and a
`Processor` (with metrics, as ``convodesk worker`` runs it), prints ``ready`` and then, for
each ``go`` line on stdin, calls ``Processor.process_batch()`` until it finds nothing to take
and prints one JSON line: ``{"taken": N, "seconds": S, "failures": F, "waits": W}``.
A pass that took nothing because every event it claimed must wait for another process
(the processor keeps each customer's messages in order across processes: ``deferred``)
sleeps as `Processor.run` does and tries again; ``waits`` counts those. A pass that raises
(a deadlock or serialization failure PostgreSQL resolved by aborting it) is counted in
``failures`` and the loop goes on: its events are still pending and are taken again, as the
worker's loop does. ``quit`` (or the end of stdin) ends the process.

This is the processor's own loop without its idle waits: `Processor.run` sleeps only when
a pass took nothing, so under a backlog it runs exactly these passes back to back (plus the
parked-report sweep, which finds nothing here).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench import _intake_data
from convodesk.metrics import Metrics
from convodesk.services.directory import DirectoryCache
from convodesk.workers import processor as processor_module
from convodesk.workers.processor import Processor

MAX_FAILURES = 200
DEFERRED_RETRY_SECONDS: float = getattr(processor_module, "DEFERRED_RETRY_SECONDS", 0.05)


def main(argv: list[str]) -> None:
    database_url, data_dir = argv[0], Path(argv[1])
    # The answers go to the original stdout; anything else written there (log lines) goes
    # to stderr instead.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    runtime = _intake_data.runtime(database_url, data_dir)
    try:
        processor = Processor(runtime, DirectoryCache(runtime), metrics=Metrics())
        print("ready", file=answers, flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            if command != "go":
                raise SystemExit(f"unknown command {command!r}")
            taken = failures = waits = 0
            started = time.perf_counter()
            while True:
                try:
                    done = processor.process_batch()
                except Exception as exc:
                    failures += 1
                    if failures > MAX_FAILURES:
                        raise SystemExit(f"too many failed passes, last: {exc}") from exc
                    continue
                if done:
                    taken += done
                elif getattr(processor, "deferred", 0):
                    # Everything it claimed belongs to customers with older messages another
                    # process holds: try again shortly, as `Processor.run` does.
                    waits += 1
                    time.sleep(DEFERRED_RETRY_SECONDS)
                else:
                    break
            seconds = time.perf_counter() - started
            print(
                json.dumps(
                    {"taken": taken, "seconds": seconds, "failures": failures, "waits": waits}
                ),
                file=answers,
                flush=True,
            )
    finally:
        runtime.close()


if __name__ == "__main__":
    main(sys.argv[1:])
