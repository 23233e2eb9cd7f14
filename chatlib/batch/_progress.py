"""What the progress display says: counts, rates over the last minute, ETA. Pure.

The runner feeds a `ProgressMeter` (line finished, tokens used) and asks it for a
`ProgressSnapshot` at most once a second; `progress_line` and `progress_postfix` turn a
snapshot into the text of the plain stderr line and of the tqdm bar.
"""

from __future__ import annotations

from collections import deque

import attrs

__all__ = [
    "ProgressMeter",
    "ProgressSnapshot",
    "format_duration",
    "progress_line",
    "progress_postfix",
]

_WINDOW = 60.0  # seconds of history behind the rates


@attrs.frozen
class ProgressSnapshot:
    """The run at one moment.

    Attributes:
        total: Lines in the input (`None` when unknown).
        done: Lines with a result line (this run's and the previous runs').
        failed: Lines whose result is an error (this run).
        in_flight: Requests started and not finished.
        requests_per_minute: Lines finished per minute, over the last minute.
        tokens_per_minute: Tokens used per minute, over the last minute.
        eta: Seconds left at that pace (`None` when unknown).
        elapsed: Seconds since the run started.
    """

    total: int | None
    done: int
    failed: int
    in_flight: int
    requests_per_minute: float
    tokens_per_minute: float
    eta: float | None
    elapsed: float


@attrs.define
class ProgressMeter:
    """Counts finished lines and tokens; rates come from a minute of samples."""

    started: float
    total: int | None = None
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    tokens: int = 0
    _samples: deque[tuple[float, int, int]] = attrs.field(factory=deque)

    def __attrs_post_init__(self) -> None:
        self._samples.append((self.started, self.done, self.tokens))

    def finished(self, *, failed: bool = False, tokens: int = 0) -> None:
        """One line got its result line."""
        self.done += 1
        self.failed += failed
        self.tokens += tokens

    def snapshot(self, now: float) -> ProgressSnapshot:
        """The run at `now` (records a sample for the rates)."""
        samples = self._samples
        samples.append((now, self.done, self.tokens))
        while len(samples) > 2 and now - samples[1][0] >= _WINDOW:
            samples.popleft()
        first_time, first_done, first_tokens = samples[0]
        span = now - first_time
        rpm = (self.done - first_done) * 60.0 / span if span > 0 else 0.0
        tpm = (self.tokens - first_tokens) * 60.0 / span if span > 0 else 0.0
        eta = None
        if self.total is not None and rpm > 0:
            eta = max(self.total - self.done, 0) * 60.0 / rpm
        return ProgressSnapshot(
            total=self.total,
            done=self.done,
            failed=self.failed,
            in_flight=self.in_flight,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            eta=eta,
            elapsed=now - self.started,
        )


def format_duration(seconds: float | None) -> str:
    """`1:02:03`, `4:05`; `?` when unknown."""
    if seconds is None:
        return "?"
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _compact(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def progress_postfix(snapshot: ProgressSnapshot) -> str:
    """The figures a progress bar does not show itself: failures, in flight, rates."""
    return (
        f"failed {snapshot.failed:,} · in flight {snapshot.in_flight} · "
        f"{_compact(snapshot.requests_per_minute)} req/min · "
        f"{_compact(snapshot.tokens_per_minute)} tok/min"
    )


def progress_line(snapshot: ProgressSnapshot) -> str:
    """The whole plain-text progress line."""
    if snapshot.total:
        share = 100.0 * snapshot.done / snapshot.total
        count = f"{snapshot.done:,}/{snapshot.total:,} ({share:.1f}%)"
    else:
        count = f"{snapshot.done:,}"
    return (
        f"batch: {count} done · {progress_postfix(snapshot)} · "
        f"elapsed {format_duration(snapshot.elapsed)} · ETA {format_duration(snapshot.eta)}"
    )
