"""Typed run configuration: recipe YAML -> dataclasses, ``--set key=value`` overrides, validation.

Every default lives here, once, with its unit and its bounds. The config is what the user ASKED
for (recipe + variant + overrides): it is frozen once loaded and saved as the run's ``config.yaml``
unchanged. ``None`` means "the model (or the data) decides"; those values are resolved in one place,
:func:`classzoo.engine.resolve.resolve`, into a separate ``Resolved`` record (``resolved.yaml``),
never written back here. Unknown keys, wrong types and values out of bounds are :class:`UserError` s
naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from classzoo.config_yaml import RECIPE_DIR as RECIPE_DIR
from classzoo.config_yaml import (
    DuplicateKeyError,
    coerce,
    nearest_key,
    parse_yaml,
    read_recipe,
    recipe_path,
)
from classzoo.config_yaml import list_recipes as list_recipes
from classzoo.errors import UserError

# Sane bounds, far above any real classifier: ImageNet-21k has 21,843 classes (timm's in21k
# heads), and 8192 px is 16x the largest timm input size (eva02 at 448-512 px). The checkpoint
# reader (formats/checkpoint_schema.py) applies the same to a stored config.
MAX_CLASSES = 1_000_000
MAX_IMAGE_SIZE = 8192


@dataclass(frozen=True)
class _Range:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded
    hi_open: bool = False
    why: str = ""  # the outside fact behind the bound, shown with the refusal

    def holds(self, v: float) -> bool:
        low = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        return low and (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi))

    def text(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo}"
        left, right = "(["[not self.lo_open], ")]"[not self.hi_open]
        return f"in {left}{self.lo}, {self.hi}{right}"


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


def _choices(*values: str) -> dict:
    return {"choices": values}


def _range(lo=None, hi=None, *, lo_open=False, hi_open=False, why="", pair=False) -> dict:
    """Bounds of a number (of each number of a list); ``pair``: a [min, max] list."""
    return {"range": _Range(lo, hi, lo_open, hi_open, why), "pair": pair}


def _min(bound: float, why: str = "") -> dict:
    return _range(bound, why=why)


_PROBABILITY = _range(0, 1, why="a probability")
_UNIT = "timm normalises pixel / 255: 0.485, not 123.68"
_SEEDS = _range(-(2**63), 2**64, hi_open=True, why="torch's seeds")

_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet50"
    # None -> the dataset's class count (or the model's own); 0 would be timm's "no head"
    num_classes: int | None = field(default=None, metadata=_range(1, MAX_CLASSES))
    checkpoint: str | None = None  # classzoo / safetensors / TF checkpoint, detected by content
    exclude: list[str] = field(default_factory=list)  # checkpoint scopes not loaded (new heads)
    pretrained: bool = False  # timm's pretrained weights from its local hub cache (no download)
    # None -> the model's default; probabilities (torch.nn.Dropout raises ValueError, timm's
    # drop_path RuntimeError from bernoulli_, for p outside [0, 1])
    drop_rate: float | None = field(default=None, metadata=_PROBABILITY)
    drop_path_rate: float | None = field(default=None, metadata=_PROBABILITY)
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments


@dataclass(frozen=True)
class DataConfig:
    source: str = field(
        default="imagefolder", metadata=_choices("imagefolder", "tfrecord", "synthetic")
    )
    dir: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    # TFRecord shard glob per split, relative to data.dir (e.g. "train-*"); None -> files named
    # after the split. Settles folders whose shard names do not say their split.
    train_pattern: str | None = None
    val_pattern: str | None = None
    image_key: str = "image/encoded"  # TFRecord Example feature keys; slim build_imagenet_data.py
    label_key: str = "image/class/label"
    batch_size: int = field(default=256, metadata=_min(1))  # images per device per step
    eval_batch_size: int | None = field(default=None, metadata=_min(1))  # None -> batch_size
    num_workers: int = field(default=4, metadata=_min(0))  # DataLoader workers per device
    # training loader: torch (DataLoader workers) or dali (extra `dali`, data/dali_loader.py)
    loader: str = field(default="torch", metadata=_choices("torch", "dali"))
    preset: str | None = field(default=None, metadata=_choices("timm", "vgg", "inception"))
    # None -> the model's input size
    image_size: int | None = field(default=None, metadata=_range(1, MAX_IMAGE_SIZE))
    # eval crop: resize to floor(image_size / crop_pct), crop image_size (timm's
    # transforms_imagenet_eval). No upper bound in timm: > 1 pads (volo_d5_512: 1.15); past
    # image_size the resize is to 0 px, which torchvision refuses (_check_together). The vgg /
    # inception presets take (0, 1] (data/tf_presets.py). None -> the model's default
    crop_pct: float | None = field(default=None, metadata=_range(0, lo_open=True))
    # timm's names (timm/data/transforms.py _str_to_pil_interpolation); None -> the model's
    interpolation: str | None = field(default=None, metadata=_choices(*INTERPOLATIONS))
    # None -> the model's default; pixel / 255 units (timm), not slim's 0-255 channel means
    mean: list[float] | None = field(default=None, metadata=_range(0, 1, why=_UNIT))
    std: list[float] | None = field(default=None, metadata=_range(0, 1, lo_open=True, why=_UNIT))
    label_offset: int | None = None  # subtracted from stored labels; None -> model (slim: 1 or 0)
    # timm's eval crop (validate.py --crop-mode): center, squash, border; None -> the model's
    crop_mode: str | None = field(default=None, metadata=_choices("center", "squash", "border"))
    # class folders -> logits of weights that name no classes (data/class_index.py rule 3):
    # sorted (torchvision) or natural (timm: 2 before 10); None: refused where they differ
    class_order: str | None = field(default=None, metadata=_choices("sorted", "natural"))
    # timm train augmentation (preset "timm"); defaults are timm's train.py defaults
    # None -> interpolation; "random" = timm's train.py default (bilinear or bicubic per image)
    train_interpolation: str | None = field(
        default=None, metadata=_choices(*INTERPOLATIONS, "random")
    )
    train_crop: str = field(default="rrc", metadata=_choices("rrc", "none"))
    # RandomResizedCrop: [min, max] of the crop's area as a fraction of the image's (torchvision:
    # "with respect to the area of the original image"; > 1 never fits and falls back to a
    # centre crop silently) and of its aspect ratio (log-uniform: > 0). torch's uniform_ raises
    # for min > max at the first crop, so both are [min, max] pairs.
    scale: list[float] = field(
        default_factory=lambda: [0.08, 1.0],
        metadata=_range(0, 1, lo_open=True, why="a fraction of the image's area", pair=True),
    )
    ratio: list[float] = field(
        default_factory=lambda: [3 / 4, 4 / 3],
        metadata=_range(0, lo_open=True, why="width / height, drawn log-uniformly", pair=True),
    )
    hflip: float = field(default=0.5, metadata=_PROBABILITY)  # timm train.py --hflip
    # timm: brightness, contrast, saturation factor; torchvision ColorJitter raises for < 0
    color_jitter: float = field(default=0.4, metadata=_min(0))
    auto_augment: str | None = None
    re_prob: float = field(default=0.0, metadata=_PROBABILITY)  # timm RandomErasing probability
    skip_corrupt: bool = False  # count and skip corrupt records/images instead of stopping
    synthetic_size: int = field(default=1024, metadata=_min(1))  # images per split, "synthetic"


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # any timm optimizer name: sgd, momentum, rmsproptf, adamw, lamb, ...
    lr: float = field(default=0.1, metadata=_min(0))  # torch refuses < 0
    lr_base_batch: int | None = (
        None  # lr is for this global batch; scaled linearly. None: no scaling
    )
    momentum: float = field(default=0.9, metadata=_range(0, 1, hi_open=True))
    weight_decay: float = field(default=1e-4, metadata=_min(0))
    eps: float | None = field(default=None, metadata=_min(0))  # None -> the optimizer's default
    # RMSProp decay (TF "decay"); None -> the optimizer's default
    alpha: float | None = field(default=None, metadata=_min(0))
    # None -> the optimizer's own form (timm: "sgd" is Nesterov, "momentum" is not); rmsproptf
    # has no Nesterov form (nor has TF's RMSPropOptimizer), so true is an error there
    nesterov: bool | None = None
    filter_bias_and_bn: bool = True  # no weight decay on biases and norm parameters (timm)
    # max gradient norm; None -> no clipping (torch's clip_grad_norm_ scales by min(1, c / norm):
    # a negative c turns the step into an ascent)
    clip_grad: float | None = field(default=None, metadata=_range(0, lo_open=True))
    # torch's fused kernel (sgd / momentum / nesterov / adam / adamw / adagrad); None -> where
    # the device has one (engine/devices.py), the per-parameter loop for other optimizers
    fused: bool | None = None


@dataclass(frozen=True)
class SchedConfig:
    name: str = field(default="cosine", metadata=_choices("cosine", "step", "const"))
    warmup_epochs: float = field(default=0.0, metadata=_min(0))
    warmup_lr: float = field(default=0.0, metadata=_min(0))
    min_lr: float = field(default=0.0, metadata=_min(0))
    cooldown_epochs: float = field(default=0.0, metadata=_min(0))
    # cosine period in epochs; None -> epochs - cooldown (timm's cosine counts the warmup in it)
    t_max: float | None = field(default=None, metadata=_range(0, lo_open=True))
    decay_epochs: float = field(default=30.0, metadata=_range(0, lo_open=True))  # step schedule
    decay_rate: float = field(default=0.1, metadata=_min(0))


@dataclass(frozen=True)
class TrainConfig:
    mode: str = field(
        default="train_and_evaluate", metadata=_choices("train", "train_and_evaluate", "evaluate")
    )
    epochs: float = field(default=90.0, metadata=_range(0, lo_open=True))  # 0 had trained 1 step
    # stop after this many optimizer steps (smoke / performance runs); None -> no limit
    max_steps: int | None = field(default=None, metadata=_min(1, "None for no limit"))
    eval_every: int = field(default=1, metadata=_min(0))  # epochs between evaluations; 0 = never
    # torch's cross_entropy takes [0, 1]; 1 makes every target uniform, no label is learnt
    label_smoothing: float = field(
        default=0.0, metadata=_range(0, 1, hi_open=True, why="1 makes the target uniform")
    )
    aux_loss_weight: float = 0.4  # slim train_image_classifier.py weight of AuxLogits
    amp: str = field(default="auto", metadata=_choices("auto", "off", "bf16", "fp16"))
    # channels_last (NHWC) and torch.compile of the training network (timm's --torchcompile):
    # None -> the device's default from engine/devices.py (compile: off, docs/benchmarks.md)
    channels_last: bool | None = None
    compile: bool | None = None
    compile_mode: str = field(default="default", metadata=_choices(*_COMPILE_MODES))
    ema: bool = False
    ema_decay: float = field(default=0.9998, metadata=_range(0, 1, why="timm ModelEmaV3's decay"))
    seed: int = field(default=0, metadata=_SEEDS)
    grad_accum_steps: int = field(default=1, metadata=_min(1))
    sync_bn: bool = False
    log_every: int = field(default=50, metadata=_min(1))  # steps between train.log lines
    # None -> only at the end of each epoch
    ckpt_every_steps: int | None = field(default=None, metadata=_min(1))
    keep_max: int = field(default=5, metadata=_min(0))  # newest checkpoints kept by rotation
    keep_best: int = field(default=1, metadata=_min(0))  # best checkpoints kept (best.pt = first)
    best_metric: str = field(default="top1", metadata=_choices("top1", "top5", "loss"))
    device: str = field(default="auto", metadata=_choices("auto", "cpu", "cuda", "npu", "mps"))
    progress: bool = True  # a progress bar when stderr is a terminal


@dataclass(frozen=True)
class EvalConfig:
    # classzoo eval, mode evaluate and a run's final evaluation: fp32 by default, the protocol
    # behind the published slim numbers (bf16 moved one trial's loss from 2542.94 to 2540.07)
    amp: str = field(default="off", metadata=_choices("auto", "off", "bf16", "fp16"))
    # evaluations during training: "off" (fp32) or "train" (the training precision, faster)
    periodic_amp: str = field(default="off", metadata=_choices("off", "train"))


@dataclass(frozen=True)
class Config:
    recipe: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_recipe(name_or_file: str, overrides: Sequence[str] = ()) -> Config:
    """Load a recipe (optionally ``NAME:VARIANT``), apply its variant and ``key=value`` overrides."""
    path, variant = recipe_path(name_or_file)
    raw = read_recipe(path)
    variants = raw.pop("variants", {}) or {}
    if not isinstance(variants, dict):
        raise UserError(f"recipe {path}: 'variants' must be a mapping of name -> settings")
    raw.setdefault("recipe", path.stem)
    cfg = from_dict(raw, source=str(path))
    if variant is not None:
        if variant not in variants:
            raise UserError(
                f"recipe {path.stem} has no variant '{variant}' (variants: {', '.join(variants) or 'none'})"
            )
        settings = variants[variant] or {}
        if not isinstance(settings, dict):
            raise UserError(f"recipe {path}: variant '{variant}' must be a mapping of key: value")
        cfg = with_values(
            cfg, {**settings, "recipe": f"{path.stem}:{variant}"}, f"{path.stem}:{variant}"
        )
    return with_overrides(cfg, overrides)


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """A config from ``{section: {key: value}}`` (a recipe file or a stored config.yaml)."""
    flat: dict[str, Any] = {}
    for section, values in raw.items():
        if section == "recipe":
            flat["recipe"] = values
            continue
        if not isinstance(values, dict):
            _check_key(Config(), str(section), source)
            raise UserError(f"{source}: section '{section}' must be a mapping")
        flat.update({f"{section}.{key}": value for key, value in values.items()})
    return with_values(Config(), flat, source)


def with_values(cfg: Config, values: Mapping[str, Any], source: str) -> Config:
    """A new config: ``cfg`` with ``{"section.key": value}`` set (type-checked); cfg is unchanged."""
    draft = copy.deepcopy(cfg)
    for dotted, value in values.items():
        if dotted == "recipe":
            object.__setattr__(draft, "recipe", None if value is None else str(value))
        else:
            _set(draft, str(dotted), value, source)
    _check_together(draft, source)
    return draft


def with_overrides(cfg: Config, overrides: Sequence[str], source: str = "--set") -> Config:
    """A new config with ``key=value`` strings applied (values parsed as YAML scalars)."""
    values: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"{source} expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        try:
            value = parse_yaml(text) if text != "" else None
        except DuplicateKeyError as exc:
            raise UserError(f"{source} {key.strip()}: {exc}") from None
        except yaml.YAMLError:
            value = text
        values[key.strip()] = value
    return with_values(cfg, values, source)


def _check_key(obj: Any, name: str, source: str, prefix: str = "") -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        allowed = sorted(fields)
        sections = {s.name: getattr(Config(), s.name) for s in dataclasses.fields(Config)}
        close = nearest_key(name, prefix, allowed, sections)
        hint = f"; did you mean '{close}'?" if close else ""
        raise UserError(
            f"{source}: unknown key '{prefix}{name}'{hint} (allowed: {', '.join(prefix + a for a in allowed)})"
        )
    return fields[name]


@functools.cache
def _type_hints(section: type) -> dict[str, Any]:
    """A section's resolved annotations: resolving them was 40 % of a recipe load (profiled)."""
    return typing.get_type_hints(section)


def _set(cfg: Config, dotted: str, value: Any, source: str) -> None:
    """Set ``section.key`` on a draft being built, coercing to the declared type and checking
    its choices and bounds; errors name the key. Only :func:`with_values` calls it."""
    parts = dotted.split(".")
    obj: Any = cfg
    prefix = ""
    for part in parts[:-1]:
        f = _check_key(obj, part, source, prefix)
        obj = getattr(obj, f.name)
        if not dataclasses.is_dataclass(obj):
            raise UserError(f"{source}: '{prefix}{part}' is a value, not a section")
        prefix += part + "."
    f = _check_key(obj, parts[-1], source, prefix)
    if dataclasses.is_dataclass(getattr(obj, f.name)):
        raise UserError(
            f"{source}: '{dotted}' is a section; set one of its keys, e.g. {dotted}.<key>"
        )
    hints = _type_hints(type(obj))
    coerced = coerce(value, hints[f.name], dotted, source)
    choices = f.metadata.get("choices")
    if choices and coerced is not None and coerced not in choices:
        raise UserError(f"{source}: {dotted}={coerced!r} is not one of {', '.join(choices)}")
    if "range" in f.metadata and coerced is not None:
        _check_range(coerced, f.metadata["range"], f.metadata["pair"], dotted, source)
    object.__setattr__(obj, f.name, coerced)  # the draft is private until returned


def _check_range(value: Any, rng: _Range, pair: bool, key: str, source: str) -> None:
    """``value`` (each number of it, for a list) within ``rng``; a ``pair`` is [min, max]."""
    if pair and len(value) != 2:
        raise UserError(f"{source}: {key}={value!r} must be two numbers, [min, max]")
    if pair and value[0] > value[1]:
        raise UserError(
            f"{source}: {key}={value!r} must be [min, max] with min <= max "
            "(torch's uniform_ raises for min > max when the first crop is drawn)"
        )
    for v in value if isinstance(value, list) else [value]:
        if not rng.holds(v):
            why = f" ({rng.why})" if rng.why else ""
            raise UserError(f"{source}: {key}={value!r} must be {rng.text()}{why}")


def _check_together(cfg: Config, source: str) -> None:
    """Bounds between keys: crop_pct > image_size resizes to 0 px before the crop, which
    torchvision refuses at the first evaluation ("height and width must be > 0")."""
    size, pct = cfg.data.image_size, cfg.data.crop_pct
    if size is not None and pct is not None and math.floor(size / pct) < 1:
        raise UserError(
            f"{source}: data.crop_pct={pct!r} must be <= data.image_size={size} "
            f"(the eval resize is to floor(image_size / crop_pct) = 0 px)"
        )


def config_text(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)  # config.yaml: the config as asked
