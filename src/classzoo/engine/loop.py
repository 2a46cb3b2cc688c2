"""The training loop's spine: ``train_step`` -> ``train_one_epoch`` -> ``train``.

``classzoo train`` and ``classzoo bench`` run the same ``train_step``, so the benchmark measures
the trainer's own step.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from classzoo.data.decode import UnreadableImage
from classzoo.data.device import Prefetcher
from classzoo.data.sampling import TrainBatchSampler, global_batches
from classzoo.engine.devices import traits
from classzoo.engine.distributed import DistEnv, all_reduce_sum
from classzoo.engine.loader_workers import WorkerDied, fetching, start
from classzoo.engine.logs import Progress
from classzoo.engine.precision import autocast
from classzoo.engine.state import TrainState
from classzoo.errors import UserError, one_line
from classzoo.formats.tfrecord import CorruptRecordError

log = logging.getLogger("classzoo")


@dataclass(frozen=True)
class StepConfig:
    """What one optimizer step needs from the recipe."""

    label_smoothing: float = 0.0
    aux_loss_weight: float = 0.4  # slim train_image_classifier.py weight of AuxLogits
    clip_grad: float | None = None
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False


@dataclass(frozen=True)
class LoopConfig:
    """What the loop needs beyond one step, already converted to steps."""

    step: StepConfig
    total_steps: int
    steps_per_epoch: int
    grad_accum: int
    log_every: int
    ckpt_every: int | None
    eval_every: int  # epochs; 0 = never during training
    progress: bool


def split_output(output) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, aux logits or None): slim InceptionV4 returns both in train mode."""
    if isinstance(output, (tuple, list)):
        return output[0], output[1]
    return output, None


def compute_loss(
    output, targets: torch.Tensor, label_smoothing: float, aux_loss_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (cross-entropy of the main head, total loss optimized) in fp32."""
    logits, aux = split_output(output)
    ce = F.cross_entropy(logits.float(), targets, reduction="none", label_smoothing=label_smoothing)
    if aux is None:
        return ce, ce
    aux_ce = F.cross_entropy(
        aux.float(), targets, reduction="none", label_smoothing=label_smoothing
    )
    return ce, ce + aux_loss_weight * aux_ce


def input_layout(channels_last: bool) -> torch.memory_format:
    """The memory format of a model input under ``train.channels_last``."""
    return torch.channels_last if channels_last else torch.contiguous_format


def channels_last_input(x: torch.Tensor, device: torch.device, channels_last: bool):
    """The batch on ``device`` in the recorded layout: the CPU batch stages hand channels_last
    views over, so ``train.channels_last: false`` makes them contiguous NCHW (as torchvision's
    loader gives them), or the setting would be recorded and not run."""
    x = x.to(device, non_blocking=True)
    if x.dim() == 4:
        x = x.contiguous(memory_format=input_layout(channels_last))
    return x


def train_step(
    state: TrainState,
    net: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | Iterator,
    step_total: int,
    cfg: StepConfig,
    env: DistEnv,
) -> torch.Tensor:
    """One optimizer step over ``micro_batches`` (gradient accumulation when more than one).

    ``step_total``: samples of the whole step over all ranks. Returns the device tensor
    (sum of ce, sum of total loss, sample count) of this rank; nothing here syncs with the host.
    """
    state.optimizer.zero_grad(set_to_none=True)
    batches = list(micro_batches)
    sums = torch.zeros(3, dtype=traits(env.device).sum_dtype, device=env.device)
    for i, (images, targets) in enumerate(batches):
        images = channels_last_input(images, env.device, cfg.channels_last)
        targets = targets.to(env.device, non_blocking=True)
        last = i == len(batches) - 1
        # no_sync must cover the backward (it defers DDP's all-reduce to the last micro-batch);
        # autocast covers only the forward, as PyTorch recommends
        with net.no_sync() if env.distributed and not last else contextlib.nullcontext():
            with autocast(env.device, cfg.amp_dtype):
                output = net(images)
            ce, total = compute_loss(output, targets, cfg.label_smoothing, cfg.aux_loss_weight)
            state.scaler.scale(total.sum() * (env.world_size / step_total)).backward()
        sums += torch.stack(
            [ce.detach().sum(), total.detach().sum(), ce.new_tensor(float(ce.numel()))]
        ).to(sums.dtype)
    if cfg.clip_grad is not None:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.clip_grad)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.pos.step += 1
    state.share_bn_stats(env)  # several ranks without sync_bn: the same statistics on each
    if state.ema is not None:
        state.ema.update(state.model, step=state.pos.step)
    if state.scheduler is not None:
        state.scheduler.step_update(num_updates=state.pos.step)
    return sums


@dataclass
class _Interval:
    """Images, time, data wait and loss sums (ce, total, count) since the last train.log line,
    and the lr its last step used (the scheduler has moved on to the next step's by the line,
    so the lr is read before the step, as timm's train.py reads it before step_update)."""

    device: torch.device
    t: float = field(default_factory=time.perf_counter)
    images: int = 0
    data_wait: float = 0.0
    lr: float = float("nan")
    loss: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.loss = torch.zeros(3, dtype=traits(self.device).sum_dtype, device=self.device)


@dataclass
class Hooks:
    """What the loop calls out to: saving, logging a line, asking whether to stop, whether
    the checkpoint of a step has an evaluation recorded (the same answer on every rank), and
    telling the stop what the run still finishes once no step is left."""

    save: Callable[[], Any]
    log_line: Callable[[int, float, float, float, float, float, float], None]
    should_stop: Callable[[], bool] = lambda: False
    scored: Callable[[int], bool] = lambda step: True
    finishing: Callable[[str], None] = lambda what: None


def epoch_float(state: TrainState, sampler: TrainBatchSampler) -> float:
    """Epochs done: the last step of an epoch reads the completed epoch in every log, also when
    the epoch's last few images are skipped (a batch too small to split over the ranks) and
    the epoch counter has not moved on yet."""
    left = global_batches(sampler.n, sampler.batch_size, sampler.world_size, state.pos.sample)
    if state.pos.sample > 0 and not left:
        return state.pos.epoch + 1.0
    return state.pos.epoch + state.pos.sample / max(sampler.n, 1)


def train_one_epoch(
    state: TrainState,
    net: nn.Module,
    loader,
    sampler: TrainBatchSampler,
    loop: LoopConfig,
    env: DistEnv,
    hooks: Hooks,
    bar: Progress,
    batch_fn: Callable[[Any], torch.Tensor],
) -> tuple[str, int, float]:
    """Train from the current position to the end of the epoch (or the step limit, or a stop).

    Returns (why it ended: "epoch" | "limit" | "stop", images, seconds).
    """
    sampler.set_epoch(state.pos.epoch, state.pos.sample)
    ranges = sampler.batches()
    groups = [ranges[i : i + loop.grad_accum] for i in range(0, len(ranges), loop.grad_accum)]
    interval = _Interval(env.device)
    images_done, seconds, reason = 0, 0.0, "epoch"
    with batches_of(loader) as it:
        # the copy and batch stage of batch k+1 overlap step k (a side stream on CUDA)
        batches = iter(Prefetcher(it, env.device, batch_fn))
        for gi, group in enumerate(groups):
            step_total = sum(end - begin for begin, end in group)
            t_wait = time.perf_counter()
            micro = _fetch(batches, len(group), interval, state, sampler, env, hooks)
            interval.data_wait += time.perf_counter() - t_wait
            interval.lr = state.optimizer.param_groups[0]["lr"]
            interval.loss += train_step(state, net, micro, step_total, loop.step, env)
            state.pos.sample = group[-1][1]
            interval.images += step_total
            bar.update(state.pos.step)  # absolute; no host sync (the loss comes at log lines)
            last_of_epoch = gi == len(groups) - 1
            at_limit = state.pos.step >= loop.total_steps
            stop = hooks.should_stop()
            # every step is in a line: an epoch's last steps too (timm's train.py logs its
            # last batch), and those before a stop
            if state.pos.step % loop.log_every == 0 or at_limit or last_of_epoch or stop:
                seconds += time.perf_counter() - interval.t
                images_done += interval.images
                loss = _log_interval(interval, state, sampler, env, hooks)
                bar.update(state.pos.step, loss=loss, data_wait_s=interval.data_wait)
                interval = _Interval(env.device)
            if stop:
                reason = "stop"
            elif at_limit and not last_of_epoch:
                reason = "limit"
            elif loop.ckpt_every and state.pos.step % loop.ckpt_every == 0 and not last_of_epoch:
                hooks.save()
            if reason != "epoch":
                break
    if reason == "epoch":
        state.pos.epoch += 1
        state.pos.sample = 0
    return reason, images_done + interval.images, seconds + time.perf_counter() - interval.t


def _fetch(batches, n: int, interval, state, sampler, env: DistEnv, hooks: Hooks) -> list:
    """The next ``n`` batches; where a damaged file or a dead worker stops the run, train()
    saves the steps done, so their interval is logged first (one process only: the line's
    all-reduce would wait for ranks that never come)."""
    try:
        return [next(batches) for _ in range(n)]
    except (UnreadableImage, CorruptRecordError, WorkerDied):
        if env.world_size == 1 and interval.images:
            _log_interval(interval, state, sampler, env, hooks)
        raise


@contextlib.contextmanager
def batches_of(loader) -> Iterator:
    """The loader's iterator; its workers are shut down however the loop ends. An error raised
    in a worker must not leave them to the exit-time terminate(): they ignore SIGTERM (the main
    process owns a graceful stop), and joining them would hang."""
    it = None
    try:
        it = start(loader)  # a dead worker is found between steps (engine/loader_workers.py)
        yield fetching(it)
    except BaseException:  # a normal end keeps persistent workers for the next epoch
        it = it if it is not None else getattr(loader, "_iterator", None)  # persistent ones
        shutdown = getattr(it, "_shutdown_workers", None)  # torch's multi-process iterator
        if shutdown is not None:
            shutdown()
        raise


def _log_interval(
    interval: _Interval, state: TrainState, sampler: TrainBatchSampler, env: DistEnv, hooks: Hooks
) -> float:
    """Write one train.log line; returns the interval's mean loss (for the progress bar)."""
    dt_s = max(time.perf_counter() - interval.t, 1e-9)
    sums = all_reduce_sum(interval.loss, env)  # the only host sync: once per log line
    count = max(sums[2].item(), 1)
    hooks.log_line(
        state.pos.step,
        epoch_float(state, sampler),
        interval.images / dt_s,
        sums[0].item() / count,
        sums[1].item() / count,
        interval.lr,
        interval.data_wait / dt_s,
    )
    return sums[0].item() / count


def train(
    state: TrainState,
    net: nn.Module,
    loader,
    sampler: TrainBatchSampler,
    loop: LoopConfig,
    env: DistEnv,
    hooks: Hooks,
    evaluate_after_epoch: Callable[[bool], dict[str, Any]] | None,
    batch_fn: Callable[[Any], torch.Tensor],
) -> dict[str, Any]:
    """Run until ``loop.total_steps`` (or a graceful stop); returns throughput and how it ended.

    ``evaluate_after_epoch(final)`` runs after each ``eval_every`` epochs and at the end.
    """
    if state.scheduler is not None:
        state.scheduler.step_update(num_updates=state.pos.step)
    images, seconds, reason, last_eval = 0, 0.0, "epoch", {}
    bar = Progress(loop.total_steps, "train", loop.progress and env.is_main)
    bar.update(state.pos.step)
    if evaluate_after_epoch is not None and _unscored_on_resume(state, loop, hooks):
        # resumed from the checkpoint of an epoch whose evaluation never ended (the process
        # died in it): evaluated now, as the uninterrupted run did, so eval.log and best.pt
        # have it
        evaluate_after_epoch(False)
    while state.pos.step < loop.total_steps and reason != "stop":
        try:
            reason, n, dt = train_one_epoch(
                state, net, loader, sampler, loop, env, hooks, bar, batch_fn
            )
        except (UnreadableImage, CorruptRecordError, WorkerDied) as exc:
            raise _saved_before(exc, hooks, env, state.pos.step) from None
        images, seconds = images + n, seconds + dt
        if reason != "stop" and state.pos.step >= loop.total_steps:  # a signal waits for these
            evals = "" if evaluate_after_epoch is None else " and the final evaluation"
            hooks.finishing(f"the last checkpoint{evals} (no step is left)")
        hooks.save()
        if reason == "stop" or evaluate_after_epoch is None:
            continue
        final = state.pos.step >= loop.total_steps
        due = reason == "epoch" and loop.eval_every > 0 and state.pos.epoch % loop.eval_every == 0
        if due or final:
            last_eval = evaluate_after_epoch(final)
    if evaluate_after_epoch is not None and reason != "stop" and not last_eval:
        # resumed with nothing left to train (a run killed in its final evaluation, or one
        # resumed after it finished): the final weights are evaluated, never left unscored
        last_eval = evaluate_after_epoch(True)
    bar.close()
    return {
        "eval": last_eval,
        "images": images,
        "images_per_sec": images / max(seconds, 1e-9),
        "train_time_s": seconds,
        "stopped": reason == "stop",
    }


def _saved_before(exc: UserError, hooks: Hooks, env: DistEnv, step: int) -> UserError:
    """A damaged file stops the run when its batch is fetched, before the step that would use
    it: the steps done so far are saved first (a bad file found mid-epoch lost every step since
    the last checkpoint). One process only: on several, the other ranks wait in a collective
    the failing one never joins, and the last periodic checkpoint is what --resume continues."""
    if env.world_size > 1 or step == 0:
        return exc
    hooks.save()
    return type(exc)(f"{one_line(exc)}; the {step} steps done are saved: --resume auto continues")


def _unscored_on_resume(state: TrainState, loop: LoopConfig, hooks: Hooks) -> bool:
    """At the end of an epoch whose periodic evaluation was due, with no score recorded for its
    checkpoint; the final step is train()'s own case."""
    epoch_end = state.pos.step > 0 and state.pos.sample == 0
    due = loop.eval_every > 0 and state.pos.epoch % loop.eval_every == 0
    return (
        epoch_end and due and state.pos.step < loop.total_steps and not hooks.scored(state.pos.step)
    )


def steps_per_epoch(n: int, batch_size: int, world_size: int, grad_accum: int) -> int:
    return max(1, math.ceil(len(global_batches(n, batch_size, world_size)) / grad_accum))
