"""Config values a run cannot use are refused where the user types them, in one line, exit 2.

Each bound is an outside fact, checked here against its source: the checkpoint reader's own
bounds (a run must not write checkpoints eval then refuses), torch's cross_entropy, torch's
uniform_ (RandomResizedCrop draws with it), timm's eval transform (which resizes to
floor(image_size / crop_pct)), YAML 1.2's unique mapping keys. Every refusal of ``train`` comes
before the run folder exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from classzoo.cli import main
from conftest import write_imagefolder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("values")
    write_imagefolder(root / "train", {"a": 2, "b": 2}, size=8)
    write_imagefolder(root / "val", {"a": 1, "b": 1}, size=8, seed=1)
    return root


def refused(capsys, argv: list[str]) -> str:
    """Runs the CLI; asserts exit code 2 and exactly one line on stderr, which it returns."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("classzoo: error: "), err
    return err.strip()


# (--set value, the one line) -- quickstart sets data.image_size 32 and data.crop_pct 1.0
SET_CASES = [
    # the checkpoint reader's bounds (formats/checkpoint_schema.py): 0 trained at 176 px and
    # wrote checkpoints eval refused; 100000 was OOM-killed
    ("data.image_size=0", "data.image_size=0 must be in [1, 8192]"),
    ("data.image_size=100000", "data.image_size=100000 must be in [1, 8192]"),
    ("model.num_classes=0", "model.num_classes=0 must be in [1, 1000000]"),
    # nan < 0 is False: nan passed _min(0) and ended in "cannot convert float NaN to integer"
    ("train.epochs=nan", "train.epochs='nan' is not a finite number"),
    ("train.epochs=.inf", "train.epochs=inf is not a finite number"),
    ("optim.lr=-.inf", "optim.lr=-inf is not a finite number"),
    ("data.mean=[0.5,.nan,0.5]", "data.mean=nan is not a finite number"),
    # torch: RuntimeError at step 1; 1.0 makes every target uniform
    (
        "train.label_smoothing=1.5",
        "train.label_smoothing=1.5 must be in [0, 1) (1 makes the target uniform)",
    ),
    (
        "train.label_smoothing=1",
        "train.label_smoothing=1.0 must be in [0, 1) (1 makes the target uniform)",
    ),
    ("data.crop_pct=0", "data.crop_pct=0.0 must be > 0"),
    (
        "data.crop_pct=33",
        "data.crop_pct=33.0 must be <= data.image_size=32 "
        "(the eval resize is to floor(image_size / crop_pct) = 0 px)",
    ),
    ("data.hflip=2", "data.hflip=2.0 must be in [0, 1] (a probability)"),
    ("data.re_prob=-0.1", "data.re_prob=-0.1 must be in [0, 1] (a probability)"),
    ("model.drop_rate=1.5", "model.drop_rate=1.5 must be in [0, 1] (a probability)"),
    ("data.color_jitter=-1", "data.color_jitter=-1.0 must be >= 0"),
    (
        "data.scale=[1.0,0.08]",
        "data.scale=[1.0, 0.08] must be [min, max] with min <= max "
        "(torch's uniform_ raises for min > max when the first crop is drawn)",
    ),
    (
        "data.scale=[0.5,1.5]",
        "data.scale=[0.5, 1.5] must be in (0, 1] (a fraction of the image's area)",
    ),
    ("data.scale=[0.5]", "data.scale=[0.5] must be two numbers, [min, max]"),
    (
        "data.ratio=[0,1]",
        "data.ratio=[0.0, 1.0] must be > 0 (width / height, drawn log-uniformly)",
    ),
    ("train.max_steps=0", "train.max_steps=0 must be >= 1 (None for no limit)"),
    # YAML 1.2 (core schema, 10.3.2) has no base 60: YAML 1.1 read 1:30 as 90 epochs
    ("train.epochs=1:30", "train.epochs='1:30' is not a valid float"),
    # a misspelt kernel reached timm's str_to_interp_mode: KeyError traceback, exit 1
    (
        "data.interpolation=bilnear",
        "data.interpolation='bilnear' is not one of nearest, bilinear, bicubic, box, hamming, "
        "lanczos",
    ),
    (
        "data.train_interpolation=foo",
        "data.train_interpolation='foo' is not one of nearest, bilinear, bicubic, box, hamming, "
        "lanczos, random",
    ),
    # torch's optimizers raise "Invalid learning rate" (after the run folder was written, naming
    # optim.name and the batch-scaled lr); 1.5 made EMA weights that grow without bound
    ("optim.lr=-0.1", "optim.lr=-0.1 must be >= 0"),
    ("train.ema_decay=1.5", "train.ema_decay=1.5 must be in [0, 1] (timm ModelEmaV3's decay)"),
    ("sched.warmup_epochs=-3", "sched.warmup_epochs=-3.0 must be >= 0"),
    # slim's 0-255 channel means under timm's pixel / 255 formula
    (
        "data.mean=[123.68,116.78,103.94]",
        "data.mean=[123.68, 116.78, 103.94] must be in [0, 1] (timm normalises pixel / 255: "
        "0.485, not 123.68)",
    ),
    # the same name in another section: it had suggested train.epochs, another setting
    (
        "train.warmup_epochs=1",
        "unknown key 'train.warmup_epochs'; did you mean 'sched.warmup_epochs'?",
    ),
    (
        "model.kwargs={a: 1, a: 2}",
        "--set model.kwargs: key 'a' appears twice (lines 1 and 1); YAML forbids repeated keys "
        "(the first would be dropped silently)",
    ),
]


@pytest.mark.parametrize(("setting", "line"), SET_CASES, ids=[c[0] for c in SET_CASES])
def test_train_refuses_a_value_before_the_run_folder(capsys, tmp_path, data, setting, line):
    out = tmp_path / "run"
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(out)]
    err = refused(capsys, [*argv, "--set", setting])
    prefix = (
        "classzoo: error: " if setting.startswith("model.kwargs") else "classzoo: error: --set: "
    )
    assert err == prefix + line or (err.startswith(prefix + line + " (allowed: "))
    assert not out.exists()


# YAML 1.2 core schema integers and floats (section 10.3.2), by hand: YAML 1.1 (PyYAML's
# default) read 010 as octal 8, 0o10 as a string and 1e-5 (no dot) as a string
YAML_NUMBERS = [
    ("data.batch_size=010", "data", "batch_size", 10),
    ("data.batch_size=0o10", "data", "batch_size", 8),
    ("data.batch_size=0x10", "data", "batch_size", 16),
    ("data.batch_size=1_000", "data", "batch_size", 1000),
    ("train.epochs=010", "train", "epochs", 10.0),
    ("model.kwargs={drop_path_rate: 1e-2}", "model", "kwargs", {"drop_path_rate": 0.01}),
    ("model.exclude=fc, layer4", "model", "exclude", ["fc", "layer4"]),
]


@pytest.mark.parametrize(("setting", "section", "key", "value"), YAML_NUMBERS)
def test_values_are_read_as_yaml_1_2_reads_them(tmp_path, setting, section, key, value):
    from classzoo.config import load_recipe

    got = getattr(getattr(load_recipe("quickstart", [setting]), section), key)
    assert got == value and type(got) is type(value)
    recipe = tmp_path / "r.yaml"  # a recipe file reads the same
    entry = f"  {key}: {setting.split('=', 1)[1]}\n"
    head = "model:\n  name: resnet10t\n"
    recipe.write_text(head + entry if section == "model" else f"{head}{section}:\n{entry}")
    assert getattr(getattr(load_recipe(str(recipe)), section), key) == value


# settings recorded in config.yaml that the run would never read (each gave bit-identical weights
# to the run without it), or that leave nothing to train (helper hunt, session 9)
UNUSED_CASES = [
    (["optim.name=adamw", "optim.momentum=0.1"], "optim.momentum=0.1 has no effect with adamw"),
    (["optim.eps=0.001"], "optim.eps=0.001 has no effect with sgd"),  # quickstart: adamw
    (["sched.name=step"], "sched.min_lr=1e-05 has no effect with sched.name=step"),
    (["sched.t_max=2", "sched.cooldown_epochs=1"], "sched.cooldown_epochs=1.0 has no effect with"),
    (["sched.cooldown_epochs=3"], "sched.cooldown_epochs=3 leaves no cosine: train.epochs=2.5"),
    (["optim.clip_grad=-1"], "optim.clip_grad=-1.0 must be > 0"),  # an ascent: min(1, c/norm)
    (["optim.momentum=1.5"], "optim.momentum=1.5 must be in [0, 1)"),
    (["sched.min_lr=-0.1"], "sched.min_lr=-0.1 must be >= 0"),  # timm asserted: a traceback
]


@pytest.mark.parametrize(("settings", "line"), UNUSED_CASES, ids=[c[1][:30] for c in UNUSED_CASES])
def test_a_setting_the_run_would_not_use_is_refused(capsys, tmp_path, data, settings, line):
    out = tmp_path / "run"
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(out)]
    if settings[0] == "optim.eps=0.001":
        argv += ["--set", "optim.name=sgd"]
    err = refused(capsys, [*argv, *(a for s in settings for a in ("--set", s))])
    assert line in err
    assert not out.exists()


def test_the_outside_facts_behind_the_unused_settings():
    """timm's adamw has no momentum and its sgd no eps (timm drops them without a word)."""
    from timm.optim import create_optimizer_v2

    adamw = create_optimizer_v2(torch.nn.Linear(1, 1), "adamw", lr=0.1, momentum=0.1)
    sgd = create_optimizer_v2(torch.nn.Linear(1, 1), "sgd", lr=0.1, eps=1e3)
    assert "momentum" not in adamw.param_groups[0] and "eps" not in sgd.param_groups[0]


def test_an_unknown_optimizer_is_refused_before_the_run_folder(capsys, tmp_path, data):
    out = tmp_path / "run"
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(out)]
    err = refused(capsys, [*argv, "--set", "optim.name=sgdd"])
    assert "optim.name='sgdd'" in err
    assert not out.exists()  # it had left config.yaml and resolved.yaml, blocking the folder


def test_a_flag_and_a_set_of_one_key_are_refused(capsys, tmp_path, data):
    """``--max-steps 1 --set train.max_steps=3`` ran 3 steps without a word."""
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data)]
    err = refused(capsys, [*argv, "--max-steps", "1", "--set", "train.max_steps=3"])
    assert "train.max_steps is given twice, by --max-steps and by --set" in err


def test_a_timm_policy_timm_cannot_read_is_one_line(capsys, tmp_path, data):
    """timm asserts (``randaug``: an AssertionError without a message): a traceback, exit 1."""
    out = tmp_path / "run"
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(out)]
    argv += ["--set", "data.train_crop=rrc"]
    err = refused(capsys, [*argv, "--set", "data.auto_augment=randaug"])
    assert "data.auto_augment='randaug' is not a policy timm reads" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "setting",
    ["data.image_size=null", "data.image_size=8192", "data.crop_pct=1.15", "data.crop_pct=32",
     "train.label_smoothing=0.999", "data.scale=[0.3,0.3]", "data.ratio=[2,2]",
     "data.hflip=1", "model.drop_path_rate=0"],
)  # fmt: skip
def test_values_at_the_bounds_are_accepted(setting):
    from classzoo.config import load_recipe

    load_recipe("quickstart", [setting])


def test_bounds_are_the_checkpoint_readers():
    from classzoo.config import MAX_CLASSES, MAX_IMAGE_SIZE
    from classzoo.formats import checkpoint_schema

    assert (MAX_IMAGE_SIZE, MAX_CLASSES) == (
        checkpoint_schema.MAX_IMAGE_SIZE,
        checkpoint_schema.MAX_CLASSES,
    )


def test_the_outside_facts_behind_the_bounds():
    """What the refused values would meet later: torch, torchvision and timm raise."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from timm.data import create_transform

    logits, target = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(RuntimeError, match="label_smoothing must be between 0.0 and 1.0"):
        F.cross_entropy(logits, target, label_smoothing=1.5)
    uniform = F.cross_entropy(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([0]), label_smoothing=1)
    other = F.cross_entropy(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([1]), label_smoothing=1)
    assert uniform == other  # at 1 the label does not enter the loss
    with pytest.raises(RuntimeError, match="expects to return a \\[from, to\\) range"):
        torch.empty(1).uniform_(1.0, 0.08)  # RandomResizedCrop.get_params' draw
    image = Image.new("RGB", (40, 40))
    assert create_transform(32, crop_pct=1.15)(image).shape == (3, 32, 32)  # timm's volo default
    assert create_transform(32, crop_pct=32)(image).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="height and width must be > 0"):
        create_transform(32, crop_pct=33)(image)


RECIPE = "model:\n  name: resnet10t\ntrain:\n  epochs: 3\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # PyYAML kept the last `train:` section: epochs 3 was dropped silently
        (RECIPE + "train:\n  seed: 1\n", "key 'train' appears twice (lines 3 and 5)"),
        (RECIPE + "  epochs: 4\n", "key 'epochs' appears twice (lines 4 and 5)"),
        ("model: {name: resnet10t, name: resnet18}\n", "key 'name' appears twice (lines 1 and 1)"),
    ],
)
def test_recipe_with_a_repeated_key_is_refused(capsys, tmp_path, text, line):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    err = refused(capsys, ["recipes", "show", str(path)])
    assert err == (
        f"classzoo: error: recipe {path}: {line}; YAML forbids repeated keys "
        "(the first would be dropped silently)"
    )


def test_merge_keys_may_be_overridden(capsys, tmp_path):
    """``<<: *base`` then a key of the base is YAML's override, not a repeat."""
    path = tmp_path / "merge.yaml"
    path.write_text(
        "variants:\n  base: &b {train.epochs: 2, train.seed: 3}\n"
        "  more:\n    <<: *b\n    train.epochs: 5\nmodel:\n  name: resnet10t\n"
    )
    assert main(["recipes", "show", f"{path}:more", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"epochs": 5.0' in out and '"seed": 3' in out


@pytest.mark.parametrize("text", ["", "# a header\n# and nothing else\n", "\n\n"])
def test_empty_recipe_is_refused(capsys, tmp_path, data, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    line = f"classzoo: error: recipe {path} is empty: it sets nothing (not even model.name)"
    assert refused(capsys, ["recipes", "show", str(path)]) == line
    out = tmp_path / "run"
    argv = ["train", "--recipe", str(path), "--data-dir", str(data), "--output-dir", str(out)]
    assert refused(capsys, argv) == line
    assert not out.exists()


BENCH = ["bench", "--model", "resnet10t", "--image-size", "32", "--steps", "1", "--warmup", "0"]


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--batch-size", "0"], "bench --batch-size 0: must be an integer >= 1"),  # ZeroDivision
        (["--batch-size", "-3"], "bench --batch-size -3: must be an integer >= 1"),
        (["--steps", "0"], "bench --steps 0: must be an integer >= 1"),  # "0.0 images/s"
        (["--image-size", "0"], "bench --image-size 0: must be an integer in [1, 8192]"),
        (["--warmup", "-1"], "bench --warmup -1: must be an integer >= 0"),
        (["--num-classes", "0"], "bench --num-classes 0: must be an integer in [1, 1000000]"),
        (
            ["--preset", "timm"],
            "bench --preset needs --data-dir: synthetic tensors have no loader or preprocessing",
        ),
        (
            ["--num-workers", "2"],
            "bench --num-workers needs --data-dir: synthetic tensors have no loader or "
            "preprocessing",
        ),
        (["--split", "val"], "bench --split needs --data-dir (the folder it names)"),
    ],
)
def test_bench_refuses_what_it_cannot_time(capsys, flags, line):
    # later flags win in argparse: the bad one comes after BENCH's good ones
    assert refused(capsys, [*BENCH, *flags]) == f"classzoo: error: {line}"


def test_a_large_seed_trains_and_one_beyond_torchs_range_is_one_line(capsys, tmp_path, data):
    """`train.seed=$(date +%s%N)` (as timm's train.py takes it) failed at step 1 with a
    traceback, its run folder written: seed * 1_000_003 + epoch went past 2**64."""
    with pytest.raises((RuntimeError, ValueError)):
        torch.Generator().manual_seed(2**64)  # torch's range: [-2**63, 2**64)
    torch.Generator().manual_seed(2**64 - 1)
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--max-steps", "1"]
    argv += ["--set", "data.num_workers=0", "--set", "train.progress=false"]
    assert main([*argv, "--output-dir", str(tmp_path / "r1"), "--set", "train.seed=1764640000123456789"]) == 0  # fmt: skip
    capsys.readouterr()
    err = refused(capsys, [*argv, "--output-dir", str(tmp_path / "r2"), "--set", f"train.seed={2**64}"])  # fmt: skip
    assert f"train.seed={2**64} must be in [-{2**63}, {2**64}) (torch's seeds)" in err
    assert not (tmp_path / "r2").exists()
