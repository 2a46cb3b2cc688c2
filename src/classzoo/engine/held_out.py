"""The val split must be held out from the train split: a ``train_and_evaluate`` run that reads
the same files for both scores its own training images and calls the number "val".

That happened without a word in two layouts a user meets: a folder of arbitrarily named TFRecord
shards (every file is read for every split: data/tfrecord_shards.py rule 4) and an ImageFolder
whose ``val`` is a link to ``train``. Neither timm nor torchvision checks this. A user who asks
for it in so many words (``data.train_pattern`` and ``data.val_pattern`` that share files, or
``data.val_split`` equal to ``data.train_split``) gets it; the log's ``val:`` line names the
files either way. An ImageFolder val split whose images are links to train's (hard links, or
class folders or files linked one by one) is refused too (data/linked_images.py). Not
detected: copies of the files.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from classzoo.config import DataConfig
from classzoo.data.linked_images import shared_images
from classzoo.errors import UserError

if TYPE_CHECKING:  # engine/resolve.py calls this module
    from classzoo.engine.resolve import SplitInfo


def check_held_out(train: SplitInfo, val: SplitInfo, data: DataConfig) -> None:
    """Refuse (one line) a val split that reads the train split's files, unless asked for."""
    if train.source != val.source or train.source == "synthetic":
        return
    if train.source == "tfrecord":
        ours = {_file_id(f) for f in train.files}  # a hard-linked shard too, not only a link
        shared = [f for f in val.files if _file_id(f) in ours]
        if not shared:
            return
        what = f"the val split reads {len(shared)} of the train split's {len(ours)} files"
        what += f" ({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''})"
        asked = data.val_pattern is not None and data.train_pattern is not None
        fix = "name the shards train-* and validation-*, or set data.val_pattern to the "
        fix += "held-out files (and data.train_pattern to the others)"
    elif os.path.realpath(train.location) == os.path.realpath(val.location):
        what = f"the val split {val.location} is the train split's folder {train.location}"
        asked = data.val_split == data.train_split
        fix = "point data.val_split at a folder of held-out images"
    else:
        shared = shared_images(train.location, val.location, train.count, val.count)
        if not shared:
            return
        what = f"the val split {val.location} and the train split {train.location} share "
        what += f"{len(shared)} image{'s' if len(shared) > 1 else ''} or class folder"
        what += f"{'s' if len(shared) > 1 else ''} (hard or symbolic links: "
        what += f"{', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''})"
        asked = False  # only data.val_split equal to data.train_split asks for it
        fix = "remove those images from one of the two splits"
    if not asked:
        raise UserError(f"{what}: the run would score its own training images as val; {fix}")


def _file_id(path: str) -> tuple[int, int]:
    """The file behind ``path``, whatever links lead to it: (device, inode)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino
