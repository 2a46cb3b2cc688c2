"""slim's ``labels.txt`` beside TFRecord shards (``label:name`` lines, dataset_utils.py
``write_label_file``), and whether it agrees with the class names a checkpoint stores."""

from __future__ import annotations

from pathlib import Path

from classzoo.errors import UserError

LABELS_FILE = "labels.txt"  # slim's dataset_utils.write_label_file name and "%d:%s" lines


def read_label_file(path: Path) -> dict[str, int]:
    labels = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        label, sep, name = line.partition(":")
        if not line.strip():
            continue
        if not sep or not label.strip().isdigit() or not name:
            raise UserError(f"{path} line {n}: expected 'label:class name', got {line!r}")
        labels[name] = int(label)
    return labels


def check_label_file(folder: Path, stored: tuple[str, ...], offset: int) -> None:
    """Records scored by a checkpoint that names its logits (``stored``): where the shards'
    ``labels.txt`` names their labels with those names, label L must be that checkpoint's logit
    L - ``offset``. ``data to-tfrecord`` numbers the folders it is given in sorted order, so a val
    subset, or classes a run ordered naturally, would be scored against other classes' logits.
    A labels.txt in another naming (slim's ImageNet one: ``0:background``, ``1:tench, Tinca
    tinca``, written by its ``imagenet.get_split``) says nothing here and is not read further."""
    path = folder / LABELS_FILE
    if not path.is_file():
        return
    labels = {n: v for n, v in read_label_file(path).items() if (n, v) != ("background", 0)}
    named = {n: v for n, v in labels.items() if n in stored}
    if not named:
        return
    shifts = {v - stored.index(n) for n, v in named.items()}
    if len(shifts) == 1 and len(named) == len(labels) and shifts != {offset}:
        k = shifts.pop()
        raise UserError(
            f"{path} numbers the checkpoint's logit k as label k + {k}: set data.label_offset={k}"
        )
    for name, label in sorted(labels.items(), key=lambda kv: kv[1]):
        logit = label - offset
        theirs = stored[logit] if 0 <= logit < len(stored) else None
        if theirs == name:
            continue
        where = f"{path} gives '{name}' label {label} (logit {logit} under label_offset {offset})"
        if name not in stored:
            raise UserError(f"{where}, but the checkpoint was not trained on '{name}'")
        raise UserError(
            f"{where}, but the checkpoint's logit {logit} is '{theirs}' (its '{name}' is logit "
            f"{stored.index(name)}): score the image folder (matched by name), or write the "
            "checkpoint's numbering to labels.txt before `classzoo data to-tfrecord`"
        )
