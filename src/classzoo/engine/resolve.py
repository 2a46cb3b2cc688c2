"""The one resolve step: the config the user asked for + what was found -> a frozen ``Resolved``.

Every "the model decides" (``None``) of the asked config, the device, both precisions, the exact
pixel formula, the data files and counts, the label offset and class count, and what the weights
came from are decided here, once. The record is logged at start, written as ``resolved.yaml``,
stored in every checkpoint, and is what eval, predict, export, report and resume read. The asked
config itself is never changed (it is frozen).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from classzoo.config import Config, DataConfig, ModelConfig
from classzoo.data.class_index import check_kept_head_classes, check_order_given
from classzoo.data.labels import check_labels, infer_num_classes
from classzoo.data.transforms import EvalPreprocess
from classzoo.data.transforms import describe as describe_pixels
from classzoo.engine.devices import traits
from classzoo.engine.held_out import check_held_out
from classzoo.engine.optim import check_optimizer, fused_choice
from classzoo.engine.precision import precision_name, resolve_amp, train_amp
from classzoo.errors import UserError
from classzoo.models.weights import LoadReport

log = logging.getLogger("classzoo")

# slim preprocessing/vgg_preprocessing.py _R_MEAN, _G_MEAN, _B_MEAN (0-255 pixels, no scaling)
VGG_MEANS = (123.68, 116.78, 103.94)
SLIM_PRESETS = ("vgg", "inception")
# data.* keys only preset timm reads: timm's train augmentation (data/timm_pipeline.py)
TIMM_AUGMENT_KEYS = (
    "train_interpolation",
    "train_crop",
    "scale",
    "ratio",
    "hflip",
    "color_jitter",
    "auto_augment",
    "re_prob",
)


@dataclass(frozen=True)
class Preprocess:
    """What turns a decoded image into the model's input.

    The pixel formula is the same for every preset, in timm's units:
    ``input[c] = (pixel[c] / 255 - mean[c]) / std[c]`` for 0..255 pixels after resize and crop.
    slim vgg: mean = VGG means / 255, std = 1 / 255 (x - mean, range -123.7..151.1);
    slim inception: mean = std = 0.5 (range -1..1); timm: the model's own mean and std.
    """

    preset: str  # timm | vgg | inception
    image_size: int
    crop_pct: float  # eval: centre crop fraction before the resize to image_size
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    decoder: str  # "tf": TensorFlow's JPEG pixels (IFAST DCT), "pil": PIL's
    # exactly what the batch stage applies, in order, to what a worker returns (data.transforms)
    sample: str = ""  # the worker's output: dtype, units
    steps: list = field(default_factory=list)  # e.g. [["div", 255.0], ["sub", mean], ["div", std]]
    # timm's eval crop (center | squash | border: data/transforms.py EvalPreprocess); "center" in
    # records written before it was kept, and for the slim presets (their own crops)
    crop_mode: str = "center"

    @property
    def formula(self) -> str:
        return "input[c] = (pixel[c] / 255 - mean[c]) / std[c]"


@dataclass(frozen=True)
class SplitInfo:
    """One split as found on disk: which files were used, which were not and why, and counts."""

    source: str  # imagefolder | tfrecord | synthetic
    location: str
    count: int
    files: tuple[str, ...] = ()  # TFRecord shards (an ImageFolder lists its root only)
    ignored: tuple[tuple[str, str], ...] = ()  # (file, why not used)
    label_min: int | None = None  # stored labels, before the offset
    label_max: int | None = None
    distinct_labels: int | None = None  # TFRecord: how many label values occur
    labels_by: str | None = None  # ImageFolder: how class folders became logit indices


@dataclass(frozen=True)
class Schedule:
    """Batch, learning rate and duration, converted to optimizer steps once."""

    per_device_batch: int
    grad_accum: int
    global_batch: int
    lr: float
    lr_rule: str
    steps_per_epoch: int
    total_steps: int
    lr_shape: str = ""  # optim.lr_shape; "" in records written before it was recorded


@dataclass(frozen=True)
class Resolved:
    model: str
    num_classes: int
    label_offset: int  # subtracted from stored labels
    classes: tuple[str, ...] | None
    device: str
    world_size: int
    train_precision: str | None  # fp32 | bf16 | fp16 (training forward); None: an evaluation
    eval_precision: str  # classzoo eval, mode evaluate, a run's final evaluation
    periodic_eval_precision: str  # evaluations during training
    channels_last: bool
    preprocess: Preprocess
    data: dict[str, SplitInfo] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)  # models.weights.LoadReport as a dict
    schedule: Schedule | None = None
    seed: int = 0
    compile: str | None = None  # torch.compile mode of the training network; None: eager
    fused_optimizer: bool | None = None  # torch's fused optimizer kernel; None: no training
    # why train.amp auto set its rule aside (bf16_conv_check), or that bf16 runs emulated
    precision_note: str | None = None
    loader: str = "torch"  # the training loader: torch | dali
    threads: int | None = None  # compute threads (engine/threads.py); a resume reuses them
    thread_plan: str | None = None  # why that many (cores, busy cores, or as recorded)
    host_memory: str | None = None  # huge pages, freed memory kept (engine/host_memory.py)
    software: dict[str, str] | None = None  # versions this attempt ran (engine/software.py)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples): YAML-safe and loadable with weights_only."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str) -> Resolved:
        try:
            d = dict(raw)
            d["preprocess"] = Preprocess(
                **{
                    **raw["preprocess"],
                    "mean": tuple(raw["preprocess"]["mean"]),
                    "std": tuple(raw["preprocess"]["std"]),
                }
            )
            d["data"] = {
                k: SplitInfo(
                    **{
                        **v,
                        "files": tuple(v.get("files", ())),
                        "ignored": tuple(tuple(i) for i in v.get("ignored", ())),
                    }
                )
                for k, v in (raw.get("data") or {}).items()
            }
            d["schedule"] = Schedule(**raw["schedule"]) if raw.get("schedule") else None
            d["classes"] = tuple(raw["classes"]) if raw.get("classes") else None
            return cls(**d)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{source}: the stored resolved record is malformed ({exc})") from None

    def precision_dtype(self, which: str) -> torch.dtype | None:
        name = {
            "train": self.train_precision,
            "eval": self.eval_precision,
            "periodic": self.periodic_eval_precision,
        }[which]
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- the pieces, each usable before the model exists ---------------------------------------


def label_offset_for(data: DataConfig, defaults: dict[str, Any], num_classes: int | None) -> int:
    """Subtracted from stored TFRecord labels: data.label_offset, else 0 under a 1001-logit head
    (slim's background is logit 0: its labels are the logits, as slim's eval takes
    ``num_classes = 1001 - labels_offset``), else the model's (slim ResNet-v1: 1, its logit i is
    slim label i + 1). ImageFolder and synthetic labels are class indices 0..N-1 already
    (build.open_split refuses an offset for them). ``num_classes``: model.num_classes as set."""
    if data.source != "tfrecord" and (data.dir or data.source == "synthetic"):
        return 0  # a dataset's class indices; with no data (predict, export) the model decides
    if data.label_offset is not None:
        return data.label_offset
    if num_classes == 1001:
        return 0
    return int(defaults.get("label_offset", 0))


def num_classes_for(
    model: ModelConfig, classes: list[str] | None, tfrecord: SplitInfo | None, label_offset: int
) -> int | None:
    """The head size: model.num_classes, else the class folders found, else (TFRecord) the
    largest stored label - offset + 1 (data/labels.py says why); None keeps the model's own
    head (synthetic data)."""
    if model.num_classes is not None:
        return model.num_classes
    if classes:
        return len(classes)
    if tfrecord is None or tfrecord.label_min is None:
        return None
    lo, hi = tfrecord.label_min, tfrecord.label_max
    count = infer_num_classes(lo, hi, tfrecord.distinct_labels or 0, label_offset)
    log.info("model.num_classes %d, from the TFRecord labels: %s", count.num_classes, count.reason)
    if lo - label_offset > 0:
        log.warning(
            "no record has label %d (labels %d..%d, label_offset %d): class 0 gets no samples;"
            " if these are slim labels (1..N, 0 = background) set data.label_offset=1",
            label_offset,
            lo,
            hi,
            label_offset,
        )
    return count.num_classes


def preprocess_for(data: DataConfig, defaults: dict[str, Any]) -> Preprocess:
    """The model's own defaults (timm pretrained_cfg / classzoo registry), overridden by data.*."""
    preset = data.preset or defaults.get("preset", "timm")
    if preset in SLIM_PRESETS:
        for key in ("mean", "std"):
            if getattr(data, key) is not None:
                raise UserError(
                    f"data.{key} has no effect with preset {preset} (slim's preprocessing fixes "
                    f"its pixel formula); unset it or use preset timm"
                )
        if data.crop_mode is not None:
            raise UserError(
                f"data.crop_mode={data.crop_mode} has no effect with preset {preset} (slim's "
                "preprocessing fixes its crop); unset it or use preset timm"
            )
        if data.interpolation not in (None, "bilinear"):
            raise UserError(
                f"data.interpolation={data.interpolation} has no effect with preset {preset} "
                "(slim resizes with TF1's bilinear kernel); unset it or use preset timm"
            )
        mean, std = (
            (tuple(m / 255 for m in VGG_MEANS), (1 / 255,) * 3)
            if preset == "vgg"
            else ((0.5,) * 3, (0.5,) * 3)
        )  # inception: x / 127.5 - 1
    else:
        mean = tuple(float(v) for v in (data.mean or defaults["mean"]))
        std = tuple(float(v) for v in (data.std or defaults["std"]))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise UserError(
                f"data.mean / data.std must be 3 values each, std > 0 (got {mean}, {std})"
            )
    geometry = dict(
        preset=preset,
        image_size=int(data.image_size or defaults["input_size"][-1]),
        crop_pct=float(
            data.crop_pct if data.crop_pct is not None else defaults.get("crop_pct", 0.875)
        ),
        interpolation="bilinear"
        if preset in SLIM_PRESETS
        else data.interpolation or defaults.get("interpolation", "bilinear"),
        mean=mean,
        std=std,
        crop_mode="center"
        if preset in SLIM_PRESETS
        else data.crop_mode or defaults.get("crop_mode", "center"),
    )
    pixels = describe_pixels(EvalPreprocess(**geometry))
    return Preprocess(
        **geometry,
        decoder="tf" if preset in SLIM_PRESETS else "pil",
        sample=pixels["sample"],
        steps=pixels["steps"],
    )


def check_train_augment(data: DataConfig, preset: str) -> None:
    """slim's training presets fix their own augmentation (vgg: short side and crop; inception:
    distorted box, flip, colours): a timm augmentation key changed there would be recorded in the
    run and never applied."""
    if preset not in SLIM_PRESETS:
        return
    default = DataConfig()
    for key in TIMM_AUGMENT_KEYS:
        value = getattr(data, key)
        if _listed(value) != _listed(getattr(default, key)):
            raise UserError(
                f"data.{key}={value} has no effect with preset {preset} (slim's "
                f"{preset}_preprocessing fixes its training augmentation); unset it or use "
                "preset timm"
            )


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


# ---- the record ---------------------------------------------------------------------------


def resolve(
    asked: Config,
    device: torch.device,
    world_size: int,
    model_defaults: dict[str, Any],
    num_classes: int,
    classes: list[str] | None,
    data: dict[str, SplitInfo],
    weights: dict[str, Any],
    schedule: Schedule | None,
    bf16_wrong: list[str] | None = None,
    loaded: LoadReport | None = None,
) -> Resolved:
    """The Resolved record of a run (or of an evaluation: schedule None). ``bf16_wrong``: the
    layers engine/bf16_conv_check.py finds (CPU training only); ``loaded``: what
    ``model.checkpoint`` put into the model, with the class names it stores."""
    offset = label_offset_for(asked.data, model_defaults, asked.model.num_classes)
    for split, info in data.items():
        if info.label_min is not None:  # before step 1: every stored label must be a logit
            where = f"the {split} split ({info.location})"
            check_labels(info.label_min, info.label_max, num_classes, offset, where)
    # an evaluation record (no schedule) does not resolve the training precision: a checkpoint
    # trained in fp16 on a GPU evaluates on a CPU, where fp16 autocast does not exist
    pre = preprocess_for(asked.data, model_defaults)
    train = note = None
    if schedule:
        _check_kept_head(classes, asked.data.class_order, data, weights, loaded)
        if "train" in data and "val" in data:
            check_held_out(data["train"], data["val"], asked.data)
        check_optimizer(asked.optim, schedule.lr)
        dtype, note = train_amp(asked.train.amp, device, bf16_wrong or [], pre.image_size)
        train = precision_name(dtype)
    final = precision_name(resolve_amp(asked.eval.amp, device))
    return Resolved(
        model=asked.model.name,
        num_classes=int(num_classes),
        label_offset=offset,
        classes=tuple(classes) if classes else None,
        device=str(device),
        world_size=world_size,
        train_precision=train,
        eval_precision=final,
        periodic_eval_precision=(train or final) if asked.eval.periodic_amp == "train" else final,
        precision_note=note,
        channels_last=or_device_default(asked.train.channels_last, device, "channels_last"),
        preprocess=pre,
        data=data,
        weights=weights,
        schedule=schedule,
        seed=asked.train.seed,
        loader=asked.data.loader,
        compile=asked.train.compile_mode
        if schedule and or_device_default(asked.train.compile, device, "compile")
        else None,
        fused_optimizer=fused_choice(asked.optim, traits(device).fused_optimizer)
        if schedule
        else None,
    )


def _check_kept_head(classes, order: str | None, data: dict[str, SplitInfo], weights, loaded):
    """Fine-tuning a loaded classifier: its logit k must be the folder it was trained on,
    by the names its checkpoint stores, else by the order the user states."""
    if not (classes and weights.get("source") and _head_kept(weights, loaded)):
        return
    if loaded is not None and loaded.classes:
        check_kept_head_classes(loaded.classes, classes, loaded.source, loaded.heads)
        return
    where = data["train"].location if "train" in data else "the training folders"
    check_order_given(classes, order, where, "the weights' classifier is kept (fine-tuned)")


def _head_kept(weights: dict, loaded) -> bool:
    """Whether a classifier of the loaded weights is kept: one of the model's heads has no key
    left at init (another layer left at init, ``model.exclude=layer4``, keeps it). A model
    that names no head: kept when nothing was left at init."""
    left = weights.get("left_at_init") or []
    heads = loaded.heads if loaded is not None else []
    if not heads:
        return not left
    return any(not any(k.startswith(h + ".") for k in left) for h in heads)


def or_device_default(value: bool | None, device: torch.device, name: str) -> bool:
    """``value`` as asked, or the device type's default from engine/devices.py when None."""
    return bool(getattr(traits(device), name)) if value is None else value
