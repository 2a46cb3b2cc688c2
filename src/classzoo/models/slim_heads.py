"""Which slim head scopes a new class count makes unloadable (left at init, like timm)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from classzoo.models.slim_names import default_scope

__all__ = ["auto_head_excludes", "checkpoint_classes", "slim_classifier_scopes"]


def slim_classifier_scopes(model_name: str) -> tuple[str, ...]:
    """The fully connected layers sized by num_classes, under the top scope: all that another
    class count makes unloadable (AuxLogits' two convolutions still fit and are restored)."""
    if default_scope(model_name) == "InceptionV4":
        return ("Logits/Logits", "AuxLogits/Aux_logits")
    return ("logits",)


def checkpoint_classes(model_name: str, checkpoint: str) -> int | None:
    """The class count of a TF checkpoint's classifier (its ``<scope>/biases`` shape, read
    from the index without the data); None when it has none."""
    from classzoo.formats.tf_checkpoint import open_tf_checkpoint

    with open_tf_checkpoint(checkpoint) as ckpt:
        shapes = {name: shape for name, (_, shape) in ckpt.variables().items()}
    scope = slim_classifier_scopes(model_name)[0]
    sized = [s for name, s in shapes.items() if name.endswith(f"/{scope}/biases") and s]
    return int(sized[0][-1]) if sized else None


def _covered(scope: str, exclude: Sequence[str], top: str) -> bool:
    """Whether an exclude scope (with or without the top scope) contains ``top/scope``."""
    for e in exclude:
        rel = e.strip("/").removeprefix(top + "/")
        if scope == rel or scope.startswith(rel + "/"):
            return True
    return False


def auto_head_excludes(
    model_name: str,
    variables: Mapping[str, np.ndarray],
    num_classes: int | None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Classifier scopes whose class count differs from ``num_classes`` and that ``exclude``
    does not already cover: the ones to leave at init for a new class count (timm's rule)."""
    top = default_scope(model_name)
    out = []
    for scope in slim_classifier_scopes(model_name):
        sized = [v for k, v in variables.items() if k.endswith(f"/{scope}/biases")]
        if num_classes is None or not sized or np.shape(sized[0])[-1] == num_classes:
            continue
        if not _covered(scope, exclude, top):
            out.append(scope)
    return out
