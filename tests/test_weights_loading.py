"""Weights loading (issue 9, defects 8 and 9): exclude scopes mean what slim means, and a head of
another class count is never a silent random head.

Defect 8's outside truth: TF-slim's ``train_image_classifier._get_init_fn`` restores every model
variable whose ``var.op.name`` does not start with an exclusion; the checkpoint is written by
TensorFlow's own Saver and its names are read back with ``tf.train.load_checkpoint``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import classzoo
from classzoo.errors import UserError
from classzoo.formats.torch_checkpoint import save_checkpoint_file, verify_checkpoint_file
from classzoo.models.slim_names import state_dict_to_slim
from classzoo.models.weights import load_checkpoint

# ---- defect 9: a new head is reported, seeded by the caller, refusable -------------------------


@pytest.fixture
def ten_class_checkpoint(tmp_path):
    torch.manual_seed(1)
    model = classzoo.create_model("resnet18", num_classes=10)
    path = tmp_path / "r18-10.pt"
    save_checkpoint_file({"model": model.state_dict(), "model_name": "resnet18"}, path)
    return path, model.state_dict()


def test_other_class_count_reports_the_head_left_at_init(ten_class_checkpoint, caplog):
    path, saved = ten_class_checkpoint
    with caplog.at_level(logging.WARNING, logger="classzoo"):
        torch.manual_seed(0)
        model = classzoo.create_model("resnet18", num_classes=5, checkpoint=path)
    report = model.load_report
    assert report.left_at_init == ["fc.weight", "fc.bias"]
    assert report.format == "classzoo" and report.excluded == ["fc."]
    assert "fc.weight, fc.bias" in caplog.text and str(path) in caplog.text
    own = model.state_dict()
    for key in report.loaded:
        assert torch.equal(own[key], saved[key]), key
    assert sorted(report.loaded) == sorted(k for k in saved if not k.startswith("fc."))


def test_an_exclude_that_matches_nothing_is_refused(ten_class_checkpoint):
    """``model.exclude=head`` (resnet's classifier is ``fc``) loaded every tensor and said
    "left at init: none": the layer meant to start fresh was fine-tuned from the checkpoint."""
    path, saved = ten_class_checkpoint
    model = classzoo.create_model("resnet18", num_classes=10)
    with pytest.raises(UserError, match="model.exclude 'head' matches no key .* classifier is fc"):
        load_checkpoint(model, "resnet18", path, exclude=["head"])
    assert load_checkpoint(model, "resnet18", path, exclude="fc").left_at_init == [
        "fc.weight",
        "fc.bias",
    ]  # one name, as timm users write it; it had been read letter by letter
    report = load_checkpoint(model, "resnet18", path, exclude=["fc", "layer4"])
    assert all(k.startswith(("fc.", "layer4.")) for k in report.left_at_init)
    assert {k.split(".")[0] for k in report.left_at_init} == {"fc", "layer4"}


def test_the_new_head_is_the_same_for_the_same_seed(ten_class_checkpoint):
    path, _ = ten_class_checkpoint
    heads = []
    for _ in range(2):
        torch.manual_seed(1234)  # what engine.build does with train.seed before building
        heads.append(classzoo.create_model("resnet18", num_classes=5, checkpoint=path).fc.weight)
    assert torch.equal(heads[0], heads[1])


def test_a_new_head_can_be_refused(ten_class_checkpoint):
    path, _ = ten_class_checkpoint
    model = classzoo.create_model("resnet18", num_classes=5)
    with pytest.raises(UserError, match=r"classifier of another size \(fc.weight .*allow_new_head"):
        load_checkpoint(model, "resnet18", path, allow_new_head=False)


def test_create_model_refuses_a_new_head_when_asked(ten_class_checkpoint):
    path, _ = ten_class_checkpoint
    with pytest.raises(UserError, match="allow_new_head"):
        classzoo.create_model("resnet18", num_classes=5, checkpoint=path, allow_new_head=False)
    model = classzoo.create_model("resnet18", num_classes=5, checkpoint=path)  # logged instead
    assert model.load_report.left_at_init == ["fc.weight", "fc.bias"]


def test_both_heads_of_a_distilled_timm_model_are_new_for_another_class_count(tmp_path):
    """deit *_distilled and levit have two classifiers (get_classifier() returns both): a file
    of 1000 classes fine-tuned on 3 was refused as 'does not fit'. The truth: timm's own
    pretrained load of the same file (pretrained_cfg classifier = ('head', 'head_dist'))."""
    import timm

    name, kw = "deit_tiny_distilled_patch16_224", {"img_size": 32}
    path = tmp_path / "deit1000.pth"
    torch.save(timm.create_model(name, num_classes=1000, **kw).state_dict(), path)
    overlay = {"file": str(path)}
    theirs = timm.create_model(
        name, num_classes=3, pretrained=True, pretrained_cfg_overlay=overlay, **kw
    ).state_dict()
    ours = classzoo.create_model(name, num_classes=3, checkpoint=path, **kw)
    left = set(ours.load_report.left_at_init)
    assert left == {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
    assert ours.load_report.heads == ["head", "head_dist"]
    for key, value in ours.state_dict().items():
        if key not in left:
            assert torch.equal(value, theirs[key]), key


def test_int8_weights_in_a_state_dict_are_refused_not_cast(tmp_path):
    model = classzoo.create_model("resnet18", num_classes=5)
    state = dict(model.state_dict())
    state["fc.weight"] = torch.ones(5, 512, dtype=torch.float16)  # fp16 -> fp32: allowed
    save_checkpoint_file({"model": state}, tmp_path / "ok.pt")
    assert load_checkpoint(model, "resnet18", tmp_path / "ok.pt").left_at_init == []
    state["layer1.0.bn1.num_batches_tracked"] = torch.tensor(1.5)  # float into an int buffer
    save_checkpoint_file({"model": state}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="num_batches_tracked is torch.float32 in the checkpoint"):
        load_checkpoint(model, "resnet18", tmp_path / "bad.pt")


# ---- defect 8: exclude scopes, through a TensorFlow-written Inception-v4 checkpoint -------------

REFERENCE_EXCLUDES = ["InceptionV4/Logits/Logits", "InceptionV4/AuxLogits/Aux_logits"]

# three of train_image_classifier._configure_optimizer's optimizers, as TF1 names their slots
_SLIM_OPTIMIZERS = {
    "adadelta": lambda tf: tf.compat.v1.train.AdadeltaOptimizer(0.01, rho=0.95, epsilon=1.0),
    "adagrad": lambda tf: tf.compat.v1.train.AdagradOptimizer(0.01, 0.1),
    "ftrl": lambda tf: tf.compat.v1.train.FtrlOptimizer(0.01),
}


# the slots named before (momentum, rmsprop, adam) are tests/test_train_parity_tf.py's (TF's own
# optimizers) and tests/test_slim_models.py's
@pytest.mark.parametrize("optimizer", ["adadelta", "adagrad", "ftrl"])
def test_a_slim_checkpoint_of_any_slim_optimizer_loads_its_model_variables(tmp_path, optimizer):
    """slim restores a checkpoint's model variables whatever optimizer wrote it; an Adadelta
    checkpoint was refused for its 318 slots (<var>/Adadelta, <var>/Adadelta_1). The truth: the
    variables TF's own optimizer adds, saved by tf.compat.v1.train.Saver."""
    from tf_compat import import_tf

    tf = import_tf()
    torch.manual_seed(5)
    model = classzoo.create_model("resnet_v1_50", num_classes=10)
    values = state_dict_to_slim("resnet_v1_50", model.state_dict())
    graph = tf.Graph()
    with graph.as_default():
        variables = {n: tf.compat.v1.Variable(v, name=n) for n, v in values.items()}
        loss = tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables.values()])
        step = tf.compat.v1.train.get_or_create_global_step()
        train = _SLIM_OPTIMIZERS[optimizer](tf).minimize(loss, global_step=step)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(train)
            after = sess.run(variables)
            prefix = str(tmp_path / "model.ckpt")
            tf.compat.v1.train.Saver().save(sess, prefix, write_meta_graph=False)
    saved = {n for n, _ in tf.train.list_variables(prefix)}
    assert len(saved) > len(values)  # the optimizer's slots are in it
    loaded = classzoo.create_model("resnet_v1_50", num_classes=10, checkpoint=prefix)
    assert len(loaded.load_report.loaded) == len(values)  # 267 (318: BN counters were counted)
    ours = state_dict_to_slim("resnet_v1_50", loaded.state_dict())
    assert all(np.array_equal(ours[n], after[n]) for n in values)


def test_layers_a_converted_file_left_at_init_are_recorded_as_left_at_init(tmp_path):
    """`classzoo convert slim --exclude block4` writes block4 at its initialisation and says so
    in the file's record; fine-tuning from the file recorded those 50 tensors as loaded (and a
    head it left at init as kept). The truth: the file's own record, and TF's variables."""
    from classzoo.cli import main
    from tf_compat import import_tf

    tf = import_tf()
    values = state_dict_to_slim("resnet_v1_50", classzoo.create_model("resnet_v1_50").state_dict())
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(v, name=n) for n, v in values.items()]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = str(tmp_path / "model.ckpt")
            tf.compat.v1.train.Saver(variables).save(sess, prefix, write_meta_graph=False)
    out = tmp_path / "no_block4.pt"
    argv = ["convert", "slim", "--model", "resnet_v1_50", "--checkpoint", prefix]
    assert main([*argv, "--output", str(out), "--exclude", "block4"]) == 0
    made = set(load_checkpoint_file_record(out))
    assert made and all(k.startswith("layer4.") for k in made)
    report = classzoo.create_model("resnet_v1_50", checkpoint=out).load_report
    assert made <= set(report.left_at_init)
    assert not made & set(report.loaded)
    block4 = [n for n in values if n.startswith("resnet_v1_50/block4/")]
    in_tf = len(values) - len(block4)  # the TF variables the file holds trained values of
    assert len([k for k in report.loaded if not k.endswith("num_batches_tracked")]) == in_tf


def load_checkpoint_file_record(path) -> list[str]:
    from classzoo.formats.torch_checkpoint import load_checkpoint_file

    return load_checkpoint_file(path)["resolved"]["weights"]["left_at_init"]


@pytest.fixture(scope="module")
def tf_inception(tmp_path_factory):
    """A 1001-class Inception-v4 checkpoint written by tf.compat.v1.train.Saver (V2)."""
    from tf_compat import import_tf

    tf = import_tf()
    torch.manual_seed(3)
    model = classzoo.create_model("inception_v4", num_classes=1001)
    values = state_dict_to_slim("inception_v4", model.state_dict())
    values["global_step"] = np.asarray(100, np.int64)
    graph = tf.Graph()
    with graph.as_default():
        variables = {
            n: tf.compat.v1.get_variable(n, v.shape, tf.as_dtype(v.dtype))
            for n, v in values.items()
        }
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run([v.initializer for v in variables.values()],
                     {v.initial_value: values[n] for n, v in variables.items()})  # fmt: skip
            prefix = str(tmp_path_factory.mktemp("tf") / "model.ckpt")
            tf.compat.v1.train.Saver(variables).save(sess, prefix, write_meta_graph=False)
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_shape_map())
    return prefix, {n: reader.get_tensor(n) for n in names}


def _slim_restores(names, exclusions) -> set[str]:
    """train_image_classifier._get_init_fn: ``var.op.name.startswith(exclusion)`` excludes."""
    return {n for n in names if n != "global_step" and not any(n.startswith(e) for e in exclusions)}


def _restored(model, ckpt: dict) -> set[str]:
    ours = state_dict_to_slim("inception_v4", model.state_dict())
    return {
        n
        for n, v in ours.items()
        if n in ckpt and v.shape == ckpt[n].shape and np.array_equal(v, ckpt[n])
    }


@pytest.mark.slow
@pytest.mark.compat
def test_convert_with_the_reference_excludes_restores_the_aux_convolutions(tf_inception, tmp_path):
    from classzoo.cli import main

    prefix, ckpt = tf_inception
    out = tmp_path / "iv4-10.pt"
    argv = ["convert", "slim", "--model", "inception_v4", "--checkpoint", prefix]
    argv += ["--num-classes", "10", "--output", str(out), "--exclude", *REFERENCE_EXCLUDES]
    assert main(argv) == 0
    model = classzoo.create_model("inception_v4", num_classes=10, checkpoint=out)
    expected = _slim_restores(ckpt, REFERENCE_EXCLUDES)
    assert "InceptionV4/AuxLogits/Conv2d_2a/weights" in expected  # slim restores these
    assert "InceptionV4/AuxLogits/Conv2d_1b_1x1/BatchNorm/moving_mean" in expected
    assert _restored(model, ckpt) == expected
    assert verify_checkpoint_file(out) is not None  # exported weights carry a SHA-256


@pytest.mark.slow
@pytest.mark.compat
def test_create_model_on_another_class_count_leaves_only_the_classifiers_at_init(tf_inception):
    prefix, ckpt = tf_inception
    torch.manual_seed(0)
    model = classzoo.create_model("inception_v4", num_classes=10, checkpoint=prefix)
    assert _restored(model, ckpt) == _slim_restores(ckpt, REFERENCE_EXCLUDES)
    report = model.load_report
    heads = ["aux_head.fc.weight", "aux_head.fc.bias", "last_linear.weight", "last_linear.bias"]
    assert sorted(report.left_at_init) == sorted(heads)
    assert report.excluded == ["Logits/Logits", "AuxLogits/Aux_logits"]
    # loaded: the checkpoint's variables slim restores (906 before: every BN's counter and the
    # gammas of 1 that slim's scale=False BN does not have were counted too)
    assert len(report.loaded) == len(_slim_restores(ckpt, REFERENCE_EXCLUDES))
    with pytest.raises(UserError, match="allow_new_head"):
        load_checkpoint(model, "inception_v4", prefix, allow_new_head=False)


def test_pretrained_weights_of_another_class_count_record_the_new_head(tmp_path, capsys):
    """model.pretrained with another class count recorded no weights and nothing left at init,
    though timm's load_pretrained leaves the classifier at init. The truth: timm's own load of
    the same file (the non-head weights equal, the head not)."""
    import timm
    import yaml

    from classzoo.cli import main
    from conftest import write_imagefolder

    torch.manual_seed(7)
    weights = tmp_path / "in1k.pth"
    torch.save(timm.create_model("resnet10t").state_dict(), weights)
    write_imagefolder(tmp_path / "data" / "train", dict.fromkeys("abc", 2), seed=1)
    overlay = {"pretrained_cfg_overlay": {"file": str(weights)}}
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(tmp_path / "data")]
    argv += ["--output-dir", str(tmp_path / "run"), "--max-steps", "1", "--amp", "off"]
    argv += ["--set", "model.pretrained=true", "--set", f"model.kwargs={overlay}"]
    argv += ["--set", "train.mode=train", "--set", "data.num_workers=0"]
    assert main(argv) == 0, capsys.readouterr().err
    record = yaml.safe_load((tmp_path / "run" / "resolved.yaml").read_text())["weights"]
    assert record["pretrained"] == str(weights)
    assert record["left_at_init"] == ["fc.weight", "fc.bias"]
    theirs = timm.create_model("resnet10t", num_classes=3, pretrained=True, **overlay)
    assert not torch.equal(theirs.fc.weight[:3], torch.load(weights)["fc.weight"][:3])
