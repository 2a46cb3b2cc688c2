"""`classzoo eval` of a TF-written slim checkpoint on TF-written TFRecords equals TensorFlow.

The outside truth is TensorFlow end to end: tf_slim's resnet_v1_50 (eval mode, random weights
with BN statistics) saved by ``tf.train.Saver``; the 20 real ImageNet JPEGs that foolbox ships
written as slim-schema TFRecords by ``tf.io.TFRecordWriter`` (``image/encoded``,
``image/class/label`` 1..1000, as slim's build_imagenet_data.py writes them); read back,
decoded with ``tf.io.decode_jpeg`` (slim's default dct_method) and preprocessed by slim's
vgg_preprocessing eval (ported in test_tf_preprocessing.py) exactly as eval_image_classifier.py
does. Top-1/top-5 from TF's logits (label - 1: resnet_v1 has 1000 logits, no background class)
must equal what ``classzoo eval --json`` prints with default settings (fp32, issue 9).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tf_compat import import_tf, import_tf_slim

tf = import_tf()
slim = import_tf_slim()
from tf_slim.nets import resnet_v1  # noqa: E402

from conftest import foolbox_data  # noqa: E402
from test_slim_parity_tf import _random_value  # noqa: E402  (He-scaled, BN stats included)
from test_tf_preprocessing import slim_vgg_eval  # noqa: E402  (slim's preprocess_for_eval)

pytestmark = [pytest.mark.compat, pytest.mark.slow]

N_IMAGES = 20
# A label closer than this to its neighbour rank would let float noise (classzoo vs TF logits
# differ by ~1e-4) decide a hit; labels are only put at ranks with a wider gap.
MIN_GAP = 1e-2


def _foolbox_jpegs() -> list[bytes]:
    """The JPEG files foolbox ships, read as bytes (foolbox itself is not imported)."""
    files = sorted(foolbox_data().glob("imagenet_*.jpg"))
    if len(files) != N_IMAGES:
        pytest.skip("foolbox's 20 ImageNet JPEGs not found")
    return [f.read_bytes() for f in files]


def _tf_network_and_checkpoint(images: np.ndarray, prefix: str) -> np.ndarray:
    """slim resnet_v1_50 (is_training=False) with random weights: its logits, Saver-written."""
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, (None, 224, 224, 3))
        with slim.arg_scope(resnet_v1.resnet_arg_scope()):
            net, _ = resnet_v1.resnet_v1_50(inputs, 1000, is_training=False)
        logits = tf.squeeze(net, [1, 2])
        tf.compat.v1.train.get_or_create_global_step()
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=2, inter_op_parallelism_threads=1
        )
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            variables = tf.compat.v1.global_variables()
            values = {
                v.initial_value: _random_value(v.op.name, tuple(v.shape.as_list()), rng)
                for v in variables
            }
            sess.run([v.initializer for v in variables], values)
            out = sess.run(logits, {inputs: images})
            tf.compat.v1.train.Saver().save(sess, prefix)
    return out


def _write_records(path: Path, jpegs: list[bytes], labels: list[int]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for data, label in zip(jpegs, labels):
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"JPEG"])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def _read_and_preprocess(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """What eval_image_classifier feeds the network: parse, decode_jpeg, vgg eval preprocessing."""
    spec = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string),
        "image/class/label": tf.io.FixedLenFeature((), tf.int64),
    }
    images, labels = [], []
    for record in tf.data.TFRecordDataset(str(path)):
        example = tf.io.parse_single_example(record, spec)
        image = tf.io.decode_jpeg(example["image/encoded"], channels=3)  # slim: dct_method ''
        images.append(slim_vgg_eval(image, 224, 224).numpy())
        labels.append(int(example["image/class/label"]))
    return np.stack(images), np.asarray(labels)


def _choose_labels(logits: np.ndarray) -> list[int]:
    """Labels 1..1000 (slim's, label_offset 1) at ranks 0 (top-1 hit), 2 (top-5 hit only) or
    20 (miss) of TF's own ranking, in turn, each at a rank well apart from its neighbours."""
    labels = []
    for i, row in enumerate(logits):
        order = np.argsort(-row)
        wanted = (0, 2, 20, 0)[i % 4]
        rank = next(
            r
            for r in range(wanted, 1000)
            if (r == 0 or row[order[r - 1]] - row[order[r]] > MIN_GAP)
            and row[order[r]] - row[order[r + 1]] > MIN_GAP
            and (r < 5) == (wanted < 5)
        )
        labels.append(int(order[rank]) + 1)
    return labels


def _topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    order = np.argsort(-logits, axis=1)[:, :k]
    return 100.0 * float(np.mean([label - 1 in row for row, label in zip(order, labels)]))


def _xent(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels - 1].mean())


@pytest.fixture(scope="module")
def tf_truth(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf_eval")
    jpegs = _foolbox_jpegs()
    data_dir = root / "data"
    data_dir.mkdir()
    shard = data_dir / "validation-00000-of-00001"
    # first pass: labels do not change pixels; TF's logits on the records choose the labels
    _write_records(shard, jpegs, [1] * N_IMAGES)
    images, _ = _read_and_preprocess(shard)
    prefix = str(root / "ckpt" / "model.ckpt")
    logits = _tf_network_and_checkpoint(images, prefix)
    _write_records(shard, jpegs, _choose_labels(logits))
    images, labels = _read_and_preprocess(shard)  # the final records, read back by TF
    logits = _tf_network_and_checkpoint(images, prefix)  # same seed: same weights
    return {
        "prefix": prefix,
        "data_dir": str(data_dir),
        "logits": logits,
        "labels": labels,
        "top1": _topk(logits, labels, 1),
        "top5": _topk(logits, labels, 5),
        "loss": _xent(logits, labels),
    }


# The data format is the one non-default setting: a folder of TFRecords is not detected ("has
# no class folders"). `--split validation` names the shards' split explicitly.
TFRECORD = ["--set", "data.source=tfrecord"]
SPLIT = ["--split", "validation"]


def _classzoo_eval(capsys, truth, extra: list[str]) -> tuple[str, str]:
    from classzoo.cli import main

    # default settings: no precision, preprocessing, label offset, class-count or batch flag
    argv = ["eval", "--checkpoint", truth["prefix"], "--model", "resnet_v1_50"]
    code = main(argv + ["--data-dir", truth["data_dir"], *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, captured.err


def _assert_equals_tf(truth, out: str) -> None:
    result = json.loads(out)
    print(
        f"\nTF top1 {truth['top1']:.2f} top5 {truth['top5']:.2f} loss {truth['loss']:.4f} | "
        f"classzoo top1 {result['top1']:.2f} top5 {result['top5']:.2f} "
        f"loss {result['loss']:.4f} count {result['count']}"
    )
    assert result["count"] == N_IMAGES
    assert result["top1"] == pytest.approx(truth["top1"], abs=1e-9)
    assert result["top5"] == pytest.approx(truth["top5"], abs=1e-9)
    assert result["loss"] == pytest.approx(truth["loss"], rel=1e-3)


def test_classzoo_eval_equals_tensorflow_logits_argmax(tf_truth, capsys):
    # the test can fail: hits, top-5-only hits and misses are all present
    assert 0 < tf_truth["top1"] < tf_truth["top5"] < 100, (tf_truth["top1"], tf_truth["top5"])
    out, _ = _classzoo_eval(capsys, tf_truth, TFRECORD + SPLIT + ["--json"])
    _assert_equals_tf(tf_truth, out)


def test_classzoo_eval_without_split_flag_equals_tensorflow(tf_truth, capsys):
    """The same command without --split: the default val split finds validation-* shards."""
    out, _ = _classzoo_eval(capsys, tf_truth, TFRECORD + ["--json"])
    _assert_equals_tf(tf_truth, out)


def test_classzoo_eval_is_fp32_even_when_training_is_bf16(tf_truth, capsys):
    """The logged resolved record says fp32 for the evaluation (a bf16 training setting does
    not leak into it), and the text output still equals TF's numbers."""
    extra = TFRECORD + SPLIT + ["--set", "train.amp=bf16"]
    out, err = _classzoo_eval(capsys, tf_truth, extra)
    match = re.search(r"precision train \S+, eval (\S+) ", err)
    assert match is not None, err
    assert match.group(1) == "fp32", err
    numbers = re.search(r"top1 ([\d.]+)\s+top5 ([\d.]+)\s+loss \S+\s+count (\d+)", out)
    assert numbers is not None, out
    assert float(numbers.group(1)) == pytest.approx(tf_truth["top1"], abs=1e-3)
    assert float(numbers.group(2)) == pytest.approx(tf_truth["top5"], abs=1e-3)
    assert int(numbers.group(3)) == N_IMAGES


def _with_background_logit(prefix: str, out_prefix: str, background_bias: float) -> None:
    """The same network with slim's 1001-logit head: a background logit 0 (zero weights, a bias
    below every logit) before the 1000, written by TF's Saver; logit label == old logit label-1."""
    reader = tf.train.load_checkpoint(prefix)
    graph = tf.Graph()
    with graph.as_default():
        variables = []
        for name in reader.get_variable_to_shape_map():
            value = reader.get_tensor(name)
            if name.endswith("/logits/weights"):
                value = np.concatenate([np.zeros_like(value[..., :1]), value], axis=-1)
            elif name.endswith("/logits/biases"):
                value = np.concatenate([np.float32([background_bias]), value])
            variables.append(tf.compat.v1.Variable(value, name=name))
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(variables).save(sess, out_prefix)


def test_a_1001_logit_resnet_v1_scores_slims_labels_as_its_logits(tf_truth, tmp_path, capsys):
    """slim's eval ties the offset to the head (num_classes = 1001 - labels_offset): under a
    1001-logit resnet_v1 the labels 1..1000 are the logits. classzoo kept resnet_v1's offset 1
    (0 % where TF scores these records), and `convert slim` without --num-classes wrote a new
    1000-logit head at its initialisation, exit 0."""
    from classzoo.cli import main

    prefix = str(tmp_path / "r50_1001" / "model.ckpt")
    _with_background_logit(tf_truth["prefix"], prefix, float(tf_truth["logits"].min()) - 100.0)
    truth = {**tf_truth, "prefix": prefix}
    out, _ = _classzoo_eval(capsys, truth, [*TFRECORD, "--set", "model.num_classes=1001", "--json"])
    _assert_equals_tf(tf_truth, out)
    converted = tmp_path / "r50_1001.pt"  # the head size is the checkpoint's
    assert main(["convert", "slim", "--model", "resnet_v1_50", "--checkpoint", prefix]
                + ["--output", str(converted)]) == 0  # fmt: skip
    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(converted), "--data-dir", tf_truth["data_dir"], "--json"]
    assert main(argv) == 0
    _assert_equals_tf(tf_truth, capsys.readouterr().out)
    # a new head asked of convert is for fine-tuning: eval, predict and export refuse it
    new_head = tmp_path / "new_head.pt"
    assert main(["convert", "slim", "--model", "resnet_v1_50", "--checkpoint", prefix]
                + ["--output", str(new_head), "--num-classes", "1000"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(new_head), "--data-dir", tf_truth["data_dir"]]) == 2
    err = capsys.readouterr().err
    assert "fc.weight, fc.bias were left at their initialisation" in err
    assert "(another class count)" in err
