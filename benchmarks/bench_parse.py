"""Parsing, pure CPU: one streamed chunk from bytes/dict to a model, chatlib vs openai vs json.

No network. Each row is the median over several timed repeats of a tight loop, in µs per
chunk. Stages, so a regression can be located:

* ``json.loads``: the floor every client pays.
* dict -> model: chatlib's compiled cattrs hook (the one ``ChunkParser`` uses) against the
  official SDK's ``construct_type`` (what its streams do) and pydantic ``model_validate``
  (what it does with ``_strict_response_validation``).
* frame -> model, per frame: chatlib's ``ChunkParser.feed`` (SSE decode + JSON + model +
  accumulation of the final answer) against openai's ``SSEDecoder`` + ``json`` +
  ``construct_type``, and a hand-written split + ``json.loads``; fed one frame per call
  (tokens trickling in) and the whole body in one call (a burst).
* memory: bytes held per parsed chunk kept in a list (``tracemalloc``).

    python benchmarks/bench_parse.py [--json] [--repeat 11]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from _common import (
    emit,
    fmt,
    have_openai,
    machine,
    markdown_table,
    median,
    ratio,
    split_events,
    spread,
    sse_frames,
    typical_chunk,
)

N_FRAMES = 2000


def _time_per_op(fn: Callable[[], Any], ops: int, repeat: int) -> tuple[float, float]:
    """Median and spread of µs per op over ``repeat`` timings of ``fn`` (which does ``ops``)."""
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) / ops * 1e6)
    return median(samples), spread(samples)


def _loop(fn: Callable[[Any], Any], arg: Any, n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            fn(arg)

    return run


def _bytes_per_item(make: Callable[[], list[Any]]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        items = make()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / len(items)


def bench(repeat: int) -> dict[str, Any]:
    from chatlib._accumulate import ChatCompletionAccumulator
    from chatlib._parse import ChunkParser, _structure_chunk

    chunk = typical_chunk()
    raw = json.dumps(chunk, separators=(",", ":")).encode()
    frames = sse_frames(N_FRAMES)  # N_FRAMES chunks + [DONE]
    body = b"".join(frames)
    n_loop = 20000
    rows: list[dict[str, Any]] = []

    def add(stage: str, who: str, fn: Callable[[], Any], ops: int) -> None:
        us, sp = _time_per_op(fn, ops, repeat)
        rows.append({"stage": stage, "who": who, "us": us, "spread": sp})

    loads = json.loads
    add("bytes -> dict", "json.loads", _loop(loads, raw, n_loop), n_loop)

    def structure(d: dict[str, Any]) -> Any:
        return _structure_chunk(d, None)

    add("dict -> model", "chatlib (compiled cattrs hook)", _loop(structure, chunk, n_loop), n_loop)
    add(
        "bytes -> model",
        "chatlib json.loads + hook",
        _loop(lambda b: _structure_chunk(loads(b), None), raw, n_loop),
        n_loop,
    )
    parsed = [_structure_chunk(json.loads(f[6:]), None) for f in frames[:-1]]

    def accumulate() -> None:
        acc = ChatCompletionAccumulator()
        for c in parsed:
            acc.add(c)

    add("accumulate (per chunk)", "chatlib ChatCompletionAccumulator.add", accumulate, N_FRAMES)

    def split_floor(pieces: list[bytes]) -> Callable[[], None]:
        def run() -> None:
            buf = b""
            out: list[Any] = []
            for piece in pieces:
                buf = split_events(buf + piece, out)
            assert len(out) == N_FRAMES

        return run

    def chatlib_parser(pieces: list[bytes]) -> Callable[[], None]:
        def run() -> None:
            parser = ChunkParser(request_id=None, max_line_bytes=16 * 1024 * 1024)
            count = 0
            for piece in pieces:
                count += len(parser.feed(piece))
            assert count == N_FRAMES and parser.done

        return run

    add(
        "SSE frame -> model, 1 frame/read", "hand split + json.loads", split_floor(frames), N_FRAMES
    )
    add(
        "SSE frame -> model, 1 frame/read",
        "chatlib ChunkParser.feed",
        chatlib_parser(frames),
        N_FRAMES,
    )
    add("SSE frame -> model, whole body", "hand split + json.loads", split_floor([body]), N_FRAMES)
    add(
        "SSE frame -> model, whole body",
        "chatlib ChunkParser.feed",
        chatlib_parser([body]),
        N_FRAMES,
    )

    memory = [
        {
            "who": "dict (json.loads)",
            "bytes": _bytes_per_item(lambda: [loads(raw) for _ in range(2000)]),
        },
        {
            "who": "chatlib CreateChatCompletionChunk",
            "bytes": _bytes_per_item(lambda: [structure(loads(raw)) for _ in range(2000)]),
        },
    ]

    if have_openai():
        from openai._models import construct_type
        from openai._streaming import SSEDecoder
        from openai.types.chat import ChatCompletionChunk

        def construct(d: dict[str, Any]) -> Any:
            return construct_type(type_=ChatCompletionChunk, value=d)

        add(
            "dict -> model",
            "openai construct_type (its streams)",
            _loop(construct, chunk, n_loop // 10),
            n_loop // 10,
        )
        add(
            "dict -> model",
            "openai model_validate (strict mode)",
            _loop(ChatCompletionChunk.model_validate, chunk, n_loop // 4),
            n_loop // 4,
        )
        add(
            "bytes -> model",
            "openai json.loads + construct_type",
            _loop(lambda b: construct(loads(b)), raw, n_loop // 10),
            n_loop // 10,
        )

        def openai_parser(pieces: list[bytes]) -> Callable[[], None]:
            def run() -> None:
                count = 0
                for sse in SSEDecoder().iter_bytes(iter(pieces)):
                    if sse.data.startswith("[DONE]"):
                        break
                    construct(sse.json())
                    count += 1
                assert count == N_FRAMES

            return run

        add(
            "SSE frame -> model, 1 frame/read",
            "openai SSEDecoder + construct_type",
            openai_parser(frames),
            N_FRAMES,
        )
        add(
            "SSE frame -> model, whole body",
            "openai SSEDecoder + construct_type",
            openai_parser([body]),
            N_FRAMES,
        )
        memory.append(
            {
                "who": "openai ChatCompletionChunk",
                "bytes": _bytes_per_item(lambda: [construct(loads(raw)) for _ in range(2000)]),
            }
        )

    order = [
        "bytes -> dict",
        "dict -> model",
        "bytes -> model",
        "accumulate (per chunk)",
        "SSE frame -> model, 1 frame/read",
        "SSE frame -> model, whole body",
    ]
    rows.sort(key=lambda r: order.index(r["stage"]))
    return {"rows": rows, "memory": memory, "chunk_bytes": len(raw), "repeat": repeat}


def table(results: dict[str, Any]) -> str:
    floor = {r["stage"]: r["us"] for r in results["rows"] if r["who"].startswith(("json", "hand"))}
    chatlib = {r["stage"]: r["us"] for r in results["rows"] if r["who"].startswith("chatlib")}
    loads_us = floor["bytes -> dict"]
    rows = []
    for r in results["rows"]:
        base = floor.get(r["stage"], loads_us)
        rows.append(
            [
                r["stage"],
                r["who"],
                fmt(r["us"], digits=2),
                ratio(r["us"], base),
                ratio(r["us"], chatlib.get(r["stage"]))
                if not r["who"].startswith("chatlib")
                else "-",
                f"{r['spread'] * 100:.0f}%",
            ]
        )
    out = markdown_table(
        ["stage", "implementation", "µs/chunk", "vs floor", "vs chatlib", "IQR"], rows
    )
    mem = [[m["who"], fmt(m["bytes"], " B", 0)] for m in results["memory"]]
    out += "\n\n" + markdown_table(["one parsed chunk, kept", "memory"], mem)
    out += f"\n\n(one typical chunk is {results['chunk_bytes']} bytes of JSON)"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (for run_all.py)")
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args(argv)
    results = bench(args.repeat)
    results["machine"] = machine()
    emit(results, args.json, table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
