"""``mode: evaluate`` over a folder: every checkpoint in it -> the table
``step epoch top1 top5 loss checkpoint_time`` (the InceptionV4 reference's evaluate mode)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from torch import nn

from classzoo.engine.checkpoint import CKPT_RE
from classzoo.engine.distributed import DistEnv
from classzoo.engine.evaluate import evaluate
from classzoo.engine.logs import RunLogger
from classzoo.errors import UserError
from classzoo.models.weights import (
    detect_format,
    load_checkpoint,
    load_into,
    load_torch_checkpoint,
    state_from_checkpoint,
)

log = logging.getLogger("classzoo")


def checkpoints_in(folder: Path) -> list[Path]:
    """classzoo ``ckpt-<step>.pt`` files by step, then TF V2 prefixes (``*.index``) by name."""
    ours = sorted(
        (p for p in folder.iterdir() if CKPT_RE.match(p.name)),
        key=lambda p: int(CKPT_RE.match(p.name).group(1)),
    )
    tf = sorted(p.with_suffix("") for p in folder.glob("*.index"))
    found = ours + tf
    if not found:
        raise UserError(
            f"no checkpoints in {folder} (expected ckpt-<step>.pt files or TF *.index bundles)"
        )
    return found


def _meta(path: Path, ckpt: dict[str, Any] | None) -> tuple[int, float, str]:
    """(step, epoch, checkpoint time UTC) of a checkpoint; ``ckpt`` is the classzoo file as read."""
    mtime = dt.datetime.fromtimestamp(path.stat().st_mtime if path.exists() else 0, dt.timezone.utc)
    when = mtime.strftime("%Y-%m-%dT%H:%M:%SZ")
    m = CKPT_RE.match(path.name)
    if ckpt is None or "progress" not in ckpt:
        return (int(m.group(1)) if m else -1), float("nan"), when
    p = ckpt["progress"]
    n = ((ckpt.get("config") or {}).get("data") or {}).get("train_size")
    epoch = p.get("epoch", 0) + (p.get("sample", 0) / n if n else 0.0)
    return int(p["step"]), float(epoch), ckpt.get("time", when)


def evaluate_checkpoints(
    model: nn.Module,
    model_name: str,
    paths: list[Path],
    loader,
    env: DistEnv,
    logger: RunLogger,
    amp_dtype,
    channels_last: bool,
    use_ema: bool,
    progress: bool,
) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        ckpt = load_torch_checkpoint(path) if detect_format(path) == "classzoo" else None
        if ckpt is None:
            load_checkpoint(model, model_name, path, use_ema=use_ema)
        else:  # read once: weights and progress come from the same file
            load_into(model, state_from_checkpoint(ckpt, path, use_ema), str(path))
        step, epoch, when = _meta(path, ckpt)
        result = evaluate(model, loader, env, amp_dtype, channels_last, progress=progress)
        logger.evaluation(step, epoch, result, checkpoint_time=when)
        log.info(
            "%s: step %d top1 %.3f top5 %.3f loss %.4f (%d images)",
            path.name,
            step,
            result["top1"],
            result["top5"],
            result["loss"],
            result["count"],
        )
        rows.append(
            {
                "checkpoint": str(path),
                "step": step,
                "epoch": epoch,
                **result,
                "checkpoint_time": when,
            }
        )
    return rows
