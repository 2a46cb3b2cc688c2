"""A run with ``train.ema`` evaluates its EMA weights (and ranks best.pt by them), so
``classzoo eval`` / ``predict`` / ``export`` of its checkpoints use the EMA weights too, named
in the log; ``--set train.ema=false`` gives the trained weights, ``train.ema=true`` a timm
file's ``state_dict_ema`` (timm validate.py's ``--use-ema``). Before, eval scored the trained
weights under the same checkpoint name while the run had recorded the EMA's accuracy.

The truth: each weight set of the file loaded into timm's own model and run on timm's own
transform of the same JPEGs, by hand here.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
from timm.data import ImageDataset, create_transform

from classzoo.cli import main
from conftest import write_imagefolder


def _timm_eval(state: dict, val) -> dict:
    tf = create_transform(input_size=(3, 32, 32), interpolation="bilinear", crop_pct=0.875)
    ds = ImageDataset(str(val), transform=tf)
    xs = torch.stack([ds[i][0] for i in range(len(ds))])
    ys = torch.tensor([ds[i][1] for i in range(len(ds))])
    model = timm.create_model("resnet10t", num_classes=3)
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model.eval()(xs)
    top1 = 100.0 * (logits.argmax(1) == ys).double().mean().item()
    return {"top1": top1, "loss": torch.nn.functional.cross_entropy(logits, ys).item()}


def _eval(capsys, argv: list[str]) -> tuple[dict, str]:
    assert main(argv) == 0
    seen = capsys.readouterr()
    return json.loads(seen.out), seen.err


def test_eval_of_an_ema_run_uses_the_weights_the_run_evaluated(tmp_path, capsys):
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("abc", 8), fmt="jpeg", seed=1)
    write_imagefolder(data / "val", dict.fromkeys("abc", 6), fmt="jpeg", seed=2)
    run = tmp_path / "run"
    argv = ["train", "--recipe", "gluon_resnet50_v1b", "--data-dir", str(data), "--amp", "off"]
    argv += ["--output-dir", str(run), "--batch-size", "4", "--device", "cpu"]
    argv += ["--set", "model.name=resnet10t", "--set", "data.image_size=32"]
    argv += ["--set", "data.num_workers=0", "--set", "train.progress=false"]
    argv += ["--set", "train.epochs=2", "--set", "train.ema=true", "--set", "train.ema_decay=0.9"]
    assert (
        main([*argv, "--set", "data.interpolation=bilinear", "--set", "data.crop_pct=0.875"]) == 0
    )
    capsys.readouterr()
    ckpt = run / "checkpoints" / "ckpt-000000012.pt"
    stored = torch.load(ckpt, weights_only=True)
    truth = {k: _timm_eval(stored[k], data / "val") for k in ("model", "ema")}
    assert truth["model"]["loss"] != pytest.approx(truth["ema"]["loss"], rel=1e-3)
    recorded = json.loads((run / "summary.json").read_text())
    assert recorded["eval_weights"] == "ema"
    assert recorded["loss"] == pytest.approx(truth["ema"]["loss"], rel=1e-4)

    text = ["eval", "--checkpoint", str(ckpt), "--data-dir", str(data)]
    evaluate = [*text, "--set", "data.num_workers=0", "--json"]
    ours, _ = _eval(capsys, evaluate)
    assert ours["loss"] == pytest.approx(truth["ema"]["loss"], rel=1e-4)
    assert ours["top1"] == pytest.approx(truth["ema"]["top1"]) and ours["weights"] == "ema"
    ours, _ = _eval(capsys, [*evaluate, "--set", "train.ema=false"])
    assert ours["loss"] == pytest.approx(truth["model"]["loss"], rel=1e-4)
    assert ours["weights"] == "model"
    assert main([*text, "--set", "data.num_workers=0"]) == 0  # the log names the weights
    assert f"weights from {ckpt} (classzoo, EMA):" in capsys.readouterr().err

    # a timm training checkpoint with both sets: state_dict unless train.ema=true (--use-ema)
    timm_file = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": stored["model"], "state_dict_ema": stored["ema"]}, timm_file)
    timm_eval = ["eval", "--checkpoint", str(timm_file), "--model", "resnet10t", "--json"]
    timm_eval += ["--data-dir", str(data / "val"), "--set", "data.num_workers=0"]
    timm_eval += ["--set", "data.image_size=32", "--set", "data.interpolation=bilinear"]
    timm_eval += ["--set", "data.crop_pct=0.875"]
    ours, _ = _eval(capsys, timm_eval)
    assert ours["loss"] == pytest.approx(truth["model"]["loss"], rel=1e-4)
    assert main([a for a in timm_eval if a != "--json"]) == 0  # the log says what is left
    assert f"checkpoint {timm_file} also holds EMA weights" in capsys.readouterr().err
    ours, _ = _eval(capsys, [*timm_eval, "--set", "train.ema=true"])
    assert ours["loss"] == pytest.approx(truth["ema"]["loss"], rel=1e-4)
