"""The batch runner: `run` and `run_async`. The I/O half; every rule is in the pure modules.

It streams the input (one line at a time, never the whole file), keeps at most
`concurrency` requests in flight, drives each line's flow (`_flow.line_flow`, the client's
own retry flow paced by `_limits.RateLimiter`) with `AsyncChat`'s driver and transport,
appends and flushes one result line per finished request, and on a re-run skips what the
output already holds (`_resume.ResumeScan`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from chatlib.batch._flow import Answer, Counters, line_flow, parse_answer
from chatlib.batch._format import (
    InputLine,
    InvalidLine,
    LineChecker,
    PathLike,
    bounded_lines,
    error_line,
    invalid_line,
    success_line,
)
from chatlib.batch._limits import RateLimiter, estimate_tokens
from chatlib.batch._progress import ProgressMeter, ProgressSnapshot, progress_line, progress_postfix
from chatlib.batch._resume import OutputFileError, ResumeScan
from chatlib.batch._summary import BatchInterrupted, BatchSummary
from chatlib.errors import ChatLibError, InvalidArgumentError

if TYPE_CHECKING:
    from chatlib._async import AsyncChat

__all__ = ["run", "run_async"]

DEFAULT_CONCURRENCY = 64
DEFAULT_STOP_TIMEOUT = 10.0
DEFAULT_RATE_LIMIT_WAITS = 8
_READ_SIZE = 1 << 20
_YIELD_EVERY = 512  # lines read between two turns of the event loop


# ---------------------------------------------------------------- files


class LineWriter:
    """Appends whole lines to the output, each with one `write(2)` and no user-space
    buffer: a line is in the file (the OS's cache) as soon as `write` returns, so a killed
    run loses nothing it reported as done."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        """Append `data` (one or more whole lines)."""
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]


def _lock(fd: int, path: str) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputFileError(
            f"{path} is being written by another batch run; wait for it, or stop it"
        ) from None


def open_output(path: str) -> tuple[int, ResumeScan]:
    """Open (or create) the output for appending, locked against a second run; read what
    a previous run left and cut off a torn last line."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        _lock(fd, path)
        scan = ResumeScan()
        while True:
            data = os.read(fd, _READ_SIZE)
            if not data:
                break
            scan.feed(data)
        scan.finish()
        if scan.torn:
            os.ftruncate(fd, scan.keep_bytes)
    except BaseException:
        os.close(fd)
        raise
    return fd, scan


def read_lines(
    path: str, start: int = 0, end: int | None = None, first_number: int = 1
) -> Iterator[tuple[int, bytes]]:
    """The lines of `path` from byte `start` to byte `end`, numbered from `first_number`;
    blank lines are counted but not yielded. A line too long to read comes cut short
    (`bounded_lines`), to be refused by the checker."""
    with open(path, "rb") as handle:
        handle.seek(start)
        position = start
        number = first_number
        for raw, length in bounded_lines(handle):
            if end is not None and position >= end:
                return
            position += length
            if not raw.isspace():  # (no copy of a long line)
                yield number, raw
            number += 1


def count_lines(path: str, start: int = 0, end: int | None = None) -> int:
    """The non-blank lines between two byte offsets (for the progress bar's total)."""
    count = 0
    for _ in read_lines(path, start, end):
        count += 1
    return count


# ---------------------------------------------------------------- progress displays


class _PlainDisplay:
    """One stderr line: redrawn in place on a terminal, else a new line per update."""

    def __init__(self) -> None:
        self._stream = sys.stderr
        self._tty = self._stream.isatty()
        self._width = 0

    def show(self, snapshot: ProgressSnapshot) -> None:
        text = progress_line(snapshot)
        if self._tty:
            self._stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def close(self, summary: BatchSummary) -> None:
        if self._tty and self._width:
            self._stream.write("\n")
        self._stream.write(f"batch: {summary}\n")
        self._stream.flush()


class _TqdmDisplay:
    """A tqdm bar: done/total, speed and ETA by tqdm; failures, in flight and rates after."""

    def __init__(self, total: int | None, initial: int) -> None:
        import importlib

        tqdm = importlib.import_module("tqdm.auto").tqdm
        self._bar = tqdm(
            total=total,
            initial=initial,
            unit="req",
            desc="batch",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=1.0,
            smoothing=0.05,
        )

    def show(self, snapshot: ProgressSnapshot) -> None:
        self._bar.n = snapshot.done
        self._bar.set_postfix_str(progress_postfix(snapshot), refresh=False)
        self._bar.refresh()

    def close(self, summary: BatchSummary) -> None:
        self._bar.close()
        sys.stderr.write(f"batch: {summary}\n")
        sys.stderr.flush()


def _display(progress: bool, total: int | None, initial: int) -> Any:
    if not progress:
        return None
    try:
        return _TqdmDisplay(total, initial)
    except ImportError:
        return _PlainDisplay()


# ---------------------------------------------------------------- the run


# The young generation's threshold during a run: each request makes a few dozen objects that
# live until its answer is written, so at the default (700 on most Pythons) a collection ran
# every few lines, scanning the requests in flight each time.
_RUN_GC_THRESHOLD = 10_000
# What the permanent generation holds before anyone froze anything: 0, but some interpreters
# (CPython 3.12.1: a few hundred objects) start with objects in it. More than this at the
# start of a run means the application (or another run) froze its heap: leave it be.
_FROZEN_AT_START = gc.get_freeze_count() if hasattr(gc, "get_freeze_count") else 0


class _QuietCollector:
    """The garbage collector's settings for the length of a run, and back.

    While a run goes on: the objects that existed before it are kept out of the collector's
    scans (`gc.freeze()`: the collections the run sets off then scan only what the run made,
    however big the application's heap is), and the young generation is collected every
    `_RUN_GC_THRESHOLD` allocations instead of every 700. Together they were about a fifth
    of the client's CPU per line in the benchmark. `restore` undoes both (`gc.unfreeze()`,
    the thresholds as they were, unless something else changed them meanwhile). Nothing is
    touched when the collector is off, or when objects are frozen already (by the
    application, or by a run still going on).
    """

    __slots__ = ("_ours", "_saved")

    def __init__(self) -> None:
        self._saved: tuple[int, ...] | None = None
        self._ours: tuple[int, ...] | None = None
        if (
            not hasattr(gc, "freeze")  # (PyPy's collector has none)
            or not gc.isenabled()
            or gc.get_freeze_count() > _FROZEN_AT_START
        ):
            return
        gc.freeze()
        self._saved = saved = gc.get_threshold()
        if 0 < saved[0] < _RUN_GC_THRESHOLD:
            gc.set_threshold(_RUN_GC_THRESHOLD, *saved[1:])
            self._ours = gc.get_threshold()

    def restore(self) -> None:
        """Put the collector back as it was before the run."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        if self._ours is not None and gc.get_threshold() == self._ours:
            gc.set_threshold(*saved)
        gc.unfreeze()


@attrs.define
class _Tally:
    lines: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Stop:
    """Stop requests: the first one is graceful, a second one stops at once."""

    def __init__(self) -> None:
        self.graceful = asyncio.Event()
        self.hard = asyncio.Event()
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        if self.graceful.is_set():
            self.hard.set()
            return
        self.reason = reason
        self.graceful.set()


@attrs.define
class RunOptions:
    """The settings of one run (one partition, for the cluster runners)."""

    concurrency: int = DEFAULT_CONCURRENCY
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    progress: bool = True
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    max_rate_limit_waits: int = DEFAULT_RATE_LIMIT_WAITS

    def __attrs_post_init__(self) -> None:
        concurrency = self.concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError("concurrency", f"must be an int >= 1, got {concurrency!r}")
        waits = self.max_rate_limit_waits
        if isinstance(waits, bool) or not isinstance(waits, int) or waits < 0:
            raise InvalidArgumentError(
                "max_rate_limit_waits", f"must be an int >= 0, got {waits!r}"
            )
        timeout = self.stop_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise InvalidArgumentError("stop_timeout", f"must be a number >= 0, got {timeout!r}")
        RateLimiter(self.requests_per_minute, self.tokens_per_minute)  # checks the limits


async def run_lines(
    lines: Iterator[tuple[int, bytes]],
    output: str,
    chat: AsyncChat | None,
    options: RunOptions,
    *,
    total: int | None = None,
    foreign_repeats: Collection[int] = (),
    handle_signals: bool = False,
) -> tuple[BatchSummary, str | None]:
    """Run numbered input lines into `output`; returns the summary and what stopped the run
    (`"SIGINT"`, `"SIGTERM"`, `"cancelled"`, or `None` when it ran to the end)."""
    from chatlib._async import AsyncChat, run_flow

    if chat is not None and not isinstance(chat, AsyncChat):
        # A SyncChat got as far as its first answer, then died with a TypeError.
        raise InvalidArgumentError(
            "chat", f"must be an AsyncChat (or None), got {type(chat).__name__}"
        )
    started = time.monotonic()
    own_chat = chat is None
    client = AsyncChat() if chat is None else chat
    try:
        fd, scan = open_output(output)
    except BaseException:
        if own_chat:
            await client.aclose()
        raise
    collector = _QuietCollector()
    try:
        writer = LineWriter(fd)
        checker = LineChecker(
            done_ids=scan.done_ids, done_lines=scan.done_lines, foreign_repeats=foreign_repeats
        )
        limiter = RateLimiter(options.requests_per_minute, options.tokens_per_minute)
        counters = Counters()
        tally = _Tally()
        already = len(scan.done_ids) + len(scan.done_lines)
        meter = ProgressMeter(started=started, total=total, done=already)
        display = _display(options.progress, total, already)
        stop = _Stop()
        slots = asyncio.Semaphore(options.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []
        transport = client._transport

        def finish_line(data: bytes, *, failed: bool, tokens: int = 0) -> None:
            writer.write(data)
            meter.finished(failed=failed, tokens=tokens)

        async def process(line: InputLine) -> None:
            meter.in_flight += 1
            try:
                try:
                    call = client._plan(line.request, {}, stream=None, timeout=None)
                except ChatLibError as exc:  # the body cannot be sent: an invalid line
                    tally.invalid += 1
                    why = f"line {line.number}: body.{exc}"
                    bad = InvalidLine(line.number, line.custom_id, "invalid_body", why)
                    finish_line(invalid_line(bad), failed=True)
                    return
                tokens = estimate_tokens(line.body) if limiter.counts_tokens else 0

                def start() -> Any:
                    # The call's flow, with its key function if any; a new deadline each time.
                    return call.json_flow(
                        parse_answer, clock=time.monotonic, wall_clock=time.time, rand=random.random
                    )

                flow = line_flow(
                    start,
                    limiter,
                    tokens=tokens,
                    clock=time.monotonic,
                    wall_clock=time.time,
                    rand=random.random,
                    counters=counters,
                    max_rate_limit_waits=options.max_rate_limit_waits,
                )
                try:
                    answer: Answer = await run_flow(flow, transport)
                except ChatLibError as exc:
                    tally.failed += 1
                    finish_line(error_line(line.custom_id, exc), failed=True)
                    return
                prompt, completion, used = answer.usage()
                tally.prompt_tokens += prompt
                tally.completion_tokens += completion
                tally.total_tokens += used
                if tokens:
                    limiter.settle(tokens, used)
                tally.succeeded += 1
                data = success_line(
                    line.custom_id, answer.status, answer.headers, answer.raw, answer.data
                )
                finish_line(data, failed=False, tokens=used)
            finally:
                meter.in_flight -= 1
                slots.release()

        def task_done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]
                stop.request("error")

        async def produce() -> None:
            loop = asyncio.get_running_loop()
            for count, (number, raw) in enumerate(lines, 1):
                if count % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if stop.graceful.is_set():
                    return
                tally.lines += 1
                item = checker.check(raw, number)
                if item is None:
                    tally.skipped += 1
                    continue
                if isinstance(item, InvalidLine):
                    tally.invalid += 1
                    finish_line(invalid_line(item), failed=True)
                    continue
                try:
                    await slots.acquire()
                except asyncio.CancelledError:
                    tally.lines -= 1  # not started: the next run reads it again
                    raise
                if stop.graceful.is_set():
                    slots.release()
                    tally.lines -= 1
                    return
                task = loop.create_task(process(item))
                tasks.add(task)
                task.add_done_callback(task_done)

        async def tick() -> None:
            while True:
                await asyncio.sleep(1.0)
                display.show(meter.snapshot(time.monotonic()))

        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            for signum, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
                try:
                    loop.add_signal_handler(signum, stop.request, name)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix
                    continue
                installed.append(signum)
        ticker = loop.create_task(tick()) if display is not None else None
        producer = loop.create_task(produce())
        stop_wait = loop.create_task(stop.graceful.wait())
        hard_wait = loop.create_task(stop.hard.wait())
        try:
            try:
                await asyncio.wait({producer, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                while tasks and not stop.graceful.is_set():
                    await asyncio.wait({*tasks, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                stop.request("cancelled")
                raise
            finally:
                if stop.graceful.is_set():
                    producer.cancel()
                    deadline = loop.time() + options.stop_timeout
                    while tasks and not stop.hard.is_set():
                        left = deadline - loop.time()
                        if left <= 0:
                            break
                        await asyncio.wait(
                            {*tasks, hard_wait}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                        )
                    for task in list(tasks):
                        task.cancel()
                await asyncio.gather(producer, *tasks, return_exceptions=True)
            if not producer.cancelled() and producer.exception() is not None:
                raise producer.exception()  # type: ignore[misc]
            if failures:
                raise failures[0]
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            for helper in (ticker, stop_wait, hard_wait):
                if helper is not None:
                    helper.cancel()
            summary = BatchSummary(
                output=output,
                retries=counters.retries,
                rate_limited=limiter.rate_limited,
                elapsed=time.monotonic() - started,
                interrupted=stop.reason is not None,
                **attrs.asdict(tally),
            )
            if display is not None:
                display.show(meter.snapshot(time.monotonic()))
                display.close(summary)
        return summary, stop.reason
    finally:
        collector.restore()
        os.close(fd)
        if own_chat:
            await client.aclose()


def _check_paths(input: PathLike, output: PathLike) -> tuple[str, str]:
    source, target = os.fspath(input), os.fspath(output)
    if not os.path.isfile(source):
        raise InvalidArgumentError("input", f"{source!r} is not a file")
    if os.path.exists(target) and os.path.samefile(source, target):
        raise InvalidArgumentError("output", "must not be the input file")
    if os.path.isdir(target):
        raise InvalidArgumentError("output", f"{target!r} is a directory, not a file")
    if os.path.exists(target) and not os.path.isfile(target):
        # A FIFO would block the resume scan forever, a device like /dev/full never ends.
        raise InvalidArgumentError("output", f"{target!r} is not a regular file")
    return source, target


async def run_async(
    input: PathLike,
    output: PathLike,
    *,
    chat: AsyncChat | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    progress: bool = True,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    max_rate_limit_waits: int = DEFAULT_RATE_LIMIT_WAITS,
) -> BatchSummary:
    """Run a Batch API input file through `chat`, inside a running event loop.

    The same as `run`, for code that already runs an event loop. Cancelling the task
    stops the run gracefully (nothing more is sent, the requests in flight get
    `stop_timeout` seconds, every finished line is in the output) and then raises
    `CancelledError`; run it again to resume. It installs no signal handlers.
    """
    options = RunOptions(
        concurrency=concurrency,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        progress=progress,
        stop_timeout=stop_timeout,
        max_rate_limit_waits=max_rate_limit_waits,
    )
    source, target = _check_paths(input, output)
    total = count_lines(source) if progress else None
    summary, _reason = await run_lines(read_lines(source), target, chat, options, total=total)
    return summary


def run(
    input: PathLike,
    output: PathLike,
    *,
    chat: AsyncChat | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    progress: bool = True,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    max_rate_limit_waits: int = DEFAULT_RATE_LIMIT_WAITS,
) -> BatchSummary:
    """Run every request of a Batch API input file; write one result line per input line.

    The input is streamed (never loaded whole) and at most `concurrency` requests are in
    flight, so memory stays flat whatever the file's size. Each finished line is appended to
    `output` and flushed at once; running again with the same `output` skips the lines it
    already holds (and redoes a line cut short by a crash), so after any number of crashes
    and re-runs the output holds every input `custom_id` exactly once. Lines finish, and
    are written, in the order their answers arrive. While it runs, the garbage collector is
    set for it: the objects that existed before it are left out of its scans (`gc.freeze()`),
    and its young generation is collected less often; both are undone when it ends.

    Args:
        input: The Batch API JSONL input file.
        output: The result file: created, or resumed when it exists.
        chat: The client to send with (its base URL, key, timeout and `max_retries`);
            default `AsyncChat()`, configured by the environment.
        concurrency: Requests in flight at most.
        requests_per_minute: Keep under this many requests per minute (retries count).
        tokens_per_minute: Keep under this many tokens per minute, estimated before each
            request (prompt length and `max_tokens`) and corrected by its `usage`.
        progress: Show progress on stderr (a tqdm bar when tqdm is installed, else a
            plain line at most once a second) and the summary at the end.
        stop_timeout: After Ctrl-C or SIGTERM, how long the requests in flight may take to
            finish before they are abandoned (a second Ctrl-C abandons them at once).
        max_rate_limit_waits: How many times one request is sent again after a 429 pause
            before the client's retry policy takes over.

    Returns:
        The run's `BatchSummary`.

    Raises:
        BatchInterrupted: Ctrl-C or SIGTERM stopped the run (gracefully); run again to resume.
        InvalidArgumentError: a bad argument (before anything is sent).
        OutputFileError: `output` holds lines not written by a batch run, or another run
            is writing it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run() cannot be called from a running event loop: use run_async()")
    options = RunOptions(
        concurrency=concurrency,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        progress=progress,
        stop_timeout=stop_timeout,
        max_rate_limit_waits=max_rate_limit_waits,
    )
    source, target = _check_paths(input, output)
    total = count_lines(source) if progress else None
    summary, reason = asyncio.run(
        run_lines(read_lines(source), target, chat, options, total=total, handle_signals=True)
    )
    if reason in ("SIGINT", "SIGTERM"):
        raise BatchInterrupted(summary, reason)
    return summary
