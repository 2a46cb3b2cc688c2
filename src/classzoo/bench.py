"""``classzoo bench``: the trainer's own ``train_step`` (or inference) on synthetic tensors, with
model FLOP utilisation against the matmul rate measured on the same device in the same run."""

from __future__ import annotations

import resource
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from classzoo.config import OptimConfig
from classzoo.engine.distributed import DistEnv, resolve_device
from classzoo.engine.loop import StepConfig, train_step
from classzoo.engine.optim import build_optimizer
from classzoo.engine.precision import autocast, make_scaler, precision_name, resolve_amp
from classzoo.engine.state import TrainState
from classzoo.models import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_flops(device: torch.device, dtype: torch.dtype | None, n: int = 1024) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` (fp32 when None), best of 5: the MFU denominator."""
    dt = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    best = float("inf")
    for _ in range(6):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _time(step, device: torch.device, warmup: int, steps: int) -> tuple[float, float]:
    """(FLOPs of one step, seconds for ``steps`` steps after ``warmup``)."""
    with FlopCounterMode(display=False) as counter:
        step()  # the first warm-up step, counted
    for _ in range(warmup - 1):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return counter.get_total_flops(), time.perf_counter() - t0


def bench_model(
    model_name: str,
    batch_size: int = 32,
    image_size: int | None = None,
    mode: str = "train",
    amp: str = "auto",
    channels_last: bool = True,
    steps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    num_classes: int | None = None,
) -> dict:
    """Images per second over ``steps`` timed iterations after ``warmup``: for ``train`` the
    trainer's ``train_step`` (forward, loss, backward, GradScaler, SGD momentum step); for
    ``infer`` a forward under ``no_grad``. Defaults are training's: amp auto, channels_last."""
    dev = resolve_device(device)
    env = DistEnv(device=dev)
    model = create_model(model_name, num_classes=num_classes).to(dev)
    size = image_size or int(getattr(model, "default_cfg", {}).get("input_size", (3, 224, 224))[-1])
    dtype = resolve_amp(amp, dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch_size, 3, size, size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, getattr(model, "num_classes", 1000), (batch_size,), device=dev)
    model.train(mode == "train")
    state = TrainState(
        model,
        build_optimizer(model, OptimConfig(name="momentum", lr=1e-3), 1e-3),
        None,
        make_scaler(dev, dtype),
    )
    cfg = StepConfig(amp_dtype=dtype, channels_last=channels_last)

    def step() -> None:
        if mode == "train":
            train_step(state, model, [(x, y)], batch_size, cfg, env)
        else:
            with torch.no_grad(), autocast(dev, dtype):
                model(x)

    flops, dt = _time(step, dev, warmup, steps)
    achieved = flops * steps / dt
    peak = peak_matmul_flops(dev, dtype)
    return {
        "model": model_name,
        "mode": mode,
        "batch_size": batch_size,
        "image_size": size,
        "amp": precision_name(dtype),
        "channels_last": channels_last,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "images_per_sec": batch_size * steps / dt,
        "tflops": achieved / 1e12,
        "peak_matmul_tflops": peak / 1e12,
        "mfu": achieved / peak,
        "peak_memory_mb": round(_peak_memory_mb(dev), 1),
    }
