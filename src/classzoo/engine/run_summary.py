"""summary.json of a run folder: the final evaluation, throughput and what they were of."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from classzoo.config import Config
from classzoo.engine.resolve import Resolved


def previous_summary(run_dir: Path) -> dict[str, Any]:
    """The run folder's summary.json before this attempt ({} when none or unreadable)."""
    try:
        old = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}


def run_summary(
    asked: Config,
    r: Resolved,
    result: dict,
    ips: float | None,
    epochs: float,
    wall: float,
    run_dir: Path,
) -> dict[str, Any]:
    """summary.json: the run's final evaluation and figures. ``ips`` None: this attempt
    trained nothing (a resume of a finished run), so the figures already there are kept."""
    summary = {
        "recipe": asked.recipe,
        "model": r.model,
        "top1": result.get("top1"),
        "top5": result.get("top5"),
        "loss": result.get("loss"),
        "count": result.get("count"),
        "images_per_sec": ips,
        "epochs": round(epochs, 3),
        "amp": r.train_precision,
        "eval_precision": r.eval_precision,
        "eval_weights": "ema" if asked.train.ema else "model",  # what top1 / loss were of
        "world_size": r.world_size,
        "device": r.device.split(":")[0],
        "global_batch_size": r.schedule.global_batch if r.schedule else None,
        "wall_time_s": round(wall, 1),
    }
    if ips is None and asked.train.mode != "evaluate":
        before = previous_summary(run_dir)
        kept = {k: before[k] for k in ("images_per_sec", "wall_time_s") if k in before}
        return {**before, **{k: v for k, v in summary.items() if v is not None}, **kept}
    return summary
