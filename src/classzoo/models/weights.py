"""Load weights into a model from a classzoo checkpoint, a safetensors file or a TF checkpoint.

The format is detected from the file's content, never from its name. Torch files are read only
by ``formats.torch_checkpoint.load_checkpoint_file`` (SHA-256, bounds, weights-only unpickling,
schema), safetensors only by ``formats.safetensors_file``. Loading is strict: a key that is
missing, unexpected, mis-shaped or of the wrong kind (int8 / bool / complex where the model has
float weights; ``copy_`` would cast them silently) is a UserError naming it. A classifier of
another size (another class count) is left at the model's own initialisation only when the
caller allows it; the keys so left are logged at WARNING and returned in the LoadReport.
Nothing here re-initialises a parameter: a head left at init has the values the model was built
with, so seeding torch before building the model (engine.build does, from train.seed) makes it
the same on every run.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from classzoo.errors import UserError
from classzoo.formats.checkpoint_schema import check_state_dict
from classzoo.formats.torch_checkpoint import load_checkpoint_file

log = logging.getLogger("classzoo")

# The one reader of torch files, under the name callers used before it existed.
load_torch_checkpoint = load_checkpoint_file


@dataclass
class LoadReport:
    """What a checkpoint load did, for the resolved record: model keys taken from the file,
    keys left at the model's initialisation, and the exclude scopes / prefixes applied."""

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    left_at_init: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    # the names of the logits a classzoo checkpoint stores (its run's class folders), or None
    classes: tuple[str, ...] | None = None
    heads: list[str] = field(default_factory=list)  # the model's classifier modules, by name


def stored_classes(ckpt: object) -> tuple[str, ...] | None:
    """The class names a classzoo checkpoint records for its logits (logit k: name k)."""
    record = ckpt.get("resolved") if isinstance(ckpt, dict) else None
    classes = record.get("classes") if isinstance(record, dict) else None
    return tuple(classes) if classes else None


def detect_format(path: str | Path) -> str:
    """'classzoo' (torch zip), 'safetensors' or 'tf' (V1 file / V2 prefix / folder)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            raise UserError(f"checkpoint {p} is empty (0 bytes)")
        with open(p, "rb") as f:
            head = f.read(16)
        if head.startswith(b"PK\x03\x04"):  # a torch.save zip; the reader says what is wrong
            return "classzoo"
        if len(head) >= 9 and head[8:9] == b"{":
            return "safetensors"
    elif st is not None and not stat.S_ISDIR(st.st_mode):  # a FIFO would block the readers
        raise UserError(f"checkpoint {p} is not a regular file")
    from classzoo.formats.tf_checkpoint import is_tf_checkpoint

    if is_tf_checkpoint(str(p)):
        return "tf"
    if st is None and not Path(str(p) + ".index").exists():
        raise UserError(f"checkpoint {p} does not exist")
    raise UserError(
        f"checkpoint {p} is not a classzoo checkpoint, a safetensors file or a TF checkpoint"
    )


def state_from_checkpoint(
    ckpt: object, path: str | Path, use_ema: bool = False
) -> dict[str, torch.Tensor]:
    """The model weights inside an already-read torch checkpoint (classzoo, timm, torchvision)."""
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} does not hold a state dict")
    if not use_ema and any(ckpt.get(k) is not None for k in ("ema", "state_dict_ema")):
        _ema_not_used(path)
    if use_ema:
        for key in ("ema", "state_dict_ema"):
            if ckpt.get(key) is not None:
                return ckpt[key]
        raise UserError(f"checkpoint {path} has no EMA weights (use_ema)")
    if isinstance(ckpt.get("model"), dict):
        return ckpt["model"]
    if "state_dict" in ckpt:  # timm / torchvision training checkpoints
        return ckpt["state_dict"]
    return ckpt


def _ema_not_used(path: str | Path) -> None:
    log.info(
        "checkpoint %s also holds EMA weights; these are its raw weights (an evaluation takes "
        "the EMA ones with --set train.ema=true; a fine-tune starts from the raw ones)",
        path,
    )


def read_state_dict(path: str | Path, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights of a classzoo checkpoint or safetensors file."""
    fmt = detect_format(path)
    if fmt == "safetensors":
        from classzoo.formats.safetensors_file import load_safetensors_file

        if use_ema:
            raise UserError(f"{path} is a safetensors file: it holds no EMA weights (use_ema)")
        return load_safetensors_file(path)
    if fmt == "classzoo":
        return state_from_checkpoint(load_checkpoint_file(path), path, use_ema)
    raise UserError(f"{path} is a TF checkpoint; it loads only into TF-slim networks")


def _classifier_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes of the model's classifier head(s), for a num_classes change."""
    prefixes = []
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    # timm's distilled models (deit *_distilled, levit) return (head, head_dist)
    heads = [h for h in (head if isinstance(head, (tuple, list)) else (head,)) if h is not None]
    for name, module in model.named_modules():
        if any(module is h for h in heads):
            prefixes.append(name + ".")
    prefixes.extend(getattr(model, "aux_classifier_prefixes", ()))
    return prefixes


def _kind_error(key: str, theirs: torch.Tensor, ours: torch.Tensor) -> str | None:
    """Why ``theirs`` may not be copied into ``ours`` (copy_ would cast it silently)."""
    if ours.is_floating_point() and not theirs.is_floating_point():
        return f"{key} is {theirs.dtype} in the checkpoint, {ours.dtype} in the model"
    if not ours.is_floating_point() and (theirs.is_floating_point() or theirs.is_complex()):
        return f"{key} is {theirs.dtype} in the checkpoint, {ours.dtype} in the model"
    if (ours.dtype == torch.bool) != (theirs.dtype == torch.bool):
        return f"{key} is {theirs.dtype} in the checkpoint, {ours.dtype} in the model"
    return None


def _new_head(own, state, model: nn.Module, source: str, allow: bool, skipped) -> list[str]:
    """Classifier keys whose size differs from the checkpoint's: left at init if allowed."""
    prefixes = _classifier_prefixes(model)
    keys = [
        k
        for k in state
        if k in own
        and not skipped(k)
        and own[k].shape != state[k].shape
        and any(k.startswith(p) for p in prefixes)
    ]
    if keys and not allow:
        k = keys[0]
        n = state[k].shape[0]  # Linear / 1x1-conv classifiers: (classes, ...)
        if n == own[k].shape[0]:  # as many classes, another feature width: another network
            raise UserError(
                f"checkpoint {source}: its classifier {k} {tuple(state[k].shape)} takes other "
                f"features than the model's {tuple(own[k].shape)} (same {n} classes): the "
                "checkpoint is of another width or variant of the network; set model.name / "
                "model.kwargs to the ones it was trained with"
            )
        raise UserError(
            f"checkpoint {source} has a classifier of another size ({k} "
            f"{tuple(state[k].shape)} vs the model's {tuple(own[k].shape)}): set "
            f"model.num_classes={n} to use it (--set model.num_classes={n}; in Python "
            "allow_new_head=True trains a new head from its initialisation)"
        )
    return keys


def _listing(label: str, keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")
    return f"{label}: {shown}"


def _check_excludes(exclude, prefixes, keys: list[str], model: nn.Module, source: str) -> None:
    """Each ``model.exclude`` entry names some key: a typo would load the layer it meant to
    leave at init."""
    for given, p in zip(exclude, prefixes):
        if not any(k == p or k.startswith(p) for k in keys):
            heads = ", ".join(h.rstrip(".") for h in _classifier_prefixes(model)) or "?"
            raise UserError(
                f"model.exclude '{given}' matches no key of {type(model).__name__} nor of "
                f"checkpoint {source} (whole dotted names; its classifier is {heads})"
            )


def load_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    exclude: Sequence[str] = (),
    allow_new_head: bool = True,
) -> tuple[list[str], list[str]]:
    """Copy ``state`` into ``model`` strictly; returns (keys loaded, keys left at init).

    ``exclude``: key prefixes (whole dotted components) or exact keys left at the model's own
    initialisation. A classifier whose size differs from the checkpoint's (another class count)
    is left at init too when ``allow_new_head``, like timm does for pretrained weights, else it
    is a UserError. Mismatches are a UserError listing the keys.
    """
    own = model.state_dict()
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)  # "fc", not "f", "c"
    state = check_state_dict(
        {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()},
        f"checkpoint {source}",
    )
    prefixes = [p if p.endswith(".") or p in own else p + "." for p in exclude]
    _check_excludes(exclude, prefixes, [*own, *state], model, source)

    def skipped(key: str) -> bool:
        return any(key == p or key.startswith(p) for p in prefixes)

    head = set(_new_head(own, state, model, source, allow_new_head, skipped))
    missing = [
        k
        for k in own
        if k not in state and not skipped(k) and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in own and not skipped(k)]
    take = [k for k in state if k in own and not skipped(k) and k not in head]
    bad = [
        f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in take
        if state[k].shape != own[k].shape
    ]
    bad += [e for k in take if (e := _kind_error(k, state[k], own[k])) is not None]
    if missing or unexpected or bad:
        parts = [
            _listing(label, keys)
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong", bad))
            if keys
        ]
        raise UserError(
            f"checkpoint {source} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    with torch.no_grad():
        for key in take:
            own[key].copy_(state[key].to(own[key].dtype))
    left = [k for k in own if k not in take and not k.endswith("num_batches_tracked")]
    if head:
        log.warning(
            "checkpoint %s: classifier of another size, left at init: %s", source, ", ".join(left)
        )
    return take, left


def _at_init_in_file(ckpt, loaded: list[str], left: list[str], path) -> tuple[list, list]:
    """A converted file (``classzoo convert slim --exclude`` / ``--num-classes``; no training
    progress) holds the layers it left at init as it made them: not trained weights, so they
    are recorded as left at init here too (they were counted as loaded, and a new head of
    such a file was taken for a trained one)."""
    record = ckpt.get("resolved") if isinstance(ckpt, dict) and "progress" not in ckpt else None
    made = (record or {}).get("weights") or {}
    at_init = set(made.get("left_at_init") or ()) & set(loaded)
    if not at_init:
        return loaded, left
    names = sorted(at_init)
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    log.warning(
        "checkpoint %s: %d tensors were left at init when it was made from %s: %s",
        path, len(names), made.get("source"), shown,
    )  # fmt: skip
    return [k for k in loaded if k not in at_init], [*left, *names]


def _tf_state(model: nn.Module, model_name: str, path, exclude, use_ema: bool, allow: bool):
    """(state dict without the keys kept at init, those keys, the scopes excluded) from a TF
    checkpoint; heads of another class count are excluded by their classifier scopes only."""
    from classzoo.formats.tf_checkpoint import open_tf_checkpoint
    from classzoo.models.slim_heads import auto_head_excludes
    from classzoo.models.slim_names import slim_to_state_dict_and_init

    with open_tf_checkpoint(str(path)) as ckpt:
        variables = ckpt.read_all()
    if not use_ema and any(n.endswith("/ExponentialMovingAverage") for n in variables):
        _ema_not_used(path)  # eval_image_classifier --moving_average_decay would take them
    auto = auto_head_excludes(model_name, variables, getattr(model, "num_classes", None), exclude)
    if auto and not allow:
        n = next(v.shape[-1] for k, v in variables.items() if k.endswith(f"/{auto[0]}/biases"))
        raise UserError(
            f"checkpoint {path}: its {', '.join(auto)} layers have {n} classes, the model "
            f"{getattr(model, 'num_classes', '?')}: set model.num_classes={n} to use them "
            f"(--set model.num_classes={n}; in Python allow_new_head=True trains new ones from "
            "their initialisation)"
        )
    scopes = [*exclude, *auto]
    state, init, ones = slim_to_state_dict_and_init(
        model_name, variables, model, exclude=scopes, use_ema=use_ema, source=str(path)
    )
    if auto:
        log.warning("checkpoint %s: %s left at init (another class count)", path, ", ".join(init))
    # the model's own counters and slim's constant gammas complete the state: not from the file
    from_file = {k for k in state if k not in init and k not in ones}
    from_file -= {k for k in from_file if k.endswith("num_batches_tracked")}
    return {k: v for k, v in state.items() if k not in init}, init, scopes, from_file


def load_checkpoint(
    model: nn.Module,
    model_name: str,
    path: str | Path,
    exclude: Sequence[str] = (),
    use_ema: bool = False,
    allow_new_head: bool = True,
) -> LoadReport:
    """Load any supported checkpoint format into ``model``; the report is also set as
    ``model.load_report`` (so ``classzoo.create_model`` callers see it)."""
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)  # "fc", not "f", "c"
    fmt = detect_format(path)
    ckpt = load_checkpoint_file(path) if fmt == "classzoo" else None
    prefixes = _classifier_prefixes(model)
    if fmt == "tf":
        state, init, scopes, from_file = _tf_state(
            model, model_name, path, list(exclude), use_ema, allow_new_head
        )
        loaded, left = load_into(model, state, str(path), exclude=init)
        loaded = [k for k in loaded if k in from_file]
    else:
        if ckpt is None:  # safetensors
            state = read_state_dict(path, use_ema=use_ema)
        else:
            state = state_from_checkpoint(ckpt, path, use_ema)
        loaded, left = load_into(model, state, str(path), exclude, allow_new_head)
        loaded, left = _at_init_in_file(ckpt, loaded, left, path)
        heads = [p for p in prefixes if p not in exclude and p[:-1] not in exclude]
        scopes = [*exclude, *(p for p in heads if any(k.startswith(p) for k in left))]
    names = [p.rstrip(".") for p in prefixes]
    report = LoadReport(str(path), fmt, loaded, left, scopes, stored_classes(ckpt), names)
    model.load_report = report
    return report
