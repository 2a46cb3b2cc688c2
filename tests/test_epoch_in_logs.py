"""The last step of an epoch reads the completed epoch in train.log as in eval.log, also when the
epoch's last image is skipped (a batch of 1 cannot train BatchNorm). Before, train.log said
0.923 / 1.923 where eval.log and summary.json said 1.000 / 2.000. Hand-computed truth: 13 images,
batch 4 -> steps at samples 4, 8, 12 of each epoch; the 13th is skipped."""

from __future__ import annotations

import re

from classzoo.cli import main
from conftest import write_imagefolder
from test_distributed_bn import RECIPE


def test_epoch_end_step_reads_the_completed_epoch(tmp_path, capsys):
    data = tmp_path / "data"
    write_imagefolder(data / "train", {"a": 5, "b": 4, "c": 4}, seed=1)
    write_imagefolder(data / "val", dict.fromkeys("abc", 2), seed=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    run = tmp_path / "run"
    argv = ["train", "--recipe", str(recipe), "--data-dir", str(data), "--output-dir", str(run)]
    assert main([*argv, "--set", "train.log_every=1"]) == 0
    logged = re.findall(r"^step: (\d+) epoch: ([\d.]+) ", (run / "train.log").read_text(), re.M)
    assert logged == [
        ("1", f"{4 / 13:.3f}"),
        ("2", f"{8 / 13:.3f}"),
        ("3", "1.000"),
        ("4", f"{1 + 4 / 13:.3f}"),
        ("5", f"{1 + 8 / 13:.3f}"),
        ("6", "2.000"),
    ]
    evals = [ln.split()[:2] for ln in (run / "eval.log").read_text().splitlines()[1:]]
    assert evals == [["3", "1.000"], ["6", "2.000"]]
