"""The README's main job, shortened: Fashion-MNIST -> ImageFolder -> train -> eval -> table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

FASHION = Path("/usr/share/datasets/fashion-mnist")
SEED_LINE = re.compile(
    r"^step: \d+ epoch: [\d.]+ FPS: [\d.]+ loss: [\d.]+ total_loss: [\d.]+ lr:[\d.e-]+$"
)


@pytest.mark.slow
@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_quickstart_run_folder(tmp_path):
    out = tmp_path / "qs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "classzoo",
            "quickstart",
            "--output-dir",
            str(out),
            "--set",
            "train.epochs=0.1",
            "--set",
            "train.log_every=10",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| top-1" in proc.stdout and "| test images    | 10000 |" in proc.stdout
    # 60,000 / 10,000 real images on disk in the Gluon recipe's ImageFolder layout
    data = out / "data" / "fashion-mnist"
    assert sum(1 for _ in (data / "train").rglob("*.png")) == 60000
    assert sorted(p.name for p in (data / "val").iterdir())[0] == "0_tshirt_top"
    run = out / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["count"] == 10000 and summary["world_size"] == 1 and summary["device"] == "cpu"
    assert summary["top1"] > 50.0  # 0.1 epoch (24 steps) is already far above chance (10 %)
    lines = (run / "train.log").read_text().splitlines()
    assert lines and all(SEED_LINE.match(ln) for ln in lines), lines[:3]
    assert (
        (run / "eval.log")
        .read_text()
        .startswith("step epoch top1 top5 loss checkpoint_time(UTC)\n")
    )
    kinds = {json.loads(ln)["kind"] for ln in (run / "metrics.jsonl").read_text().splitlines()}
    assert kinds == {"train", "eval"}
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run / "checkpoints").glob("ckpt-*.pt"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["num_classes"] is None  # as asked: the data decides
    resolved = yaml.safe_load((run / "resolved.yaml").read_text())
    assert resolved["num_classes"] == 10 and resolved["preprocess"]["image_size"] == 32
    assert resolved["data"]["val"]["count"] == 10000
    # predict with the run's checkpoint: its own preprocessing and class names
    images = sorted((data / "val" / "1_trouser").glob("*.png"))[:10]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "classzoo",
            "predict",
            "--checkpoint",
            str(sorted((run / "checkpoints").glob("*.pt"))[-1]),
            "--json",
            "--top-k",
            "3",
            *map(str, images),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    assert [r["image"] for r in results] == list(map(str, images))
    assert all(len(r["top"]) == 3 and r["top"][0]["prob"] >= r["top"][1]["prob"] for r in results)
    assert (
        sum(r["top"][0]["class"] == "1_trouser" for r in results) >= 8
    )  # trousers: the easy class
