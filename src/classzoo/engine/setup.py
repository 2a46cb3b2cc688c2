"""Resolve once and build what a run needs: the datasets, the model, the schedule.

The order (engine/build.py says why): the preprocessing and label offset the model's defaults
imply, the splits, the class count, the model and its weights, the resolved record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from classzoo.config import Config
from classzoo.data.class_index import imagenet_head
from classzoo.data.sampling import torch_seed
from classzoo.engine import build
from classzoo.engine.bf16_conv_check import cpu_training_check
from classzoo.engine.distributed import DistEnv
from classzoo.engine.loop import steps_per_epoch
from classzoo.engine.optim import lr_shape, scaled_lr
from classzoo.engine.resolve import (
    Resolved,
    Schedule,
    check_train_augment,
    label_offset_for,
    num_classes_for,
    preprocess_for,
    resolve,
)


@dataclass
class Setup:
    """A run's resolved record and the objects built from it."""

    resolved: Resolved
    model: nn.Module
    train: build.Split | None
    val: build.Split | None
    resume_from: dict[str, Any] | None = None  # --resume FILE, read and checked once, early
    resumed_record: dict[str, Any] | None = None  # the record of the checkpoint continued from


def set_up(asked: Config, env: DistEnv, need_train: bool, need_val: bool) -> Setup:
    """Resolve once and build the datasets and the model (see engine/build.py for the order)."""
    data, m = asked.data, asked.model
    defaults = build.model_defaults(m.name, dict(m.kwargs))
    pre = preprocess_for(data, defaults)
    if need_train:
        check_train_augment(data, pre.preset)
    offset = label_offset_for(data, defaults, m.num_classes)
    n_synth = m.num_classes or 10
    train = val = None
    if need_train:
        train = build.open_split(data, data.train_split, pre, True, offset, n_synth)
    classes = train.classes if train is not None else None
    if need_val:
        val = build.open_split(data, data.val_split, pre, False, offset, n_synth, classes)
        classes = classes or val.classes
    first = train or val
    tfrecord = first.info if data.source == "tfrecord" else None
    num_classes = num_classes_for(m, classes, tfrecord, offset)
    model, weights = build.build_model(m, num_classes, pre.image_size, asked.train.seed)
    torch.manual_seed(torch_seed(asked.train.seed + env.rank))  # after the same init: dropout
    n = int(getattr(model, "num_classes", num_classes or 0))
    if classes and imagenet_head(classes, n):  # synset folders: ImageNet's logit, not position
        train, val, classes = build.imagenet_labelled(train, val, n)
    infos = {k: v.info for k, v in (("train", train), ("val", val)) if v is not None}
    schedule = _schedule(asked, len(train.dataset), env.world_size) if train is not None else None
    wrong = schedule and cpu_training_check(model, asked.train.amp, env.device, pre.image_size)
    loaded = getattr(model, "load_report", None)  # with the class names its checkpoint stores
    found = (defaults, n, classes, infos, weights, schedule, wrong, loaded)
    resolved = resolve(asked, env.device, env.world_size, *found)
    model.to(env.device)
    if resolved.channels_last:
        model.to(memory_format=torch.channels_last)
    return Setup(resolved, model, train, val)


def _schedule(asked: Config, n_train: int, world_size: int) -> Schedule:
    t, o = asked.train, asked.optim
    global_batch = asked.data.batch_size * world_size * t.grad_accum_steps
    spe = steps_per_epoch(n_train, asked.data.batch_size, world_size, t.grad_accum_steps)
    rule = f"{o.lr} x {global_batch}/{o.lr_base_batch}" if o.lr_base_batch else "as given"
    return Schedule(
        per_device_batch=asked.data.batch_size,
        grad_accum=t.grad_accum_steps,
        global_batch=global_batch,
        lr=scaled_lr(o, global_batch),
        lr_rule=rule,
        steps_per_epoch=spe,
        total_steps=t.max_steps or max(1, round(t.epochs * spe)),
        lr_shape=lr_shape(asked.sched, t.epochs),
    )
