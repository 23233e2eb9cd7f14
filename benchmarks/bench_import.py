"""Import time: ``import chatlib`` (and first use of its clients) vs ``import openai``.

Each case runs in a fresh interpreter (``python -c``), so nothing is already imported; the
bytecode caches are warm (as on any machine after the first run). The child measures its
own CPU time (``time.process_time()``, steady on a busy machine) and wall time around the
statements, so interpreter start-up is excluded, and counts the modules the statements
added to ``sys.modules``. Ratios use CPU time. Cases are interleaved over
the repetitions; each figure is the median. (``import openai`` already loads both of its
clients, so touching ``openai.OpenAI`` adds nothing; constructing one does.)

    python benchmarks/bench_import.py [--json] [--reps 11]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

from _common import emit, fmt, have_openai, machine, markdown_table, median, ratio, spread

_URL = "http://127.0.0.1:9/v1"

# (label, statements, baseline label for the ratio column)
CASES: list[tuple[str, str, str | None]] = [
    ("import requests", "import requests", None),
    ("import aiohttp", "import aiohttp", None),
    ("import chatlib", "import chatlib", None),
    ("import chatlib; chatlib.SyncChat", "import chatlib; chatlib.SyncChat", "import requests"),
    ("import chatlib; chatlib.AsyncChat", "import chatlib; chatlib.AsyncChat", "import aiohttp"),
    (
        "chatlib.SyncChat(...) constructed",
        f"import chatlib; chatlib.SyncChat(base_url={_URL!r}, api_key='x')",
        "import requests",
    ),
    (
        "chatlib.AsyncChat(...) constructed",
        f"import chatlib; chatlib.AsyncChat(base_url={_URL!r}, api_key='x')",
        "import aiohttp",
    ),
]
OPENAI_CASES: list[tuple[str, str, str | None]] = [
    ("import openai", "import openai", None),
    (
        "openai.OpenAI(...) constructed",
        f"import openai; openai.OpenAI(base_url={_URL!r}, api_key='x')",
        "import requests",
    ),
    (
        "openai.AsyncOpenAI(...) constructed",
        f"import openai; openai.AsyncOpenAI(base_url={_URL!r}, api_key='x')",
        "import aiohttp",
    ),
]

_PROBE = """
import sys, time
before = len(sys.modules)
t0, c0 = time.perf_counter(), time.process_time()
{stmt}
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print({{"ms": wall * 1e3, "cpu_ms": cpu * 1e3, "modules": len(sys.modules) - before}})
"""


def _run_case(stmt: str) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(stmt=stmt)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    result: dict[str, float] = eval(out.strip().splitlines()[-1])  # a dict literal we printed
    return result


def bench(reps: int) -> dict[str, Any]:
    cases = CASES + (OPENAI_CASES if have_openai() else [])
    samples: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in cases}
    for _label, stmt, _ in cases:  # warm-up: bytecode caches written, files in the page cache
        _run_case(stmt)
    for _ in range(reps):
        for label, stmt, _ in cases:
            samples[label].append(_run_case(stmt))
    rows = []
    for label, _, base in cases:
        ms = [s["ms"] for s in samples[label]]
        cpu = [s["cpu_ms"] for s in samples[label]]
        rows.append(
            {
                "case": label,
                "ms": median(ms),
                "cpu_ms": median(cpu),
                "spread": spread(cpu),
                "modules": int(median([s["modules"] for s in samples[label]])),
                "baseline": base,
            }
        )
    return {"rows": rows, "reps": reps}


def table(results: dict[str, Any]) -> str:
    by_case = {r["case"]: r for r in results["rows"]}
    chatlib_peer = {
        "import openai": "import chatlib",
        "openai.OpenAI(...) constructed": "chatlib.SyncChat(...) constructed",
        "openai.AsyncOpenAI(...) constructed": "chatlib.AsyncChat(...) constructed",
    }
    rows = []
    for r in results["rows"]:
        base = by_case.get(r["baseline"]) if r["baseline"] else None
        peer = by_case.get(chatlib_peer.get(r["case"], ""))
        rows.append(
            [
                r["case"],
                fmt(r["cpu_ms"]),
                fmt(r["ms"]),
                str(r["modules"]),
                f"{ratio(r['cpu_ms'], base['cpu_ms'])} ({r['baseline']})" if base else "-",
                ratio(r["cpu_ms"], peer["cpu_ms"]) if peer else "-",
                f"{r['spread'] * 100:.0f}%",
            ]
        )
    header = [
        "statements (fresh process)",
        "CPU ms",
        "wall ms",
        "modules",
        "CPU vs HTTP lib",
        "CPU vs chatlib",
        "CPU IQR",
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (for run_all.py)")
    parser.add_argument("--reps", type=int, default=11)
    args = parser.parse_args(argv)
    results = bench(args.reps)
    results["machine"] = machine()
    emit(results, args.json, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
