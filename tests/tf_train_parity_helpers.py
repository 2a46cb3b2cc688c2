"""Test support for tests/test_train_parity_tf.py: one slim training step in TF-slim and classzoo.

TF side (the outside truth), as research/slim/train_image_classifier.py builds it:
``tf.compat.v1.losses.softmax_cross_entropy(onehot, logits, label_smoothing)`` (+ the AuxLogits
loss with ``weights=0.4``), total loss = ``add_n(losses + regularization_losses)`` (slim's
``l2_regularizer(wd)`` on conv / fully-connected *weights*: ``wd * sum(w^2) / 2``), gradients of
every trainable variable by ``optimizer.compute_gradients``, and a train op that groups
``apply_gradients`` with the UPDATE_OPS (BN moving statistics). Every model variable, BN moving
statistics included, gets a random value before the checkpoint is written by ``tf.train.Saver``.

classzoo side: the model built from a recipe config with ``model.checkpoint`` = that TF file,
the recipe's optimizer (``build_optimizer``) and classzoo's training step. Results on both sides
are keyed by slim variable names (classzoo's converter maps them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from classzoo.models.slim_names import state_dict_to_slim
from tf_compat import import_tf, import_tf_slim

tf = import_tf()
slim = import_tf_slim()

# TF slot names -> classzoo (timm / torch) optimizer state keys holding the same quantity.
# MomentumOptimizer: slot "Momentum" = accum (accum = momentum * accum + g; w -= lr * accum),
# torch SGD's momentum_buffer. RMSPropOptimizer: "RMSProp" = the mean square (starts at 1),
# "RMSProp_1" = the momentum (the step itself: lr * g / sqrt(ms + eps)); timm RMSpropTF's
# square_avg and momentum_buffer (lr_in_momentum=True).
SLOTS = {
    "Momentum": "momentum_buffer",
    "RMSProp": "square_avg",
    "RMSProp_1": "momentum_buffer",
}


@dataclass
class StepResult:
    """One training step, every array keyed by slim variable name."""

    total_loss: float  # data loss + L2
    data_loss: float  # cross-entropy (+ aux weight x aux cross-entropy), mean over the batch
    grads: dict[str, np.ndarray]  # d total_loss / d variable, before the update
    after: dict[str, np.ndarray]  # model variables after the step (BN moving statistics too)
    slots: dict[str, np.ndarray] = field(default_factory=dict)  # "<var>/<TF slot>" after
    decayed: set[str] = field(default_factory=set)  # variables carrying L2 / weight decay
    before: dict[str, np.ndarray] = field(default_factory=dict)  # TF side: values saved


def random_slim_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A non-trivial value for a slim model variable (He-scaled weights, positive variances)."""
    kind = name.rsplit("/", 1)[-1]
    if kind == "weights":
        value = rng.normal(0.0, math.sqrt(2.0 / math.prod(shape[:-1])), shape)
    elif kind == "biases":
        value = rng.normal(0.0, 0.1, shape)
    elif kind == "gamma":
        value = rng.uniform(0.1, 0.3, shape) if "/conv3/" in name else rng.uniform(0.5, 1.5, shape)
    elif kind in ("beta", "moving_mean"):
        value = rng.normal(0.0, 0.1, shape)
    elif kind == "moving_variance":
        value = rng.uniform(0.5, 1.5, shape)
    else:
        raise AssertionError(f"unexpected model variable {name}")
    return value.astype(np.float32)


def _slim_losses(end_points: dict, logits, onehot, label_smoothing: float, aux_weight: float):
    """train_image_classifier.py's losses: aux first (weights=0.4), then the logits."""
    if "AuxLogits" in end_points:
        tf.compat.v1.losses.softmax_cross_entropy(
            onehot,
            end_points["AuxLogits"],
            label_smoothing=label_smoothing,
            weights=aux_weight,
            scope="aux_loss",
        )
    tf.compat.v1.losses.softmax_cross_entropy(
        onehot, logits, label_smoothing=label_smoothing, weights=1.0
    )
    data_loss = tf.add_n(tf.compat.v1.losses.get_losses())
    regularization = tf.compat.v1.losses.get_regularization_losses()
    return data_loss, tf.add_n([data_loss, *regularization]), regularization


def _variable_of(loss) -> str:
    """The variable a regularization loss reads (its op names follow the layer's, not slim's
    variable names: ``.../kernel/Regularizer`` for ``.../weights``), found in the graph."""
    ops, seen = [loss.op], set()
    while ops:
        op = ops.pop()
        if op.type in ("VarHandleOp", "VariableV2"):
            return op.name
        seen.add(op.name)
        ops.extend(t.op for t in op.inputs if t.op.name not in seen)
    raise AssertionError(f"no variable under {loss.name}")


@dataclass
class _StepGraph:
    """The tensors and ops of one slim training step (train_image_classifier.py's graph)."""

    data_loss: object
    total: object
    grads_and_vars: list
    train_op: object
    model_vars: dict
    slots: dict
    decayed: set


def _step_graph(build, image, labels, num_classes, make_optimizer, smoothing, aux_weight):
    dtype = tf.as_dtype(image.dtype)
    # FusedBatchNormV3 has no float64 kernel: a float64 graph uses slim's non-fused batch_norm
    # (the same forward and gradient; only its moving variance is the biased batch variance)
    with slim.arg_scope([slim.batch_norm], fused=None if dtype == tf.float32 else False):
        logits, end_points = build(tf.constant(image))
    onehot = tf.one_hot(tf.constant(labels), num_classes, dtype=dtype)
    data_loss, total, regularization = _slim_losses(
        end_points, logits, onehot, smoothing, aux_weight
    )
    global_step = tf.compat.v1.train.get_or_create_global_step()
    optimizer = make_optimizer(dtype)
    trainable = tf.compat.v1.trainable_variables()
    grads_and_vars = optimizer.compute_gradients(total, trainable)
    apply = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
    # train_image_classifier: update_ops (BN moving averages) grouped with the gradient step
    update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    slots = {
        f"{v.op.name}/{slot.op.name.rsplit('/', 1)[-1]}": slot
        for v in trainable
        for slot in (optimizer.get_slot(v, s) for s in optimizer.get_slot_names())
        if slot is not None
    }
    return _StepGraph(
        data_loss,
        total,
        grads_and_vars,
        tf.group(apply, *update_ops),
        {v.op.name: v for v in slim.get_model_variables()},
        slots,
        {_variable_of(r) for r in regularization},
    )


def tf_train_step(
    build: Callable,
    image: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    make_optimizer: Callable,
    label_smoothing: float,
    aux_weight: float,
    values: dict[str, np.ndarray] | None = None,
    checkpoint_dir: Path | None = None,
) -> tuple[str | None, StepResult]:
    """One slim training step on ``image`` (NHWC; its dtype is the graph's).

    ``build(inputs) -> (logits, end_points)`` builds the network under its arg scope;
    ``make_optimizer(dtype)`` the TF optimizer. The model variables start from ``values`` or,
    when None, from random float32 values (``result.before``). With ``checkpoint_dir`` they are
    first saved there by ``tf.train.Saver``. Returns (checkpoint prefix or None, result).
    """
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        g = _step_graph(
            build, image, labels, num_classes, make_optimizer, label_smoothing, aux_weight
        )
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=2, inter_op_parallelism_threads=1
        )
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            feed = {
                v.initial_value: (
                    random_slim_value(name, tuple(v.shape.as_list()), rng)
                    if values is None
                    else values[name]
                ).astype(image.dtype)
                for name, v in g.model_vars.items()
            }
            sess.run([v.initializer for v in tf.compat.v1.global_variables()], feed)
            before = sess.run({n: v.read_value() for n, v in g.model_vars.items()})
            prefix = None
            if checkpoint_dir is not None:
                saver = tf.compat.v1.train.Saver()
                prefix = saver.save(sess, str(checkpoint_dir / "model.ckpt"))
            # one run, as slim's train_op: resource-variable reads are snapshots (an update
            # copies a buffer still referenced), so the fetched loss is the one before the step
            fetched = sess.run(
                {
                    "data": g.data_loss,
                    "total": g.total,
                    "grads": [x for x, _ in g.grads_and_vars],
                    "train": g.train_op,
                }
            )
            after = sess.run({n: v.read_value() for n, v in g.model_vars.items()})
            slot_values = sess.run({n: s.read_value() for n, s in g.slots.items()})
    return prefix, StepResult(
        total_loss=float(fetched["total"]),
        data_loss=float(fetched["data"]),
        grads={v.op.name: x for (_, v), x in zip(g.grads_and_vars, fetched["grads"])},
        after=after,
        slots=slot_values,
        decayed=g.decayed,
        before=before,
    )


def slim_keys(model_name: str, model: torch.nn.Module) -> dict[str, str]:
    """slim variable name -> state-dict key, read through classzoo's converter: every tensor is
    filled with its own index, converted, and the index read back where it lands."""
    keys = list(model.state_dict())
    marked = {
        k: torch.full(v.shape, float(i + 2), dtype=torch.float64)
        for i, (k, v) in enumerate(model.state_dict().items())
    }
    return {
        name: keys[int(value.flat[0]) - 2]
        for name, value in state_dict_to_slim(model_name, marked).items()
    }


def _to_slim(
    model_name: str, model: torch.nn.Module, values: dict[str, torch.Tensor], names: dict
) -> dict[str, np.ndarray]:
    """slim-named arrays of ``values`` ({state-dict key: tensor}), converted by classzoo."""
    state = {k: values.get(k, v) for k, v in model.state_dict().items()}
    return {
        name: value
        for name, value in state_dict_to_slim(model_name, state).items()
        if names.get(name) in values
    }


def classzoo_result(
    model_name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    before: dict[str, torch.Tensor],
    data_loss: float,
) -> StepResult:
    """What classzoo's step left, slim-named: ``.grad`` (the data-loss gradient) plus the coupled
    weight decay ``wd * w`` the optimizer adds (at the weights *before* the step; slim's L2 term
    has the same gradient), the model variables and the optimizer state after the step."""
    names = slim_keys(model_name, model)
    params = dict(model.named_parameters())
    wd_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    grads, decayed, l2 = {}, set(), 0.0
    for key, p in params.items():
        if p.grad is None:
            continue
        wd = wd_of.get(id(p), 0.0)
        grads[key] = p.grad.detach() + wd * before[key]
        if wd:
            decayed.add(key)
            l2 += 0.5 * wd * float(before[key].double().pow(2).sum())  # slim: wd * l2_loss(w)
    slots = {}
    slot_names = (
        ("Momentum",) if isinstance(optimizer, torch.optim.SGD) else ("RMSProp", "RMSProp_1")
    )
    for tf_slot in slot_names:
        state_key = SLOTS[tf_slot]
        buffers = {
            k: optimizer.state[p][state_key]
            for k, p in params.items()
            if state_key in optimizer.state.get(p, {})
        }
        converted = _to_slim(model_name, model, buffers, names)
        slots.update((f"{n}/{tf_slot}", v) for n, v in converted.items())
    return StepResult(
        total_loss=data_loss + l2,
        data_loss=data_loss,
        grads=_to_slim(model_name, model, grads, names),
        after=state_dict_to_slim(model_name, model.state_dict()),
        slots=slots,
        decayed={n for n, k in names.items() if k in decayed},
    )


def classzoo_model(recipe: str, overrides: list[str], image_size: int) -> torch.nn.Module:
    """The model ``classzoo train`` builds from ``recipe`` + ``overrides`` (engine.build)."""
    from classzoo.config import load_recipe
    from classzoo.engine.build import build_model

    cfg = load_recipe(recipe, overrides)
    model, _ = build_model(cfg.model, cfg.model.num_classes, image_size, cfg.train.seed)
    return model


def classzoo_train_step(
    model: torch.nn.Module,
    recipe: str,
    overrides: list[str],
    image: np.ndarray,
    labels: np.ndarray,
) -> StepResult:
    """One step of classzoo's own ``engine.loop.train_step`` on ``image`` (NHWC -> NCHW; a
    float64 image makes ``model``, as ``classzoo_model`` built it, float64 too).

    Optimizer (``build_optimizer`` of the optim section) and step settings (label smoothing,
    aux weight, channels_last, clip_grad) come from ``recipe`` with ``overrides``, as
    engine/run.py takes them; no autocast (the dtype of the model and batch, as in TF).
    """
    from classzoo.config import load_recipe
    from classzoo.engine.devices import make_scaler
    from classzoo.engine.distributed import DistEnv
    from classzoo.engine.loop import StepConfig, train_step
    from classzoo.engine.optim import build_optimizer, scaled_lr
    from classzoo.engine.resolve import or_device_default
    from classzoo.engine.state import TrainState

    cfg = load_recipe(recipe, overrides)
    assert model.training  # as build_model returns it; the loop relies on it
    model.to(torch.from_numpy(image).dtype)
    env = DistEnv()  # one CPU process
    channels_last = or_device_default(cfg.train.channels_last, env.device, "channels_last")
    if channels_last:  # engine/run.py puts the model channels_last for training
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim, scaled_lr(cfg.optim, len(labels)))
    state = TrainState(model, optimizer, None, make_scaler(env.device, None))
    step_cfg = StepConfig(
        label_smoothing=cfg.train.label_smoothing,
        aux_loss_weight=cfg.train.aux_loss_weight,
        clip_grad=cfg.optim.clip_grad,
        amp_dtype=None,
        channels_last=channels_last,
    )
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    batch = (torch.from_numpy(image).permute(0, 3, 1, 2), torch.from_numpy(labels).long())
    sums = train_step(state, model, [batch], len(labels), step_cfg, env)
    data_loss = float(sums[1] / sums[2])  # mean over the batch of ce + aux_weight * aux_ce
    return classzoo_result(cfg.model.name, model, optimizer, before, data_loss)


def rel_diff(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours - theirs| / max |theirs| over one tensor (0 when both are 0)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = float(np.abs(theirs).max()) if theirs.size else 0.0
    err = float(np.abs(ours - theirs).max()) if theirs.size else 0.0
    return err / scale if scale > 0 else err


def worst(ours: dict, theirs: dict, names) -> tuple[float, str]:
    """The largest ``rel_diff`` over ``names`` and the variable where it occurs."""
    diffs = {n: rel_diff(ours[n], theirs[n]) for n in names}
    name = max(diffs, key=diffs.get)
    return diffs[name], name
