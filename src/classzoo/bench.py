"""``classzoo bench``: model throughput on synthetic tensors (no data loading), per precision and layout."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from classzoo.engine.distributed import resolve_device
from classzoo.engine.precision import autocast, resolve_amp
from classzoo.models import create_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(
    model_name: str,
    batch_size: int = 32,
    image_size: int | None = None,
    mode: str = "train",
    amp: str = "off",
    channels_last: bool = False,
    steps: int = 10,
    warmup: int = 3,
    device: str = "auto",
    num_classes: int | None = None,
) -> dict:
    """Images per second of ``steps`` timed iterations after ``warmup`` (forward+backward+SGD
    step for ``train``, forward under ``no_grad`` for ``infer``)."""
    dev = resolve_device(device)
    model = create_model(model_name, num_classes=num_classes).to(dev)
    size = image_size or int(getattr(model, "default_cfg", {}).get("input_size", (3, 224, 224))[-1])
    dtype = resolve_amp(amp, dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch_size, 3, size, size, device=dev).contiguous(memory_format=fmt)
    n_out = getattr(model, "num_classes", 1000)
    y = torch.randint(0, n_out, (batch_size,), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train(mode == "train")

    def step() -> None:
        if mode == "train":
            with autocast(dev, dtype):
                out = model(x)
                out = out[0] if isinstance(out, (tuple, list)) else out
                loss = F.cross_entropy(out.float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), autocast(dev, dtype):
                model(x)

    for _ in range(warmup):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    dt = time.perf_counter() - t0
    return {
        "model": model_name,
        "mode": mode,
        "batch_size": batch_size,
        "image_size": size,
        "amp": "off" if dtype is None else str(dtype).removeprefix("torch."),
        "channels_last": channels_last,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "images_per_sec": batch_size * steps / dt,
    }
