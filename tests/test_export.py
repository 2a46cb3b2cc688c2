"""ONNX export: the exported graph, run by ONNX's own reference evaluator, gives the model's logits
for a batch size other than the one it was traced with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from classzoo.cli import main


def test_onnx_export_matches_pytorch(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    model = timm.create_model(
        "resnet10t", num_classes=4, channels=(8, 16, 32, 64), stem_width=8
    ).eval()
    ckpt = tmp_path / "tiny.pt"
    config = {
        "model": {
            "name": "resnet10t",
            "num_classes": 4,
            "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8},
        },
        "data": {"image_size": 32, "crop_pct": 1.0},
    }
    torch.save({"model": model.state_dict(), "config": config}, ckpt)
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", str(out)]) == 0
    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["preprocess"])
    assert meta["image_size"] == 32 and meta["model"] == "resnet10t"
    x = torch.randn(3, 3, 32, 32)  # traced with batch 2: the batch dimension is dynamic
    theirs = ReferenceEvaluator(proto).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ours = model(x).numpy()
    assert theirs.shape == (3, 4)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
