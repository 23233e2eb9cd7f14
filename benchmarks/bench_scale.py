"""Many streams in one process: concurrency, memory per open stream, threads.

Each contender runs in a fresh process per round (rounds interleaved), against the server
process of ``_server.py``. Three scenarios:

* ``concurrent``: 256 ``AsyncChat`` streams of 200 chunks each, all started at once
  (``asyncio.gather``), written at once by the server: wall and CPU time until all are read,
  against raw ``aiohttp`` and ``openai.AsyncOpenAI`` (each with its default pool).
* ``async10k``: 10,000 concurrent ``AsyncChat`` streams. The file-descriptor limit is raised
  to its hard limit and the pool is bounded explicitly (``AsyncChat(pool_maxsize=10_000)``,
  raw: ``TCPConnector(limit=10_000)``, openai: ``max_connections=10_000``). The server holds
  every stream after its first chunk until all 10,000 requests have arrived (a "gate"), so
  at that moment every stream is open at once: the process's resident memory then, minus
  what it was before the first stream (imports and one warm-up stream done), divided by
  10,000, is the **RSS per open stream**. Every stream must then be read to its end.
* ``sync1k``: 1,000 ``SyncChat`` streams from a thread pool of 1,000 threads, all open at
  once (a gate of 1,000), with the pool sized for them (``SyncChat(pool_maxsize=1000)``;
  raw: ``HTTPAdapter(pool_maxsize=1000)``; openai's default allows 1,000 connections). Every
  stream must complete, and urllib3's "Connection pool is full" warnings are counted: the
  row with chatlib's default pool (10) shows what an undersized pool costs.

    python benchmarks/bench_scale.py [--json] [--rounds 3] [--streams 10000] [--threads 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import subprocess
import sys
import time
import uuid
from typing import Any

from _common import (
    API_KEY,
    HERE,
    MESSAGES,
    MODEL,
    emit,
    expected_text,
    fmt,
    have_openai,
    machine,
    markdown_table,
    median,
    ratio,
    server_process,
    split_events,
)

_REQUEST_HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
_REQUEST_BODY = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}).encode()
_PAGE = os.sysconf("SC_PAGE_SIZE")

CONCURRENT = ("raw aiohttp", "chatlib AsyncChat", "openai AsyncOpenAI")
ASYNC10K = ("raw aiohttp", "chatlib AsyncChat", "openai AsyncOpenAI")
SYNC1K = ("raw requests", "chatlib SyncChat", "chatlib SyncChat, default pool", "openai OpenAI")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _texts(objs: list[dict[str, Any]]) -> str:
    return "".join((o["choices"][0]["delta"].get("content") or "") for o in objs if o["choices"])


# ---------------------------------------------------------------- async clients


class _AsyncClient:
    """One contender: `stream(url, first)` reads one stream, awaiting `first()` once its
    first chunk is in hand, and returns its text."""

    def __init__(self, name: str, limit: int | None) -> None:
        self.name = name
        self.limit = limit
        self.client: Any = None

    async def open(self) -> None:
        if self.name == "raw aiohttp":
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.limit or 100)
            self.client = aiohttp.ClientSession(connector=connector)
        elif self.name == "chatlib AsyncChat":
            import chatlib

            kwargs = {} if self.limit is None else {"pool_maxsize": self.limit}
            self.client = chatlib.AsyncChat(api_key=API_KEY, base_url="http://x/v1", **kwargs)
        else:
            import openai

            http_client = None
            if self.limit is not None:
                import httpx2

                http_client = openai.DefaultAsyncHttpx2Client(
                    limits=httpx2.Limits(
                        max_connections=self.limit, max_keepalive_connections=self.limit
                    )
                )
            # Its default connect timeout (5 s) is too short for 10,000 connections opened
            # at once on this machine: give it as long as it takes, as the others have.
            extra: dict[str, Any] = {} if self.limit is None else {"timeout": 600.0}
            self.client = openai.AsyncOpenAI(
                api_key=API_KEY,
                base_url="http://x/v1",
                max_retries=0,
                http_client=http_client,
                **extra,
            )

    async def stream(self, url: str, first: Any) -> str:
        if self.name == "raw aiohttp":
            objs: list[dict[str, Any]] = []
            buf = b""
            seen = False
            async with self.client.post(
                url + "/chat/completions", data=_REQUEST_BODY, headers=_REQUEST_HEADERS
            ) as response:
                async for piece in response.content.iter_any():
                    buf = split_events(buf + piece, objs)
                    if objs and not seen:
                        seen = True
                        await first()
            return _texts(objs)
        texts: list[str] = []
        if self.name == "chatlib AsyncChat":
            chat = self.client.with_options(base_url=url)
            async with chat.stream(model=MODEL, messages=MESSAGES) as stream:
                async for chunk in stream:
                    if not texts:
                        await first()
                    texts.append(chunk.text)
            return "".join(texts)
        client = self.client.with_options(base_url=url)
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        async with stream:
            async for chunk in stream:
                if not texts:
                    await first()
                texts.append((chunk.choices[0].delta.content or "") if chunk.choices else "")
        return "".join(texts)

    async def close(self) -> None:
        if self.name == "chatlib AsyncChat":
            await self.client.aclose()
        else:
            await self.client.close()


def run_async(name: str, origin: str, streams: int, chunks: int, gated: bool) -> dict[str, Any]:
    """`streams` concurrent streams of `chunks` chunks; times, memory, completions."""
    _raise_fd_limit()
    limit = streams if gated else None

    async def main() -> dict[str, Any]:
        client = _AsyncClient(name, limit)
        await client.open()

        async def no_wait() -> None:
            pass

        await client.stream(f"{origin}/burst/{chunks}/v1", no_wait)  # warm-up
        gc.collect()
        base = _rss()
        gate = uuid.uuid4().hex
        url = (
            f"{origin}/gate/{gate}/{streams}/{chunks}/v1"
            if gated
            else f"{origin}/burst/{chunks}/v1"
        )
        opened = 0
        at_open: list[int] = []
        all_open = asyncio.Event()

        async def first() -> None:
            # Gated: each stream waits, its first chunk in hand, until every stream has
            # its own, so that all of them are open when the memory is read.
            nonlocal opened
            opened += 1
            if opened == streams:
                at_open.append(_rss())
                all_open.set()
            if gated:
                await all_open.wait()

        async def one() -> str:
            got_first = False

            async def mine() -> None:
                nonlocal got_first
                got_first = True
                await first()

            try:
                return await client.stream(url, mine)
            except BaseException:
                if not got_first:  # failed before its first chunk: nobody waits for it
                    nonlocal opened
                    opened += 1
                    if opened == streams:
                        all_open.set()
                raise

        cpu0, wall0 = time.process_time(), time.perf_counter()
        texts = await asyncio.gather(*(one() for _ in range(streams)), return_exceptions=True)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        await client.close()
        expected = expected_text(chunks)
        ok = sum(1 for t in texts if t == expected)
        failures = [repr(t)[:200] for t in texts if isinstance(t, BaseException)]
        errors = failures[:3]
        return {
            "wall_s": wall,
            "cpu_s": cpu,
            "completed": ok,
            "errors": errors,
            "error_count": len(failures),
            "rss_base": base,
            "rss_all_open": at_open[0] if at_open else None,
            "peak_rss": _peak_rss(),
        }

    return asyncio.run(main())


# ---------------------------------------------------------------- sync clients from threads


class _PoolWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "pool is full" in record.getMessage():
            self.count += 1


def run_threads(name: str, origin: str, threads: int, chunks: int) -> dict[str, Any]:
    """`threads` concurrent streams, one per thread, all open at once (a gate)."""
    from concurrent.futures import ThreadPoolExecutor

    _raise_fd_limit()
    warnings = _PoolWarnings()
    logging.getLogger("urllib3").addHandler(warnings)
    holder: dict[str, Any] = {}
    if name == "raw requests":
        import requests
        import requests.adapters

        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=threads)
        session.mount("http://", adapter)

        def one(url: str) -> str:
            objs: list[dict[str, Any]] = []
            buf = b""
            with session.post(
                url + "/chat/completions", data=_REQUEST_BODY, headers=_REQUEST_HEADERS, stream=True
            ) as response:
                for piece in response.iter_content(chunk_size=None):
                    buf = split_events(buf + piece, objs)
            return _texts(objs)

        close = session.close
    elif name.startswith("chatlib"):
        import chatlib

        kwargs = {} if "default pool" in name else {"pool_maxsize": threads}
        holder["chat"] = chatlib.SyncChat(api_key=API_KEY, base_url=origin + "/v1", **kwargs)

        def one(url: str) -> str:
            chat = holder["chat"].with_options(base_url=url)
            with chat.stream(model=MODEL, messages=MESSAGES) as stream:
                return "".join(chunk.text for chunk in stream)

        close = holder["chat"].close
    else:
        import openai

        client = openai.OpenAI(api_key=API_KEY, base_url=origin + "/v1", max_retries=0)

        def one(url: str) -> str:
            stream = client.with_options(base_url=url).chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            )
            with stream:
                return "".join(
                    (c.choices[0].delta.content or "") if c.choices else "" for c in stream
                )

        close = client.close
    one(f"{origin}/burst/{chunks}/v1")  # warm-up
    gc.collect()
    base = _rss()
    url = f"{origin}/gate/{uuid.uuid4().hex}/{threads}/{chunks}/v1"
    expected = expected_text(chunks)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(one, url) for _ in range(threads)]
        ok = 0
        for future in futures:
            try:
                ok += future.result() == expected
            except Exception as exc:
                errors.append(repr(exc)[:200])
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    close()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "completed": ok,
        "errors": errors[:3],
        "error_count": len(errors),
        "pool_warnings": warnings.count,
        "rss_base": base,
        "peak_rss": _peak_rss(),
    }


# ---------------------------------------------------------------- the parent


def _spawn(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / "bench_scale.py"), "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        raise RuntimeError(f"{args} failed")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _names(names: tuple[str, ...]) -> list[str]:
    return [n for n in names if have_openai() or not n.startswith("openai")]


def bench(rounds: int, streams: int, threads: int, scale_rounds: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with server_process() as origin:
        plans = [
            ("concurrent", _names(CONCURRENT), rounds, ("async", "256", "200", "0")),
            ("async10k", _names(ASYNC10K), scale_rounds, ("async", str(streams), "10", "1")),
            ("sync1k", _names(SYNC1K), scale_rounds, ("threads", str(threads), "20")),
        ]
        for scenario, names, n_rounds, args in plans:
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            for _ in range(n_rounds):
                for name in names:
                    samples[name].append(_spawn(args[0], name, origin, *args[1:]))
            count = int(args[1])
            for name in names:
                runs = samples[name]
                row: dict[str, Any] = {
                    "scenario": scenario,
                    "name": name,
                    "streams": count,
                    "rounds": len(runs),
                    "wall_s": median([r["wall_s"] for r in runs]),
                    "cpu_s": median([r["cpu_s"] for r in runs]),
                    "completed": min(r["completed"] for r in runs),
                    "errors": sum(r["error_count"] for r in runs),
                    "error_samples": [e for r in runs for e in r["errors"]][:3],
                    "peak_rss_per_stream": median(
                        [(r["peak_rss"] - r["rss_base"]) / count for r in runs]
                    ),
                }
                if scenario == "async10k":
                    # None when some stream never got its first chunk (it failed instead).
                    opened = [r for r in runs if r["rss_all_open"] is not None]
                    row["rss_per_open_stream"] = (
                        median([(r["rss_all_open"] - r["rss_base"]) / count for r in opened])
                        if len(opened) == len(runs)
                        else None
                    )
                if scenario == "sync1k":
                    row["pool_warnings"] = max(r["pool_warnings"] for r in runs)
                rows.append(row)
    return {"rows": rows, "rounds": rounds, "scale_rounds": scale_rounds}


def table(results: dict[str, Any]) -> str:
    base: dict[str, dict[str, Any]] = {}
    for r in results["rows"]:
        if r["name"].startswith("raw"):
            base[r["scenario"]] = r
    out = []
    for r in results["rows"]:
        b = base[r["scenario"]]
        per_open = r.get("rss_per_open_stream")
        out.append(
            [
                f"{r['scenario']} ({r['streams']:,} streams)",
                r["name"],
                f"{r['completed']:,}/{r['streams']:,}",
                str(r["errors"])
                + (f" ({r['pool_warnings']} pool full)" if "pool_warnings" in r else ""),
                fmt(r["wall_s"] * 1e3, digits=0),
                ratio(r["wall_s"], b["wall_s"]),
                fmt(r["cpu_s"] * 1e3, digits=0),
                ratio(r["cpu_s"], b["cpu_s"]),
                fmt(per_open / 1024, digits=1) if per_open is not None else "-",
                ratio(per_open, b.get("rss_per_open_stream")) if per_open is not None else "-",
                fmt(r["peak_rss_per_stream"] / 1024, digits=1),
            ]
        )
    header = [
        "scenario",
        "client",
        "completed",
        "errors",
        "wall ms",
        "wall vs raw",
        "CPU ms",
        "CPU vs raw",
        "KiB/open stream",
        "vs raw",
        "peak KiB/stream",
    ]
    return markdown_table(header, out)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, name, origin, count, chunks = sys.argv[2:7]
        if kind == "async":
            result = run_async(name, origin, int(count), int(chunks), sys.argv[7] == "1")
        else:
            result = run_threads(name, origin, int(count), int(chunks))
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (for run_all.py)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 256-stream run")
    parser.add_argument("--scale-rounds", type=int, default=1, help="rounds of the big runs")
    parser.add_argument("--streams", type=int, default=10000, help="concurrent async streams")
    parser.add_argument("--threads", type=int, default=1000, help="concurrent sync streams")
    args = parser.parse_args(argv)
    results = bench(args.rounds, args.streams, args.threads, args.scale_rounds)
    results["machine"] = machine()
    emit(results, args.json, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
