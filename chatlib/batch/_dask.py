"""`run_dask`: one input file over a Dask cluster (the `chatlib[dask]` extra).

Dask is imported when `run_dask` is called, never by `import chatlib.batch`.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from chatlib.batch._format import PathLike
from chatlib.batch._partition import plan_cluster_run, run_partition
from chatlib.batch._runner import DEFAULT_CONCURRENCY, DEFAULT_RATE_LIMIT_WAITS, RunOptions
from chatlib.batch._summary import BatchSummary

__all__ = ["run_dask"]


def run_dask(
    input: PathLike,
    output_dir: PathLike,
    *,
    client: Any = None,
    partitions: int | None = None,
    chat: Any = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    max_rate_limit_waits: int = DEFAULT_RATE_LIMIT_WAITS,
    retries: int = 3,
) -> BatchSummary:
    """Run a Batch API input file on a Dask cluster: one task per partition.

    The input is cut into `partitions` ranges of lines (planned once, kept in
    `output_dir/manifest.json`); each task runs the async runner on a worker over its range
    and appends to `output_dir/part-NNNNN.jsonl`, resuming it when it exists. When every
    partition is done, they are concatenated into `output_dir/results.jsonl`. A task whose
    worker dies is run again by Dask on another worker and resumes the partition's file;
    re-running `run_dask` after a failure resumes every partition. `input` and
    `output_dir` must be paths every worker can read and write (a shared file system; on
    a `LocalCluster`, any local path).

    Args:
        input: The Batch API input file.
        output_dir: The directory for the partitions' files, the manifest and
            `results.jsonl`.
        client: A `distributed.Client`; default: the current one (`distributed.get_client()`).
        partitions: How many partitions (default: 4 per worker thread); ignored when
            `output_dir` already has a manifest.
        chat: An `AsyncChat` (it is pickled: its API key is not, so workers read
            `OPENAI_API_KEY`), a callable `partition_index -> AsyncChat` called on the
            worker (one server or key per partition), or `None` for `AsyncChat()` on each
            worker, configured by the worker's environment.
        concurrency: Requests in flight per partition.
        requests_per_minute: The limit for the whole cluster, split evenly between the
            partitions that run at once.
        tokens_per_minute: Likewise, for tokens.
        max_rate_limit_waits: As for `run`.
        retries: Times Dask runs a partition again after it raised.

    Returns:
        The summary of all partitions, with `output` the merged file.
    """
    distributed = importlib.import_module("distributed")  # typed as Any: an optional extra

    options = RunOptions(
        concurrency=concurrency,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        max_rate_limit_waits=max_rate_limit_waits,
    )
    if client is None:
        client = distributed.get_client()
    run = plan_cluster_run(
        input,
        output_dir,
        slots=lambda: sum(client.nthreads().values()),
        partitions=partitions,
        chat=chat,
        options=options,
    )
    futures = client.map(
        run_partition,
        run.jobs,
        pure=False,
        retries=retries,
        key=[f"chatlib-batch-{j.partition.index}-{time.time_ns()}" for j in run.jobs],
    )
    summaries: list[BatchSummary] = client.gather(futures)
    return run.finish(summaries)
