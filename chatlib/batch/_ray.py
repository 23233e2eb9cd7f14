"""`run_ray`: one input file over a Ray cluster (the `chatlib[ray]` extra).

Ray is imported when `run_ray` is called, never by `import chatlib.batch`.
"""

from __future__ import annotations

import importlib
from typing import Any

from chatlib.batch._format import PathLike
from chatlib.batch._partition import plan_cluster_run, run_partition
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

    options = RunOptions(
        concurrency=concurrency,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        max_rate_limit_waits=max_rate_limit_waits,
    )
    if not ray.is_initialized():
        raise InvalidArgumentError("ray", "is not initialized: call ray.init() first")
    run = plan_cluster_run(
        input,
        output_dir,
        slots=lambda: int(ray.cluster_resources().get("CPU", 1)),
        partitions=partitions,
        chat=chat,
        options=options,
    )
    task = ray.remote(run_partition).options(max_retries=max_retries, num_cpus=1)
    summaries: list[BatchSummary] = ray.get([task.remote(job) for job in run.jobs])
    return run.finish(summaries)
