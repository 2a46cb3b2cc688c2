"""``classzoo export --checkpoint C --format onnx OUT``: the model with a dynamic batch dimension.

Input ``float32 [N, 3, S, S]`` already preprocessed as the checkpoint's preset says (see the
``preprocess`` metadata written into the ONNX file); output logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from classzoo.engine.inference import load_for_inference
from classzoo.errors import UserError


def export_onnx(
    checkpoint: str, output: str, recipe: str | None = None, model: str | None = None
) -> Path:
    try:
        import onnx
    except ImportError:
        raise UserError(
            "ONNX export needs the export extra: pip install 'classzoo[export]'"
        ) from None
    loaded = load_for_inference(checkpoint, recipe, model)
    net, resolved = loaded.net, loaded.resolved
    pre = resolved.preprocess
    example = torch.zeros(2, 3, pre.image_size, pre.image_size)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        net,
        (example,),
        str(out),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    proto = onnx.load(str(out))
    meta = {  # the Resolved record's preprocessing: the truth the model was trained with
        "model": resolved.model,
        "num_classes": resolved.num_classes,
        "label_offset": resolved.label_offset,
        "preset": pre.preset,
        "image_size": pre.image_size,
        "crop_pct": pre.crop_pct,
        "interpolation": pre.interpolation,
        "decoder": pre.decoder,
        "formula": pre.formula,
        "mean": list(pre.mean),
        "std": list(pre.std),
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = "preprocess", json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out
