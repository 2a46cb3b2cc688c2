"""ONNX export: the exported graph, run by ONNX's own reference evaluator and by onnxruntime,
gives the model's logits for a batch size other than the one it was traced with; a slim
resnet_v1_50 converted from a TF-written checkpoint exports to a graph that gives TF's logits."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from classzoo.cli import main
from conftest import tiny_checkpoint

CHECK_LINE = (
    r"onnxruntime check \(fp32, batch 3\): max \|diff\| ([0-9.e+-]+), max \|logit\| ([0-9.e+-]+), "
    r"relative ([0-9.e+-]+) \(limit 0.0001 x max\(1, max \|logit\|\)\)"
)


def test_onnx_export_matches_pytorch(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    ckpt = tmp_path / "tiny.pt"
    model = tiny_checkpoint(ckpt)
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    diff, scale, _ = map(float, re.search(CHECK_LINE, printed).groups())
    assert diff <= 1e-4 * max(1.0, scale)
    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["preprocess"])
    assert meta["image_size"] == 32 and meta["model"] == "resnet10t"
    x = torch.randn(3, 3, 32, 32)  # traced with batch 2: the batch dimension is dynamic
    theirs = ReferenceEvaluator(proto).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ours = model(x).numpy()
    assert theirs.shape == (3, 4)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


@pytest.mark.compat
@pytest.mark.slow
def test_tf_written_resnet_v1_50_exports_to_tfs_logits(tmp_path, capsys):
    """TF-slim writes a resnet_v1_50 checkpoint (random values); `classzoo convert slim` then
    `classzoo export`; onnxruntime on the ONNX file must give TensorFlow's own logits."""
    ort = pytest.importorskip("onnxruntime")
    from tf_compat import import_tf, import_tf_slim

    tf, slim = import_tf(), import_tf_slim()
    from tf_slim.nets import resnet_v1

    from test_slim_parity_tf import _run_slim

    def build(inputs):
        with slim.arg_scope(resnet_v1.resnet_arg_scope()):
            net, end_points = resnet_v1.resnet_v1_50(inputs, 1000, is_training=False)
        return tf.squeeze(net, [1, 2]), end_points

    image = np.random.default_rng(1).normal(0.0, 1.0, (2, 224, 224, 3)).astype(np.float32)
    out = _run_slim(build, image, (), tmp_path)
    pt = tmp_path / "r50.pt"
    argv = ["convert", "slim", "--model", "resnet_v1_50", "--checkpoint", out["v2_prefix"]]
    assert main([*argv, "--output", str(pt)]) == 0
    onnx_file = tmp_path / "r50.onnx"
    assert main(["export", "--checkpoint", str(pt), str(onnx_file)]) == 0
    printed = capsys.readouterr().out
    diff, scale, relative = map(float, re.search(CHECK_LINE, printed).groups())
    assert relative <= 1e-4 and diff <= 1e-4 * scale, printed
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    nchw = np.ascontiguousarray(image.transpose(0, 3, 1, 2))
    logits = session.run(["logits"], {"images": nchw})[0]
    # TF's logits on its own input (normal(0, 1) pixels): the parity tests' tolerance
    assert np.abs(logits - out["logits"]).max() <= 1e-3
    print(printed)


def test_onnx_metadata_names_each_logit_as_predict_does(tmp_path, small_imagefolder, capsys):
    """An ONNX user maps logit k to a class through the metadata's ``classes``: for a run on
    class folders a..d, onnxruntime's top logit on an image is named as `classzoo predict` names
    its top-1 (the metadata had no names: index 2 meant nothing outside classzoo)."""
    ort = pytest.importorskip("onnxruntime")
    from PIL import Image

    run = tmp_path / "run"
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(small_imagefolder)]
    argv += ["--output-dir", str(run), "--max-steps", "2", "--set", "model.name=resnet10t"]
    argv += ["--set", "data.num_workers=0", "--set", "train.progress=false"]
    assert main([*argv, "--set", "train.amp=off", "--set", "train.mode=train"]) == 0
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(run), str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["preprocess"])
    assert meta["classes"] == ["a", "b", "c", "d"]
    assert meta["steps"][0] == ["div", 255.0] and meta["sample"]
    image = small_imagefolder / "val" / "c" / "00001.png"
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(run), str(image), "--format", "json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"][0]["class"]
    # the metadata's own recipe: resize to image_size (crop_pct 1, bilinear), then its steps
    size = meta["image_size"]
    pixels = Image.open(image).convert("RGB").resize((size, size), Image.BILINEAR)
    x = np.asarray(pixels, dtype=np.float32) / 255.0
    x = (x - np.array(meta["mean"], np.float32)) / np.array(meta["std"], np.float32)
    logits = session.run(["logits"], {"images": x.transpose(2, 0, 1)[None]})[0][0]
    assert meta["classes"][int(logits.argmax())] == top
