"""Evaluation counts every image exactly once, whatever the batch size (the reference needed
``image_num % batch_size == 0`` and dropped the remainder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from classzoo.engine.inference import eval_checkpoint
from classzoo.models.registry import registered_model

LEVELS = {"a": 30, "b": 128, "c": 220}  # grey levels of the three classes


def _probe(num_classes: int = 3) -> nn.Module:
    """Logits from the mean intensity x in [0, 1]: a = 4 - 10x, b = 0, c = 10x - 6.

    So x < 0.4 -> a, 0.4 < x < 0.6 -> b, x > 0.6 -> c (worked out by hand)."""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))
    model.num_classes = num_classes
    return model


@pytest.fixture(scope="module", autouse=True)
def intensity_probe():
    """``test_intensity_probe`` is a model name for this module's tests only."""
    defaults = {
        "input_size": (3, 8, 8),
        "crop_pct": 1.0,
        "mean": (0, 0, 0),
        "std": (1, 1, 1),
        "preset": "timm",
    }
    with registered_model("test_intensity_probe", _probe, defaults) as entry:
        yield entry


@pytest.fixture(scope="module")
def dataset_1001(tmp_path_factory):
    """1,001 images: a 400, b 350, c 251; 7 bright images filed under a, 5 dark ones under b."""
    root = tmp_path_factory.mktemp("eval1001") / "val"
    plan = {
        "a": [LEVELS["a"]] * 393 + [LEVELS["c"]] * 7,
        "b": [LEVELS["b"]] * 345 + [LEVELS["a"]] * 5,
        "c": [LEVELS["c"]] * 251,
    }
    for name, levels in plan.items():
        (root / name).mkdir(parents=True)
        for i, level in enumerate(levels):
            Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(root / name / f"{i:04d}.png")
    model = _probe()
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[-10.0] * 3, [0.0] * 3, [10.0] * 3]) / 3)
        model[2].bias.copy_(torch.tensor([4.0, 0.0, -6.0]))
    ckpt = root.parent / "probe.safetensors"
    save_file(model.state_dict(), str(ckpt))
    # hand computation: 12 misfiled images are predicted as their pixels say, so wrong
    x = {k: v / 255.0 for k, v in LEVELS.items()}
    logits = {k: np.array([4 - 10 * v, 0.0, 10 * v - 6]) for k, v in x.items()}
    label = {"a": 0, "b": 1, "c": 2}
    losses = []
    for name, levels in plan.items():
        for level in levels:
            z = logits[{30: "a", 128: "b", 220: "c"}[level]]
            losses.append(np.log(np.exp(z).sum()) - z[label[name]])
    return root, ckpt, 100.0 * (1001 - 12) / 1001, float(np.mean(losses))


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_every_image_counted_once(dataset_1001, batch_size):
    root, ckpt, top1, loss = dataset_1001
    result = eval_checkpoint(
        str(ckpt),
        str(root),
        model="test_intensity_probe",
        batch_size=batch_size,
        overrides=["data.num_workers=0", "train.amp=off"],
        device="cpu",
        quiet=True,
    )
    assert result["count"] == 1001
    assert result["top1"] == pytest.approx(top1, abs=1e-9)
    assert result["top5"] == pytest.approx(100.0)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
