"""The batch runner at scale: throughput, memory, rate limit and kill -9, on loopback.

Not a timed test: figures for the docs. A server process (``_server.py``, answers pre-built)
serves every request, so the client's own cost is what is measured. Each run is a process
of its own (``--child``), so its peak RSS is its own.

* ``throughput``: 100,000 lines through ``chatlib.batch.run`` (a file in, a file out,
  every line validated, flushed, resumable) and through a hand-written asyncio + semaphore +
  raw aiohttp loop doing the same file-to-file job (JSON in, POST, JSON out, one flushed
  line per answer, no checks, no retries, no resume), at the same concurrency; rounds
  interleaved, median lines/s.
* ``memory``: peak RSS of each at 10,000 and 100,000 lines.
* ``rate``: ``requests_per_minute`` held, as counted by a server that records arrivals.
* ``kill``: ``python -m chatlib.batch run`` killed with SIGKILL at random moments, then run
  to the end: every ``custom_id`` once in the output.

    python benchmarks/bench_batch.py [--json] [--lines 100000] [--small 10000] [--rounds 3]
        [--concurrency 64] [--rpm 30000] [--kills 5]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import (
    API_KEY,
    MESSAGES,
    MODEL,
    emit,
    fmt,
    machine,
    markdown_table,
    median,
    ratio,
    server_process,
)

HERE = Path(__file__).resolve().parent


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def write_input(path: Path, lines: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for i in range(lines):
            body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 50, "temperature": 0.7}
            line = {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
            out.write(json.dumps(line, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------- the contenders (children)


async def raw_loop(source: str, target: str, base_url: str, concurrency: int) -> None:
    """What users hand-write today: asyncio + a semaphore + raw aiohttp + a JSONL writer."""
    import aiohttp

    url = base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as session:
        with open(target, "ab") as out:

            async def one(line: dict[str, Any]) -> None:
                try:
                    async with session.post(url, json=line["body"], headers=headers) as response:
                        body = await response.json()
                        result = {
                            "id": f"batch_req_{line['custom_id']}",
                            "custom_id": line["custom_id"],
                            "response": {
                                "status_code": response.status,
                                "request_id": response.headers.get("x-request-id"),
                                "body": body,
                            },
                            "error": None,
                        }
                    out.write(json.dumps(result, separators=(",", ":")).encode() + b"\n")
                    out.flush()
                finally:
                    slots.release()

            with open(source, "rb") as lines:
                for raw in lines:
                    line = json.loads(raw)
                    await slots.acquire()
                    task = asyncio.create_task(one(line))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)


def child(
    kind: str, source: str, target: str, base_url: str, concurrency: int, rpm: float | None
) -> None:
    started = time.perf_counter()
    cpu = time.process_time()
    if kind == "raw":
        asyncio.run(raw_loop(source, target, base_url, concurrency))
    else:
        from chatlib import AsyncChat
        from chatlib.batch import run

        chat = AsyncChat(base_url=base_url, api_key=API_KEY)
        summary = run(
            source,
            target,
            chat=chat,
            concurrency=concurrency,
            requests_per_minute=rpm,
            progress=False,
        )
        assert summary.complete and summary.failed == 0, summary
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": time.process_time() - cpu,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def run_child(
    kind: str, source: Path, target: Path, base_url: str, concurrency: int, rpm: float | None = None
) -> dict[str, Any]:
    if target.exists():
        target.unlink()
    args = [
        sys.executable,
        __file__,
        "--child",
        kind,
        str(source),
        str(target),
        base_url,
        str(concurrency),
    ]
    if rpm:
        args.append(str(rpm))
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    lines = count_lines(target)
    result["lines_per_s"] = lines / result["seconds"]
    result["lines"] = lines
    return result


# ---------------------------------------------------------------- a server that counts


async def counting_server(times_path: str, delay: float = 0.0) -> None:
    """Answers like ``_server.py`` (after ``delay`` seconds, like a model that takes its
    time) and records when each request arrived (monotonic)."""
    from _common import completion_dict
    from aiohttp import web

    arrivals: list[float] = []
    answer = json.dumps(completion_dict()).encode()

    async def handle(request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    Path(times_path).write_text(json.dumps(arrivals))
    await runner.cleanup()


@contextlib.contextmanager
def counting_server_process(times: Path, delay: float = 0.0) -> Iterator[str]:
    """The counting server in a process of its own; yields its base URL."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--count-server", str(times), str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        if server.stdout is not None:
            server.stdout.close()


def latency_phase(
    work: Path, lines: int, delay: float, concurrency: int, rounds: int
) -> dict[str, Any]:
    """Both contenders against a server that takes ``delay`` seconds per answer (rounds
    interleaved; median lines/s)."""
    source = work / "latency.jsonl"
    write_input(source, lines)
    seen: dict[str, list[float]] = {"raw": [], "chatlib": []}
    for _ in range(rounds):
        for kind in ("raw", "chatlib"):
            with counting_server_process(work / f"latency-{kind}.json", delay) as base_url:
                run = run_child(kind, source, work / f"latency-{kind}.jsonl", base_url, concurrency)
            seen[kind].append(run["lines_per_s"])
    return {"delay": delay, "lines": lines, **{k: median(v) for k, v in seen.items()}}


def rate_phase(work: Path, rpm: float, lines: int) -> dict[str, Any]:
    times = work / "arrivals.json"
    write_input(work / "rate.jsonl", lines)
    with counting_server_process(times) as base_url:
        run_child("chatlib", work / "rate.jsonl", work / "rate-out.jsonl", base_url, 64, rpm)
    arrivals = json.loads(times.read_text())
    measured = 60 * (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    busiest = max(
        sum(1 for t in arrivals[i : i + 2 * int(rpm / 60) + 2] if t < s + 1.0)
        for i, s in enumerate(arrivals)
    )
    return {
        "rpm": rpm,
        "requests": len(arrivals),
        "measured_rpm": measured,
        "error": measured / rpm - 1,
        "busiest_second": busiest,
    }


def kill_phase(work: Path, base_url: str, lines: int, kills: int, seed: int = 7) -> dict[str, Any]:
    source, target = work / "kill.jsonl", work / "kill-out.jsonl"
    write_input(source, lines)
    if target.exists():
        target.unlink()
    command = [
        sys.executable,
        "-m",
        "chatlib.batch",
        "run",
        str(source),
        str(target),
        "--base-url",
        base_url,
        "--no-progress",
    ]
    env = {**os.environ, "OPENAI_API_KEY": API_KEY}
    rng = random.Random(seed)
    done_at_kill = []
    for _ in range(kills):
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.3, 1.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        done_at_kill.append(count_lines(target) if target.exists() else 0)
    final = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    with open(target, "rb") as output:
        counts = collections.Counter(json.loads(raw)["custom_id"] for raw in output)
    expected = {f"req-{i}" for i in range(lines)}
    return {
        "lines": lines,
        "kills": kills,
        "lines_at_each_kill": done_at_kill,
        "final_exit": final.returncode,
        "exactly_once": set(counts) == expected and max(counts.values()) == 1,
        "missing": len(expected - set(counts)),
        "repeated": sum(1 for v in counts.values() if v > 1),
    }


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rpm", type=float, default=30_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--latency-lines", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp, server_process() as url:
        work = Path(tmp)
        base_url = url + "/v1"
        big, small = work / "big.jsonl", work / "small.jsonl"
        write_input(big, args.lines)
        write_input(small, args.small)
        rounds: dict[str, list[dict[str, Any]]] = {"raw": [], "chatlib": []}
        for _ in range(args.rounds):
            for kind in ("raw", "chatlib"):
                rounds[kind].append(
                    run_child(kind, big, work / f"out-{kind}.jsonl", base_url, args.concurrency)
                )
        small_runs = {
            kind: run_child(kind, small, work / f"small-{kind}.jsonl", base_url, args.concurrency)
            for kind in ("raw", "chatlib")
        }
        rate = rate_phase(work, args.rpm, int(args.rpm / 60 * 8))
        latency = latency_phase(
            work, args.latency_lines, args.latency_ms / 1000, args.concurrency, args.rounds
        )
        kill = kill_phase(work, base_url, 20_000, args.kills)
    through = {k: median([r["lines_per_s"] for r in v]) for k, v in rounds.items()}
    cpu = {k: median([r["cpu"] / r["lines"] * 1e6 for r in v]) for k, v in rounds.items()}
    rss_big = {k: median([r["maxrss_mb"] for r in v]) for k, v in rounds.items()}
    rss_small = {k: small_runs[k]["maxrss_mb"] for k in small_runs}
    rows = [
        [
            f"throughput, {args.lines:,} lines, concurrency {args.concurrency}, lines/s",
            fmt(through["raw"], digits=0),
            fmt(through["chatlib"], digits=0),
            ratio(through["chatlib"], through["raw"]),
        ],
        [
            "client CPU per line, µs",
            fmt(cpu["raw"], digits=0),
            fmt(cpu["chatlib"], digits=0),
            ratio(cpu["chatlib"], cpu["raw"]),
        ],
        [
            f"peak RSS, {args.small:,} lines, MB",
            fmt(rss_small["raw"]),
            fmt(rss_small["chatlib"]),
            ratio(rss_small["chatlib"], rss_small["raw"]),
        ],
        [
            f"peak RSS, {args.lines:,} lines, MB",
            fmt(rss_big["raw"]),
            fmt(rss_big["chatlib"]),
            ratio(rss_big["chatlib"], rss_big["raw"]),
        ],
        [
            f"throughput, server answering in {args.latency_ms:g} ms, "
            f"{args.latency_lines:,} lines, lines/s",
            fmt(latency["raw"], digits=0),
            fmt(latency["chatlib"], digits=0),
            ratio(latency["chatlib"], latency["raw"]),
        ],
        [
            f"peak RSS growth {args.small:,} -> {args.lines:,} lines",
            ratio(rss_big["raw"], rss_small["raw"]),
            ratio(rss_big["chatlib"], rss_small["chatlib"]),
            "-",
        ],
    ]
    table = markdown_table(
        [
            "measure (median)",
            "hand-written aiohttp loop",
            "chatlib.batch.run",
            "chatlib ÷ hand-written",
        ],
        rows,
    )
    table += (
        f"\n\nrate limit: requests_per_minute={rate['rpm']:,.0f} over {rate['requests']:,} "
        "requests: "
        f"{rate['measured_rpm']:,.0f}/min as counted by the server ({rate['error']:+.2%}); "
        f"busiest second {rate['busiest_second']} requests (limit {rate['rpm'] / 60:,.0f}/s)."
        f"\nkill -9: {kill['lines']:,} lines, {kill['kills']} SIGKILLs at random moments "
        f"(lines done at each: {kill['lines_at_each_kill']}), then a run to the end (exit "
        f"{kill['final_exit']}): every line exactly once: {kill['exactly_once']} "
        f"(missing {kill['missing']}, repeated {kill['repeated']})."
    )
    result = {
        "benchmark": "batch",
        "machine": machine(),
        "throughput": through,
        "cpu_us_per_line": cpu,
        "rss_mb": {"small": rss_small, "big": rss_big},
        "rounds": rounds,
        "rate": rate,
        "latency": latency,
        "kill": kill,
    }
    emit(result, args.json, table)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, source, target, base_url, concurrency = sys.argv[2:7]
        rpm = float(sys.argv[7]) if len(sys.argv) > 7 else None
        child(kind, source, target, base_url, int(concurrency), rpm)
    elif len(sys.argv) > 1 and sys.argv[1] == "--count-server":
        asyncio.run(counting_server(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0))
    else:
        main()
