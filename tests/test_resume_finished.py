"""``--resume auto`` of a run with nothing left to train: a run killed in its final evaluation
(its last checkpoint saved, no score) is evaluated when resumed, and a finished run keeps its
summary. Before, the resume trained nothing, evaluated nothing and wrote summary.json with
top1 null (and images/s 0.0) over the finished run's figures, exit 0: job scripts that always
pass ``--resume auto`` lost the result. The truth: the first summary, and ``classzoo eval`` of
the final checkpoint run on its own.
"""

from __future__ import annotations

import json

import pytest

from classzoo.cli import main
from conftest import kill_in_the_evaluation_after, write_imagefolder

pytestmark = pytest.mark.slow


def _args(data, run) -> list[str]:
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(run)]
    argv += [
        "--set",
        "train.epochs=1",
        "--set",
        "data.batch_size=8",
        "--set",
        "train.progress=false",
    ]
    return [*argv, "--set", "data.num_workers=0", "--resume", "auto"]


def _eval_json(ckpt, data, capsys) -> dict:
    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(ckpt), "--data-dir", str(data), "--json"]
    assert main([*argv, "--set", "data.num_workers=0"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_finished_run_resumed_keeps_its_summary(tmp_path, capsys):
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("ab", 8), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("ab", 4), seed=2)
    run = tmp_path / "run"
    assert main(_args(data, run)) == 0
    first = json.loads((run / "summary.json").read_text())
    assert first["top1"] is not None and first["images_per_sec"] > 0
    assert main(_args(data, run)) == 0  # nothing left to train
    assert json.loads((run / "summary.json").read_text()) == first


def test_a_run_killed_in_its_final_evaluation_is_evaluated_when_resumed(tmp_path, capsys):
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("ab", 8), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("ab", 400), seed=2)  # a final eval of seconds
    run = tmp_path / "run"
    final = run / "checkpoints" / "ckpt-000000002.pt"
    kill_in_the_evaluation_after(final, _args(data, run))
    assert not (run / "summary.json").exists()  # killed before any score was written
    assert main(_args(data, run)) == 0
    summary = json.loads((run / "summary.json").read_text())
    truth = _eval_json(final, data, capsys)
    assert summary["count"] == truth["count"] == 800
    assert summary["top1"] == pytest.approx(truth["top1"]) and summary["loss"] == pytest.approx(
        truth["loss"], rel=1e-6
    )
    assert (run / "checkpoints" / "best.pt").exists()  # ranked by the score it now has
