"""What each device type gets by default, in one table, and the device calls that differ by type.

The recipes name CUDA GPUs, Ascend NPUs (torch_npu) and CPUs; MPS is here so a laptop works.
Every choice a user can override (``train.channels_last``, ``train.compile``, ``train.amp``,
``optim.fused``)
takes its default from this table when the recipe leaves it at ``auto``/None, and the choice is
recorded in ``resolved.yaml``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger("classzoo")


@dataclass(frozen=True)
class DeviceTraits:
    channels_last: bool  # NHWC default for training and evaluation
    compile: bool  # torch.compile default (off until measured faster on that device type)
    # accumulators that go through a collective: HCCL and MPS reject float64
    sum_dtype: torch.dtype
    cudnn_benchmark: bool  # cudnn picks the fastest kernels for fixed shapes (timm sets it)
    amp_auto: str  # what amp "auto" means here: a name, or "detect" (see precision.py)
    fused_optimizer: bool  # torch's fused kernel for SGD / Adam / AdamW / Adagrad (optim.py)


# channels_last: NHWC ran 1.2-1.6x faster training on this CPU (docs/benchmarks.md) and is
# NVIDIA's recommendation for tensor cores; Ascend's torch_npu keeps its own internal format
# (NC1HWC0) and its reference scripts train NCHW; MPS is unmeasured, so the safe layout.
# compile: torch.compile of the ResNet-50 bf16 training step on this 2-core AMX CPU took 121 s
# to compile and then ran at eager's speed (docs/benchmarks.md), so it is opt-in everywhere.
# fused_optimizer: one kernel over all parameters instead of a loop of small ops; a ResNet-50
# Nesterov SGD step took 19 ms fused against 68 ms (per-parameter loop, torch's CPU default)
# and 78 ms (foreach) on this 2-core CPU; CUDA has the same kernels (timm reaches them only
# through apex's "fused*" names). torch_npu and MPS: not measured, the loop.
_TABLE = {
    "cuda": DeviceTraits(True, False, torch.float64, True, "detect", True),
    "npu": DeviceTraits(False, False, torch.float32, False, "fp16", False),
    "mps": DeviceTraits(False, False, torch.float32, False, "off", False),
    "cpu": DeviceTraits(True, False, torch.float64, False, "detect", True),
}


def traits(device: torch.device | str) -> DeviceTraits:
    """The row of ``device`` (a device, or a type name: "npu" needs torch_npu to be a device)."""
    kind = device if isinstance(device, str) else device.type
    return _TABLE.get(kind, _TABLE["cpu"])


def set_device(device: torch.device) -> None:
    """Make ``device`` this process's current device: before NCCL/HCCL start, or every rank's
    communicator lands on device 0."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif device.type == "npu":
        torch.npu.set_device(device)  # torch_npu adds torch.npu


def configure(device: torch.device) -> None:
    """Process-wide settings of the device type (cudnn autotuning on CUDA)."""
    if traits(device).cudnn_benchmark:
        torch.backends.cudnn.benchmark = True


def make_scaler(device: torch.device, dtype: torch.dtype | None):
    """A loss scaler, enabled only for fp16 (bf16 has fp32's exponent range). Ascend's fp16
    training uses torch_npu's own scaler (torch_npu.npu.amp.GradScaler, the NPU form of
    torch.cuda.amp.GradScaler in Ascend's API table)."""
    enabled = dtype is torch.float16
    if device.type == "npu" and enabled:
        import torch_npu

        return torch_npu.npu.amp.GradScaler(enabled=True)
    return torch.amp.GradScaler(device.type, enabled=enabled)


def _accelerator_module(device_type: str):
    return {"cuda": getattr(torch, "cuda", None), "npu": getattr(torch, "npu", None)}.get(
        device_type
    )


def accelerator_rng_state() -> dict[str, list[torch.Tensor] | torch.Tensor]:
    """The RNG state of every accelerator this process sees (CUDA, NPU, MPS): dropout and
    on-device augmentation draw from it, so a resumed run needs it."""
    out: dict[str, list[torch.Tensor] | torch.Tensor] = {}
    for name in ("cuda", "npu"):
        mod = _accelerator_module(name)
        if mod is not None and _available(mod):
            out[name] = mod.get_rng_state_all()
    if torch.backends.mps.is_available():
        out["mps"] = torch.mps.get_rng_state()
    return out


def set_accelerator_rng_state(state: dict) -> None:
    for name in ("cuda", "npu"):
        mod = _accelerator_module(name)
        if name in state and mod is not None and _available(mod):
            mod.set_rng_state_all(state[name])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def _available(mod) -> bool:
    is_available: Callable[[], bool] | None = getattr(mod, "is_available", None)
    return bool(is_available and is_available())
