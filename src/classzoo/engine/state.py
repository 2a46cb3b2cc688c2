"""What a training checkpoint holds and how a run continues from one, bit for bit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from classzoo.engine.checkpoint import rng_state, set_rng_state
from classzoo.engine.distributed import DistEnv
from classzoo.engine.logs import utc_now


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
            torch.manual_seed(seed + 1_000_003 * self.pos.step + env.rank)

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
