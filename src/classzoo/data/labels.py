"""The one label check (ImageFolder and TFRecord) and the class count of TFRecord data.

A model with ``num_classes`` logits trained on stored labels ``y`` uses ``y - label_offset`` as
the logit index, so every stored label must lie in ``[label_offset, label_offset +
num_classes)``. slim's ImageNet TFRecords store 1..1000 with 0 meaning background
(build_imagenet_data.py): 1000 logits need offset 1, 1001 logits (InceptionV4) offset 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from classzoo.errors import UserError


def check_labels(lo: int, hi: int, num_classes: int, label_offset: int, source: str) -> None:
    """Raise a one-line UserError unless stored labels ``lo..hi`` fit ``num_classes`` logits
    after subtracting ``label_offset``. ``source`` names where they come from (a record)."""
    if lo - label_offset >= 0 and hi - label_offset < num_classes:
        return
    bad = hi if hi - label_offset >= num_classes else lo
    hint = ""
    if label_offset == 0 and lo >= 1 and hi == num_classes:
        hint = (
            f"; these look like slim labels (1..{hi}, 0 = background): set data.label_offset 1 "
            f"with {num_classes} logits, or {num_classes + 1} logits with label_offset 0"
        )
    elif label_offset > 0 and lo == 0 and hi - label_offset == num_classes - 1:
        # 0 beside labels up to num_classes: slim's background, not 0-based labels (an offset
        # of 0 would shift every other record by one)
        hint = (
            f"; label 0 is slim's background class, which {num_classes} logits have no logit "
            f"for: set model.num_classes={num_classes + 1} (label_offset 0), or leave out the "
            "background records"
        )
    elif label_offset > 0 and lo == 0:
        hint = "; these labels start at 0: set data.label_offset 0"
    elif hi - label_offset >= num_classes:
        hint = f"; set model.num_classes to at least {hi - label_offset + 1}"
    raise UserError(
        f"label {bad} in {source} is out of range for {num_classes} logits with label_offset "
        f"{label_offset} (stored labels span {lo}..{hi}){hint}"
    )


def labels_range(labels) -> tuple[int, int]:
    """(min, max) of an array of labels (ImageFolder ``targets``); a UserError when empty."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise UserError("no labels: the dataset is empty")
    return int(labels.min()), int(labels.max())


@dataclass(frozen=True)
class ClassCount:
    """An inferred class count and the sentence that says how it was found."""

    num_classes: int
    reason: str


def infer_num_classes(lo: int, hi: int, distinct: int, label_offset: int) -> ClassCount:
    """Logits needed for stored labels ``lo..hi`` (``distinct`` different values).

    The count is ``hi - label_offset + 1``: the largest label must have a logit, whatever
    labels are absent from this split (a validation subset may lack classes, so the number
    of distinct labels can be too small; it is reported, never used).
    """
    if lo - label_offset < 0:
        raise UserError(
            f"stored labels start at {lo}, below data.label_offset {label_offset}: "
            f"set data.label_offset to {lo} or less"
        )
    n = hi - label_offset + 1
    reason = (
        f"max stored label {hi} - label_offset {label_offset} + 1 = {n} "
        f"({distinct} distinct labels present"
    )
    if distinct < n:
        reason += f"; {n - distinct} of the {n} classes have no record in this split"
    return ClassCount(n, reason + ")")
