"""A run killed (SIGKILL) inside a periodic evaluation, then ``--resume auto``: the resume
evaluates that epoch's checkpoint before it trains on, so eval.log, metrics.jsonl and best.pt
have every evaluation the uninterrupted run has. Before, the resume went on training: no row for
that step, and best.pt could name a worse checkpoint (seen: the uninterrupted run's best was
step 6 at 100.0 %, the resumed run's step 9 at 92.3 %).

The truth: ``classzoo eval`` of the checkpoint the evaluation was lost for.
"""

from __future__ import annotations

import json

import pytest

from classzoo.cli import main
from conftest import kill_in_the_evaluation_after, write_imagefolder

pytestmark = pytest.mark.slow


def _args(data, run) -> list[str]:
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(run)]
    for kv in (
        "train.epochs=2",  # 16 images / batch 8: 2 steps per epoch
        "train.eval_every=1",
        "train.keep_best=1",
        "train.amp=off",  # periodic and final evaluations in fp32, as classzoo eval
        "data.batch_size=8",
        "data.num_workers=0",
        "train.progress=false",
    ):
        argv += ["--set", kv]
    return [*argv, "--resume", "auto"]


def _evals(run) -> dict[int, dict]:
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == "eval"}


def test_a_run_killed_in_a_periodic_evaluation_evaluates_it_when_resumed(tmp_path, capsys):
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("ab", 8), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("ab", 400), seed=2)  # an eval of seconds
    run = tmp_path / "run"
    first = run / "checkpoints" / "ckpt-000000002.pt"  # the end of epoch 1
    kill_in_the_evaluation_after(first, _args(data, run))
    assert _evals(run) == {}, "killed after the evaluation, not inside it"

    assert main(_args(data, run)) == 0
    evals = _evals(run)
    assert sorted(evals) == [2, 4]
    eval_log = (run / "eval.log").read_text().splitlines()
    assert [ln.split()[0] for ln in eval_log if ln[:1].isdigit()] == ["2", "4"]
    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(first), "--data-dir", str(data), "--json"]
    assert main([*argv, "--set", "data.num_workers=0"]) == 0
    truth = json.loads(capsys.readouterr().out)
    assert evals[2]["count"] == truth["count"] == 800
    assert evals[2]["top1"] == pytest.approx(truth["top1"])
    assert evals[2]["loss"] == pytest.approx(truth["loss"], rel=1e-6)
    # best.pt ranks both evaluations (ties keep the earlier step)
    index = json.loads((run / "checkpoints" / "index.json").read_text())
    best = min(evals, key=lambda s: (-evals[s]["top1"], s))
    assert index["best"] == f"ckpt-{best:09d}.pt"
    assert index["checkpoints"]["ckpt-000000002.pt"]["metrics"]["top1"] == evals[2]["top1"]
