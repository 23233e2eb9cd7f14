"""Splitting one input file into partitions for a cluster, and putting the results together.

Shared by `run_dask` and `run_ray`. `plan_partitions` reads the input once: it cuts it into
byte ranges of about the same number of lines, and finds the lines whose `custom_id`
repeats an earlier line anywhere in the file (a partition alone could not see a repeat
across partitions). The plan is written to `manifest.json` in the output directory and
reused by every re-run, so a line always belongs to the same partition and each partition
resumes its own file: exactly once, whatever was killed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import attrs

from chatlib.batch._format import bounded_lines
from chatlib.batch._idset import IdSet
from chatlib.batch._runner import RunOptions, read_lines, run_lines
from chatlib.batch._summary import BatchSummary
from chatlib.errors import InvalidArgumentError

__all__ = [
    "MANIFEST",
    "MERGED",
    "Partition",
    "PartitionJob",
    "fingerprint",
    "load_or_plan",
    "merge",
    "part_path",
    "plan_partitions",
    "run_partition",
    "split_limit",
]

MANIFEST = "manifest.json"
MERGED = "results.jsonl"
_LEADING_ID = re.compile(rb'\s*\{\s*"custom_id"\s*:\s*("(?:[^"\\]|\\.)*")\s*[,}]')


@attrs.frozen
class Partition:
    """Lines `first_line`... of the input, bytes `start` to `end`; `repeats`: its lines
    whose `custom_id` repeats an earlier line of the file."""

    index: int
    start: int
    end: int
    first_line: int
    lines: int
    repeats: tuple[int, ...] = ()


def _custom_id(raw: bytes) -> str | None:
    match = _LEADING_ID.match(raw)
    try:
        if match is not None:
            value = json.loads(match.group(1))
        else:
            data = json.loads(raw)
            value = data.get("custom_id") if isinstance(data, dict) else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, str) and value else None


def plan_partitions(path: str, partitions: int) -> list[Partition]:
    """Cut `path` into at most `partitions` ranges of about the same number of lines."""
    offsets: list[int] = []  # byte offset of each non-blank line
    numbers: list[int] = []  # its line number
    repeats: list[int] = []
    seen = IdSet()
    position = 0
    with open(path, "rb") as handle:
        for number, (raw, length) in enumerate(bounded_lines(handle), 1):
            if not raw.isspace():
                offsets.append(position)
                numbers.append(number)
                custom_id = _custom_id(raw)
                if custom_id is not None and not seen.add(custom_id):
                    repeats.append(number)
            position += length
    count = len(offsets)
    parts = max(1, min(partitions, count))
    plan: list[Partition] = []
    for index in range(parts):
        first, last = index * count // parts, (index + 1) * count // parts
        if first == last:
            continue
        start = offsets[first]
        end = offsets[last] if last < count else position
        low, high = numbers[first], numbers[last - 1]
        plan.append(
            Partition(
                index=len(plan),
                start=start,
                end=end,
                first_line=low,
                lines=last - first,
                repeats=tuple(n for n in repeats if low <= n <= high),
            )
        )
    if not plan:
        plan.append(Partition(0, 0, position, 1, 0))
    return plan


def part_path(output_dir: str, index: int) -> str:
    """The output file of partition `index`."""
    return os.path.join(output_dir, f"part-{index:05d}.jsonl")


def fingerprint(path: str) -> str:
    """The size and a hash of the first and last 64 KiB of a file: enough to tell that an
    input is not the one a run was started with."""
    size = os.path.getsize(path)
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 16))
        handle.seek(max(size - (1 << 16), 0))
        digest.update(handle.read(1 << 16))
    return f"{size}:{digest.hexdigest()}"


def load_or_plan(input: str, output_dir: str, partitions: int) -> list[Partition]:
    """The partitions of a run: from the directory's manifest when a previous run left
    one (the same input required), else planned now and written down."""
    os.makedirs(output_dir, exist_ok=True)
    manifest = os.path.join(output_dir, MANIFEST)
    print_ = fingerprint(input)
    if os.path.exists(manifest):
        with open(manifest, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved.get("input_fingerprint") != print_:
            raise InvalidArgumentError(
                "input",
                f"is not the file {output_dir!r} was started with ({saved.get('input')!r}): "
                "its lines would not match the partitions already written; use a new output "
                "directory",
            )
        return [
            Partition(**{**part, "repeats": tuple(part["repeats"])}) for part in saved["partitions"]
        ]
    plan = plan_partitions(input, partitions)
    temporary = manifest + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "input": os.path.abspath(input),
                "input_fingerprint": print_,
                "partitions": [attrs.asdict(part) for part in plan],
            },
            handle,
        )
    os.replace(temporary, manifest)
    return plan


def split_limit(limit: float | None, workers: int, partitions: int) -> float | None:
    """Each partition's share of a run's rate limit: the limit over the partitions that can
    run at once (never more than the number of worker slots)."""
    if limit is None:
        return None
    return limit / max(1, min(workers, partitions))


@attrs.frozen
class PartitionJob:
    """What a worker needs to run one partition (it pickles: no key travels with `chat`)."""

    input: str
    output: str
    partition: Partition
    chat: Any
    options: RunOptions


def run_partition(job: PartitionJob) -> BatchSummary:
    """Run one partition into its own file (resuming it); on a worker, in its own loop."""
    from chatlib._async import AsyncChat

    chat = job.chat
    if chat is not None and not isinstance(chat, AsyncChat) and callable(chat):
        chat = chat(job.partition.index)
    part = job.partition
    lines = read_lines(job.input, part.start, part.end, part.first_line)
    summary, reason = asyncio.run(
        run_lines(lines, job.output, chat, job.options, foreign_repeats=frozenset(part.repeats))
    )
    if reason is not None:
        raise RuntimeError(f"partition {part.index} was stopped ({reason}); run again to resume")
    return summary


def merge(output_dir: str, plan: list[Partition]) -> str:
    """Concatenate the partitions' files into `results.jsonl` (replaced whole)."""
    target = os.path.join(output_dir, MERGED)
    temporary = target + ".tmp"
    with open(temporary, "wb") as out:
        for part in plan:
            path = part_path(output_dir, part.index)
            if os.path.exists(path):
                with open(path, "rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
    os.replace(temporary, target)
    return target


def chat_for_workers(chat: Any) -> Any:
    """Check `chat` before it travels: an `AsyncChat`, a callable `index -> AsyncChat`
    (called on the worker), or `None` (`AsyncChat()` on the worker, from its environment)."""
    from chatlib._async import AsyncChat

    if chat is None or isinstance(chat, AsyncChat) or callable(chat):
        return chat
    raise InvalidArgumentError(
        "chat", f"must be an AsyncChat, a callable returning one, or None; got {chat!r}"
    )


@attrs.frozen
class ClusterRun:
    """A run planned for a cluster: one job per partition, and how to finish once every
    partition's summary is back. The engines (`run_dask`, `run_ray`) only ship the jobs."""

    output_dir: str
    plan: list[Partition]
    jobs: list[PartitionJob]
    started: float

    def finish(self, summaries: list[BatchSummary]) -> BatchSummary:
        """Merge the partitions' files and add up their summaries."""
        merged = merge(self.output_dir, self.plan)
        return BatchSummary.combine(merged, summaries, time.monotonic() - self.started)


def plan_cluster_run(
    input: Any,
    output_dir: Any,
    *,
    slots: Callable[[], int],
    partitions: int | None,
    chat: Any,
    options: RunOptions,
) -> ClusterRun:
    """Check a cluster run's arguments and plan it (or take the plan of the run it resumes).

    `slots()` counts the partitions the cluster runs at once (asked only once the input is
    known to exist): the default is 4 partitions per slot, and the rate limits in `options`
    (the whole cluster's) are split between the partitions that run at once.
    """
    started = time.monotonic()
    source, target = os.fspath(input), os.fspath(output_dir)
    if not os.path.isfile(source):
        raise InvalidArgumentError("input", f"{source!r} is not a file")
    workers = slots() or 1
    plan = load_or_plan(source, target, check_partitions(partitions, 4 * workers))
    shares = attrs.evolve(
        options,
        requests_per_minute=split_limit(options.requests_per_minute, workers, len(plan)),
        tokens_per_minute=split_limit(options.tokens_per_minute, workers, len(plan)),
        progress=False,
    )
    shipped = chat_for_workers(chat)
    jobs = [
        PartitionJob(source, part_path(target, part.index), part, shipped, shares) for part in plan
    ]
    return ClusterRun(target, plan, jobs, started)


def check_partitions(partitions: int | None, default: int) -> int:
    """The number of partitions asked for (or `default`), checked."""
    if partitions is None:
        return default
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise InvalidArgumentError("partitions", f"must be an int >= 1, got {partitions!r}")
    return partitions


Factory = Callable[[int], Any]
