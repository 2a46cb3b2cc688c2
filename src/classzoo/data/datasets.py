"""Build the train / eval datasets of a run from the data section of its config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from classzoo.config import DataConfig
from classzoo.data.imagefolder import ImageFolderDataset, SyntheticDataset
from classzoo.errors import UserError


def _split_dir(root: Path, split: str) -> Path:
    if root.is_file():
        raise UserError(f"data directory {root} is a file: an ImageFolder is <dir>/<class>/<image>")
    path = root / split
    if not path.is_dir():
        raise UserError(
            f"data folder {root} has no '{split}' split (expected {path}/<class>/<image>)"
        )
    return path


def build_dataset(
    cfg: DataConfig,
    split: str,
    transform: Callable,
    num_classes: int,
    label_offset: int,
    image_size: int = 224,
    classes: list[str] | None = None,
) -> torch.utils.data.Dataset:
    """One split of the configured source; ``split`` is a folder / shard-name prefix."""
    if cfg.source == "synthetic":
        return SyntheticDataset(cfg.synthetic_size, num_classes, image_size, transform)
    if cfg.dir is None:
        raise UserError("no data directory: pass --data-dir or set data.dir")
    root = Path(cfg.dir).expanduser()
    if not root.exists():
        raise UserError(f"data directory {root} does not exist")
    if cfg.source == "imagefolder":
        return ImageFolderDataset(
            _split_dir(root, split), transform, skip_corrupt=cfg.skip_corrupt, classes=classes
        )
    return _tfrecord_dataset(cfg, split, transform, label_offset)


def _tfrecord_dataset(cfg: DataConfig, split: str, transform, label_offset: int):
    """The shards of ``split`` (data.train_pattern / data.val_pattern choose them when the
    names do not), with the configured feature keys. ``ds.selection`` / ``ds.ignored`` say
    which files were used and why the others were not (for the resolved record)."""
    from classzoo.data.tfrecord_dataset import TFRecordImageDataset
    from classzoo.data.tfrecord_shards import select_shards

    if split == cfg.train_split:
        pattern, key = cfg.train_pattern, "data.train_pattern"
    else:
        pattern, key = cfg.val_pattern, "data.val_pattern"
    selection = select_shards(str(Path(cfg.dir).expanduser()), split, pattern, key=key)
    ds = TFRecordImageDataset(
        selection.files,
        transform=transform,
        label_offset=label_offset,
        skip_corrupt=cfg.skip_corrupt,
        image_key=cfg.image_key,
        label_key=cfg.label_key,
    )
    ds.selection, ds.ignored = selection, selection.ignored
    return ds
