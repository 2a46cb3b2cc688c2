"""``create_model``: one entry point for classzoo's TF-slim networks and timm's registry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from classzoo.models import registry
from classzoo.models.registry import data_defaults, register_model
from classzoo.models.weights import load_checkpoint


def create_model(
    name: str,
    num_classes: int | None = None,
    checkpoint: str | Path | None = None,
    exclude: Sequence[str] = (),
    use_ema: bool = False,
    allow_new_head: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` and optionally load ``checkpoint`` into it.

    ``checkpoint`` may be a classzoo checkpoint, a safetensors file or a TF checkpoint (V1 file or
    V2 prefix), detected by content. ``num_classes=None`` keeps the model's own head size; a
    different size than the checkpoint's leaves the classifier at its initialisation, seeded by
    torch's RNG, logged as a warning and listed in ``model.load_report.left_at_init``;
    ``allow_new_head=False`` refuses it instead.
    ``exclude`` lists checkpoint scopes not to load (e.g. ``["Logits", "AuxLogits"]`` for slim).
    Input NCHW float; output logits.
    """
    model = registry.build(name, num_classes, **kwargs)
    if checkpoint is not None:
        load_checkpoint(
            model, name, checkpoint, exclude=exclude, use_ema=use_ema, allow_new_head=allow_new_head
        )
    return model


__all__ = ["create_model", "data_defaults", "register_model"]
