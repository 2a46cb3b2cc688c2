"""The run's objects, built from the asked config's sections and resolved values.

Order matters and is the same everywhere (train, evaluate, eval, predict, export): the model's
preprocessing defaults are read without building it (timm: a meta-device build), so the
datasets are opened with their final transform; then the head size follows from the data, and
the model is built once, seeded, with its weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from timm.utils.misc import natural_key
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from classzoo.config import DataConfig, ModelConfig
from classzoo.data.class_index import ORDERS, match_class_folders
from classzoo.data.datasets import build_dataset
from classzoo.data.sampling import EvalBatchSampler, SeededDataset, TrainBatchSampler
from classzoo.data.transforms import EvalPreprocess, TrainAugment, build_transform
from classzoo.engine.distributed import DistEnv
from classzoo.engine.resolve import Preprocess, SplitInfo
from classzoo.engine.stop import worker_ignore_signals
from classzoo.engine.threads import available_cores
from classzoo.errors import UserError
from classzoo.models import registry
from classzoo.models.weights import LoadReport, load_checkpoint

log = logging.getLogger("classzoo")


def model_defaults(name: str, kwargs: dict[str, Any], test_size: bool = False) -> dict[str, Any]:
    """Preprocessing defaults (input_size, crop_pct, interpolation, mean, std, preset,
    label_offset) without building the real model: timm reads them from a meta-device build.
    ``test_size``: timm's evaluation size where the model's cfg has one (validate.py's)."""
    registry.check_name(name)
    if name in registry.registry():
        return registry.data_defaults(name, None)
    with torch.device("meta"):
        meta = registry.build(name, None, **kwargs)
    return registry.data_defaults(name, meta, test_size)


def transform_preprocess(p: Preprocess) -> EvalPreprocess:
    return EvalPreprocess(
        p.preset, p.image_size, p.crop_pct, p.interpolation, p.mean, p.std, p.crop_mode
    )


def train_augment(data: DataConfig) -> TrainAugment:
    return TrainAugment(
        interpolation=data.train_interpolation,
        train_crop=data.train_crop,
        scale=tuple(data.scale),
        ratio=tuple(data.ratio),
        hflip=data.hflip,
        color_jitter=data.color_jitter,
        auto_augment=data.auto_augment,
        re_prob=data.re_prob,
    )


@dataclass
class Split:
    dataset: torch.utils.data.Dataset  # items: (what the pipeline's per-image stage returns, label)
    info: SplitInfo
    classes: list[str] | None
    batch: Callable[[Any], torch.Tensor]  # collated samples on the device -> model input


def open_split(
    data: DataConfig,
    split: str,
    pre: Preprocess,
    train: bool,
    label_offset: int,
    synthetic_classes: int,
    classes: list[str] | None = None,
) -> Split:
    """One split with its final transform, and what was found: files, counts, label range."""
    if data.source != "tfrecord" and data.label_offset not in (None, 0):
        raise UserError(
            f"data.label_offset={data.label_offset} applies to TFRecord labels only; "
            f"{data.source} labels are the class folders' order (0..N-1)"
        )
    # workers run the per-image stage; the loop runs the batch stage on the device
    pipeline = build_transform(
        transform_preprocess(pre), train=train, aug=train_augment(data) if train else None
    )
    ds = build_dataset(
        data, split, pipeline.sample, synthetic_classes, label_offset, pre.image_size, classes
    )
    ds.decoder = pre.decoder  # TF's JPEG pixels for the slim presets
    ds.leave_out_unreadable = not train  # eval: an unreadable image is left out (evaluate.py)
    if data.source == "tfrecord":
        lo, hi = ds.label_range()
        info = SplitInfo(
            "tfrecord",
            data.dir or "",
            len(ds),
            tuple(str(s) for s in ds.shards),
            tuple((str(f), why) for f, why in ds.ignored),
            int(lo),
            int(hi),
            ds.distinct_labels(),
        )
        return Split(ds, info, None, pipeline.batch)
    # class names come from ImageFolder folders; synthetic data keeps the model's own head
    found = ds.classes if data.source == "imagefolder" else None
    location = str(Path(data.dir) / split) if found else "synthetic"
    n = len(found) if found else synthetic_classes
    by = ORDERS[data.class_order or "sorted"] if found else None
    if found and data.class_order == "natural":  # timm's ImageDataset order: 2 before 10
        found = sorted(found, key=natural_key)
        ds.relabel({name: i for i, name in enumerate(found)})
    ignored = getattr(ds, "ignored", ())  # an ImageFolder's files left out, by kind
    info = SplitInfo(data.source, location, len(ds), (), ignored, 0, n - 1, labels_by=by)
    return Split(ds, info, found, pipeline.batch)


def labelled_by_logit(
    split: Split, num_logits: int, stored: Sequence[str] | None, order: str | None = None
) -> tuple[Split, tuple[str, ...]]:
    """The split's images labelled with the logit of their class, matched by name
    (data/class_index.py; ``order``: data.class_order), and the names of the logits."""
    match = match_class_folders(split.classes, num_logits, stored, split.info.location, order)
    split.dataset.relabel(match.index)
    labels = list(match.index.values())
    info = replace(split.info, label_min=min(labels), label_max=max(labels), labels_by=match.rule)
    return Split(split.dataset, info, split.classes, split.batch), match.logit_names


def imagenet_labelled(
    train: Split | None, val: Split | None, num_logits: int
) -> tuple[Split | None, Split | None, list[str]]:
    """Train / val splits whose class folders are ImageNet synsets, labelled with ImageNet's logit
    of each under a 1000- or 1001-logit head (data/class_index.py rule 2), and the logits' names:
    a subset of the synsets fine-tunes a pretrained head in place, and slim's 1001 logits keep
    background at 0 (folder order would score every synset one logit off)."""
    out, names = [], ()
    for split in (train, val):
        if split is not None:
            split, names = labelled_by_logit(split, num_logits, None)
        out.append(split)
    return out[0], out[1], list(names)


def build_model(
    model: ModelConfig, num_classes: int | None, image_size: int, seed: int
) -> tuple[nn.Module, dict[str, Any]]:
    """The model, seeded (a head left at init is the same on every run), with its weights.

    Returns the model and the weights report recorded in resolved.yaml.
    """
    kwargs = dict(model.kwargs)
    if model.drop_rate is not None:
        kwargs["drop_rate"] = model.drop_rate
    if model.drop_path_rate is not None:
        kwargs["drop_path_rate"] = model.drop_path_rate
    entry = registry.registry().get(model.name)
    if entry is not None and entry.defaults.get("takes_img_size") and "img_size" not in kwargs:
        kwargs["img_size"] = image_size  # slim inception_v4 sizes its aux head by the input
    if model.pretrained:
        kwargs["pretrained"] = True
    torch.manual_seed(seed)
    net = registry.build(model.name, num_classes, **kwargs)
    if model.checkpoint is None:
        if not model.pretrained:
            return net, {"source": None, "init": "random init"}
        return net, {"source": None, "init": "timm pretrained weights", **_pretrained(net)}
    report = load_checkpoint(net, model.name, model.checkpoint, exclude=model.exclude)
    return net, weights_report(report)


def _pretrained(net: nn.Module) -> dict[str, Any]:
    """Which timm weights were loaded and what timm's ``load_pretrained`` left at init: the
    classifier(s) of ``pretrained_cfg['classifier']`` when the class count is another."""
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    heads = cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    other = cfg.get("num_classes") not in (None, getattr(net, "num_classes", None))
    left = [k for k in net.state_dict() if other and any(k.startswith(h + ".") for h in heads)]
    return {"pretrained": cfg.get("file") or cfg.get("hf_hub_id"), "left_at_init": left}


def weights_report(report: LoadReport) -> dict[str, Any]:
    """The load report as plain values for the Resolved record."""
    return {
        "source": report.source,
        "format": report.format,
        "loaded": len(report.loaded),
        "left_at_init": list(report.left_at_init),
        "excluded": list(report.excluded),
    }


def training_network(model: nn.Module, env: DistEnv, compile_mode: str | None) -> nn.Module:
    """What the loop calls: the model, in DDP over the ranks, compiled when ``compile_mode``
    (torch.compile's mode, "default" for its default) is given.

    torch.compile comes after DDP (timm's train.py does the same), so the DDP optimizer splits
    the graph at the gradient buckets and the all-reduce overlaps the backward. Checkpoints and
    evaluation use the plain ``model``: its state_dict keys carry no ``_orig_mod.`` prefix.
    """
    net = model
    if env.distributed:
        net = DDP(net, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    if compile_mode is not None:
        log.info("torch.compile (mode %s): the first steps compile the network", compile_mode)
        net = torch.compile(net, mode=None if compile_mode == "default" else compile_mode)
    return net


def _loader(dataset, batch_sampler, num_workers: int, device: torch.device, persistent: bool):
    return torch.utils.data.DataLoader(
        SeededDataset(dataset),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and num_workers > 0,
        worker_init_fn=worker_ignore_signals,  # the main process owns a graceful stop
        # A private generator: creating an iterator must not draw from the global RNG, which
        # drives dropout and must be the same in a resumed run as in an uninterrupted one.
        generator=torch.Generator(),
    )


def check_loader(dataset, loader: str) -> None:
    """Refuse (one line) a training loader that cannot serve ``dataset`` as the torch path."""
    if loader == "dali":
        from classzoo.data.dali_loader import check_supported

        check_supported(dataset)


def train_loader(
    dataset, batch_size: int, num_workers: int, env: DistEnv, seed: int, loader: str = "torch"
):
    """(loader, sampler): DataLoader workers, or DALI with ``num_workers`` threads; both in
    the sampler's order and giving the same samples to the pipeline's batch stage."""
    sampler = TrainBatchSampler(len(dataset), batch_size, env.rank, env.world_size, seed)
    if loader == "dali":
        from classzoo.data.dali_loader import dali_train_loader

        return dali_train_loader(dataset, sampler, env.device, max(1, num_workers)), sampler
    return _loader(dataset, sampler, num_workers, env.device, persistent=True), sampler


def eval_loader(dataset, batch_size: int, num_workers: int, env: DistEnv):
    """Every image once, in order. At most one worker per CPU this process may use: more only
    wait their turn, and torch warns about them in three lines (an 8-worker recipe evaluated
    on a laptop); the numbers do not depend on the count (per-sample seeds, ordered batches)."""
    workers = min(num_workers, available_cores())
    if workers < num_workers and env.is_main:
        log.info("evaluation: %d loader workers (data.num_workers %d; %d CPUs)", workers,
                 num_workers, workers)  # fmt: skip
    sampler = EvalBatchSampler(len(dataset), batch_size, env.rank, env.world_size)
    return _loader(dataset, sampler, workers, env.device, persistent=False)
