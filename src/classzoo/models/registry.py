"""Model names -> constructors: classzoo's own networks first, then timm's registry.

Each entry carries its preprocessing defaults (input size, crop, preset, label offset), like
timm's ``pretrained_cfg``; timm models use theirs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import timm
from timm.data import resolve_model_data_config
from torch import nn

from classzoo.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.IMAGENET_DEFAULT_MEAN
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ModelEntry] = {}
_BUILTINS_LOADED = False


def register_model(
    name: str, build: Callable[..., nn.Module], defaults: dict[str, Any], description: str = ""
) -> None:
    if name in registry():
        raise ValueError(f"model '{name}' is registered twice")
    _REGISTRY[name] = ModelEntry(name, build, dict(defaults), description)


def unregister_model(name: str) -> None:
    """Remove ``name``; afterwards ``create_model(name)`` is an unknown model again."""
    if name not in registry():  # loads the builtins first, so they cannot come back over it
        raise ValueError(f"model '{name}' is not registered")
    del _REGISTRY[name]


@contextmanager
def registered_model(
    name: str, build: Callable[..., nn.Module], defaults: dict[str, Any], description: str = ""
) -> Iterator[ModelEntry]:
    """``name`` is registered inside the ``with`` block and removed when it ends, however it
    ends: a test's probe model does not outlive the test (nor show in ``classzoo models``)."""
    register_model(name, build, defaults, description)
    try:
        yield registry()[name]
    finally:
        unregister_model(name)


def _register_builtin() -> None:
    try:
        from classzoo.models import slim_resnet
    except ImportError:  # pragma: no cover - module arrives with the TF-slim bridge
        slim_resnet = None
    if slim_resnet is not None:
        for depth in (50, 101, 152):
            register_model(
                f"resnet_v1_{depth}",
                getattr(slim_resnet, f"slim_resnet_v1_{depth}"),
                slim_resnet.SLIM_RESNET_DEFAULTS,
                f"TF-slim resnet_v1_{depth} (exact slim layout, VGG preprocessing)",
            )
    try:
        from classzoo.models import slim_inception_v4
    except ImportError:  # pragma: no cover
        slim_inception_v4 = None
    if slim_inception_v4 is not None:
        register_model(
            "inception_v4",
            slim_inception_v4.slim_inception_v4,
            {
                **slim_inception_v4.SLIM_INCEPTION_V4_DEFAULTS,
                "takes_img_size": True,
            },  # aux head kernel
            "TF-slim inception_v4 (1001 logits, aux logits, inception preprocessing)",
        )


def registry() -> dict[str, ModelEntry]:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        _register_builtin()
    return _REGISTRY


def is_known(name: str) -> bool:
    return canonical_name(name) in registry() or bool(timm.is_model(name))


def check_name(name: str) -> None:
    if is_known(name):
        return
    names = list(registry()) + timm.list_models()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise UserError(f"unknown model '{name}'{hint} (`classzoo models` lists them)")


def timm_alias(name: str) -> str | None:
    """timm's name for one of classzoo's own models (``resnet_v1_50`` -> ``slim_resnet_v1_50``)."""
    from classzoo.models.timm_slim import TIMM_NAMES

    return TIMM_NAMES.get(name)


def canonical_name(name: str) -> str:
    """classzoo's name for a model: the timm alias of a slim layout maps back to it, so
    ``slim_resnet_v1_50`` gets the same slim preprocessing and label offset as ``resnet_v1_50``."""
    from classzoo.models.timm_slim import TIMM_NAMES

    return {alias: ours for ours, alias in TIMM_NAMES.items()}.get(name, name)


# timm.create_model's own options (timm/models/_factory.py, _builder.py), which the slim
# layouts' classes do not take: timm's builder of their slim_ names does
TIMM_FACTORY_ARGS = frozenset(
    {
        "features_only", "out_indices", "feature_cls", "feature_cfg", "pretrained_cfg",
        "pretrained_cfg_overlay", "scriptable", "exportable", "no_jit", "checkpoint_path",
        "pretrained_strict", "cache_dir",
    }
)  # fmt: skip


def build(name: str, num_classes: int | None, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Construct a model; ``num_classes=None`` keeps the model's own head size.

    ``pretrained=True``: timm's pretrained weights from timm's own cache (downloaded there when
    the hub is reachable; offline, one line naming the cache and model.checkpoint). classzoo's
    slim layouts have no hub weights: their TF-slim checkpoints load through model.checkpoint.
    """
    asked, name = name, canonical_name(name)
    check_name(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    entry = registry().get(name)
    if pretrained and entry is not None:
        raise UserError(
            f"model.pretrained: timm hosts no weights for classzoo's TF-slim {name}; set "
            f"model.checkpoint to the TF-slim checkpoint (e.g. {name}.ckpt), read directly"
        )
    try:
        if entry is not None and TIMM_FACTORY_ARGS.isdisjoint(kwargs):
            return entry.build(**kwargs)
        if entry is not None:  # timm's factory options: through timm's builder of the slim_ name
            from classzoo.models.timm_slim import TIMM_NAMES

            return timm.create_model(TIMM_NAMES[name], **kwargs)
        if pretrained:
            from classzoo.models.timm_pretrained import create_pretrained

            return create_pretrained(name, **kwargs)
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        unknown = re.findall(r"unexpected keyword argument '(\w+)'", str(exc))
        if unknown:
            raise UserError(f"model '{asked}' does not take the argument '{unknown[0]}'") from None
        raise UserError(f"model '{asked}' cannot be built with {kwargs}: {exc}") from None


def data_defaults(name: str, model: nn.Module, test_size: bool = False) -> dict[str, Any]:
    """Preprocessing defaults of a model: input_size, crop_pct, interpolation, mean, std, preset.
    ``test_size``: a timm model's test_input_size / test_crop_pct where its cfg has them, as
    timm's validate.py evaluates (``use_test_size=not args.use_train_size``)."""
    entry = registry().get(canonical_name(name))
    if entry is not None:
        out = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "label_offset": 0}
        out.update(entry.defaults)
        return out
    cfg = resolve_model_data_config(model, use_test_size=test_size)  # its pretrained_cfg
    return {
        "input_size": tuple(cfg["input_size"]),
        "crop_pct": cfg["crop_pct"],
        "crop_mode": cfg.get("crop_mode", "center"),  # squash / border for eva, nfnet ...
        "interpolation": cfg["interpolation"],
        "mean": tuple(cfg["mean"]),
        "std": tuple(cfg["std"]),
        "preset": "timm",
        "label_offset": 0,
    }
