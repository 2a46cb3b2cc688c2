"""Fashion-MNIST (Debian package ``dataset-fashion-mnist``) -> an on-disk ImageFolder.

The quickstart trains on a real dataset through the same ImageFolder path as the Gluon
ResNet50 recipe: ``train/<class>/<n>.png`` (60,000) and ``val/<class>/<n>.png`` (10,000).
"""

from __future__ import annotations

import gzip
import os
import struct
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from classzoo.errors import UserError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# Label order of Zalando's README; the index prefix keeps sorted folder order == label order.
CLASSES = [
    "0_tshirt_top",
    "1_trouser",
    "2_pullover",
    "3_dress",
    "4_coat",
    "5_sandal",
    "6_shirt",
    "7_sneaker",
    "8_bag",
    "9_ankle_boot",
]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or plain): magic 0x0000 0x08 <ndim>, big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (bad magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    start = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - start != expected:
        raise UserError(
            f"{path}: header says {expected} bytes of data, file has {len(data) - start}"
        )
    return np.frombuffer(data, np.uint8, offset=start).reshape(dims)


def locate(source: Path | None) -> Path:
    folder = Path(source) if source is not None else DEBIAN_DIR
    missing = [
        n
        for imgs, labels, _ in FILES.values()
        for n in (imgs, labels)
        if not (folder / n).is_file()
    ]
    if missing:
        raise UserError(
            f"Fashion-MNIST not found in {folder} (missing {missing[0]}): install it with "
            "`sudo apt-get install dataset-fashion-mnist`, or pass --data-dir DIR holding the four "
            "*-ubyte.gz files"
        )
    return folder


def _write_chunk(args: tuple[Path, np.ndarray, np.ndarray, int]) -> None:
    out, images, labels, start = args
    for i, (img, label) in enumerate(zip(images, labels)):
        Image.fromarray(img, mode="L").save(
            out / CLASSES[label] / f"{start + i:05d}.png", compress_level=1
        )


def export_imagefolder(source: Path | None, out: Path, workers: int = 2) -> Path:
    """Write the ImageFolder once; a ``.complete`` marker makes later calls free."""
    folder = locate(source)
    marker = out / ".complete"
    if marker.is_file():
        return out
    jobs = []
    for split, (img_name, label_name, count) in FILES.items():
        images, labels = read_idx(folder / img_name), read_idx(folder / label_name)
        if len(images) != count or len(labels) != count or images.shape[1:] != (28, 28):
            raise UserError(
                f"{folder / img_name}: expected {count} images of 28x28, found {images.shape}"
            )
        if labels.max() >= len(CLASSES):
            raise UserError(f"{folder / label_name}: label {labels.max()} outside 0..9")
        for name in CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        step = 5000
        jobs += [
            (out / split, images[s : s + step], labels[s : s + step], s)
            for s in range(0, count, step)
        ]
    with ProcessPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
        list(pool.map(_write_chunk, jobs))
    marker.write_text("fashion-mnist 60000 train / 10000 val\n")
    return out
