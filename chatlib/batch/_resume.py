"""What a previous run left in the output file: the lines done, and a torn last line. Pure.

The runner appends one whole line per finished request and flushes it, so a run killed at
any point (SIGKILL included) leaves complete lines, then at most one line cut short: the
one being written. `ResumeScan` is fed the file's bytes and tells which `custom_id`s (and
which invalid input lines) are done, and how many bytes to keep: everything up to the last
complete line. The torn line is dropped and its request is sent again.
"""

from __future__ import annotations

import json

import attrs

from chatlib.batch._format import OWN_LINE_PREFIX, OutputFileError
from chatlib.batch._idset import IdSet

__all__ = ["OutputFileError", "ResumeScan"]

# How every line a run writes starts: a torn last line is a piece of one.
_OWN_HEAD = b'{"id":"'


@attrs.define
class ResumeScan:
    """Feed it an output file's bytes (`feed`, in any pieces), then `finish`.

    Attributes:
        done_ids: The `custom_id`s with a result line.
        done_lines: Input line numbers reported as invalid (result lines without a
            `custom_id`).
        keep_bytes: The length of the file up to the end of its last complete line.
        torn: The bytes of a torn last line (empty when there is none).
        lines: How many complete lines were read.
    """

    done_ids: IdSet = attrs.field(factory=IdSet)
    done_lines: set[int] = attrs.field(factory=set)
    keep_bytes: int = 0
    torn: bytes = b""
    lines: int = 0
    _pending: bytearray = attrs.field(factory=bytearray)

    def feed(self, data: bytes) -> None:
        """Read the next piece of the file."""
        self._pending += data
        start = 0
        pending = self._pending
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            self._line(bytes(pending[start : end + 1]))
            start = end + 1
        del pending[:start]

    def finish(self) -> ResumeScan:
        """No more bytes: what is left without a newline is a torn line.

        Raises:
            OutputFileError: what is left is not the start of a result line (a file not
                written by a batch run: dropping it as a torn line would cut it off).
        """
        torn = bytes(self._pending)
        head = torn[: len(_OWN_HEAD)]
        if torn.strip() and not _OWN_HEAD.startswith(head):
            raise OutputFileError(
                f"line {self.lines + 1} of the output file has no line end and is not a result "
                "line cut short: it was not written by a batch run; fix or move the file "
                "(nothing was changed)"
            )
        self.torn = torn
        self._pending.clear()
        return self

    def _line(self, raw: bytes) -> None:
        self.lines += 1
        number = self.lines
        self.keep_bytes += len(raw)
        if not raw.strip():
            return
        own = OWN_LINE_PREFIX.match(raw)
        if own is not None:
            self.done_ids.add(json.loads(own.group(1)))
            return
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise OutputFileError(
                f"line {number} of the output file is not JSON: it was not written by a batch "
                "run; fix or move the file (nothing was changed)"
            ) from None
        custom_id = data.get("custom_id") if isinstance(data, dict) else None
        if isinstance(custom_id, str):
            self.done_ids.add(custom_id)
            return
        error = data.get("error") if isinstance(data, dict) else None
        line = error.get("line") if isinstance(error, dict) else None
        if isinstance(line, int) and not isinstance(line, bool):
            self.done_lines.add(line)
            return
        raise OutputFileError(
            f"line {number} of the output file is not a result line (no custom_id, no "
            "error.line); fix or move the file (nothing was changed)"
        )
