"""The training loop: train_one_epoch / evaluate / checkpoint, exact resume, DDP.

Loss normalisation: every micro-batch contributes ``sum(per-sample loss) * W / N_step``, where
``N_step`` is the number of samples of the whole optimizer step over all ranks and accumulation
micro-batches. DDP averages gradients over the W ranks, so the gradient is exactly the mean over
the step's samples, whatever the split (uneven last batch, accumulation, world size).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from classzoo.data.sampling import TrainBatchSampler
from classzoo.engine.checkpoint import CheckpointManager, rng_state, set_rng_state
from classzoo.engine.distributed import DistEnv, all_reduce_sum
from classzoo.engine.evaluate import evaluate
from classzoo.engine.logs import Progress, RunLogger, utc_now
from classzoo.engine.precision import autocast
from classzoo.errors import UserError

log = logging.getLogger("classzoo")


@dataclass
class Position:
    """Where training is: optimizer steps done, the epoch, samples of that epoch consumed."""

    step: int = 0
    epoch: int = 0
    sample: int = 0


@dataclass
class TrainState:
    model: nn.Module  # the bare model (never the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: Any = None
    pos: Position = field(default_factory=Position)

    def payload(self, env: DistEnv, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": gather_rng(env),
            "progress": {
                "step": self.pos.step,
                "epoch": self.pos.epoch,
                "sample": self.pos.sample,
                "world_size": env.world_size,
            },
            "time": utc_now(),
            **extra,
        }

    def restore(self, ckpt: dict[str, Any], env: DistEnv, seed: int) -> None:
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        p = ckpt["progress"]
        self.pos = Position(p["step"], p["epoch"], p["sample"])
        states = ckpt.get("rng") or []
        if p.get("world_size") == env.world_size and len(states) == env.world_size:
            set_rng_state(states[env.rank])
        else:  # another world size: the model RNG (dropout) restarts from (seed, step, rank)
            torch.manual_seed(seed + 1_000_003 * self.pos.step + env.rank)


def gather_rng(env: DistEnv) -> list[dict[str, Any]]:
    mine = rng_state()
    if not env.distributed:
        return [mine]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, mine)
    return out


def split_output(output) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(output, (tuple, list)):
        return output[0], output[1]
    return output, None


@dataclass
class _Interval:
    """Images, time and loss sums (ce, total, count) since the last train.log line."""

    device: torch.device
    t: float = field(default_factory=time.perf_counter)
    images: int = 0
    loss: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.loss = torch.zeros(3, dtype=torch.float64, device=self.device)


@dataclass
class LoopConfig:
    """What the loop needs from the recipe, already converted to steps."""

    total_steps: int
    steps_per_epoch: int
    grad_accum: int
    label_smoothing: float
    aux_loss_weight: float
    clip_grad: float | None
    log_every: int
    ckpt_every: int | None
    eval_every: int  # epochs; 0 = never during training
    amp_dtype: torch.dtype | None
    channels_last: bool
    progress: bool
    seed: int


def train(
    state: TrainState,
    net: nn.Module,
    loader,
    sampler: TrainBatchSampler,
    val_loader,
    loop: LoopConfig,
    env: DistEnv,
    logger: RunLogger,
    ckpts: CheckpointManager,
    ckpt_extra: dict[str, Any],
) -> dict[str, Any]:
    """Run until ``loop.total_steps``; returns the last evaluation (or {}) and throughput."""
    model = state.model
    pos = state.pos
    if state.scheduler is not None:
        state.scheduler.step_update(num_updates=pos.step)
    last_eval: dict[str, Any] = {}
    images_seen, train_time = 0, 0.0
    while pos.step < loop.total_steps:
        sampler.set_epoch(pos.epoch, pos.sample)
        ranges = sampler.batches()
        groups = [ranges[i : i + loop.grad_accum] for i in range(0, len(ranges), loop.grad_accum)]
        finished_epoch = True
        bar = Progress(
            min(len(groups), loop.total_steps - pos.step),
            f"epoch {pos.epoch + 1}",
            loop.progress and env.is_main,
        )
        interval = _Interval(env.device)
        it = iter(loader)
        for gi, group in enumerate(groups):
            step_total = sum(end - begin for begin, end in group)
            state.optimizer.zero_grad(set_to_none=True)
            for mi in range(len(group)):
                images, targets = next(it)
                images = images.to(env.device, non_blocking=True)
                if loop.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                targets = targets.to(env.device, non_blocking=True)
                sync = mi == len(group) - 1 or not env.distributed
                # no_sync must cover the backward (it defers DDP's all-reduce to the last
                # micro-batch); autocast covers only the forward, as PyTorch recommends
                with net.no_sync() if not sync else contextlib.nullcontext():
                    with autocast(env.device, loop.amp_dtype):
                        logits, aux = split_output(net(images))
                    ce = F.cross_entropy(
                        logits.float(),
                        targets,
                        reduction="none",
                        label_smoothing=loop.label_smoothing,
                    )
                    total = ce
                    if aux is not None:
                        total = ce + loop.aux_loss_weight * F.cross_entropy(
                            aux.float(),
                            targets,
                            reduction="none",
                            label_smoothing=loop.label_smoothing,
                        )
                    scaled = total.sum() * (env.world_size / step_total)
                    state.scaler.scale(scaled).backward()
                # summed on the device: no host sync per step (only at log lines)
                interval.loss += torch.stack(
                    [ce.detach().sum(), total.detach().sum(), ce.new_tensor(float(ce.numel()))]
                ).double()
            if loop.clip_grad is not None:
                state.scaler.unscale_(state.optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), loop.clip_grad)
            state.scaler.step(state.optimizer)
            state.scaler.update()
            pos.step += 1
            pos.sample = group[-1][1]
            if state.ema is not None:
                state.ema.update(model, step=pos.step)
            if state.scheduler is not None:
                state.scheduler.step_update(num_updates=pos.step)
            interval.images += step_total
            if bar.enabled:
                bar.update(gi + 1, f"loss {ce.detach().mean().item():.3f}")
            if pos.step % loop.log_every == 0 or pos.step == loop.total_steps:
                dt_s = time.perf_counter() - interval.t
                train_time += dt_s
                images_seen += interval.images
                sums = all_reduce_sum(interval.loss, env)
                epoch_f = _epoch_float(pos, sampler)
                logger.train_step(
                    pos.step,
                    epoch_f,
                    interval.images / max(dt_s, 1e-9),
                    sums[0].item() / max(sums[2].item(), 1),
                    sums[1].item() / max(sums[2].item(), 1),
                    state.optimizer.param_groups[0]["lr"],
                )
                interval = _Interval(env.device)
            if loop.ckpt_every and pos.step % loop.ckpt_every == 0 and gi < len(groups) - 1:
                save(state, env, ckpts, ckpt_extra)
            if pos.step >= loop.total_steps and gi < len(groups) - 1:
                finished_epoch = False
                break
        bar.close()
        del it
        train_time += time.perf_counter() - interval.t
        images_seen += interval.images
        if finished_epoch:
            pos.epoch += 1
            pos.sample = 0
        save(state, env, ckpts, ckpt_extra)
        evaluate_now = finished_epoch and loop.eval_every > 0 and pos.epoch % loop.eval_every == 0
        if val_loader is not None and (evaluate_now or pos.step >= loop.total_steps):
            last_eval = run_eval(state, val_loader, loop, env, logger, _epoch_float(pos, sampler))
    return {
        "eval": last_eval,
        "images_per_sec": images_seen / max(train_time, 1e-9),
        "train_time_s": train_time,
    }


def _epoch_float(pos: Position, sampler: TrainBatchSampler) -> float:
    return pos.epoch + pos.sample / max(sampler.n, 1)


def run_eval(
    state: TrainState, val_loader, loop: LoopConfig, env: DistEnv, logger: RunLogger, epoch: float
) -> dict[str, Any]:
    """Evaluate the EMA weights when EMA is on (timm's practice), else the trained weights."""
    model = state.ema.module if state.ema is not None else state.model
    result = evaluate(
        model, val_loader, env, loop.amp_dtype, loop.channels_last, progress=loop.progress
    )
    logger.evaluation(state.pos.step, epoch, result)
    log.info(
        "eval step %d: top1 %.2f top5 %.2f loss %.4f over %d images",
        state.pos.step,
        result["top1"],
        result["top5"],
        result["loss"],
        result["count"],
    )
    return result


def save(
    state: TrainState, env: DistEnv, ckpts: CheckpointManager, extra: dict[str, Any]
) -> Path | None:
    bad = [n for n, p in state.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # never let a diverged model replace the good checkpoints
        raise UserError(
            f"non-finite weights at step {state.pos.step} ({bad[0]}{' and others' if len(bad) > 1 else ''});"
            f" not saved, the last good checkpoint in {ckpts.directory} is kept (lower the lr or use amp=off)"
        )
    payload = state.payload(env, extra)  # collective (RNG gather): every rank takes part
    if not env.is_main:
        return None
    return ckpts.save(state.pos.step, payload)


def steps_per_epoch(n: int, batch_size: int, world_size: int, grad_accum: int) -> int:
    from classzoo.data.sampling import global_batches

    return max(1, math.ceil(len(global_batches(n, batch_size, world_size)) / grad_accum))
