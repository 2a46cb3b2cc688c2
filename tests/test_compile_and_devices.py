"""``train.compile`` and the per-device defaults, through the CLI.

The outside truth for a compiled run is the eager run of the same recipe and seed: Inductor
fuses and reorders float operations, so losses and weights agree to float32 rounding, not
bit for bit.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from classzoo.engine.devices import traits
from classzoo.formats.torch_checkpoint import load_checkpoint_file


def _train(data: Path, out: Path, *extra: str) -> list[dict]:
    cmd = [
        sys.executable, "-m", "classzoo", "train", "--recipe", "quickstart", "--data-dir",
        str(data), "--output-dir", str(out), "--max-steps", "3", "--amp", "off",
        "--set", "model.name=resnet10t", "--set", "data.image_size=32",
        "--set", "data.batch_size=8", "--set", "data.num_workers=0", "--set", "optim.lr=0.004",
        "--set", "train.log_every=1", "--set", "train.mode=train", *extra,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == "train"]


@pytest.mark.slow
def test_a_compiled_run_trains_like_the_eager_run(small_imagefolder, tmp_path):
    eager = _train(small_imagefolder, tmp_path / "eager")
    compiled = _train(small_imagefolder, tmp_path / "compiled", "--set", "train.compile=true")
    assert [r["step"] for r in compiled] == [1, 2, 3]
    for a, b in zip(eager, compiled):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a, b)
    resolved = yaml.safe_load((tmp_path / "compiled" / "resolved.yaml").read_text())
    assert resolved["compile"] == "default"
    assert yaml.safe_load((tmp_path / "eager" / "resolved.yaml").read_text())["compile"] is None
    # AdamW moves each weight by ~lr per step whatever its gradient, so rounding differences
    # grow with lr: the tolerance below was measured at lr 0.004 (pinned in _train)
    ckpt_e = load_checkpoint_file(sorted((tmp_path / "eager" / "checkpoints").glob("ckpt-*"))[-1])
    ckpt_c = load_checkpoint_file(
        sorted((tmp_path / "compiled" / "checkpoints").glob("ckpt-*"))[-1]
    )
    # the plain model is saved: no "_orig_mod." prefix, the same keys as an eager run
    assert list(ckpt_c["model"]) == list(ckpt_e["model"])
    for key, value in ckpt_e["model"].items():
        if value.is_floating_point():  # measured: at most 3.1e-5 apart after 3 steps
            torch.testing.assert_close(ckpt_c["model"][key], value, rtol=1e-3, atol=2e-4)


def test_device_defaults_come_from_one_table_and_are_recorded(small_imagefolder, tmp_path):
    """On this CPU: channels_last and eager by default (the table), recorded in resolved.yaml;
    an explicit setting wins over the table."""
    assert traits(torch.device("cpu")).channels_last and not traits(torch.device("cpu")).compile
    # HCCL and MPS reject float64 collectives: their accumulators are float32
    assert traits("npu").sum_dtype == torch.float32 and not traits("npu").channels_last
    assert traits("mps").sum_dtype == torch.float32
    _train(small_imagefolder, tmp_path / "default")
    r = yaml.safe_load((tmp_path / "default" / "resolved.yaml").read_text())
    assert (r["channels_last"], r["compile"]) == (True, None)
    # a CPU run computes with huge pages and glibc keeping freed memory (tests/test_host_memory.py)
    assert r["host_memory"] == "2 MiB pages for tensors >= 2 MiB; freed memory kept (glibc mallopt)"
    cfg = yaml.safe_load((tmp_path / "default" / "config.yaml").read_text())
    assert cfg["train"]["channels_last"] is None  # asked: the device's default
    _train(small_imagefolder, tmp_path / "nchw", "--set", "train.channels_last=false")
    r = yaml.safe_load((tmp_path / "nchw" / "resolved.yaml").read_text())
    assert r["channels_last"] is False


@pytest.mark.slow
def test_a_fused_optimizer_trains_like_the_loop(small_imagefolder, tmp_path):
    """``optim.fused``: torch's fused AdamW kernel (the CPU default from engine/devices.py)
    against the per-parameter loop, the outside truth; same losses and weights to float32
    rounding, recorded in resolved.yaml; a fused form an optimizer lacks is one line, exit 2."""
    fused = _train(small_imagefolder, tmp_path / "fused")
    loop = _train(small_imagefolder, tmp_path / "loop", "--set", "optim.fused=false")
    for a, b in zip(loop, fused):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
    rf = yaml.safe_load((tmp_path / "fused" / "resolved.yaml").read_text())
    rl = yaml.safe_load((tmp_path / "loop" / "resolved.yaml").read_text())
    assert (rf["fused_optimizer"], rl["fused_optimizer"]) == (True, False)
    last = [
        load_checkpoint_file(sorted((tmp_path / d / "checkpoints").glob("ckpt-*"))[-1])
        for d in ("fused", "loop")
    ]
    assert last[0]["optimizer"]["param_groups"][0]["fused"] is True
    for key, value in last[1]["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(last[0]["model"][key], value, rtol=1e-4, atol=1e-5)
    # a resumed run computes as its resolved.yaml says, not as the checkpoint's groups did
    _train(small_imagefolder, tmp_path / "loop", "--resume", "auto", "--max-steps", "4")
    resumed = sorted((tmp_path / "loop" / "checkpoints").glob("ckpt-*"))[-1]
    assert load_checkpoint_file(resumed)["optimizer"]["param_groups"][0]["fused"] is True
    cmd = [
        sys.executable, "-m", "classzoo", "train", "--recipe", "quickstart", "--data-dir",
        str(small_imagefolder), "--output-dir", str(tmp_path / "refused"), "--max-steps", "1",
        "--set", "optim.name=rmsproptf", "--set", "optim.fused=true",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "optim.fused=true: rmsproptf has no fused implementation" in done.stderr
    assert not (tmp_path / "refused").exists()


def test_bench_times_the_step_with_the_real_loader(small_imagefolder):
    """``classzoo bench --data-dir``: the trainer's step fed by classzoo's loader, with the
    share of time spent waiting for data."""
    cmd = [
        sys.executable, "-m", "classzoo", "bench", "--model", "resnet10t", "--batch-size", "4",
        "--image-size", "32", "--steps", "3", "--warmup", "1", "--device", "cpu",
        "--data-dir", str(small_imagefolder), "--num-workers", "1", "--json",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout[done.stdout.index("{") :])
    assert r["data"] == str(small_imagefolder) and r["workers"] == 1
    assert r["images_per_sec"] > 0 and 0.0 <= r["data_wait"] < 1.0
    assert r["image_size"] == 32 and r["channels_last"] is True and r["compile"] is False
    # on a CPU the peak is the process's max RSS (ru_maxrss), not a tensor peak as on CUDA
    assert r["peak_memory_kind"].startswith("process max RSS")
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert 0 < r["peak_memory_mb"] <= rss_mb + 0.05  # bench rounds it to 0.1 MiB
    bad = subprocess.run([*cmd[:-1], "--mode", "infer"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--data-dir times training" in bad.stderr
