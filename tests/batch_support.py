"""Helpers shared by the batch tests: input files, exactly-once checks, guarded subprocesses.

Every process a batch test starts gets the loopback guard (`tests/loopback_guard`) on its
`PYTHONPATH`, and a log file for refusals, which the tests check is empty.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
GUARD_DIR = TESTS / "loopback_guard"


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}


def write_input(path: Path, count: int, *, prefix: str = "q", **extra: Any) -> list[str]:
    """`count` request lines with custom_ids `q1`... ; returns the ids."""
    ids = [f"{prefix}{i}" for i in range(1, count + 1)]
    with open(path, "w", encoding="utf-8") as out:
        for custom_id in ids:
            line = {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body(f"hello {custom_id}", **extra),
            }
            out.write(json.dumps(line) + "\n")
    return ids


def output_ids(path: Path) -> list[str | None]:
    """The custom_id of every complete line of an output file (a torn last line left out)."""
    ids: list[str | None] = []
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.endswith(b"\n"):
                ids.append(json.loads(raw)["custom_id"])
    return ids


def assert_exactly_once(path: Path, expected: Iterable[str]) -> None:
    """Every expected custom_id once, nothing else, every line whole and successful."""
    data = Path(path).read_bytes()
    assert data.endswith(b"\n"), "the output ends with a torn line"
    lines = [json.loads(raw) for raw in data.splitlines()]
    counts = collections.Counter(line["custom_id"] for line in lines)
    repeated = {k: v for k, v in counts.items() if v > 1}
    assert not repeated, f"repeated: {repeated}"
    assert set(counts) == set(expected), (
        f"missing {sorted(set(expected) - set(counts))[:5]}, "
        f"extra {sorted(set(counts) - set(expected), key=str)[:5]}"
    )
    failed = [line for line in lines if line["error"] is not None]
    assert not failed, failed[:3]
    for line in lines:
        text = line["response"]["body"]["choices"][0]["message"]["content"]
        assert text == f"Echo: hello {line['custom_id']}"


def guarded_env(log: Path, **extra: str) -> dict[str, str]:
    """The environment for a child process: the loopback guard loaded, refusals logged."""
    env = dict(os.environ)
    paths = [str(GUARD_DIR), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["LOOPBACK_GUARD_LOG"] = str(log)
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    env.update(extra)
    return env


def guard_refusals(log: Path) -> str:
    return log.read_text("utf-8") if log.exists() else ""


PYTHON = sys.executable


# ---------------------------------------------------------------- a server that keeps time


class TimedServer:
    """A loopback Chat Completions server that records when each request arrived.

    `answer(index, body) -> (status, headers, json_body)` decides each reply (index from 0,
    in arrival order); by default an echo completion with usage. Runs in its own thread.
    """

    def __init__(self, answer: Any = None, *, delay: float = 0.0) -> None:
        import threading

        self.arrivals: list[float] = []
        self.bodies: list[dict[str, Any]] = []
        self._answer = answer
        self._delay = delay
        self._lock = threading.Lock()
        self._thread: Any = None
        self._loop: Any = None
        self._runner: Any = None
        self.base_url = ""

    @staticmethod
    def echo(body: dict[str, Any]) -> dict[str, Any]:
        text = "Echo: " + str(body["messages"][-1]["content"])
        words = len(str(body["messages"][-1]["content"]).split())
        return {
            "id": "chatcmpl-timed",
            "object": "chat.completion",
            "created": 1,
            "model": body.get("model", "m"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": words,
                "completion_tokens": words + 1,
                "total_tokens": 2 * words + 1,
            },
        }

    async def _handle(self, request: Any) -> Any:
        import asyncio
        import time

        from aiohttp import web

        data = await request.json()
        with self._lock:
            index = len(self.arrivals)
            self.arrivals.append(time.monotonic())
            self.bodies.append(data)
        if self._delay:
            await asyncio.sleep(self._delay)
        status, headers, reply = 200, {}, None
        if self._answer is not None:
            status, headers, reply = self._answer(index, data)
        if reply is None:
            reply = self.echo(data)
        return web.json_response(
            reply, status=status, headers={"x-request-id": f"req_{index}", **headers}
        )

    def __enter__(self) -> TimedServer:
        import asyncio
        import threading

        from aiohttp import web

        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.2)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = runner.addresses[0][1]
            self.base_url = f"http://127.0.0.1:{port}/v1"
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
