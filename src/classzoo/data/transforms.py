"""Preprocessing presets: timm's transforms, or TF-slim's ``vgg`` / ``inception`` reproduced exactly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from timm.data import create_transform
from torchvision import transforms as T

from classzoo.errors import UserError


@dataclass(frozen=True)
class EvalPreprocess:
    """What every eval transform needs; resolved once from the model's defaults and the recipe."""

    preset: str
    image_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


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


def build_transform(pre: EvalPreprocess, train: bool, aug: TrainAugment | None = None) -> Callable:
    """The transform of one split: PIL RGB image -> float CHW tensor."""
    if pre.preset in ("vgg", "inception"):
        from classzoo.data.tf_preprocessing import build_tf_transform

        return build_tf_transform(
            pre.preset, train=train, image_size=pre.image_size, crop_pct=pre.crop_pct
        )
    if pre.preset != "timm":
        raise UserError(
            f"unknown preprocessing preset '{pre.preset}' (allowed: timm, vgg, inception)"
        )
    if not train:
        return create_transform(
            pre.image_size,
            is_training=False,
            interpolation=pre.interpolation,
            mean=pre.mean,
            std=pre.std,
            crop_pct=pre.crop_pct,
        )
    aug = aug or TrainAugment()
    if aug.train_crop == "none":
        # Small, already-centred images (the quickstart's 28 px Fashion-MNIST): no random crop.
        ops: list = [
            T.Resize(pre.image_size, interpolation=_interp(aug.interpolation or pre.interpolation))
        ]
        if aug.hflip > 0:
            ops.append(T.RandomHorizontalFlip(aug.hflip))
        ops += [T.ToTensor(), T.Normalize(pre.mean, pre.std)]
        return T.Compose(ops)
    return create_transform(
        pre.image_size,
        is_training=True,
        scale=tuple(aug.scale),
        ratio=tuple(aug.ratio),
        hflip=aug.hflip,
        color_jitter=aug.color_jitter or None,
        auto_augment=aug.auto_augment,
        re_prob=aug.re_prob,
        interpolation=aug.interpolation or pre.interpolation,
        mean=pre.mean,
        std=pre.std,
    )


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
