"""The reference translators keep the references' defaults (docs/references.md, one test each).

The outside truths are the reference programs' own flag definitions, copied here with their
source: ResNet-152 ``run_resnet.py`` (``tf.flags.DEFINE_*``), the InceptionV4 reference README's
parameter table (its ``train.py`` is not available), timm ``train.py`` at commit 381b2797 (the
Gluon reference's base). Each test leaves one flag out and reads back the resolved recipe key.
The last tests run the ResNet-152 reference's own eval command through scripts/resnet152/
test_1p.sh on TFRecords written by ``classzoo data to-tfrecord``: it must evaluate (no step,
nothing written, top-1 printed, every image once).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classzoo.config import load_recipe
from classzoo.references import main, translate
from conftest import write_imagefolder

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
CLASSZOO = [sys.executable, "-m", "classzoo"]
SMALL = ["--set", "model.name=resnet_v1_50", "--set", "data.num_workers=0"]
SMALL += ["--set", "data.image_size=64"]

# run_resnet.py: flags.DEFINE_bool("do_train", False, ...), DEFINE_integer("image_num", 50000),
# ("class_num", 1000), ("batch_size", 64), ("epoch", 10), DEFINE_float("learning_rate", 0.001),
# DEFINE_integer("save_checkpoints_steps", 100); its README's eval command has no --do_train.
RESNET152 = {"batch_size": 64, "epoch": 10, "learning_rate": 0.001, "save_steps": 100}
# The InceptionV4 README's parameter table: --mode train, --log_dir ./model,
# --epochs_between_evals 5, --iteration_per_loop 10.
# timm train.py @381b2797: --amp False, --log-interval 50, --output '' -> ./output/train/<exp>,
# exp = "<%Y%m%d-%H%M%S>-<model>-<input size>".


def resolved(reference: str, argv: list[str], env: dict | None = None):
    cmd = translate(reference, argv, env or {})
    return cmd, load_recipe(cmd.recipe, cmd.overrides())


# ---- ResNet-152: run_resnet.py -------------------------------------------------------------


def test_resnet152_without_do_train_evaluates():
    """Issue 9 defect 2: the reference's own eval command (no --do_train) must not train."""
    argv = ["--model_path=/m.pt", "--data_path=/d", "--class_num=1000", "--batch_size=100"]
    cmd, cfg = resolved("resnet152", argv)
    assert cmd.verb == "eval" and cmd.argv()[0] == "eval"
    assert cmd.checkpoint == "/m.pt" and cfg.model.checkpoint == "/m.pt"
    assert cfg.data.eval_batch_size == 100 and cfg.model.num_classes == 1000


@pytest.mark.parametrize(
    ("flags", "trains"),
    [
        ([], False),
        (["--do_train"], True),
        (["--do_train=True"], True),
        (["--do_train", "true"], True),
        (["--do_train=false"], False),
        (["--do_train", "False"], False),
        (["--nodo_train"], False),
    ],
)
def test_resnet152_do_train_spellings(flags, trains):
    argv = ["--model_path=/m.pt", "--data_path=/d", "--output_path=/o", *flags]
    assert translate("resnet152", argv, {}).verb == ("train" if trains else "eval")


def test_resnet152_training_defaults():
    cmd, cfg = resolved("resnet152", ["--data_path=/d", "--do_train", "--output_path=/o"])
    assert cmd.verb == "train" and cfg.train.mode == "train"
    assert cfg.data.batch_size == RESNET152["batch_size"]
    assert cfg.train.epochs == RESNET152["epoch"]
    assert (cfg.optim.lr, cfg.optim.lr_base_batch) == (RESNET152["learning_rate"], None)
    assert cfg.train.ckpt_every_steps == RESNET152["save_steps"]
    assert cfg.model.num_classes == 1000 and cfg.model.checkpoint is None  # None: from scratch


def test_resnet152_eval_defaults_and_train_only_flags():
    cmd, cfg = resolved("resnet152", ["--data_path=/d", "--model_path=/m.pt", "--epoch=3"])
    assert cfg.data.eval_batch_size == RESNET152["batch_size"] and cfg.model.num_classes == 1000
    assert cmd.image_num is None  # 50000 was the reference's step count: checked only when given
    assert cmd.notes == ["--epoch is read only when training; this run evaluates"]


# ---- InceptionV4: the reference README's parameter table ------------------------------------


def test_inception_v4_defaults_from_the_readme():
    cmd, cfg = resolved("inception_v4", ["--data_dir=/d"])
    assert cfg.train.mode == "train"  # README --mode default train (and run_1p.sh passes it)
    assert cmd.output_dir == "./model"  # --log_dir default ./model
    assert cfg.train.eval_every == 5  # --epochs_between_evals default 5
    assert cfg.train.max_steps is None  # the README's "100" cannot have limited 100-epoch runs
    # numbers where the README's table contradicts its default configuration: the recipe's
    assert (cfg.data.batch_size, cfg.optim.lr, cfg.optim.weight_decay) == (128, 0.045, 1e-5)


def test_inception_v4_iteration_per_loop_is_accepted_with_a_note():
    assert translate("inception_v4", ["--data_dir=/d", "--iteration_per_loop=1"], {}).notes == []
    cmd = translate("inception_v4", ["--data_dir=/d", "--iterations_per_loop=10"], {})
    assert len(cmd.notes) == 1 and "--iteration_per_loop 10" in cmd.notes[0]


# ---- Gluon ResNet50_v1b: timm train.py ------------------------------------------------------


def test_gluon_timm_defaults(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cmd, cfg = resolved("gluon_resnet50_v1b", ["/d"])
    assert cfg.train.amp == "off" and cfg.train.log_every == 50
    assert cfg.model.pretrained is False and cfg.model.checkpoint is None
    folder = Path(cmd.output_dir)
    assert folder.parent == Path("output/train")
    stamp, model, size = folder.name.rsplit("-", 2)
    assert len(stamp) == 15 and (model, size) == ("gluon_resnet50_v1b", "224")
    cmd = translate("gluon_resnet50_v1b", ["/d", "--output=/o", "--experiment=e"], {})
    assert cmd.output_dir == "/o/e"


def test_gluon_pretrained_initial_checkpoint_num_classes():
    argv = ["/d", "--pretrained", "--initial-checkpoint", "/w.pt", "--num-classes", "10"]
    _, cfg = resolved("gluon_resnet50_v1b", argv)
    assert cfg.model.pretrained is True and cfg.model.name == "resnet50.gluon_in1k"
    assert (cfg.model.checkpoint, cfg.model.num_classes) == ("/w.pt", 10)
    _, cfg = resolved("gluon_resnet50_v1b", ["/d", "--model=resnet50", "--pretrained"])
    assert cfg.model.name == "resnet50"  # timm's own resnet50 weights, as timm would load
    assert main(["gluon_resnet50_v1b", "/d", "--num-classes", "0"]) == 2


# ---- scripts/resnet152/test_1p.sh: the reference's eval command evaluates ---------------------


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", **env)
    proc = subprocess.run(args, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)
    return proc


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """5 JPEGs (2 classes) as 2 TFRecord shards with names of no split, in <root>/val."""
    root = tmp_path_factory.mktemp("r152eval")
    write_imagefolder(root / "img", {"n01": 3, "n02": 2}, size=40, fmt="jpg", seed=3)
    argv = [*CLASSZOO, "data", "to-tfrecord", "img", "val", "--shards", "2", "--split", "part"]
    proc = _run(argv, root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


@pytest.fixture(scope="module")
def checkpoint(records) -> Path:
    """A 1000-class checkpoint of the recipe after one step on those records (resnet_v1_50
    instead of _152: the same slim layout, a third of the time)."""
    argv = [*CLASSZOO, "train", "--recipe", "resnet152_slim_finetune", "--data-dir", "val"]
    argv += ["--output-dir", "ck", "--set", "train.mode=train", "--set", "train.max_steps=1"]
    proc = _run([*argv, "--set", "data.batch_size=4", *SMALL], records)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (ckpt,) = (records / "ck" / "checkpoints").glob("*.pt")
    return ckpt


@pytest.mark.slow
def test_resnet152_test_1p_evaluates(records, checkpoint):
    root, ckpt = records, checkpoint
    before = _tree(root)
    argv = ["bash", str(SCRIPTS / "resnet152" / "test_1p.sh"), "--model_path", str(ckpt)]
    argv += ["--data_path", "val", "--image_num", "5", "--class_num", "1000", "--batch_size", "100"]
    proc = _run(argv, root, CLASSZOO_EXTRA=" ".join(SMALL))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "classzoo eval --checkpoint" in proc.stderr  # the command it ran
    words = proc.stdout.strip().splitlines()[-1].split()
    result = dict(zip(words[::2], words[1::2], strict=True))
    assert set(result) == {"top1", "top5", "loss", "count"}  # top-1 printed
    assert int(result["count"]) == 5  # every image once (the reference: int(5 / 100) = 0 steps)
    assert 0.0 <= float(result["top1"]) <= 100.0
    # no optimizer step, no checkpoint, no run folder: every file as it was, no file added
    assert _tree(root) == before


def test_resnet152_test_1p_checks_image_num(records):
    """Checked before anything runs (the checkpoint is not even read)."""
    argv = ["bash", str(SCRIPTS / "resnet152" / "test_1p.sh"), "--model_path=never-read.pt"]
    proc = _run([*argv, "--data_path=val", "--image_num=6"], records)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("holds 5 records"), proc.stderr


def test_gluon_recipe_evaluates_as_timm_evaluated_its_weights():
    """timm measured resnet50.gluon_in1k (77.58, the reference's published figure) with that
    tag's pretrained cfg: crop_pct 0.875, bicubic. The recipe evaluated at 0.95 bilinear
    (resnet50's default tag a1_in1k's crop_pct, resnet's base interpolation)."""
    import timm

    from classzoo.engine.build import model_defaults
    from classzoo.engine.resolve import preprocess_for

    cfg = load_recipe("gluon_resnet50_v1b")
    pre = preprocess_for(cfg.data, model_defaults(cfg.model.name, {}))
    truth = timm.models.get_pretrained_cfg("resnet50.gluon_in1k")
    assert (pre.image_size, pre.crop_pct, pre.interpolation) == (
        truth.input_size[-1],
        truth.crop_pct,
        truth.interpolation,
    )
