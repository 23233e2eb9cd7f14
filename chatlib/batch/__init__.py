"""Thousands to millions of chats from a file: the Batch API format and its runners.

```python
from chatlib import batch

batch.write_requests("input.jsonl", {"q1": {"model": "gpt-4o-mini", "messages": [...]}})
summary = batch.run("input.jsonl", "output.jsonl", requests_per_minute=5_000)
for result in batch.read_results("output.jsonl"):
    print(result.custom_id, result.text if result.ok else result.error)
```

The files are OpenAI's Batch API JSONL (the same input file can be uploaded to OpenAI's
server-side batches); `run` is resumable, rate-limited and crash-safe; `run_dask` and
`run_ray` spread a file over a cluster (extras `chatlib[dask]`, `chatlib[ray]`, imported
only when called). See the "Batches and scale-out" page of the documentation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatlib.batch._format import (
    BatchError,
    BatchResult,
    read_results,
    request_line,
    write_requests,
)
from chatlib.batch._limits import RateLimiter
from chatlib.batch._resume import OutputFileError
from chatlib.batch._runner import run, run_async
from chatlib.batch._summary import BatchInterrupted, BatchSummary

if TYPE_CHECKING:
    from chatlib.batch._dask import run_dask
    from chatlib.batch._ray import run_ray

__all__ = [
    "BatchError",
    "BatchInterrupted",
    "BatchResult",
    "BatchSummary",
    "OutputFileError",
    "RateLimiter",
    "read_results",
    "request_line",
    "run",
    "run_async",
    "run_dask",
    "run_ray",
    "write_requests",
]


def __getattr__(name: str) -> Any:
    # The cluster runners load on first use, so `import chatlib.batch` never imports
    # dask or ray (nor the modules that would).
    if name == "run_dask":
        from chatlib.batch._dask import run_dask

        return run_dask
    if name == "run_ray":
        from chatlib.batch._ray import run_ray

        return run_ray
    raise AttributeError(f"module 'chatlib.batch' has no attribute {name!r}")
