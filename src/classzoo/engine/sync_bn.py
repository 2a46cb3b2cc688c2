"""Synchronised BatchNorm on every backend, CPU/gloo included.

torch's ``nn.SyncBatchNorm`` runs only on CUDA-like devices. On CPU (gloo) and other devices,
:class:`GlobalBatchNorm2d` computes the batch statistics over all ranks with a differentiable
all-reduce of (sum, sum of squares, count), so a run on W processes sees the same statistics,
and the same gradients, as one process with the whole global batch.

Without it each rank's BatchNorm keeps running statistics of its own batches:
:func:`average_over_ranks` of :func:`running_stat_buffers` averages them over the ranks (timm's
``distribute_bn`` with its train.py default ``--dist-bn reduce``; engine/state.py says when).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

_RUNNING = ("running_mean", "running_var")


class _SumOverRanks(torch.autograd.Function):
    """All-reduce SUM whose backward is the all-reduce SUM of the gradients: what
    ``torch.distributed.nn.functional.all_reduce`` computes (its ``_AllReduce``), without its
    FutureWarning on every call (deprecated in torch 2.x for ``_functional_collectives``, whose
    autograd support is recent: torch >= 2.5 is allowed here)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _SumOverRanks.apply(grad)


def running_stat_buffers(module: nn.Module) -> list[torch.Tensor]:
    """The floating-point ``running_mean`` / ``running_var`` buffers of ``module`` (the buffers
    timm's ``distribute_bn`` averages, found by the same names)."""
    return [
        b for name, b in module.named_buffers() if name.endswith(_RUNNING) and b.is_floating_point()
    ]


def average_over_ranks(bufs: Sequence[torch.Tensor], world_size: int) -> None:
    """Replace each tensor of ``bufs`` by its mean over the ranks, in place: timm's
    ``distribute_bn(..., reduce=True)`` (an all-reduce SUM divided by the world size), here as
    one collective of float32 values (HCCL and MPS refuse float64). Every rank must call it with
    the same list at the same point."""
    if world_size < 2 or not bufs:
        return
    flat = torch.cat([b.detach().reshape(-1).to(torch.float32) for b in bufs])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= float(world_size)
    offset = 0
    for b in bufs:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batch of every rank."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        local = torch.cat(
            [
                xf.sum(dim=(0, 2, 3)),
                (xf * xf).sum(dim=(0, 2, 3)),
                torch.tensor([x.numel() // c], dtype=torch.float32, device=x.device),
            ]
        )
        total = _SumOverRanks.apply(local)  # backward: all-reduce of the gradients
        n = total[-1]
        mean = total[:c] / n
        var = (total[c : 2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                momentum = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked + 1)
                )
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * (n / (n - 1).clamp_min(1.0))
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
                self.num_batches_tracked.add_(1)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA; :class:`GlobalBatchNorm2d` elsewhere (CPU / gloo)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _replace(model)


def _replace(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        new = GlobalBatchNorm2d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=module.weight.device if module.affine else None,
        )
        new.load_state_dict(module.state_dict())
        if module.affine:  # keep frozen parameters frozen (slim InceptionV4 has no BN gamma)
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _replace(child))
    return module
