"""The chart of ``run_all.py``: every figure as a ratio to its floor, chatlib beside openai.

matplotlib is a benchmark-only dependency (``pip install -e '.[bench]'``); nothing in
chatlib imports it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # a file, never a window

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter


def draw(
    figures: Sequence[tuple[str, float | None, float | None, float | None]],
    note: str,
    path: str,
) -> None:
    """A horizontal bar chart (log scale) of chatlib ÷ floor and openai ÷ floor per figure
    that has a floor; the floor is the line at 1."""
    rows = [(what, raw, ours, peer) for what, raw, ours, peer in figures if raw and ours]
    rows.reverse()  # the first figure at the top
    height = 0.38
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(rows) + 1.6))
    ys = range(len(rows))
    ours_ratio = [ours / raw for _, raw, ours, _ in rows]
    peer_ratio = [(peer / raw) if peer else 0 for _, raw, _, peer in rows]
    ax.barh([y + height / 2 for y in ys], ours_ratio, height, label="chatlib", color="#2b7bba")
    ax.barh([y - height / 2 for y in ys], peer_ratio, height, label="openai", color="#c9c9c9")
    for y, value in zip(ys, ours_ratio, strict=True):
        ax.text(value * 1.03, y + height / 2, f"{value:.2f}x", va="center", fontsize=7)
    for y, value in zip(ys, peer_ratio, strict=True):
        if value:
            ax.text(value * 1.03, y - height / 2, f"{value:.2f}x", va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.axvline(1.25, color="#d62728", linewidth=0.8, linestyle="--", label="1.25x the floor")
    ax.set_xscale("log")
    ticks = [
        t
        for t in (0.5, 0.8, 1, 1.25, 1.5, 2, 3, 5, 10, 20, 50, 100)
        if t <= max([*ours_ratio, *peer_ratio, 1.3]) * 1.2
    ]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(list(ys))
    ax.set_yticklabels(["\n".join(textwrap.wrap(what, 60)) for what, *_ in rows], fontsize=7)
    ax.set_xlabel("cost relative to the floor (raw HTTP library + json.loads = 1; lower is better)")
    ax.set_title("chatlib and the official openai SDK against the floor", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(note, 170)), fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
