"""Parity with TensorFlow: slim's own graphs vs classzoo's PyTorch ports + converter.

The outside truth is TF-slim itself: ``tf_slim.nets.resnet_v1`` and a line-by-line port of
slim's ``inception_v4.py`` (tests/tf_slim_inception_v4.py), built in TF1 graph mode with every
variable, BN moving statistics included, set to random values, saved by ``tf.train.Saver`` and
read back with ``tf.train.load_checkpoint``. The converted PyTorch model must give TF's logits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import classzoo
from classzoo.models.slim_inception_v4 import slim_inception_v4
from classzoo.models.slim_names import slim_to_state_dict, state_dict_to_slim
from classzoo.models.slim_resnet import slim_resnet_v1_152
from tf_compat import import_tf, import_tf_slim

tf = import_tf()
slim = import_tf_slim()
from tf_slim.nets import resnet_v1  # noqa: E402

import tf_slim_inception_v4 as slim_inception  # noqa: E402  (needs tf_compat's import first)

pytestmark = [pytest.mark.compat, pytest.mark.slow]

EMA = "/ExponentialMovingAverage"
TOL = 1e-3  # max |logit difference| allowed


def _random_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A non-trivial value for a slim variable, scaled so that 150 layers neither vanish nor
    explode: He-scaled weights, and a small gamma on ResNet's conv3 (the residual branch)."""
    base = name.removesuffix(EMA)
    kind = base.rsplit("/", 1)[-1]
    if kind == "global_step":
        return np.asarray(1234, np.int64)
    if kind == "weights":
        value = rng.normal(0.0, math.sqrt(2.0 / math.prod(shape[:-1])), shape)
    elif kind == "biases":
        value = rng.normal(0.0, 0.1, shape)
    elif kind == "gamma":
        value = rng.uniform(0.1, 0.3, shape) if "/conv3/" in base else rng.uniform(0.5, 1.5, shape)
    elif kind in ("beta", "moving_mean"):
        value = rng.normal(0.0, 0.1, shape)
    elif kind == "moving_variance":
        value = rng.uniform(0.5, 1.5, shape)  # positive, as a variance is
    else:
        raise AssertionError(f"unexpected variable {name}")
    return value.astype(np.float32)


def _run_slim(build, image: np.ndarray, fetch: tuple[str, ...], tmp_dir, ema: bool = False) -> dict:
    """Build a slim graph, randomize its variables, run it, save and re-read the checkpoint.

    Returns the fetched end points (``logits`` = the network output), the checkpoint variables
    and, with ``ema``, the logits after restoring the EMA shadows the way eval_image_classifier
    does (``ExponentialMovingAverage.variables_to_restore``).
    """
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, image.shape)
        logits, end_points = build(inputs)
        tensors = {"logits": logits, **{k: end_points[k] for k in fetch}}
        tf.compat.v1.train.get_or_create_global_step()
        averages = None
        if ema:  # train_image_classifier --moving_average_decay: shadows of all model variables
            averages = tf.compat.v1.train.ExponentialMovingAverage(0.9999)
            averages.apply(slim.get_model_variables())
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=2, inter_op_parallelism_threads=1
        )
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            # Feed every variable's initial value at once (var.load per variable adds ops).
            variables = tf.compat.v1.global_variables()
            values = {
                v.initial_value: _random_value(v.op.name, tuple(v.shape.as_list()), rng)
                for v in variables
            }
            sess.run([v.initializer for v in variables], values)
            out = sess.run(tensors, {inputs: image})
            prefix = str(tmp_dir / "model.ckpt")
            tf.compat.v1.train.Saver().save(sess, prefix)
            # the 2016 slim tarballs are single-file V1 checkpoints: TF still writes those too
            v1 = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1)
            out["v1_path"] = v1.save(sess, str(tmp_dir / "model_v1.ckpt"), write_meta_graph=False)
            out["v2_prefix"] = prefix
            if averages is not None:
                tf.compat.v1.train.Saver(averages.variables_to_restore()).restore(sess, prefix)
                out["logits_ema"] = sess.run(logits, {inputs: image})
    reader = tf.train.load_checkpoint(prefix)
    out["variables"] = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    return out


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    def build(inputs):
        with slim.arg_scope(resnet_v1.resnet_arg_scope()):
            net, end_points = resnet_v1.resnet_v1_152(inputs, 1000, is_training=False)
        return tf.squeeze(net, [1, 2]), end_points

    image = np.random.default_rng(1).normal(0.0, 1.0, (2, 224, 224, 3)).astype(np.float32)
    out = _run_slim(build, image, (), tmp_path_factory.mktemp("resnet"), ema=True)
    return image, out


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    def build(inputs):
        with slim.arg_scope(slim_inception.inception_v4_arg_scope()):
            return slim_inception.inception_v4(inputs, 1001, is_training=False)

    image = np.random.default_rng(2).uniform(-1.0, 1.0, (2, 299, 299, 3)).astype(np.float32)
    fetch = ("AuxLogits", "PreLogitsFlatten")
    return image, _run_slim(build, image, fetch, tmp_path_factory.mktemp("inception"))


def _nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()


def _max_diff(ours: torch.Tensor, theirs: np.ndarray) -> float:
    return float(np.abs(ours.detach().numpy() - theirs).max())


@pytest.mark.parametrize("fmt", ["v2_prefix", "v1_path"])
def test_resnet_v1_152_logits_match_tensorflow(resnet, fmt):
    """classzoo.create_model reads TF's own Saver output (V2 bundle, V1 single file)."""
    image, out = resnet
    model = classzoo.create_model("resnet_v1_152", checkpoint=out[fmt]).eval()
    with torch.no_grad():
        logits = model(_nchw(image))
    diff = _max_diff(logits, out["logits"])
    print(
        f"\nresnet_v1_152 ({fmt}): max |logit diff| {diff:.2e}, "
        f"max |logit| {np.abs(out['logits']).max():.2f}"
    )
    assert np.abs(out["logits"][0] - out["logits"][1]).max() > 0.5  # the input matters
    assert diff <= TOL


def test_resnet_v1_152_ema_shadows_match_tensorflow_restore(resnet):
    image, out = resnet
    model = slim_resnet_v1_152().eval()
    model.load_state_dict(
        slim_to_state_dict("resnet_v1_152", out["variables"], model, use_ema=True)
    )
    with torch.no_grad():
        logits = model(_nchw(image))
    assert np.abs(out["logits_ema"] - out["logits"]).max() > 1e-2  # the shadows differ
    assert _max_diff(logits, out["logits_ema"]) <= TOL


def test_resnet_v1_152_variable_table_matches_slim(resnet):
    _, out = resnet
    ours = state_dict_to_slim("resnet_v1_152", slim_resnet_v1_152().state_dict())
    theirs = {
        n: v.shape for n, v in out["variables"].items() if n != "global_step" and EMA not in n
    }
    assert len(theirs) == 777
    assert {n: v.shape for n, v in ours.items()} == theirs


@pytest.mark.parametrize("fmt", ["v2_prefix", "v1_path"])
def test_inception_v4_logits_and_aux_logits_match_tensorflow(inception, fmt):
    image, out = inception
    model = classzoo.create_model("inception_v4", checkpoint=out[fmt]).eval()
    with torch.no_grad():
        logits, aux = model.forward_with_aux(_nchw(image))
    diff, aux_diff = _max_diff(logits, out["logits"]), _max_diff(aux, out["AuxLogits"])
    print(
        f"inception_v4: max |logit diff| {diff:.2e} "
        f"(max |logit| {np.abs(out['logits']).max():.2f}), "
        f"aux {aux_diff:.2e} (max |aux| {np.abs(out['AuxLogits']).max():.2f})"
    )
    for theirs in (out["logits"], out["AuxLogits"]):
        assert np.abs(theirs[0] - theirs[1]).max() > 0.1  # the input matters
    assert diff <= TOL and aux_diff <= TOL


def test_inception_v4_variable_table_matches_slim(inception):
    _, out = inception
    ours = state_dict_to_slim("inception_v4", slim_inception_v4().state_dict())
    theirs = {n: v.shape for n, v in out["variables"].items() if n != "global_step"}
    assert len(theirs) == 608  # no BN gamma in slim's Inception
    assert {n: v.shape for n, v in ours.items()} == theirs


def test_exclude_heads_for_ten_classes_keeps_trunk_and_fresh_heads(inception):
    image, out = inception
    torch.manual_seed(0)
    model = slim_inception_v4(num_classes=10).eval()
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    state = slim_to_state_dict(
        "inception_v4", out["variables"], model, exclude=["Logits", "AuxLogits"]
    )
    model.load_state_dict(state)
    heads = ("last_linear.", "aux_head.")
    for key, value in model.state_dict().items():
        if key.startswith(heads):
            assert torch.equal(value, fresh[key]), key  # left at the model's own init
    with torch.no_grad():
        pre_logits = model.forward_head(model.forward_features(_nchw(image)), pre_logits=True)
        logits, aux = model.forward_with_aux(_nchw(image))
    assert _max_diff(pre_logits, out["PreLogitsFlatten"]) <= TOL  # trunk equals slim's
    assert logits.shape == aux.shape == (2, 10)


def test_convert_slim_cli_writes_a_checkpoint_with_tf_logits(resnet, tmp_path, capsys):
    """`classzoo convert slim` (V1 file in) -> a classzoo .pt that create_model loads."""
    from classzoo.cli import main

    image, out = resnet
    assert (
        main(
            [
                "convert",
                "slim",
                "--model",
                "resnet_v1_152",
                "--checkpoint",
                out["v1_path"],
                "--list",
            ]
        )
        == 0
    )
    listing = capsys.readouterr().out
    assert "resnet_v1_152/block3/unit_36/bottleneck_v1/conv2/weights" in listing and "V1" in listing
    target = tmp_path / "r152.pt"
    assert (
        main(
            [
                "convert",
                "slim",
                "--model",
                "resnet_v1_152",
                "--checkpoint",
                out["v1_path"],
                "--output",
                str(target),
            ]
        )
        == 0
    )
    model = classzoo.create_model("resnet_v1_152", checkpoint=target).eval()
    with torch.no_grad():
        assert _max_diff(model(_nchw(image)), out["logits"]) <= TOL
