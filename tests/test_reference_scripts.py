"""The seeds' launch scripts (scripts/*/*.sh) run classzoo with the references' own flags.

Each script runs on small data made here (TFRecord shards for the TF references, an ImageFolder
for the timm one), with the real network at a small image size and a step or two; the 8p scripts
start two processes through torchrun (gloo on CPU). What is checked comes from the reference
side: the flag values given must be the resolved values in the run's config.yaml, the run folder
must hold the seed-format train.log and a summary, and flags classzoo cannot honour must stop
the script with exit code 2 and a line naming the flag.

The subprocesses run with OMP_NUM_THREADS=1: on a busy 2-core machine two OpenMP threads per
process make ResNet-152 ten times slower (23 s instead of 2 s just to initialise it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from classzoo.config import load_recipe
from classzoo.data.tfrecord_tools import imagefolder_to_tfrecord
from classzoo.references import main, translate
from conftest import write_imagefolder

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
STEP_LINE = re.compile(
    r"^step: \d+ epoch: [\d.]+ FPS: [\d.]+ loss: [\d.]+ total_loss: [\d.]+ lr:[\d.e-]+$"
)


def run_script(script: str, args: list[str], cwd: Path, extra: str = "", **env: str):
    environ = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", CLASSZOO_EXTRA=extra)
    environ.update(env)
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def config_of(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def step_lines(run_dir: Path) -> list[str]:
    lines = (run_dir / "train.log").read_text().splitlines()
    assert lines and all(STEP_LINE.match(line) for line in lines), lines
    return lines


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """8 train / 4 val JPEGs of 2 classes, as an ImageFolder, as slim-named TFRecord shards and as
    a folder of arbitrarily named shards (the ResNet-152 reference's layout)."""
    root = tmp_path_factory.mktemp("refdata")
    img = root / "imagenet"
    write_imagefolder(img / "train", {"n01": 4, "n02": 4}, size=40, fmt="jpg", seed=1)
    write_imagefolder(img / "val", {"n01": 2, "n02": 2}, size=40, fmt="jpg", seed=2)
    slim = root / "tfrecord"
    imagefolder_to_tfrecord(img / "train", slim, 2, workers=1, split="train")
    imagefolder_to_tfrecord(img / "val", slim, 1, workers=1, split="validation")
    # ResNet-152 reference: a folder of shards with any names, one folder for train, one for eval
    for prefix, folder in (("train", "r152_train"), ("validation", "r152_val")):
        out = root / folder
        out.mkdir()
        for i, shard in enumerate(sorted(slim.glob(f"{prefix}-*"))):
            (out / f"imagenet_part{i}.tfrecord").write_bytes(shard.read_bytes())
    return {
        "root": root,
        "imagefolder": img,
        "tfrecord": slim,
        **{k: root / k for k in ("r152_train", "r152_val")},
    }


# ---- flags that cannot be honoured: exit 2, the flag named ----------------------------------


def test_unsupported_flag_value_stops_the_script(data, tmp_path):
    proc = run_script(
        "inception_v4/run_1p.sh",
        [f"--data_dir={data['tfrecord']}", "--use_nesterov=True"],
        tmp_path,
    )
    assert proc.returncode == 2
    assert "--use_nesterov true" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # nothing was started


def test_image_num_mismatch_names_both_counts(data, tmp_path):
    proc = run_script(
        "resnet152/train_1p.sh",
        [f"--data_path={data['r152_train']}", "--image_num=1281167"],
        tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "--image_num 1281167" in line and "holds 8 records" in line


@pytest.mark.parametrize(
    ("reference", "argv", "env", "named"),
    [
        ("inception_v4", ["--data_dir=/d", "--use_nesterov=True"], {}, "--use_nesterov"),
        ("inception_v4", ["--data_dir=/d", "--rank_size=8"], {}, "--rank_size 8"),
        ("inception_v4", ["--data_dir=/d", "--lr_decay=0.8"], {}, "--lr_decay"),
        ("inception_v4", ["--data_dir=/d", "--iteration_per_loop=0"], {}, "--iteration_per_loop"),
        ("inception_v4", ["--batch_size=8"], {}, "--data_dir"),
        ("inception_v4", ["--data_dir=/d", "--eval_dir=/x"], {}, "--eval_dir"),
        ("inception_v4", ["--data_dir=/d", "--log_name=eval.log"], {}, "--log_name"),
        ("resnet152", ["--data_path=/d", "--warmup=3"], {}, "--warmup"),
        ("resnet152", ["--data_path=/d", "--do_train=false"], {}, "--model_path"),
        ("resnet152", ["--data_path=/d"], {}, "--model_path"),  # evaluates by default
        ("resnet152", ["--data_path=/d", "--do_train"], {}, "--output_path"),
        ("gluon_resnet50_v1b", ["/d", "--device_id=0"], {"WORLD_SIZE": "2"}, "--device_id"),
        ("gluon_resnet50_v1b", ["/d", "--local_rank=3"], {}, "--local_rank 3"),
        ("gluon_resnet50_v1b", ["/d", "--sched=tanh"], {}, "--sched tanh"),
        ("gluon_resnet50_v1b", ["/d", "--mixup=0.2"], {}, "--mixup"),
        ("gluon_resnet50_v1b", ["/d"], {"WORLD_SIZE": "2"}, "--experiment"),
        ("gluon_resnet50_v1b", ["-b", "8"], {}, "data folder"),
    ],
)
def test_flags_classzoo_cannot_honour(reference, argv, env, named, capsys, monkeypatch):
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main([reference, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err


def test_launch_flags_consistent_with_torchrun_are_accepted():
    env = {"WORLD_SIZE": "8", "LOCAL_RANK": "3", "RANK": "3"}
    cmd = translate("inception_v4", ["--data_dir=/d", "--rank_size=8"], env)
    assert cmd.recipe == "inception_v4:8p"  # 64 per device, as run_8p.sh
    translate("gluon_resnet50_v1b", ["/d", "--local_rank=3", "--experiment=e"], env)
    translate("gluon_resnet50_v1b", ["/d", "--device_id=0"], {})  # the only device: fine


# ---- flag -> recipe key mapping, read back from the resolved config ---------------------------


def resolved(reference: str, argv: list[str], env: dict | None = None):
    cmd = translate(reference, argv, env or {})
    return cmd, load_recipe(cmd.recipe, cmd.overrides())


def test_resnet152_flags_map_to_recipe_keys():
    flags = [
        "--data_path=/d",
        "--model_path=/ckpt/resnet_v1_152.ckpt",
        "--do_train=True",
        "--output_path=/o",
        "--batch_size=64",
        "--epoch=2",
        "--learning_rate=3e-4",
        "--class_num=10",
        "--save_checkpoints_steps=700",
    ]
    cmd, cfg = resolved("resnet152", flags)
    assert cmd.output_dir == "/o" and cfg.train.mode == "train"
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.optim.lr) == (64, 2.0, 3e-4)
    assert cfg.optim.lr_base_batch is None  # the reference's lr is used as given
    assert cfg.model.checkpoint == "/ckpt/resnet_v1_152.ckpt" and cfg.model.num_classes == 10
    assert cfg.model.exclude == ["logits"]  # 1000-logit checkpoint -> 10 classes: head not loaded
    assert cfg.train.ckpt_every_steps == 700
    cmd, cfg = resolved("resnet152", flags[:2] + ["--do_train=False", "--class_num=10"])
    assert cmd.verb == "eval" and cmd.argv()[:3] == ["eval", "--checkpoint", flags[1][13:]]
    assert cfg.model.num_classes == 10 and cfg.model.exclude == []  # evaluate: load it all
    _, cfg = resolved(
        "resnet152", ["--data_path=/d", "--model_path=None", "--do_train", "--output_path=o"]
    )
    assert cfg.model.checkpoint is None  # the reference's "None = from scratch"


def test_resnet152_keeps_the_head_of_a_classzoo_checkpoint(tmp_path):
    """--model_path may be a classzoo checkpoint (docs/references.md): its own head is loaded
    (one of another size is left at init by the loader). model.exclude=[logits], meant for
    the 1000-class slim checkpoint, refused it ("matches no key")."""
    ckpt = tmp_path / "ckpt-000000002.pt"
    torch.save({"model": {}}, ckpt)  # a torch zip: what detect_format reads
    flags = ["--data_path=/d", f"--model_path={ckpt}", "--do_train", "--output_path=/o"]
    _, cfg = resolved("resnet152", [*flags, "--class_num=3"])
    assert cfg.model.checkpoint == str(ckpt) and cfg.model.exclude == []


def test_inception_v4_flags_map_to_recipe_keys():
    cmd, cfg = resolved(
        "inception_v4",
        [
            "--data_dir=/d",
            "--batch_size=32",
            "--lr=0.01",
            "--max_epochs=7",
            "--weight_decay=4e-4",
            "--momentum=0.8",
            "--label_smoothing=0.2",
            "--log_dir=/m",
            "--log_name=x.log",
            "--mode=train",
            "--max_train_steps=9",
            "--iteration_per_loop=1",
            "--use_nesterov=False",
            "--rank_size=1",
            "--T_max=50",
            "--epochs_between_evals=5",
        ],
    )
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.train.epochs) == (32, 0.01, 7.0)
    assert (cfg.optim.weight_decay, cfg.optim.momentum, cfg.train.label_smoothing) == (
        4e-4,
        0.8,
        0.2,
    )
    assert (cfg.train.mode, cfg.train.max_steps, cfg.sched.t_max, cfg.train.eval_every) == (
        "train",
        9,
        50.0,
        5,
    )
    assert (cmd.output_dir, cmd.log_name, cfg.optim.name) == ("/m", "x.log", "rmsproptf")


def test_gluon_flags_map_to_recipe_keys():
    _, cfg = resolved(
        "gluon_resnet50_v1b",
        [
            "--data_path=/d",
            "--model=gluon_resnet50_v1b",
            "-b",
            "128",
            "--apex-amp",
            "--sched=cosine",
            "--epochs=10",
            "--cooldown-epochs=2",
            "--lr=0.4",
            "--log-interval=5",
            "--use-multi-epochs-loader",
        ],
    )
    assert (cfg.model.name, cfg.data.batch_size, cfg.train.amp) == ("resnet50", 128, "auto")
    assert (cfg.optim.lr, cfg.optim.lr_base_batch, cfg.train.log_every) == (0.4, None, 5)
    # timm: cosine over --epochs, then --cooldown-epochs at min lr: 12 epochs in all
    assert (cfg.train.epochs, cfg.sched.cooldown_epochs) == (12.0, 2.0)
    # without --epochs: the recipe's 90-epoch cosine, then 2 at min lr (it had become 88 + 2)
    _, cfg = resolved("gluon_resnet50_v1b", ["/d", "--cooldown-epochs=2"])
    assert (cfg.train.epochs, cfg.sched.cooldown_epochs) == (92.0, 2.0)
    _, cfg = resolved("gluon_resnet50_v1b", ["/d"])
    assert cfg.train.amp == "off"  # timm trains in fp32 unless --amp / --apex-amp


def test_resnet152_data_path_picks_the_split_of_the_mode(data):
    """Arbitrary names: every file; slim names: train-* to train, validation-* to evaluate."""
    train = ["--do_train=True", "--output_path=/o"]
    any_names = [f"--data_path={data['r152_train']}", "--image_num=8", *train]
    translate("resnet152", any_names, {})  # 2 shards, 8 records: accepted
    slim = [f"--data_path={data['tfrecord']}", "--model_path=/x.ckpt"]
    translate("resnet152", [*slim, "--image_num=8", *train], {})  # train-*: 8 (not 12)
    translate("resnet152", [*slim, "--image_num=4"], {})  # evaluating: validation-*, 4


# ---- the scripts, run for real on small data -------------------------------------------------


def eval_line(stdout: str) -> dict[str, float]:
    """``classzoo eval``'s result line: top1 X  top5 Y  loss Z  count N."""
    line = stdout.strip().splitlines()[-1].split()
    return {k: float(v) for k, v in zip(line[::2], line[1::2], strict=True)}


@pytest.mark.slow
def test_resnet152_train_then_test_1p(data, tmp_path):
    extra = "--set data.image_size=64 --set data.num_workers=0 --set train.log_every=1"
    ok(
        run_script(
            "resnet152/train_1p.sh",
            [
                f"--data_path={data['r152_train']}",
                "--output_path=out/train",
                "--batch_size=2",
                "--class_num=2",
                "--image_num=8",
                "--epoch=1",
                "--save_checkpoints_steps=3",
            ],
            tmp_path,
            extra,
        )
    )
    run = tmp_path / "out" / "train"
    assert len(step_lines(run)) == 4  # 8 images / 2 per step, one line per step (smoke log_every)
    cfg = config_of(run)
    assert (cfg["optim"]["lr"], cfg["train"]["epochs"], cfg["train"]["mode"]) == (
        1e-4,
        1.0,
        "train",
    )
    assert cfg["train"]["ckpt_every_steps"] == 3 and summary_of(run)["epochs"] == 1.0
    ckpts = sorted((run / "checkpoints").glob("*.pt"))
    assert ckpts, list(run.iterdir())

    proc = ok(
        run_script(
            "resnet152/test_1p.sh",
            [
                f"--data_path={data['r152_val']}",
                f"--model_path={ckpts[-1]}",
                "--batch_size=3",
                "--class_num=2",
                "--image_num=4",
            ],
            tmp_path,
            extra,
        )
    )
    assert eval_line(proc.stdout)["count"] == 4  # 4 % 3 != 0: every image (the reference: 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # evaluating wrote nothing


@pytest.mark.slow
def test_inception_v4_run_1p_then_test(data, tmp_path):
    # 107 px is the smallest input whose Mixed_6h map (5x5) takes the aux head's 5x5/3 pool.
    extra = (
        '--set data.image_size=107 --set model.kwargs={"img_size":107} '
        "--set data.num_workers=0 --set train.log_every=1"
    )
    ok(
        run_script(
            "inception_v4/run_1p.sh",
            [f"--data_dir={data['tfrecord']}", "--batch_size=2", "--max_train_steps=2"],
            tmp_path,
            extra + " --set train.ckpt_every_steps=1",
        )
    )
    run = tmp_path / "results" / "1p" / "0" / "model"
    lines = step_lines(run)
    assert (run / "inception_v4.log").read_text().splitlines() == lines  # --log_name
    cfg = config_of(run)
    assert (cfg["optim"]["name"], cfg["optim"]["lr"], cfg["sched"]["t_max"]) == (
        "rmsproptf",
        0.045,
        100.0,
    )
    assert (
        cfg["train"]["mode"] == "train" and summary_of(run)["top1"] is None
    )  # run_1p: --mode=train
    assert len(sorted((run / "checkpoints").glob("*.pt"))) == 2  # steps 1 and 2

    # test.sh (--mode evaluate, --eval_dir = the run folder): every checkpoint, one eval.log row each
    ok(
        run_script(
            "inception_v4/test.sh",
            [f"--data_dir={data['tfrecord']}", "--batch_size=3"],
            tmp_path,
            extra,
        )
    )
    ev = tmp_path / "results" / "1p" / "0" / "eval"
    rows = (ev / "eval.log").read_text().splitlines()
    assert rows[0] == "step epoch top1 top5 loss checkpoint_time(UTC)"
    assert [r.split()[0] for r in rows[1:]] == ["1", "2"]
    assert summary_of(ev)["count"] == 4
    # test.sh's --log_name: the evaluation's rows (it linked to train.log, empty in this mode)
    assert (ev / "eval_inceptionv4.log").read_text().splitlines() == rows


@pytest.mark.slow
def test_inception_v4_run_8p_two_processes(data, tmp_path):
    extra = (
        '--set data.image_size=107 --set model.kwargs={"img_size":107} '
        "--set data.num_workers=0 --set train.log_every=1"
    )
    ok(
        run_script(
            "inception_v4/run_8p.sh",
            [
                f"--data_dir={data['tfrecord']}",
                "--batch_size=2",
                "--max_train_steps=1",
                "--mode=train_and_evaluate",
            ],
            tmp_path,
            extra,
            RANK_SIZE="2",
        )
    )
    run = tmp_path / "results" / "8p" / "model"
    assert len(step_lines(run)) == 1
    summary = summary_of(run)
    assert (summary["world_size"], summary["global_batch_size"], summary["count"]) == (2, 4, 4)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "ranks"),
    [
        ("train_full_1p.sh", "1"),
        ("train_performance_1p.sh", "1"),
        ("train_full_8p.sh", "2"),
        ("train_performance_8p.sh", "2"),
    ],
)
def test_gluon_scripts(data, tmp_path, script, ranks):
    extra = "--set data.image_size=64 --set data.num_workers=0 --set train.max_steps=2"
    proc = ok(
        run_script(
            f"gluon_resnet50_v1b/{script}",
            [f"--data_path={data['imagefolder']}", "-b", "2", "--output", "out"],
            tmp_path,
            extra,
            RANK_SIZE=ranks,
        )
    )
    (run,) = (tmp_path / "out").iterdir()  # timm: <--output>/<date-time>-<model>[-<size>]
    assert re.fullmatch(r"\d{8}-\d{6}-gluon_resnet50_v1b(-64)?", run.name), run.name
    assert len(step_lines(run)) == 2  # --log-interval 1
    summary, cfg = summary_of(run), config_of(run)
    assert summary["world_size"] == int(ranks) and cfg["model"]["name"] == "resnet50"
    assert (cfg["sched"]["name"], cfg["sched"]["cooldown_epochs"]) == ("cosine", 0.0)
    performance = "performance" in script
    assert (summary["top1"] is None) == performance  # performance runs only train
    table = proc.stdout.strip().splitlines()
    assert table[0] == "| Name | Acc@1 | FPS | Epochs | AMP_Type |"
    name, acc, fps, epochs, amp = (c.strip() for c in table[-1].strip("|").split("|"))
    assert (name, amp) == (f"{ranks}p", summary["amp"])
    assert float(fps) == pytest.approx(summary["images_per_sec"], abs=0.01)
    assert acc == ("-" if performance else f"{summary['top1']:.2f}")


def test_refused_reference_runs_leave_no_log_link_and_zero_epochs_are_refused(data, tmp_path):
    """--log_name's link was made before the run could refuse: a misspelt --eval_dir left a
    run folder (and its link) the corrected command then refused; --max_epochs 0 trained a
    step (resnet152's --epoch 0 and gluon's --epochs 0 were refused)."""
    from classzoo.references import main

    out = tmp_path / "ev"
    argv = ["inception_v4", f"--data_dir={data['tfrecord']}", "--mode=evaluate"]
    argv += [f"--eval_dir={tmp_path / 'nowhere'}", f"--log_dir={out}", "--log_name=e.log"]
    assert main(argv) == 2
    assert not out.exists()
    zero = ["inception_v4", f"--data_dir={data['tfrecord']}", f"--log_dir={tmp_path / 'z'}"]
    assert main([*zero, "--max_epochs=0"]) == 2
    assert not (tmp_path / "z").exists()
