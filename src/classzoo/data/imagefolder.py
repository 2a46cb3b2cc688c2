"""ImageFolder datasets (``split/<class>/<image>``) that fail with the file's name, not a traceback."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classzoo.data import decode
from classzoo.data.class_index import unicode_note
from classzoo.errors import UserError

log = logging.getLogger("classzoo")

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def scan_imagefolder(
    root: Path, ignored: Counter | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """Classes (sorted folder names), file paths and integer labels, in a deterministic order;
    ``ignored`` counts the files left out, by kind (see :func:`images_under`)."""
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist")
    folders = [e.name for e in os.scandir(root) if e.is_dir()]
    classes = sorted(f for f in folders if not f.startswith("."))
    for hidden in sorted(f for f in folders if f.startswith(".")):  # .ipynb_checkpoints, .d
        n = len(images_under(str(root / hidden)))
        if n and ignored is not None:  # timm's ImageDataset would read them as a class
            ignored[
                (f"image{'s' if n > 1 else ''} in the hidden folder {hidden}", "not a class")
            ] += n
    if not classes:
        raise UserError(
            f"data folder {root} has no class folders (expected {root}/<class>/<image>)"
        )
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        names = images_under(str(folder), ignored)
        if not names:
            raise UserError(f"class folder {folder} holds no images ({', '.join(IMG_EXTENSIONS)})")
        files.extend(names)
        labels.extend([label] * len(names))
    return classes, files, np.asarray(labels, dtype=np.int64)


def images_under(folder: str, ignored: Counter | None = None) -> list[str]:
    """Image files anywhere under a class folder, in torchvision's order (``sorted(os.walk(
    folder, followlinks=True))``, then sorted names): its ImageFolder walks class folders
    recursively. A broken symbolic link is a UserError here, not a failure mid-epoch.

    Left out, and counted in ``ignored`` by kind: files without one of torchvision's image
    extensions (hidden ones, such as .DS_Store, are not counted), and macOS's AppleDouble
    files (``._name.jpg``: metadata a copy from a Mac leaves beside each file; torchvision
    lists them as images and then fails to decode them mid-epoch)."""
    found: list[tuple[str, list[str]]] = []
    for top, _, entries in folders_once(folder):
        names = []
        for e in entries:
            if e.is_dir():
                continue
            if e.name.lower().endswith(IMG_EXTENSIONS):
                if not e.is_file():
                    raise UserError(f"image {e.path} is a broken link or not a regular file")
                if e.name.startswith("._") and _apple_double(e.path):
                    _count(ignored, "._* files", "macOS AppleDouble metadata, not images")
                    continue
                names.append(e.name)
            elif not e.name.startswith("."):
                kind = f"*{os.path.splitext(e.name)[1].lower()}" if "." in e.name else e.name
                _count(ignored, f"{kind} files", "not one of torchvision's image extensions")
        found.append((top, sorted(names)))
    return [os.path.join(top, n) for top, names in sorted(found) for n in names]


def folders_once(folder: str) -> Iterator[tuple[str, str, list[os.DirEntry]]]:
    """Each folder under ``folder`` once, with its real path and its entries: links to folders
    are followed (as ``os.walk(followlinks=True)``), and one back up the tree would otherwise
    be walked for ever."""
    seen: set[str] = set()
    stack = [folder]
    while stack:
        top = stack.pop()
        real = os.path.realpath(top)
        if real in seen:
            continue
        seen.add(real)
        entries = list(os.scandir(top))
        yield top, real, entries
        stack.extend(e.path for e in entries if e.is_dir())  # is_dir follows links


def _apple_double(path: str) -> bool:
    """Whether the file starts with AppleDouble's magic number 0x00051607 (RFC 1740)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x00\x05\x16\x07"
    except OSError:
        return False


def _count(ignored: Counter | None, kind: str, why: str) -> None:
    if ignored is not None:
        ignored[(kind, why)] += 1


def left_out_target(index: int) -> int:
    """The target of item ``index`` when its image is unreadable and the dataset leaves it
    out of the metrics: negative, and ``-1 - target`` names the item (its file), even when a
    DataLoader worker loaded it (engine/evaluate.py masks targets < 0)."""
    return -1 - index


def load_rgb(path: str, decoder: str = "pil"):
    """Decode one file to RGB (PIL image, or an HWC uint8 array for the TF decoder)."""
    return decode.decoder(decoder)(decode.read_file(path), path)


class ImageFolderDataset(torch.utils.data.Dataset):
    """``root/<class>/<image>``; labels follow the sorted class-folder names (torchvision's rule).

    A transform with ``accepts_encoded`` (a pipeline's ``sample``) gets the file's bytes undecoded
    (:class:`~classzoo.data.decode.EncodedImage`) and decodes them at the scale its crop needs;
    any other transform gets the decoded RGB image (``decoder``: "pil", or "tf" for TF's pixels).

    ``skip_corrupt``: an unreadable image is logged and replaced by the next readable one
    (so a batch keeps its size); otherwise it is a UserError naming the file. With
    ``leave_out_unreadable`` (evaluation) that neighbour comes with the target
    :func:`left_out_target` instead of its own label, so it is scored once, not twice, and the
    unreadable image is left out of the metrics (engine/evaluate.py).
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        skip_corrupt: bool = False,
        classes: list[str] | None = None,
        leave_out_unreadable: bool = False,
    ) -> None:
        self.root = Path(root)
        left_out: Counter = Counter()
        found, self.files, self.targets = scan_imagefolder(self.root, left_out)
        # (what, why) pairs for the record's "not used" lines, as TFRecord folders list theirs
        self.ignored = tuple((f"{n} {kind}", why) for (kind, why), n in sorted(left_out.items()))
        if classes is not None and found != sorted(classes):
            extra = sorted(set(found) - set(classes))
            lacking = sorted(set(classes) - set(found))
            raise UserError(
                f"class folders of {self.root} differ from the training classes"
                f" (extra: {extra[:5]}, missing: {lacking[:5]}){unicode_note(extra, lacking)}"
            )
        self.classes = found
        self.positions = self.targets  # each image's folder position (targets until relabel)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.leave_out_unreadable = leave_out_unreadable
        self.decoder = "pil"  # "tf" for the slim presets (set with the transform)

    def relabel(self, index: dict[str, int]) -> None:
        """Label each class folder's images ``index[folder]`` instead of its sorted position
        (data/class_index.py: a trained model's logits, matched by name)."""
        logit = np.asarray([index[name] for name in self.classes], dtype=np.int64)
        self.targets = logit[self.positions]

    def __len__(self) -> int:
        return len(self.files)

    def name_of(self, index: int) -> str:
        """The file of item ``index`` (for messages)."""
        return self.files[index]

    def _load(self, path: str):
        if getattr(self.transform, "accepts_encoded", False):
            return self.transform(decode.EncodedImage(decode.read_file(path), path))
        img = load_rgb(path, self.decoder)
        return self.transform(img) if self.transform is not None else img

    def __getitem__(self, index: int):
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            try:
                sample = self._load(self.files[i])
            except decode.UnreadableImage as exc:
                if not self.skip_corrupt:
                    raise decode.UnreadableImage(f"{exc}{decode.SKIP_HINT}", exc.cause) from None
                log.warning("skipped: %s", exc)
                continue
            if attempt and self.leave_out_unreadable:  # the neighbour only fills the batch
                return sample, left_out_target(index)
            return sample, int(self.targets[i])
        raise UserError(f"no readable image in {self.root}")


class SyntheticDataset(torch.utils.data.Dataset):
    """Deterministic random images for smoke runs and throughput benchmarks (no files)."""

    def __init__(
        self, size: int, num_classes: int, image_size: int, transform: Callable | None = None
    ):
        self.size, self.num_classes, self.image_size = size, num_classes, image_size
        self.classes = [str(i) for i in range(num_classes)]
        self.targets = np.arange(size, dtype=np.int64) % num_classes
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        g = torch.Generator().manual_seed(index)
        side = self.image_size + self.image_size // 7  # room for a centre crop
        pixels = torch.randint(0, 256, (side, side, 3), generator=g, dtype=torch.uint8)
        img = Image.fromarray(pixels.numpy())
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])
