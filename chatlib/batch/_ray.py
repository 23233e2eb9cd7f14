"""`run_ray`: one input file over a Ray cluster (the `chatlib[ray]` extra).

Ray is imported when `run_ray` is called, never by `import chatlib.batch`.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

from chatlib.batch._format import PathLike
from chatlib.batch._partition import (
    PartitionJob,
    chat_for_workers,
    check_partitions,
    load_or_plan,
    merge,
    part_path,
    run_partition,
    split_limit,
)
from chatlib.batch._runner import DEFAULT_CONCURRENCY, DEFAULT_RATE_LIMIT_WAITS, RunOptions
from chatlib.batch._summary import BatchSummary
from chatlib.errors import InvalidArgumentError

__all__ = ["run_ray"]


def run_ray(
    input: PathLike,
    output_dir: PathLike,
    *,
    partitions: int | None = None,
    chat: Any = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    max_rate_limit_waits: int = DEFAULT_RATE_LIMIT_WAITS,
    max_retries: int = 3,
) -> BatchSummary:
    """Run a Batch API input file on a Ray cluster: one Ray task per partition.

    The same as `run_dask` (partitions, manifest, one resumable file per partition, the
    merged `results.jsonl`), on the Ray cluster this process is connected to (`ray.init()`
    first). A task whose worker process dies is run again by Ray (`max_retries`) and resumes
    its partition's file; re-running `run_ray` resumes every partition.

    Args:
        input: The Batch API input file (a path every node can read).
        output_dir: The directory every node writes the partitions' files to.
        partitions: How many partitions (default: 4 per CPU of the cluster); ignored when
            `output_dir` already has a manifest.
        chat: As for `run_dask`.
        concurrency: Requests in flight per partition.
        requests_per_minute: The limit for the whole cluster, split evenly between the
            partitions that run at once.
        tokens_per_minute: Likewise, for tokens.
        max_rate_limit_waits: As for `run`.
        max_retries: Times Ray runs a partition again after its worker died.

    Returns:
        The summary of all partitions, with `output` the merged file.
    """
    ray = importlib.import_module("ray")  # typed as Any: an optional extra

    started = time.monotonic()
    source, target = os.fspath(input), os.fspath(output_dir)
    if not os.path.isfile(source):
        raise InvalidArgumentError("input", f"{source!r} is not a file")
    if not ray.is_initialized():
        raise InvalidArgumentError("ray", "is not initialized: call ray.init() first")
    slots = int(ray.cluster_resources().get("CPU", 1)) or 1
    plan = load_or_plan(source, target, check_partitions(partitions, 4 * slots))
    options = RunOptions(
        concurrency=concurrency,
        requests_per_minute=split_limit(requests_per_minute, slots, len(plan)),
        tokens_per_minute=split_limit(tokens_per_minute, slots, len(plan)),
        progress=False,
        max_rate_limit_waits=max_rate_limit_waits,
    )
    shipped = chat_for_workers(chat)
    task = ray.remote(run_partition).options(max_retries=max_retries, num_cpus=1)
    refs = [
        task.remote(PartitionJob(source, part_path(target, part.index), part, shipped, options))
        for part in plan
    ]
    summaries: list[BatchSummary] = ray.get(refs)
    merged = merge(target, plan)
    return BatchSummary.combine(merged, summaries, time.monotonic() - started)
