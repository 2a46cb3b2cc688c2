"""The InceptionV4 recipe's optimizer is TensorFlow's RMSProp, weight decay included.

TF semantics (training_ops ApplyRMSProp; RMSPropOptimizer creates the ``rms`` slot with ones):

    ms  = decay * ms + (1 - decay) * g^2          ms starts at 1
    mom = momentum * mom + lr * g / sqrt(ms + eps)   epsilon inside the square root
    w  -= mom

Weight decay: slim's ``inception_arg_scope(weight_decay=...)`` adds ``wd * l2_loss(w) =
wd * sum(w^2) / 2`` to the loss for conv and fully-connected *weights* only (no regularizer on
biases or batch-norm parameters), so the gradient gains ``wd * w``. timm's RMSpropTF with
``decoupled_decay=False`` (what ``create_optimizer_v2`` builds) does exactly ``grad += wd * w``
before the update, and ``filter_bias_and_bn=True`` puts every 1-d parameter (biases, norm
parameters) in a group with weight decay 0. The expected numbers below follow that.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from classzoo.config import load_recipe
from classzoo.engine.optim import build_optimizer, scaled_lr

W0 = [[0.5, -0.25], [1.5, 2.0]]
B0 = [0.1, -0.3]
# data-loss gradients of the three steps (weight decay comes on top, for the weight only)
GRAD_W = [[[0.2, -1.0], [3.0, 0.0]], [[-0.4, 0.5], [2.0, 0.1]], [[0.3, 0.3], [-1.0, -0.2]]]
GRAD_B = [[1.0, -2.0], [0.5, 0.5], [-1.5, 0.25]]
# w[0][0] and b[0] after steps 1, 2, 3, worked out from the formula above with lr 0.045,
# decay 0.9, momentum 0.9, epsilon 1.0, weight decay 1e-5. Step 1 by hand:
# g = 0.2 + 1e-5 * 0.5 = 0.200005; ms = 0.9 * 1 + 0.1 * g^2 = 0.9040002;
# mom = 0.045 * g / sqrt(1.9040002) = 0.0065225869; w = 0.5 - mom = 0.4934774131.
EXPECTED_W00 = [0.4934774131308833, 0.5009143588781559, 0.49741880452108783]
EXPECTED_B0 = [0.06818019484660537, 0.023325495880030134, 0.030014308580475532]


def flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


def tf_rmsprop(w: float, grads: list[float], lr, decay, momentum, eps, wd) -> list[float]:
    """The TF update of one scalar, in plain Python floats; returns w after each step."""
    ms, mom, out = 1.0, 0.0, []
    for g in grads:
        g = g + wd * w  # d/dw of wd * w^2 / 2 (slim's l2_regularizer)
        ms = decay * ms + (1.0 - decay) * g * g
        mom = momentum * mom + lr * g / math.sqrt(ms + eps)
        w = w - mom
        out.append(w)
    return out


def expected(wd: float, lr: float) -> tuple[list, list]:
    """Weight and bias after each step: element-wise TF RMSProp (no decay on the bias)."""
    ws = [
        [tf_rmsprop(W0[i][j], [g[i][j] for g in GRAD_W], lr, 0.9, 0.9, 1.0, wd) for j in range(2)]
        for i in range(2)
    ]
    bs = [tf_rmsprop(B0[i], [g[i] for g in GRAD_B], lr, 0.9, 0.9, 1.0, 0.0) for i in range(2)]
    steps_w = [[[ws[i][j][t] for j in range(2)] for i in range(2)] for t in range(3)]
    steps_b = [[bs[i][t] for i in range(2)] for t in range(3)]
    return steps_w, steps_b


def classzoo_steps(weight_decay: float | None = None) -> tuple[list, list, float]:
    """Three steps of the optimizer classzoo builds from the inception_v4 recipe (float64)."""
    extra = [] if weight_decay is None else [f"optim.weight_decay={weight_decay}"]
    cfg = load_recipe("inception_v4", extra)
    lr = scaled_lr(cfg.optim, 128)  # one device, batch 128: the reference's 0.045
    layer = nn.Linear(2, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(W0, dtype=torch.float64))
        layer.bias.copy_(torch.tensor(B0, dtype=torch.float64))
    opt = build_optimizer(layer, cfg.optim, lr)
    ws, bs = [], []
    for gw, gb in zip(GRAD_W, GRAD_B):
        opt.zero_grad()
        layer.weight.grad = torch.tensor(gw, dtype=torch.float64)
        layer.bias.grad = torch.tensor(gb, dtype=torch.float64)
        opt.step()
        ws.append(layer.weight.detach().tolist())
        bs.append(layer.bias.detach().tolist())
    return ws, bs, lr


def test_recipe_optimizer_is_tf_rmsprop_with_l2_on_weights():
    ws, bs, lr = classzoo_steps()
    assert lr == 0.045
    assert [w[0][0] for w in ws] == pytest.approx(EXPECTED_W00, rel=1e-12, abs=1e-14)
    assert [b[0] for b in bs] == pytest.approx(EXPECTED_B0, rel=1e-12, abs=1e-14)
    want_w, want_b = expected(1e-5, lr)
    for t in range(3):
        assert flat(ws[t]) == pytest.approx(flat(want_w[t]), rel=1e-12, abs=1e-14)
        assert bs[t] == pytest.approx(want_b[t], rel=1e-12, abs=1e-14)
    # The check is sharp enough to see the 1e-5 weight decay: without it w[0][0] differs by ~1e-7.
    no_decay = tf_rmsprop(W0[0][0], [g[0][0] for g in GRAD_W], lr, 0.9, 0.9, 1.0, 0.0)
    assert abs(no_decay[-1] - EXPECTED_W00[-1]) > 1e-8


def test_strong_weight_decay_is_l2_in_the_gradient_not_decoupled():
    ws, bs, lr = classzoo_steps(weight_decay=0.05)
    want_w, want_b = expected(0.05, lr)
    for t in range(3):
        assert flat(ws[t]) == pytest.approx(flat(want_w[t]), rel=1e-12, abs=1e-14)
        assert bs[t] == pytest.approx(want_b[t], rel=1e-12, abs=1e-14)  # biases: never decayed


@pytest.mark.compat
def test_matches_tensorflow_rmsprop_optimizer():
    """The same three steps through tf.compat.v1.train.RMSPropOptimizer, L2 in the loss."""
    from tf_compat import import_tf

    tf = import_tf()
    wd, lr = 1e-5, 0.045
    w = tf.Variable(tf.constant(W0, tf.float64))
    b = tf.Variable(tf.constant(B0, tf.float64))
    # Python floats would become float32 tensors (0.045 -> 0.04500000178...) cast to the
    # variables' float64: give the hyper-parameters as float64 so both sides compute the same.
    f64 = lambda x: tf.constant(x, tf.float64)  # noqa: E731
    opt = tf.compat.v1.train.RMSPropOptimizer(
        f64(lr), decay=f64(0.9), momentum=f64(0.9), epsilon=f64(1.0)
    )
    tf_w, tf_b = [], []
    for gw, gb in zip(GRAD_W, GRAD_B):
        with tf.GradientTape() as tape:
            data_loss = tf.reduce_sum(tf.constant(gw, tf.float64) * w) + tf.reduce_sum(
                tf.constant(gb, tf.float64) * b
            )
            loss = data_loss + wd * tf.nn.l2_loss(w)  # slim l2_regularizer on weights only
        opt.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
        tf_w.append(w.numpy().tolist())
        tf_b.append(b.numpy().tolist())
    ws, bs, _ = classzoo_steps()
    for t in range(3):
        assert flat(ws[t]) == pytest.approx(flat(tf_w[t]), rel=1e-12, abs=1e-14)
        assert bs[t] == pytest.approx(tf_b[t], rel=1e-12, abs=1e-14)
    assert [x[0][0] for x in tf_w] == pytest.approx(EXPECTED_W00, rel=1e-12)
