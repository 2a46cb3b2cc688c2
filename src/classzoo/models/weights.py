"""Load weights into a model from a classzoo checkpoint, a safetensors file or a TF checkpoint.

The format is detected from the file's content, never from its name. Loading never unpickles
code: torch files go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from classzoo.errors import UserError

log = logging.getLogger("classzoo")


def detect_format(path: str | Path) -> str:
    """'classzoo' (torch zip), 'safetensors' or 'tf' (V1 file / V2 prefix)."""
    p = Path(path)
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(16)
        if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(p):
            return "classzoo"
        if len(head) >= 9 and head[8:9] == b"{":
            return "safetensors"
    from classzoo.convert.tf_checkpoint import is_tf_checkpoint

    if is_tf_checkpoint(str(p)):
        return "tf"
    if not p.exists() and not Path(str(p) + ".index").exists():
        raise UserError(f"checkpoint {p} does not exist")
    raise UserError(
        f"checkpoint {p} is not a classzoo checkpoint, a safetensors file or a TF checkpoint"
    )


def load_torch_checkpoint(path: str | Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt zips
        raise UserError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None


def state_from_checkpoint(
    ckpt: object, path: str | Path, use_ema: bool = False
) -> dict[str, torch.Tensor]:
    """The model weights inside an already-read torch checkpoint (classzoo, timm, torchvision)."""
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} does not hold a state dict")
    if use_ema and ckpt.get("ema") is not None:
        return ckpt["ema"]
    if "model" in ckpt and isinstance(ckpt["model"], dict):
        return ckpt["model"]
    if "state_dict" in ckpt:  # timm / torchvision training checkpoints
        return ckpt["state_dict"]
    return ckpt


def read_state_dict(path: str | Path, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights of a classzoo checkpoint or safetensors file."""
    fmt = detect_format(path)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise UserError(f"cannot read safetensors file {path}: {exc}") from None
    if fmt == "classzoo":
        return state_from_checkpoint(load_torch_checkpoint(path), path, use_ema)
    raise UserError(f"{path} is a TF checkpoint; it loads only into TF-slim networks")


def _classifier_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the model's classifier head(s), for a num_classes change."""
    prefixes = []
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    for name, module in model.named_modules():
        if head is not None and module is head:
            prefixes.append(name + ".")
    aux = getattr(model, "aux_classifier_prefixes", ())
    prefixes.extend(aux)
    return prefixes


def load_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    exclude: Sequence[str] = (),
) -> None:
    """Copy ``state`` into ``model``; mismatches are a UserError listing the keys.

    ``exclude``: key prefixes left at the model's own initialisation. A classifier whose size
    differs from the checkpoint's (another num_classes) is excluded automatically, like timm does
    for pretrained weights, and the fact is logged.
    """
    own = model.state_dict()
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    excluded = [p if p.endswith(".") or p in own else p + "." for p in exclude]
    head_prefixes = _classifier_keys(model)
    dropped_head = []
    for key in list(state):
        if (
            key in own
            and own[key].shape != state[key].shape
            and any(key.startswith(p) for p in head_prefixes)
        ):
            dropped_head.append(key)
    if dropped_head:
        log.info(
            "checkpoint %s: classifier size differs, %s left at init",
            source,
            ", ".join(dropped_head),
        )

    def skipped(key: str) -> bool:
        return key in dropped_head or any(key == p or key.startswith(p) for p in excluded)

    missing = [
        k
        for k in own
        if k not in state and not skipped(k) and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in own and not skipped(k)]
    shapes = [
        f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and not skipped(k) and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        ):
            if keys:
                shown = ", ".join(keys[:4]) + (
                    f", ... ({len(keys)} in all)" if len(keys) > 4 else ""
                )
                parts.append(f"{label}: {shown}")
        raise UserError(
            f"checkpoint {source} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    with torch.no_grad():
        for key, value in state.items():
            if key in own and not skipped(key):
                own[key].copy_(value.to(own[key].dtype))


def load_checkpoint(
    model: nn.Module,
    model_name: str,
    path: str | Path,
    exclude: Sequence[str] = (),
    use_ema: bool = False,
) -> None:
    """Load any supported checkpoint format into ``model``."""
    fmt = detect_format(path)
    if fmt == "tf":
        from classzoo.convert.slim import slim_head_scopes, slim_to_state_dict
        from classzoo.convert.tf_checkpoint import open_tf_checkpoint

        with open_tf_checkpoint(str(path)) as ckpt:
            variables = ckpt.read_all()
        exclude = list(exclude)
        n = getattr(model, "num_classes", None)
        for scope in slim_head_scopes(model_name):  # another num_classes: new heads, like timm
            sized = [v for k, v in variables.items() if f"/{scope}/" in k and k.endswith("/biases")]
            if n is not None and sized and sized[0].shape[-1] != n and scope not in exclude:
                log.info(
                    "checkpoint %s: %s has %d classes, the model %d: left at init",
                    path,
                    scope,
                    sized[0].shape[-1],
                    n,
                )
                exclude.append(scope)
        state = slim_to_state_dict(
            model_name, variables, model, exclude=exclude, use_ema=use_ema, source=str(path)
        )
        load_into(model, state, str(path), exclude=())
        return
    load_into(model, read_state_dict(path, use_ema=use_ema), str(path), exclude=exclude)
