"""The schema of every checkpoint field classzoo reads, checked right after a file is unpickled.

``torch.load(weights_only=True)`` guarantees that no code runs; it does not guarantee that the
values make sense. A file that loads but holds a config that is not a mapping, a class count of
10^12, int8 or complex tensors where float weights belong (``copy_`` would cast them silently)
or NaN weights must end in one line naming the file and the field, not in a traceback later or
in a silently wrong number. Three layouts are accepted:

* classzoo: ``{"model": state, "ema", "optimizer", "scheduler", "scaler", "rng", "progress",
  "config", "resolved", "model_name", "num_classes", "classes", "metrics", "time", "source"}``
  (all but ``model`` optional, so converted weights and training checkpoints share it);
* timm / torchvision training checkpoints: ``{"state_dict": state, "state_dict_ema": ...}``;
* a bare state dict ``{name: tensor}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from classzoo.config import MAX_CLASSES, MAX_IMAGE_SIZE
from classzoo.errors import UserError

__all__ = ["MAX_CLASSES", "MAX_IMAGE_SIZE", "check_checkpoint", "check_state_dict"]

# MAX_CLASSES / MAX_IMAGE_SIZE: the config's own bounds (a run cannot start with a value its
# checkpoints would then be refused for)
MAX_DEPTH = 64  # nesting of lists / dicts; real checkpoints stay under 8
_PARAM_SUFFIXES = (".weight", ".bias", "running_mean", "running_var")
_NUMBER = (int, float)


def _fail(where: str, what: str) -> None:
    raise UserError(f"{where}: {what}")


def _check_depth(obj: Any, where: str) -> None:
    """Iteratively (a crafted pickle nests 10^6 lists; recursion would overflow)."""
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            _fail(where, f"values nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)


def _check_tensor(key: str, t: torch.Tensor, where: str, finite: bool = True) -> None:
    if t.is_complex() or t.is_quantized:
        _fail(where, f"{key} is a {t.dtype} tensor; weights are real floating point")
    if key.endswith(_PARAM_SUFFIXES) and not t.is_floating_point():
        _fail(where, f"{key} is {t.dtype}; a weight must be floating point (not cast silently)")
    if finite and t.is_floating_point() and t.numel() and not _all_finite(t):
        _fail(where, f"{key} holds NaN or infinite values")


def _all_finite(t: torch.Tensor) -> bool:
    """A sum is NaN or inf if any element is (one vectorised pass: 7x faster than isfinite().all()
    here); only a sum that overflows from finite values needs the element-wise check."""
    total = t.sum(dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
    return bool(torch.isfinite(total)) or bool(torch.isfinite(t).all())


def check_state_dict(state: Any, where: str) -> dict[str, torch.Tensor]:
    """A non-empty ``{str: tensor}`` of real tensors, weights floating point and finite."""
    if not isinstance(state, Mapping) or not state:
        _fail(where, f"expected a non-empty mapping of tensors, found {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str):
            _fail(where, f"key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            _fail(where, f"{key} is a {type(value).__name__}, not a tensor")
        _check_tensor(key, value, where)
    return dict(state)


def _check_int(value: Any, name: str, where: str, lo: int, hi: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        _fail(where, f"{name} = {value!r} is not an integer in [{lo}, {hi}]")


def _check_optimizer(opt: Any, where: str) -> None:
    if not isinstance(opt, Mapping):
        _fail(where, f"optimizer is a {type(opt).__name__}, not a mapping")
    state, groups = opt.get("state"), opt.get("param_groups")
    if not isinstance(state, Mapping) or not isinstance(groups, list):
        _fail(where, "optimizer needs a 'state' mapping and a 'param_groups' list")
    for group in groups:
        if not isinstance(group, Mapping) or not isinstance(group.get("params"), list):
            _fail(where, "optimizer param_groups entries need a 'params' list")
    for pid, slots in state.items():
        if not isinstance(slots, Mapping):
            _fail(where, f"optimizer state {pid!r} is not a mapping")
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                _check_tensor(f"optimizer state {pid}.{name}", value, where)


def _check_rng(rng: Any, where: str) -> None:
    """What classzoo.engine.checkpoint.set_rng_state reads, per rank."""
    if not isinstance(rng, list) or not rng:
        _fail(where, "rng is not a non-empty list of per-rank states")
    for state in rng:
        ok = (
            isinstance(state, Mapping)
            and isinstance(state.get("torch"), torch.Tensor)
            and state["torch"].dtype == torch.uint8
            and isinstance(state.get("python"), (list, tuple))
            and len(state["python"]) == 3
            and isinstance(state.get("numpy"), (list, tuple))
            and len(state["numpy"]) == 5
            and isinstance(state["numpy"][1], torch.Tensor)
        )
        if not ok:
            _fail(where, "rng holds a state that is not {torch: uint8 tensor, python, numpy}")


def _check_progress(progress: Any, where: str) -> None:
    if not isinstance(progress, Mapping):
        _fail(where, f"progress is a {type(progress).__name__}, not a mapping")
    for name in ("step", "epoch", "sample"):
        if name not in progress:
            _fail(where, f"progress has no '{name}'")
        _check_int(progress[name], f"progress.{name}", where, 0, 2**62)
    _check_int(progress.get("world_size"), "progress.world_size", where, 1, 1 << 20)


def _check_config(config: Any, where: str) -> None:
    """A ``{section: {key: value}}`` mapping; the sizes that allocate memory are bounded."""
    if not isinstance(config, Mapping):
        _fail(where, f"config is a {type(config).__name__}, not a mapping")
    for section, values in config.items():
        if section != "recipe" and not isinstance(values, Mapping):
            _fail(where, f"config section {section!r} is not a mapping")
    model, data = config.get("model") or {}, config.get("data") or {}
    _check_int(model.get("num_classes"), "config model.num_classes", where, 1, MAX_CLASSES)
    _check_int(data.get("image_size"), "config data.image_size", where, 1, MAX_IMAGE_SIZE)


def _check_classzoo(obj: Mapping[str, Any], where: str) -> None:
    check_state_dict(obj["model"], f"{where} (model)")
    if obj.get("ema") is not None:
        check_state_dict(obj["ema"], f"{where} (ema)")
    if obj.get("optimizer") is not None:
        _check_optimizer(obj["optimizer"], where)
    for name in ("scheduler", "scaler", "resolved"):
        if obj.get(name) is not None and not isinstance(obj[name], Mapping):
            _fail(where, f"{name} is a {type(obj[name]).__name__}, not a mapping")
    if obj.get("rng") is not None:
        _check_rng(obj["rng"], where)
    if obj.get("progress") is not None:
        _check_progress(obj["progress"], where)
    if obj.get("config") is not None:
        _check_config(obj["config"], where)
    _check_int(obj.get("num_classes"), "num_classes", where, 1, MAX_CLASSES)
    for name in ("model_name", "time", "source"):
        if obj.get(name) is not None and not isinstance(obj[name], str):
            _fail(where, f"{name} is a {type(obj[name]).__name__}, not a string")
    classes = obj.get("classes")
    if classes is not None and (
        not isinstance(classes, (list, tuple))
        or len(classes) > MAX_CLASSES
        or not all(isinstance(c, str) for c in classes)
    ):
        _fail(where, f"classes is not a list of at most {MAX_CLASSES} names")
    metrics = obj.get("metrics")
    if metrics is not None and (
        not isinstance(metrics, Mapping)
        or not all(isinstance(k, str) and isinstance(v, _NUMBER) for k, v in metrics.items())
        or any(isinstance(v, float) and math.isnan(v) for v in metrics.values())
    ):
        _fail(where, "metrics is not a mapping of names to numbers")


def check_checkpoint(obj: Any, where: str) -> dict[str, Any]:
    """``obj`` as loaded, if every field classzoo reads is well formed; else one UserError."""
    if not isinstance(obj, Mapping):
        _fail(where, f"holds a {type(obj).__name__}, not a mapping of tensors")
    _check_depth(obj, where)
    if "model" in obj:
        _check_classzoo(obj, where)
    elif "state_dict" in obj:  # timm's CheckpointSaver, torchvision's references
        check_state_dict(obj["state_dict"], f"{where} (state_dict)")
        if obj.get("state_dict_ema") is not None:
            check_state_dict(obj["state_dict_ema"], f"{where} (state_dict_ema)")
    else:
        check_state_dict(obj, where)
    return dict(obj)
