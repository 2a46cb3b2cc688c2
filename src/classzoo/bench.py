"""``classzoo bench``: the trainer's own ``train_step`` (or inference) on synthetic tensors, or
with the real loader on a folder of images, with model FLOP utilisation against the matmul rate
measured on the same device in the same run."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from classzoo.config import Config, OptimConfig, with_values
from classzoo.data.device import Prefetcher
from classzoo.engine import build, host_memory
from classzoo.engine.devices import make_scaler, traits
from classzoo.engine.distributed import DistEnv, resolve_device
from classzoo.engine.loop import StepConfig, train_step
from classzoo.engine.optim import build_optimizer
from classzoo.engine.precision import autocast, emulated_bf16_note, precision_name, resolve_amp
from classzoo.engine.resolve import or_device_default
from classzoo.engine.state import TrainState
from classzoo.engine.threads import apply as apply_threads
from classzoo.engine.threads import plan_for_run
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


def peak_memory_kind(device: torch.device) -> str:
    """What ``peak_memory_mb`` measures on ``device``: not comparable across device types."""
    if device.type == "cuda":
        return "CUDA allocator peak (torch.cuda.max_memory_allocated)"
    return "process max RSS, libraries and data included"


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _flops_of(step: Callable[[], None]) -> float:
    """FLOPs of one eager call of ``step`` (counted by dispatch; a compiled network hides its
    operators from the counter, so the count runs on the eager model)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def _time(step: Callable[[], None], device, warmup: int, steps: int) -> tuple[float, float]:
    """(seconds of the ``warmup`` steps, which hold any compilation; seconds of ``steps``)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def _state(model, dev: torch.device, dtype) -> TrainState:
    """SGD momentum (the recipes' optimizer; fused where the device's table says, as training)
    and the trainer's scaler around ``model``."""
    opt = build_optimizer(
        model, OptimConfig(name="momentum", lr=1e-3), 1e-3, fused=traits(dev).fused_optimizer
    )
    return TrainState(model, opt, None, make_scaler(dev, dtype))


def _report(name, mode, batch, size, dtype, cl, compiled, dev, flops, warm_s, dt, steps) -> dict:
    achieved = flops * steps / dt
    peak = peak_matmul_flops(dev, dtype)
    return {
        "model": name,
        "mode": mode,
        "batch_size": batch,
        "image_size": size,
        "amp": precision_name(dtype),
        "channels_last": cl,
        "compile": compiled,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "images_per_sec": batch * steps / dt,
        "warmup_s": round(warm_s, 2),
        "tflops": achieved / 1e12,
        "peak_matmul_tflops": peak / 1e12,
        "mfu": achieved / peak,
        "peak_memory_mb": round(_peak_memory_mb(dev), 1),
        "peak_memory_kind": peak_memory_kind(dev),
        "host_memory": host_memory.describe(),
    }


def bench_model(
    model_name: str,
    batch_size: int = 32,
    image_size: int | None = None,
    mode: str = "train",
    amp: str = "auto",
    channels_last: bool | None = None,
    steps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    num_classes: int | None = None,
    compile: bool = False,
) -> dict:
    """Images per second over ``steps`` timed iterations after ``warmup``, on synthetic tensors:
    for ``train`` the trainer's ``train_step`` (forward, loss, backward, GradScaler, SGD momentum
    step); for ``infer`` a forward under ``no_grad``. Defaults are training's (amp auto, the
    device's layout); ``compile`` runs the network through torch.compile as train.compile does."""
    dev = resolve_device(device)
    env = DistEnv(device=dev)
    # the threads a training run would start with here: fewer beside busy processes
    plan = plan_for_run(0, dev, 1, None)
    apply_threads(plan, announce=False)
    host_memory.keep_freed_memory(dev.type)  # as a training run does (engine/run.py)
    cl = or_device_default(channels_last, dev, "channels_last")
    model = create_model(model_name, num_classes=num_classes).to(dev)
    default = int(getattr(model, "default_cfg", {}).get("input_size", (3, 224, 224))[-1])
    size = default if image_size is None else image_size  # 0 is refused, not the default
    dtype = resolve_amp(amp, dev)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch_size, 3, size, size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, getattr(model, "num_classes", 1000), (batch_size,), device=dev)
    model.train(mode == "train")
    state = _state(model, dev, dtype)
    cfg = StepConfig(amp_dtype=dtype, channels_last=cl)
    net = build.training_network(model, env, "default" if compile else None)

    def step(network=net) -> None:
        if mode == "train":
            train_step(state, network, [(x, y)], batch_size, cfg, env)
        else:
            with torch.no_grad(), autocast(dev, dtype):
                network(x)

    flops = _flops_of(lambda: step(model))
    warm_s, dt = _time(step, dev, warmup, steps)
    out = _report(
        model_name, mode, batch_size, size, dtype, cl, compile, dev, flops, warm_s, dt, steps
    )
    note = emulated_bf16_note(dtype, dev)
    return {**out, "precision_note": note, "thread_plan": plan.explained}


def bench_data(
    model_name: str,
    data_dir: str,
    batch_size: int = 32,
    overrides: dict | None = None,
    steps: int = 10,
    warmup: int = 3,
) -> dict:
    """The trainer's step fed by the real loader: the ImageFolder ``data_dir`` (its ``train``
    split), the model's preprocessing (or ``overrides`` such as ``data.preset``), the run's
    thread plan and workers, the loop's prefetcher. Adds the share of wall time spent waiting
    for data (the loader is the bottleneck when it is large)."""
    from classzoo.engine.setup import set_up  # verbs sit above the engine's wiring

    values = {"model.name": model_name, "data.dir": data_dir, "data.batch_size": batch_size}
    asked = with_values(Config(), {**values, "train.progress": False, **(overrides or {})}, "bench")
    dev = resolve_device(asked.train.device)
    env = DistEnv(device=dev)
    plan = plan_for_run(asked.data.num_workers, dev, 1, None)
    apply_threads(plan, announce=False)
    host_memory.keep_freed_memory(dev.type)
    s = set_up(asked, env, need_train=True, need_val=False)
    r = s.resolved
    dtype = r.precision_dtype("train")
    state = _state(s.model, dev, dtype)
    cfg = StepConfig(amp_dtype=dtype, channels_last=r.channels_last)
    net = build.training_network(s.model, env, r.compile)
    loader, sampler = build.train_loader(
        s.train.dataset, batch_size, asked.data.num_workers, env, asked.train.seed, r.loader
    )
    batches = _endless(loader, sampler, dev, s.train.batch)
    waited = [0.0]

    def step() -> None:
        t = time.perf_counter()
        micro = next(batches)
        waited[0] += time.perf_counter() - t
        train_step(state, net, [micro], batch_size, cfg, env)

    flops = _flops_of(lambda: train_step(state, s.model, [next(batches)], batch_size, cfg, env))
    warm_s, _ = _time(step, dev, warmup, 0)
    waited[0] = 0.0
    _, dt = _time(step, dev, 0, steps)
    size = r.preprocess.image_size
    out = _report(
        model_name, "train", batch_size, size, dtype, r.channels_last, r.compile is not None,
        dev, flops, warm_s, dt, steps,
    )  # fmt: skip
    data = {"data": data_dir, "workers": asked.data.num_workers, "data_wait": waited[0] / dt}
    return {**out, **data, "precision_note": r.precision_note, "thread_plan": plan.explained}


def _endless(loader, sampler, device: torch.device, batch_fn):
    """Batches on the device, epoch after epoch (a small folder serves any number of steps)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch, 0)
        yield from Prefetcher(loader, device, batch_fn)
        epoch += 1
