"""Resolve a config once (model defaults, class count, preprocessing) and build the run's objects.

Every ``None`` of the config ("the model decides") is replaced here by the value used, logged,
and saved to ``config.yaml`` and the checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from classzoo.config import Config, DataConfig
from classzoo.data.datasets import build_dataset
from classzoo.data.sampling import EvalBatchSampler, SeededDataset, TrainBatchSampler
from classzoo.data.transforms import EvalPreprocess, TrainAugment, as_tuple, build_transform
from classzoo.engine.distributed import DistEnv
from classzoo.models import create_model, data_defaults
from classzoo.models.registry import registry

log = logging.getLogger("classzoo")


@dataclass
class DataBundle:
    train: torch.utils.data.Dataset | None
    val: torch.utils.data.Dataset | None
    classes: list[str] | None


def label_offset_for(cfg: Config) -> int:
    if cfg.data.label_offset is not None:
        return cfg.data.label_offset
    entry = registry().get(cfg.model.name)
    return int(entry.defaults.get("label_offset", 0)) if entry else 0


def build_datasets(cfg: Config, need_train: bool, need_val: bool) -> DataBundle:
    """Datasets without transforms yet (the transform depends on the model, built after)."""
    offset = label_offset_for(cfg)
    n_synth = cfg.model.num_classes or 10
    train = val = None
    if need_train:
        train = build_dataset(cfg.data, cfg.data.train_split, None, n_synth, offset)
    classes = getattr(train, "classes", None)
    if need_val:
        val = build_dataset(cfg.data, cfg.data.val_split, None, n_synth, offset, classes=classes)
        classes = classes or getattr(val, "classes", None)
    return DataBundle(train, val, classes)


def resolve_num_classes(cfg: Config, data: DataBundle) -> int | None:
    if cfg.model.num_classes is not None:
        return cfg.model.num_classes
    if cfg.data.source != "imagefolder" or not data.classes:
        return None  # TFRecord / synthetic: the model's own head (1000 / 1001 for slim)
    return len(data.classes)  # the class folders found by build_datasets


def build_model(cfg: Config, num_classes: int | None) -> nn.Module:
    m = cfg.model
    kwargs = dict(m.kwargs)
    if m.drop_rate is not None:
        kwargs["drop_rate"] = m.drop_rate
    if m.drop_path_rate is not None:
        kwargs["drop_path_rate"] = m.drop_path_rate
    if cfg.data.image_size is not None and "img_size" not in kwargs and _takes_img_size(m.name):
        kwargs["img_size"] = cfg.data.image_size  # e.g. slim inception_v4 sizes its aux head by it
    return create_model(
        m.name, num_classes=num_classes, checkpoint=m.checkpoint, exclude=m.exclude, **kwargs
    )


def _takes_img_size(name: str) -> bool:
    """Models whose layers depend on the input size declare it in their registry defaults."""
    entry = registry().get(name)
    return bool(entry and entry.defaults.get("takes_img_size"))


def resolve_preprocess(cfg: DataConfig, model_name: str, model: nn.Module) -> EvalPreprocess:
    d = data_defaults(model_name, model)
    pre = EvalPreprocess(
        preset=cfg.preset or d.get("preset", "timm"),
        image_size=cfg.image_size or int(d["input_size"][-1]),
        crop_pct=cfg.crop_pct if cfg.crop_pct is not None else float(d.get("crop_pct", 0.875)),
        interpolation=cfg.interpolation or d.get("interpolation", "bilinear"),
        mean=as_tuple(cfg.mean, d["mean"]),
        std=as_tuple(cfg.std, d["std"]),
    )
    return pre


def train_augment(cfg: DataConfig) -> TrainAugment:
    return TrainAugment(
        interpolation=cfg.train_interpolation,
        train_crop=cfg.train_crop,
        scale=tuple(cfg.scale),
        ratio=tuple(cfg.ratio),
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter,
        auto_augment=cfg.auto_augment,
        re_prob=cfg.re_prob,
    )


def attach_transforms(data: DataBundle, pre: EvalPreprocess, aug: TrainAugment) -> None:
    """Set each split's transform, and TF's JPEG decoder for the slim presets."""
    decoder = "tf" if pre.preset in ("vgg", "inception") else "pil"
    for ds in (data.train, data.val):
        if ds is not None and hasattr(ds, "decoder"):
            ds.decoder = decoder
    if data.train is not None:
        data.train.transform = build_transform(pre, train=True, aug=aug)
        if hasattr(data.train, "image_size"):
            data.train.image_size = pre.image_size
    if data.val is not None:
        data.val.transform = build_transform(pre, train=False)
        if hasattr(data.val, "image_size"):
            data.val.image_size = pre.image_size


def _loader(dataset, batch_sampler, num_workers: int, device: torch.device, persistent: bool):
    return torch.utils.data.DataLoader(
        SeededDataset(dataset),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and num_workers > 0,
        # A private generator: creating an iterator must not draw from the global RNG, which
        # drives dropout and must be the same in a resumed run as in an uninterrupted one.
        generator=torch.Generator(),
    )


def train_loader(dataset, cfg: DataConfig, env: DistEnv, seed: int):
    sampler = TrainBatchSampler(len(dataset), cfg.batch_size, env.rank, env.world_size, seed)
    return _loader(dataset, sampler, cfg.num_workers, env.device, persistent=True), sampler


def eval_loader(dataset, cfg: DataConfig, env: DistEnv):
    sampler = EvalBatchSampler(
        len(dataset), cfg.eval_batch_size or cfg.batch_size, env.rank, env.world_size
    )
    return _loader(dataset, sampler, cfg.num_workers, env.device, persistent=False)
