"""``classzoo convert slim``: a TF-slim checkpoint -> a classzoo checkpoint or safetensors file."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from classzoo.config import Config
from classzoo.engine.checkpoint import atomic_save
from classzoo.errors import UserError
from classzoo.models import create_model, data_defaults

log = logging.getLogger("classzoo")


def list_checkpoint(checkpoint: str) -> str:
    from classzoo.convert.tf_checkpoint import format_variables, open_tf_checkpoint

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

    The ``.pt`` carries the resolved config (model, classes, preprocessing), so
    ``classzoo eval --checkpoint OUT`` needs no ``--model``.
    """
    from classzoo.convert.tf_checkpoint import is_tf_checkpoint

    if not is_tf_checkpoint(checkpoint):
        raise UserError(f"{checkpoint} is not a TF checkpoint (V1 file, V2 prefix or .index)")
    model = create_model(
        model_name, num_classes=num_classes, checkpoint=checkpoint, exclude=exclude, use_ema=use_ema
    )
    out = Path(output)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(out), metadata={"model": model_name, "source": str(checkpoint)})
    else:
        cfg = Config()
        cfg.model.name = model_name
        cfg.model.num_classes = int(model.num_classes)
        d = data_defaults(model_name, model)
        cfg.data.preset, cfg.data.image_size = d["preset"], int(d["input_size"][-1])
        cfg.data.crop_pct, cfg.data.label_offset = (
            float(d["crop_pct"]),
            int(d.get("label_offset", 0)),
        )
        cfg.data.source = "tfrecord"
        cfg.data.val_split = "validation"
        atomic_save(
            {
                "model": state,
                "config": cfg.to_dict(),
                "model_name": model_name,
                "num_classes": int(model.num_classes),
                "source": str(checkpoint),
            },
            out,
        )
    log.info("wrote %s (%s, %d tensors) from %s", out, model_name, len(state), checkpoint)
    return out
