"""Typed run configuration: recipe YAML -> dataclasses, ``--set key=value`` overrides, validation.

Every default lives here, once, with its unit. ``None`` means "the model (or the data) decides";
those are resolved in one place (:func:`classzoo.engine.setup.resolve`) and written to the run's
``config.yaml``. Unknown keys and wrong types are :class:`UserError` s naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from classzoo.errors import UserError


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no as booleans,
    which would turn ``amp: off`` into False."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _choices(*values: str) -> dict:
    return {"choices": values}


@dataclass
class ModelConfig:
    name: str = "resnet50"
    num_classes: int | None = None  # None -> the dataset's class count (or the model's own)
    checkpoint: str | None = None  # classzoo / safetensors / TF checkpoint, detected by content
    exclude: list[str] = field(default_factory=list)  # checkpoint scopes not loaded (new heads)
    pretrained: bool = False  # timm's pretrained weights from its local hub cache (never a download)
    drop_rate: float | None = None  # None -> the model's default
    drop_path_rate: float | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments


@dataclass
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
    batch_size: int = 256  # images per device per step
    eval_batch_size: int | None = None  # None -> batch_size
    num_workers: int = 4  # DataLoader workers per device
    preset: str | None = field(default=None, metadata=_choices("timm", "vgg", "inception"))
    image_size: int | None = None  # None -> the model's input size
    crop_pct: float | None = None  # eval centre crop; None -> the model's default
    interpolation: str | None = None  # None -> the model's default
    mean: list[float] | None = None  # None -> the model's default
    std: list[float] | None = None
    label_offset: int | None = None  # subtracted from stored labels; None -> model (slim: 1 or 0)
    # timm train augmentation (preset "timm"); defaults are timm's train.py defaults
    train_interpolation: str | None = None  # None -> interpolation; "random" = timm's train default
    train_crop: str = field(default="rrc", metadata=_choices("rrc", "none"))
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str | None = None
    re_prob: float = 0.0
    skip_corrupt: bool = False  # count and skip corrupt records/images instead of stopping
    synthetic_size: int = 1024  # images per split for source "synthetic"
    train_size: int | None = None  # written by the run: images in the train split (for epochs)


@dataclass
class OptimConfig:
    name: str = "sgd"  # any timm optimizer name: sgd, momentum, rmsproptf, adamw, lamb, ...
    lr: float = 0.1
    lr_base_batch: int | None = (
        None  # lr is for this global batch; scaled linearly. None: no scaling
    )
    momentum: float = 0.9
    weight_decay: float = 1e-4
    eps: float | None = None  # None -> the optimizer's default
    alpha: float | None = None  # RMSProp decay (TF "decay"); None -> the optimizer's default
    nesterov: bool = False
    filter_bias_and_bn: bool = True  # no weight decay on biases and norm parameters (timm)
    clip_grad: float | None = None  # max gradient norm; None -> no clipping


@dataclass
class SchedConfig:
    name: str = field(default="cosine", metadata=_choices("cosine", "step", "const"))
    warmup_epochs: float = 0.0
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    cooldown_epochs: float = 0.0
    t_max: float | None = None  # cosine period in epochs; None -> epochs - warmup - cooldown
    decay_epochs: float = 30.0  # step schedule
    decay_rate: float = 0.1


@dataclass
class TrainConfig:
    mode: str = field(
        default="train_and_evaluate", metadata=_choices("train", "train_and_evaluate", "evaluate")
    )
    epochs: float = 90.0
    max_steps: int | None = None  # stop after this many optimizer steps (smoke / performance runs)
    eval_every: int = 1  # epochs between evaluations in train_and_evaluate
    label_smoothing: float = 0.0
    aux_loss_weight: float = 0.4  # slim train_image_classifier.py weight of AuxLogits
    amp: str = field(default="auto", metadata=_choices("auto", "off", "bf16", "fp16"))
    channels_last: bool = True  # NHWC: 1.2-1.6x faster training on CPU here (docs/benchmarks.md)
    ema: bool = False
    ema_decay: float = 0.9998
    seed: int = 0
    grad_accum_steps: int = 1
    sync_bn: bool = False
    log_every: int = 50  # steps between train.log lines
    ckpt_every_steps: int | None = None  # None -> only at the end of each epoch
    keep_max: int = 5  # checkpoints kept by rotation
    device: str = field(default="auto", metadata=_choices("auto", "cpu", "cuda", "npu", "mps"))
    progress: bool = True  # a progress bar when stderr is a terminal


@dataclass
class Config:
    recipe: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPE_DIR = Path(__file__).parent / "recipes"


def list_recipes() -> dict[str, str]:
    """Recipe name -> first line of its header comment (the launch command / purpose)."""
    out = {}
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        first = ""
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                first = line.lstrip("# ").strip()
                break
        out[path.stem] = first
    return out


def recipe_path(name_or_file: str) -> tuple[Path, str | None]:
    """Resolve ``NAME[:VARIANT]`` or a YAML path; returns (path, variant)."""
    variant = None
    spec = name_or_file
    if ":" in spec and not Path(spec).exists():
        spec, variant = spec.rsplit(":", 1)
    candidate = Path(spec)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise UserError(f"recipe file {spec} does not exist")
        return candidate, variant
    path = RECIPE_DIR / f"{spec}.yaml"
    if not path.is_file():
        names = sorted(list_recipes())
        close = difflib.get_close_matches(spec, names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UserError(f"unknown recipe '{spec}'{hint} (known: {', '.join(names)})")
    return path, variant


def load_recipe(name_or_file: str, overrides: list[str] = ()) -> Config:
    """Load a recipe (optionally ``NAME:VARIANT``), apply its variant and ``key=value`` overrides."""
    path, variant = recipe_path(name_or_file)
    try:
        raw = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"recipe {path} must be a mapping of sections")
    variants = raw.pop("variants", {}) or {}
    raw.setdefault("recipe", path.stem)
    cfg = from_dict(raw, source=str(path))
    if variant is not None:
        if variant not in variants:
            raise UserError(
                f"recipe {path.stem} has no variant '{variant}' (variants: {', '.join(variants) or 'none'})"
            )
        for key, value in variants[variant].items():
            set_value(cfg, key, value, source=f"{path.stem}:{variant}")
        cfg.recipe = f"{path.stem}:{variant}"
    apply_overrides(cfg, overrides)
    return cfg


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    cfg = Config()
    for section, values in raw.items():
        if section == "recipe":
            cfg.recipe = values
            continue
        if not isinstance(values, dict):
            _check_key(cfg, section, source)
            raise UserError(f"{source}: section '{section}' must be a mapping")
        for key, value in values.items():
            set_value(cfg, f"{section}.{key}", value, source=source)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> None:
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        try:
            value = parse_yaml(text) if text != "" else None
        except yaml.YAMLError:
            value = text
        set_value(cfg, key.strip(), value, source="--set")


def _check_key(obj: Any, name: str, source: str, prefix: str = "") -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        allowed = sorted(fields)
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
        raise UserError(
            f"{source}: unknown key '{prefix}{name}'{hint} (allowed: {', '.join(prefix + a for a in allowed)})"
        )
    return fields[name]


def set_value(cfg: Config, dotted: str, value: Any, source: str) -> None:
    """Set ``section.key`` on ``cfg``, coercing to the declared type; errors name the key."""
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
    hints = typing.get_type_hints(type(obj))
    coerced = _coerce(value, hints[f.name], dotted, source)
    choices = f.metadata.get("choices")
    if choices and coerced is not None and coerced not in choices:
        raise UserError(f"{source}: {dotted}={coerced!r} is not one of {', '.join(choices)}")
    setattr(obj, f.name, coerced)


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except UserError as exc:
                errors.append(exc)
        raise errors[0] if errors else UserError(f"{source}: {key} cannot be {value!r}")
    bad = UserError(f"{source}: {key}={value!r} is not a valid {getattr(tp, '__name__', tp)}")
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise bad
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, key, source) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    raise bad


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_config_file(path: Path) -> Config:
    """Load a resolved ``config.yaml`` written by :func:`save_config`."""
    return from_dict(parse_yaml(path.read_text()) or {}, source=str(path))
