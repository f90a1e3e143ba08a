"""A PNG of a benchmark run: throughput, latency percentiles and job durations side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(rows: list[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Draw the run's rows into `out`; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    throughput = [r for r in rows if r["unit"] == "ev/s"]
    latency = [r for r in rows if r["unit"] == "ms"]
    durations = [r for r in rows if r["unit"] == "s"]
    fig, axes = plt.subplots(1, 3, figsize=(20, 7), gridspec_kw={"width_ratios": [1, 2, 1]})
    _bars(axes[0], [f"{r['scenario']}\n{r['who']}" for r in throughput], [r["median"] for r in throughput],
          [(r["min"], r["max"]) for r in throughput], "events/s (log)")
    _latency(axes[1], latency)
    _bars(axes[2], [f"{r['scenario']}\n{r['who']}" for r in durations], [r["median"] for r in durations],
          [(r["min"], r["max"]) for r in durations], "seconds (log)")
    fig.suptitle(f"featurestore benchmarks: {title} (bars: median; whiskers: min–max)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _bars(ax: Any, labels: list[str], values: list[float], ranges: list[tuple[float, float]], ylabel: str) -> None:
    if not values:
        ax.set_visible(False)
        return
    lows = [v - lo for v, (lo, _) in zip(values, ranges)]
    highs = [hi - v for v, (_, hi) in zip(values, ranges)]
    colours = ["tab:blue" if "featurestore" in label else "tab:gray" for label in labels]
    ax.barh(range(len(values)), values, xerr=[lows, highs], color=colours)
    ax.set_yticks(range(len(values)), [_wrap(label) for label in labels], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(ylabel)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,.3g}", va="center", fontsize=7)


def _latency(ax: Any, rows: list[dict[str, Any]]) -> None:
    """p50 and p99 of each (scenario, who) as a pair of bars."""
    groups: dict[str, dict[str, float]] = {}
    for r in rows:
        groups.setdefault(f"{r['scenario']}\n{r['who']}", {})[r["metric"]] = r["median"]
    labels = list(groups)
    if not labels:
        ax.set_visible(False)
        return
    for offset, metric, colour in ((-0.2, "p50", "tab:green"), (0.2, "p99", "tab:red")):
        values = [groups[label].get(metric, 0.0) for label in labels]
        ax.barh([i + offset for i in range(len(labels))], values, height=0.4, color=colour, label=metric)
        for i, v in enumerate(values):
            if v:
                ax.text(v, i + offset, f" {v:.3g}", va="center", fontsize=6)
    ax.set_yticks(range(len(labels)), [_wrap(label) for label in labels], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log)")
    ax.invert_yaxis()
    ax.legend()


def _wrap(label: str, width: int = 48) -> str:
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in label.split("\n"))
