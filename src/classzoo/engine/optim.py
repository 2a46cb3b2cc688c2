"""Optimizer and learning-rate schedule: timm's, configured from the recipe.

Durations are given in epochs in recipes and converted to optimizer steps here, once, so the
loop only sees steps (big_vision's rule). The lr of a recipe is for ``lr_base_batch`` images and
is scaled linearly to the run's global batch (Goyal et al. 2017), stated in the log.
"""

from __future__ import annotations

import logging

import torch
from timm.optim import create_optimizer_v2, get_optimizer_info
from timm.scheduler import CosineLRScheduler, StepLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn

from classzoo.config import OptimConfig, SchedConfig
from classzoo.errors import UserError

log = logging.getLogger("classzoo")


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    if cfg.lr_base_batch is None:
        return cfg.lr
    return cfg.lr * global_batch / cfg.lr_base_batch


# torch optimizers with a fused implementation (``fused=True``) on CPU and CUDA
_FUSED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad)


def has_fused_kernel(name: str) -> bool:
    """Whether timm's optimizer ``name`` is a torch optimizer with a fused implementation."""
    try:
        return issubclass(get_optimizer_info(name).opt_class, _FUSED)
    except (KeyError, ValueError, TypeError):  # an unknown name: build_optimizer names it
        return False


def fused_choice(cfg: OptimConfig, device_default: bool) -> bool:
    """``optim.fused`` resolved: as asked (an error where ``cfg.name`` has no fused form), or
    the device's default where the optimizer has one."""
    capable = has_fused_kernel(cfg.name)
    if cfg.fused and not capable:
        raise UserError(
            f"optim.fused=true: {cfg.name} has no fused implementation "
            f"(only {', '.join(c.__name__ for c in _FUSED)}: sgd, momentum, nesterov, adam, "
            "adamw, adagrad)"
        )
    return capable and (device_default if cfg.fused is None else cfg.fused)


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, lr: float, fused: bool = False
) -> torch.optim.Optimizer:
    """timm's optimizer ``cfg.name``; ``fused``: torch's fused kernel (see fused_choice)."""
    kwargs: dict = {"fused": True} if fused else {}
    sgd_family = cfg.name in ("sgd", "momentum", "nesterov")
    if cfg.nesterov and not sgd_family:
        raise UserError(
            f"optim.nesterov=true: {cfg.name} has no Nesterov form (only sgd / momentum / nesterov)"
        )
    if cfg.nesterov is not None and sgd_family:
        kwargs["nesterov"] = cfg.nesterov  # overrides timm's per-name default
    if cfg.eps is not None:
        kwargs["eps"] = cfg.eps
    if cfg.alpha is not None:
        kwargs["alpha"] = cfg.alpha
    try:
        return create_optimizer_v2(
            model,
            opt=cfg.name,
            lr=lr,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            filter_bias_and_bn=cfg.filter_bias_and_bn,
            **kwargs,
        )
    except (AssertionError, ValueError, TypeError) as exc:
        raise UserError(f"optim.name={cfg.name!r}: {exc}") from None


def check_optimizer(cfg: OptimConfig, lr: float) -> None:
    """Build ``cfg``'s optimizer over one parameter: a name or an argument timm or torch
    refuses is a UserError before the run folder is written, not after."""
    groups = build_optimizer(nn.Linear(1, 1), cfg, lr).param_groups[0]
    # timm drops the arguments an optimizer has no use for without a word (momentum of adamw)
    default = OptimConfig()
    unused = [
        k for k in ("momentum", "eps") if k not in groups and getattr(cfg, k) != getattr(default, k)
    ]
    if unused:
        raise UserError(
            " and ".join(f"optim.{k}={getattr(cfg, k)}" for k in unused)
            + f" {'has' if len(unused) == 1 else 'have'} no effect with {cfg.name} (leave "
            + ", ".join(f"--set optim.{k}={_yaml(getattr(default, k))}" for k in unused)
            + ": the defaults)"
        )


def _yaml(value: object) -> str:
    return "null" if value is None else str(value)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedConfig, epochs: float, steps_per_epoch: int
) -> Scheduler | None:
    """A per-step timm scheduler; ``step_update(step)`` sets the lr of optimizer step ``step``."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.name == "const":
        return None
    if cfg.name == "cosine":
        period = max(1, round(cosine_epochs(cfg, epochs) * steps_per_epoch))
        return CosineLRScheduler(
            optimizer,
            t_initial=period,
            lr_min=cfg.min_lr,
            warmup_t=warmup,
            warmup_lr_init=cfg.warmup_lr,
            t_in_epochs=False,
        )
    if cfg.name == "step":
        return StepLRScheduler(
            optimizer,
            decay_t=max(1, round(cfg.decay_epochs * steps_per_epoch)),
            decay_rate=cfg.decay_rate,
            warmup_t=warmup,
            warmup_lr_init=cfg.warmup_lr,
            t_in_epochs=False,
        )
    raise UserError(f"sched.name={cfg.name!r} is not one of cosine, step, const")


def cosine_epochs(cfg: SchedConfig, epochs: float) -> float:
    """The cosine's period in epochs: ``sched.t_max`` (the InceptionV4 reference's --T_max,
    independent of how long the run trains), else the run's epochs less the cooldown."""
    return cfg.t_max if cfg.t_max is not None else epochs - cfg.cooldown_epochs


def lr_shape(cfg: SchedConfig, epochs: float) -> str:
    """The schedule in words, for the record (and for a resume: engine/same_run.py): a cosine
    whose period is ``sched.t_max`` ends a shorter run before the period's end. A warmup asked
    of the constant schedule (which has none: build_scheduler) is a UserError."""
    if cfg.name == "const" and cfg.warmup_epochs:
        raise UserError(
            f"sched.warmup_epochs={cfg.warmup_epochs:g} has no effect with sched.name=const "
            "(a constant lr); set it to 0, or use sched.name=cosine or step"
        )
    warm = (
        f"; its first {cfg.warmup_epochs:g} epochs a linear warmup from {cfg.warmup_lr:g}"
        if cfg.warmup_epochs
        else ""
    )
    _check_sched_keys(cfg, epochs)
    if cfg.name == "const":
        return "constant"
    if cfg.name == "step":
        return f"x {cfg.decay_rate:g} every {cfg.decay_epochs:g} epochs{warm}"
    period = cosine_epochs(cfg, epochs)
    why = "sched.t_max" if cfg.t_max is not None else "train.epochs"
    return f"cosine to {cfg.min_lr:g} over {period:g} epochs ({why}){warm}"


# the sched keys each schedule reads (build_scheduler); any other key set is recorded and unused
_SCHED_KEYS = {
    "const": {"name"},
    "step": {"name", "warmup_epochs", "warmup_lr", "decay_epochs", "decay_rate"},
    "cosine": {"name", "warmup_epochs", "warmup_lr", "min_lr", "cooldown_epochs", "t_max"},
}


def _check_sched_keys(cfg: SchedConfig, epochs: float) -> None:
    """A sched key the schedule never reads, or a cosine left with no length, is a UserError."""
    default = SchedConfig()
    unused = {
        k: f"with sched.name={cfg.name}"
        for k in vars(cfg)
        if k not in _SCHED_KEYS[cfg.name] and getattr(cfg, k) != getattr(default, k)
    }
    if cfg.name == "cosine" and cfg.t_max is not None and cfg.cooldown_epochs:
        unused["cooldown_epochs"] = "with sched.t_max (which sets the cosine's period)"
    if unused:  # every one at once: a recipe of an older classzoo may hold several
        raise UserError(
            "; ".join(
                f"sched.{k}={getattr(cfg, k)} has no effect {why}" for k, why in unused.items()
            )
            + " (leave "
            + ", ".join(f"--set sched.{k}={_yaml(getattr(default, k))}" for k in unused)
            + ": the defaults)"
        )
    if cfg.name == "cosine" and cosine_epochs(cfg, epochs) <= 0:
        raise UserError(
            f"sched.cooldown_epochs={cfg.cooldown_epochs:g} leaves no cosine: train.epochs="
            f"{epochs:g} - cooldown <= 0"
        )


def lr_at(scheduler: Scheduler | None, optimizer: torch.optim.Optimizer, step: int) -> float:
    """The lr the schedule gives at ``step`` (without changing the optimizer)."""
    if scheduler is None:
        return optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
    return float(scheduler._get_lr(step)[0])
