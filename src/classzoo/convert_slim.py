"""``classzoo convert slim``: a TF-slim checkpoint -> a classzoo checkpoint or safetensors file."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from classzoo.config import Config, with_values
from classzoo.engine.build import model_defaults
from classzoo.engine.resolve import resolve
from classzoo.errors import UserError
from classzoo.formats.safetensors_file import save_safetensors_file
from classzoo.formats.torch_checkpoint import save_checkpoint_file
from classzoo.models import create_model
from classzoo.models.slim_heads import checkpoint_classes

log = logging.getLogger("classzoo")


def list_checkpoint(checkpoint: str) -> str:
    from classzoo.formats.tf_checkpoint import format_variables, open_tf_checkpoint

    with open_tf_checkpoint(checkpoint) as ckpt:
        return format_variables(ckpt)


def convert_slim(
    model_name: str,
    checkpoint: str,
    output: str,
    exclude: Sequence[str] = (),
    num_classes: int | None = None,
    use_ema: bool = False,
) -> Path:
    """Load ``checkpoint`` into ``model_name`` and write it; ``.safetensors`` or a classzoo ``.pt``.

    The ``.pt`` carries its Resolved record (model, head, preprocessing, label offset), so
    ``classzoo eval --checkpoint OUT`` needs no ``--model``.
    """
    from classzoo.formats.tf_checkpoint import is_tf_checkpoint

    if not is_tf_checkpoint(checkpoint):
        raise UserError(f"{checkpoint} is not a TF checkpoint (V1 file, V2 prefix or .index)")
    asked_head = num_classes
    if num_classes is None:  # the checkpoint's head, never the model's default with a new one
        num_classes = checkpoint_classes(model_name, checkpoint)
    model = create_model(
        model_name, num_classes=num_classes, checkpoint=checkpoint, exclude=exclude, use_ema=use_ema
    )
    if asked_head is None and num_classes is not None:
        log.info("head: %d classes, the checkpoint's", num_classes)
    out = Path(output)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if out.suffix == ".safetensors":  # atomic, with its SHA-256 like every classzoo file
        save_safetensors_file(state, out, {"model": model_name, "source": str(checkpoint)})
    else:
        weights = {
            "source": str(checkpoint),
            "format": "tf",
            "excluded": list(exclude),
            "left_at_init": list(model.load_report.left_at_init),
            "use_ema": use_ema,
        }
        payload = _with_record(state, model_name, int(model.num_classes), weights)
        save_checkpoint_file(payload, out, what="weights file")
    log.info("wrote %s (%s, %d tensors) from %s", out, model_name, len(state), checkpoint)
    return out


def _with_record(state: dict, model_name: str, num_classes: int, weights: dict) -> dict:
    """The ``.pt`` payload: the weights with the config and Resolved record of slim's eval."""
    asked = with_values(
        Config(),
        {
            "model.name": model_name,
            "model.num_classes": num_classes,
            "data.source": "tfrecord",
            "data.val_split": "validation",
        },  # slim's eval data
        "convert",
    )
    defaults = model_defaults(model_name, {})
    resolved = resolve(
        asked, torch.device("cpu"), 1, defaults, num_classes, None, {}, weights, None
    )
    return {"model": state, "config": asked.to_dict(), "resolved": resolved.to_dict()}
