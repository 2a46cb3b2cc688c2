"""bf16 training on a CPU never runs a layer whose bf16 weight gradient oneDNN gets wrong.

The wrong case (engine/bf16_conv_check.py): a strided convolution, kernel wider than 1, on a
1-pixel-wide input; its padding-only weight taps came back as garbage (up to 6e37, or NaN) in
29 of 30 trials here. The truths: the feature-map widths of timm's resnet10t worked out by hand,
and, for every convolution shape the check lets through, fp32 arithmetic on the same
bf16-rounded operands."""

from __future__ import annotations

import pytest
import timm
import torch
import yaml

from classzoo.cli import main
from classzoo.engine.bf16_conv_check import convs_wrong_in_cpu_bf16, wrong_bf16_weight_grad
from classzoo.engine.precision import cpu_has_amx


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        # stem /2 -> 8, max pool /2 -> 4, layer2 /2 -> 2, layer3 /2 -> 1: layer4.0.conv1 (3x3,
        # stride 2) sees a 1x1 map; its avg-down shortcut's conv is 1x1 (not affected)
        (16, ["layer4.0.conv1"]),
        # ... -> 2 at layer2's output: layer3.0.conv1 and layer4.0.conv1 see 1x1 maps
        (8, ["layer3.0.conv1", "layer4.0.conv1"]),
        (32, []),  # the quickstart: layer4.0.conv1 sees a 2x2 map
    ],
)
def test_the_check_finds_the_layers_worked_out_by_hand(size, expected):
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=10)
    bn = model.bn1
    stats = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    before = torch.get_rng_state()
    model.eval()
    assert convs_wrong_in_cpu_bf16(model, size) == expected
    # the probe leaves the model as it was: statistics, mode and random stream
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert torch.equal(bn.num_batches_tracked, stats[2]) and not model.training
    assert torch.equal(torch.get_rng_state(), before)


# (input height, width), kernel, stride, padding: the convolution shapes of small ResNets that
# the check lets through, each compared with fp32 arithmetic on the bf16-rounded operands
PASSED = [
    ((2, 2), 3, 2, 1),  # layer4.0.conv1 at 32 px
    ((1, 2), 3, 2, 1),  # 1 pixel high, 2 wide
    ((1, 1), 3, 1, 1),  # stride 1 on a 1x1 map (a block's second conv)
    ((1, 1), 1, 2, 0),  # a 1x1 stride-2 shortcut on a 1x1 map
    ((2, 2), 1, 2, 0),
]


@pytest.mark.parametrize(("hw", "k", "s", "p"), PASSED)
def test_the_shapes_let_through_train_right_in_bf16(hw, k, s, p):
    torch.manual_seed(0)
    for _ in range(5):  # the wrong case fails in most trials; 5 make a miss unlikely
        conv = torch.nn.Conv2d(64, 128, k, s, p, bias=False).to(memory_format=torch.channels_last)
        x = torch.randn(8, 64, *hw).to(memory_format=torch.channels_last)
        assert not wrong_bf16_weight_grad(conv, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        g = torch.randn(y.shape).bfloat16().float()
        y.float().backward(g)
        w = conv.weight.detach().bfloat16().float().requires_grad_()
        torch.nn.functional.conv2d(x.bfloat16().float(), w, None, s, p).backward(g)
        err = (conv.weight.grad - w.grad).abs().max()
        assert err <= 0.02 * w.grad.abs().max(), f"bf16 weight gradient off by {err}"


def _train(tmp_path, name: str, *extra: str) -> int:
    argv = ["train", "--recipe", "quickstart", "--mode", "train", "--max-steps", "1"]
    argv += ["--output-dir", str(tmp_path / name), "--set", "data.source=synthetic"]
    argv += ["--set", "data.image_size=16", "--set", "data.num_workers=0", *extra]
    return main(argv)


def test_asking_bf16_for_such_a_layer_is_refused_in_one_line(tmp_path, capsys):
    assert _train(tmp_path, "bf16", "--amp", "bf16") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.amp=bf16" in err[0] and "layer4.0.conv1" in err[0]
    assert not (tmp_path / "bf16").exists()  # refused before anything is written


@pytest.mark.skipif(not cpu_has_amx(), reason="amp auto is fp32 on a CPU without AMX anyway")
def test_amp_auto_trains_such_a_network_in_fp32_and_says_why(tmp_path):
    assert _train(tmp_path, "auto") == 0
    resolved = yaml.safe_load((tmp_path / "auto" / "resolved.yaml").read_text())
    assert resolved["train_precision"] == "fp32"
    assert "layer4.0.conv1" in resolved["precision_note"]
    assert _train(tmp_path, "auto32", "--set", "data.image_size=32") == 0  # unaffected: bf16
    resolved = yaml.safe_load((tmp_path / "auto32" / "resolved.yaml").read_text())
    assert resolved["train_precision"] == "bf16" and resolved["precision_note"] is None


def test_a_conv_that_pads_itself_is_judged_on_its_padded_width():
    """timm's Conv2dSame (tf_ models) pads a 1-pixel-wide map to 3 before a padding-free
    convolution (by hand: TF 'SAME' pad = (ceil(1/2) - 1) * 2 + 3 - 1 = 2): right in bf16."""
    from timm.layers import Conv2dSame, ScaledStdConv2dSame, StdConv2dSame

    x = torch.zeros(1, 8, 1, 1)
    assert not wrong_bf16_weight_grad(Conv2dSame(8, 16, 3, stride=2), x)
    # dm_nfnet's and the vit hybrids' convolutions pad the same way (pad_same, then padding 0):
    # they were refused with a false reason (their bf16 gradient was right in 20 of 20 trials)
    assert not wrong_bf16_weight_grad(ScaledStdConv2dSame(8, 16, 3, stride=2), x)
    assert not wrong_bf16_weight_grad(StdConv2dSame(8, 16, 3, stride=2), x)
    assert wrong_bf16_weight_grad(StdConv2dSame(8, 16, 3, stride=2, padding=1), x)  # static pad
    assert wrong_bf16_weight_grad(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), x)
    # depthwise too: wrong in 16 of 40 trials on one thread here (right on two)
    assert wrong_bf16_weight_grad(torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8), x)


def test_a_same_padded_std_conv_on_a_1x1_map_trains_right_in_bf16():
    """The truth for the probe's answer above: fp32 arithmetic on the bf16-rounded operands."""
    from timm.layers import ScaledStdConv2dSame

    torch.manual_seed(0)
    for _ in range(5):
        conv = ScaledStdConv2dSame(48, 48, 3, stride=2, groups=6)
        x = torch.randn(8, 48, 1, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        g = torch.randn(y.shape).bfloat16().float()
        y.float().backward(g)
        truth = conv.weight.grad.clone()
        conv.weight.grad = None
        conv.float()(x.bfloat16().float()).backward(g)  # the same layer in fp32
        err = (truth - conv.weight.grad).abs().max()
        assert err <= 0.02 * conv.weight.grad.abs().max(), f"bf16 weight gradient off by {err}"
