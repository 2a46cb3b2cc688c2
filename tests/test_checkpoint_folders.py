"""``--checkpoint`` of ``eval`` / ``predict`` / ``export`` takes a run folder (or its
``checkpoints`` folder) as TF-slim's eval takes a folder: its newest checkpoint, named in the
log. The truth: the same numbers as the newest ``ckpt-<step>.pt`` named by hand; a run folder
without checkpoints is one line, exit 2.
"""

from __future__ import annotations

import json

from classzoo.cli import main
from classzoo.errors import UserError
from conftest import write_imagefolder


def _cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    seen = capsys.readouterr()
    return code, seen.err, seen.out


def test_a_run_folder_means_its_newest_checkpoint(tmp_path, capsys):
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("ab", 8), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("ab", 4), seed=2)
    run = tmp_path / "run"
    train = ["train", "--recipe", "gluon_resnet50_v1b", "--data-dir", str(data), "--amp", "off"]
    train += ["--output-dir", str(run), "--max-steps", "6", "--batch-size", "4", "--device", "cpu"]
    train += ["--set", "model.name=resnet10t", "--set", "data.image_size=32"]
    train += ["--set", "data.num_workers=0", "--set", "train.progress=false"]
    assert main([*train, "--set", "train.ckpt_every_steps=2"]) == 0
    steps = sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.pt"))
    assert steps[-1] == 6 and len(steps) >= 2
    newest = run / "checkpoints" / "ckpt-000000006.pt"
    capsys.readouterr()
    evaluate = ["eval", "--set", "data.num_workers=0", "--json", "--data-dir", str(data)]
    code, err, by_hand = _cli(capsys, [*evaluate, "--checkpoint", str(newest)])
    assert code == 0, err
    for folder in (run, run / "checkpoints"):
        code, err, out = _cli(capsys, [*evaluate, "--checkpoint", str(folder)])
        assert code == 0, err
        assert json.loads(out) == json.loads(by_hand)  # the same file, the same numbers
        assert json.loads(out)["checkpoint"] == str(newest)
    code, err, _ = _cli(capsys, ["eval", "--data-dir", str(data), "--checkpoint", str(run)])
    assert code == 0 and f"the newest checkpoint of the run, {newest}" in err
    predict = ["predict", "--format", "json", str(data / "val" / "a")]
    code, err, by_hand = _cli(capsys, [*predict, "--checkpoint", str(newest)])
    assert code == 0, err
    code, err, out = _cli(capsys, [*predict, "--checkpoint", str(run)])
    assert code == 0 and out == by_hand, err
    # a run folder whose checkpoints are gone: one line naming it, not "not a checkpoint"
    for p in (run / "checkpoints").glob("ckpt-*.pt"):
        p.unlink()
    code, err, _ = _cli(capsys, [*evaluate, "--checkpoint", str(run)])
    assert code == UserError.exit_code
    assert err.strip().splitlines()[-1] == (
        f"classzoo: error: {run} is a run folder without checkpoints "
        f"(no {run / 'checkpoints'}/ckpt-<step>.pt)"
    )
