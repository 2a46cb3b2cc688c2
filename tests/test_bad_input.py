"""Bad input ends with one line naming the culprit and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_checkpoint, write_imagefolder


def classzoo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "classzoo", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("classzoo: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


TRAIN = ["--recipe", "quickstart", "--set", "train.epochs=0.01", "--set", "data.num_workers=2"]


def test_missing_data_dir(tmp_path):
    proc = classzoo(
        "train", *TRAIN, "--data-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "r")
    )
    assert_one_line_error(proc, f"data directory {tmp_path / 'nope'} does not exist")


def test_empty_class_folder(tmp_path):
    data = write_imagefolder(tmp_path / "d" / "train", {"a": 2, "b": 2}).parent
    (data / "train" / "empty_class").mkdir()
    write_imagefolder(data / "val", {"a": 1, "b": 1})
    proc = classzoo("train", *TRAIN, "--data-dir", str(data), "--output-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, f"class folder {data / 'train' / 'empty_class'} holds no images")


def test_unreadable_image_is_named(tmp_path):
    data = write_imagefolder(tmp_path / "d" / "train", {"a": 8, "b": 8}).parent
    write_imagefolder(data / "val", {"a": 2, "b": 2})
    bad = data / "train" / "b" / "00003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    # the image is decoded in a DataLoader worker process: the error must still be one line
    proc = classzoo("train", *TRAIN, "--data-dir", str(data), "--output-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, f"unreadable image {bad}", "data.skip_corrupt=true skips such")
    assert "BytesIO" not in proc.stderr  # PIL's in-memory file object is not the user's file


def test_macos_metadata_and_other_files_are_left_out_and_named(tmp_path):
    """A copy from a Mac leaves ``._name.jpg`` AppleDouble files (magic 0x00051607, RFC 1740)
    beside each image: torchvision lists them as images, and the run stopped at the first one
    mid-epoch. Files that are not images were left out without a word."""
    from PIL import Image, UnidentifiedImageError

    data = write_imagefolder(tmp_path / "d" / "train", {"a": 4, "b": 4}).parent
    write_imagefolder(data / "val", {"a": 1, "b": 1})
    for folder in ("a", "b"):
        (data / "train" / folder / "._00000.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (data / "train" / "a" / "notes.txt").write_text("not an image")
    (data / "train" / "a" / ".DS_Store").write_bytes(bytes(8))
    with pytest.raises(UnidentifiedImageError):  # what torchvision's loader meets
        Image.open(data / "train" / "a" / "._00000.png")
    out = tmp_path / "r"
    proc = classzoo("train", *TRAIN, "--data-dir", str(data), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "train: 8 images" in proc.stderr
    assert "train: not used: 2 ._* files (macOS AppleDouble metadata, not images)" in proc.stderr
    assert (
        "train: not used: 1 *.txt files (not one of torchvision's image extensions)" in proc.stderr
    )
    assert ".DS_Store" not in proc.stderr


def test_output_dir_under_a_file(tmp_path, small_imagefolder):
    """FileExistsError from mkdir was a traceback, exit 1."""
    (tmp_path / "afile").write_text("")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        argv = ["train", "--recipe", "quickstart", "--data-dir", str(small_imagefolder)]
        proc = classzoo(*argv, "--output-dir", str(out))
        assert_one_line_error(
            proc, f"--output-dir {out}: {tmp_path / 'afile'} is a file, not a folder"
        )


def test_amp_in_evaluate_mode_is_not_silently_ignored(tmp_path, small_imagefolder):
    """``--amp fp16`` with ``--mode evaluate`` on a CPU ran in fp32 without a word: --amp is
    the training precision; an evaluation's is eval.amp."""
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(small_imagefolder)]
    argv += ["--output-dir", str(tmp_path / "r"), "--mode", "evaluate", "--amp", "fp16"]
    assert_one_line_error(classzoo(*argv), "--amp sets the training precision", "eval.amp")
    assert not (tmp_path / "r").exists()


def test_resume_and_overwrite_together(tmp_path, small_imagefolder):
    """--overwrite was silently ignored and the run resumed."""
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(small_imagefolder)]
    proc = classzoo(*argv, "--output-dir", str(tmp_path / "r"), "--resume", "auto", "--overwrite")
    assert_one_line_error(proc, "--resume and --overwrite contradict")


def test_eval_data_dir_mistakes_say_what_to_do(tmp_path, small_imagefolder):
    """A file as --data-dir said "has no '.' split"; an ImageFolder read as TFRecords (a
    converted slim checkpoint records slim's tfrecord source) said only "no TFRecord files"."""
    import torch
    from timm import create_model

    weights = tmp_path / "w.pth"
    torch.save(create_model("resnet10t", num_classes=4).state_dict(), weights)
    argv = ["eval", "--model", "resnet10t", "--checkpoint", str(weights), "--data-dir"]
    (tmp_path / "afile").write_text("")
    proc = classzoo(*argv, str(tmp_path / "afile"))
    assert_one_line_error(proc, f"data directory {tmp_path / 'afile'} is a file")
    proc = classzoo(*argv, str(small_imagefolder), "--set", "data.source=tfrecord")
    assert_one_line_error(
        proc,
        f"no TFRecord files in {small_imagefolder / 'val'} (it holds class folders such as a/: "
        "an ImageFolder, which train / eval read with --set data.source=imagefolder",
    )
    # data inspect (TFRecords only, no --set) says how to convert it
    proc = classzoo("data", "inspect", str(small_imagefolder / "val"))
    assert_one_line_error(proc, "`classzoo data to-tfrecord` converts")


def test_unknown_recipe(tmp_path):
    proc = classzoo("train", "--recipe", "resnet51_imagenet", "--data-dir", str(tmp_path))
    assert_one_line_error(proc, "unknown recipe 'resnet51_imagenet'")


def test_unknown_set_key(tmp_path):
    proc = classzoo(
        "train",
        "--recipe",
        "quickstart",
        "--set",
        "optim.learning_rate=0.1",
        "--data-dir",
        str(tmp_path),
    )
    assert_one_line_error(proc, "unknown key 'optim.learning_rate'", "allowed:", "optim.lr")


def test_checkpoint_of_another_model_lists_keys(tmp_path):
    data = write_imagefolder(tmp_path / "val", {"a": 2, "b": 2})
    ckpt = tmp_path / "resnet18.pt"
    import timm

    torch.save({"model": timm.create_model("resnet18", num_classes=2).state_dict()}, ckpt)
    proc = classzoo(
        "eval", "--checkpoint", str(ckpt), "--model", "resnet10t", "--data-dir", str(data)
    )
    assert_one_line_error(
        proc, f"checkpoint {ckpt} does not fit ResNet", "missing:", "unexpected:", "layer1.1."
    )


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"])
def test_corrupt_checkpoint(tmp_path, content):
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(content)
    proc = classzoo(
        "eval", "--checkpoint", str(ckpt), "--model", "resnet10t", "--data-dir", str(tmp_path)
    )
    assert_one_line_error(proc, str(ckpt))


@pytest.mark.parametrize(
    "recipe, setting",
    [
        ("resnet152_slim_finetune:smoke", "data.hflip=0.0"),
        ("resnet152_slim_finetune:smoke", "data.scale=[0.9,1.0]"),
        ("inception_v4:smoke", "data.re_prob=0.5"),
        ("inception_v4:smoke", "data.interpolation=bicubic"),
        ("resnet152_slim_finetune:smoke", "data.crop_mode=squash"),
    ],
)
def test_timm_augmentation_under_a_slim_preset(tmp_path, recipe, setting):
    """slim's vgg / inception training presets have no such knob (tf_slim preprocessing takes
    only the image, its size and is_training): the value would be recorded and never applied."""
    out = tmp_path / "r"
    proc = classzoo("train", "--recipe", recipe, "--set", setting, "--output-dir", str(out))
    preset = "vgg" if recipe.startswith("resnet") else "inception"
    assert_one_line_error(proc, f"{setting.split('=')[0]}=", f"has no effect with preset {preset}")
    assert not out.exists()  # refused before the run folder is made


def test_a_checkpoint_of_another_width_is_not_called_another_class_count(
    tmp_path, small_imagefolder
):
    """A narrow resnet10t's weights (fc 64 -> 4) into the default width (fc 512 -> 4): the class
    count is the same, so the old advice (set model.num_classes=4) could not help."""
    import timm

    narrow = timm.create_model("resnet10t", num_classes=4, channels=(8, 16, 32, 64), stem_width=8)
    ckpt = tmp_path / "narrow.pth"
    torch.save(narrow.state_dict(), ckpt)
    proc = classzoo(
        "eval", "--checkpoint", str(ckpt), "--data-dir", str(small_imagefolder),
        "--model", "resnet10t", "--set", "model.num_classes=4",
    )  # fmt: skip
    assert_one_line_error(
        proc, "fc.weight (4, 64) takes other features than the model's (4, 512)", "model.kwargs"
    )
    assert "set model.num_classes" not in proc.stderr


def test_eval_with_more_workers_than_cpus_says_so_in_one_line(tmp_path, small_imagefolder):
    """An 8-worker recipe evaluated on a 2-CPU machine: torch warned in three lines ("This
    DataLoader will create 8 worker processes in total ..."); the evaluation takes one worker
    per CPU and says so (the scores do not depend on the count)."""
    import os

    cores = len(os.sched_getaffinity(0))
    ckpt = tmp_path / "tiny.pt"
    tiny_checkpoint(ckpt)
    argv = ["eval", "--checkpoint", str(ckpt), "--data-dir", str(small_imagefolder)]
    proc = classzoo(*argv, "--set", f"data.num_workers={cores + 2}")
    assert proc.returncode == 0, proc.stderr
    assert "worker processes in total" not in proc.stderr
    assert f"{cores} loader workers (data.num_workers {cores + 2}; {cores} CPUs)" in proc.stderr


def test_class_names_in_two_unicode_forms_are_told_apart(tmp_path):
    """macOS writes 'café' decomposed (NFD), most tools composed (NFC): the line said
    "extra: ['café'], missing: ['café']", two names that print alike."""
    import unicodedata

    data = tmp_path / "data"
    write_imagefolder(data / "train", {unicodedata.normalize("NFC", "café"): 2, "b": 2}, seed=1)
    write_imagefolder(data / "val", {unicodedata.normalize("NFD", "café"): 1, "b": 1}, seed=2)
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--max-steps", "1"]
    proc = classzoo(*argv, "--output-dir", str(tmp_path / "r"))
    assert_one_line_error(proc, "spelt with the other Unicode form of its accents (NFD here")


def test_a_damaged_image_mid_epoch_keeps_the_steps_done(tmp_path):
    """The run stopped at a damaged file found mid-epoch and lost every step since its last
    checkpoint; now those steps are saved first, and a resume with data.skip_corrupt=true
    continues from them. (Seed 0 fetches the damaged file's batch after the first step.)"""
    import re

    data = write_imagefolder(tmp_path / "d" / "train", {"a": 8, "b": 8}).parent
    write_imagefolder(data / "val", {"a": 2, "b": 2})
    (data / "train" / "b" / "00003.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    out = tmp_path / "r"
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(out)]
    argv += ["--set", "data.batch_size=2", "--set", "data.num_workers=2", "--epochs", "1"]
    proc = classzoo(*argv)
    assert_one_line_error(proc, "unreadable image", "steps done are saved: --resume auto")
    step = int(re.search(r"the (\d+) steps done are saved", proc.stderr).group(1))
    assert step > 0 and (out / "checkpoints" / f"ckpt-{step:09d}.pt").is_file()
    proc = classzoo(*argv, "--resume", "auto", "--set", "data.skip_corrupt=true")
    assert proc.returncode == 0, proc.stderr
    assert (
        f"resumed from {out / 'checkpoints' / f'ckpt-{step:09d}.pt'} at step {step}" in proc.stderr
    )


def test_inception_v4_below_its_smallest_size_is_one_line(tmp_path):
    """At 96 px Mixed_6h is 4x4 (by hand, VALID: 96 -> 47 -> 45 -> 22 -> 20 -> 9 -> 4), too
    small for AuxLogits' 5x5/3 pool: a ZeroDivisionError traceback (exit 1) before."""
    out = tmp_path / "r"
    proc = classzoo("train", "--recipe", "inception_v4:smoke", "--output-dir", str(out),
                    "--set", "data.image_size=96")  # fmt: skip
    assert_one_line_error(proc, "inception_v4 takes images of at least 107 px (96 given)")
    assert not out.exists()
