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

from chatlib._lazy import attach_stub

# The public names are listed once, in `__init__.pyi`; each loads on first use, so building
# the `chatlib batch` command line loads no client, and `import chatlib.batch` never
# imports dask or ray.
__getattr__, __dir__ = attach_stub(__name__, __file__, globals())
