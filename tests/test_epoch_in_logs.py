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


def test_every_step_is_in_a_train_log_line(tmp_path, capsys):
    """With train.log_every=2 and 3 steps per epoch, step 3 (an epoch's last) was in no line and
    the step-4 line's loss was step 4's alone; with log_every=50 the first epoch never appeared.
    timm's train.py logs each epoch's last batch. The truth: the per-step losses of the same run
    logged every step, averaged by hand over each line's steps."""
    data = tmp_path / "data"
    write_imagefolder(data / "train", {"a": 5, "b": 4, "c": 4}, seed=1)
    write_imagefolder(data / "val", dict.fromkeys("abc", 2), seed=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)

    def losses(every: int) -> list[tuple[int, float]]:
        run = tmp_path / f"every{every}"
        argv = ["train", "--recipe", str(recipe), "--data-dir", str(data), "--output-dir"]
        assert main([*argv, str(run), "--set", f"train.log_every={every}"]) == 0
        text = (run / "train.log").read_text()
        return [(int(s), float(v)) for s, v in re.findall(r"^step: (\d+) .* loss: ([\d.]+) ", text, re.M)]  # fmt: skip

    each = dict(losses(1))
    assert sorted(each) == [1, 2, 3, 4, 5, 6]
    lines = losses(2)
    assert [s for s, _ in lines] == [2, 3, 4, 6]  # 3 and 6 end an epoch
    for (start, _), (step, loss) in zip([(0, 0), *lines], lines):
        mean = sum(each[k] for k in range(start + 1, step + 1)) / (step - start)
        assert abs(loss - mean) < 2e-4, (step, loss, mean)  # train.log's 4 decimals
    assert [s for s, _ in losses(50)] == [3, 6]
