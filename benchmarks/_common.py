"""Shared helpers for the benchmarks: the loopback server process, wire payloads, statistics.

Not a test module and not part of chatlib. Every ``bench_*.py`` script imports it from its
own directory (``python benchmarks/bench_x.py`` puts ``benchmarks/`` on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "_server.py"

MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a haiku about loopback interfaces."},
]
API_KEY = "sk-bench-not-a-real-key"


def have_openai() -> bool:
    """Whether the official ``openai`` package (the peer) is importable.

    ``BENCH_SKIP_OPENAI=1`` in the environment leaves it out even when it is installed.
    """
    if os.environ.get("BENCH_SKIP_OPENAI"):
        return False
    try:
        return importlib.util.find_spec("openai") is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------- wire payloads

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "packets",
    "loop",
    "back",
    "home",
    "through",
    "sockets",
    "that",
    "never",
    "leave",
    "this",
    "machine",
    "and",
    "every",
    "token",
    "costs",
    "a",
    "little",
    "time",
]


def chunk_dicts(n: int) -> list[dict[str, Any]]:
    """``n`` chunks shaped like OpenAI's (2025): a role chunk, content chunks, a stop chunk."""
    head = {
        "id": "chatcmpl-BenchAbCdEfGhIjKlMnOpQrStUvWx",
        "object": "chat.completion.chunk",
        "created": 1732500000,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_b8bc95a0ac",
    }
    out: list[dict[str, Any]] = []
    for i in range(n):
        if i == 0:
            delta: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
            finish = None
        elif i == n - 1:
            delta, finish = {}, "stop"
        else:
            delta, finish = {"content": " " + _WORDS[i % len(_WORDS)]}, None
        out.append(
            {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                "obfuscation": "x" * (1 + i % 9),
            }
        )
    return out


def typical_chunk() -> dict[str, Any]:
    """One content chunk, the shape that dominates a stream."""
    return chunk_dicts(3)[1]


def sse_frames(n: int) -> list[bytes]:
    """The SSE frames of an ``n``-chunk stream, ``data: [DONE]`` included (n + 1 frames)."""
    frames = [
        b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n" for c in chunk_dicts(n)
    ]
    frames.append(b"data: [DONE]\n\n")
    return frames


def completion_dict() -> dict[str, Any]:
    """A typical non-streaming answer."""
    return {
        "id": "chatcmpl-BenchAbCdEfGhIjKlMnOpQrStUvWx",
        "object": "chat.completion",
        "created": 1732500000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Packets loop back home,\nno cable, no distant shore,\n127 sighs.",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 27,
            "completion_tokens": 21,
            "total_tokens": 48,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_b8bc95a0ac",
    }


def split_events(buf: bytes, out: list[Any]) -> bytes:
    """The hand-written floor: ``json.loads`` each complete event's data; returns the rest.

    Plain ``data: ...`` lines and ``\\n\\n`` separators only (what the benchmark server
    sends), no models: the least work any client can do. Linear in the bytes fed.
    """
    start = 0
    loads = json.loads
    while True:
        end = buf.find(b"\n\n", start)
        if end < 0:
            return buf[start:] if start else buf
        line = buf[start:end]
        start = end + 2
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            out.append(loads(line[6:]))


def expected_text(n: int) -> str:
    """The text an ``n``-chunk stream spells out (for checking every client got it all)."""
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunk_dicts(n))


# ---------------------------------------------------------------- the server process


@contextlib.contextmanager
def server_process() -> Iterator[str]:
    """Run ``_server.py`` in its own process; yields ``http://127.0.0.1:<port>``.

    URL paths pick the answer: ``/burst/<n>/v1`` streams ``n`` chunks written at once,
    ``/paced/<n>/v1`` one chunk at a time with a short pause, and a non-streaming request
    gets :func:`completion_dict`.
    """
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"benchmark server failed to start: {line!r}")
        yield f"http://127.0.0.1:{line}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------- statistics and output


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> float:
    """Interquartile range relative to the median: how much to trust a median."""
    if len(values) < 2:
        return 0.0
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / q2 if q2 else 0.0


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return "-"
    return f"{value / base:.2f}x"


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for dist in ("chatlib", "openai", "requests", "aiohttp", "cattrs", "pydantic", "httpx2"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "env_vars": len(os.environ),
        "versions": versions,
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def emit(result: dict[str, Any], as_json: bool, table: str) -> None:
    """Print the script's result: JSON for ``run_all.py``, else a human table."""
    if as_json:
        print(json.dumps(result))
    else:
        print(table)
