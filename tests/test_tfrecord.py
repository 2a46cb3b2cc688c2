"""TFRecord framing, tf.train.Example, shard discovery, datasets and tools, without TensorFlow.

Outside truths: bytes written by ``tf.io.TFRecordWriter`` / ``tf.train.Example`` pasted as
literals and checked by hand below, the CRC-32C check value, PIL's decode of the original JPEG
files, and counts of what the test itself wrote.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classzoo.cli import main
from classzoo.data.labels import check_labels
from classzoo.data.tfrecord_dataset import TFRecordImageDataset
from classzoo.data.tfrecord_index import sidecar_path
from classzoo.data.tfrecord_shards import find_shards
from classzoo.data.tfrecord_tools import format_inspect, imagefolder_to_tfrecord, inspect_tfrecords
from classzoo.errors import UserError
from classzoo.formats.example import build_example, parse_example, parse_example_sparse
from classzoo.formats.tfrecord import (
    TFRecordReader,
    TFRecordWriter,
    build_index,
    read_records,
)
from classzoo.formats.wire import WireError
from conftest import foolbox_data, write_imagefolder

# tf.io.TFRecordWriter output for the single record b"123456789" (TF 2.21). By hand: length
# 9 as uint64 LE; footer = mask(0xE3069283), the CRC-32C check value of "123456789":
# rotr15 -> 0x2507C60D, + 0xA282EAD8 = 0xC78AB0E5 -> e5 b0 8a c7.
TF_RECORD_123456789 = bytes.fromhex("090000000000000037f97139313233343536373839e5b08ac7")
# tf.train.Example({'label': Int64List([-2])}).SerializeToString(): 0a19 Features, 0a17 entry,
# 0a05 "label", 120e Feature, 1a0c Int64List, 0a0a packed, then -2 as a 10-byte varint.
TF_EXAMPLE_LABEL_MINUS_2 = bytes.fromhex("0a190a170a056c6162656c120e1a0c0a0afeffffffffffffffff01")


def _jpeg(seed: int, size=(16, 12)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _write_shard(path: Path, labels) -> list[bytes]:
    """Shard of slim-schema records with the given labels; returns the JPEG bytes written."""
    images = []
    with TFRecordWriter(path) as w:
        for label in labels:
            images.append(_jpeg(int(label)))
            w.write(build_example({"image/encoded": images[-1], "image/class/label": int(label)}))
    return images


# ---- framing --------------------------------------------------------------------------------


def test_tiny_record_bytes_match_tensorflow(tmp_path):
    path = tmp_path / "one"
    with TFRecordWriter(path) as w:
        w.write(b"123456789")
    assert path.read_bytes() == TF_RECORD_123456789
    (tmp_path / "tf").write_bytes(TF_RECORD_123456789)
    assert list(read_records(tmp_path / "tf")) == [b"123456789"]
    assert build_index(tmp_path / "tf").tolist() == [[0, 9]]


def test_round_trip_many_sizes(tmp_path):
    rng = np.random.default_rng(0)
    # empty, tiny, and one record larger than the reader's 4 MiB chunk
    records = [b"", b"x"] + [rng.bytes(int(n)) for n in rng.integers(1, 300_000, 20)]
    records.append(rng.bytes(5 << 20))
    path = tmp_path / "shard"
    with TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    assert list(read_records(path)) == records
    index = build_index(path)
    assert index[:, 1].tolist() == [len(r) for r in records]
    ends = index[:, 0] + 12 + index[:, 1] + 4
    assert ends[-1] == path.stat().st_size and (index[1:, 0] == ends[:-1]).all()


# ---- tf.train.Example -----------------------------------------------------------------------


def test_example_hand_computed_bytes():
    assert build_example({"label": -2}) == TF_EXAMPLE_LABEL_MINUS_2
    assert parse_example(TF_EXAMPLE_LABEL_MINUS_2)["label"].tolist() == [-2]


def test_example_unpacked_reordered_and_unknown_fields():
    # Hand-written: entry 1 has value before key; int64 unpacked (tag 08); float unpacked
    # (tag 0d); bytes entry; an unknown Example field 2 that must be ignored.
    int_list = b"\x08\x07\x08\x01\x08\x02"  # 7, 1, 2 one by one
    feat_i = b"\x1a" + bytes([len(int_list)]) + int_list
    entry_i = b"\x12" + bytes([len(feat_i)]) + feat_i + b"\x0a\x01i"  # value first, key last
    float_list = b"\x0d" + np.float32(0.5).tobytes() + b"\x0d" + np.float32(-2).tobytes()
    feat_f = b"\x12" + bytes([len(float_list)]) + float_list
    entry_f = b"\x0a\x01f\x12" + bytes([len(feat_f)]) + feat_f
    feat_b = b"\x0a\x06\x0a\x01a\x0a\x01b"
    entry_b = b"\x0a\x01b\x12" + bytes([len(feat_b)]) + feat_b
    entries = b"".join(b"\x0a" + bytes([len(e)]) + e for e in (entry_i, entry_f, entry_b))
    msg = b"\x0a" + bytes([len(entries)]) + entries + b"\x10\x05"
    out = parse_example(msg)
    assert out["i"].tolist() == [7, 1, 2] and out["i"].dtype == np.int64
    assert out["f"].tolist() == [0.5, -2.0] and out["f"].dtype == np.float32
    assert out["b"] == [b"a", b"b"]
    assert set(parse_example(msg, keys=["b"])) == {"b"}


def test_example_duplicates_resolved_as_tensorflow():
    """What tf.io.parse_single_example (TF 2.21) does with these bytes, checked by running it
    (tests/test_tfrecord_tf.py repeats each case against TF itself)."""

    def ex(*entries: bytes) -> bytes:
        body = b"".join(b"\x0a" + bytes([len(e)]) + e for e in entries)
        return b"\x0a" + bytes([len(body)]) + body

    def entry(key: bytes, feature: bytes) -> bytes:
        return b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(feature)]) + feature

    one, two = b"\x1a\x03\x0a\x01\x01", b"\x1a\x03\x0a\x01\x02"
    assert parse_example(ex(entry(b"y", one), entry(b"y", two)))["y"].tolist() == [2]  # last
    assert parse_example(ex(entry(b"y", one), entry(b"y", b"")))["y"].tolist() == [1]  # non-empty
    assert "y" not in parse_example(ex(entry(b"y", b"")))  # an empty Feature is absent
    # 5 + 2**64 as a 10-byte varint wraps to 5; an 11-byte varint is refused
    varint = b"\x85" + b"\x80" * 8 + b"\x02"
    wrap = b"\x1a\x0c\x0a\x0a" + varint
    assert parse_example(ex(entry(b"y", wrap)))["y"].tolist() == [5]
    with pytest.raises(WireError, match="longer than 10 bytes"):
        parse_example(ex(entry(b"y", b"\x1a\x0d\x0a\x0b" + b"\xff" * 10 + b"\x01")))
    for bad in (
        ex(b"\x0a\x01y" + b"\x12\x05" + one + b"\x12\x05" + two),  # one entry, two values
        ex(entry(b"y", one + two)),  # a Feature with two lists (TF reads the first)
        ex(entry(b"y", b"\x1a\x06\x0a\x01\x01\x0a\x01\x02")),  # two packed runs
        ex(entry(b"y", b"\x1a\x05\x08\x07\x0a\x01\x08")),  # unpacked then packed (TF: error)
        ex(entry(b"y", b"\x22\x00")),  # unknown Feature kind
    ):
        with pytest.raises(WireError):
            parse_example(bad)


def test_example_round_trip_and_sparse():
    feats = {
        "image/encoded": b"\xff\xd8" + bytes(range(256)) * 40,
        "image/class/label": 1000,
        "image/object/bbox/xmin": np.array([0.1, 0.25], np.float32),
        "neg": np.array([-1, -(2**63), 2**63 - 1]),
        "text": "clé",
        "empty": np.zeros(0, np.int64),
    }
    buf = build_example(feats)
    out = parse_example(buf)
    assert out["image/encoded"] == [feats["image/encoded"]]
    assert out["image/class/label"].tolist() == [1000]
    assert out["image/object/bbox/xmin"].tolist() == [np.float32(0.1), 0.25]
    assert out["neg"].tolist() == [-1, -(2**63), 2**63 - 1]
    assert out["text"] == ["clé".encode()] and out["empty"].tolist() == []
    reads = []

    def read(pos, n):
        reads.append(n)
        return buf[pos : pos + n]

    sparse = parse_example_sparse(read, len(buf), ["image/class/label"])
    assert sparse["image/class/label"].tolist() == [1000]
    assert sum(reads) < len(feats["image/encoded"])  # jumped over the image bytes


# ---- corruption -----------------------------------------------------------------------------


def _three_records(tmp_path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "train-00017-of-01024"
    _write_shard(path, [1, 2, 3])
    return path, build_index(path)


def test_flipped_data_byte_names_file_and_offset(tmp_path, caplog):
    path, index = _three_records(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[index[1, 0] + 12 + 40] ^= 0x01  # inside record 1's data
    path.write_bytes(bytes(raw))
    with pytest.raises(
        UserError, match=rf"corrupt record 1 in {path} \(data CRC mismatch at byte {index[1, 0]}\)"
    ):
        list(read_records(path))
    reader = TFRecordReader(path, skip_corrupt=True)
    got = [parse_example(r)["image/class/label"][0] for r in reader]
    assert got == [1, 3] and [c.offset for c in reader.corrupt] == [index[1, 0]]
    assert len(list(read_records(path, verify_data=False))) == 3
    # the map-style dataset: error names shard and offset; skip_corrupt returns the next record
    ds = TFRecordImageDataset([path])
    with pytest.raises(UserError, match=rf"{path} \(data CRC mismatch at byte {index[1, 0]}\)"):
        ds[1]
    ds = TFRecordImageDataset([path], skip_corrupt=True)
    assert [ds[i][1] for i in range(3)] == [1, 3, 3]
    assert f"skipping corrupt record 1 in {path} (data CRC mismatch" in caplog.text


def test_flipped_length_byte_stops_the_file(tmp_path):
    path, index = _three_records(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[index[1, 0]] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=rf"{path} \(length CRC mismatch at byte {index[1, 0]}\)"):
        list(read_records(path))
    reader = TFRecordReader(path, skip_corrupt=True)
    assert len(list(reader)) == 1 and reader.corrupt[0].record == 1


def test_truncated_shard(tmp_path):
    path, index = _three_records(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 10)  # inside the data of record 2
    msg = rf"corrupt record 2 in {path} \(truncated data .*file ends at byte {size - 10}\) at byte {index[2, 0]}"
    with pytest.raises(UserError, match=msg):
        list(read_records(path))
    with pytest.raises(UserError, match=msg):
        TFRecordImageDataset([path])
    reader = TFRecordReader(path, skip_corrupt=True)
    assert len(list(reader)) == 2 and len(reader.corrupt) == 1
    assert len(TFRecordImageDataset([path], skip_corrupt=True)) == 2
    with open(path, "r+b") as f:
        f.truncate(index[2, 0] + 5)  # inside the header
    with pytest.raises(
        UserError, match=rf"truncated header \(5 of 12 bytes\) at byte {index[2, 0]}"
    ):
        list(read_records(path))


def test_undecodable_image(tmp_path):
    path = tmp_path / "bad"
    with TFRecordWriter(path) as w:
        w.write(build_example({"image/encoded": _jpeg(0), "image/class/label": 1}))
        w.write(build_example({"image/encoded": b"not a jpeg", "image/class/label": 2}))
    offset = build_index(path)[1, 0]
    with pytest.raises(
        UserError, match=rf"record 1 in {path} \(undecodable image/encoded .* at byte {offset}\)"
    ):
        TFRecordImageDataset([path])[1]
    ds = TFRecordImageDataset([path], skip_corrupt=True)
    assert ds[1][1] == 1  # wrapped around to record 0
    # from a DataLoader worker the error keeps its type (the CLI turns UserError into exit 2)
    loader = torch.utils.data.DataLoader(
        TFRecordImageDataset([path]), batch_size=None, num_workers=1
    )
    with pytest.raises(UserError, match=rf"record 1 in {path} \(undecodable"):
        list(loader)


# ---- finding shards and the index cache -----------------------------------------------------


def test_find_shards_layouts(tmp_path):
    arbitrary = tmp_path / "arb"
    arbitrary.mkdir()
    for name in ["part_b.tfrecord", "part_a.tfrecord", "zz"]:
        _write_shard(arbitrary / name, [1])
    (arbitrary / "labels.txt").write_text("x")
    (arbitrary / ".hidden").write_bytes(b"")
    TFRecordImageDataset(find_shards(str(arbitrary), "train"))  # writes sidecars next to shards
    assert sidecar_path(arbitrary / "zz").exists()  # hidden: TF's train-* globs miss it
    assert sidecar_path(arbitrary / "zz").name.startswith(".")
    expect = [arbitrary / n for n in ["part_a.tfrecord", "part_b.tfrecord", "zz"]]
    assert find_shards(str(arbitrary), "train") == expect
    assert find_shards(str(arbitrary), None) == expect
    assert find_shards(str(arbitrary / "part_*")) == expect[:2]

    slim = tmp_path / "slim"
    slim.mkdir()
    for split, n in [("train", 3), ("validation", 2)]:
        for k in reversed(range(n)):
            _write_shard(slim / f"{split}-{k:05d}-of-{n:05d}", [1])
    assert [p.name for p in find_shards(str(slim), "val")] == [
        "validation-00000-of-00002",
        "validation-00001-of-00002",
    ]
    assert [p.name for p in find_shards(str(slim), "train")][-1] == "train-00002-of-00003"
    with pytest.raises(
        UserError,
        match=rf"no 'test' shards in {slim} \(files named after: train, validation; 0 named "
        r"after no split\); set data.val_pattern",
    ):
        find_shards(str(slim), "test")
    with pytest.raises(UserError, match="no TFRecord files match the pattern"):
        find_shards(str(tmp_path / "nothing-*"))
    with pytest.raises(UserError, match="does not exist"):
        find_shards(str(tmp_path / "missing"), "train")


def test_index_cache_is_invalidated_by_a_changed_shard(tmp_path):
    path = tmp_path / "s"
    _write_shard(path, [1, 2])
    assert len(TFRecordImageDataset([path])) == 2
    assert sidecar_path(path).exists()
    extra = tmp_path / "extra"
    _write_shard(extra, [3])
    with open(path, "ab") as f:
        f.write(extra.read_bytes())
    assert len(TFRecordImageDataset([path])) == 3


def test_index_cache_falls_back_to_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "s"
    _write_shard(path, [1, 2])
    sidecar_path(path).mkdir()  # the sidecar cannot be written (as in a read-only folder)
    assert len(TFRecordImageDataset([path])) == 2
    cached = list((tmp_path / "cache" / "classzoo" / "tfrecord-index").iterdir())
    assert len(cached) == 1
    assert len(TFRecordImageDataset([path])) == 2  # read back from the cache


# ---- datasets -------------------------------------------------------------------------------


def test_dataset_images_labels_offset(tmp_path):
    data = foolbox_data()
    files = sorted(data.glob("imagenet_*.jpg"))[:6]
    labels = [int(f.stem.split("_")[-1]) + 1 for f in files]  # slim: 1-based
    for k, part in enumerate([files[:4], files[4:]]):
        with TFRecordWriter(tmp_path / f"validation-{k:05d}-of-00002") as w:
            for f in part:
                label = int(f.stem.split("_")[-1]) + 1
                w.write(
                    build_example({"image/encoded": f.read_bytes(), "image/class/label": label})
                )
    shards = find_shards(str(tmp_path), "validation")
    ds = TFRecordImageDataset(shards, label_offset=1)
    assert len(ds) == 6
    assert ds.targets.tolist() == [lab - 1 for lab in labels]
    for i in (0, 5, -1):
        img, label = ds[i]
        assert label == labels[i] - 1
        assert np.array_equal(np.asarray(img), np.asarray(Image.open(files[i]).convert("RGB")))
    with pytest.raises(IndexError):
        ds[6]
    ds.check_labels(1000)
    with pytest.raises(UserError, match="has no feature 'image/class/label_x'"):
        TFRecordImageDataset(shards, label_key="image/class/label_x")[0]


def test_label_policy():
    check_labels(1, 1000, 1000, 1, "x")
    check_labels(1, 1000, 1001, 0, "x")
    with pytest.raises(
        UserError,
        match="label 1000 in x is out of range for 1000 logits with label_offset 0.*label_offset 1",
    ):
        check_labels(1, 1000, 1000, 0, "x")
    with pytest.raises(UserError, match="label 0 .*label_offset 1.*start at 0"):
        check_labels(0, 999, 1000, 1, "x")
    # slim labels 1..1000 with background records (0): an offset of 0 would shift the others
    with pytest.raises(UserError, match="label 0 is slim's background.*model.num_classes=1001"):
        check_labels(0, 1000, 1000, 1, "x")


# ---- tools ----------------------------------------------------------------------------------


def test_inspect_counts_each_split_of_a_folder_apart(tmp_path, capsys):
    """A folder with train-* and validation-* shards (slim's layout) was one total of both."""
    write_imagefolder(tmp_path / "img" / "train", {"a": 3, "b": 2}, seed=1)
    write_imagefolder(tmp_path / "img" / "validation", {"a": 1, "b": 1}, seed=2)
    out = str(tmp_path / "records")
    for split, shards in (("train", "2"), ("validation", "1")):
        args = [str(tmp_path / "img" / split), out, "--split", split, "--shards", shards]
        assert main(["data", "to-tfrecord", *args]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", out]) == 0
    text = capsys.readouterr().out
    assert "train: 5 records in 2 of the shards" in text
    assert "validation: 2 records in 1 of the shards" in text
    assert main(["data", "inspect", "--json", out]) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    assert splits == {
        "train": {"shards": 2, "records": 5},
        "validation": {"shards": 1, "records": 2},
    }


def test_to_tfrecord_keeps_camera_jpegs_and_reads_16_bit_images_as_tf(tmp_path, capsys):
    """A camera JPEG with an MPF block (PIL's format "MPO") was re-encoded (up to 17 levels
    off), where slim keeps every JPEG's bytes; a 16-bit PNG was clipped to white where TF's
    decode_png keeps each value's high byte (tests/test_decode.py)."""
    src = tmp_path / "img" / "a"
    src.mkdir(parents=True)
    photo = Image.open(sorted(foolbox_data().glob("imagenet_*.jpg"))[0]).convert("RGB")
    photo.save(src / "cam.jpg", "MPO", save_all=True, append_images=[photo.resize((64, 64))])
    assert Image.open(src / "cam.jpg").format == "MPO"
    grey = (np.arange(128 * 128, dtype=np.uint16).reshape(128, 128) * 4).astype(np.uint16)
    Image.fromarray(grey).save(src / "g16.png")
    out = tmp_path / "records"
    assert main(["data", "to-tfrecord", str(tmp_path / "img"), str(out), "--shards", "1"]) == 0
    assert "1 re-encoded as JPEG quality 100" in capsys.readouterr().out
    stored = {}
    for rec in read_records(next(out.glob("train-*"))):
        ex = parse_example(rec)
        stored[ex["image/filename"][0].decode()] = ex["image/encoded"][0]
    assert stored["cam.jpg"] == (src / "cam.jpg").read_bytes()
    pixels = np.asarray(Image.open(io.BytesIO(stored["g16.png"])).convert("L"), dtype=float)
    assert abs(pixels.mean() - (grey >> 8).mean()) < 1.0  # clipped: 255 nearly everywhere


def test_imagefolder_to_tfrecord_and_inspect(tmp_path):
    data = foolbox_data()
    files = sorted(data.glob("imagenet_*.jpg"))[:5]
    src = tmp_path / "images"
    for cls, f in zip(["n02", "n01", "n01", "n03", "n02"], files):
        (src / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, src / cls / f.name)
    Image.open(files[0]).save(src / "n03" / "x.png")  # PNG: re-encoded as JPEG
    Image.open(files[1]).convert("CMYK").save(src / "n03" / "cmyk.jpg")  # CMYK: re-encoded
    out = tmp_path / "records"
    summary = imagefolder_to_tfrecord(
        src, out, shards=3, workers=2, split="train", synsets_text={"n01": "tench"}
    )
    assert summary["records"] == 7 and summary["classes"] == 3 and summary["reencoded"] == 2
    assert (out / "labels.txt").read_text() == "1:n01\n2:n02\n3:n03\n"  # slim's label file
    names = sorted(n for n in os.listdir(out) if n != "labels.txt")
    assert names == [f"train-{k:05d}-of-00003" for k in range(3)]
    assert summary["per_shard"] == [2, 2, 3]  # np.linspace(0, 7, 4).astype(int) = 0 2 4 7
    by_name = {}
    for name in names:
        for rec in read_records(out / name):
            ex = parse_example(rec)
            by_name[ex["image/filename"][0].decode()] = ex
    slim_keys = {  # build_imagenet_data.py _convert_to_example (no boxes given)
        "image/height",
        "image/width",
        "image/colorspace",
        "image/channels",
        "image/class/label",
        "image/class/synset",
        "image/class/text",
        "image/format",
        "image/filename",
        "image/encoded",
    }
    assert all(set(ex) == slim_keys for ex in by_name.values())
    for cls, f in zip(["n02", "n01", "n01", "n03", "n02"], files):
        ex = by_name[f.name]
        assert ex["image/encoded"][0] == f.read_bytes()  # original bytes kept
        assert ex["image/class/label"].tolist() == [{"n01": 1, "n02": 2, "n03": 3}[cls]]
        assert ex["image/class/synset"] == [cls.encode()]
        w, h = Image.open(f).size
        assert ex["image/height"].tolist() == [h] and ex["image/width"].tolist() == [w]
    assert by_name[files[1].name]["image/class/text"] == [b"tench"]
    for name in ("x.png", "cmyk.jpg"):
        im = Image.open(io.BytesIO(by_name[name]["image/encoded"][0]))
        assert im.format == "JPEG" and im.mode == "RGB"

    info = inspect_tfrecords(str(out))
    assert info["total_records"] == 7 and [s["records"] for s in info["shards"]] == [2, 2, 3]
    assert info["classes"] == 3 and (info["label_min"], info["label_max"]) == (1, 3)
    sizes = [Image.open(f).size for f in files] + [Image.open(files[0]).size] * 2
    assert info["width"]["max"] == max(s[0] for s in sizes)
    assert info["height"]["min"] == min(s[1] for s in sizes)
    assert info["corrupt_count"] == 0
    # damage one shard: inspect lists it instead of raising
    shard = out / names[2]
    raw = bytearray(shard.read_bytes())
    raw[-100] ^= 0xFF
    shard.write_bytes(bytes(raw))
    info = inspect_tfrecords(str(out))
    assert info["corrupt_count"] == 1 and info["corrupt"][0]["shard"] == str(shard)
    assert info["corrupt"][0]["reason"] == "data CRC mismatch"
    text = format_inspect(info)
    assert "7 records, 3 classes (labels 1..3)" in text and "data CRC mismatch" in text
