"""Trainer overhead: classzoo's own ``train_step`` and its whole training loop against a bare
loop, same model / batch / dtype, in one process (issue 10, benchmark c).

The peer is the loop timm's benchmark.py times for ``--bench train`` (forward under autocast,
cross-entropy, backward, optimizer step, zero_grad: 15 lines, no scaler, no loss bookkeeping);
classzoo's step adds the GradScaler call, the per-sample loss sums kept on the device, the
scheduler and EMA hooks. The trainer loop is ``engine.loop.train_one_epoch`` as ``classzoo
train`` runs it (batch sampler, prefetcher, the wait-for-data clock, the progress bar's update,
the stop check, a train.log line with its one host sync every ``--log-every`` steps) fed one
batch made in advance, so what it adds to the step is the loop's own cost, not a loader's.
Rounds alternate the three; medians of the rounds' images/s, and the median of the per-round
ratios (each round's contenders ran within seconds of each other: steadier on a noisy machine).

    python benchmarks/bench_step.py [--model resnet50] [--batch-size 16] [--image-size 224]
"""

# ruff: noqa: E402  (the OpenMP wait policy is chosen before torch loads)
from __future__ import annotations

import argparse
import statistics
import time

from classzoo.engine.threads import choose_wait_policy

WAIT = choose_wait_policy(0)  # before torch loads: no loader worker here, as classzoo bench

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

from classzoo.config import OptimConfig
from classzoo.data.sampling import TrainBatchSampler
from classzoo.engine.devices import make_scaler
from classzoo.engine.distributed import DistEnv
from classzoo.engine.logs import Progress
from classzoo.engine.loop import Hooks, LoopConfig, StepConfig, train_one_epoch, train_step
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


def trainer_loop(model, x, y, dtype, steps: int, log_every: int) -> float:
    """``train_one_epoch`` over ``steps + 2`` batches (two to warm up, as the other two)."""
    env = DistEnv()
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=1e-4), 1e-4)
    state = TrainState(model, opt, None, make_scaler(env.device, dtype))
    b, total = x.shape[0], steps + 2
    step = StepConfig(amp_dtype=dtype, channels_last=True)
    loop = LoopConfig(step, total, total, 1, log_every, None, 0, False)
    sampler = TrainBatchSampler(b * total, b, 0, 1, 0)
    times: list[float] = []

    def log_line(*_):  # the loop's train.log line (its host sync happened before this call)
        times.append(time.perf_counter())

    hooks = Hooks(save=lambda: None, log_line=log_line)
    bar = Progress(total, "train", False)
    warm = LoopConfig(step, 2, total, 1, 2, None, 0, False)  # two steps, then a log line
    train_one_epoch(state, model, [(x, y)] * 2, sampler, warm, env, hooks, bar, lambda t: t)
    t0 = times[-1]  # the loop goes on from the position the warm-up left (sample 2 b)
    train_one_epoch(state, model, [(x, y)] * steps, sampler, loop, env, hooks, bar, lambda t: t)
    return b * steps / (times[-1] - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--amp", choices=["bf16", "off"], default="bf16")
    p.add_argument("--log-every", type=int, default=50, help="train.log_every (its default)")
    a = p.parse_args()
    dtype = torch.bfloat16 if a.amp == "bf16" else None
    torch.manual_seed(0)
    model = create_model(a.model).to(memory_format=torch.channels_last).train()
    x = torch.randn(a.batch_size, 3, a.image_size, a.image_size).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 1000, (a.batch_size,))
    peer, ours, loop = [], [], []
    for r in range(a.rounds):
        peer.append(bare_loop(model, x, y, dtype, a.steps))
        ours.append(classzoo_step(model, x, y, dtype, a.steps))
        loop.append(trainer_loop(model, x, y, dtype, a.steps, a.log_every))
        print(
            f"round {r + 1}: bare loop {peer[-1]:.2f} img/s, classzoo train_step {ours[-1]:.2f}, "
            f"trainer loop {loop[-1]:.2f}"
        )
    mp, mo, ml = (statistics.median(v) for v in (peer, ours, loop))
    paired = statistics.median(lo / o for lo, o in zip(loop, ours))
    print(
        f"{a.model} {a.image_size}px batch {a.batch_size} {a.amp} channels_last, "
        f"{torch.get_num_threads()} threads ({WAIT}), medians of {a.rounds} alternating rounds: bare loop "
        f"{mp:.2f} img/s, classzoo train_step {mo:.2f}, trainer loop {ml:.2f}\n"
        f"  ratio train_step / bare loop {mo / mp:.3f}; trainer loop / train_step {ml / mo:.3f} "
        f"(median of the per-round ratios {paired:.3f})"
    )


if __name__ == "__main__":
    main()
