"""classzoo.report on hand-written run folders, in exactly the trainer's format.

Expected figures are computed by hand from the fixture values and the published numbers in
shared/reference/recipes.md, never by calling the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from classzoo.errors import UserError
from classzoo.report import build_report, load_run, main_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_run(folder: Path, config: dict, metrics: list[dict], summary: dict | None, tail=""):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    lines = "".join(json.dumps(m) + "\n" for m in metrics)
    (folder / "metrics.jsonl").write_text(lines + tail, encoding="utf-8")
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


def _train(step, epoch, loss, lr, fps):
    return {"kind": "train", "step": step, "epoch": epoch, "loss": loss,
            "total_loss": loss + 0.4, "lr": lr, "fps": fps, "time": "2026-11-22T01:02:03Z"}  # fmt: skip


def _eval(step, epoch, top1, top5):
    return {"kind": "eval", "step": step, "epoch": epoch, "top1": top1, "top5": top5,
            "loss": 1.5, "count": 50000, "time": "2026-11-22T02:00:00Z"}  # fmt: skip


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """A finished 8-device ResNet-152 fine-tune and an interrupted 1-device InceptionV4 run."""
    slim = _write_run(
        tmp_path / "slim152_8p",
        {
            "recipe": "resnet_v1_152_finetune",
            "model": {"name": "resnet_v1_152", "num_classes": 1000},
            "train": {"amp": "bf16", "epochs": 4},
            "data": {"batch_size": 16},
        },
        [_train(100 * i, i / 2, 2.0 - 0.2 * i, 1e-4 * (1 - i / 8), 3000 + i) for i in range(1, 9)]
        + [_eval(400, 2.0, 74.1, 91.9), _eval(800, 4.0, 75.9, 92.81)],
        {
            "recipe": "resnet_v1_152_finetune",
            "model": "resnet_v1_152",
            "top1": 75.9,
            "top5": 92.81,
            "loss": 1.0,
            "count": 50000,
            "images_per_sec": 3100.5,
            "epochs": 4,
            "amp": "bf16",
            "world_size": 8,
            "device": "npu",
            "global_batch_size": 128,
            "wall_time_s": 25200.0,
        },  # fmt: skip
    )
    incep = _write_run(
        tmp_path / "incep_1p",
        {
            "recipe": "inception_v4",
            "model": {"name": "inception_v4", "num_classes": 1001},
            "train": {"amp": "fp16", "epochs": 100},
            "data": {"batch_size": 128},
        },
        [
            _train(10, 0.5, 6.9, 0.045, 400.0),
            _train(20, 1.0, 5.5, 0.0449, 470.0),
            _eval(20, 1.0, 60.0, 83.0),
            _train(30, 1.5, 4.7, 0.0448, 469.5),
            _train(40, 2.0, 4.1, 0.0446, 471.0),
            _eval(40, 2.0, 70.4, 89.1),
        ],
        None,
        tail='{"kind": "train", "step": 50, "epo',  # killed mid-write
    )
    return [slim, incep]


def _rows(markdown: str, first_cell: str, width: int = 8) -> list[list[str]]:
    """Cells of the table rows whose first cell is ``first_cell``; ``width`` 8 picks the
    paper-vs-ours table, 7 the results table."""
    rows = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell and len(cells) == width:
            rows.append(cells)
    return rows


def test_paper_vs_ours_deltas(runs):
    text = build_report(runs, None)
    slim = _rows(text, "slim152_8p")
    # 75.9 - 76.8, 75.9 - 77.0, 75.9 - 78.57 (10-crop: shown in parentheses, marked)
    assert [r[5:7] for r in slim] == [["76.80", "-0.90"], ["77.00", "-1.10"], ["78.57", "(-2.67)"]]
    assert all(r[1:5] == ["resnet_v1_152", "75.90", "75.90 (ep 4)", "92.81"] for r in slim)
    assert "TF-slim README" in slim[0][7] and "not comparable" in slim[2][7]
    incep = _rows(text, "incep_1p (incomplete)")
    # last eval line 70.4: 70.4 - 80.2, 70.4 - 80.0, 70.4 - 74.9
    assert [r[6] for r in incep] == ["-9.80", "-9.60", "-4.50"]
    assert incep[0][2:5] == ["70.40", "70.40 (ep 2)", "89.10"]
    assert "incep_1p: no summary.json" in text


def test_results_table_in_the_gluon_shape(runs):
    text = build_report(runs, None)
    assert "| Run | Name | Acc@1 | Acc@1 best | FPS | Epochs | AMP_Type |" in text
    row = ["slim152_8p", "8p-NPU", "75.90", "75.90", "3100.50", "4", "bf16"]
    assert _rows(text, "slim152_8p", 7) == [row]
    # no summary nor resolved.yaml: world size and device unknown; FPS = median(400, 470,
    # 469.5, 471) = 469.75; epochs reached 2.0 (of 100 configured); AMP from config.yaml;
    # marked as in the paper table: its last eval is not its end
    assert _rows(text, "incep_1p (incomplete)", 7) == [
        ["incep_1p (incomplete)", "?p-?", "70.40", "70.40", "469.75", "2", "fp16"]
    ]


def test_gluon_alias_cpu_name_and_non_imagenet(tmp_path):
    gluon = _write_run(
        tmp_path / "gluon",
        {},
        [_eval(10, 90.0, 77.0, 93.5)],
        {"recipe": "gluon_resnet50_v1b", "model": "resnet50", "top1": 77.0, "top5": 93.5,
         "count": 50000, "images_per_sec": 12.5, "epochs": 90, "amp": None, "world_size": 1,
         "device": "cpu"},
    )  # fmt: skip
    # typed by hand, as in the trainer's docs: YAML 1.1 reads the bare `off` as false
    (gluon / "config.yaml").write_text(
        "recipe: gluon_resnet50_v1b\nmodel: {name: resnet50, num_classes: 1000}\n"
        "train: {amp: off, epochs: 90}\ndata: {batch_size: 256}\n",
        encoding="utf-8",
    )
    flowers = _write_run(
        tmp_path / "flowers",
        {"recipe": "inception_v4", "model": {"name": "inception_v4", "num_classes": 5}},
        [_eval(10, 1.0, 95.0, 100.0)],
        None,
    )
    text = build_report([gluon, flowers], None)
    # 77.0 - 77.58 (timm), 77.0 - 77.22 (Gluon reference README)
    assert [r[6] for r in _rows(text, "gluon")] == ["-0.58", "-0.22"]
    assert _rows(text, "gluon", 7) == [["gluon", "1p-CPU", "77.00", "77.00", "12.50", "90", "off"]]
    # 5 classes: a transfer-learning run, not comparable with ImageNet figures
    assert [r[5:] for r in _rows(text, "flowers (incomplete)")] == [["-", "-", "-"]]


def test_same_folder_name_in_two_places(tmp_path):
    config = {"recipe": None, "model": {"name": "resnet50", "num_classes": 1000}}
    a = _write_run(tmp_path / "a" / "seed1", config, [_eval(1, 1.0, 1.0, 5.0)], None)
    b = _write_run(tmp_path / "b" / "seed1", config, [_eval(1, 1.0, 2.0, 6.0)], None)
    text = build_report([a, b], None)
    assert _rows(text, "a/seed1 (incomplete)")[0][2] == "1.00"
    assert _rows(text, "b/seed1 (incomplete)")[0][2] == "2.00"


def test_plots_written_and_linked(runs, tmp_path):
    out = tmp_path / "report"
    text = build_report(runs, out)
    assert (out / "report.md").read_text(encoding="utf-8") == text
    for name in ("loss.png", "eval_loss.png", "lr.png", "accuracy.png", "fps.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
        with Image.open(out / name) as image:
            image.verify()  # checks the chunk CRCs: a complete, valid PNG
        with Image.open(out / name) as image:
            assert image.width >= 600 and image.height >= 400
            extrema = image.convert("L").getextrema()
            assert extrema[1] - extrema[0] > 100  # not a blank canvas
        assert f"]({name})" in text


def test_main_report_prints_and_returns_zero(runs, tmp_path, capsys):
    assert main_report([str(p) for p in runs], str(tmp_path / "out")) == 0
    printed = capsys.readouterr().out
    assert "## Paper vs ours" in printed and "8p-NPU" in printed
    assert (tmp_path / "out" / "accuracy.png").is_file()


def test_not_a_run_folder(tmp_path, runs):
    stray = tmp_path / "photos"
    stray.mkdir()
    (stray / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(UserError, match="photos: not a run folder"):
        build_report([runs[0], stray], None)
    with pytest.raises(UserError, match="missing: no such run folder"):
        load_run(tmp_path / "missing")


def test_resumed_run_with_a_cut_off_line(tmp_path):
    """Killed mid-write at step 40, resumed from the step-20 checkpoint: the trainer appends, so
    the cut-off line sits inside the file and steps 30-40 are logged twice."""
    first = [_train(10, 0.25, 3.0, 0.1, 100.0), _train(20, 0.5, 2.5, 0.1, 100.0)]
    first += [_train(30, 0.75, 2.0, 0.1, 100.0), _eval(30, 0.75, 40.0, 70.0)]
    resumed = [_train(30, 0.75, 2.1, 0.1, 100.0), _eval(30, 0.75, 41.0, 71.0)]
    resumed += [_train(40, 1.0, 1.8, 0.1, 100.0)]
    run = _write_run(
        tmp_path / "resumed",
        {"recipe": "inception_v4:8p", "model": {"name": "inception_v4", "num_classes": 1001}},
        first,
        None,
        tail='{"kind": "train", "step": 40, "ep\n' + "".join(json.dumps(m) + "\n" for m in resumed),
    )
    loaded = load_run(run)
    assert [(r["step"], r["loss"]) for r in loaded.train] == [
        (10, 3.0),
        (20, 2.5),
        (30, 2.1),
        (40, 1.8),
    ]
    assert [r["top1"] for r in loaded.evals] == [41.0]
    assert loaded.bad_lines == [5]  # 4 lines of the first attempt, then the cut-off one
    text = build_report([run], None)
    # recipe variant ":8p" ignored for matching: 41.0 - 80.2 (TF-slim README)
    assert _rows(text, "resumed (incomplete)")[0][5:7] == ["80.20", "-39.20"]
    assert "resumed: skipped unreadable metrics.jsonl line(s) 5." in text


def test_metrics_file_with_nothing_readable(tmp_path):
    run = tmp_path / "notes"
    run.mkdir()
    (run / "metrics.jsonl").write_text("loss went down\nthen up\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"notes/metrics.jsonl: no readable metrics line"):
        load_run(run)


def test_best_and_last_differ_and_the_best_epoch_is_named(tmp_path):
    run = _write_run(
        tmp_path / "peaked",
        {"recipe": "inception_v4", "model": {"name": "inception_v4", "num_classes": 1001}},
        [_eval(10, 1.0, 78.0, 94.0), _eval(20, 2.0, 80.5, 95.1), _eval(30, 3.0, 79.9, 94.9)],
        None,
    )
    text = build_report([run], None)
    row = _rows(text, "peaked (incomplete)")[0]
    # last 79.9, best 80.5 at epoch 2; delta last - 80.2 = -0.30
    assert row[2:7] == ["79.90", "80.50 (ep 2)", "94.90", "80.20", "-0.30"]
    assert _rows(text, "peaked (incomplete)", 7)[0][2:4] == ["79.90", "80.50"]


def test_published_figures_for_another_model_are_flagged(tmp_path):
    """The gluon recipe with model.name=resnet18: its figures are ResNet-50's."""
    run = _write_run(
        tmp_path / "r18",
        {"recipe": "gluon_resnet50_v1b", "model": {"name": "resnet18", "num_classes": 1000}},
        [_eval(10, 90.0, 70.0, 89.0)],
        {"recipe": "gluon_resnet50_v1b", "model": "resnet18", "top1": 70.0, "top5": 89.0,
         "count": 50000, "world_size": 1, "device": "cuda"},
    )  # fmt: skip
    text = build_report([run], None)
    # 70.0 - 77.58 and 70.0 - 77.22, in parentheses: not the same network
    assert [r[6] for r in _rows(text, "r18")] == ["(-7.58)", "(-7.22)"]
    assert (
        "WARNING r18: the run trains resnet18, but the published figures (matched by its recipe "
        "gluon_resnet50_v1b) are for resnet50.gluon_in1k" in text
    )
    plain = build_report([tmp_path / "r18"], None)
    assert plain == text  # deterministic


def test_interrupted_run_is_labelled_from_resolved_yaml(tmp_path):
    run = _write_run(
        tmp_path / "incomplete8",
        {
            "recipe": "inception_v4:8p",
            "model": {"name": "inception_v4"},
            "train": {"device": "auto"},
        },
        [_train(10, 0.5, 6.0, 0.045, 900.0)],
        None,
    )
    (run / "resolved.yaml").write_text(
        yaml.safe_dump({"model": "inception_v4", "device": "cuda:0", "world_size": 8}),
        encoding="utf-8",
    )
    text = build_report([run], None)
    assert _rows(text, "incomplete8 (incomplete)", 7)[0][1] == "8p-GPU"


def test_a_recipe_run_on_other_classes_is_not_compared_with_imagenet(tmp_path, small_imagefolder):
    """A gluon recipe run on a 4-class folder leaves model.num_classes null in config.yaml (one
    logit per folder, decided by the data); report read that null as "maybe ImageNet" and printed
    the run's delta against resnet50.gluon_in1k's 77.58. Its resolved.yaml says 4 classes, and
    says which precision ``amp: auto`` became (config.yaml's "auto" was shown)."""
    from classzoo.cli import main

    run = tmp_path / "run"
    argv = ["train", "--recipe", "gluon_resnet50_v1b", "--data-dir", str(small_imagefolder)]
    argv += ["--output-dir", str(run), "--max-steps", "1", "--batch-size", "4", "--device", "cpu"]
    argv += ["--set", "model.name=resnet10t", "--set", "data.image_size=32"]
    argv += ["--set", "data.num_workers=0", "--set", "train.progress=false"]
    assert main(argv) == 0
    resolved = yaml.safe_load((run / "resolved.yaml").read_text())
    assert (
        resolved["num_classes"] == 4
        and yaml.safe_load((run / "config.yaml").read_text())["model"]["num_classes"] is None
    )
    text = build_report([run], None)
    assert "run: 4 classes, not ImageNet-1k; no published match." in text
    assert "77.58" not in text
    assert [r[5:] for r in _rows(text, "run")] == [["-", "-", "-"]]
    assert _rows(text, "run", 7)[0][6] == resolved["train_precision"]


def test_a_resume_from_an_earlier_checkpoint_drops_the_abandoned_rows(tmp_path):
    """A run of 3 epochs resumed from its first epoch's checkpoint and ended a step later: its
    report took "Epochs 3" and the best top-1 from the evaluations of the continuation it had
    abandoned. The truths: summary.json (where it ended) and checkpoints/index.json (which ranks
    only the run's own checkpoints; the abandoned ones are set aside)."""
    from classzoo.cli import main
    from conftest import write_imagefolder

    write_imagefolder(tmp_path / "data" / "train", dict.fromkeys("abcd", 6), seed=1)
    write_imagefolder(tmp_path / "data" / "val", dict.fromkeys("abcd", 2), seed=2)
    run = tmp_path / "run"
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(tmp_path / "data")]
    argv += ["--output-dir", str(run), "--batch-size", "4", "--epochs", "3", "--amp", "off"]
    for o in (
        "data.num_workers=0",
        "train.progress=false",
        "train.keep_max=10",
        "train.eval_every=1",
    ):
        argv += ["--set", o]
    assert main(argv) == 0  # 6 steps per epoch, evaluated at steps 6, 12 and 18
    first = str(run / "checkpoints" / "ckpt-000000006.pt")
    assert main([*argv, "--resume", first, "--set", "train.max_steps=7"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    index = json.loads((run / "checkpoints" / "index.json").read_text())
    best = index["checkpoints"][index["best"]]["metrics"]["top1"]
    r = load_run(run)
    assert [e["step"] for e in r.evals] == [6, 7]  # not 12 and 18 of the abandoned attempt
    assert r.best("top1")[0] == pytest.approx(best)
    (row,) = _rows(build_report([run]), "run", width=7)
    assert row[5] == f"{summary['epochs']:g}" == "1.167"
