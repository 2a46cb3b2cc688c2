"""A checkpoint made anywhere, ready to evaluate, predict or export anywhere.

A classzoo checkpoint carries the Resolved record of its run: its model, head size, label offset,
classes and the exact preprocessing are taken from there (the truth it was trained with), never
its training precision or device. Other formats (safetensors, TF) need ``--model`` or
``--recipe``, and the model's own defaults apply.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classzoo.config import Config, from_dict, load_recipe, with_overrides, with_values
from classzoo.data.class_index import is_imagenet_synsets
from classzoo.data.label_file import check_label_file
from classzoo.engine.build import (
    Split,
    build_model,
    eval_loader,
    labelled_by_logit,
    model_defaults,
    open_split,
    weights_report,
)
from classzoo.engine.checkpoint import newest_in_run
from classzoo.engine.distributed import init_distributed, local_device, shutdown
from classzoo.engine.evaluate import EvalOptions, evaluate
from classzoo.engine.logs import setup_console_logging
from classzoo.engine.rank_agreement import check_same_data
from classzoo.engine.resolve import Resolved, resolve
from classzoo.engine.resolved_text import describe
from classzoo.errors import UserError
from classzoo.formats.torch_checkpoint import load_checkpoint_file
from classzoo.models.weights import (
    LoadReport,
    detect_format,
    load_checkpoint,
    load_into,
    state_from_checkpoint,
)

log = logging.getLogger("classzoo")
_SPLIT_NAMES = ("train", "val", "validation", "valid", "test", "eval")  # folders named as splits


@dataclass
class CheckpointSource:
    """A checkpoint as read once: its format, its contents (classzoo files) and stored record."""

    path: str
    format: str
    contents: dict[str, Any] | None
    stored: Resolved | None


def read_source(path: str) -> CheckpointSource:
    """The checkpoint ``path`` names: a file, a TF prefix or folder, or a classzoo run folder
    (its newest checkpoint, logged)."""
    newest = newest_in_run(path)
    if newest is not None:
        log.info("checkpoint %s: the newest checkpoint of the run, %s", path, newest)
        path = str(newest)
    fmt = detect_format(path)
    if fmt != "classzoo":
        return CheckpointSource(path, fmt, None, None)
    ckpt = load_checkpoint_file(path)
    raw = ckpt.get("resolved") if isinstance(ckpt, dict) else None
    stored = Resolved.from_dict(raw, path) if isinstance(raw, dict) else None
    return CheckpointSource(path, fmt, ckpt, stored)


def asked_for(
    src: CheckpointSource, recipe: str | None, model: str | None, overrides: list[str]
) -> Config:
    """What the user asks of this evaluation: --recipe, else the checkpoint's own asked config,
    else just --model; then --set overrides. The checkpoint itself is loaded separately."""
    stored_cfg = src.contents.get("config") if src.contents else None
    if recipe is not None:
        cfg = load_recipe(recipe)
    elif isinstance(stored_cfg, dict):
        cfg = from_dict(stored_cfg, source=f"{src.path} (stored config)")
    elif model is not None or src.stored is not None:
        cfg = Config()
    else:
        raise UserError(f"{src.path} carries no config: pass --model NAME or --recipe NAME")
    values: dict[str, Any] = {
        "model.checkpoint": None,
        "model.exclude": [],
        "model.pretrained": False,
    }
    if model is not None:
        values["model.name"] = model
    elif src.stored is not None:
        values["model.name"] = src.stored.model
    return with_overrides(with_values(cfg, values, "eval"), overrides)


def defaults_for(src: CheckpointSource, asked: Config) -> dict[str, Any]:
    """Preprocessing defaults: the checkpoint's recorded preprocessing when it has one, else
    the model's evaluation defaults (timm's test size, as its validate.py)."""
    if src.stored is None or src.stored.model != asked.model.name:
        return model_defaults(asked.model.name, dict(asked.model.kwargs), test_size=True)
    p = src.stored.preprocess
    return {
        "preset": p.preset,
        "input_size": (3, p.image_size, p.image_size),
        "crop_pct": p.crop_pct,
        "interpolation": p.interpolation,
        "mean": p.mean,
        "std": p.std,
        "label_offset": src.stored.label_offset,
    }


def load_weights(
    net: nn.Module, model_name: str, src: CheckpointSource, use_ema: bool
) -> dict[str, Any]:
    """Load ``src`` into ``net`` (a classzoo file from what was already read), strictly: a
    classifier left at its initialisation would score random logits, so another class count
    is a UserError here (training may start a new head; evaluation may not). ``use_ema``: the
    EMA weights (``train.ema``: a run with EMA evaluated them, and ranked best.pt by them)."""
    made = src.stored.weights if src.stored is not None else {}
    left = list(made.get("left_at_init") or ())
    if left and "progress" not in (src.contents or {}):
        # a converted file with a new head or excluded layers: weights to fine-tune, not to score
        excluded = ", ".join(made.get("excluded") or ())  # none: --num-classes made the head
        why = f"excluded: {excluded}" if excluded else "another class count"
        shown = ", ".join(left[:4]) + (f", ... ({len(left)})" if len(left) > 4 else "")
        raise UserError(
            f"checkpoint {src.path}: its {shown} were left at their initialisation when it was "
            f"made from {made.get('source')} ({why}): fine-tune it "
            "(model.checkpoint=...) or convert again without --exclude / --num-classes"
        )
    if src.contents is None:
        report = load_checkpoint(net, model_name, src.path, use_ema=use_ema, allow_new_head=False)
    else:
        state = state_from_checkpoint(src.contents, src.path, use_ema)
        loaded, left = load_into(net, state, src.path, allow_new_head=False)
        report = LoadReport(src.path, src.format, loaded, left, [])
    return {**weights_report(report), "ema": use_ema}


def head_size(asked: Config, src: CheckpointSource, split: Split | None) -> int | None:
    """model.num_classes, else the checkpoint's record, else one logit per class folder; None
    (the model's own head: ImageNet's 1000, slim inception's 1001) for ImageNet synset folders,
    which name their logits whatever subset of them is present."""
    if asked.model.num_classes is not None:
        return asked.model.num_classes
    if src.stored is not None and src.stored.model == asked.model.name:
        return src.stored.num_classes
    if split is None or not split.classes or is_imagenet_synsets(split.classes):
        return None
    return len(split.classes)


@dataclass
class Prepared:
    asked: Config
    net: nn.Module
    resolved: Resolved
    split: Split | None


def prepare(
    src: CheckpointSource,
    asked: Config,
    device: torch.device,
    world_size: int = 1,
    with_data: bool = False,
) -> Prepared:
    """Model with weights, its Resolved record (eval precision, never training's) and, with
    ``with_data``, the asked config's validation split opened with the right transform."""
    defaults = defaults_for(src, asked)
    probe = resolve(asked, device, world_size, defaults, 1, None, {}, {}, None)
    split = None
    if with_data:
        split = open_split(
            asked.data,
            asked.data.val_split,
            probe.preprocess,
            False,
            probe.label_offset,
            asked.model.num_classes or 10,
        )
    n = head_size(asked, src, split)
    net, _ = build_model(asked.model, n, probe.preprocess.image_size, asked.train.seed)
    weights = load_weights(net, asked.model.name, src, asked.train.ema)
    stored_classes = src.stored.classes if src.stored is not None else None
    classes = list(stored_classes) if stored_classes else None
    n = int(getattr(net, "num_classes", n or 0))
    if split is not None and split.classes:  # an ImageFolder: its folders matched to logits
        split, names = labelled_by_logit(split, n, stored_classes, asked.data.class_order)
        classes = list(names)
    elif split is not None and stored_classes and asked.data.source == "tfrecord":
        check_label_file(Path(asked.data.dir), stored_classes, probe.label_offset)
    data = {"eval": split.info} if split is not None else {}
    resolved = resolve(asked, device, world_size, defaults, n, classes, data, weights, None)
    return Prepared(asked, net.to(device).eval(), resolved, split)


def eval_checkpoint(
    checkpoint: str,
    data_dir: str,
    recipe: str | None = None,
    model: str | None = None,
    batch_size: int | None = None,
    split: str | None = None,
    overrides: list[str] = (),
    device: str = "auto",
    quiet: bool = False,
) -> dict[str, Any]:
    """``classzoo eval``: every image of the split once, in the eval precision (fp32 default).
    Under torchrun the process group is destroyed before returning: left to the exit-time
    destructors, gloo's threads aborted a rank after its result was printed ("terminate called
    without an active exception", 1 run in 4-5 here) and torchrun reported the eval failed."""
    setup_console_logging(not quiet)
    env = init_distributed(device)
    try:
        src = read_source(checkpoint)
        asked = asked_for(src, recipe, model, [])
        values: dict[str, Any] = {"data.dir": data_dir, "train.device": device}
        if batch_size is not None:
            values["data.eval_batch_size"] = batch_size
        if asked.data.source == "synthetic":  # a smoke run's checkpoint on real images
            values["data.source"] = "imagefolder"
        if split is not None:  # the split asked for, not the files the run's val_pattern chose
            values.update({"data.val_split": split, "data.val_pattern": None})
        asked = with_overrides(with_values(asked, values, "eval"), list(overrides))
        root = Path(data_dir)
        if split is None and asked.data.source == "imagefolder":
            if not (root / asked.data.val_split).is_dir():  # the folder itself holds the classes
                _no_split_folders(root, asked.data.val_split)
                asked = with_values(asked, {"data.val_split": "."}, "eval")
            if root.is_dir() and not any(p.is_dir() for p in root.iterdir()):
                raise UserError(
                    f"{root} holds files but no class folders: for TFRecord shards add "
                    "--set data.source=tfrecord (an ImageFolder is <dir>/<class>/<image>)"
                )
        p = prepare(src, asked, env.device, env.world_size, with_data=True)
        check_same_data({"eval": p.split}, env)  # each rank cuts its shard from its own file list
        log.info("evaluating %s\n%s", src.path, describe(p.resolved))
        d = p.asked.data
        loader = eval_loader(p.split.dataset, d.eval_batch_size or d.batch_size, d.num_workers, env)
        opts = EvalOptions(
            p.resolved.precision_dtype("eval"), p.resolved.channels_last, not quiet, p.split.batch
        )
        # which weights were scored, named as summary.json's eval_weights
        weights = "ema" if p.resolved.weights.get("ema") else "model"
        precision = p.resolved.eval_precision
        result = evaluate(p.net, loader, env, opts)
        return {**result, "checkpoint": src.path, "weights": weights, "precision": precision}
    finally:
        shutdown(env)


def _no_split_folders(root: Path, val_split: str) -> None:
    """A folder without ``val_split`` is read as the class folders themselves, unless it holds
    other splits (a folder named like one that holds class folders, not images: CIFAR-100 has a
    class ``train``): then the user meant one of them (``train/`` would be "a class")."""
    splits = sorted(
        p.name
        for p in root.glob("*")
        if p.name in _SPLIT_NAMES and p.is_dir() and any(q.is_dir() for q in p.iterdir())
    )
    if splits:
        raise UserError(
            f"{root} has no '{val_split}' folder but has {', '.join(splits)}: give --split "
            f"{next((s for s in splits if s != 'train'), splits[0])}"
        )


def load_for_inference(
    checkpoint: str,
    recipe: str | None = None,
    model: str | None = None,
    device: str = "cpu",
    overrides: Sequence[str] = (),
) -> Prepared:
    """``predict`` and ``export``: the model in eval mode and its Resolved record."""
    src = read_source(checkpoint)
    asked = asked_for(src, recipe, model, [f"train.device={device}", *overrides])
    return prepare(src, asked, local_device(device))
