"""``train.channels_last`` decides the layout the network sees, in training and evaluation.

The CPU batch stages hand channels_last views over (they collate HWC samples); with
``train.channels_last: false`` every convolution still ran NHWC while the record said NCHW.
The outside truth for NCHW: torchvision's DataLoader + ToTensor give contiguous NCHW batches."""

from __future__ import annotations

import pytest
import torch

from classzoo.cli import main


def _conv_inputs(argv: list[str]) -> list[tuple[bool, bool, bool]]:
    """(training, NCHW-contiguous, channels_last) of every Conv2d input of a CLI run with more
    than one input channel to tell the layouts apart (the stem's 3 channels are)."""
    seen: list[tuple[bool, bool, bool]] = []

    def hook(module, inputs):
        x = inputs[0]
        if isinstance(module, torch.nn.Conv2d) and x.dim() == 4 and min(x.shape[2:]) > 1:
            cl = x.is_contiguous(memory_format=torch.channels_last)
            seen.append((module.training, x.is_contiguous(), cl))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        assert main(argv) == 0
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_network_sees_the_recorded_layout(tmp_path, small_imagefolder, channels_last):
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(small_imagefolder)]
    argv += ["--output-dir", str(tmp_path / "run"), "--max-steps", "1", "--amp", "off"]
    argv += ["--set", "model.name=resnet10t", "--set", "data.num_workers=0"]
    argv += ["--set", "train.progress=false", "--set", f"train.channels_last={channels_last}"]
    seen = _conv_inputs(argv)
    assert {training for training, _, _ in seen} == {True, False}  # a step and the final eval
    if channels_last:
        assert all(cl for _, _, cl in seen)
    else:
        assert all(nchw for _, nchw, _ in seen)
