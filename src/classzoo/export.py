"""``classzoo export --checkpoint C --format onnx OUT``: the model with a dynamic batch dimension,
checked with onnxruntime against PyTorch.

Input ``float32 [N, 3, S, S]`` already preprocessed as the checkpoint's preset says (see the
``preprocess`` metadata written into the ONNX file); output logits.

The file is built in a hidden folder beside OUT (``.OUT.tmp-<pid>/``), given its metadata,
verified, and only then renamed onto OUT: an interrupted or failed export leaves neither OUT nor
a temporary. Weights are inline (one file) unless they pass protobuf's 2 GB limit, when torch
writes them to ``OUT.data``, moved beside OUT with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classzoo.engine.inference import load_for_inference
from classzoo.errors import UserError
from classzoo.predict import class_names

log = logging.getLogger("classzoo")

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
        "crop_mode": pre.crop_mode,  # timm's: center, squash (both sides) or border (padded)
        "interpolation": pre.interpolation,
        "decoder": pre.decoder,
        "formula": pre.formula,
        "mean": list(pre.mean),
        "std": list(pre.std),
        "sample": pre.sample,  # what the formula is applied to (a TF1 bilinear resize for slim)
        "steps": [list(step) for step in pre.steps],
        # the name of each logit, as `classzoo predict` prints it; None: numbers only
        "classes": class_names(resolved.num_classes, resolved.classes),
    }
    out = Path(output)
    with _staging(out) as staged:
        write_onnx(net, pre.image_size, staged, meta)
        diff, scale = verify_onnx(staged, net, pre.image_size, pre.mean, pre.std, name=out)
        _publish(staged, out)
    return ExportResult(out, diff, scale)


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A path named like ``out`` in a hidden folder beside it (same file system, so the final
    rename is atomic); the folder and all in it (torch's sidecars too) go on exit, and on
    failure or Ctrl-C also the parent folders this call created."""
    if out.is_dir():
        raise UserError(f"output {out} is a folder: give a file name such as {out}/model.onnx")
    created = [d for d in out.parents if not d.exists()]
    folder = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:  # a Ctrl-C as mkdir returns (the folder made) is cleaned up too: seen under load
        try:
            folder.mkdir(parents=True)
        except OSError as e:
            raise UserError(f"cannot write beside {out}: {e.strerror or e}") from None
        yield folder / out.name
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        for d in created:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    shutil.rmtree(folder, ignore_errors=True)


def _publish(staged: Path, out: Path) -> None:
    """Move the verified file (and the external-data files it references) onto ``out``; remove
    an ``OUT.data`` the new file does not use (torch's sidecar name: an earlier export's)."""
    import onnx

    used = _external_files(onnx.load(str(staged), load_external_data=False))
    for name in sorted(used):  # the weights before the graph that reads them
        os.replace(staged.parent / name, out.parent / name)
    os.replace(staged, out)
    sidecar = out.with_name(f"{out.name}.data")
    if sidecar.name not in used and sidecar.is_file():
        sidecar.unlink()
        log.info("removed %s: %s does not use it (left by an earlier export)", sidecar, out)


def _external_files(model: Any) -> set[str]:
    """The files (relative to the model's folder) that any tensor of ``model`` keeps its data in:
    initializers, sparse initializers and constant attributes, subgraphs included."""
    from onnx import AttributeProto
    from onnx.external_data_helper import uses_external_data

    tensors, graphs = [], [model.graph]
    while graphs:
        g = graphs.pop()
        tensors += [*g.initializer, *(s.values for s in g.sparse_initializer)]
        for attr in (a for node in g.node for a in node.attribute):
            if attr.type == AttributeProto.TENSOR:
                tensors.append(attr.t)
            tensors += attr.tensors
            graphs += [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
    return {
        e.value
        for t in tensors
        if uses_external_data(t)
        for e in t.external_data
        if e.key == "location"
    }


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
    """Export ``net`` (eval mode, CPU) with a dynamic batch and ``meta`` as "preprocess".

    Writes ``out`` in place, weights inline up to protobuf's 2 GB (beyond: ``out.data``, torch's
    rule); :func:`export_onnx` points it at a staged path and publishes it once verified.
    """
    import onnx

    net = net.eval().cpu()
    example = torch.zeros(TRACE_BATCH, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        net,
        (example,),
        str(out),
        dynamo=True,
        external_data=False,  # True (torch's default) splits even a 5 MB model into OUT.data
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    proto = onnx.load(str(out), load_external_data=False)  # external weights stay where they are
    entry = proto.metadata_props.add()
    entry.key, entry.value = "preprocess", json.dumps(meta)
    onnx.save(proto, str(out))
    onnx.checker.check_model(str(out))  # by path: also reads external data, and past 2 GB
    return out


def verify_onnx(
    path: Path,
    net: nn.Module,
    image_size: int,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.5, 0.5, 0.5),
    seed: int = 0,
    name: Path | None = None,
) -> tuple[float, float]:
    """(max |onnxruntime - PyTorch|, max |logit|) on random images in the model's input range
    (uniform pixels through the preprocessing formula); a difference over
    MAX_DIFF * max(1, max |logit|) is an error naming the file (``name``, default ``path``)."""
    import onnxruntime as ort

    name = path if name is None else name
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(CHECK_BATCH, 3, image_size, image_size, generator=gen)
    x = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = net.eval().cpu()(x).float()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    if theirs.shape != ours.shape:
        raise UserError(
            f"{name}: onnxruntime gives shape {list(theirs.shape)}, PyTorch {list(ours.shape)}"
        )
    diff, scale = (theirs - ours).abs().max().item(), ours.abs().max().item()
    if not diff <= MAX_DIFF * max(1.0, scale):
        raise UserError(
            f"{name}: onnxruntime logits differ from PyTorch by {diff:.3g} > "
            f"{MAX_DIFF:g} x max(1, max |logit| {scale:.3g})"
        )
    return diff, scale
