"""``classzoo export --checkpoint C --format onnx OUT``: the model with a dynamic batch dimension,
checked with onnxruntime against PyTorch.

Input ``float32 [N, 3, S, S]`` already preprocessed as the checkpoint's preset says (see the
``preprocess`` metadata written into the ONNX file); output logits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classzoo.engine.inference import load_for_inference
from classzoo.errors import UserError

TRACE_BATCH = 2
CHECK_BATCH = 3  # not the traced batch: the check also proves the batch dimension is dynamic
# onnxruntime CPU vs PyTorch, fp32: |diff| <= MAX_DIFF * max(1, max |logit|). Absolute for
# logits up to 1; relative beyond, since fp32 carries ~7 digits: on a slim resnet_v1_50 with
# random TF-written weights and VGG-range inputs (logits up to 2223) PyTorch's own fp32 logits
# are 6.3e-4 from float64 and onnxruntime's 9.4e-4 (measured), so no absolute 1e-4 can hold.
MAX_DIFF = 1e-4


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float  # onnxruntime vs PyTorch on CHECK_BATCH inputs in the model's range
    max_abs_logit: float


def export_onnx(
    checkpoint: str,
    output: str,
    recipe: str | None = None,
    model: str | None = None,
    overrides: Sequence[str] = (),
) -> ExportResult:
    """Load the checkpoint (its Resolved record), write the ONNX file, verify it."""
    _require_export_extra()
    loaded = load_for_inference(checkpoint, recipe, model, overrides=overrides)
    net, resolved = loaded.net, loaded.resolved
    pre = resolved.preprocess
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
    out = write_onnx(net, pre.image_size, Path(output), meta)
    diff, scale = verify_onnx(out, net, pre.image_size, pre.mean, pre.std)
    return ExportResult(out, diff, scale)


def _require_export_extra() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"ONNX export needs the export extra ({exc.name} is missing): "
            "pip install 'classzoo[export]'"
        ) from None


def write_onnx(net: nn.Module, image_size: int, out: Path, meta: dict[str, Any]) -> Path:
    """Export ``net`` (eval mode, CPU) with a dynamic batch and ``meta`` as "preprocess"."""
    import onnx

    net = net.eval().cpu()
    example = torch.zeros(TRACE_BATCH, 3, image_size, image_size)
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
    entry = proto.metadata_props.add()
    entry.key, entry.value = "preprocess", json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def verify_onnx(
    path: Path,
    net: nn.Module,
    image_size: int,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.5, 0.5, 0.5),
    seed: int = 0,
) -> tuple[float, float]:
    """(max |onnxruntime - PyTorch|, max |logit|) on random images in the model's input range
    (uniform pixels through the preprocessing formula); a difference over
    MAX_DIFF * max(1, max |logit|) is an error naming the file."""
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(CHECK_BATCH, 3, image_size, image_size, generator=gen)
    x = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = net.eval().cpu()(x).float()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    if theirs.shape != ours.shape:
        raise UserError(
            f"{path}: onnxruntime gives shape {list(theirs.shape)}, PyTorch {list(ours.shape)}"
        )
    diff, scale = (theirs - ours).abs().max().item(), ours.abs().max().item()
    if not diff <= MAX_DIFF * max(1.0, scale):
        raise UserError(
            f"{path}: onnxruntime logits differ from PyTorch by {diff:.3g} > "
            f"{MAX_DIFF:g} x max(1, max |logit| {scale:.3g})"
        )
    return diff, scale
