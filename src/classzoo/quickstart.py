"""``classzoo quickstart``: the main job on real bundled data, minutes on a laptop CPU.

Fashion-MNIST -> ImageFolder on disk -> the ``quickstart`` recipe through the same engine as the
big recipes -> evaluation on all 10,000 test images -> a result table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from classzoo.config import load_recipe, with_overrides, with_values
from classzoo.data.fashion_mnist import export_imagefolder
from classzoo.engine.logs import setup_console_logging

log = logging.getLogger("classzoo")


def quickstart(output_dir: Path, data_dir: Path | None = None, overrides: list[str] = ()) -> dict:
    setup_console_logging(True)
    t0 = time.perf_counter()
    output_dir = Path(output_dir)
    log.info("preparing Fashion-MNIST as an ImageFolder in %s", output_dir / "data")
    folder = export_imagefolder(data_dir, output_dir / "data" / "fashion-mnist")
    log.info("dataset ready in %.1f s", time.perf_counter() - t0)
    cfg = with_values(load_recipe("quickstart"), {"data.dir": str(folder)}, "quickstart")
    cfg = with_overrides(cfg, list(overrides))
    from classzoo.engine.run import run

    # a demo: a rerun replaces its own previous run folder (logged); the data folder is reused
    summary = run(cfg, output_dir / "run", overwrite=True)
    wall = time.perf_counter() - t0
    print(result_table(summary, wall))
    print(
        f"\nrun folder: {output_dir / 'run'} (config.yaml, train.log, eval.log, metrics.jsonl, checkpoints/)"
    )
    return summary


def result_table(summary: dict, wall: float) -> str:
    rows = [
        ("model", summary["model"]),
        ("top-1", f"{summary['top1']:.2f} %" if summary.get("top1") is not None else "n/a"),
        ("top-5", f"{summary['top5']:.2f} %" if summary.get("top5") is not None else "n/a"),
        ("test images", f"{summary.get('count')}"),
        (
            "train images/s",
            f"{summary['images_per_sec']:.0f}" if summary.get("images_per_sec") else "n/a",
        ),
        ("epochs", f"{summary['epochs']:g}"),
        ("precision", "fp32" if summary["amp"] == "off" else summary["amp"]),
        ("devices", f"{summary['world_size']} x {summary['device']}"),
        ("wall time", f"{wall:.0f} s (data preparation included)"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["", "| " + "metric".ljust(width) + " | value |", "|" + "-" * (width + 2) + "|-------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    return "\n".join(lines)
