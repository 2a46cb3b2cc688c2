"""Images of one ImageFolder split that are another split's files: hard links to them, or
symbolic links (of the file, or of a class folder above it) that resolve into the other split.

A val split made as ``cp -al train/n01440764/x.JPEG val/...`` or ``ln -s ../train/n01 val/n01``
is a folder of its own, so comparing the two roots does not see it (engine/held_out.py does
that first). Cost: one walk of the smaller split (``count``: the splits' image counts) and one
``stat`` per image of it, to read the file's link count. Only where some of its images have
other hard links is the larger split walked and stat-ed too: a file in both splits has at least
2 links in each. Copies (other files with the same bytes) are not found: that takes reading
every image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from classzoo.data.imagefolder import IMG_EXTENSIONS


def shared_images(train_root: str, val_root: str, n_train: int, n_val: int) -> list[str]:
    """Paths under ``val_root`` or ``train_root`` (under the smaller split) that are the other
    split's images; [] when none."""
    small, big = (val_root, train_root) if n_val <= n_train else (train_root, val_root)
    big_real = os.path.realpath(big) + os.sep
    shared, multi = [], {}
    for entry, real in _images(small):
        if real.startswith(big_real) and not real[len(big_real) :].startswith("."):
            shared.append(entry.path)  # a symbolic link into the other split's class folders
            continue
        st = entry.stat()  # follows a link: the file itself
        if st.st_nlink > 1:
            multi[(st.st_dev, st.st_ino)] = entry.path
    if multi:
        for entry, _ in _images(big):
            st = entry.stat()
            if st.st_nlink > 1 and (st.st_dev, st.st_ino) in multi:
                shared.append(multi.pop((st.st_dev, st.st_ino)))
    small_real = os.path.realpath(small) + os.sep
    for entry in os.scandir(big):  # a class folder of the larger split linked into the smaller
        if entry.is_symlink() and os.path.realpath(entry.path).startswith(small_real):
            shared.append(entry.path)
    return shared


def _images(root: str) -> Iterator[tuple[os.DirEntry, str]]:
    """Image files in the class folders under ``root`` (links followed, as the ImageFolder scan
    follows them) with each one's real path; a folder reached twice is walked once."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        top = stack.pop()
        real_top = os.path.realpath(top)
        if real_top in seen:
            continue
        seen.add(real_top)
        for entry in os.scandir(top):
            if entry.is_dir():
                if top != root or not entry.name.startswith("."):  # not a class (imagefolder.py)
                    stack.append(entry.path)
            elif top == root:
                continue  # a file beside the class folders is not read as an image
            elif entry.name.lower().endswith(IMG_EXTENSIONS) and entry.is_file():
                link = entry.is_symlink()
                real = os.path.realpath(entry.path) if link else os.path.join(real_top, entry.name)
                yield entry, real
