"""``classzoo predict --checkpoint C IMAGE...``: top-k classes per image, with the checkpoint's own
preprocessing (eval transform and decoder of its preset) and class names."""

from __future__ import annotations

from pathlib import Path

import torch

from classzoo.data import decode
from classzoo.data.transforms import build_transform
from classzoo.engine import setup
from classzoo.engine.eval_checkpoint import build_checkpoint_model, config_for_checkpoint
from classzoo.errors import UserError


def predict(
    checkpoint: str,
    images: list[str],
    recipe: str | None = None,
    model: str | None = None,
    top_k: int = 5,
) -> list[dict]:
    cfg, ckpt = config_for_checkpoint(checkpoint, recipe, model)
    classes = ckpt.get("classes") if ckpt is not None else None
    net = build_checkpoint_model(cfg, cfg.model.num_classes, ckpt).eval()
    pre = setup.resolve_preprocess(cfg.data, cfg.model.name, net)
    transform = build_transform(pre, train=False)
    read = decode.decoder("tf" if pre.preset in ("vgg", "inception") else "pil")
    offset = setup.label_offset_for(cfg)
    out = []
    for path in images:
        if not Path(path).is_file():
            raise UserError(f"image {path} does not exist")
        x = transform(read(decode.read_file(path), path)).unsqueeze(0)
        with torch.no_grad():
            logits = net(x)
        probs = logits.float().softmax(dim=1)[0]
        p, idx = probs.topk(min(top_k, probs.numel()))
        preds = []
        for prob, i in zip(p.tolist(), idx.tolist()):
            name = classes[i] if classes and i < len(classes) else str(i + offset)
            preds.append({"class": name, "index": i, "prob": prob})
        out.append({"image": path, "top": preds})
    return out
