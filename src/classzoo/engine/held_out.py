"""The val split must be held out from the train split: a ``train_and_evaluate`` run that reads
the same files for both scores its own training images and calls the number "val".

That happened without a word in two layouts a user meets: a folder of arbitrarily named TFRecord
shards (every file is read for every split: data/tfrecord_shards.py rule 4) and an ImageFolder
whose ``val`` is a link to ``train``. Neither timm nor torchvision checks this. A user who asks
for it in so many words (``data.train_pattern`` and ``data.val_pattern`` that share files, or
``data.val_split`` equal to ``data.train_split``) gets it; the log's ``val:`` line names the
files either way. Not detected: copies (hard links, class folders linked one by one).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from classzoo.config import DataConfig
from classzoo.errors import UserError

if TYPE_CHECKING:  # engine/resolve.py calls this module
    from classzoo.engine.resolve import SplitInfo


def check_held_out(train: SplitInfo, val: SplitInfo, data: DataConfig) -> None:
    """Refuse (one line) a val split that reads the train split's files, unless asked for."""
    if train.source != val.source or train.source == "synthetic":
        return
    if train.source == "tfrecord":
        ours = {os.path.realpath(f) for f in train.files}
        shared = [f for f in val.files if os.path.realpath(f) in ours]
        if not shared:
            return
        what = f"the val split reads {len(shared)} of the train split's {len(ours)} files"
        what += f" ({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''})"
        asked = data.val_pattern is not None and data.train_pattern is not None
        fix = "name the shards train-* and validation-*, or set data.val_pattern to the "
        fix += "held-out files (and data.train_pattern to the others)"
    else:
        if os.path.realpath(train.location) != os.path.realpath(val.location):
            return
        what = f"the val split {val.location} is the train split's folder {train.location}"
        asked = data.val_split == data.train_split
        fix = "point data.val_split at a folder of held-out images"
    if not asked:
        raise UserError(f"{what}: the run would score its own training images as val; {fix}")
