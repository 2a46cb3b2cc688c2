"""``classzoo predict --checkpoint C IMAGE|FOLDER...``: top-k classes per image, with the
checkpoint's own preprocessing (eval transform and decoder of its preset) and class names.

Class names: the run's own (ImageFolder class folders) when it has them, else ImageNet's for a
1000- or 1001-class head (``data_files/imagenet_classes.tsv``), else the dataset label number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from classzoo.data import decode
from classzoo.data.class_index import imagenet_classes
from classzoo.data.imagefolder import IMG_EXTENSIONS, images_under
from classzoo.data.transforms import build_transform
from classzoo.engine.build import transform_preprocess
from classzoo.engine.inference import load_for_inference
from classzoo.engine.precision import autocast
from classzoo.errors import UserError

BATCH = 32  # images per forward; bounded memory for a folder of any size


def predict(
    checkpoint: str,
    images: Sequence[str],
    recipe: str | None = None,
    model: str | None = None,
    top_k: int = 5,
    overrides: Sequence[str] = (),
) -> list[dict]:
    """Top-``top_k`` predictions of every image file (folders are searched recursively)."""
    files = collect_images(images)  # before loading: a wrong path fails fast
    loaded = load_for_inference(checkpoint, recipe, model, overrides=overrides)
    net, resolved = loaded.net, loaded.resolved
    transform = build_transform(transform_preprocess(resolved.preprocess), train=False)
    read = decode.decoder(resolved.preprocess.decoder)
    names = class_names(resolved.num_classes, resolved.classes)

    def load(path: Path) -> torch.Tensor:
        return transform(read(decode.read_file(str(path)), str(path)))

    amp = resolved.precision_dtype("eval")  # eval.amp, as classzoo eval scores the weights
    return predict_files(net, load, files, names, resolved.label_offset, top_k, amp)


def collect_images(paths: Iterable[str]) -> list[Path]:
    """Image files named directly, plus every image file under each folder, found as
    ``classzoo eval`` finds them (data/imagefolder.py ``images_under``: torchvision's walk and
    extensions, macOS AppleDouble ``._*`` files left out)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [Path(p) for p in images_under(str(path))]
            if not found:
                raise UserError(f"folder {path} holds no images ({', '.join(IMG_EXTENSIONS)})")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise UserError(f"image {path} does not exist")
    return out


def class_names(num_classes: int, classes: Sequence[str] | None) -> list[str] | None:
    """Name of each logit index, or None when only numbers are known.

    1000 logits are ImageNet's sorted synsets (timm: labels 0..999; slim ResNet-v1: labels 1..1000
    with label_offset 1, README "ResNet and VGG models have 1000 classes"); 1001 logits put slim's
    'background' first (datasets/imagenet.py ``create_readable_names_for_imagenet_labels``).
    """
    if classes and len(classes) <= num_classes:  # a run's folders: folder k was logit k
        lemmas = dict(imagenet_classes())
        # ImageFolder ImageNet: the folders are synsets; show their words too
        return [f"{c} ({lemmas[c].split(',')[0]})" if c in lemmas else c for c in classes]
    first_lemma = [lemma.split(",")[0] for _, lemma in imagenet_classes()]
    if num_classes == 1000:
        return first_lemma
    if num_classes == 1001:
        return ["background", *first_lemma]
    return None


def predict_files(
    net: nn.Module,
    load: Callable[[Path], torch.Tensor],
    files: Sequence[Path],
    names: Sequence[str] | None,
    label_offset: int,
    top_k: int,
    amp_dtype: torch.dtype | None = None,
) -> list[dict]:
    """Run ``net`` over ``files`` in batches (autocast to ``amp_dtype``, None: fp32); one result
    per file, in order."""
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: must be at least 1")
    net.eval()
    device = next(net.parameters()).device
    out = []
    for start in range(0, len(files), BATCH):
        chunk = files[start : start + BATCH]
        x = torch.stack([load(p) for p in chunk]).to(device)
        with torch.no_grad(), autocast(device, amp_dtype):
            logits = net(x).float()
        # ranked by logit, as TF's top_k(logits): float32 softmax underflows to 0 beyond a gap
        # of ~88, and probabilities tied at 0 would rank the runners-up arbitrarily
        idx = logits.topk(min(top_k, logits.shape[1]), dim=1).indices
        p = logits.softmax(dim=1).gather(1, idx)
        for path, ps, ids in zip(chunk, p.tolist(), idx.tolist()):
            top = [_entry(i, prob, names, label_offset) for prob, i in zip(ps, ids)]
            out.append({"image": str(path), "top": top})
    return out


def _entry(index: int, prob: float, names: Sequence[str] | None, label_offset: int) -> dict:
    label = index + label_offset  # the dataset's own label number for this logit
    name = names[index] if names and index < len(names) else str(label)
    return {"class": name, "index": index, "label": label, "prob": prob}


def format_results(results: list[dict], fmt: str) -> str:
    """``text``: one line per image; ``csv``: one row per (image, rank). JSON: see cli.common."""
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "rank", "class", "index", "label", "prob"])
        for r in results:
            for rank, t in enumerate(r["top"], 1):
                w.writerow(
                    [r["image"], rank, t["class"], t["index"], t["label"], f"{t['prob']:.6f}"]
                )
        return buf.getvalue().rstrip("\n")
    lines = []
    for r in results:
        tops = ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"])
        lines.append(f"{r['image']}: {tops}")
    return "\n".join(lines)
