"""Non-streaming ``create()``: latency and throughput on loopback, chatlib vs raw vs openai.

A server process (``_server.py``) answers every request with the same pre-built JSON
completion. One client per contender is reused (keep-alive). Measured in this (client)
process, per call:

* ``sequential``: calls one after another, each timed (wall and CPU); median per call.
* ``concurrent``: batches of 50 calls with ``asyncio.gather`` (async clients only), each
  batch timed; median batch time divided by 50, i.e. the inverse of throughput.
* ``no network``: the client's own cost per call, the answer coming from memory (chatlib:
  a transport object answering in memory; openai: ``httpx2.MockTransport``, so its HTTP
  client's request/response handling still counts; floor: ``json.dumps`` + ``json.loads``).

Contenders: ``raw requests`` / ``raw aiohttp`` (POST the JSON, ``json.loads`` the answer, no
models: the floor; plus ``requests`` with ``trust_env=False``, which skips the proxy
look-up in the environment that ``requests`` repeats on every request),
``SyncChat.create`` / ``AsyncChat.create``, and ``openai.OpenAI`` / ``openai.AsyncOpenAI``
(skipped when not installed). Rounds are interleaved so drift hits
every contender alike; figures are medians over all calls (or batches) of all rounds.

    python benchmarks/bench_create.py [--json] [--rounds 7] [--calls 100] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from _common import (
    API_KEY,
    MESSAGES,
    MODEL,
    completion_dict,
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

_EXPECTED = "Packets loop back home"
_PAYLOAD = {"model": MODEL, "messages": MESSAGES, "max_tokens": 50, "temperature": 0.7}
_KWARGS: dict[str, Any] = {"max_tokens": 50, "temperature": 0.7}


def _check(text: str | None) -> None:
    if not text or not text.startswith(_EXPECTED):
        raise AssertionError(f"unexpected answer: {text!r}")


class RawRequests:
    name, family = "raw requests", "sync"

    def __init__(self, url: str) -> None:
        import requests

        self.session = requests.Session()
        self.url = url + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {API_KEY}"}

    def call(self) -> None:
        response = self.session.post(self.url, json=_PAYLOAD, headers=self.headers)
        response.raise_for_status()
        _check(json.loads(response.content)["choices"][0]["message"]["content"])

    def close(self) -> None:
        self.session.close()


class RawRequestsNoEnv(RawRequests):
    """``requests`` without re-reading proxy settings from the environment on every request
    (what chatlib's transport does, reading them once): the stricter sync floor."""

    name = "raw requests, trust_env=False"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.session.trust_env = False


class ChatlibSync:
    name, family = "chatlib SyncChat", "sync"

    def __init__(self, url: str) -> None:
        import chatlib

        self.chat = chatlib.SyncChat(base_url=url, api_key=API_KEY)

    def call(self) -> None:
        resp = self.chat.create(model=MODEL, messages=MESSAGES, **_KWARGS)
        _check(resp.choices[0].message.content)

    def close(self) -> None:
        self.chat.close()


class OpenAISync:
    name, family = "openai OpenAI", "sync"

    def __init__(self, url: str) -> None:
        import openai

        self.client = openai.OpenAI(base_url=url, api_key=API_KEY, max_retries=0)

    def call(self) -> None:
        resp = self.client.chat.completions.create(model=MODEL, messages=MESSAGES, **_KWARGS)
        _check(resp.choices[0].message.content)

    def close(self) -> None:
        self.client.close()


class RawAiohttp:
    name, family = "raw aiohttp", "async"

    def __init__(self, url: str) -> None:
        self.url = url + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {API_KEY}"}
        self.session: Any = None

    async def call(self) -> None:
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession()
        async with self.session.post(self.url, json=_PAYLOAD, headers=self.headers) as response:
            response.raise_for_status()
            body = await response.read()
        _check(json.loads(body)["choices"][0]["message"]["content"])

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


class ChatlibAsync:
    name, family = "chatlib AsyncChat", "async"

    def __init__(self, url: str) -> None:
        import chatlib

        self.chat = chatlib.AsyncChat(base_url=url, api_key=API_KEY)

    async def call(self) -> None:
        resp = await self.chat.create(model=MODEL, messages=MESSAGES, **_KWARGS)
        _check(resp.choices[0].message.content)

    async def close(self) -> None:
        await self.chat.aclose()


class OpenAIAsync:
    name, family = "openai AsyncOpenAI", "async"

    def __init__(self, url: str) -> None:
        import openai

        self.client = openai.AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0)

    async def call(self) -> None:
        resp = await self.client.chat.completions.create(model=MODEL, messages=MESSAGES, **_KWARGS)
        _check(resp.choices[0].message.content)

    async def close(self) -> None:
        await self.client.close()


# ---------------------------------------------------------------- no network: client cost alone

_BODY = json.dumps(completion_dict(), separators=(",", ":")).encode()
_ANSWER_HEADERS = {"content-type": "application/json", "x-request-id": "req_bench"}


class _MemoryResponse:
    status_code = 200
    headers = _ANSWER_HEADERS

    def iter_bytes(self) -> Iterator[bytes]:
        yield _BODY

    def close(self) -> None:
        pass


class _MemoryTransport:
    """chatlib's transport protocol answered from memory: what is left is chatlib's own work."""

    def send(self, request: Any) -> _MemoryResponse:
        return _MemoryResponse()

    def close(self) -> None:
        pass


class RawMemory:
    name, family = "json.dumps + json.loads", "memory"

    def __init__(self, url: str) -> None:
        pass

    def call(self) -> None:
        json.dumps(_PAYLOAD).encode()
        _check(json.loads(_BODY)["choices"][0]["message"]["content"])

    def close(self) -> None:
        pass


class ChatlibMemory(ChatlibSync):
    name, family = "chatlib SyncChat", "memory"

    def __init__(self, url: str) -> None:
        import chatlib

        self.chat = chatlib.SyncChat(base_url=url, api_key=API_KEY, transport=_MemoryTransport())


class OpenAIMemory(OpenAISync):
    name, family = "openai OpenAI (httpx2.MockTransport)", "memory"

    def __init__(self, url: str) -> None:
        import httpx2
        import openai

        def handler(request: Any) -> Any:
            request.read()
            return httpx2.Response(200, headers=_ANSWER_HEADERS, content=_BODY)

        self.client = openai.OpenAI(
            base_url=url,
            api_key=API_KEY,
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        )


def contenders() -> list[type]:
    out: list[type] = [RawRequests, RawRequestsNoEnv, ChatlibSync]
    if have_openai():
        out.append(OpenAISync)
    out += [RawAiohttp, ChatlibAsync]
    if have_openai():
        out.append(OpenAIAsync)
    out += [RawMemory, ChatlibMemory]
    if have_openai():
        out.append(OpenAIMemory)
    return out


def bench(rounds: int, calls: int, batch: int, batches: int) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    rows: list[dict[str, Any]] = []
    try:
        with server_process() as origin:
            url = f"{origin}/v1"
            clients = [cls(url) for cls in contenders()]

            def sequential(client: Any) -> list[tuple[float, float]]:
                """Each call timed on its own: the median shrugs off a stray stall."""
                out = []
                gc.collect()
                for _ in range(calls):
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    if client.family == "async":
                        loop.run_until_complete(client.call())
                    else:
                        client.call()
                    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                    out.append((cpu * 1e6, wall * 1e6))
                return out

            def concurrent(client: Any) -> list[tuple[float, float]]:
                """Each batch timed on its own, divided by its size."""

                async def gathered() -> None:
                    await asyncio.gather(*(client.call() for _ in range(batch)))

                out = []
                gc.collect()
                for _ in range(batches):
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    loop.run_until_complete(gathered())
                    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                    out.append((cpu / batch * 1e6, wall / batch * 1e6))
                return out

            modes = [("sequential", sequential, [c for c in clients if c.family != "memory"])]
            modes.append(
                (f"concurrent x{batch}", concurrent, [c for c in clients if c.family == "async"])
            )
            modes.append(("no network", sequential, [c for c in clients if c.family == "memory"]))
            for mode, run, group in modes:
                samples: dict[str, list[tuple[float, float]]] = {c.name: [] for c in group}
                for client in group:  # warm-up: imports, connections, first-use caches
                    run(client)
                for _ in range(rounds):
                    for client in group:
                        samples[client.name] += run(client)
                for client in group:
                    cpu = [s[0] for s in samples[client.name]]
                    wall = [s[1] for s in samples[client.name]]
                    rows.append(
                        {
                            "mode": mode,
                            "family": client.family,
                            "name": client.name,
                            "cpu_us_per_call": median(cpu),
                            "wall_us_per_call": median(wall),
                            "wall_iqr": spread(wall),
                        }
                    )
            for client in clients:
                if client.family == "async":
                    loop.run_until_complete(client.close())
                else:
                    client.close()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return {"rows": rows, "rounds": rounds, "calls": calls, "batch": batch, "batches": batches}


def table(results: dict[str, Any]) -> str:
    base: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results["rows"]:  # the first raw contender of each group is the floor
        if r["name"].startswith(("raw", "json")):
            base.setdefault((r["mode"], r["family"]), r)
    rows = []
    for r in results["rows"]:
        b = base[(r["mode"], r["family"])]
        rows.append(
            [
                r["mode"],
                r["name"],
                fmt(r["wall_us_per_call"], digits=0),
                ratio(r["wall_us_per_call"], b["wall_us_per_call"]),
                fmt(r["cpu_us_per_call"], digits=0),
                ratio(r["cpu_us_per_call"], b["cpu_us_per_call"]),
                f"{1e6 / r['wall_us_per_call']:,.0f}",
                f"{r['wall_iqr'] * 100:.0f}%",
            ]
        )
    header = [
        "create()",
        "client",
        "wall µs/call",
        "wall vs raw",
        "CPU µs/call",
        "CPU vs raw",
        "calls/s",
        "wall IQR",
    ]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (for run_all.py)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=100, help="sequential calls per round")
    parser.add_argument("--batch", type=int, default=50, help="concurrent calls per batch")
    parser.add_argument("--batches", type=int, default=3, help="batches per round")
    args = parser.parse_args(argv)
    results = bench(args.rounds, args.calls, args.batch, args.batches)
    results["machine"] = machine()
    emit(results, args.json, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
