"""``classzoo predict`` names ImageNet classes like timm's ImageNetInfo (timm's own label table)
for 1000-class heads, 1-based slim ResNet labels and 1001-class slim heads; files and folders;
text, CSV and JSON output."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import classzoo
from classzoo.cli import main

INFO = timm.data.ImageNetInfo()  # the outside truth: index -> synset -> lemmas


def _first_lemma(index: int) -> str:
    return INFO.index_to_description(index).split(",")[0]


def _images(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = (folder / "sub" if i else folder) / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    (folder / "notes.txt").write_text("not an image")
    # macOS AppleDouble metadata beside an image (RFC 1740 magic): eval leaves it out, and
    # predict stopped at it ("unreadable image")
    (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    return paths


def _tiny_1000_class_checkpoint(path, winner: int):
    """A timm resnet10t whose head always picks ``winner`` (zero weights, one-hot bias)."""
    kw = {"channels": [8, 16, 32, 64], "stem_width": 8}
    model = timm.create_model("resnet10t", num_classes=1000, **kw)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[winner] = 10.0
    config = {
        "model": {"name": "resnet10t", "num_classes": 1000, "kwargs": kw},
        "data": {"image_size": 32, "crop_pct": 1.0},
    }
    torch.save({"model": model.state_dict(), "config": config}, path)


def test_predict_folder_names_imagenet_classes_in_every_format(tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    _tiny_1000_class_checkpoint(ckpt, winner=1)
    files = _images(tmp_path / "imgs")
    args = ["predict", "--checkpoint", str(ckpt), str(tmp_path / "imgs"), "--top-k", "2"]

    assert main([*args, "--format", "json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert sorted(r["image"] for r in results) == sorted(str(p) for p in files)  # recursive
    for r in results:
        assert r["top"][0]["class"] == _first_lemma(1) == "goldfish"
        assert r["top"][0]["index"] == 1 and r["top"][0]["label"] == 1

    assert main([*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 2 * len(files)
    assert {r["class"] for r in rows if r["rank"] == "1"} == {"goldfish"}

    assert main([*args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(files) and all(": goldfish " in line for line in lines)


@pytest.mark.slow  # builds and runs full-size slim networks (~20-90 s on a busy 2-core CPU)
@pytest.mark.parametrize(
    ("model_name", "winner", "label", "truth_index"),
    [
        ("resnet_v1_50", 1, 2, 1),  # 1000 logits, slim labels 1..1000 (label_offset 1)
        ("inception_v4", 2, 2, 1),  # 1001 logits, 0 = background
    ],
)
def test_slim_heads_name_the_right_class(tmp_path, capsys, model_name, winner, label, truth_index):
    model = classzoo.create_model(model_name)
    state = model.state_dict()
    bias_keys = [k for k in state if k.endswith("bias") and state[k].shape[0] in (1000, 1001)]
    for key in bias_keys:
        state[key] = torch.zeros_like(state[key])
        state[key][winner] = 50.0
    for key in [k[: -len("bias")] + "weight" for k in bias_keys]:
        state[key] = torch.zeros_like(state[key])
    ckpt = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt))
    (img,) = _images(tmp_path / "imgs", n=1)
    assert (
        main(["predict", "--checkpoint", str(ckpt), "--model", model_name, str(img), "--json"]) == 0
    )
    top = json.loads(capsys.readouterr().out)[0]["top"][0]
    assert top["index"] == winner and top["label"] == label
    assert top["class"] == _first_lemma(truth_index)


def test_predict_refuses_a_folder_without_images(tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    _tiny_1000_class_checkpoint(ckpt, winner=0)
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "empty")]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_weights_of_another_head_size_take_set_and_rank_by_logit(tmp_path, capsys):
    """A timm state dict of a 5-class resnet10t: predict and export take ``--set
    model.num_classes=5``, which their refusal names (they had no --set). The classes are ranked
    by logit as TF's top_k(logits) does: with gaps of hundreds, float32 softmax gives 0 to every
    runner-up and ranking the probabilities put them in an arbitrary order."""
    model = timm.create_model("resnet10t", num_classes=5)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.0, -400.0, -200.0, -600.0, -300.0]))
    weights = tmp_path / "sd.pth"
    torch.save(model.state_dict(), weights)
    (image,) = _images(tmp_path / "img", n=1)
    argv = ["predict", "--model", "resnet10t", "--checkpoint", str(weights), str(image)]
    assert main([*argv, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--set model.num_classes=5" in err
    assert main([*argv, "--json", "--set", "model.num_classes=5"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert [t["index"] for t in result["top"]] == [0, 2, 4, 1, 3]  # the biases' order
    assert result["top"][0]["prob"] == 1.0 and result["top"][1]["prob"] == 0.0
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    argv = ["export", "--model", "resnet10t", "--checkpoint", str(weights), str(out)]
    assert main([*argv, "--set", "model.num_classes=5"]) == 0 and out.exists()


def test_predict_runs_in_the_eval_precision_as_eval_does(tmp_path, capsys):
    """``classzoo eval`` scores in eval.amp (bf16 here); predict always ran fp32, so its
    probabilities were not those of the evaluation it is read beside. The truth: timm's eval
    transform and model under torch's own bf16 autocast."""
    from timm.data import create_transform, resolve_data_config

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=5).eval()
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    files = _images(tmp_path / "imgs")
    config = resolve_data_config({}, model=model, use_test_size=True)
    xs = torch.stack([create_transform(**config)(Image.open(p).convert("RGB")) for p in files])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model(xs).float().softmax(1).max(1).values
    with torch.no_grad():
        fp32 = model(xs).softmax(1).max(1).values
    assert not torch.allclose(bf16, fp32, rtol=0, atol=1e-6)  # the two are told apart
    argv = ["predict", "--checkpoint", str(weights), "--model", "resnet10t", "--format", "json"]
    argv += ["--set", "model.num_classes=5", "--set", "eval.amp=bf16", *map(str, files)]
    assert main(argv) == 0
    got = {r["image"]: r["top"][0]["prob"] for r in json.loads(capsys.readouterr().out)}
    assert [got[str(p)] for p in files] == pytest.approx(bf16.tolist(), rel=1e-5)
