"""A resumed run ends with exactly the weights of an uninterrupted run (CPU): model, optimizer,
scheduler, EMA, every RNG (dropout, augmentation), data order and the position in the epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from classzoo.config import load_recipe
from classzoo.engine.run import run

RECIPE = """\
model:
  name: resnet10t
  drop_rate: 0.2            # dropout draws from the model RNG: it must be restored too
  kwargs: {channels: [8, 16, 32, 64], stem_width: 8}
data:
  source: imagefolder
  image_size: 32
  batch_size: 8
  eval_batch_size: 16
  num_workers: 2
  scale: [0.5, 1.0]         # random crops, flips and colour jitter: per-sample RNG
  color_jitter: 0.3
optim: {name: adamw, lr: 0.01, weight_decay: 0.05}
sched: {name: cosine, warmup_epochs: 0.4, warmup_lr: 0.001}
train:
  mode: train_and_evaluate
  epochs: 3
  label_smoothing: 0.1
  ema: true
  ema_decay: 0.9
  amp: "off"               # bf16 on this CPU: see engine/precision.py
  log_every: 2
  keep_max: 3
  progress: false
"""


def _cfg(tmp_path: Path, data: Path, *overrides: str):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    return load_recipe(str(recipe), [*overrides, f"data.dir={data}"])


def _final(run_dir: Path) -> dict:
    newest = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))[-1]
    return torch.load(newest, map_location="cpu", weights_only=True)


def _assert_identical(a: dict, b: dict) -> None:
    assert a["progress"]["step"] == b["progress"]["step"]
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for pid in sa:
        for k, v in sa[pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[pid][k])), (
                f"optimizer {pid}.{k}"
            )


def test_stop_and_resume_equals_uninterrupted(tmp_path, small_imagefolder):
    whole = tmp_path / "whole"
    run(_cfg(tmp_path, small_imagefolder), whole)
    parts = tmp_path / "parts"
    # 40 images / batch 8 = 5 steps per epoch; stop at step 7, in the middle of epoch 2
    first = run(_cfg(tmp_path, small_imagefolder, "train.max_steps=7"), parts)
    assert first["epochs"] == pytest.approx(7 / 5)
    assert _final(parts)["progress"] == {"step": 7, "epoch": 1, "sample": 16, "world_size": 1}
    run(_cfg(tmp_path, small_imagefolder), parts, resume="auto")
    _assert_identical(_final(whole), _final(parts))
    assert (parts / "train.log").read_text().count("step: 14 ") == 1


def _train_cmd(recipe: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "classzoo",
        "train",
        "--recipe",
        str(recipe),
        "--data-dir",
        str(data),
        "--output-dir",
        str(out),
        "--set",
        "train.ckpt_every_steps=1",
        *extra,
    ]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path, small_imagefolder):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.replace("epochs: 3", "epochs: 6"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole = tmp_path / "whole"
    subprocess.run(
        _train_cmd(recipe, small_imagefolder, whole),
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(recipe, small_imagefolder, killed),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt_dir = killed / "checkpoints"
    deadline = time.monotonic() + 300
    # kill as soon as a checkpoint past epoch 2 exists; the newest on disk is then usually a
    # mid-epoch one (5 steps per epoch, 30 in all)
    while time.monotonic() < deadline and proc.poll() is None:
        steps = (
            [int(p.stem.split("-")[1]) for p in ckpt_dir.glob("ckpt-*.pt")]
            if ckpt_dir.is_dir()
            else []
        )
        if any(s > 10 for s in steps):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (ckpt_dir / "ckpt-000000030.pt").exists()
    subprocess.run(
        _train_cmd(recipe, small_imagefolder, killed, "--resume", "auto"),
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _assert_identical(_final(whole), _final(killed))


def _tiny_run_args(data: Path, out: Path, classes: str, batch_size: int) -> list[str]:
    """An ImageFolder of 6 train and 2 val images per class and the ``classzoo train``
    arguments of a tiny quickstart run on it."""
    from conftest import write_imagefolder

    write_imagefolder(data / "train", dict.fromkeys(classes, 6), seed=1)
    write_imagefolder(data / "val", dict.fromkeys(classes, 2), seed=2)
    args = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(out)]
    sets = ("model.name=resnet10t", "data.image_size=32", f"data.batch_size={batch_size}")
    sets += ("train.amp=off", "data.num_workers=0", "train.progress=false", "train.mode=train")
    for o in sets:
        args += ["--set", o]
    return args


def test_resume_refuses_other_classes_images_or_pixels_before_writing(tmp_path, capsys):
    """The checkpoint's step means something only with the data it was made on. Before, a class
    folder renamed between two attempts was resumed with every label after it shifted, and the
    folder's resolved.yaml was overwritten with the new record (engine/same_run.py)."""
    from classzoo.cli import main

    data, out = tmp_path / "data", tmp_path / "run"
    args = _tiny_run_args(data, out, "abcd", batch_size=8)
    assert main([*args, "--max-steps", "2"]) == 0
    record = (out / "resolved.yaml").read_text()
    first = str(sorted((out / "checkpoints").glob("ckpt-*.pt"))[0])
    capsys.readouterr()

    def refused(*extra: str) -> str:
        assert main([*args, "--max-steps", "4", *extra]) == 2
        assert (out / "resolved.yaml").read_text() == record  # nothing written
        return capsys.readouterr().err.strip().splitlines()[-1]

    (data / "train" / "a").rename(data / "train" / "z")
    (data / "val" / "a").rename(data / "val" / "z")
    line = refused("--resume", "auto")
    assert "classes was ['a', 'b', 'c', 'd'] when the run began, now ['b', 'c', 'd', 'z']" in line
    assert "--set" not in line  # the data changed, no setting: nothing to set back
    from_file = refused("--resume", first)  # the checkpoint's own record says the same
    assert from_file.endswith(f"from {first}: {line.split('/run: ', 1)[1]}")
    (data / "train" / "z").rename(data / "train" / "a")
    (data / "val" / "z").rename(data / "val" / "a")
    extra = data / "train" / "d" / "extra.png"
    extra.write_bytes((data / "train" / "d" / "00000.png").read_bytes())
    assert "train images was 24 when the run began, now 25" in refused("--resume", "auto")
    line = refused("--resume", "auto", "--epochs", "6")  # the data refuses: no --set fixes it
    assert "train images was 24 when the run began, now 25" in line and "--set" not in line
    extra.unlink()
    assert "preprocess.image_size was 32" in refused(
        "--resume", "auto", "--set", "data.image_size=48"
    )
    # its steps counted batches of 8 and its scheduler holds a 3-epoch cosine: a resume at batch
    # 4 had trained to epoch 3.7 of 3, and one with 6 epochs kept the 3-epoch cosine's min_lr
    batch = "global batch (data.batch_size x devices x train.grad_accum_steps) was 8"
    line = refused("--resume", "auto", "--set", "data.batch_size=4")
    assert f"{batch} when the run began, now 4" in line
    assert "began with (--set data.batch_size=8, as the run began)" in line
    # the record said bf16 (amp auto on AMX) or fp32 while the run went on in the other
    began = yaml.safe_load(record)["train_precision"]
    other = "fp32" if began == "bf16" else "bf16"
    line = refused("--resume", "auto", "--set", f"train.amp={'off' if other == 'fp32' else other}")
    assert f"train_precision (train.amp) was {began} when the run began, now {other}" in line
    line = refused("--resume", "auto", "--epochs", "6")
    assert "lr schedule was cosine to 1e-05 over 2.5 epochs (train.epochs)" in line
    assert "now cosine to 1e-05 over 6 epochs (train.epochs)" in line
    # the setting to give back (a recipe whose epochs changed since the run began: the same)
    assert "(--set train.epochs=2.5, as the run began)" in line
    line = refused("--resume", first, "--epochs", "6")  # the checkpoint's config says the same
    assert "(--set train.epochs=2.5, as the run began)" in line
    # the optimizer's state restores its own weight decay (config.yaml said the new one); a new
    # label smoothing trained on from the resume: weights of neither run (engine/same_run.py)
    line = refused("--resume", "auto", "--set", "optim.weight_decay=0.5", "--set", "train.label_smoothing=0.3")  # fmt: skip
    assert "optim.weight_decay was 0.05, now 0.5; train.label_smoothing was 0.1, now 0.3" in line
    assert "optim.name was adamw, now sgd" in refused("--resume", first, "--set", "optim.name=sgd")
    allowed = ["--set", "data.num_workers=1", "--set", "data.skip_corrupt=true"]
    assert main([*args, "--max-steps", "4", "--resume", "auto", *allowed]) == 0  # resumed
    assert "resumed from" in capsys.readouterr().err


def test_a_resume_on_other_software_says_which_versions_changed(tmp_path, capsys, monkeypatch):
    """resolved.yaml, and each checkpoint with it, records the versions an attempt computes
    with (torch with its build tag, as torch.__version__ says). A resume on versions other
    than those of the checkpoint it continues from goes on (upgrading is the user's choice) but
    says which differ, on the terminal and in its marker in the logs: from there on its steps
    are not bit for bit an uninterrupted run's (engine/software.py)."""
    import importlib.metadata

    import classzoo
    from classzoo.cli import main
    from classzoo.data import jpeg_region
    from classzoo.engine import software

    data, out = tmp_path / "data", tmp_path / "run"
    args = _tiny_run_args(data, out, "ab", batch_size=4)
    here = software.versions()
    assert here["torch"] == torch.__version__ and here["classzoo"] == classzoo.__version__
    assert here["timm"] == importlib.metadata.version("timm")
    assert here["jpeg_windows"] == jpeg_region.state()  # "libjpeg-turbo 2.1.5" or "off: why"
    with monkeypatch.context() as m:  # the first attempt ran on torch 2.13.0
        m.setattr(software, "versions", lambda: {**here, "torch": "2.13.0"})
        assert main([*args, "--max-steps", "2"]) == 0
    path = out / "resolved.yaml"
    assert yaml.safe_load(path.read_text())["software"]["torch"] == "2.13.0"
    capsys.readouterr()
    assert main([*args, "--max-steps", "3", "--resume", "auto"]) == 0
    said = f"torch 2.13.0 -> {torch.__version__}"
    assert said in capsys.readouterr().err
    marker = f"resumed (--resume auto) at step 2 on other software ({said}): not bit for bit"
    assert marker in (out / "train.log").read_text()
    assert yaml.safe_load(path.read_text())["software"] == here
    assert main([*args, "--max-steps", "4", "--resume", "auto"]) == 0  # step 3's versions
    assert (out / "train.log").read_text().count("on other software") == 1
    with monkeypatch.context() as m:  # a checkpoint of a classzoo that recorded no versions
        m.setattr(software, "versions", dict)
        assert main([*args, "--max-steps", "5", "--resume", "auto"]) == 0
    assert main([*args, "--max-steps", "6", "--resume", "auto"]) == 0
    unrecorded = "at step 5; its checkpoint records no software versions (an older classzoo)"
    assert unrecorded in (out / "train.log").read_text()
