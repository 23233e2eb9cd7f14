"""What a run reports when it ends: `BatchSummary`, and `BatchInterrupted` for a stopped run."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from chatlib.batch._progress import format_duration

__all__ = ["BatchInterrupted", "BatchSummary"]


@attrs.frozen
class BatchSummary:
    """The figures of a run (of this run only, except `skipped`).

    Attributes:
        output: The output file (for `run_dask`/`run_ray`: the merged file).
        lines: Input lines read.
        skipped: Lines already done by a previous run (not sent again).
        succeeded: Requests answered (a result line without `error`).
        failed: Requests that failed for good (a result line with the error).
        invalid: Input lines that could not be run (reported as error lines).
        prompt_tokens: From the answers' `usage`.
        completion_tokens: From the answers' `usage`.
        total_tokens: From the answers' `usage`.
        retries: Requests sent again (the client's retries, and re-sends after a 429 pause).
        rate_limited: 429 answers received.
        elapsed: Seconds the run took.
        interrupted: Whether the run was stopped (Ctrl-C, SIGTERM, cancellation) before the
            end of the input; run it again to resume.
        partitions: How many partitions a cluster run had (1 for a local run).
    """

    output: str
    lines: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    retries: int = 0
    rate_limited: int = 0
    elapsed: float = 0.0
    interrupted: bool = False
    partitions: int = 1

    @property
    def complete(self) -> bool:
        """Every input line has its result line (nothing left for a re-run)."""
        return not self.interrupted and self.lines == (
            self.skipped + self.succeeded + self.failed + self.invalid
        )

    def __str__(self) -> str:
        rate = (self.succeeded + self.failed) * 60.0 / self.elapsed if self.elapsed else 0.0
        text = (
            f"{self.succeeded:,} succeeded, {self.failed:,} failed, {self.invalid:,} invalid, "
            f"{self.skipped:,} already done; {self.total_tokens:,} tokens; "
            f"{self.retries:,} retries, {self.rate_limited:,} rate-limited (429); "
            f"{format_duration(self.elapsed)} ({rate:,.0f} req/min) -> {self.output}"
        )
        if self.interrupted:
            text += " [interrupted: run again to resume]"
        return text

    @classmethod
    def combine(cls, output: str, parts: Iterable[BatchSummary], elapsed: float) -> BatchSummary:
        """The summary of a run made of `parts` (the partitions of a cluster run)."""
        parts = list(parts)
        total = {
            name: sum(getattr(part, name) for part in parts)
            for name in (
                "lines",
                "skipped",
                "succeeded",
                "failed",
                "invalid",
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "retries",
                "rate_limited",
            )
        }
        return cls(
            output=output,
            elapsed=elapsed,
            interrupted=any(part.interrupted for part in parts),
            partitions=len(parts),
            **total,
        )


class BatchInterrupted(KeyboardInterrupt):
    """`run()` was stopped by Ctrl-C or SIGTERM, gracefully: nothing was sent after the
    signal, the requests in flight were given a bounded time to finish, and every finished
    line is in the output. Run the same call again to resume.

    Attributes:
        summary: The figures of the run up to the stop.
        signal: `"SIGINT"` or `"SIGTERM"`.
    """

    def __init__(self, summary: BatchSummary, signal: str) -> None:
        super().__init__(f"batch stopped by {signal}: {summary}")
        self.summary = summary
        self.signal = signal
