"""A run's checkpoint history survives a damaged index.json and a resume from an earlier step.

* index.json damaged between two attempts (one flipped bit): the scores are recovered from the
  run's metrics.jsonl, so best.pt stays on the best checkpoint and rotation (keep_max=1) does
  not delete it. Before, the rebuild knew no score: best.pt moved to a worse checkpoint and the
  best one was deleted. Where metrics.jsonl itself has a damaged line, the checkpoint left
  without a score is kept, and the log says so.
* ``--resume <an earlier checkpoint>``: the checkpoints of the continuation it abandons are
  moved aside, kept byte for byte, and are no longer the newest (``--resume auto``, ``classzoo
  eval --checkpoint RUN``) or ranked for best.pt. Before, ``--resume auto`` jumped back to the
  abandoned run's last checkpoint.

The truths: the scores in the same run's metrics.jsonl (and eval.log), and the step the user
resumed from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from classzoo.cli import main
from classzoo.formats.torch_checkpoint import load_checkpoint_file
from conftest import write_imagefolder

pytestmark = pytest.mark.slow


def _train(data: Path, run: Path, *extra: str) -> int:
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(run)]
    for kv in ("train.eval_every=1", "train.amp=off", "data.batch_size=8", "data.num_workers=0"):
        argv += ["--set", kv]
    return main([*argv, "--set", "train.progress=false", *extra])


def _evals(run: Path) -> list[dict]:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # the line a test damaged
            continue
    return [r for r in rows if r["kind"] == "eval"]


def _step(path: Path) -> int:
    return load_checkpoint_file(path)["progress"]["step"]


def _flip_a_score(run: Path) -> None:
    """One flipped bit in index.json, inside a recorded loss (its SHA-256 no longer matches)."""
    path = run / "checkpoints" / "index.json"
    raw = bytearray(path.read_bytes())
    at = raw.index(b'"loss": ') + len(b'"loss": ')
    raw[at] ^= 1
    path.write_bytes(bytes(raw))


def _inverted(tmp_path: Path) -> Path:
    """Two grey levels whose labels are swapped in val: the more training learns, the worse
    val gets, so the best checkpoint is the oldest one (the one rotation would delete)."""
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("ab", 8), level={"a": 40, "b": 215})
    write_imagefolder(data / "val", dict.fromkeys("ab", 4), level={"a": 215, "b": 40})
    return data


ONE_BEST = ("--set", "train.keep_max=1", "--set", "train.best_metric=loss")


def test_a_damaged_index_keeps_the_best_checkpoint_and_its_score(tmp_path, capsys):
    data, run = _inverted(tmp_path), tmp_path / "run"
    # 16 images / batch 8: 2 steps per epoch; evaluations at steps 2 and 4
    assert _train(data, run, *ONE_BEST, "--set", "train.epochs=3", "--max-steps", "4") == 0
    first = {r["step"]: r for r in _evals(run)}
    assert sorted(first) == [2, 4] and first[2]["loss"] < first[4]["loss"], "setup: 2 is best"
    _flip_a_score(run)
    capsys.readouterr()
    assert _train(data, run, *ONE_BEST, "--set", "train.epochs=3", "--resume", "auto") == 0
    assert "index.json is unreadable (SHA-256 mismatch)" in capsys.readouterr().err
    rows = _evals(run)
    truth = min(rows, key=lambda r: (r["loss"], r["step"]))  # ties: the earlier step
    ckpts = run / "checkpoints"
    assert _step(ckpts / "best.pt") == truth["step"] == 2
    assert _step(ckpts / "ckpt-000000002.pt") == 2  # not rotated away
    assert [r["step"] for r in rows] == [2, 4, 6], "each checkpoint evaluated once"
    index = json.loads((ckpts / "index.json").read_text())
    assert index["best"] == "ckpt-000000002.pt"
    for r in rows:  # each kept checkpoint ranked by the score its evaluation logged
        entry = index["checkpoints"].get(f"ckpt-{r['step']:09d}.pt")
        if entry is not None:
            assert entry["metrics"]["loss"] == r["loss"] and entry["metrics"]["top1"] == r["top1"]
    eval_log = [ln.split() for ln in (run / "eval.log").read_text().splitlines()]
    assert float(next(ln for ln in eval_log if ln[0] == "2")[4]) == round(truth["loss"], 4)


def test_a_damaged_metrics_line_leaves_that_checkpoint_unscored_and_kept(tmp_path, capsys):
    data, run = _inverted(tmp_path), tmp_path / "run"
    assert _train(data, run, *ONE_BEST, "--set", "train.epochs=3", "--max-steps", "4") == 0
    _flip_a_score(run)
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if '"kind": "eval", "step": 2,' in ln)
    lines[at] = lines[at][:40] + "\n"  # the eval row of step 2, cut off
    log.write_text("".join(lines))
    capsys.readouterr()
    assert _train(data, run, *ONE_BEST, "--set", "train.epochs=3", "--resume", "auto") == 0
    ckpts = run / "checkpoints"
    assert _step(ckpts / "ckpt-000000002.pt") == 2  # its score is unknown: kept, maybe the best
    said = [ln for ln in capsys.readouterr().err.splitlines() if "damaged line" in ln]
    assert len(said) == 1 and f"line {at + 1}" in said[0] and "ckpt-000000002.pt" in said[0]
    index = json.loads((ckpts / "index.json").read_text())
    assert index["checkpoints"]["ckpt-000000002.pt"]["score_lost"] is True
    rows = {r["step"]: r for r in _evals(run)}
    for name, entry in index["checkpoints"].items():  # the others: the scores logged
        if name != "ckpt-000000002.pt":
            assert entry["metrics"]["loss"] == rows[entry["step"]]["loss"]


def test_a_removed_metrics_log_leaves_the_checkpoints_unscored_and_kept(tmp_path, capsys):
    """index.json damaged and metrics.jsonl removed: the attempt's logger makes a new one (a
    resume marker only), which read as "every row there" and let rotation delete the best."""
    data, run = _inverted(tmp_path), tmp_path / "run"
    assert _train(data, run, *ONE_BEST, "--set", "train.epochs=3", "--max-steps", "4") == 0
    _flip_a_score(run)
    (run / "metrics.jsonl").unlink()
    capsys.readouterr()
    assert _train(data, run, *ONE_BEST, "--set", "train.epochs=3", "--resume", "auto") == 0
    said = [ln for ln in capsys.readouterr().err.splitlines() if "has no evaluation rows" in ln]
    assert len(said) == 1 and "ckpt-000000002.pt" in said[0], said
    ckpts = run / "checkpoints"
    assert _step(ckpts / "ckpt-000000002.pt") == 2  # the best (by construction): kept
    index = json.loads((ckpts / "index.json").read_text())
    assert index["checkpoints"]["ckpt-000000002.pt"]["score_lost"] is True


def test_a_resume_from_another_folders_checkpoint_at_an_evaluation(tmp_path, capsys):
    """--resume of a file in another folder (another run's, or one set aside in
    abandoned-from-step-N) at an epoch's end: its evaluation found no file of that step here
    to rank and the run stopped, exit 2."""
    data, run = _inverted(tmp_path), tmp_path / "run"
    assert _train(data, run, "--set", "train.epochs=3", "--max-steps", "2") == 0
    other = tmp_path / "other"
    given = run / "checkpoints" / "ckpt-000000002.pt"
    assert _train(data, other, "--set", "train.epochs=3", "--resume", str(given)) == 0
    assert [r["step"] for r in _evals(other)] == [2, 4, 6]  # step 2's evaluation, then on


def _digests(folder: Path) -> dict[int, str]:
    return {_step(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("ckpt-*.pt")}


def test_a_resume_from_an_earlier_checkpoint_abandons_the_later_ones(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    write_imagefolder(data / "train", dict.fromkeys("ab", 16), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("ab", 8), seed=2)
    three = ("--set", "train.epochs=3", "--set", "train.keep_max=5")
    assert _train(data, run, *three) == 0  # 4 steps per epoch: checkpoints 4, 8, 12
    ckpts = run / "checkpoints"
    before = _digests(ckpts)
    assert sorted(before) == [4, 8, 12]
    # back to the end of epoch 1, then stopped in epoch 2 (a limit, as a SIGTERM would)
    earlier = ckpts / "ckpt-000000004.pt"
    assert _train(data, run, *three, "--resume", str(earlier), "--max-steps", "6") == 0
    # the run folder's newest checkpoint is this attempt's
    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(run), "--data-dir", str(data), "--json"]
    assert main([*argv, "--set", "data.num_workers=0"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == str(ckpts / "ckpt-000000006.pt")
    # best.pt: ranked among the steps of this attempt's history only (4, then 6)
    rows = {r["step"]: r for r in _evals(run)}  # the last row of each step
    truth = min((4, 6), key=lambda s: (-rows[s]["top1"], s))
    assert _step(ckpts / "best.pt") == truth
    # the abandoned ones: kept byte for byte, out of the way
    assert sorted(_digests(ckpts)) == [4, 6]
    aside = [d for d in ckpts.iterdir() if d.is_dir()]
    assert [d.name for d in aside] == ["abandoned-from-step-8"]
    assert _digests(aside[0]) == {s: before[s] for s in (8, 12)}
    assert _train(data, run, *three, "--resume", "auto") == 0
    resumed = capsys.readouterr().err
    assert "resumed from " + str(ckpts / "ckpt-000000006.pt") + " at step 6" in resumed
    after = _digests(ckpts)
    assert sorted(after) == [4, 6, 8, 12]  # this attempt's own, written again
    assert after[12] != before[12] and _step(ckpts / "ckpt-000000012.pt") == 12
    assert _digests(aside[0]) == {s: before[s] for s in (8, 12)}


def test_an_attempt_that_ends_before_its_first_save_still_abandons_the_later_ones(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    write_imagefolder(data / "train", dict.fromkeys("ab", 16), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("ab", 8), seed=2)
    three = ("--set", "train.epochs=3", "--set", "train.keep_max=5")
    assert _train(data, run, *three) == 0  # checkpoints 4, 8, 12
    earlier = run / "checkpoints" / "ckpt-000000004.pt"
    # resumed from step 4 and ended there, nothing saved (as a kill before the first save)
    assert _train(data, run, *three, "--resume", str(earlier), "--max-steps", "4") == 0
    capsys.readouterr()
    assert _train(data, run, *three, "--resume", "auto", "--max-steps", "5") == 0
    assert f"resumed from {earlier} at step 4" in capsys.readouterr().err
