"""Mixed precision through autocast; channels_last. One code path, no branches in the loop."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from classzoo.engine.devices import traits
from classzoo.errors import UserError

log = logging.getLogger("classzoo")


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from ``cpuinfo``, the text of
    /proc/cpuinfo (read when None); None where it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_has_amx() -> bool:
    """True on x86 CPUs with AMX bf16 tiles (Sapphire Rapids and later)."""
    return "amx_bf16" in (cpu_flags() or set())


def cpu_has_bf16_instructions(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes in bf16 itself: AVX512-BF16 or AMX on x86 (Cooper Lake, Zen 4,
    Sapphire Rapids and later), the BF16 extension on Arm. Without them oneDNN converts bf16 to
    fp32 around each operation: ResNet-50's bf16 training step ran 18x slower than fp32 on
    a Zen 3 EPYC (AVX2 only; docs/benchmarks.md, session 16). ``cpuinfo``: the text of
    /proc/cpuinfo (read when None); where it cannot be read, or names another architecture's
    flags, the answer is True: nothing is claimed that was not read."""
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return True
    if "avx2" in flags or "sse2" in flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    if "asimd" in flags:
        return "bf16" in flags
    return True


def emulated_bf16_note(dtype: torch.dtype | None, device: torch.device) -> str | None:
    """What a run records when it computes in bf16 on a CPU without bf16 instructions (asked for
    by name: ``amp: auto`` is fp32 there); None otherwise."""
    if dtype != torch.bfloat16 or device.type != "cpu" or cpu_has_bf16_instructions():
        return None
    return (
        "bf16 as asked, on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16, or Arm's "
        "bf16, in /proc/cpuinfo): oneDNN emulates it, many times slower than fp32 (docs/benchmarks.md, "
        "bf16 on a CPU); train.amp auto or off trains in fp32"
    )


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (auto|off|bf16|fp16) on ``device``; None = full precision.

    auto: bf16 on CUDA with bf16 support (fp16 otherwise), fp16 on NPU; on CPU bf16 only with
    AMX. On this AVX512-BF16 EPYC (no AMX) bf16 autocast ran the quickstart network 1.5x faster,
    but oneDNN's bf16 weight gradient of a padded 3x3/2 conv on a 1x1 map returned NaN
    (torch 2.14.1, oneDNN 3.12; tests/test_resume.py at 16 px), so it stays opt-in there.
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
    rule = traits(device).amp_auto  # the per-device table (engine/devices.py)
    if rule != "detect":
        return resolve_amp(rule, device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_amx() else None


def train_amp(
    amp: str, device: torch.device, bf16_wrong: list[str], image_size: int
) -> tuple[torch.dtype | None, str | None]:
    """The training autocast dtype and, when ``auto`` set bf16 aside or bf16 runs emulated, why
    (:func:`emulated_bf16_note`). ``bf16_wrong``: the
    layers whose CPU bf16 weight gradient is wrong at ``image_size``
    (engine/bf16_conv_check.py); asking bf16 for them is refused."""
    dtype = resolve_amp(amp, device)
    if dtype != torch.bfloat16 or device.type != "cpu" or not bf16_wrong:
        return dtype, emulated_bf16_note(dtype, device)
    layers = ", ".join(bf16_wrong[:3]) + (" ..." if len(bf16_wrong) > 3 else "")
    why = (
        f"oneDNN's bf16 weight gradient of {layers} (a strided convolution on a 1-pixel-wide "
        f"map at {image_size} px) is wrong on a CPU"
    )
    if amp == "auto":
        return None, f"fp32, not bf16: {why}"
    raise UserError(
        f"train.amp={amp}: {why}; use train.amp=off or a larger data.image_size "
        "(docs/benchmarks.md, bf16 on a CPU)"
    )


def precision_name(dtype: torch.dtype | None) -> str:
    """The name the Resolved record and summary.json use: fp32 (no autocast), bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
