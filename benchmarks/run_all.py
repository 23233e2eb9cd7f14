"""Run every benchmark and print the README's table: chatlib beside raw HTTP and ``openai``.

Each ``bench_*.py`` runs in its own process (``--json``); this script gathers the figures
into one markdown table, with the machine it ran on, and draws them as a chart
(``docs/performance.png``, when matplotlib is installed: ``pip install -e '.[bench]'``).
``--details`` also prints each benchmark's own, fuller table; ``--quick`` runs fewer rounds
and smaller scale runs (a smoke test, noisier); ``--json FILE`` keeps every figure.

    python benchmarks/run_all.py [--details] [--quick] [--json FILE] [--chart FILE|-]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from _common import HERE, fmt, machine, markdown_table, ratio

_QUICK = {
    "bench_import.py": ["--reps", "3"],
    "bench_stream.py": ["--rounds", "2", "--chunks", "500", "--paced", "100"],
    "bench_create.py": ["--rounds", "2", "--calls", "30", "--batches", "1"],
    "bench_parse.py": ["--repeat", "3"],
    "bench_ttfc.py": ["--rounds", "2", "--streams", "3", "--burst", "5000"],
    "bench_scale.py": ["--rounds", "1", "--streams", "1000", "--threads", "200"],
}


def _run(script: str, quick: bool) -> dict[str, Any]:
    args = [sys.executable, str(HERE / script), "--json", *(_QUICK[script] if quick else [])]
    started = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=3600)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{script} failed with exit code {out.returncode}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - started
    print(f"  {script}: {result['seconds']:.0f} s", file=sys.stderr)
    return result


def _pick(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _value(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else row[key]


Figure = tuple[str, "float | None", "float | None", "float | None"]


def summary(results: dict[str, dict[str, Any]]) -> str:
    """One markdown table: what | raw floor | chatlib | openai | chatlib÷raw | openai÷chatlib."""
    return figures(results)[0]


def figures(results: dict[str, dict[str, Any]]) -> tuple[str, list[Figure]]:
    """The markdown table, and its figures as (what, raw, chatlib, openai)."""
    lines: list[list[str]] = []
    values: list[Figure] = []

    def add(
        what: str,
        raw: float | None,
        ours: float | None,
        peer: float | None,
        digits: int = 1,
        unit: str = "",
    ) -> None:
        values.append((what, raw, ours, peer))
        lines.append(
            [
                what,
                fmt(raw, unit, digits),
                fmt(ours, unit, digits),
                fmt(peer, unit, digits),
                ratio(ours, raw),
                ratio(peer, ours),
            ]
        )

    imp = {r["case"]: r for r in results["import"]["rows"]}

    def cpu(case: str, key: str = "cpu_ms") -> float | None:
        return imp[case][key] if case in imp else None

    add(
        "`import chatlib` / `import openai`, CPU ms",
        None,
        cpu("import chatlib"),
        cpu("import openai"),
    )
    add(
        "import + construct sync client, CPU ms (raw: `import requests`)",
        cpu("import requests"),
        cpu("chatlib.SyncChat(...) constructed"),
        cpu("openai.OpenAI(...) constructed"),
    )
    add(
        "import + construct async client, CPU ms (raw: `import aiohttp`)",
        cpu("import aiohttp"),
        cpu("chatlib.AsyncChat(...) constructed"),
        cpu("openai.AsyncOpenAI(...) constructed"),
    )
    add(
        "modules loaded by import + sync client",
        cpu("import requests", "modules"),
        cpu("chatlib.SyncChat(...) constructed", "modules"),
        cpu("openai.OpenAI(...) constructed", "modules"),
        digits=0,
    )

    srows = results["stream"]["rows"]
    for shape, label in (("burst", "burst"), ("paced", "paced, one chunk per read")):
        for family, raw_name, ours, peer in (
            ("sync", "raw requests", "chatlib SyncChat", "openai OpenAI"),
            ("async", "raw aiohttp", "chatlib AsyncChat", "openai AsyncOpenAI"),
        ):
            raw_row = _pick(srows, shape=shape, name=raw_name)
            if raw_row is None:
                continue
            add(
                f"stream {family}, {label} ({raw_row['chunks']} chunks), client CPU µs/chunk",
                _value(raw_row, "cpu_us_per_chunk"),
                _value(_pick(srows, shape=shape, name=ours), "cpu_us_per_chunk"),
                _value(_pick(srows, shape=shape, name=peer), "cpu_us_per_chunk"),
            )

    crows = results["create"]["rows"]
    concurrent = next((r["mode"] for r in crows if r["mode"].startswith("concurrent")), "")
    sync3 = ("raw requests", "chatlib SyncChat", "openai OpenAI")
    async3 = ("raw aiohttp", "chatlib AsyncChat", "openai AsyncOpenAI")
    memory3 = (
        "json.dumps + json.loads",
        "chatlib SyncChat",
        "openai OpenAI (httpx2.MockTransport)",
    )
    for label, mode, names in (
        ("create() sync, sequential, wall µs/call", "sequential", sync3),
        ("create() async, sequential, wall µs/call", "sequential", async3),
        (
            f"create() async, {concurrent.replace('x', 'batches of ')}, wall µs/call",
            concurrent,
            async3,
        ),
        ("create() client cost without network, µs/call", "no network", memory3),
    ):
        raw_v, ours_v, peer_v = (
            _value(_pick(crows, mode=mode, name=name), "wall_us_per_call") for name in names
        )
        add(label, raw_v, ours_v, peer_v, digits=0)

    prows = results["parse"]["rows"]

    def parse(stage: str, prefix: str) -> float | None:
        row = next((r for r in prows if r["stage"] == stage and r["who"].startswith(prefix)), None)
        return _value(row, "us")

    add(
        "parse one chunk, bytes -> model, µs (raw: `json.loads`)",
        parse("bytes -> dict", "json"),
        parse("bytes -> model", "chatlib"),
        parse("bytes -> model", "openai"),
        digits=2,
    )
    add(
        "parse SSE frames -> models, µs/frame (raw: split + `json.loads`)",
        parse("SSE frame -> model, 1 frame/read", "hand"),
        parse("SSE frame -> model, 1 frame/read", "chatlib"),
        parse("SSE frame -> model, 1 frame/read", "openai"),
        digits=2,
    )
    mem = {m["who"].split(" ")[0]: m["bytes"] for m in results["parse"]["memory"]}
    add(
        "memory per parsed chunk kept, bytes (raw: the dict)",
        mem.get("dict"),
        mem.get("chatlib"),
        mem.get("openai"),
        digits=0,
    )

    trows = results["ttfc"]["rows"]
    for shape in ("short", "burst"):
        for family, names in (("sync", sync3), ("async", async3)):
            raw_row = _pick(trows, shape=shape, name=names[0])
            if raw_row is None:
                continue
            add(
                f"time to first chunk, {family}, {raw_row['chunks']:,}-chunk "
                f"{'stream' if shape == 'short' else 'burst'}, µs",
                *(_value(_pick(trows, shape=shape, name=n), "ttfc_us") for n in names),
                digits=0,
            )

    scale = results["scale"]["rows"]

    def sc(scenario: str, name: str, key: str) -> float | None:
        return _value(_pick(scale, scenario=scenario, name=name), key)

    def scaled(value: float | None, factor: float) -> float | None:
        return None if value is None else value * factor

    conc = _pick(scale, scenario="concurrent", name="raw aiohttp")
    if conc is not None:
        add(
            f"{conc['streams']} concurrent async streams x 200 chunks, wall ms",
            *(scaled(sc("concurrent", n, "wall_s"), 1e3) for n in async3),
            digits=0,
        )
    big = _pick(scale, scenario="async10k", name="raw aiohttp")
    if big is not None:
        add(
            f"{big['streams']:,} concurrent async streams, RSS per open stream, KiB",
            *(scaled(sc("async10k", n, "rss_per_open_stream"), 1 / 1024) for n in async3),
        )
        add(
            f"{big['streams']:,} concurrent async streams, completed",
            *(sc("async10k", n, "completed") for n in async3),
            digits=0,
        )
    threads = _pick(scale, scenario="sync1k", name="raw requests")
    if threads is not None:
        add(
            f"{threads['streams']:,} sync streams from threads, completed (pool sized)",
            *(sc("sync1k", n, "completed") for n in sync3),
            digits=0,
        )

    header = [
        "measure (median)",
        "raw floor",
        "chatlib",
        "openai",
        "chatlib ÷ raw",
        "openai ÷ chatlib",
    ]
    return markdown_table(header, lines), values


def machine_note(info: dict[str, Any]) -> str:
    v = info["versions"]
    return (
        f"Python {info['python']} ({info['implementation']}), {info['cpus']} CPUs, "
        f"{info['platform']}; chatlib {v['chatlib']}, openai {v['openai']}, "
        f"requests {v['requests']}, aiohttp {v['aiohttp']}, cattrs {v['cattrs']}, "
        f"pydantic {v['pydantic']}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="also print each full table")
    parser.add_argument("--quick", action="store_true", help="fewer rounds: a smoke test")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    parser.add_argument(
        "--chart",
        metavar="FILE",
        default=str(HERE.parent / "docs" / "performance.png"),
        help="where to draw the chart ('-': none); default docs/performance.png",
    )
    args = parser.parse_args(argv)
    print("running benchmarks (each in its own process)...", file=sys.stderr)
    results = {
        "import": _run("bench_import.py", args.quick),
        "stream": _run("bench_stream.py", args.quick),
        "create": _run("bench_create.py", args.quick),
        "parse": _run("bench_parse.py", args.quick),
        "ttfc": _run("bench_ttfc.py", args.quick),
        "scale": _run("bench_scale.py", args.quick),
    }
    table, values = figures(results)
    note = machine_note(machine())
    print(table)
    print()
    print(note)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "machine": machine()}, f)
    if args.chart != "-":
        try:
            from _chart import draw
        except ImportError:
            print("(no chart: pip install -e '.[bench]' for matplotlib)", file=sys.stderr)
        else:
            draw(values, note, args.chart)
            print(f"chart written to {args.chart}", file=sys.stderr)
    if args.details:
        import bench_create
        import bench_import
        import bench_parse
        import bench_scale
        import bench_stream
        import bench_ttfc

        for name, module in (
            ("import", bench_import),
            ("stream", bench_stream),
            ("create", bench_create),
            ("parse", bench_parse),
            ("ttfc", bench_ttfc),
            ("scale", bench_scale),
        ):
            print(f"\n### {name}\n")
            print(module.table(results[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
