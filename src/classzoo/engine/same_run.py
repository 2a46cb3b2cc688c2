"""A resumed run must be the run its checkpoint came from.

The step, epoch and sample position of a checkpoint mean something only with the data, classes
and preprocessing the run began with: a class folder renamed between two attempts shifts every
label after it, a train split with images added or removed reorders every epoch, and both went
on silently (measured: a 4-class run resumed after renaming folder ``a`` to ``z`` trained on,
with b, c, d, z as labels 0..3, and its resolved.yaml was overwritten with the new record).
So the record of the run to continue (the folder's resolved.yaml for ``--resume auto``, the
checkpoint's for ``--resume FILE``) is compared, before anything is written, with what this
attempt resolved, on the fields that decide what its numbers mean. The training precision, the
global batch, the lr
and the schedule's shape are among them: the checkpoint's step counts batches of the size the run
began with, and its scheduler state holds the old schedule (measured: a 2-rank run at global batch
8 resumed on 1 rank at 4 trained to epoch 3.727 of 3, its last 8 steps at min_lr). The world size
(with the per-device batch that keeps the global one), device, thread count, step limit, number
of epochs under a schedule that does not depend on it, and data location may change.

The config as asked (the folder's config.yaml, or the checkpoint's ``config``) is compared too,
every key but those in :data:`MAY_CHANGE`: a resume with another weight decay or momentum kept
the checkpoint's (the optimizer's state restores its param groups) while config.yaml recorded
the new ones, another label smoothing, augmentation, dropout, EMA or gradient clipping trained
on with it from the resume on (weights of neither run), and another optimizer failed with a
KeyError after the record was rewritten. A key that a record from an older classzoo lacks is not
compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from classzoo.config import Config
from classzoo.engine.resolve import Resolved
from classzoo.errors import UserError

__all__ = ["MAY_CHANGE", "check_same_run", "check_same_settings", "recorded_config", "recorded_run"]

# Config keys a resume may change: where the data and checkpoints are, how fast, how much is
# logged and kept, evaluation-only settings, the weights a fresh start would load (a resume
# restores its own), and keys whose effect the resolved record compares (the global batch, the
# scaled lr and schedule, the training precision, the seed).
MAY_CHANGE = frozenset(
    {
        "recipe",
        *("model.checkpoint", "model.exclude", "model.pretrained", "model.num_classes"),
        *("data.dir", "data.batch_size", "data.eval_batch_size", "data.num_workers"),
        *("data.skip_corrupt", "data.val_split", "data.val_pattern"),
        *("optim.lr", "optim.lr_base_batch", "optim.fused"),
        *("train.device", "train.max_steps", "train.epochs", "train.log_every", "train.progress"),
        *("train.keep_max", "train.keep_best", "train.best_metric", "train.ckpt_every_steps"),
        *("train.eval_every", "train.mode", "train.compile", "train.compile_mode"),
        *("train.channels_last", "train.amp", "train.grad_accum_steps", "train.seed"),
        *("eval.amp", "eval.periodic_amp"),
    }
)

# The MAY_CHANGE keys behind each compared record field: when the field refuses a resume, the keys
# this attempt changed are named with the --set that restores them (a recipe's epochs changed)
_BATCH = ("data.batch_size", "train.grad_accum_steps")
_FEEDS_RECORD = {
    "lr schedule": ("train.epochs", "optim.lr", "optim.lr_base_batch", *_BATCH),
    "global batch": _BATCH,
    "lr": ("optim.lr", "optim.lr_base_batch", *_BATCH),
    "train_precision": ("train.amp",),
    "seed": ("train.seed",),
    "num_classes": ("model.num_classes",),
}

# Preprocess fields that decide the pixels (the ``sample`` / ``steps`` texts only describe them)
_PIXELS = ("preset", "image_size", "crop_pct", "interpolation", "mean", "std", "decoder")
_ABSENT = {"crop_mode": "center"}  # a field records before it was kept: what they did


def recorded_run(run_dir: Path, resume: str | None, checkpoint: dict | None) -> dict | None:
    """The resolved record of the run ``resume`` continues; None for a new run, or for ``auto``
    in a folder without a checkpoint (it starts fresh)."""
    return _recorded(run_dir, resume, checkpoint, "resolved", "resolved.yaml")


def recorded_config(run_dir: Path, resume: str | None, checkpoint: dict | None) -> dict | None:
    """The config as asked of the run ``resume`` continues (None: a new run, or none kept)."""
    return _recorded(run_dir, resume, checkpoint, "config", "config.yaml")


def _recorded(run_dir: Path, resume, checkpoint: dict | None, key: str, name: str) -> dict | None:
    """``checkpoint[key]`` (``--resume FILE``), else the run folder's ``name`` when it has a
    checkpoint to resume from (``--resume auto``)."""
    if resume is None:
        return None
    if checkpoint is not None:
        return checkpoint.get(key) or None
    path = run_dir / name
    if not any((run_dir / "checkpoints").glob("ckpt-*.pt")) or not path.is_file():
        return None
    try:
        record = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot resume: {path} is unreadable ({exc})") from None
    return record if isinstance(record, dict) else None


def _meaning(r: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record (as stored) that decide what a step's numbers mean."""
    pre = r.get("preprocess") or {}
    train = (r.get("data") or {}).get("train") or {}
    return {
        "model": r.get("model"),
        "num_classes": r.get("num_classes"),
        "label_offset": r.get("label_offset"),
        "classes": list(r.get("classes") or []),
        **{f"preprocess.{k}": _plain(pre.get(k)) for k in _PIXELS},
        **{f"preprocess.{k}": pre.get(k, v) for k, v in _ABSENT.items()},
        "train images": train.get("count"),
        "seed": r.get("seed"),
        # amp: auto means bf16 on one CPU and fp32 on another: the precision itself is compared
        "train_precision (train.amp)": r.get("train_precision"),
        **_schedule(r.get("schedule") or {}),
    }


def _schedule(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "global batch (data.batch_size x devices x train.grad_accum_steps)": s.get("global_batch"),
        "lr": s.get("lr"),
        "lr schedule": s.get("lr_shape") or None,  # "" / absent: a record from before it was kept
    }


def _plain(v: Any) -> Any:
    return [float(x) for x in v] if isinstance(v, (list, tuple)) else v


def _shown(v: Any) -> str:
    if isinstance(v, list) and len(v) > 6:
        return f"[{', '.join(map(str, v[:6]))}, ... ({len(v)})]"
    return str(v)


def _flat(cfg: dict[str, Any]) -> dict[str, Any]:
    """``section.key`` -> value."""
    out = {}
    for section, values in cfg.items():
        for key, v in values.items() if isinstance(values, dict) else [("", values)]:
            out[f"{section}.{key}" if key else section] = v
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as values: a tuple and a list, 1e-4 and 0.0001, 3 and 3.0 (never True and 1)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def check_same_settings(then: dict | None, now: Config, run: str) -> None:
    """A UserError naming every config key (but :data:`MAY_CHANGE`) this attempt changes."""
    if then is None:
        return
    old, new = _flat(then), _flat(now.to_dict())
    changed = [k for k in old if k in new and k not in MAY_CHANGE and not _same(old[k], new[k])]
    if changed:
        was = "; ".join(f"{k} was {_shown(old[k])}, now {_shown(new[k])}" for k in changed[:4])
        more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
        raise UserError(
            f"cannot resume {run}: {was}{more}; resume with the settings it began with (its "
            "optimizer state, EMA and schedule were made with them), or start a new run "
            "(another --output-dir)"
        )


def check_same_run(
    recorded: dict | None,
    now: Resolved,
    run: str,
    then: dict | None = None,
    asked: Config | None = None,
) -> None:
    """A UserError naming the first field in which this attempt differs from the recorded run
    (``recorded``: its resolved record), or the config keys it changes (``then``: its config as
    asked, ``asked``: this attempt's)."""
    if recorded is not None:
        _check_record(recorded, now, run, then, asked)
    if asked is not None:
        check_same_settings(then, asked, run)


def _restoring(field: str, then: dict | None, asked: Config | None) -> str:
    """`` (--set K=V ..., as the run began)`` for the keys behind record ``field`` that this
    attempt changed; "" when none did (the data, the classes or the machine changed instead)."""
    feeds = next((v for k, v in _FEEDS_RECORD.items() if field.startswith(k)), ())
    if then is None or asked is None or not feeds:
        return ""
    old, new = _flat(then), _flat(asked.to_dict())
    keys = [k for k in feeds if k in old and k in new and not _same(old[k], new[k])]
    sets = " ".join(f"--set {k}={_typed(old[k])}" for k in keys)
    return f" ({sets}, as the run began)" if keys else ""


def _typed(v: Any) -> str:
    """``v`` as --set reads it (YAML): null, true / false, else as printed."""
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _check_record(recorded: dict, now: Resolved, run: str, then=None, asked=None) -> None:
    old, new = _meaning(recorded), _meaning(now.to_dict())
    for key in old:
        if old[key] is not None and old[key] != new[key]:
            raise UserError(
                f"cannot resume {run}: {key} was {_shown(old[key])} when the run began, now "
                f"{_shown(new[key])}; resume with the data and settings it began with"
                f"{_restoring(key, then, asked)}, or start a new run (another --output-dir)"
            )
