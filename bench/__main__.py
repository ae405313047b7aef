"""Run the benchmarks, print one table and write bench/results.json.

Each module ``bench/bench_<name>.py`` exposes ``run() -> list[dict]``; every dict is a row
with ``name``, ``value`` (a number: a median where it was measured repeatedly), ``unit`` and
optional ``notes``. Rows measured side by side in one run may carry ``ratio`` as well.
Usage: ``python -m bench [NAME ...]`` to run only some modules; the rows of the other
groups already in results.json are kept, so results.json always holds every group's latest
figures (each row says when its group was measured).
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    if argv:
        unknown = sorted(set(argv) - set(names))
        if unknown:
            print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
            return 2
        names = [n for n in names if n in argv]
    rows: list[dict[str, Any]] = []
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        started = time.perf_counter()
        for row in module.run():
            rows.append({"group": name, **row, "measured_at": measured_at})
        print(f"# {name}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    width = max((len(r["name"]) for r in rows), default=10)
    print(f"{'group':<12} {'benchmark':<{width}} {'value':>12} unit        notes")
    for r in rows:
        value = r["value"]
        shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
        notes = r.get("notes", "")
        print(f"{r['group']:<12} {r['name']:<{width}} {shown:>12} {r['unit']:<11} {notes}")
    kept = [r for r in _previous_rows() if r.get("group") not in names]
    result = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "measured_at": measured_at,
        "rows": kept + rows,
    }
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _previous_rows() -> list[dict[str, Any]]:
    path = HERE / "results.json"
    if not path.exists():
        return []
    previous = json.loads(path.read_text())
    rows: list[dict[str, Any]] = previous.get("rows", [])
    for row in rows:  # rows from before rows carried their own date
        row.setdefault("measured_at", previous.get("measured_at"))
    return rows


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
