"""Plot a :class:`~inf2_deploy.benchmarking.runner.BenchResult`: latency percentiles and throughput against concurrency.

Four panels share the concurrency axis: TTFT, TPOT and E2E (p50, p90, p99 in
milliseconds) and output tokens per second with requests per second on a
second axis. matplotlib runs with the Agg backend, so no display is needed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..atomic import atomic_path
from .stats import PERCENTILES

if TYPE_CHECKING:
    from .runner import BenchResult
    from .stats import LevelStats

__all__ = ["plot_bench"]

_STYLES = {50.0: ("tab:blue", "o"), 90.0: ("tab:orange", "s"), 99.0: ("tab:red", "^")}


def _headroom(ax) -> None:  # noqa: ANN001 - a matplotlib Axes
    """Start the y axis at 0 and leave the top quarter free for the legend."""
    top = max((max(line.get_ydata(), default=0) for line in ax.get_lines()), default=0)
    ax.set_ylim(0, top * 1.35 if top > 0 else 1)


def _latency_panel(ax, levels: list[LevelStats], metric: str, title: str) -> None:  # noqa: ANN001 - an Axes
    """p50, p90 and p99 of one latency metric, in milliseconds."""
    for q in PERCENTILES:
        # a level where every request failed has no latency: leave a gap rather than a zero
        defined = [(s.concurrency, getattr(s, metric).p(q)) for s in levels if getattr(s, metric).count]
        if defined:
            color, marker = _STYLES[q]
            ax.plot([x for x, _ in defined], [y * 1000 for _, y in defined], color=color, marker=marker,
                    label=f"p{q:g}")
    ax.set_title(title)
    ax.set_ylabel("ms")
    _headroom(ax)
    ax.legend(loc="upper left", ncol=3)


def _throughput_panel(ax, levels: list[LevelStats]) -> None:  # noqa: ANN001 - an Axes
    """Output tokens/s, with requests/s on a second axis and each level's figures and errors written on."""
    xs = [s.concurrency for s in levels]
    ax.plot(xs, [s.output_tokens_per_second for s in levels], color="tab:green", marker="o",
            label="output tokens/s")
    ax.set_ylabel("output tokens/s", color="tab:green")
    _headroom(ax)
    ax.set_title("Throughput")
    rps = ax.twinx()
    rps.plot(xs, [s.requests_per_second for s in levels], color="tab:purple", marker="s", linestyle="--",
             label="requests/s")
    rps.set_ylabel("requests/s", color="tab:purple")
    _headroom(rps)
    for level in levels:
        # with a constant token count per request the two lines coincide; the labels keep both readable
        ax.annotate(f"{level.output_tokens_per_second:.0f} tok/s\n{level.requests_per_second:.2f} req/s",
                    (level.concurrency, level.output_tokens_per_second), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=8)
        if level.errors:
            ax.annotate(f"{level.errors} err", (level.concurrency, level.output_tokens_per_second),
                        textcoords="offset points", xytext=(0, -14), ha="center", color="tab:red", fontsize=8)
    lines = ax.get_legend_handles_labels()
    more = rps.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", ncol=2)


def _concurrency_axis(panels: list, xs: list[int]) -> None:
    """Tick every panel at the measured levels; a log scale when they span a factor of 8 or more."""
    from matplotlib.ticker import FixedLocator

    logarithmic = len(xs) > 1 and max(xs) / min(xs) >= 8
    for panel in panels:
        panel.set_xlabel("concurrency")
        panel.grid(True, alpha=0.3)
        if logarithmic:
            panel.set_xscale("log", base=2)
            panel.xaxis.set_minor_locator(FixedLocator([]))
        panel.xaxis.set_major_locator(FixedLocator(xs))
        if logarithmic:
            panel.set_xticklabels([str(x) for x in xs])


def plot_bench(result: BenchResult, path: str | os.PathLike[str]) -> Path:
    """Draw ``result`` into a PNG at ``path`` (temp file, then ``os.replace``).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    levels = [level.stats for level in result.levels]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    _latency_panel(axes[0][0], levels, "ttft", "Time to first token")
    _latency_panel(axes[0][1], levels, "tpot", "Time per output token")
    _latency_panel(axes[1][0], levels, "e2e", "End-to-end latency")
    _throughput_panel(axes[1][1], levels)
    _concurrency_axis([panel for row in axes for panel in row], [s.concurrency for s in levels])
    axes[1][1].margins(x=0.12)  # room for the throughput labels of the first and last level
    fig.suptitle(f"{result.target}: {result.prompt_tokens} prompt tokens, {result.max_new_tokens} new tokens")

    target = Path(path)
    try:
        with atomic_path(target, suffix=".png") as temp:
            fig.savefig(temp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return target
