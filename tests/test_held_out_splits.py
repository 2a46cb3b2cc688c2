"""Which files a split reads: the val split is held out from training, and ``classzoo eval
--split`` reads the split it names.

Before, a folder of arbitrarily named TFRecord shards (every file read for every split) and an
ImageFolder whose ``val`` links to ``train`` made a ``train_and_evaluate`` run score its own
training images as "val", and ``eval --split test`` of a run trained with ``data.val_pattern``
read that pattern's files instead of the test split, all without a word. The truths: the files
each split was written to, and the number of images written.
"""

from __future__ import annotations

import json
import os
import shutil

from classzoo.cli import main
from classzoo.errors import UserError
from conftest import write_imagefolder

EXIT_USER_ERROR = UserError.exit_code  # 2
TINY = ["--recipe", "quickstart", "--set", "data.batch_size=6", "--set", "train.max_steps=1"]
TINY += ["--set", "data.num_workers=0", "--set", "train.progress=false", "--device", "cpu"]
SLIM_LABELS = ["--set", "data.source=tfrecord", "--set", "data.label_offset=1"]


def _shards(src, out, split: str, shards: int) -> None:
    argv = ["data", "to-tfrecord", str(src), str(out), "--shards", str(shards), "--split", split]
    assert main(argv) == 0


def test_unnamed_shards_are_not_read_as_both_train_and_val(tmp_path, capsys):
    write_imagefolder(tmp_path / "img", dict.fromkeys("abc", 4), seed=1)
    _shards(tmp_path / "img", tmp_path / "named", "train", 2)
    (tmp_path / "tu").mkdir()
    for k, part in enumerate(("a", "b")):
        shard = tmp_path / "named" / f"train-0000{k}-of-00002"
        shutil.copy(shard, tmp_path / "tu" / f"part-{part}.tfrecord")
    argv = ["train", *TINY, *SLIM_LABELS, "--data-dir", str(tmp_path / "tu"), "--output-dir"]
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "r1")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "the val split reads 2 of the train split's 2 files" in err, err
    assert "score its own training images" in err and not (tmp_path / "r1").exists()
    # the val pattern alone: train still reads every file, part-b included
    assert main([*argv, str(tmp_path / "r0"), "--set", "data.val_pattern=part-b*"]) == 2
    assert "the val split reads 1 of the train split's 2 files" in capsys.readouterr().err
    held_out = ["--set", "data.train_pattern=part-a*", "--set", "data.val_pattern=part-b*"]
    assert main([*argv, str(tmp_path / "r2"), *held_out]) == 0
    files = (tmp_path / "r2" / "resolved.yaml").read_text()
    assert "part-a.tfrecord" in files and "part-b.tfrecord" in files


def test_a_val_folder_linked_to_train_is_refused(tmp_path, capsys):
    write_imagefolder(tmp_path / "d" / "train", dict.fromkeys("abc", 4), seed=1)
    (tmp_path / "d" / "val").symlink_to(tmp_path / "d" / "train", target_is_directory=True)
    argv = ["train", *TINY, "--data-dir", str(tmp_path / "d"), "--output-dir"]
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "r1")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert f"the val split {tmp_path / 'd' / 'val'} is the train split's folder" in err, err
    # asked for in so many words: the val line names the folder
    assert main([*argv, str(tmp_path / "r2"), "--set", "data.val_split=train"]) == 0


def _refused(argv: list[str], out, capsys) -> str:
    capsys.readouterr()
    assert main([*argv, str(out)]) == EXIT_USER_ERROR and not out.exists()
    err = capsys.readouterr().err  # the lines logged before the check, then one error line
    errors = [line for line in err.splitlines() if line.startswith("classzoo: error:")]
    assert len(errors) == 1 and "score its own training images" in errors[0], err
    return errors[0]


def test_val_images_linked_to_train_images_are_refused(tmp_path, capsys):
    """A val folder of its own whose images are train's files: hard links (cp -al), a class
    folder or a file linked back (ln -s), either way round. The truth: the links made."""
    d = tmp_path / "d"
    write_imagefolder(d / "train", dict.fromkeys("abc", 4), seed=1)
    write_imagefolder(d / "val", dict.fromkeys("abc", 2), seed=2)
    argv = ["train", *TINY, "--data-dir", str(d), "--output-dir"]
    os.link(d / "train" / "a" / "00000.png", d / "val" / "beside_the_classes.png")  # not read
    assert main([*argv, str(tmp_path / "held_out")]) == 0  # no image linked: trained
    for k in (2, 3):  # hard links beside val's own images
        os.link(d / "train" / "a" / f"{k:05d}.png", d / "val" / "a" / f"from_train_{k}.png")
    err = _refused(argv, tmp_path / "r1", capsys)
    assert f"the val split {d / 'val'} and the train split {d / 'train'} share 2 images" in err
    assert str(d / "val" / "a" / "from_train_2.png") in err
    for k in (2, 3):
        (d / "val" / "a" / f"from_train_{k}.png").unlink()
    shutil.rmtree(d / "val" / "b")  # a class folder linked back
    (d / "val" / "b").symlink_to(d / "train" / "b", target_is_directory=True)
    assert "share 4 images or class folders" in _refused(argv, tmp_path / "r2", capsys)
    (d / "val" / "b").unlink()
    write_imagefolder(d / "val", {"b": 2}, seed=3)
    (d / "val" / "c" / "x.png").symlink_to(d / "train" / "c" / "00001.png")  # one file
    assert f"share 1 image or class folder (hard or symbolic links: {d / 'val' / 'c' / 'x.png'})" in _refused(argv, tmp_path / "r3", capsys)  # fmt: skip
    (d / "val" / "c" / "x.png").unlink()
    shutil.rmtree(d / "train" / "c")  # train's class folder linked to val's
    (d / "train" / "c").symlink_to(d / "val" / "c", target_is_directory=True)
    assert f"links: {d / 'train' / 'c'})" in _refused(argv, tmp_path / "r4", capsys)
    # asked for in so many words: scored on the train split itself
    assert main([*argv, str(tmp_path / "r5"), "--set", "data.val_split=train"]) == 0


def test_a_hard_linked_shard_is_read_as_both_train_and_val(tmp_path, capsys):
    write_imagefolder(tmp_path / "img", dict.fromkeys("abc", 4), seed=1)
    _shards(tmp_path / "img", tmp_path / "t", "train", 2)
    os.link(tmp_path / "t" / "train-00001-of-00002", tmp_path / "t" / "validation-00000-of-00001")
    argv = ["train", *TINY, *SLIM_LABELS, "--data-dir", str(tmp_path / "t"), "--output-dir"]
    err = _refused(argv, tmp_path / "r", capsys)
    assert "the val split reads 1 of the train split's 2 files" in err, err


def test_eval_split_reads_the_split_it_names_not_the_runs_val_pattern(tmp_path, capsys):
    write_imagefolder(tmp_path / "img" / "train", dict.fromkeys("abc", 4), seed=1)
    write_imagefolder(tmp_path / "img" / "val", dict.fromkeys("abc", 2), seed=2)
    write_imagefolder(tmp_path / "img" / "test", dict.fromkeys("abc", 3), seed=3)
    data = tmp_path / "t"
    for split, name, shards in (("train", "train", 2), ("val", "validation", 2), ("test", "test", 1)):  # fmt: skip
        _shards(tmp_path / "img" / split, data, name, shards)
    run = tmp_path / "run"
    argv = ["train", *TINY, *SLIM_LABELS, "--data-dir", str(data), "--output-dir", str(run)]
    assert main([*argv, "--set", "data.val_pattern=validation-00000-of-00002"]) == 0
    capsys.readouterr()
    ev = ["eval", "--checkpoint", str(run), "--data-dir", str(data), "--device", "cpu", "--json"]
    assert main([*ev, "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["count"] == 9  # the 3 x 3 test images written
    assert main([*ev, "--split", "test", "--set", "data.val_pattern=validation-*"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["count"] == 6  # a pattern asked for is read


def test_eval_of_a_folder_of_splits_without_val_names_the_split_to_give(tmp_path, capsys):
    """A data folder with train/ and validation/ but no val/ was read as class folders and the
    user was told that 'train' is not one of the model's classes."""
    write_imagefolder(tmp_path / "d" / "train", dict.fromkeys("abc", 4), seed=1)
    write_imagefolder(tmp_path / "d" / "val", dict.fromkeys("abc", 2), seed=2)
    assert main(["train", *TINY, "--data-dir", str(tmp_path / "d"), "--output-dir", str(tmp_path / "r")]) == 0  # fmt: skip
    (tmp_path / "d" / "val").rename(tmp_path / "d" / "validation")
    capsys.readouterr()
    ev = ["eval", "--checkpoint", str(tmp_path / "r"), "--data-dir", str(tmp_path / "d")]
    assert main([*ev, "--device", "cpu"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "has no 'val' folder but has train, validation: give --split validation" in err, err
    assert main([*ev, "--device", "cpu", "--split", "validation"]) == 0


def test_a_class_named_like_a_split_is_a_class(tmp_path, capsys):
    """CIFAR-100 has a class 'train': its folder holds images, not class folders."""
    write_imagefolder(tmp_path / "d" / "train", dict.fromkeys(("bus", "car", "train"), 4), seed=1)
    write_imagefolder(tmp_path / "d" / "val", dict.fromkeys(("bus", "car", "train"), 2), seed=2)
    assert main(["train", *TINY, "--data-dir", str(tmp_path / "d"), "--output-dir", str(tmp_path / "r")]) == 0  # fmt: skip
    capsys.readouterr()
    ev = ["eval", "--checkpoint", str(tmp_path / "r"), "--data-dir", str(tmp_path / "d" / "val")]
    assert main([*ev, "--device", "cpu"]) == 0
    assert "count 6" in capsys.readouterr().out


def test_a_val_folder_is_not_written_as_training_shards_without_a_word(tmp_path, capsys):
    """`data to-tfrecord d/val OUT` wrote train-* shards (--split defaulted to train): a run on
    OUT would train on the validation images."""
    write_imagefolder(tmp_path / "d" / "val", dict.fromkeys("ab", 2), seed=1)
    argv = ["data", "to-tfrecord", str(tmp_path / "d" / "val"), str(tmp_path / "t"), "--shards", "1"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == EXIT_USER_ERROR and not (tmp_path / "t").exists()
    assert "is named like a held-out split but --split defaults to train" in capsys.readouterr().err
    assert main([*argv, "--split", "validation"]) == 0
    assert "wrote 4 records of 2 classes to 1 'validation' shards" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "t").glob("*-of-*")] == ["validation-00000-of-00001"]


def test_images_in_a_hidden_folder_are_counted_as_not_used(tmp_path, capsys):
    """A hidden folder of images (`.ipynb_checkpoints`, a copy) is not a class, but timm's
    ImageDataset reads it as one: it was left out without a line in the record."""
    from timm.data import ImageDataset

    write_imagefolder(tmp_path / "d" / "train", dict.fromkeys("abc", 4), seed=1)
    write_imagefolder(tmp_path / "d" / "val", dict.fromkeys("abc", 2), seed=2)
    assert main(["train", *TINY, "--data-dir", str(tmp_path / "d"), "--output-dir", str(tmp_path / "r")]) == 0  # fmt: skip
    write_imagefolder(tmp_path / "d" / "val" / ".d", {"x": 4}, seed=3)
    assert len(ImageDataset(str(tmp_path / "d" / "val"))) == 10  # timm: 6 + the 4 hidden ones
    capsys.readouterr()
    ev = ["eval", "--checkpoint", str(tmp_path / "r"), "--data-dir", str(tmp_path / "d")]
    assert main([*ev, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "eval: 6 images from" in err and "not used: 4 images in the hidden folder .d" in err
