"""TF-slim checkpoint variables <-> state dicts of classzoo's slim networks.

A slim checkpoint is a flat ``{variable name: array}`` (read by ``formats.tf_checkpoint``, without
TensorFlow). The names follow slim's scopes, e.g. ``resnet_v1_152/block3/unit_36/bottleneck_v1/
conv2/weights`` or ``InceptionV4/Mixed_6b/Branch_1/Conv2d_0b_1x7/BatchNorm/beta``; the layouts
are TF's: conv HWIO, fully_connected ``[in, out]``. This module holds the name table of each
network and converts both ways, strictly: a checkpoint that does not fit is a ``UserError``
listing what is missing, unexpected or mis-shaped, never a silently half-loaded model. Names
from tensorflow/models research/slim/nets/{resnet_v1,resnet_utils,inception_v4,nets_factory}.py
and tf_slim/layers/layers.py; tests/test_slim_parity_tf.py checks them against TF-slim.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from classzoo.errors import UserError
from classzoo.models.slim_variables import model_variables

__all__ = [
    "default_scope",
    "slim_head_scopes",
    "slim_to_state_dict",
    "slim_to_state_dict_and_init",
    "state_dict_to_slim",
]

_SHOW = 4  # names shown per category in error messages


@dataclass(frozen=True)
class _Var:
    """Where one slim variable lives in the state dict and how its layout converts."""

    key: str
    # "conv" HWIO <-> OIHW, "fc" [in, out] <-> [out, in], "conv_fc" (ResNet logits)
    # [1, 1, in, out] <-> [out, in], "vec" as is.
    kind: str
    is_gamma: bool = False  # BatchNorm/gamma: absent when slim's batch_norm has scale=False


def default_scope(model_name: str) -> str:
    """slim's top-level scope for a classzoo model name (nets_factory's default scopes)."""
    if re.fullmatch(r"resnet_v1_\d+", model_name):
        return model_name
    if model_name == "inception_v4":
        return "InceptionV4"
    raise UserError(
        f"no TF-slim variable mapping for model '{model_name}' "
        "(supported: resnet_v1_<depth>, inception_v4)"
    )


def slim_head_scopes(model_name: str) -> tuple[str, ...]:
    """The head scopes slim's fine-tuning examples exclude (``--checkpoint_exclude_scopes=
    InceptionV4/Logits,InceptionV4/AuxLogits``): whole heads, convolutions included."""
    return ("logits",) if default_scope(model_name) != "InceptionV4" else ("Logits", "AuxLogits")


def _conv_bn(table: dict[str, _Var], scope: str, conv: str, bn: str) -> None:
    """slim conv2d with normalizer_fn=batch_norm: no conv biases, BN beta/gamma/moving stats."""
    table[f"{scope}/weights"] = _Var(f"{conv}.weight", "conv")
    table[f"{scope}/BatchNorm/beta"] = _Var(f"{bn}.bias", "vec")
    table[f"{scope}/BatchNorm/gamma"] = _Var(f"{bn}.weight", "vec", is_gamma=True)
    table[f"{scope}/BatchNorm/moving_mean"] = _Var(f"{bn}.running_mean", "vec")
    table[f"{scope}/BatchNorm/moving_variance"] = _Var(f"{bn}.running_var", "vec")


def _resnet_table(scope: str, keys: set[str]) -> dict[str, _Var]:
    """slim resnet_v1: conv1, block{b}/unit_{u}/bottleneck_v1/{conv1..3,shortcut}, logits."""
    table: dict[str, _Var] = {}
    _conv_bn(table, f"{scope}/conv1", "conv1", "bn1")
    for b in range(1, 5):
        u = 0
        while f"layer{b}.{u}.conv1.weight" in keys:
            unit = f"{scope}/block{b}/unit_{u + 1}/bottleneck_v1"
            for k in (1, 2, 3):
                _conv_bn(table, f"{unit}/conv{k}", f"layer{b}.{u}.conv{k}", f"layer{b}.{u}.bn{k}")
            if f"layer{b}.{u}.downsample.0.weight" in keys:
                _conv_bn(
                    table,
                    f"{unit}/shortcut",
                    f"layer{b}.{u}.downsample.0",
                    f"layer{b}.{u}.downsample.1",
                )
            u += 1
    if "fc.weight" in keys:  # slim logits: a 1x1 conv with biases
        table[f"{scope}/logits/weights"] = _Var("fc.weight", "conv_fc")
        table[f"{scope}/logits/biases"] = _Var("fc.bias", "vec")
    return table


# Inception-v4 blocks: slim conv scope (under Mixed_X/) -> module path inside timm's block.
_INCEPTION_A = {
    "Branch_0/Conv2d_0a_1x1": "branch0",
    "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_3x3": "branch1.1",
    "Branch_2/Conv2d_0a_1x1": "branch2.0",
    "Branch_2/Conv2d_0b_3x3": "branch2.1",
    "Branch_2/Conv2d_0c_3x3": "branch2.2",
    "Branch_3/Conv2d_0b_1x1": "branch3.1",
}
_REDUCTION_A = {
    "Branch_0/Conv2d_1a_3x3": "branch0",
    "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_3x3": "branch1.1",
    "Branch_1/Conv2d_1a_3x3": "branch1.2",
}
_INCEPTION_B = {
    "Branch_0/Conv2d_0a_1x1": "branch0",
    "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_1x7": "branch1.1",
    "Branch_1/Conv2d_0c_7x1": "branch1.2",
    "Branch_2/Conv2d_0a_1x1": "branch2.0",
    "Branch_2/Conv2d_0b_7x1": "branch2.1",
    "Branch_2/Conv2d_0c_1x7": "branch2.2",
    "Branch_2/Conv2d_0d_7x1": "branch2.3",
    "Branch_2/Conv2d_0e_1x7": "branch2.4",
    "Branch_3/Conv2d_0b_1x1": "branch3.1",
}
_REDUCTION_B = {
    "Branch_0/Conv2d_0a_1x1": "branch0.0",
    "Branch_0/Conv2d_1a_3x3": "branch0.1",
    "Branch_1/Conv2d_0a_1x1": "branch1.0",
    "Branch_1/Conv2d_0b_1x7": "branch1.1",
    "Branch_1/Conv2d_0c_7x1": "branch1.2",
    "Branch_1/Conv2d_1a_3x3": "branch1.3",
}
_INCEPTION_C = {
    "Branch_0/Conv2d_0a_1x1": "branch0",
    "Branch_1/Conv2d_0a_1x1": "branch1_0",
    "Branch_1/Conv2d_0b_1x3": "branch1_1a",
    "Branch_1/Conv2d_0c_3x1": "branch1_1b",
    "Branch_2/Conv2d_0a_1x1": "branch2_0",
    "Branch_2/Conv2d_0b_3x1": "branch2_1",
    "Branch_2/Conv2d_0c_1x3": "branch2_2",
    "Branch_2/Conv2d_0d_1x3": "branch2_3a",
    "Branch_2/Conv2d_0e_3x1": "branch2_3b",
    "Branch_3/Conv2d_0b_1x1": "branch3.1",
}
_INCEPTION_V4 = [  # (slim scope, index in `features`, conv scope -> module path)
    ("Conv2d_1a_3x3", 0, {"": ""}),
    ("Conv2d_2a_3x3", 1, {"": ""}),
    ("Conv2d_2b_3x3", 2, {"": ""}),
    ("Mixed_3a", 3, {"Branch_1/Conv2d_0a_3x3": "conv"}),
    (
        "Mixed_4a",
        4,
        {
            "Branch_0/Conv2d_0a_1x1": "branch0.0",
            "Branch_0/Conv2d_1a_3x3": "branch0.1",
            "Branch_1/Conv2d_0a_1x1": "branch1.0",
            "Branch_1/Conv2d_0b_1x7": "branch1.1",
            "Branch_1/Conv2d_0c_7x1": "branch1.2",
            "Branch_1/Conv2d_1a_3x3": "branch1.3",
        },
    ),
    ("Mixed_5a", 5, {"Branch_0/Conv2d_1a_3x3": "conv"}),
    *[(f"Mixed_5{c}", 6 + i, _INCEPTION_A) for i, c in enumerate("bcde")],
    ("Mixed_6a", 10, _REDUCTION_A),
    *[(f"Mixed_6{c}", 11 + i, _INCEPTION_B) for i, c in enumerate("bcdefgh")],
    ("Mixed_7a", 18, _REDUCTION_B),
    *[(f"Mixed_7{c}", 19 + i, _INCEPTION_C) for i, c in enumerate("bcd")],
]


def _inception_table(scope: str, keys: set[str]) -> dict[str, _Var]:
    """slim inception_v4: 149 trunk convs, AuxLogits (2 convs + FC), Logits FC."""
    table: dict[str, _Var] = {}
    for block, index, convs in _INCEPTION_V4:
        for conv_scope, path in convs.items():
            slim = "/".join(p for p in (scope, block, conv_scope) if p)
            module = ".".join(p for p in ("features", str(index), path) if p)
            _conv_bn(table, slim, f"{module}.conv", f"{module}.bn")
    if "aux_head.conv1.conv.weight" in keys:
        _conv_bn(
            table, f"{scope}/AuxLogits/Conv2d_1b_1x1", "aux_head.conv1.conv", "aux_head.conv1.bn"
        )
        _conv_bn(table, f"{scope}/AuxLogits/Conv2d_2a", "aux_head.conv2.conv", "aux_head.conv2.bn")
        if "aux_head.fc.weight" in keys:
            table[f"{scope}/AuxLogits/Aux_logits/weights"] = _Var("aux_head.fc.weight", "fc")
            table[f"{scope}/AuxLogits/Aux_logits/biases"] = _Var("aux_head.fc.bias", "vec")
    if "last_linear.weight" in keys:
        table[f"{scope}/Logits/Logits/weights"] = _Var("last_linear.weight", "fc")
        table[f"{scope}/Logits/Logits/biases"] = _Var("last_linear.bias", "vec")
    return table


def _table(model_name: str, keys: Iterable[str], scope: str | None) -> tuple[dict[str, _Var], bool]:
    """(slim name -> _Var, whether slim's arg scope has BN gamma) for the network in ``keys``."""
    keys = set(keys)
    top = scope or default_scope(model_name)
    if default_scope(model_name) == "InceptionV4":
        table, has_gamma = _inception_table(top, keys), False  # inception_arg_scope: scale unset
    else:
        table, has_gamma = _resnet_table(top, keys), True  # resnet_arg_scope: scale=True
    absent = [v.key for v in table.values() if v.key not in keys]
    if absent:
        raise ValueError(f"state dict is not a classzoo {model_name} (no {absent[0]})")
    return table, has_gamma


def _slim_shape(var: _Var, torch_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape slim stores for a parameter of ``torch_shape``."""
    if var.kind == "conv":
        o, i, h, w = torch_shape
        return (h, w, i, o)
    if var.kind == "fc":
        return (torch_shape[1], torch_shape[0])
    if var.kind == "conv_fc":
        return (1, 1, torch_shape[1], torch_shape[0])
    return tuple(torch_shape)


def _to_torch(var: _Var, value: np.ndarray) -> torch.Tensor:
    t = torch.tensor(value)  # a copy: readers may hand out read-only views of a file buffer
    if var.kind == "conv":
        t = t.permute(3, 2, 0, 1)  # HWIO -> OIHW
    elif var.kind == "fc":
        t = t.T
    elif var.kind == "conv_fc":
        t = t[0, 0].T
    return t.contiguous()


def _to_slim(var: _Var, value: torch.Tensor) -> np.ndarray:
    t = value.detach().cpu()
    if var.kind == "conv":
        t = t.permute(2, 3, 1, 0)  # OIHW -> HWIO
    elif var.kind == "fc":
        t = t.T
    elif var.kind == "conv_fc":
        t = t.T[None, None]
    return np.ascontiguousarray(t.numpy())


def _in_scope(name: str, scopes: Sequence[str], top: str) -> bool:
    """slim-style scope match, on whole path components; scopes may omit the top scope."""
    rel = name[len(top) + 1 :] if name.startswith(top + "/") else None
    return any(
        n == s or n.startswith(s + "/") for s in scopes for n in (name, rel) if n is not None
    )


def _listing(label: str, items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")
    return f"{len(items)} {label} ({shown})"


def slim_to_state_dict(
    model_name: str,
    variables: Mapping[str, np.ndarray],
    model: nn.Module,
    exclude: Sequence[str] = (),
    *,
    use_ema: bool = False,
    scope: str | None = None,
    source: str = "checkpoint",
) -> dict[str, torch.Tensor]:
    """A complete state dict for ``model`` from slim checkpoint ``variables``
    (:func:`slim_to_state_dict_and_init` without its lists of keys)."""
    return slim_to_state_dict_and_init(
        model_name, variables, model, exclude, use_ema=use_ema, scope=scope, source=source
    )[0]


def slim_to_state_dict_and_init(
    model_name: str,
    variables: Mapping[str, np.ndarray],
    model: nn.Module,
    exclude: Sequence[str] = (),
    *,
    use_ema: bool = False,
    scope: str | None = None,
    source: str = "checkpoint",
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """A complete state dict for ``model`` from slim checkpoint ``variables``, the keys of it
    that keep ``model``'s own values (those of excluded scopes), and the keys whose value is
    slim's constant rather than a variable of the checkpoint (BN gamma 1 under scale=False).

    ``exclude``: slim scopes (``"Logits"``, ``"AuxLogits"``, ``"InceptionV4/Logits"``, or any
    checkpoint-only scope to ignore) whose parameters keep ``model``'s own values and whose
    checkpoint variables are skipped, like train_image_classifier's --checkpoint_exclude_scopes.
    A scope is matched on whole name components: ``InceptionV4/AuxLogits/Aux_logits`` excludes
    that layer only, not the AuxLogits convolutions beside it. (train_image_classifier matches
    ``var.op.name.startswith(exclusion)``; the two agree on every real scope, and a partial
    component such as ``InceptionV4/Mixed_6`` matches nothing here and is a UserError.)
    ``use_ema``: take each variable's ExponentialMovingAverage shadow when the checkpoint has one
    (what eval_image_classifier --moving_average_decay restores). Inception-v4 has no BN gamma
    (loaded as 1; a checkpoint with gammas must have all of them); ResNet-v1 requires gamma.
    ``num_batches_tracked`` keeps the model's value. ``scope`` overrides slim's top scope;
    ``source`` names the checkpoint in error messages.
    """
    own = model.state_dict()
    table, has_gamma = _table(model_name, own, scope)
    top = scope or default_scope(model_name)
    exclude = [s.strip("/") for s in exclude if s.strip("/")]
    for s in exclude:
        if not any(_in_scope(n, [s], top) for n in (*table, *variables)):
            raise UserError(
                f"exclude scope '{s}' matches no variable of {source} or of {model_name}"
            )
    model_vars = model_variables(variables, table, use_ema, source)
    # Gamma may be absent only where slim's arg scope has none (Inception: scale=False), and
    # then from every BN: a ResNet checkpoint without gammas, or a half-gamma one, does not fit.
    gamma_optional = not has_gamma and not any(table[n].is_gamma for n in model_vars if n in table)
    out, missing, mismatched, init, ones = _convert(
        table, own, model_vars, exclude, top, gamma_optional
    )
    unexpected = sorted(n for n in model_vars if n not in table and not _in_scope(n, exclude, top))
    if missing or unexpected or mismatched:
        _misfit(source, model_name, top, missing, unexpected, mismatched)
    return out, init, ones


def _convert(table, own, model_vars, exclude, top: str, gamma_optional: bool):
    """(state dict, missing names, mismatched descriptions, keys kept at init, keys set to
    slim's gamma 1)."""
    out = {k: v.clone() for k, v in own.items()}
    missing, mismatched, init, ones = [], [], [], []
    for name, var in table.items():
        if _in_scope(name, exclude, top):
            init.append(var.key)
            continue
        target = own[var.key]
        if name not in model_vars:
            if var.is_gamma and gamma_optional:
                out[var.key] = torch.ones_like(target)  # slim batch_norm scale=False: gamma == 1
                ones.append(var.key)
            else:
                missing.append(name)
            continue
        value = np.asarray(model_vars[name])
        expected = _slim_shape(var, target.shape)
        if tuple(value.shape) != expected or not np.issubdtype(value.dtype, np.floating):
            mismatched.append(
                f"{name} checkpoint {value.dtype}{list(value.shape)} model {list(expected)}"
            )
            continue
        out[var.key] = _to_torch(var, value).to(target.dtype)
    return out, missing, mismatched, init, ones


def _misfit(source, model_name, top, missing, unexpected, mismatched) -> None:
    """One UserError listing what is missing, unexpected or mis-shaped (and the scope hint)."""
    parts = [
        _listing(label, items)
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    tops = sorted({n.split("/", 1)[0] for n in unexpected if "/" in n} - {top})
    hint = (
        f"; the checkpoint's variables are under {', '.join(repr(t + '/') for t in tops)}"
        if tops
        else ""
    )
    raise UserError(
        f"{source} does not fit {model_name} (scope '{top}/'): " + "; ".join(parts) + hint
    )


def state_dict_to_slim(
    model_name: str, state_dict: Mapping[str, torch.Tensor], *, scope: str | None = None
) -> dict[str, np.ndarray]:
    """slim checkpoint variables (names, TF layouts, float arrays) for a classzoo slim network.

    BN gamma is written where slim's arg scope creates it (ResNet); for Inception-v4 (no gamma)
    it is written only if some gamma differs from 1, so no information is dropped."""
    table, has_gamma = _table(model_name, state_dict, scope)
    out: dict[str, np.ndarray] = {}
    for name, var in table.items():
        value = state_dict[var.key]
        if var.is_gamma and not has_gamma and bool(torch.all(value == 1)):
            continue
        out[name] = _to_slim(var, value)
    return out
