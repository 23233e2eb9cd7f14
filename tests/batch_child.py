"""A batch run in a process of its own, for the tests that kill it (not a test module).

    python tests/batch_child.py INPUT OUTPUT BASE_URL [--tear-at N MARKER]

With `--tear-at N MARKER`, the N-th result line is written in two halves: after the first
half the process creates MARKER and sleeps, so a test can SIGKILL it mid-write and leave a
real torn line behind.
"""

from __future__ import annotations

import os
import sys
import time

from chatlib import AsyncChat
from chatlib.batch import _runner, run


def tear_at(number: int, marker: str) -> None:
    original = _runner.LineWriter.write
    count = 0

    def write(self: _runner.LineWriter, data: bytes) -> None:
        nonlocal count
        count += 1
        if count != number:
            original(self, data)
            return
        half = len(data) // 2
        os.write(self._fd, data[:half])  # the first half reaches the file...
        with open(marker, "w") as flag:
            flag.write("torn")
        time.sleep(60)  # ... and the test kills the process before the second half
        original(self, data[half:])

    _runner.LineWriter.write = write  # type: ignore[method-assign]


def main() -> None:
    source, target, base_url = sys.argv[1:4]
    if "--tear-at" in sys.argv:
        at = sys.argv.index("--tear-at")
        tear_at(int(sys.argv[at + 1]), sys.argv[at + 2])
    chat = AsyncChat(base_url=base_url, api_key="sk-child")
    summary = run(source, target, chat=chat, concurrency=8, progress=False)
    print(summary.succeeded, flush=True)


if __name__ == "__main__":
    main()
