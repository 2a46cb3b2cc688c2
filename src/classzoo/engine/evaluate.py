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
    """Top-1 / top-5 (percent), mean cross-entropy and the exact sample count over all ranks,
    and ``skipped``: the unreadable images left out of all of them (data.skip_corrupt).

    Sums (not means) are reduced across ranks, so uneven shards give exact totals; the loader
    must give each rank a disjoint part of the dataset (``EvalBatchSampler``). A negative
    target is an unreadable image (data/imagefolder.py ``left_out_target``): its row, a
    neighbour's image that only fills the batch, is counted in ``skipped`` and nowhere else.
    """
    was_training = model.training
    model.eval()
    # correct@1, correct@5, loss sum, count, skipped, then one slot per rank: 1 + the index of
    # its first left-out image (0: none; exact in float32 up to 2**24); on the device: no host
    # sync per batch
    sums = torch.zeros(5 + env.world_size, dtype=traits(env.device).sum_dtype, device=env.device)
    first = torch.full((), float("inf"), dtype=sums.dtype, device=env.device)
    bar = Progress(len(loader), "eval", enabled=opts.progress and env.is_main)
    with batches_of(loader) as it:
        for i, (images, targets) in enumerate(it):
            first = _accumulate(model, images, targets, env, opts, sums, first)
            bar.update(i + 1)
    bar.close()
    model.train(was_training)
    sums[5 + env.rank] = torch.where(first.isinf(), 0, first)
    sums = all_reduce_sum(sums, env).cpu()
    if sums[4] > 0 and env.is_main:
        _warn_left_out(int(sums[4].item()), sums[5:], loader)
    return _result(sums)


def _accumulate(model, images, targets, env: DistEnv, opts: EvalOptions, sums, first):
    """Add one batch's (correct@1, correct@5, loss sum, count, skipped) to ``sums`` on the
    device; returns the smallest ``1 + index`` of a left-out image so far (``first``, inf: none)."""
    images = to_device(images, env.device)
    if opts.batch_fn is not None:  # the pipeline's batch stage on the device
        images = opts.batch_fn(images)
    # the recorded layout either way (engine/loop.py channels_last_input)
    images = images.contiguous(memory_format=input_layout(opts.channels_last))
    targets = targets.to(env.device, non_blocking=True)
    with autocast(env.device, opts.amp_dtype):
        logits = model(images)
    logits = logits.float()
    scored = targets >= 0
    labels = torch.where(scored, targets, 0)  # any class: the row is masked out below
    loss = torch.where(scored, F.cross_entropy(logits, labels, reduction="none"), 0).sum()
    hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(labels[:, None])
    hits &= scored[:, None]
    count = scored.sum()
    sums[:5] += torch.stack(
        [hits[:, 0].sum(), hits.any(dim=1).sum(), loss, count, targets.numel() - count]
    ).to(sums.dtype)
    # -target = 1 + index of a left-out image (left_out_target); scored rows do not compete
    return torch.minimum(first, torch.where(scored, first, -targets.to(first.dtype)).min())


def _warn_left_out(skipped: int, firsts: torch.Tensor, loader) -> None:
    """One line: how many images the metrics left out, and the first one's file. Ranks hold
    contiguous, ordered slices (EvalBatchSampler), so the lowest rank's first is the first."""
    found = firsts[firsts > 0]
    dataset = getattr(loader, "dataset", None)
    dataset = getattr(dataset, "dataset", dataset)  # inside build.py's SeededDataset
    name_of = getattr(dataset, "name_of", None)
    what = f"{skipped} unreadable image{'s' if skipped > 1 else ''} left out of the metrics"
    what += " (data.skip_corrupt)"
    if found.numel() and name_of is not None:
        name = name_of(int(found[0].item()) - 1)
        what += f": {name}" if skipped == 1 else f"; the first: {name}"
    log.warning("eval: %s", what)


def _result(sums: torch.Tensor) -> dict:
    count, skipped = int(sums[3].item()), int(sums[4].item())
    if count == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "count": 0, "skipped": skipped}
    return {
        "top1": 100.0 * sums[0].item() / count,
        "top5": 100.0 * sums[1].item() / count,
        "loss": sums[2].item() / count,
        "count": count,
        "skipped": skipped,
    }
