"""Mixed precision through autocast; channels_last. One code path, no branches in the loop."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from classzoo.errors import UserError

log = logging.getLogger("classzoo")


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with bf16 instructions (AMX tiles or AVX512-BF16), where oneDNN runs
    bf16 convolutions natively instead of emulating them."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (auto|off|bf16|fp16) on ``device``; None = full precision.

    auto: bf16 on CUDA with bf16 support (fp16 otherwise), fp16 on NPU; on CPU bf16 only with
    native bf16 instructions (measured 1.5x faster than fp32 for the quickstart network on an
    AVX512-BF16 EPYC, docs/benchmarks.md "AMP on CPU"); fp32 elsewhere, where bf16 is emulated.
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type == "cpu":
            raise UserError("amp=fp16 is not supported on CPU; use bf16 or off")
        return torch.float16
    if amp != "auto":
        raise UserError(f"unknown amp '{amp}' (allowed: auto, off, bf16, fp16)")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "npu":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def amp_name(dtype: torch.dtype | None) -> str:
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for fp16 (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
