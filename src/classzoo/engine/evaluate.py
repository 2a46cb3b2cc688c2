"""Exact evaluation: every sample counted once on any number of ranks and any batch size
(the evaluate mode over a folder of checkpoints is engine/evaluate_mode.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from classzoo.data.device import to_device
from classzoo.engine.devices import traits
from classzoo.engine.distributed import DistEnv, all_reduce_sum
from classzoo.engine.logs import Progress
from classzoo.engine.loop import batches_of, input_layout
from classzoo.engine.precision import autocast

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
    # the recorded layout either way (engine/loop.py channels_last_input)
    images = images.contiguous(memory_format=input_layout(opts.channels_last))
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
