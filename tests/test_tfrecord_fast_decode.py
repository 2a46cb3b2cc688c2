"""TFRecord records reach the pipelines undecoded, as ImageFolder files do: the same JPEG bytes
give the same samples through either source (training and eval), a large JPEG with a small crop
is decoded at a reduced DCT scale (libjpeg's output size, observed), and a record that cannot be
decoded is still named by shard, record and byte offset (or skipped with skip_corrupt).

Outside truths: the JPEG bytes themselves (classzoo data to-tfrecord keeps them, the test
checks), the ImageFolder path's samples (the same pipeline on the same bytes), the size
libjpeg-turbo decodes to, and the record offsets of the written shard."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from classzoo.cli import main
from classzoo.data import decode
from classzoo.data.imagefolder import ImageFolderDataset
from classzoo.data.sampling import SeededDataset
from classzoo.data.tfrecord_dataset import TFRecordImageDataset
from classzoo.data.transforms import EvalPreprocess, TrainAugment, build_transform
from classzoo.errors import UserError
from classzoo.formats.example import build_example, parse_example
from classzoo.formats.tfrecord import TFRecordWriter, build_index, read_records

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _photos() -> list[bytes]:
    foolbox = pytest.importorskip("foolbox")  # only for its data folder of real ImageNet JPEGs
    folder = Path(os.path.dirname(foolbox.__file__)) / "data"
    return [p.read_bytes() for p in sorted(folder.glob("imagenet_*.jpg"))]


def _jpeg(data: bytes, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.BICUBIC).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder_and_shards(tmp_path_factory) -> tuple[Path, Path]:
    """An ImageFolder of 6 photos (2048x1536 and 500x375 JPEGs, 2 classes) and the shards
    ``classzoo data to-tfrecord`` writes from it."""
    tmp = tmp_path_factory.mktemp("fast_decode")
    root = tmp / "train"
    for k, data in enumerate(_photos()[:6]):
        (root / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        size = (2048, 1536) if k < 3 else (500, 375)
        (root / f"c{k % 2}" / f"{k}.jpg").write_bytes(_jpeg(data, size))
    out = tmp / "shards"
    assert (
        main(["data", "to-tfrecord", str(root), str(out), "--shards", "2", "--workers", "1"]) == 0
    )
    return root, out


def _pipeline(preset: str, train: bool):
    size = {"timm": 224, "vgg": 224, "inception": 299}[preset]
    pre = EvalPreprocess(preset, size, 0.875, "bilinear", MEAN, STD)
    return build_transform(pre, train=train, aug=TrainAugment() if preset == "timm" else None)


def _record_to_file(folder: ImageFolderDataset, shards: TFRecordImageDataset) -> list[int]:
    """For each record, the ImageFolder index of the file with the same bytes."""
    by_bytes = {Path(f).read_bytes(): i for i, f in enumerate(folder.files)}
    images = [
        parse_example(r, ("image/encoded",))["image/encoded"][0]
        for shard in shards.shards
        for r in read_records(shard)
    ]
    return [by_bytes[data] for data in images]  # KeyError: the bytes were not kept


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return torch.equal(a, b)


@pytest.mark.parametrize(
    ("preset", "train"),
    [("timm", True), ("vgg", True), ("inception", True), ("vgg", False), ("inception", False)],
)
def test_tfrecord_and_imagefolder_give_the_same_samples(folder_and_shards, preset, train):
    """Same JPEG bytes, same per-sample seed -> the same worker-stage sample (bit for bit),
    whether the bytes came from a file or a record; labels agree (slim's 1-based labels with
    label_offset 1)."""
    root, out = folder_and_shards
    pipe = _pipeline(preset, train)
    folder = ImageFolderDataset(root, transform=pipe.sample)
    shards = TFRecordImageDataset(str(out), transform=pipe.sample, label_offset=1)
    files = _record_to_file(folder, shards)
    assert sorted(files) == list(range(len(folder)))
    for record, file in enumerate(files):
        for seed in (3, 12345):
            got, label = SeededDataset(shards)[(record, seed)]
            want, want_label = SeededDataset(folder)[(file, seed)]
            assert label == want_label
            assert _equal(got, want), (preset, train, record, seed)


class _DecodedSizes:
    """A pass-through spy on libjpeg-turbo's decode: the real decode runs, its output size is
    recorded (what the pipeline asked libjpeg for)."""

    def __init__(self, real):
        self.real, self.shapes = real, []

    def __call__(self, *args, **kwargs):
        out = self.real(*args, **kwargs)
        self.shapes.append(out.shape[:2])
        return out


class _WindowDenominators:
    """A pass-through spy on the JPEG window decoder: the denominators it was asked for."""

    def __init__(self, real):
        self.real, self.denoms = real, []

    def __call__(self, data, denom, *args):
        self.denoms.append(denom)
        return self.real(data, denom, *args)


@pytest.mark.parametrize("windows", [False, True], ids=["whole", "window"])
@pytest.mark.parametrize("preset", ["timm", "vgg"])
def test_large_record_is_decoded_at_reduced_scale(folder_and_shards, monkeypatch, preset, windows):
    """A 2048x1536 JPEG in a record whose crop is at least twice the output on both sides
    (timm: area 30-100 %, so sides >= 840 px for 224; vgg: the image resized to a short side
    of 256-512, a 224 crop of that) is decoded by libjpeg at 1/2..1/8 of its size, whole or
    (data/jpeg_region.py) only the window its crop reads."""
    if windows and not decode.jpeg_region.available():
        pytest.skip(f"the JPEG window decoder is {decode.jpeg_region.state()}")
    if not windows:
        monkeypatch.setattr(decode.jpeg_region, "available", lambda: False)
    root, out = folder_and_shards
    if preset == "timm":
        pre = EvalPreprocess("timm", 224, 0.875, "bilinear", MEAN, STD)
        pipe = build_transform(pre, train=True, aug=TrainAugment(scale=(0.3, 1.0)))
    else:
        pipe = _pipeline("vgg", True)
    shards = TFRecordImageDataset(str(out), transform=pipe.sample, label_offset=1)
    big = [i for i in range(len(shards)) if _record_hw(shards, i) == (1536, 2048)]
    assert len(big) == 3
    if windows:
        spy = _WindowDenominators(decode.jpeg_region.decode_window)
        monkeypatch.setattr(decode.jpeg_region, "decode_window", spy)
        for i in big:
            SeededDataset(shards)[(i, 7)]
        assert len(spy.denoms) == 3 and set(spy.denoms) <= {2, 4, 8}, spy.denoms
        return
    spy = _DecodedSizes(simplejpeg.decode_jpeg)
    monkeypatch.setattr(decode.simplejpeg, "decode_jpeg", spy)
    for i in big:
        SeededDataset(shards)[(i, 7)]
    assert len(spy.shapes) == 3
    for h, w in spy.shapes:
        assert (h, w) in [(1536 // d, 2048 // d) for d in (2, 4, 8)], (h, w)


def _record_hw(shards: TFRecordImageDataset, i: int) -> tuple[int, int]:
    path, record, _ = shards.where(i)
    data = list(read_records(path))[record]
    return decode.jpeg_size(parse_example(data, ("image/encoded",))["image/encoded"][0])


def _corrupt_shard(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "train-00000-of-00001"
    good = _jpeg(_photos()[0], (320, 240))
    bad = good[: len(good) // 2]  # a truncated JPEG: the header reads, the pixels do not
    with TFRecordWriter(path) as w:
        for data, label in ((good, 1), (bad, 2), (good, 3)):
            w.write(build_example({"image/encoded": data, "image/class/label": label}))
    return path, int(build_index(path)[1, 0])


@pytest.mark.parametrize("preset", ["timm", "vgg", "inception"])
def test_undecodable_record_is_named_or_skipped(tmp_path, caplog, preset):
    """The decode now runs inside the pipeline: its failure is still a one-line error naming
    shard, record and byte offset, and skip_corrupt still moves on to the next record."""
    path, offset = _corrupt_shard(tmp_path)
    pipe = _pipeline(preset, True)
    with pytest.raises(UserError, match=rf"record 1 in {path} \(undecodable image/encoded .* at byte {offset}\)"):  # fmt: skip
        SeededDataset(TFRecordImageDataset([path], transform=pipe.sample))[(1, 0)]
    ds = SeededDataset(TFRecordImageDataset([path], transform=pipe.sample, skip_corrupt=True))
    assert ds[(1, 0)][1] == 3  # record 2 instead
    assert f"skipping corrupt record 1 in {path} (undecodable image/encoded" in caplog.text
    loader = torch.utils.data.DataLoader(
        TFRecordImageDataset([path], transform=pipe.sample), batch_size=None, num_workers=1
    )
    with pytest.raises(UserError, match=rf"record 1 in {path} \(undecodable"):
        list(loader)  # from a worker the error keeps its type (the CLI: exit code 2)


def test_reduced_scale_differs_from_full_decode_only_by_the_scaled_idct(folder_and_shards):
    """The record's sample is not the full-resolution decode's (so the scaled decode really
    ran) but the same picture: the scaled IDCT averages the pixels that TF's legacy bilinear
    resize (no antialiasing) would pick one of, a few grey levels on a detailed photo (6.3 on
    the first, measured), not the tens a wrong crop or scale gives."""
    root, out = folder_and_shards
    pipe = _pipeline("vgg", True)
    shards = TFRecordImageDataset(str(out), transform=pipe.sample, label_offset=1)
    for i in range(len(shards)):
        if _record_hw(shards, i) != (1536, 2048):
            continue
        path, record, _ = shards.where(i)
        data = parse_example(list(read_records(path))[record], ("image/encoded",))
        full = np.asarray(decode.decode_tf(data["image/encoded"][0], "x"))
        got = SeededDataset(shards)[(i, 11)][0]
        torch.default_generator.manual_seed(11)
        whole = pipe.sample(full)
        d = (got.float() - whole.float()).abs()  # uint8 levels
        assert 0 < float(d.mean()) < 10.0
