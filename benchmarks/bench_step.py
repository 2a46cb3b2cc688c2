"""Trainer overhead: classzoo's own ``train_step`` against a bare loop, same model / batch / dtype.

The peer is the loop timm's benchmark.py times for ``--bench train`` (forward under autocast,
cross-entropy, backward, optimizer step, zero_grad: 15 lines, no scaler, no loss bookkeeping);
classzoo's step adds the GradScaler call, the per-sample loss sums kept on the device, the
scheduler and EMA hooks. Rounds alternate peer and classzoo; medians of the rounds' images/s.

    python benchmarks/bench_step.py [--model resnet50] [--batch-size 16] [--image-size 224]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

from classzoo.config import OptimConfig
from classzoo.engine.devices import make_scaler
from classzoo.engine.distributed import DistEnv
from classzoo.engine.loop import StepConfig, train_step
from classzoo.engine.optim import build_optimizer
from classzoo.engine.state import TrainState
from classzoo.models import create_model


def bare_loop(model, x, y, dtype, steps: int) -> float:
    """timm benchmark.py's train loop, in 15 lines."""
    opt = create_optimizer_v2(model, opt="sgd", lr=1e-4)
    t0 = 0.0
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return x.shape[0] * steps / (time.perf_counter() - t0)


def classzoo_step(model, x, y, dtype, steps: int) -> float:
    env = DistEnv()
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=1e-4), 1e-4)
    state = TrainState(model, opt, None, make_scaler(env.device, dtype))
    cfg = StepConfig(amp_dtype=dtype, channels_last=True)
    t0 = 0.0
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        train_step(state, model, [(x, y)], x.shape[0], cfg, env)
    return x.shape[0] * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--amp", choices=["bf16", "off"], default="bf16")
    a = p.parse_args()
    dtype = torch.bfloat16 if a.amp == "bf16" else None
    torch.manual_seed(0)
    model = create_model(a.model).to(memory_format=torch.channels_last).train()
    x = torch.randn(a.batch_size, 3, a.image_size, a.image_size).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 1000, (a.batch_size,))
    peer, ours = [], []
    for r in range(a.rounds):
        peer.append(bare_loop(model, x, y, dtype, a.steps))
        ours.append(classzoo_step(model, x, y, dtype, a.steps))
        print(f"round {r + 1}: bare loop {peer[-1]:.2f} img/s, classzoo train_step {ours[-1]:.2f}")
    mp, mo = statistics.median(peer), statistics.median(ours)
    print(
        f"{a.model} {a.image_size}px batch {a.batch_size} {a.amp} channels_last, "
        f"{torch.get_num_threads()} threads: bare loop {mp:.2f} img/s, classzoo {mo:.2f} img/s, "
        f"ratio {mo / mp:.3f} (medians of {a.rounds} alternating rounds)"
    )


if __name__ == "__main__":
    main()
