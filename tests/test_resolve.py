"""The asked config and the one resolve step (issue: "one resolve step"; "no silent wrong numbers").

Through the CLI where a user would: config.yaml is exactly what was asked, resolved.yaml holds
every decision, a checkpoint trained in fp16 evaluates on a CPU in fp32 without a flag, a limit
of 0 steps is refused, and evaluation is the same on every run (a head left at init is seeded).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from classzoo.cli import main
from classzoo.config import load_recipe
from classzoo.engine.resolve import Resolved, preprocess_for
from classzoo.formats.torch_checkpoint import save_checkpoint_file
from classzoo.models import create_model

OVERRIDES = [
    "model.name=resnet10t",
    "data.image_size=32",
    "data.batch_size=8",
    "data.num_workers=0",
    "train.epochs=1",
    "train.amp=off",
    "train.progress=false",
    "optim.lr=0.01",
]


def _train(tmp_path: Path, data: Path, *extra: str, out: str = "run") -> tuple[int, Path, str]:
    run = tmp_path / out
    args = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(run)]
    for o in [*OVERRIDES, *extra]:
        args += ["--set", o]
    proc = subprocess.run(
        [sys.executable, "-m", "classzoo", *args], capture_output=True, text=True, timeout=600
    )
    return proc.returncode, run, proc.stderr


def test_config_is_what_was_asked_and_resolved_holds_every_decision(tmp_path, small_imagefolder):
    code, run, err = _train(tmp_path, small_imagefolder)
    assert code == 0, err[-2000:]
    asked = load_recipe("quickstart", [*OVERRIDES, f"data.dir={small_imagefolder}"])
    # byte for byte after a YAML round trip: nothing was written back into the asked config
    assert (run / "config.yaml").read_text() == yaml.safe_dump(asked.to_dict(), sort_keys=False)
    r = yaml.safe_load((run / "resolved.yaml").read_text())
    assert (r["model"], r["num_classes"], r["label_offset"]) == ("resnet10t", 4, 0)
    assert r["classes"] == ["a", "b", "c", "d"]
    assert (r["device"], r["world_size"]) == ("cpu", 1)
    assert (r["train_precision"], r["eval_precision"]) == ("fp32", "fp32")
    p = r["preprocess"]
    assert (p["preset"], p["image_size"], p["decoder"]) == ("timm", 32, "pil")
    assert p["mean"] == pytest.approx([0.286] * 3)  # the recipe's Fashion-MNIST statistics
    assert {k: (v["count"], v["label_min"], v["label_max"]) for k, v in r["data"].items()} == {
        "train": (40, 0, 3),
        "val": (20, 0, 3),
    }
    assert r["weights"] == {"source": None, "init": "random init"}
    assert r["schedule"]["global_batch"] == 8 and r["schedule"]["steps_per_epoch"] == 5
    ckpt = torch.load(sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1], weights_only=True)
    assert ckpt["resolved"] == r and ckpt["config"] == asked.to_dict()


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, small_imagefolder):
    code, run, err = _train(tmp_path, small_imagefolder, "train.max_steps=1")
    assert code == 0, err[-2000:]
    code, _, err = _train(tmp_path, small_imagefolder, "train.max_steps=1")
    assert code == 2 and "already holds a run" in err and "Traceback" not in err
    assert "--resume auto" in err and "--overwrite" in err


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, small_imagefolder):
    """Without --output-dir a run is named runs/<recipe>-<UTC second>. Another run started in
    the same second (a sweep launched in a loop) has made that folder but written nothing yet:
    the empty folders made here for the next five minutes' names stand for it. Before, both runs
    passed the check for a run's files and wrote their checkpoints into one folder."""
    now = time.time()
    taken = {
        f"quickstart-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now + s))}" for s in range(300)
    }
    for name in taken:
        (tmp_path / "runs" / name).mkdir(parents=True)
    args = [sys.executable, "-m", "classzoo", "train", "--recipe", "quickstart"]
    args += ["--data-dir", str(small_imagefolder)]
    for o in [*OVERRIDES, "train.max_steps=1"]:
        args += ["--set", o]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    new = sorted({p.name for p in (tmp_path / "runs").iterdir()} - taken)
    assert len(new) == 1 and new[0].endswith("-2") and new[0][:-2] in taken
    assert (tmp_path / "runs" / new[0] / "summary.json").is_file()
    assert not any(any((tmp_path / "runs" / name).iterdir()) for name in taken)  # left alone
    # a command that stops on its input leaves no empty folder behind
    missing = ["--data-dir", str(tmp_path / "missing")]  # found missing after the folder's name
    bad = subprocess.run(
        [*args, *missing], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr, bad.stderr[-2000:]
    assert sorted({p.name for p in (tmp_path / "runs").iterdir()} - taken) == new


def test_max_steps_zero_is_refused(tmp_path, small_imagefolder, capsys):
    assert main(["train", "--recipe", "quickstart", "--max-steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "train.max_steps=0 must be >= 1 (None for no limit)" in err
    assert not (Path("runs")).exists() or not any(Path("runs").glob("quickstart-*"))


def test_fp16_trained_checkpoint_evaluates_on_cpu_in_fp32(tmp_path, small_imagefolder, capsys):
    """A checkpoint whose run trained in fp16 on a GPU (record written by hand) evaluates here:
    the training precision never reaches evaluation."""
    code, run, err = _train(tmp_path, small_imagefolder, "train.max_steps=2")
    assert code == 0, err[-2000:]
    src = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1]
    ckpt = torch.load(src, weights_only=True)
    ckpt["config"]["train"]["amp"] = "fp16"
    ckpt["config"]["train"]["device"] = "cuda"
    ckpt["resolved"].update(device="cuda:0", train_precision="fp16")
    gpu = tmp_path / "gpu.pt"
    save_checkpoint_file(ckpt, gpu)
    val = str(small_imagefolder / "val")
    assert main(["eval", "--checkpoint", str(gpu), "--data-dir", val, "--json"]) == 0
    fp16 = json.loads(capsys.readouterr().out)
    assert fp16.pop("checkpoint") == str(gpu)
    assert main(["eval", "--checkpoint", str(src), "--data-dir", val, "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert fp32.pop("checkpoint") == str(src)
    assert fp16 == fp32  # same fp32 numbers, same 20 images
    assert fp16["count"] == 20


def test_eval_refuses_weights_whose_head_has_another_size(tmp_path, small_imagefolder, capsys):
    """Weights of another head size: evaluating a head left at its initialisation would print
    the accuracy of random logits (it did, the same on every run); it is one line, exit 2."""
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file(create_model("resnet10t", num_classes=7).state_dict(), str(weights))
    args = [
        "eval",
        "--checkpoint",
        str(weights),
        "--model",
        "resnet10t",
        "--json",
        "--data-dir",
        str(small_imagefolder / "val"),
        "--set",
        "data.image_size=32",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("classzoo: error: checkpoint ")
        and "classifier of another size" in err[-1]
    )
    assert "set model.num_classes=7 to use it" in err[-1]


STEPS = {"div": np.divide, "sub": np.subtract, "mul": np.multiply}


@pytest.mark.parametrize("preset", ["timm", "vgg", "inception"])
def test_the_recorded_pixel_formula_gives_the_model_input(preset):
    """resolved.preprocess (copied into the ONNX metadata) applied by hand with numpy to what the
    worker returns (decoded, resized, cropped pixels) gives exactly the model's input; and its
    mean/std formula in timm's units agrees (what timm's resolve_data_config users apply)."""
    from PIL import Image

    from classzoo.data.transforms import build_transform
    from classzoo.engine.build import transform_preprocess

    asked = load_recipe(
        "quickstart",
        ["data.image_size=64", f"data.preset={preset}", "data.mean=null", "data.std=null"],
    )
    defaults = {
        "input_size": (3, 64, 64),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
    }
    pre = preprocess_for(asked.data, defaults)
    pixels = np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    pipe = build_transform(transform_preprocess(pre), train=False)
    sample = pipe.sample(Image.fromarray(pixels))
    model_input = pipe.batch(sample[None])[0].permute(1, 2, 0).numpy()
    x = np.asarray(sample, dtype=np.float32)
    for op, value in pre.steps:
        x = STEPS[op](x, np.asarray(value, dtype=np.float32), dtype=np.float32)
    np.testing.assert_array_equal(x, model_input)
    in_255 = np.asarray(sample, dtype=np.float64) * (255.0 if preset == "inception" else 1.0)
    by_formula = (in_255 / 255 - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(by_formula, model_input, atol=1e-4)


def test_resolved_round_trips():
    from classzoo.engine.resolve import Preprocess, SplitInfo

    r = Resolved(
        "m",
        3,
        1,
        ("a", "b", "c"),
        "cpu",
        1,
        "bf16",
        "fp32",
        "fp32",
        True,
        Preprocess(
            "vgg",
            224,
            0.875,
            "bilinear",
            (0.1, 0.2, 0.3),
            (1, 1, 1),
            "tf",
            "float32",
            [["sub", [1.0, 2.0, 3.0]]],
        ),
        {"train": SplitInfo("tfrecord", "/d", 10, ("/d/a",), (("/d/x", "why"),), 1, 3)},
    )
    assert Resolved.from_dict(yaml.safe_load(yaml.safe_dump(r.to_dict())), "t") == r


@pytest.mark.parametrize("preset", ["vgg", "inception"])
def test_slim_presets_record_the_kernel_they_resize_with(preset):
    """slim's preprocessing resizes with TF1's bilinear kernel whatever the model's own default
    (a timm resnet50's is bicubic): the record names that kernel, not the model's."""
    from classzoo.config import DataConfig

    defaults = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic"}
    pre = preprocess_for(DataConfig(preset=preset), defaults)
    assert pre.interpolation == "bilinear"
