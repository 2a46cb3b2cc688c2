"""How an attempt ends in its run folder: a finished run's summary.json (the final evaluation,
throughput and what they were of); a stopped one's note of where it continues, and no summary.

A stopped attempt (SIGTERM / SIGINT) writes no summary.json, as timm writes nothing final after
an interrupt: its last evaluation is of an earlier epoch, not the run's result, and
``classzoo report`` marks a folder without one incomplete (figures from its last eval). The
attempt that finishes the run writes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from classzoo.config import Config
from classzoo.engine.logs import write_error
from classzoo.engine.resolve import Resolved
from classzoo.engine.run_log import RunLogger

log = logging.getLogger("classzoo")
_FINAL = ("top1", "top5", "loss", "count")  # what a stopped attempt does not claim


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
        "skipped": result.get("skipped"),  # unreadable images left out (data.skip_corrupt)
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


def retire_summary(run_dir: Path, enabled: bool) -> None:
    """Remove summary.json before an attempt trains past the end it records (a finished run
    resumed for more steps): from then on it is not the run's result, whether this attempt
    finishes (and writes its own), stops, or dies."""
    old = run_dir / "summary.json"
    if enabled and old.exists():
        try:
            old.unlink()
        except OSError as exc:
            raise write_error(old, exc, "remove") from None
        log.info("removed %s: this attempt trains past the end it records", old)


def end_attempt(logger: RunLogger, summary: dict[str, Any], stopped: bool) -> dict[str, Any]:
    """Write ``summary`` as summary.json when the run finished; returns what the caller shows:
    after a stop, nothing is written and the summary has no final figures, ``stopped: true``."""
    if not stopped:
        logger.write_json("summary.json", summary)
        return summary
    return {**summary, **dict.fromkeys(_FINAL), "stopped": True}


def stopped_note(logger: RunLogger, reason: str, step: int, ckpt_dir: Path, run_dir: Path):
    """The stop in every log, and on the console how to continue."""
    logger.marker(f"stopped by {reason} at step {step}")
    log.warning(
        "stopped by %s at step %d; checkpoint saved in %s; no summary.json (the run is not "
        "finished); continue with: --output-dir %s --resume auto",
        reason,
        step,
        ckpt_dir,
        run_dir,
    )
