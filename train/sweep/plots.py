"""The sweep's two plots, drawn from its leaderboard rows (seeds already aggregated)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

# matplotlib's object API, not pyplot: no global figure state, so the app's threads can draw at once
from matplotlib.figure import Figure

__all__ = ["pareto_front", "accuracy_vs_latency_figure", "plot_accuracy_vs_latency", "plot_transfer_modes"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point beats on both (faster and as accurate, or
    as fast and more accurate), ordered by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_accuracy_vs_latency(board: Sequence[dict[str, Any]], path: Path) -> Path:
    """accuracy_vs_latency_figure saved to `path`."""
    accuracy_vs_latency_figure(board).savefig(path, dpi=110)
    return path


def accuracy_vs_latency_figure(board: Sequence[dict[str, Any]]) -> Figure:
    """Mean test accuracy against ONNX Runtime latency per (data, arch, mode, size), the Pareto front joined."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    timed = [e for e in board if e.get("onnx_latency_ms_mean") is not None]
    for data in dict.fromkeys(e["data"] for e in timed):
        entries = [e for e in timed if e["data"] == data]
        points = [(e["onnx_latency_ms_mean"], e["accuracy_mean"]) for e in entries]
        ax.scatter(*zip(*points), label=data, alpha=0.8)
        several_sizes = len({e["img_size"] for e in entries}) > 1  # then each point says its input size too
        for e, (x, y) in zip(entries, points):
            label = f"{e['arch']} {e['mode']}" + (f" {e['img_size']} px" if several_sizes else "")
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = [points[i] for i in pareto_front(points)]
        ax.plot(*zip(*front), linestyle="--", marker="o", fillstyle="none", label=f"{data}: Pareto front")
    if not timed:
        ax.text(0.5, 0.5, "no run has a model.onnx to time", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("ONNX Runtime CPU latency, batch 1, 1 thread (ms)")
    ax.set_ylabel("test accuracy (mean over seeds)")
    ax.set_title("Accuracy vs latency")
    if timed:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_transfer_modes(board: Sequence[dict[str, Any]], path: Path) -> Path:
    """Bars of mean balanced accuracy (± std over seeds) per architecture, one bar per transfer mode, one
    panel per data set and input size."""
    panels = list(dict.fromkeys((e["data"], e["img_size"]) for e in board))
    fig = Figure(figsize=(8, 3.5 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)
    for ax, (data, size) in zip(axes[:, 0], panels):
        entries = [e for e in board if (e["data"], e["img_size"]) == (data, size)]
        archs = list(dict.fromkeys(e["arch"] for e in entries))
        modes = list(dict.fromkeys(e["mode"] for e in entries))
        width = 0.8 / len(modes)
        for m, mode in enumerate(modes):
            by_arch = {e["arch"]: e for e in entries if e["mode"] == mode}
            xs = [a + m * width for a, arch in enumerate(archs) if arch in by_arch]
            means = [by_arch[arch]["balanced_accuracy_mean"] for arch in archs if arch in by_arch]
            errors = [by_arch[arch]["balanced_accuracy_std"] or 0.0 for arch in archs if arch in by_arch]
            ax.bar(xs, means, width, yerr=errors, capsize=3, label=mode)
        ax.set_xticks([a + 0.4 - width / 2 for a in range(len(archs))], archs)
        ax.set_ylabel("balanced accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"Transfer modes per architecture: {data}, input {size}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
