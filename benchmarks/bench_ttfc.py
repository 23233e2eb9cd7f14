"""Time to first chunk: from the call to the first chunk in hand, chatlib vs raw vs openai.

A server process (``_server.py``) writes each stream at once (``burst``). The client is a
fresh process per contender and round (rounds interleaved, so drift hits every contender
alike); in it one client is made, warmed up with two whole streams, then timed over
``--streams`` streams: wall time from the call until the first chunk is in hand (the rest
of each stream is read afterwards, untimed, so the connection is reused; ``openai`` closes
its stream after the first chunk instead, as reading 20,000 chunks at ~90 µs each would
make the run minutes long, so its next stream opens a new connection, ~0.1 ms on
loopback). Its median is the round's figure; the figure is the median over rounds.

Two shapes:

* a 20-chunk stream: an ordinary short answer, mostly the request's round trip;
* a 20,000-chunk burst: a fast server (vLLM, llama.cpp on a GPU) whose chunks arrive faster
  than the client reads them, so one read holds hundreds of chunks. A client that parses a
  whole read before handing out its first chunk makes the user wait for all of them.

Contenders: ``raw requests`` / ``raw aiohttp`` (the floor: the HTTP library, the read
buffer split at the first blank line, one ``json.loads``), ``SyncChat.stream`` /
``AsyncChat.stream``, ``openai.OpenAI`` / ``openai.AsyncOpenAI`` (skipped when not
installed).

    python benchmarks/bench_ttfc.py [--json] [--rounds 5] [--streams 15] [--burst 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from _common import (
    API_KEY,
    HERE,
    MESSAGES,
    MODEL,
    emit,
    fmt,
    have_openai,
    machine,
    markdown_table,
    median,
    ratio,
    server_process,
    spread,
)

_REQUEST_HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
_REQUEST_BODY = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}).encode()

SYNC = ("raw requests", "chatlib SyncChat", "openai OpenAI")
ASYNC = ("raw aiohttp", "chatlib AsyncChat", "openai AsyncOpenAI")


def _first_event(pieces: Iterator[bytes]) -> dict[str, Any]:
    """The floor's first chunk: read until the first blank line, `json.loads` that event."""
    buf = b""
    for piece in pieces:
        buf += piece
        end = buf.find(b"\n\n")
        if end >= 0:
            first: dict[str, Any] = json.loads(buf[6:end])  # "data: " ... "\n\n"
            return first
    raise AssertionError("no event in the stream")


# ---------------------------------------------------------------- one contender, in a child


def _sync_runner(name: str, url: str) -> tuple[Callable[[], float], Callable[[], None]]:
    """A function that runs one stream and returns its time to first chunk, and a closer."""
    if name == "raw requests":
        import requests

        session = requests.Session()

        def run() -> float:
            t0 = time.perf_counter()
            with session.post(
                url + "/chat/completions", data=_REQUEST_BODY, headers=_REQUEST_HEADERS, stream=True
            ) as response:
                pieces = response.iter_content(chunk_size=None)
                first = _first_event(pieces)
                ttfc = time.perf_counter() - t0
                assert first["choices"]
                for _ in pieces:
                    pass
            return ttfc

        return run, session.close
    if name == "chatlib SyncChat":
        import chatlib

        chat = chatlib.SyncChat(base_url=url, api_key=API_KEY)

        def run() -> float:
            t0 = time.perf_counter()
            with chat.stream(model=MODEL, messages=MESSAGES) as stream:
                first = next(stream)
                ttfc = time.perf_counter() - t0
                assert first.choices
                for _ in stream:
                    pass
            return ttfc

        return run, chat.close
    import openai

    client = openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0)
    drain = "/burst/20/" in url  # a long burst is closed after its first chunk (see above)

    def run() -> float:
        t0 = time.perf_counter()
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with stream:
            it = iter(stream)
            first = next(it)
            ttfc = time.perf_counter() - t0
            assert first.choices
            if drain:
                for _ in it:
                    pass
        return ttfc

    return run, client.close


def _async_runner(name: str, url: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    if name == "raw aiohttp":
        import aiohttp

        state: dict[str, Any] = {}

        async def run() -> float:
            if "session" not in state:
                state["session"] = aiohttp.ClientSession()
            t0 = time.perf_counter()
            async with state["session"].post(
                url + "/chat/completions", data=_REQUEST_BODY, headers=_REQUEST_HEADERS
            ) as response:
                buf = b""
                pieces = response.content.iter_any()
                async for piece in pieces:
                    buf += piece
                    end = buf.find(b"\n\n")
                    if end >= 0:
                        first = json.loads(buf[6:end])
                        break
                ttfc = time.perf_counter() - t0
                assert first["choices"]
                async for _ in pieces:
                    pass
            return ttfc

        async def close() -> None:
            if "session" in state:
                await state["session"].close()

        return run, close
    if name == "chatlib AsyncChat":
        import chatlib

        chat = chatlib.AsyncChat(base_url=url, api_key=API_KEY)

        async def run() -> float:
            t0 = time.perf_counter()
            async with chat.stream(model=MODEL, messages=MESSAGES) as stream:
                first = await anext(stream)
                ttfc = time.perf_counter() - t0
                assert first.choices
                async for _ in stream:
                    pass
            return ttfc

        return run, chat.aclose
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0)
    drain = "/burst/20/" in url

    async def run() -> float:
        t0 = time.perf_counter()
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        async with stream:
            it = stream.__aiter__()
            first = await anext(it)
            ttfc = time.perf_counter() - t0
            assert first.choices
            if drain:
                async for _ in it:
                    pass
        return ttfc

    return run, client.close


def child(name: str, url: str, streams: int) -> list[float]:
    """Warm up, then time `streams` streams; their times to first chunk, in seconds."""
    if name in SYNC:
        run, close = _sync_runner(name, url)
        for _ in range(2):
            run()
        out = [run() for _ in range(streams)]
        close()
        return out
    arun, aclose = _async_runner(name, url)

    async def main() -> list[float]:
        for _ in range(2):
            await arun()
        times = [await arun() for _ in range(streams)]
        await aclose()
        return times

    return asyncio.run(main())


# ---------------------------------------------------------------- the parent


def _spawn(name: str, url: str, streams: int) -> list[float]:
    out = subprocess.run(
        [sys.executable, str(HERE / "bench_ttfc.py"), "--child", name, url, str(streams)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise RuntimeError(f"{name} failed")
    times: list[float] = json.loads(out.stdout.strip().splitlines()[-1])
    return times


def bench(rounds: int, streams: int, shapes: dict[str, int]) -> dict[str, Any]:
    names = [n for n in SYNC + ASYNC if have_openai() or not n.startswith("openai")]
    rows: list[dict[str, Any]] = []
    with server_process() as origin:
        for shape, n in shapes.items():
            url = f"{origin}/burst/{n}/v1"
            samples: dict[str, list[float]] = {name: [] for name in names}
            for _ in range(rounds):
                for name in names:
                    samples[name].append(statistics.median(_spawn(name, url, streams)))
            for name in names:
                rows.append(
                    {
                        "shape": shape,
                        "chunks": n,
                        "family": "sync" if name in SYNC else "async",
                        "name": name,
                        "ttfc_us": median(samples[name]) * 1e6,
                        "spread": spread(samples[name]),
                    }
                )
    return {"rows": rows, "rounds": rounds, "streams": streams}


def table(results: dict[str, Any]) -> str:
    base = {
        (r["shape"], r["family"]): r["ttfc_us"]
        for r in results["rows"]
        if r["name"].startswith("raw")
    }
    rows = [
        [
            f"{r['shape']} ({r['chunks']:,} chunks)",
            r["name"],
            fmt(r["ttfc_us"], digits=0),
            ratio(r["ttfc_us"], base[(r["shape"], r["family"])]),
            f"{r['spread'] * 100:.0f}%",
        ]
        for r in results["rows"]
    ]
    return markdown_table(["stream", "client", "TTFC µs", "vs raw", "IQR"], rows)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        name, url, streams = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(child(name, url, streams)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (for run_all.py)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=15, help="timed streams per process")
    parser.add_argument("--burst", type=int, default=20000, help="chunks of the big burst")
    args = parser.parse_args(argv)
    results = bench(args.rounds, args.streams, {"short": 20, "burst": args.burst})
    results["machine"] = machine()
    emit(results, args.json, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
