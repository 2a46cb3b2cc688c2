"""2 ranks without train.sync_bn: every score the run records (eval.log / metrics.jsonl,
summary.json, the best.pt ranking) is the score of the checkpoint it saved. Each rank's BatchNorm
keeps running statistics of its own batches; the run averages them over the ranks before each
save and evaluation (timm's train.py: ``distribute_bn(model, world_size, reduce=True)`` before
each eval, its ``--dist-bn reduce`` default, the EMA model too). Before, each rank scored its
shard of val with its own statistics while only rank 0's were saved: a run reported top-1 69.23
and ``classzoo eval`` of the same checkpoint gave 61.54.

The truth: ``classzoo eval`` of each saved checkpoint, on 1 process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_imagefolder

pytestmark = pytest.mark.slow

RECIPE = """\
model:
  name: resnet10t
  kwargs: {channels: [8, 16, 32, 64], stem_width: 8}
data:
  source: imagefolder
  image_size: 32
  batch_size: 4
  eval_batch_size: 5
  num_workers: 0
optim: {name: momentum, lr: 0.05}
sched: {name: cosine}
train:
  mode: train_and_evaluate
  epochs: 2                 # 24 images / global batch 8 = 3 steps per epoch
  eval_every: 1
  sync_bn: false            # each rank's BatchNorm sees its own 4 images
  ema_decay: 0.9
  amp: "off"
  keep_max: 10
  progress: false
"""


def _classzoo(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "classzoo", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("ema", [False, True], ids=["trained-weights", "ema-weights"])
def test_two_rank_run_reports_the_score_of_its_checkpoints(tmp_path: Path, ema: bool):
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("abc", 8), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("abc", 5), seed=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    run = tmp_path / "run"
    _classzoo(
        "train",
        "--recipe",
        str(recipe),
        "--data-dir",
        str(data),
        "--output-dir",
        str(run),
        "--set",
        f"train.ema={str(ema).lower()}",
        "--nproc-per-node",
        "2",
    )
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in rows if r["kind"] == "eval"}
    assert sorted(evals) == [3, 6]  # the periodic evaluation and the final one
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["top1"] == evals[6]["top1"]
    for step, row in evals.items():
        ckpt = run / "checkpoints" / f"ckpt-{step:09d}.pt"
        truth = json.loads(
            _classzoo("eval", "--checkpoint", str(ckpt), "--data-dir", str(data), "--json")
        )
        assert truth["count"] == row["count"] == 15
        assert row["top1"] == truth["top1"], f"step {step}"
        # the 2 ranks sum their shards' losses in another order: float rounding only
        assert row["loss"] == pytest.approx(truth["loss"], rel=1e-6), f"step {step}"
