"""The batch runner over real loopback HTTP: results, resume, bad lines, failures, 429s,
rate limits as the server counts them, progress, graceful stops."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from batch_support import TimedServer, assert_exactly_once, body, output_ids, write_input

from chatlib import AsyncChat, SyncChat
from chatlib.batch import OutputFileError, read_results, run, run_async
from chatlib.errors import InvalidArgumentError
from chatlib.testing import ErrorReply, LocalServer, RawReply, Reply


@pytest.fixture
def chat(server: LocalServer) -> AsyncChat:
    return AsyncChat(base_url=server.base_url, api_key="sk-test", max_retries=0)


def test_every_line_gets_its_result_once(
    tmp_path: Path, server: LocalServer, chat: AsyncChat
) -> None:
    ids = write_input(tmp_path / "in.jsonl", 60, max_tokens=5)
    summary = run(
        tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=chat, concurrency=7, progress=False
    )
    assert_exactly_once(tmp_path / "out.jsonl", ids)
    assert (summary.lines, summary.succeeded, summary.failed, summary.invalid) == (60, 60, 0, 0)
    assert summary.complete and not summary.interrupted
    assert summary.total_tokens == summary.prompt_tokens + summary.completion_tokens > 0
    assert len(server.requests) == 60
    sent = {r.json()["messages"][0]["content"] for r in server.requests}
    assert sent == {f"hello {i}" for i in ids}
    assert all(
        r.json() == body(r.json()["messages"][0]["content"], max_tokens=5) for r in server.requests
    )
    results = {r.custom_id: r for r in read_results(tmp_path / "out.jsonl")}
    assert results["q7"].text == "Echo: hello q7" and results["q7"].request_id.startswith("req_")


def test_a_rerun_resumes_and_redoes_a_torn_last_line(
    tmp_path: Path, server: LocalServer, chat: AsyncChat
) -> None:
    ids = write_input(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    run(tmp_path / "in.jsonl", out, chat=chat, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    kept = lines[:12]
    torn = lines[12][: len(lines[12]) // 2]
    out.write_bytes(b"".join(kept) + torn)  # as a run killed while writing line 13 leaves it
    server.clear()
    summary = run(tmp_path / "in.jsonl", out, chat=chat, progress=False)
    assert_exactly_once(out, ids)
    assert (summary.skipped, summary.succeeded) == (12, 18)
    assert len(server.requests) == 18  # nothing done twice
    server.clear()
    summary = run(tmp_path / "in.jsonl", out, chat=chat, progress=False)
    assert (summary.skipped, summary.succeeded, len(server.requests)) == (30, 0, 0)
    assert summary.complete


def test_bad_lines_are_reported_in_the_output_never_skipped(
    tmp_path: Path, server: LocalServer, chat: AsyncChat
) -> None:
    source = tmp_path / "in.jsonl"
    good = json.dumps({"custom_id": "a", "body": body("1")})
    source.write_text(
        "\n".join(
            [
                good,
                "{not json",
                json.dumps({"body": body("2")}),
                json.dumps({"custom_id": "a", "body": body("3")}),
                "",
                json.dumps({"custom_id": "b", "body": {"model": "m", "messages": []}}),
                json.dumps({"custom_id": "c", "body": body("4", temperature="warm")}),
                json.dumps({"custom_id": "d", "body": body("5")}),
                json.dumps(
                    {"custom_id": "e", "body": {"messages": [{"role": "user", "content": "6"}]}}
                ),
            ]
        )
        + "\n"
    )
    summary = run(source, tmp_path / "out.jsonl", chat=chat, progress=False)
    assert (summary.succeeded, summary.invalid, summary.failed) == (2, 6, 0)
    results = list(read_results(tmp_path / "out.jsonl"))
    errors = {(r.custom_id, r.error.code, r.error.line) for r in results if r.error}
    assert errors == {
        (None, "invalid_json", 2),
        (None, "missing_custom_id", 3),
        (None, "duplicate_custom_id", 4),
        ("b", "invalid_body", 6),
        ("c", "invalid_body", 7),
        ("e", "invalid_body", 9),
    }
    messages = " ".join(r.error.message for r in results if r.error)
    assert "line 6: body.messages" in messages and "line 7: body.temperature" in messages
    assert "line 9: body.model" in messages
    assert len(server.requests) == 2
    again = run(source, tmp_path / "out.jsonl", chat=chat, progress=False)
    assert (again.skipped, again.invalid, again.succeeded) == (8, 0, 0)  # reported once


def test_a_line_too_long_is_refused_by_number_and_the_run_goes_on(
    tmp_path: Path, server: LocalServer, chat: AsyncChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("chatlib.batch._format.MAX_LINE_BYTES", 1000)
    source = tmp_path / "in.jsonl"
    huge = json.dumps({"custom_id": "huge", "body": body("x" * 5000)})
    lines = [json.dumps({"custom_id": "a", "body": body("1")}), huge, huge.replace("huge", "h2")]
    source.write_text("\n".join([*lines, json.dumps({"custom_id": "b", "body": body("2")})]))
    summary = run(source, tmp_path / "out.jsonl", chat=chat, progress=True)
    assert (summary.succeeded, summary.invalid, len(server.requests)) == (2, 2, 2)
    errors = {
        (r.custom_id, r.error.code, r.error.line)
        for r in read_results(tmp_path / "out.jsonl")
        if r.error
    }
    assert errors == {("huge", "line_too_long", 2), ("h2", "line_too_long", 3)}
    again = run(source, tmp_path / "out.jsonl", chat=chat, progress=False)
    assert (again.skipped, again.invalid, again.succeeded) == (4, 0, 0)


def test_resuming_into_the_output_of_another_input_runs_every_line_of_this_one(
    tmp_path: Path, server: LocalServer, chat: AsyncChat
) -> None:
    first, second, out = tmp_path / "first.jsonl", tmp_path / "second.jsonl", tmp_path / "out"
    first.write_text("x\n{not json\n")  # its lines 1 and 2 are reported by number
    run(first, out, chat=chat, progress=False)
    write_input(second, 3, prefix="s")
    summary = run(second, out, chat=chat, progress=False)
    # Lines 1 and 2 of this file were hidden by the other file's error lines before.
    assert (summary.skipped, summary.succeeded, len(server.requests)) == (0, 3, 3)
    ids = [r.custom_id for r in read_results(out)]
    assert sorted(i for i in ids if i) == ["s1", "s2", "s3"]


def test_a_request_that_fails_is_written_with_its_error_and_the_batch_goes_on(
    tmp_path: Path, server: LocalServer
) -> None:
    ids = write_input(tmp_path / "in.jsonl", 10)
    server.enqueue(
        ErrorReply(400, "context too long", code="context_length_exceeded"),
        ErrorReply(503),
        ErrorReply(503),
        RawReply(body=b'{"choices": ['),
    )
    chat = AsyncChat(base_url=server.base_url, api_key="k", max_retries=1)
    summary = run(
        tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=chat, concurrency=1, progress=False
    )
    results = {r.custom_id: r for r in read_results(tmp_path / "out.jsonl")}
    assert set(results) == set(ids)
    failed = {k: r.error.code for k, r in results.items() if r.error}
    assert failed == {
        "q1": "context_length_exceeded",
        "q2": "server_error",
        "q3": "invalid_response",
    }
    assert results["q1"].status_code == 400 and "context too long" in results["q1"].error.message
    assert (summary.failed, summary.succeeded, summary.retries) == (3, 7, 1)


def test_a_429_storm_is_absorbed_without_spending_retries(
    tmp_path: Path, server: LocalServer
) -> None:
    ids = write_input(tmp_path / "in.jsonl", 20)
    server.enqueue(*[ErrorReply(429, headers={"retry-after-ms": "40"}) for _ in range(25)])
    chat = AsyncChat(base_url=server.base_url, api_key="k", max_retries=0)  # no retries at all
    summary = run(
        tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=chat, concurrency=5, progress=False
    )
    assert_exactly_once(tmp_path / "out.jsonl", ids)
    assert summary.rate_limited == 25 and summary.failed == 0
    assert len(server.requests) == 45


def gaps(arrivals: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(arrivals)]


def test_a_429_pauses_the_whole_runner_for_its_retry_after(tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", 24)

    def answer(index: int, data: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        if index == 6:
            return (
                429,
                {"retry-after-ms": "700"},
                {"error": {"message": "slow", "type": "requests"}},
            )
        return 200, {}, None

    with TimedServer(answer, delay=0.03) as server:
        chat = AsyncChat(base_url=server.base_url, api_key="k")
        summary = run(
            tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=chat, concurrency=4, progress=False
        )
    assert summary.succeeded == 24 and summary.rate_limited == 1
    # Per-request back-off would keep the 3 other slots busy; the runner sends nothing at all.
    longest = max(gaps(server.arrivals))
    assert 0.65 <= longest < 1.5
    assert max(g for g in gaps(server.arrivals) if g != longest) < 0.3


def test_the_runner_paces_itself_from_the_servers_rate_limit_headers(tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", 16)

    def answer(index: int, data: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        if index == 5:
            return (
                200,
                {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "800ms"},
                None,
            )
        return (
            200,
            {"x-ratelimit-remaining-requests": "100", "x-ratelimit-reset-requests": "1ms"},
            None,
        )

    with TimedServer(answer, delay=0.02) as server:
        chat = AsyncChat(base_url=server.base_url, api_key="k")
        summary = run(
            tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=chat, concurrency=1, progress=False
        )
    assert summary.succeeded == 16 and summary.rate_limited == 0
    assert 0.75 <= gaps(server.arrivals)[5] < 1.5  # held until the reset, with no 429
    assert sorted(gaps(server.arrivals))[-2] < 0.3


def test_requests_per_minute_are_held_as_the_server_counts_them(tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", 61)
    with TimedServer() as server:
        chat = AsyncChat(base_url=server.base_url, api_key="k")
        run(
            tmp_path / "in.jsonl",
            tmp_path / "out.jsonl",
            chat=chat,
            concurrency=16,
            requests_per_minute=1200,
            progress=False,
        )
    arrivals = server.arrivals
    assert len(arrivals) == 61
    rate_per_minute = 60 * (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert 1200 * 0.95 <= rate_per_minute <= 1200 * 1.05
    # No burst: any second of the run holds at most its share (20), plus the one opening it,
    # plus one when the event loop started that one late by over a spacing (50 ms: seen on a
    # loaded 2-core machine); a burst would put many more in one second.
    assert max(sum(1 for t in arrivals if s <= t < s + 1.0) for s in arrivals) <= 22


def test_tokens_per_minute_are_held_from_usage(tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", 12, max_tokens=10)
    with TimedServer() as server:
        chat = AsyncChat(base_url=server.base_url, api_key="k")
        summary = run(
            tmp_path / "in.jsonl",
            tmp_path / "out.jsonl",
            chat=chat,
            concurrency=1,
            tokens_per_minute=1200,  # 20 a second
            progress=False,
        )
    # Each request books ~18 tokens before sending (prompt + max_tokens) and uses 5: the
    # bucket follows the usage, so 11 spacings of ~5 tokens take about 2.75 s, not 10 s.
    elapsed = server.arrivals[-1] - server.arrivals[0]
    assert summary.total_tokens == 60
    assert 2.2 < elapsed < 6.0


def test_the_output_is_locked_against_a_second_run(tmp_path: Path, chat: AsyncChat) -> None:
    write_input(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    with open(out, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(OutputFileError, match="another batch run"):
            run(tmp_path / "in.jsonl", out, chat=chat, progress=False)
    (tmp_path / "junk.jsonl").write_text("hello\n")
    with pytest.raises(OutputFileError, match="not JSON"):
        run(tmp_path / "in.jsonl", tmp_path / "junk.jsonl", chat=chat, progress=False)
    assert (tmp_path / "junk.jsonl").read_text() == "hello\n"
    (tmp_path / "notes.txt").write_text("no line end")  # was truncated to nothing
    with pytest.raises(OutputFileError, match="no line end"):
        run(tmp_path / "in.jsonl", tmp_path / "notes.txt", chat=chat, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "no line end"


def test_arguments_are_checked_before_anything_is_sent(
    tmp_path: Path, server: LocalServer, chat: AsyncChat
) -> None:
    write_input(tmp_path / "in.jsonl", 2)
    for kwargs, field in (
        ({"concurrency": 0}, "concurrency"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"tokens_per_minute": -1}, "tokens_per_minute"),
        ({"stop_timeout": -1}, "stop_timeout"),
        ({"stop_timeout": float("nan")}, "stop_timeout"),  # was accepted
        ({"concurrency": 2.5}, "concurrency"),
        ({"requests_per_minute": float("nan")}, "requests_per_minute"),
    ):
        with pytest.raises(InvalidArgumentError, match=field):
            run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=chat, progress=False, **kwargs)
    with pytest.raises(InvalidArgumentError, match="input"):
        run(tmp_path / "missing.jsonl", tmp_path / "out.jsonl", chat=chat)
    with pytest.raises(InvalidArgumentError, match="output"):
        run(tmp_path / "in.jsonl", tmp_path / "in.jsonl", chat=chat)
    with pytest.raises(InvalidArgumentError, match=r"output: .* is a directory"):
        run(tmp_path / "in.jsonl", tmp_path, chat=chat)  # was a raw IsADirectoryError
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InvalidArgumentError, match=r"input: .*fifo' is not a file"):
        run(tmp_path / "fifo", tmp_path / "out.jsonl", chat=chat)  # refused, not a hang
    for wrong in ("http://x", SyncChat(base_url=server.base_url, api_key="k")):
        with pytest.raises(InvalidArgumentError, match="chat: must be an AsyncChat"):
            run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=wrong)  # type: ignore[arg-type]
    for device in (tmp_path / "fifo", Path("/dev/zero")):  # both hung reading "the output"
        with pytest.raises(InvalidArgumentError, match=r"output: .* is not a regular file"):
            run(tmp_path / "in.jsonl", device, chat=chat)
    assert not server.requests and not (tmp_path / "out.jsonl").exists()


# ---------------------------------------------------------------- progress


def slow_run(tmp_path: Path, server: LocalServer, count: int, **kwargs: Any) -> Any:
    server.enqueue(*[Reply(delay=0.05) for _ in range(count)])
    write_input(tmp_path / "in.jsonl", count)
    chat = AsyncChat(base_url=server.base_url, api_key="k")
    return run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=chat, concurrency=2, **kwargs)


def test_plain_progress_is_one_line_at_most_once_a_second(
    tmp_path: Path,
    server: LocalServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    started = time.monotonic()
    summary = slow_run(tmp_path, server, 90)
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    lines = err.splitlines()
    progress = [line for line in lines if "done ·" in line]
    assert 2 <= len(progress) <= elapsed + 2
    assert "/90 (" in progress[0] and "in flight" in progress[0] and "ETA" in progress[0]
    assert progress[-1].startswith("batch: 90/90 (100.0%) done · failed 0 · in flight 0")
    assert lines[-1] == f"batch: {summary}"


def test_a_tqdm_bar_when_tqdm_is_installed(
    tmp_path: Path, server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    slow_run(tmp_path, server, 30)
    err = capsys.readouterr().err
    assert "30/30" in err and "req/min" in err and "|" in err


def test_progress_false_is_silent(
    tmp_path: Path, server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    slow_run(tmp_path, server, 30, progress=False)
    assert capsys.readouterr() == ("", "")


# ---------------------------------------------------------------- inside an event loop


async def test_run_async_stops_gracefully_when_cancelled(tmp_path: Path) -> None:
    ids = write_input(tmp_path / "in.jsonl", 40)
    out = tmp_path / "out.jsonl"
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    async with LocalServer() as server:
        server.enqueue(*[Reply(delay=0.2) for _ in range(40)])
        chat = AsyncChat(base_url=server.base_url, api_key="k")
        task = asyncio.ensure_future(
            run_async(tmp_path / "in.jsonl", out, chat=chat, concurrency=4, progress=False)
        )
        while len(server.requests) < 6:
            await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > frozen  # the heap from before the run, out of the GC
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gc.get_freeze_count() <= frozen  # and given back, however the run ended
        assert gc.get_threshold() == threshold
        sent = len(server.requests)
        assert sent < 40
        # The requests in flight were let finish and written: one line per request sent.
        assert len(output_ids(out)) == sent and out.read_bytes().endswith(b"\n")
        server.clear()
        summary = await run_async(tmp_path / "in.jsonl", out, chat=chat, progress=False)
        assert summary.skipped == sent and len(server.requests) == 40 - sent
        await chat.aclose()
    assert_exactly_once(out, ids)


async def test_run_refuses_a_running_loop(tmp_path: Path) -> None:
    write_input(tmp_path / "in.jsonl", 1)
    with pytest.raises(RuntimeError, match="run_async"):
        run(tmp_path / "in.jsonl", tmp_path / "out.jsonl")


def test_no_key_fails_before_the_output_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatlib import MissingAPIKeyError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    write_input(tmp_path / "in.jsonl", 2)
    with pytest.raises(MissingAPIKeyError):
        run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_a_key_function_is_asked_for_every_request(tmp_path: Path) -> None:
    asked = itertools.count(1)

    def key() -> str:
        next(asked)
        return "sk-rotating"

    with LocalServer(api_key="sk-rotating") as server:
        ids = write_input(tmp_path / "in.jsonl", 5)
        chat = AsyncChat(base_url=server.base_url, api_key=key, max_retries=0)
        summary = run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=chat, progress=False)
        assert (summary.succeeded, summary.failed) == (5, 0)
        assert_exactly_once(tmp_path / "out.jsonl", ids)
        assert all(r.headers["authorization"] == "Bearer sk-rotating" for r in server.requests)
    assert next(asked) == 6  # once per request


def _collector_during_run(tmp_path: Path, *, lines: int = 3) -> list[tuple[int, int]]:
    """(`gc.get_freeze_count()`, young generation's threshold) as the run's requests see
    them (from its key function)."""
    seen: list[tuple[int, int]] = []

    def key() -> str:
        seen.append((gc.get_freeze_count(), gc.get_threshold()[0]))
        return "sk-k"

    tmp_path.mkdir(exist_ok=True)
    with LocalServer(api_key="sk-k") as server:
        write_input(tmp_path / "in.jsonl", lines)
        chat = AsyncChat(base_url=server.base_url, api_key=key, max_retries=0)
        summary = run(tmp_path / "in.jsonl", tmp_path / "out.jsonl", chat=chat, progress=False)
    assert summary.succeeded == lines
    return seen


def test_a_run_sets_the_collector_for_itself_and_back(tmp_path: Path) -> None:
    # (Python 3.12.1 starts with a few hundred objects frozen: the baseline is what is there.)
    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    before = gc.get_threshold()
    seen = _collector_during_run(tmp_path)
    # What existed before the run is frozen out of the scans; the young generation is
    # collected less often.
    assert seen and all(count > frozen and young == 10_000 for count, young in seen)
    assert gc.get_freeze_count() <= frozen and gc.get_threshold() == before  # given back


def test_a_run_leaves_the_collector_alone_when_the_application_set_it(tmp_path: Path) -> None:
    before = gc.get_threshold()
    gc.freeze()  # the application's own (before forking workers, say)
    try:
        frozen = gc.get_freeze_count()
        seen = _collector_during_run(tmp_path / "frozen")
        assert all(young == before[0] for _, young in seen)
        assert gc.get_freeze_count() >= frozen  # not unfrozen by the run
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        assert _collector_during_run(tmp_path / "off") == [(0, before[0])] * 3  # off: untouched
    finally:
        gc.enable()
    gc.set_threshold(0)  # automatic collection off: left off
    try:
        assert all(young == 0 for _, young in _collector_during_run(tmp_path / "zero"))
    finally:
        gc.set_threshold(*before)
