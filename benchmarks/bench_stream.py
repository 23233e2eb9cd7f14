"""Streaming: client CPU and wall time per chunk, chatlib vs raw HTTP vs the official SDK.

A server process (``_server.py``) streams pre-built OpenAI-shaped chunks over loopback. This
process is the client; ``time.process_time()`` measures its CPU only. Every stream is
opened, read to the end (each chunk's text is taken, and checked) and closed; one client
per contender is reused across streams, as an application would.

Two shapes of stream:

* ``burst``: all chunks written at once. The client reads big buffers; this is the pure
  per-chunk parsing cost, the floor.
* ``paced``: one chunk per write with a short pause, so each read brings one chunk, the way
  tokens arrive from a model. Adds the per-read cost of each HTTP stack.

Contenders: ``raw requests`` (``iter_content`` + a hand-written SSE split + ``json.loads``,
no models: the floor), ``SyncChat.stream``, ``openai.OpenAI`` streaming; and the same three
on asyncio (``aiohttp`` + ``iter_any``, ``AsyncChat.stream``, ``openai.AsyncOpenAI``).
The peer ``openai`` is skipped when it is not installed.

    python benchmarks/bench_stream.py [--json] [--rounds 9] [--chunks 2000] [--paced 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import (
    API_KEY,
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
    spread,
)

_REQUEST_HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
_REQUEST_BODY = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": True}).encode()


def _texts(objs: list[dict[str, Any]]) -> str:
    return "".join(
        (o["choices"][0]["delta"].get("content") or "") if o["choices"] else "" for o in objs
    )


# ---------------------------------------------------------------- sync contenders


class RawRequests:
    name, family = "raw requests", "sync"

    def __init__(self, url: str) -> None:
        import requests

        self.session = requests.Session()
        self.url = url + "/chat/completions"

    def run(self) -> str:
        objs: list[dict[str, Any]] = []
        buf = b""
        with self.session.post(
            self.url, data=_REQUEST_BODY, headers=_REQUEST_HEADERS, stream=True
        ) as response:
            for piece in response.iter_content(chunk_size=None):
                buf = split_events(buf + piece, objs)
        return _texts(objs)

    def close(self) -> None:
        self.session.close()


class ChatlibSync:
    name, family = "chatlib SyncChat", "sync"

    def __init__(self, url: str) -> None:
        import chatlib

        self.chat = chatlib.SyncChat(base_url=url, api_key=API_KEY)

    def run(self) -> str:
        texts = []
        with self.chat.stream(model=MODEL, messages=MESSAGES) as stream:
            for chunk in stream:
                texts.append(chunk.text)
        return "".join(texts)

    def close(self) -> None:
        self.chat.close()


class OpenAISync:
    name, family = "openai OpenAI", "sync"

    def __init__(self, url: str) -> None:
        import openai

        self.client = openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0)

    def run(self) -> str:
        texts = []
        stream = self.client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        with stream:
            for chunk in stream:
                texts.append((chunk.choices[0].delta.content or "") if chunk.choices else "")
        return "".join(texts)

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------- async contenders


class RawAiohttp:
    name, family = "raw aiohttp", "async"

    def __init__(self, url: str) -> None:
        self.url = url + "/chat/completions"
        self.session: Any = None

    async def run(self) -> str:
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession()
        objs: list[dict[str, Any]] = []
        buf = b""
        async with self.session.post(
            self.url, data=_REQUEST_BODY, headers=_REQUEST_HEADERS
        ) as response:
            async for piece in response.content.iter_any():
                buf = split_events(buf + piece, objs)
        return _texts(objs)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


class ChatlibAsync:
    name, family = "chatlib AsyncChat", "async"

    def __init__(self, url: str) -> None:
        import chatlib

        self.chat = chatlib.AsyncChat(base_url=url, api_key=API_KEY)

    async def run(self) -> str:
        texts = []
        async with self.chat.stream(model=MODEL, messages=MESSAGES) as stream:
            async for chunk in stream:
                texts.append(chunk.text)
        return "".join(texts)

    async def close(self) -> None:
        await self.chat.aclose()


class OpenAIAsync:
    name, family = "openai AsyncOpenAI", "async"

    def __init__(self, url: str) -> None:
        import openai

        self.client = openai.AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0)

    async def run(self) -> str:
        texts = []
        stream = await self.client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        )
        async with stream:
            async for chunk in stream:
                texts.append((chunk.choices[0].delta.content or "") if chunk.choices else "")
        return "".join(texts)

    async def close(self) -> None:
        await self.client.close()


def contenders() -> list[type]:
    out: list[type] = [RawRequests, ChatlibSync]
    if have_openai():
        out.append(OpenAISync)
    out += [RawAiohttp, ChatlibAsync]
    if have_openai():
        out.append(OpenAIAsync)
    return out


# ---------------------------------------------------------------- measuring


def _measure(call: Callable[[], str], expected: str) -> tuple[float, float]:
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    text = call()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if text != expected:
        raise AssertionError(f"incomplete stream: {len(text)} of {len(expected)} characters")
    return cpu, wall


def bench(rounds: int, shapes: dict[str, int]) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    results: dict[str, Any] = {"shapes": shapes, "rounds": rounds, "rows": []}
    try:
        with server_process() as origin:
            for shape, n in shapes.items():
                url = f"{origin}/{shape}/{n}/v1"
                expected = expected_text(n)
                clients = [cls(url) for cls in contenders()]
                samples: dict[str, list[tuple[float, float]]] = {c.name: [] for c in clients}

                def once(client: Any, expected: str = expected) -> tuple[float, float]:
                    if client.family == "sync":
                        return _measure(client.run, expected)
                    return _measure(lambda: loop.run_until_complete(client.run()), expected)

                for client in clients:  # warm-up: imports, connection, first-use caches
                    once(client)
                for _ in range(rounds):  # interleaved, so drift hits every contender alike
                    for client in clients:
                        samples[client.name].append(once(client))
                for client in clients:
                    if client.family == "sync":
                        client.close()
                    else:
                        loop.run_until_complete(client.close())
                for client in clients:
                    cpu = [s[0] for s in samples[client.name]]
                    wall = [s[1] for s in samples[client.name]]
                    results["rows"].append(
                        {
                            "shape": shape,
                            "chunks": n,
                            "family": client.family,
                            "name": client.name,
                            "cpu_us_per_chunk": median(cpu) / n * 1e6,
                            "wall_us_per_chunk": median(wall) / n * 1e6,
                            "cpu_spread": spread(cpu),
                            "cpu_samples_ms": [round(c * 1e3, 3) for c in cpu],
                        }
                    )
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return results


def table(results: dict[str, Any]) -> str:
    rows = []
    base: dict[tuple[str, str], dict[str, Any]] = {}
    for row in results["rows"]:
        if row["name"].startswith("raw"):
            base[(row["shape"], row["family"])] = row
    for row in results["rows"]:
        b = base[(row["shape"], row["family"])]
        rows.append(
            [
                f"{row['shape']} ({row['chunks']} chunks)",
                row["name"],
                fmt(row["cpu_us_per_chunk"]),
                ratio(row["cpu_us_per_chunk"], b["cpu_us_per_chunk"]),
                fmt(row["wall_us_per_chunk"]),
                ratio(row["wall_us_per_chunk"], b["wall_us_per_chunk"]),
                f"{row['cpu_spread'] * 100:.0f}%",
            ]
        )
    header = [
        "stream",
        "client",
        "CPU µs/chunk",
        "CPU vs raw",
        "wall µs/chunk",
        "wall vs raw",
        "CPU IQR",
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (for run_all.py)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--chunks", type=int, default=2000, help="chunks per burst stream")
    parser.add_argument("--paced", type=int, default=500, help="chunks per paced stream (0: off)")
    args = parser.parse_args(argv)
    shapes = {"burst": args.chunks}
    if args.paced:
        shapes["paced"] = args.paced
    results = bench(args.rounds, shapes)
    results["machine"] = machine()
    emit(results, args.json, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
