"""Exact evaluation: every sample counted once on any number of ranks and any batch size; and
the evaluate mode over a folder of checkpoints (the table ``step epoch top1 top5 loss
checkpoint_time`` of the InceptionV4 reference)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from classzoo.data.device import to_device
from classzoo.engine.checkpoint import CKPT_RE
from classzoo.engine.devices import traits
from classzoo.engine.distributed import DistEnv, all_reduce_sum
from classzoo.engine.logs import Progress
from classzoo.engine.loop import batches_of
from classzoo.engine.precision import autocast
from classzoo.engine.run_log import RunLogger
from classzoo.errors import UserError
from classzoo.formats.torch_checkpoint import load_checkpoint_file
from classzoo.models.weights import (
    detect_format,
    load_checkpoint,
    load_into,
    state_from_checkpoint,
)

log = logging.getLogger("classzoo")


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: precision (None = fp32), layout, a progress bar, and the pipeline's
    batch stage (normalisation on the device) for loaders that return raw samples."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    progress: bool = False
    batch_fn: Callable[[Any], torch.Tensor] | None = None


@torch.no_grad()
def evaluate(model: nn.Module, loader, env: DistEnv, opts: EvalOptions = EvalOptions()) -> dict:
    """Top-1 / top-5 (percent), mean cross-entropy and the exact sample count over all ranks.

    Sums (not means) are reduced across ranks, so uneven shards give exact totals; the loader
    must give each rank a disjoint part of the dataset (``EvalBatchSampler``).
    """
    was_training = model.training
    model.eval()
    # correct@1, correct@5, loss sum, count; on the device: no host sync per batch
    sums = torch.zeros(4, dtype=traits(env.device).sum_dtype, device=env.device)
    bar = Progress(len(loader), "eval", enabled=opts.progress and env.is_main)
    with batches_of(loader) as it:
        for i, (images, targets) in enumerate(it):
            _accumulate(model, images, targets, env, opts, sums)
            bar.update(i + 1)
    bar.close()
    model.train(was_training)
    return _result(all_reduce_sum(sums, env).cpu())


def _accumulate(model, images, targets, env: DistEnv, opts: EvalOptions, sums) -> None:
    """Add one batch's (correct@1, correct@5, loss sum, count) to ``sums`` on the device."""
    images = to_device(images, env.device)
    if opts.batch_fn is not None:  # the pipeline's batch stage on the device
        images = opts.batch_fn(images)
    if opts.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = targets.to(env.device, non_blocking=True)
    with autocast(env.device, opts.amp_dtype):
        logits = model(images)
    logits = logits.float()
    loss = F.cross_entropy(logits, targets, reduction="sum")
    hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets[:, None])
    sums += torch.stack(
        [hits[:, 0].sum(), hits.any(dim=1).sum(), loss, loss.new_tensor(float(targets.numel()))]
    ).to(sums.dtype)


def _result(sums: torch.Tensor) -> dict:
    count = int(sums[3].item())
    if count == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "count": 0}
    return {
        "top1": 100.0 * sums[0].item() / count,
        "top5": 100.0 * sums[1].item() / count,
        "loss": sums[2].item() / count,
        "count": count,
    }


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
    resolved = ckpt.get("resolved") or {}
    n = ((resolved.get("data") or {}).get("train") or {}).get("count")
    epoch = p.get("epoch", 0) + (p.get("sample", 0) / n if n else 0.0)
    return int(p["step"]), float(epoch), ckpt.get("time", when)


def evaluate_checkpoints(
    model: nn.Module,
    model_name: str,
    paths: list[Path],
    loader,
    env: DistEnv,
    logger: RunLogger,
    opts: EvalOptions,
    use_ema: bool,
) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        ckpt = load_checkpoint_file(path) if detect_format(path) == "classzoo" else None
        if ckpt is None:
            load_checkpoint(model, model_name, path, use_ema=use_ema)
        else:  # read once: weights and progress come from the same file
            load_into(model, state_from_checkpoint(ckpt, path, use_ema), str(path))
        step, epoch, when = _meta(path, ckpt)
        result = evaluate(model, loader, env, opts)
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
