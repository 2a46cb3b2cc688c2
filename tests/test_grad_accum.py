"""Gradient accumulation and the loss normalisation: k micro-batches of b = one batch of k*b,
also for an uneven last batch (the mean over the step's samples, not a mean of means)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classzoo.config import load_recipe
from classzoo.engine.run import run
from classzoo.models.registry import registered_model
from conftest import write_imagefolder


def _linear_probe(num_classes: int = 3, **_) -> nn.Module:
    """No batch statistics, so accumulation must be exact up to float summation order."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, num_classes))
    model.num_classes = num_classes
    return model


@pytest.fixture(scope="module", autouse=True)
def linear_probe():
    """``test_linear_probe`` is a model name for this module's tests only."""
    defaults = {"input_size": (3, 16, 16), "crop_pct": 1.0}
    with registered_model("test_linear_probe", _linear_probe, defaults) as entry:
        yield entry


def test_accumulation_equals_the_big_batch(tmp_path):
    data = tmp_path / "data"
    write_imagefolder(data / "train", {"a": 16, "b": 15, "c": 15}, seed=5)  # 46 = 5 x 8 + 6
    write_imagefolder(data / "val", {"a": 2, "b": 2, "c": 2}, seed=6)
    finals = []
    for batch, accum in ((8, 1), (4, 2), (2, 4)):
        cfg = load_recipe(
            "quickstart",
            [
                "model.name=test_linear_probe",
                "model.kwargs={}",
                f"data.batch_size={batch}",
                f"train.grad_accum_steps={accum}",
                "data.image_size=16",
                "data.num_workers=0",
                "train.epochs=2",
                "train.channels_last=false",
                "train.amp=off",
                "optim.name=momentum",
                "optim.lr=0.5",
                "optim.weight_decay=0",
                "train.label_smoothing=0",
                "train.progress=false",
                "data.hflip=0",
                f"data.dir={data}",
            ],
        )
        summary = run(cfg, tmp_path / f"b{batch}x{accum}")
        assert summary["global_batch_size"] == 8
        ckpt = sorted((tmp_path / f"b{batch}x{accum}" / "checkpoints").glob("*.pt"))[-1]
        state = torch.load(ckpt, weights_only=True)
        assert (
            state["progress"]["step"] == 12
        )  # 6 optimizer steps per epoch (5 x 8 + 6: micro-batches 4+2, 2+2+2)
        finals.append(state["model"]["2.weight"])
    assert not torch.equal(finals[0], _linear_probe().state_dict()["2.weight"])  # it trained
    for other in finals[1:]:
        torch.testing.assert_close(other, finals[0], rtol=1e-5, atol=1e-6)
