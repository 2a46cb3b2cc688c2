"""Which files are a split's shards (issue 9 defects 1 and 3), feature keys (defect 11), and
labels read from the index without decoding images (defect 4, TFRecord half).

Outside truths: the files each test writes (names, record counts, labels), and the ResNet-152
reference's own Example keys ``image`` / ``label``.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classzoo.config import DataConfig
from classzoo.data.datasets import build_dataset
from classzoo.data.labels import infer_num_classes
from classzoo.data.tfrecord_dataset import TFRecordImageDataset
from classzoo.data.tfrecord_shards import select_shards
from classzoo.errors import UserError
from classzoo.formats.example import build_example
from classzoo.formats.tfrecord import TFRecordWriter


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def _shard(path: Path, labels, image_key="image/encoded", label_key="image/class/label", img=None):
    with TFRecordWriter(path) as w:
        for label in labels:
            data = _jpeg(int(label)) if img is None else img
            w.write(build_example({image_key: data, label_key: int(label)}))


def _data(tmp_path: Path, names_counts: dict[str, int]) -> Path:
    root = tmp_path / "data"
    root.mkdir(parents=True)
    for name, n in names_counts.items():
        _shard(root / name, range(1, n + 1))
    return root


def _names(selection) -> list[str]:
    return [p.name for p in selection.files]


# ---- defect 1: arbitrarily named shards --------------------------------------------------------


def test_split_named_file_next_to_unnamed_ones_is_a_one_line_error(tmp_path):
    root = _data(tmp_path, {"train.tfrecord": 2, "part2.tfrecord": 3, "part3.tfrecord": 4})
    with pytest.raises(UserError) as err:
        select_shards(str(root), "train", None)
    msg = str(err.value)
    assert "\n" not in msg
    for name in ("train.tfrecord", "part2.tfrecord", "part3.tfrecord", "data.train_pattern"):
        assert name in msg
    # the key settles it: every file, counted exactly
    cfg = DataConfig(source="tfrecord", dir=str(root), train_pattern="*")
    ds = build_dataset(cfg, "train", None, 0, 0)
    assert len(ds) == 2 + 3 + 4 and sorted(Path(s).name for s in ds.shards) == [
        "part2.tfrecord",
        "part3.tfrecord",
        "train.tfrecord",
    ]


def test_every_file_is_used_or_logged_with_a_reason(tmp_path, caplog):
    root = _data(tmp_path, {"a.tfrecord": 1, "b.tfrecord": 2, "zz": 1})
    (root / "labels.txt").write_text("x")
    (root / "notes").mkdir()
    caplog.set_level(logging.INFO, logger="classzoo")
    sel = select_shards(str(root), "train", None)  # no file names a split: all are 'train'
    assert _names(sel) == ["a.tfrecord", "b.tfrecord", "zz"]
    assert {p.name: why for p, why in sel.ignored} == {
        "labels.txt": "'.txt' files are not shards",
        "notes": "a folder",
    }
    line = next(r.getMessage() for r in caplog.records if "file(s) for split" in r.getMessage())
    assert "labels.txt" in line and "notes" in line and "3 file(s) for split 'train'" in line


def test_pattern_selects_and_logs_the_rest(tmp_path):
    root = _data(tmp_path, {"train.tfrecord": 2, "part2.tfrecord": 3, "extra.bin": 1})
    sel = select_shards(str(root), "train", "part*")
    assert _names(sel) == ["part2.tfrecord"]
    assert sorted(p.name for p, _ in sel.ignored) == ["extra.bin", "train.tfrecord"]
    assert all("does not match data.train_pattern 'part*'" in why for _, why in sel.ignored)
    with pytest.raises(UserError, match=r"data.val_pattern 'nope\*' matches no file in .*data"):
        select_shards(str(root), "val", "nope*")


def test_only_test_shards_for_evaluation(tmp_path, caplog):
    root = _data(tmp_path, {"test-00000.tfrecord": 3})
    caplog.set_level(logging.INFO, logger="classzoo")
    assert _names(select_shards(str(root), "val", None)) == ["test-00000.tfrecord"]
    assert "evaluating on the 'test' files (set data.val_pattern to choose)" in caplog.text
    with pytest.raises(UserError, match="no 'train' shards .*named after: test.*train_pattern"):
        select_shards(str(root), "train", None)


# ---- defect 3: evaluation never merges train and validation -------------------------------------


def test_eval_never_merges_train_and_validation(tmp_path):
    # split names in the middle of the file names: the old rule took every file for "val"
    names = {f"imagenet-train-{k:05d}": 4 for k in range(3)}
    names |= {f"imagenet-val-{k:05d}": 2 for k in range(2)}
    root = _data(tmp_path, names)
    cfg = DataConfig(source="tfrecord", dir=str(root))
    val = build_dataset(cfg, "val", None, 0, 0)
    assert len(val) == 4 and all("-val-" in s for s in val.shards)
    assert sorted(Path(p).name for p, _ in val.ignored) == sorted(n for n in names if "train" in n)
    assert len(build_dataset(cfg, "train", None, 0, 0)) == 12
    # validation asked, only train files and unnamed ones: an error, never the train shards
    only_train = _data(tmp_path / "t", {"train-00000-of-00001": 3, "shard-7": 1})
    with pytest.raises(UserError, match="no 'val' shards .*named after: train.*data.val_pattern"):
        select_shards(str(only_train), "val", None)


def test_slim_layout_and_subfolders(tmp_path):
    root = _data(tmp_path, {"train-00000-of-00002": 1, "train-00001-of-00002": 1})
    _shard(root / "validation-00000-of-00001", [5])
    assert _names(select_shards(str(root), "validation", None)) == ["validation-00000-of-00001"]
    assert _names(select_shards(str(root), "val", None)) == ["validation-00000-of-00001"]
    nested = tmp_path / "nested"
    (nested / "train").mkdir(parents=True)
    (nested / "val").mkdir()
    _shard(nested / "train" / "p1", [1, 2])
    _shard(nested / "val" / "p9", [3])
    assert [p.name for p in select_shards(str(nested), "val", None).files] == ["p9"]
    with pytest.raises(UserError, match="does not exist"):
        select_shards(str(tmp_path / "missing"), "train", None)


# ---- defect 11: feature keys --------------------------------------------------------------------


def test_reference_keys_image_and_label(tmp_path):
    root = tmp_path / "ref"
    root.mkdir()
    _shard(root / "part-0", [3, 1, 2], image_key="image", label_key="label")
    cfg = DataConfig(source="tfrecord", dir=str(root))
    with pytest.raises(UserError) as err:
        build_dataset(cfg, "train", None, 0, 0)[0]
    msg = str(err.value)
    assert "has no feature 'image/encoded' (data.image_key); its features: image, label" in msg
    cfg = DataConfig(source="tfrecord", dir=str(root), image_key="image", label_key="label")
    ds = build_dataset(cfg, "train", None, 0, 0)
    img, label = ds[0]
    assert label == 3 and img.size == (8, 8)
    assert ds.label_range() == (1, 3)


def test_missing_keys_are_named_before_reading_images(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    _shard(root / "s", [1, 2])
    with pytest.raises(UserError) as err:
        TFRecordImageDataset([root / "s"], label_key="label")  # checked at construction
    assert str(err.value) == (
        f"record 0 in {root / 's'} (byte 0) has no feature 'label' (data.label_key); "
        "its features: image/class/label, image/encoded"
    )
    with TFRecordWriter(root / "t") as w:  # record 1 alone lacks the label: found in the index
        w.write(build_example({"image/encoded": b"x", "image/class/label": 1}))
        w.write(build_example({"image/encoded": b"x", "other": 1}))
    ds = TFRecordImageDataset([root / "t"])
    with pytest.raises(UserError, match=r"record 1 in .*t \(byte \d+\) has no single int64 feature "
                       r"'image/class/label' \(data.label_key\)"):  # fmt: skip
        ds.label_range()


# ---- defect 4: labels from the index ------------------------------------------------------------


def test_label_range_and_class_count_without_decoding(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    # the image bytes are not an image at all: labels must still come out (never decoded)
    _shard(root / "train-00000-of-00002", [1, 7, 3], img=b"not an image")
    _shard(root / "train-00001-of-00002", [1000, 2], img=b"not an image")
    shards = [root / "train-00000-of-00002", root / "train-00001-of-00002"]
    ds = TFRecordImageDataset(shards, label_offset=1)
    assert ds.num_records == 5 and ds.label_range() == (1, 1000)
    assert ds.distinct_labels() == 5 and ds.targets.tolist() == [0, 6, 2, 999, 1]
    count = infer_num_classes(*ds.label_range(), ds.distinct_labels(), label_offset=1)
    assert count.num_classes == 1000
    assert "max stored label 1000 - label_offset 1 + 1 = 1000" in count.reason
    assert "995 of the 1000 classes have no record" in count.reason
    ds.check_labels(1000)
    with pytest.raises(UserError) as err:
        TFRecordImageDataset(shards, label_offset=0).check_labels(1000)
    msg = str(err.value)
    assert "label 1000 in record 0 of " in msg and "train-00001-of-00002 (byte 0)" in msg
    assert "look like slim labels" in msg
    with pytest.raises(UserError, match="below data.label_offset 2"):
        infer_num_classes(1, 1000, 5, label_offset=2)


def _run_cli(argv, capsys) -> tuple[int, str]:
    from classzoo.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def test_a_stale_or_incomplete_shard_set_is_refused(tmp_path, capsys):
    """{prefix}-k-of-n names say how many files make the set: a second conversion's shards
    beside the first counted every image twice (40 of 20), a missing shard dropped its images,
    both without a word."""
    root = _data(tmp_path, {f"validation-0000{k}-of-00003": 2 for k in range(3)})
    assert _names(select_shards(str(root), "validation", None)) == [
        f"validation-0000{k}-of-00003" for k in range(3)
    ]
    _shard(root / "validation-00000-of-00002", [1, 2])
    _shard(root / "validation-00001-of-00002", [3, 4])
    with pytest.raises(UserError, match=r"two shard sets, -of-00002 \(2 files\) and -of-00003"):
        select_shards(str(root), "validation", None)
    for k in range(2):
        (root / f"validation-0000{k}-of-00002").unlink()
    (root / "validation-00001-of-00003").unlink()
    with pytest.raises(UserError, match=r"1 of 3 shards missing \(validation-00001-of-00003\)"):
        select_shards(str(root), "validation", None)
    # an explicit pattern is the user's choice of files (a subset to train on)
    assert len(select_shards(str(root), "validation", "validation-*").files) == 2
    # the writer refuses to put a new set beside an old one
    images = tmp_path / "images"
    for c in "ab":
        (images / c).mkdir(parents=True)
        Image.new("RGB", (8, 8), (9, 9, 9)).save(images / c / "0.jpg")
    argv = ["data", "to-tfrecord", str(images), str(root), "--split", "validation"]
    code, err = _run_cli([*argv, "--shards", "2"], capsys)
    assert code == UserError.exit_code
    assert err.strip() == (
        f"classzoo: error: {root} already holds other 'validation' shards "
        "(validation-00000-of-00003, validation-00002-of-00003): remove them or write to "
        "another folder"
    )
    assert _run_cli([*argv, "--shards", "3"], capsys)[0] == 0  # the same names: rewritten


def test_to_tfrecord_labels_are_the_same_on_every_split(tmp_path, capsys):
    """ImageNet synset folders get ImageNet's labels (build_imagenet_data.py numbers the 1000
    synsets: n01440764 tench is 1, n15075141 toilet tissue 1000) whatever subset is present;
    other folders share OUT/labels.txt across splits: a validation folder without 'dog' kept
    fox at 2 (train's 3), so fox was scored against dog's logit."""
    from classzoo.data.tfrecord_tools import inspect_tfrecords

    def folder(root: Path, classes) -> Path:
        for c in classes:
            (root / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (9, 9, 9)).save(root / c / "0.jpg")
        return root

    def convert(src: Path, out: Path, split: str) -> tuple[int, str]:
        argv = ["data", "to-tfrecord", str(src), str(out), "--shards", "1", "--split", split]
        return _run_cli([*argv, "--workers", "1"], capsys)

    out = tmp_path / "imagenet"
    assert convert(folder(tmp_path / "in", ["n01440764", "n15075141"]), out, "validation")[0] == 0
    d = inspect_tfrecords(str(out))
    assert (d["label_min"], d["label_max"]) == (1, 1000)
    out = tmp_path / "pets"
    assert convert(folder(tmp_path / "train", ["cat", "dog", "fox"]), out, "train")[0] == 0
    assert (out / "labels.txt").read_text() == "1:cat\n2:dog\n3:fox\n"
    assert convert(folder(tmp_path / "val", ["cat", "fox"]), out, "validation")[0] == 0
    d = inspect_tfrecords(str(out / "validation-00000-of-00001"))
    assert (d["label_min"], d["label_max"]) == (1, 3)
    code, err = convert(folder(tmp_path / "test", ["wolf"]), out, "test")
    assert code == UserError.exit_code
    assert f"class folder wolf is not in {out / 'labels.txt'}" in err


def test_a_split_folder_wins_over_a_stray_file_beside_it(tmp_path):
    """{train/, validation/} plus one unnamed top-level file (a copied shard, a label list
    without extension): that file was evaluated as the validation split."""
    root = tmp_path / "data"
    for split, n in (("train", 3), ("validation", 2)):
        (root / split).mkdir(parents=True)
        _shard(root / split / f"{split}-00000-of-00001", range(1, n + 1))
    _shard(root / "extra", [1, 2, 3, 4, 5, 6])
    selection = select_shards(str(root), "validation", None)
    assert [str(p.relative_to(root)) for p in selection.files] == [
        "validation/validation-00000-of-00001"
    ]


def test_a_shard_whose_name_is_not_utf8_trains_and_is_logged(tmp_path, capsys):
    """A shard named in latin-1 (bytes, as Linux allows) ended in a UnicodeEncodeError traceback
    (the index cache key), then in logging errors (console.log); an ImageFolder of such names
    trained. The truth: the images it holds, counted by hand (2 shards of 4)."""
    import os

    from classzoo.cli import main

    root = tmp_path / "data"
    root.mkdir()
    _shard(root / "train-a", [1, 2, 1, 2])
    _shard(root / "validation-a", [1, 2, 1, 2])
    odd = os.fsencode(root / "train-b") + b"\xe9"  # not valid UTF-8
    _shard(Path(os.fsdecode(odd)), [2, 1, 2, 1])
    run = tmp_path / "run"
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(root), "--output-dir", str(run)]
    argv += ["--set", "data.source=tfrecord", "--set", "data.num_workers=0", "--max-steps", "1"]
    argv += ["--set", "data.batch_size=4", "--amp", "off", "--set", "train.mode=train"]
    argv += ["--set", "data.train_pattern=train-*", "--set", "data.val_pattern=validation-*"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    assert "train: 8 images in 2 files" in (run / "console.log").read_bytes().decode(
        "utf-8", "replace"
    )
