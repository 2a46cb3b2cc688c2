"""Preprocessing presets as two-stage pipelines: timm's transforms, or TF-slim's ``vgg`` /
``inception`` reproduced exactly.

``build_transform`` returns a :class:`Pipeline`: ``sample`` runs per image in a DataLoader worker
(decode at the scale the crop needs, crop, resize, flip; it draws every random number, from the
generators SeededDataset seeds per sample) and ``batch`` runs on the collated batch once it is on
the device (``to_device``): conversion, normalisation and colour ops, vectorised, deterministic
given the batch and the per-sample parameters the worker drew. Calling the pipeline on one image
does both (the single-image API of predict and older call sites).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from timm.data import create_transform
from torchvision import transforms as T

from classzoo.data.device import to_device
from classzoo.data.timm_pipeline import FloatStage, PilStage, TimmTrain
from classzoo.errors import UserError

__all__ = [
    "EvalPreprocess",
    "Pipeline",
    "Stage",
    "TrainAugment",
    "as_tuple",
    "build_transform",
    "describe",
    "to_device",
]


@dataclass(frozen=True)
class EvalPreprocess:
    """What every eval transform needs; resolved once from the model's defaults and the recipe."""

    preset: str
    image_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # timm's eval crop (transforms_imagenet_eval): center (resize the short side, centre crop),
    # squash (resize both sides, then crop) or border (keep the ratio, pad); the model's cfg's
    crop_mode: str = "center"


@dataclass(frozen=True)
class TrainAugment:
    """timm train augmentation (preset ``timm`` only); slim presets have their own fixed recipes."""

    interpolation: str | None = None  # None -> the eval interpolation; "random" as timm's train.py
    train_crop: str = "rrc"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str | None = None
    re_prob: float = 0.0


class Stage:
    """``Pipeline.sample``: a per-image function that also takes an undecoded
    :class:`~classzoo.data.decode.EncodedImage` (datasets check ``accepts_encoded`` and then
    leave the decoding, at the scale the crop needs, to the pipeline)."""

    accepts_encoded = True

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, img: Any) -> Any:
        return self.fn(img)

    def __repr__(self) -> str:
        return f"Stage({self.fn!r})"


@dataclass(frozen=True)
class Pipeline:
    """``sample``: image -> what a worker returns (a uint8 or float32 HWC tensor, or a dict of
    the image and its per-sample parameters: ``"image"`` HWC, or ``"image_chw"`` planar CHW
    for slim inception training, whose colour ops read whole planes); ``batch``: the collated
    samples, on the device -> float NCHW model input (channels_last memory when the samples
    were HWC, and on a CPU for every training preset but timm's random erasing). ``batch``
    may write over the collated tensors it is given (slim inception training on a CPU does:
    no batch-sized temporaries); callers pass each collated batch once."""

    sample: Callable[[Any], Any]
    batch: Callable[[Any], torch.Tensor]

    @property
    def accepts_encoded(self) -> bool:
        return bool(getattr(self.sample, "accepts_encoded", False))

    def __call__(self, img: Any) -> torch.Tensor:
        """One image -> CHW float32 (sample, then batch of one)."""
        s = self.sample(img)
        one = {k: v[None] for k, v in s.items()} if isinstance(s, dict) else s[None]
        return self.batch(one)[0].contiguous()


def _pipeline(stage: Any) -> Pipeline:
    return Pipeline(Stage(stage.sample), stage.batch)


def build_transform(pre: EvalPreprocess, train: bool, aug: TrainAugment | None = None) -> Pipeline:
    """The pipeline of one split (see the module docstring)."""
    if pre.preset in ("vgg", "inception"):
        from classzoo.data.tf_presets import build_tf_transform

        return _pipeline(
            build_tf_transform(
                pre.preset, train=train, image_size=pre.image_size, crop_pct=pre.crop_pct
            )
        )
    if pre.preset != "timm":
        raise UserError(
            f"unknown preprocessing preset '{pre.preset}' (allowed: timm, vgg, inception)"
        )
    if not train:
        ops = create_transform(
            pre.image_size,
            is_training=False,
            interpolation=pre.interpolation,
            mean=pre.mean,
            std=pre.std,
            crop_pct=pre.crop_pct,
            crop_mode=pre.crop_mode,
            use_prefetcher=True,
        )
        return _pipeline(PilStage(_pil_ops(ops), pre.mean, pre.std))
    return _pipeline(_timm_train(pre, aug or TrainAugment()))


def _pil_ops(compose: T.Compose) -> list:
    """timm's ``use_prefetcher`` transform without its last op, ``MaybePILToTensor``: the PIL
    ops, whose output the worker returns as HWC uint8."""
    ops = list(compose.transforms)
    if type(ops[-1]).__name__ != "MaybePILToTensor":  # timm's layout changed: fail loudly
        raise RuntimeError(f"unexpected timm transform layout: {compose}")
    return ops[:-1]


def _timm_train(pre: EvalPreprocess, aug: TrainAugment):
    interpolation = aug.interpolation or pre.interpolation
    if aug.train_crop == "none":
        # Small, already-centred images (the quickstart's 28 px Fashion-MNIST): no random crop;
        # Resize(int) sets the short side only, so the centre crop squares other shapes (a
        # batch of them could not be stacked) and leaves square images as they are
        size = pre.image_size
        ops: list = [T.Resize(size, interpolation=_interp(interpolation)), T.CenterCrop(size)]
        if aug.hflip > 0:
            ops.append(T.RandomHorizontalFlip(aug.hflip))
        return PilStage(ops, pre.mean, pre.std, "the timm preset with data.train_crop=none")
    kwargs = dict(
        scale=tuple(aug.scale),
        ratio=tuple(aug.ratio),
        hflip=aug.hflip,
        color_jitter=aug.color_jitter or None,
        auto_augment=aug.auto_augment,
        re_prob=aug.re_prob,
        interpolation=interpolation,
        mean=pre.mean,
        std=pre.std,
    )
    if aug.re_prob > 0:  # timm erases on the normalised image, per sample
        return FloatStage(_timm_policy(pre.image_size, kwargs, use_prefetcher=False))
    if aug.auto_augment:
        ops = _timm_policy(pre.image_size, kwargs, use_prefetcher=True)
        return PilStage(_pil_ops(ops), pre.mean, pre.std)
    return TimmTrain(
        pre.image_size,
        aug.scale,
        aug.ratio,
        interpolation,
        aug.hflip,
        aug.color_jitter,
        pre.mean,
        pre.std,
    )


def _timm_policy(size: int, kwargs: dict[str, Any], use_prefetcher: bool) -> T.Compose:
    """timm's train transform; a policy string timm does not parse is one line (timm asserts,
    some policies without a message)."""
    try:
        return create_transform(size, is_training=True, use_prefetcher=use_prefetcher, **kwargs)
    except (AssertionError, KeyError, ValueError) as exc:
        policy = kwargs.get("auto_augment")
        if not policy:
            raise
        raise UserError(
            f"data.auto_augment={policy!r} is not a policy timm reads ({exc or 'no reason given'})"
            "; e.g. rand-m9-mstd0.5-inc1, augmix-m5-w4-d2, original, v0"
        ) from None


def _interp(name: str) -> T.InterpolationMode:
    modes = {
        "bilinear": T.InterpolationMode.BILINEAR,
        "bicubic": T.InterpolationMode.BICUBIC,
        "nearest": T.InterpolationMode.NEAREST,
    }
    if name not in modes:
        raise UserError(f"interpolation '{name}' is not one of {', '.join(modes)}")
    return modes[name]


def as_tuple(values: Sequence[float] | None, default: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in (values if values is not None else default))


def describe(pre: EvalPreprocess) -> dict[str, Any]:
    """The pixel formula of the eval pipeline, for resolved.yaml and the ONNX metadata.

    ``steps``: exactly what ``batch`` applies, in float32, in order, to the ``sample`` output
    (HWC, after resize and crop; its units in ``sample``). ``mean`` / ``std``: the same map in
    0-255 pixel units, ``input = (x - mean) / std`` (exact for vgg, to float rounding else);
    ``scale`` / ``offset``: its affine form ``input = x * scale + offset``."""
    if pre.preset == "vgg":
        from classzoo.data.tf_presets import VGG_MEAN_RGB

        out = {
            "sample": "float32 RGB 0-255 (TF1 bilinear resize output, not rounded)",
            "formula": "x - mean",
            "steps": [["sub", list(VGG_MEAN_RGB)]],
            "mean": list(VGG_MEAN_RGB),
            "std": [1.0, 1.0, 1.0],
        }
    elif pre.preset == "inception":
        out = {
            "sample": "float32 RGB 0-1 (pixel * (1/255) before the TF1 bilinear resize)",
            "formula": "(x / 255 - 0.5) * 2, i.e. x / 127.5 - 1",
            "steps": [["sub", 0.5], ["mul", 2.0]],
            "mean": [127.5] * 3,
            "std": [127.5] * 3,
        }
    elif pre.preset == "timm":
        out = {
            "sample": "uint8 RGB 0-255",
            "formula": "(x / 255 - mean) / std",
            "steps": [["div", 255.0], ["sub", list(pre.mean)], ["div", list(pre.std)]],
            "mean": [m * 255.0 for m in pre.mean],
            "std": [s * 255.0 for s in pre.std],
        }
    else:
        raise UserError(
            f"unknown preprocessing preset '{pre.preset}' (allowed: timm, vgg, inception)"
        )
    out["scale"] = [1.0 / s for s in out["std"]]
    out["offset"] = [-m / s for m, s in zip(out["mean"], out["std"])]
    return {"preset": pre.preset, **out}
