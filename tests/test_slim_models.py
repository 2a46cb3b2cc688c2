"""TF-slim ResNet-v1 / Inception-v4 ports and the slim checkpoint converter, without TensorFlow.

Truths used: the shape and variable tables of shared/reference/tf_slim_compat.md (sections 1, 2),
torchvision's published ResNet-152 parameter count, hand-computed pooling windows and layout
transposes. Parity with TensorFlow itself is in test_slim_parity_tf.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from classzoo.errors import UserError
from classzoo.models.slim_inception_v4 import SLIM_INCEPTION_V4_DEFAULTS, slim_inception_v4
from classzoo.models.slim_names import slim_head_scopes, slim_to_state_dict, state_dict_to_slim
from classzoo.models.slim_resnet import SLIM_RESNET_DEFAULTS, slim_resnet_v1_50, slim_resnet_v1_152


@pytest.fixture(scope="module")
def resnet152():
    torch.manual_seed(0)
    return slim_resnet_v1_152().eval()


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return slim_inception_v4().eval()


def _output_shapes(
    run, modules: dict[str, nn.Module], x: torch.Tensor
) -> tuple[dict, torch.Tensor]:
    """Run ``run(x)``; return the output shapes (C, H, W) of ``modules`` and the output."""
    shapes = {}
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))
        )
        for name, m in modules.items()
    ]
    try:
        with torch.no_grad():
            out = run(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes, out


def _random_slim(variables: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.uniform(0.5, 1.5, v.shape).astype(np.float32) for n, v in variables.items()}


# ---------------------------------------------------------------- shapes (reference tables)


def test_resnet_v1_152_feature_maps_follow_slim_table(resnet152):
    m = resnet152
    modules = {"conv1": m.conv1, "pool1": m.maxpool, "block1": m.layer1, "block2": m.layer2}
    modules |= {"block3": m.layer3, "block4": m.layer4}
    shapes, logits = _output_shapes(m, modules, torch.randn(1, 3, 224, 224))
    # tf_slim_compat.md section 1: conv1 112 -> pool1 56 -> block1 28 -> 14 -> 7 -> 7
    assert shapes == {
        "conv1": (64, 112, 112),
        "pool1": (64, 56, 56),
        "block1": (256, 28, 28),
        "block2": (512, 14, 14),
        "block3": (1024, 7, 7),
        "block4": (2048, 7, 7),
    }
    assert logits.shape == (1, 1000)
    assert m.num_features == 2048 and m.num_classes == 1000


def test_resnet_pool1_pads_like_tf_same_not_symmetric(resnet152):
    # TF 'SAME' 3x3/2 on 4x4: out 2x2, pad_total 1 -> 0 before, 1 after. Windows by hand:
    # rows/cols {0,1,2} and {2,3}: maxima 10, 11, 14, 15 of arange(16). (Symmetric padding,
    # nn.MaxPool2d(3, 2, padding=1), would give windows {-1,0,1}, {1,2,3}: 5, 7, 13, 15.)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert resnet152.maxpool(x).flatten().tolist() == [10.0, 11.0, 14.0, 15.0]


def test_inception_v4_feature_maps_follow_slim_table(inception):
    f = inception.features
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Mixed_3a", "Mixed_4a", "Mixed_5a"]
    names += [f"Mixed_5{c}" for c in "bcde"] + ["Mixed_6a"] + [f"Mixed_6{c}" for c in "bcdefgh"]
    names += ["Mixed_7a"] + [f"Mixed_7{c}" for c in "bcd"]
    assert len(names) == len(f)
    shapes, logits = _output_shapes(inception, dict(zip(names, f)), torch.randn(1, 3, 299, 299))
    expected = {  # tf_slim_compat.md section 2
        "Conv2d_1a_3x3": (32, 149, 149),
        "Conv2d_2a_3x3": (32, 147, 147),
        "Conv2d_2b_3x3": (64, 147, 147),
        "Mixed_3a": (160, 73, 73),
        "Mixed_4a": (192, 71, 71),
        "Mixed_5a": (384, 35, 35),
        **{f"Mixed_5{c}": (384, 35, 35) for c in "bcde"},
        "Mixed_6a": (1024, 17, 17),
        **{f"Mixed_6{c}": (1024, 17, 17) for c in "bcdefgh"},
        "Mixed_7a": (1536, 8, 8),
        **{f"Mixed_7{c}": (1536, 8, 8) for c in "bcd"},
    }
    assert shapes == expected
    assert logits.shape == (1, 1001)


def test_inception_v4_aux_head_and_training_output(inception):
    x = torch.randn(2, 3, 299, 299)
    head = inception.aux_head
    shapes, _ = _output_shapes(
        inception.forward_with_aux, {"pool": head.pool, "conv2": head.conv2}, x
    )
    assert shapes == {"pool": (1024, 5, 5), "conv2": (768, 1, 1)}  # 5x5/3 VALID, 5x5 VALID
    with torch.no_grad():
        logits, aux = inception.forward_with_aux(x)
    assert logits.shape == aux.shape == (2, 1001)
    inception.train()
    try:
        out = inception(x)
    finally:
        inception.eval()
    assert isinstance(out, tuple) and [t.shape for t in out] == [(2, 1001), (2, 1001)]
    assert inception.head_drop.p == pytest.approx(0.2)  # dropout_keep_prob 0.8


def test_inception_v4_slim_batch_norm_settings(inception):
    bns = [m for m in inception.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 151  # 149 trunk + 2 aux convs
    # inception_arg_scope: epsilon 0.001, decay 0.9997, no gamma (frozen at 1)
    assert all(b.eps == 1e-3 and b.momentum == pytest.approx(3e-4) for b in bns)
    assert all(not b.weight.requires_grad and bool((b.weight == 1).all()) for b in bns)


def test_reset_classifier_resets_both_heads():
    model = slim_inception_v4()
    model.reset_classifier(10)
    assert model.get_classifier().out_features == 10 and model.aux_head.fc.out_features == 10
    with torch.no_grad():
        logits, aux = model.eval().forward_with_aux(torch.randn(1, 3, 299, 299))
    assert logits.shape == aux.shape == (1, 10)
    model.reset_classifier(0)  # slim builds no AuxLogits without classes
    assert model.aux_head is None and not model.aux_logits_enabled
    resnet = slim_resnet_v1_50()
    resnet.reset_classifier(7)
    assert resnet.get_classifier().out_features == 7 and resnet.num_classes == 7


def test_defaults_dicts():
    assert SLIM_RESNET_DEFAULTS["num_classes"] == 1000 and SLIM_RESNET_DEFAULTS["label_offset"] == 1
    assert SLIM_RESNET_DEFAULTS["preset"] == "vgg" and SLIM_RESNET_DEFAULTS["input_size"] == (
        3,
        224,
        224,
    )
    assert (
        SLIM_INCEPTION_V4_DEFAULTS["num_classes"] == 1001
        and SLIM_INCEPTION_V4_DEFAULTS["label_offset"] == 0
    )
    assert SLIM_INCEPTION_V4_DEFAULTS["input_size"] == (3, 299, 299)


# ---------------------------------------------------------------- parameter counts


def _conv_bn(kh: int, kw: int, cin: int, cout: int, gamma: bool) -> tuple[int, int]:
    """(variables, elements) of a slim conv2d + batch_norm: weights, beta, [gamma], mean, var."""
    n_vec = 4 if gamma else 3
    return 1 + n_vec, kh * kw * cin * cout + n_vec * cout


def test_resnet_v1_152_parameter_count(resnet152):
    # Variable table of section 1: conv1; per unit conv1 1x1, conv2 3x3, conv3 1x1 (+ shortcut
    # in unit_1); logits [1, 1, 2048, 1000] + biases.
    parts = [_conv_bn(7, 7, 3, 64, True)]
    cin = 64
    for base, units in zip((64, 128, 256, 512), (3, 8, 36, 3)):
        for u in range(units):
            parts += [_conv_bn(1, 1, cin, base, True), _conv_bn(3, 3, base, base, True)]
            parts += [_conv_bn(1, 1, base, 4 * base, True)]
            if u == 0:
                parts.append(_conv_bn(1, 1, cin, 4 * base, True))
            cin = 4 * base
    parts.append((2, 2048 * 1000 + 1000))
    n_vars, n_elems = map(sum, zip(*parts))
    assert n_vars == 777
    slim_vars = state_dict_to_slim("resnet_v1_152", resnet152.state_dict())
    assert len(slim_vars) == 777 and sum(v.size for v in slim_vars.values()) == n_elems
    # torchvision's resnet152 (same parameter tensors, different strides): 60,192,808 parameters
    assert sum(p.numel() for p in resnet152.parameters()) == 60_192_808
    moving = sum(b.numel() for n, b in resnet152.named_buffers() if "running_" in n)
    assert sum(p.numel() for p in resnet152.parameters()) + moving == n_elems


# (kh, kw, in, out) of every Inception-v4 conv, transcribed from section 2's tables.
_A = [
    (1, 1, 384, 96),
    (1, 1, 384, 64),
    (3, 3, 64, 96),
    (1, 1, 384, 64),
    (3, 3, 64, 96),
    (3, 3, 96, 96),
]
_A += [(1, 1, 384, 96)]
_B = [(1, 1, 1024, 384), (1, 1, 1024, 192), (1, 7, 192, 224), (7, 1, 224, 256), (1, 1, 1024, 192)]
_B += [(7, 1, 192, 192), (1, 7, 192, 224), (7, 1, 224, 224), (1, 7, 224, 256), (1, 1, 1024, 128)]
_C = [(1, 1, 1536, 256), (1, 1, 1536, 384), (1, 3, 384, 256), (3, 1, 384, 256), (1, 1, 1536, 384)]
_C += [(3, 1, 384, 448), (1, 3, 448, 512), (1, 3, 512, 256), (3, 1, 512, 256), (1, 1, 1536, 256)]
_INCEPTION_CONVS = (
    [(3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64), (3, 3, 64, 96)]  # stem, Mixed_3a
    + [
        (1, 1, 160, 64),
        (3, 3, 64, 96),
        (1, 1, 160, 64),
        (1, 7, 64, 64),
        (7, 1, 64, 64),
        (3, 3, 64, 96),
    ]
    + [(3, 3, 192, 192)]  # Mixed_5a
    + _A * 4
    + [(3, 3, 384, 384), (1, 1, 384, 192), (3, 3, 192, 224), (3, 3, 224, 256)]  # Mixed_6a
    + _B * 7
    + [(1, 1, 1024, 192), (3, 3, 192, 192), (1, 1, 1024, 256), (1, 7, 256, 256), (7, 1, 256, 320)]
    + [(3, 3, 320, 320)]  # Mixed_7a
    + _C * 3
)


def test_inception_v4_parameter_count(inception):
    assert len(_INCEPTION_CONVS) == 149
    convs = _INCEPTION_CONVS + [(1, 1, 1024, 128), (5, 5, 128, 768)]  # AuxLogits
    parts = [_conv_bn(*c, gamma=False) for c in convs]
    parts += [(2, 768 * 1001 + 1001), (2, 1536 * 1001 + 1001)]  # Aux_logits, Logits
    n_vars, n_elems = map(sum, zip(*parts))
    assert n_vars == 608
    slim_vars = state_dict_to_slim("inception_v4", inception.state_dict())
    assert len(slim_vars) == 608 and sum(v.size for v in slim_vars.values()) == n_elems
    # Trainable = weights + beta + FCs (gamma frozen); + moving mean/var = slim's elements.
    trainable = sum(p.numel() for p in inception.parameters() if p.requires_grad)
    moving = sum(b.numel() for n, b in inception.named_buffers() if "running_" in n)
    assert trainable + moving == n_elems


# ---------------------------------------------------------------- converter


def test_conversion_transposes_hwio_and_fc_layouts(inception, resnet152):
    names = state_dict_to_slim("inception_v4", inception.state_dict())
    ckpt = _random_slim(names)
    state = slim_to_state_dict("inception_v4", ckpt, inception)
    w = ckpt["InceptionV4/Mixed_6b/Branch_1/Conv2d_0b_1x7/weights"]  # [kh=1, kw=7, in, out]
    assert w.shape == (1, 7, 192, 224)
    ours = state["features.11.branch1.1.conv.weight"]  # OIHW
    assert ours.shape == (224, 192, 1, 7) and ours[200, 100, 0, 5] == torch.tensor(
        w[0, 5, 100, 200]
    )
    fc = ckpt["InceptionV4/Logits/Logits/weights"]  # [in, out]
    assert state["last_linear.weight"][1000, 1535] == torch.tensor(fc[1535, 1000])
    assert torch.equal(state["features.11.branch0.bn.weight"], torch.ones(384))  # slim: no gamma
    assert torch.equal(
        state["aux_head.fc.bias"], torch.from_numpy(ckpt["InceptionV4/AuxLogits/Aux_logits/biases"])
    )

    rnames = state_dict_to_slim("resnet_v1_152", resnet152.state_dict())
    rckpt = _random_slim(rnames)
    rstate = slim_to_state_dict("resnet_v1_152", rckpt, resnet152)
    logits = rckpt["resnet_v1_152/logits/weights"]  # 1x1 conv [1, 1, 2048, 1000]
    assert logits.shape == (1, 1, 2048, 1000)
    assert rstate["fc.weight"][999, 2047] == torch.tensor(logits[0, 0, 2047, 999])
    shortcut = rckpt["resnet_v1_152/block3/unit_1/bottleneck_v1/shortcut/BatchNorm/moving_variance"]
    assert torch.equal(rstate["layer3.0.downsample.1.running_var"], torch.from_numpy(shortcut))
    unit = "resnet_v1_152/block3/unit_36/bottleneck_v1/conv2"
    assert torch.equal(
        rstate["layer3.35.bn2.weight"], torch.from_numpy(rckpt[f"{unit}/BatchNorm/gamma"])
    )


def test_round_trip_and_strict_load(resnet152):
    ckpt = _random_slim(state_dict_to_slim("resnet_v1_152", resnet152.state_dict()), seed=3)
    model = slim_resnet_v1_152()
    model.load_state_dict(slim_to_state_dict("resnet_v1_152", ckpt, model))  # strict
    back = state_dict_to_slim("resnet_v1_152", model.state_dict())
    assert back.keys() == ckpt.keys() and all(np.array_equal(back[n], ckpt[n]) for n in ckpt)


def test_optimizer_slots_global_step_and_ema_shadows(resnet152):
    base = _random_slim(state_dict_to_slim("resnet_v1_152", resnet152.state_dict()), seed=4)
    shadows = {f"{n}/ExponentialMovingAverage": v + 1.0 for n, v in base.items()}
    slots = {f"{n}/{s}": v for n, v in base.items() for s in ("RMSProp", "RMSProp_1", "Momentum")}
    ckpt = {**base, **shadows, **slots, "global_step": np.asarray(5, np.int64)}
    plain = slim_to_state_dict("resnet_v1_152", ckpt, resnet152)
    ema = slim_to_state_dict("resnet_v1_152", ckpt, resnet152, use_ema=True)
    w = base["resnet_v1_152/conv1/weights"].transpose(3, 2, 0, 1)
    assert np.array_equal(plain["conv1.weight"].numpy(), w)
    assert np.array_equal(ema["conv1.weight"].numpy(), w + 1.0)
    with pytest.raises(UserError, match="no ExponentialMovingAverage"):
        slim_to_state_dict("resnet_v1_152", base, resnet152, use_ema=True)


def test_wrong_checkpoint_lists_missing_and_unexpected(resnet152):
    v50 = state_dict_to_slim("resnet_v1_50", slim_resnet_v1_50().state_dict())
    assert len(v50) == 267  # 5 + 16 units x 15 + 4 shortcuts x 5 + 2
    with pytest.raises(UserError) as err:
        slim_to_state_dict("resnet_v1_152", v50, resnet152, source="resnet_v1_50.ckpt")
    msg = str(err.value)
    assert msg.startswith("resnet_v1_50.ckpt does not fit resnet_v1_152")
    assert (
        "777 missing (resnet_v1_152/conv1/weights" in msg and "267 unexpected (resnet_v1_50/" in msg
    )
    assert "under 'resnet_v1_50/'" in msg and "\n" not in msg
    # Same variables under the 152 scope: 4 + 30 units of blocks 2 and 3 missing, 15 vars each.
    renamed = {n.replace("resnet_v1_50/", "resnet_v1_152/"): v for n, v in v50.items()}
    with pytest.raises(UserError, match=r"510 missing \(resnet_v1_152/block2/unit_5/"):
        slim_to_state_dict("resnet_v1_152", renamed, resnet152)


def test_resnet_requires_gamma_inception_does_not(resnet152, inception):
    ckpt = _random_slim(state_dict_to_slim("resnet_v1_152", resnet152.state_dict()))
    no_gamma = {n: v for n, v in ckpt.items() if not n.endswith("/gamma")}
    with pytest.raises(UserError, match="155 missing"):  # 155 BN layers in resnet_v1_152
        slim_to_state_dict("resnet_v1_152", no_gamma, resnet152)
    inc = _random_slim(state_dict_to_slim("inception_v4", inception.state_dict()))
    assert not any(n.endswith("/gamma") for n in inc)
    state = slim_to_state_dict("inception_v4", inc, inception)
    assert all(bool((state[k] == 1).all()) for k in state if k.endswith("bn.weight"))


def test_other_num_classes_needs_exclude_then_keeps_fresh_heads(inception):
    ckpt = _random_slim(state_dict_to_slim("inception_v4", inception.state_dict()))
    torch.manual_seed(1)
    model = slim_inception_v4(num_classes=10)
    with pytest.raises(UserError) as err:
        slim_to_state_dict("inception_v4", ckpt, model)
    assert (
        "4 shape mismatches (InceptionV4/AuxLogits/Aux_logits/weights "
        "checkpoint float32[768, 1001] model [768, 10]" in str(err.value)
    )
    own = {k: v.clone() for k, v in model.state_dict().items()}
    # The InceptionV4 recipe's transfer scopes, written in full.
    exclude = ["InceptionV4/Logits/Logits", "InceptionV4/AuxLogits/Aux_logits"]
    state = slim_to_state_dict("inception_v4", ckpt, model, exclude=exclude)
    model.load_state_dict(state)
    assert torch.equal(state["last_linear.weight"], own["last_linear.weight"])
    assert torch.equal(state["aux_head.fc.bias"], own["aux_head.fc.bias"])
    aux_conv = ckpt["InceptionV4/AuxLogits/Conv2d_2a/weights"].transpose(3, 2, 0, 1)
    assert np.array_equal(
        state["aux_head.conv2.conv.weight"].numpy(), aux_conv
    )  # kept: not excluded
    assert slim_head_scopes("inception_v4") == ("Logits", "AuxLogits")
    assert slim_head_scopes("resnet_v1_152") == ("logits",)
    with pytest.raises(UserError, match="exclude scope 'Logitz' matches no variable"):
        slim_to_state_dict("inception_v4", ckpt, model, exclude=["Logitz"])


def test_unknown_model_name_is_a_user_error(resnet152):
    with pytest.raises(UserError, match="no TF-slim variable mapping for model 'resnet50'"):
        slim_to_state_dict("resnet50", {}, resnet152)
