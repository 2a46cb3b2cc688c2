"""What a training checkpoint holds and how a run continues from one, bit for bit."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from classzoo.data.sampling import torch_seed
from classzoo.engine.devices import accelerator_rng_state, set_accelerator_rng_state
from classzoo.engine.distributed import DistEnv
from classzoo.engine.logs import utc_now
from classzoo.engine.sync_bn import average_over_ranks, running_stat_buffers


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state holds an ndarray; store it as a tensor so weights_only loading accepts it
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    state.update(accelerator_rng_state())  # cuda / npu / mps: dropout draws from them
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    set_accelerator_rng_state(state)


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
    # no train.sync_bn on several ranks: each rank's BatchNorm keeps running statistics of its
    # own batches, averaged over the ranks after every optimizer step (share_bn_stats)
    reduce_bn: bool = False

    def share_bn_stats(self, env: DistEnv) -> None:
        """Average the model's BatchNorm running statistics over the ranks (a collective), after
        each optimizer step and before the EMA update, so that every rank holds the same model
        and EMA at every step. timm's train.py averages them once per epoch, before its eval
        (``distribute_bn(model, world_size, reduce=True)``, its ``--dist-bn reduce`` default);
        per step here, because a checkpoint can be written at any step (a graceful stop): it
        must hold what every rank continues with (resume bit for bit; DDP re-broadcasts only
        rank 0's model buffers at each forward, the EMA's per-rank copies it never sees), and an
        evaluation must score what is saved (each rank scored its val shard with its own
        statistics; only rank 0's were saved). One all-reduce of 212 kB for timm's resnet50
        (53,120 statistics), against its 102 MB of gradients."""
        if self.reduce_bn and env.distributed:  # the buffers found afresh: a .to() replaces them
            average_over_ranks(running_stat_buffers(self.model), env.world_size)

    def payload(self, env: DistEnv, extra: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint dict; a collective (the RNG states of every rank are gathered)."""
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
            torch.manual_seed(torch_seed(seed + 1_000_003 * self.pos.step + env.rank))

    def non_finite(self) -> list[str]:
        """Names of parameters holding NaN or inf (a diverged model must not replace good files)."""
        return [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]


def gather_rng(env: DistEnv) -> list[dict[str, Any]]:
    mine = rng_state()
    if not env.distributed:
        return [mine]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, mine)
    return out
