"""The plots of ``classzoo report``: one PNG per metric, every run on it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from classzoo.report import Run

# file, title, y label, curves: (kind, key, line style, legend suffix)
PLOTS = (
    ("loss.png", "Training loss", "loss", [("train", "loss", "-", "")]),
    ("eval_loss.png", "Evaluation loss", "loss", [("eval", "loss", "-", "")]),
    ("lr.png", "Learning rate", "learning rate", [("train", "lr", "-", "")]),
    ("accuracy.png", "Evaluation accuracy", "accuracy (%)", [("eval", "top1", "-", " top-1"), ("eval", "top5", "--", " top-5")]),
    ("fps.png", "Training throughput", "images/s (all devices)", [("train", "fps", "-", "")]),
)  # fmt: skip
LOG_SPREAD = 10  # peaks further apart than this (1e-4 fine-tune vs 0.045) -> log y axis


def write_plots(runs: list[Run], out_dir: Path) -> list[tuple[str, str]]:
    """Write one PNG per metric with every run on it; returns (file, title) of those written.

    Uses ``Figure`` with an Agg canvas rather than pyplot: no display needed, and the global
    backend of the caller (a notebook, say) is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    for filename, title, ylabel, curves in PLOTS:
        fig = Figure(figsize=(7, 4.5), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        peaks = []
        for index, run in enumerate(runs):
            for kind, key, style, suffix in curves:
                lines = run.train if kind == "train" else run.evals
                points = sorted(
                    (x["epoch"], x[key]) for x in lines if None not in (x.get("epoch"), x.get(key))
                )
                if not points:
                    continue
                xs, ys = zip(*points)
                marker = "o" if len(xs) <= 30 else None  # a few evals: show each one
                ax.plot(
                    xs,
                    ys,
                    style,
                    color=f"C{index % 10}",
                    marker=marker,
                    ms=4,
                    label=run.name + suffix,
                )
                peaks.append(max(ys))
        if not peaks:
            continue  # no run logged this metric
        if min(peaks) > 0 and max(peaks) / min(peaks) > LOG_SPREAD:
            ax.set_yscale("log", nonpositive="mask")  # a cosine ending at 0: drop that point
            ylabel += " (log scale)"
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.savefig(out_dir / filename)
        written.append((filename, title))
    return written
