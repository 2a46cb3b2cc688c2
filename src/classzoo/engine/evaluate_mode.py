"""The InceptionV4 reference's evaluate mode (``train.mode: evaluate``): each checkpoint that
``model.checkpoint`` names (a file, or every checkpoint of a folder) evaluated in turn on the val
split, one row each (``step epoch top1 top5 loss checkpoint_time``) in eval.log.

The val split is labelled by the classes the checkpoints were trained on, matched by folder
name (data/class_index.py; read from the first classzoo checkpoint), and every checkpoint loads
strictly: a classifier of another size, or another list of classes, is a UserError, never a
head left at its initialisation scoring random logits.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from classzoo.data.label_file import check_label_file
from classzoo.engine.build import Split, labelled_by_logit
from classzoo.engine.checkpoint import CKPT_RE
from classzoo.engine.distributed import DistEnv
from classzoo.engine.evaluate import EvalOptions, evaluate
from classzoo.engine.resolve import Resolved
from classzoo.engine.run_log import RunLogger
from classzoo.errors import UserError
from classzoo.formats.torch_checkpoint import load_checkpoint_file
from classzoo.models.weights import (
    detect_format,
    load_checkpoint,
    load_into,
    state_from_checkpoint,
    stored_classes,
)

log = logging.getLogger("classzoo")


def checkpoints_in(folder: Path) -> list[Path]:
    """classzoo ``ckpt-<step>.pt`` files by step, then TF V2 prefixes (``*.index``) by name."""
    ours = sorted(
        (p for p in folder.iterdir() if CKPT_RE.match(p.name)),
        key=lambda p: int(CKPT_RE.match(p.name).group(1)),
    )
    tf = sorted(p.with_suffix("") for p in folder.glob("*.index"))
    found = ours + tf
    if not found:
        raise UserError(
            f"no checkpoints in {folder} (expected ckpt-<step>.pt files or TF *.index bundles)"
        )
    return found


def checkpoint_paths(checkpoint: str | None) -> list[Path]:
    """What ``model.checkpoint`` names: one file (or TF prefix), or a folder's checkpoints."""
    if not checkpoint:
        raise UserError("mode evaluate needs a checkpoint: --set model.checkpoint=FILE_OR_FOLDER")
    src = Path(checkpoint)
    if src.is_dir():
        return checkpoints_in(src)
    if not src.exists() and detect_format(src) != "tf":  # a TF prefix names no file itself
        raise UserError(f"model.checkpoint {src} does not exist (a file or a folder of them)")
    return [src]


def _check_head(ckpt: dict[str, Any], path: Path, num_logits: int) -> None:
    """Before the run folder exists: the model's head has the checkpoint's size."""
    theirs = (ckpt.get("resolved") or {}).get("num_classes")
    if isinstance(theirs, int) and theirs != num_logits:
        raise UserError(
            f"checkpoint {path} has {theirs} logits, the model {num_logits}: set "
            f"model.num_classes={theirs} to evaluate it"
        )


def labelled_for(
    val: Split, resolved: Resolved, paths: list[Path], order: str | None
) -> tuple[Split, Resolved]:
    """The val split labelled by the first classzoo checkpoint's classes (an ImageFolder;
    TFRecord labels are numbers already) and the record saying so (its ``classes``: the names
    of the logits, which every classzoo checkpoint evaluated must have been trained on; its
    ``weights``: the checkpoints, not the model's initialisation the log named before)."""
    where = paths[0].parent if paths else "?"
    init = f"each of the {len(paths)} checkpoint(s) in {where}, loaded in turn"
    resolved = replace(resolved, weights={"source": None, "init": init})
    first = next((p for p in paths if detect_format(p) == "classzoo"), None)
    ckpt = load_checkpoint_file(first) if first is not None else None
    if ckpt is not None:
        _check_head(ckpt, first, resolved.num_classes)
    stored = stored_classes(ckpt)
    if not val.classes:  # TFRecord: numbers, named by the shards' labels.txt where it exists
        if stored and val.info.source == "tfrecord":
            check_label_file(Path(val.info.location), stored, resolved.label_offset)
        return val, resolved
    val, names = labelled_by_logit(val, resolved.num_classes, stored, order)
    return val, replace(resolved, classes=names, data={**resolved.data, "val": val.info})


def _meta(path: Path, ckpt: dict[str, Any] | None) -> tuple[int, float, str]:
    """(step, epoch, checkpoint time UTC) of a checkpoint; ``ckpt`` is the classzoo file as read."""
    mtime = dt.datetime.fromtimestamp(path.stat().st_mtime if path.exists() else 0, dt.timezone.utc)
    when = mtime.strftime("%Y-%m-%dT%H:%M:%SZ")
    m = CKPT_RE.match(path.name)
    if ckpt is None or "progress" not in ckpt:
        return (int(m.group(1)) if m else -1), float("nan"), when
    p = ckpt["progress"]
    resolved = ckpt.get("resolved") or {}
    n = ((resolved.get("data") or {}).get("train") or {}).get("count")
    epoch = p.get("epoch", 0) + (p.get("sample", 0) / n if n else 0.0)
    return int(p["step"]), float(epoch), ckpt.get("time", when)


def _load(model: nn.Module, model_name: str, path: Path, use_ema: bool, classes) -> dict | None:
    """Load ``path`` strictly into ``model``; the classzoo file as read (None for others)."""
    ckpt = load_checkpoint_file(path) if detect_format(path) == "classzoo" else None
    if ckpt is None:
        load_checkpoint(model, model_name, path, use_ema=use_ema, allow_new_head=False)
        return None
    theirs = stored_classes(ckpt)
    if classes is not None and theirs is not None and theirs != tuple(classes):
        raise UserError(
            f"checkpoint {path} was trained on other classes ({', '.join(theirs[:5])}, ...) than "
            f"the val labels follow ({', '.join(classes[:5])}, ...): evaluate it separately"
        )
    state = state_from_checkpoint(ckpt, path, use_ema)  # read once: weights and progress
    load_into(model, state, str(path), allow_new_head=False)
    return ckpt


def evaluate_checkpoints(
    model: nn.Module,
    model_name: str,
    paths: list[Path],
    loader,
    env: DistEnv,
    logger: RunLogger,
    opts: EvalOptions,
    use_ema: bool,
    classes: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """One row per checkpoint of ``paths``; ``classes``: those the loader's labels follow."""
    rows = []
    for path in paths:
        ckpt = _load(model, model_name, path, use_ema, classes)
        step, epoch, when = _meta(path, ckpt)
        result = evaluate(model, loader, env, opts)
        logger.evaluation(step, epoch, result, checkpoint_time=when)
        log.info(
            "%s: step %d top1 %.3f top5 %.3f loss %.4f (%d images)",
            path.name,
            step,
            result["top1"],
            result["top5"],
            result["loss"],
            result["count"],
        )
        rows.append(
            {
                "checkpoint": str(path),
                "step": step,
                "epoch": epoch,
                **result,
                "checkpoint_time": when,
            }
        )
    return rows
