"""Exact evaluation: every sample counted once on any number of ranks and any batch size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from classzoo.engine.distributed import DistEnv, all_reduce_sum
from classzoo.engine.logs import Progress
from classzoo.engine.precision import autocast


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    env: DistEnv,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 / top-5 (percent), mean cross-entropy and the exact sample count over all ranks.

    Sums (not means) are reduced across ranks, so uneven shards give exact totals; the loader
    must give each rank a disjoint part of the dataset (``EvalBatchSampler``).
    """
    was_training = model.training
    model.eval()
    # correct@1, correct@5, loss sum, count; on the device: no host sync per batch
    sums = torch.zeros(4, dtype=torch.float64, device=env.device)
    bar = Progress(len(loader), "eval", enabled=progress and env.is_main)
    for i, (images, targets) in enumerate(loader):
        images = images.to(env.device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(env.device, non_blocking=True)
        with autocast(env.device, amp_dtype):
            logits = model(images)
        logits = logits.float()
        loss = F.cross_entropy(logits, targets, reduction="sum")
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hits = top.eq(targets[:, None])
        sums += torch.stack(
            [hits[:, 0].sum(), hits.any(dim=1).sum(), loss, loss.new_tensor(float(targets.numel()))]
        ).double()
        bar.update(i + 1)
    bar.close()
    model.train(was_training)
    sums = all_reduce_sum(sums, env).cpu()
    count = int(sums[3].item())
    if count == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "count": 0}
    return {
        "top1": 100.0 * sums[0].item() / count,
        "top5": 100.0 * sums[1].item() / count,
        "loss": sums[2].item() / count,
        "count": count,
    }
