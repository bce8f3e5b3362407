"""The latency/throughput figure of a perf sweep or a tune (matplotlib, written as PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from controlplane.errors import UsageError


def plot_curves(curves: dict[str, Sequence[tuple[float, float]]], path: Path, title: str,
                budget_ms: float | None = None, highlight: tuple[float, float] | None = None) -> Path:
    """One line per curve of (throughput, p99 ms) points; the latency budget and a chosen point when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if path.suffix.lower() != ".png":
        raise UsageError(f"plot file {path} must end in .png")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in curves.items():
        points = [p for p in points if p[1] is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=label)
    if budget_ms is not None:
        ax.axhline(budget_ms, color="red", linestyle="--", linewidth=1, label=f"p99 budget {budget_ms:g} ms")
    if highlight is not None:
        ax.plot([highlight[0]], [highlight[1]], marker="*", markersize=14, color="gold", markeredgecolor="black", label="best", linestyle="")
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(title)
    if len(curves) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
