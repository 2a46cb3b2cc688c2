"""The DALI training loader (data/dali_loader.py) against classzoo's torch path.

(a) order: DALI's labels per batch are the torch DataLoader's for the same sampler state
(epoch, resume position, rank), and the per-image random parameters are the same;
(b) augmentation statistics: the crop windows DALI applies, read back from images whose pixels
encode their coordinates, against torchvision's RandomResizedCrop draws (KS tests, 2,048
draws), flip rates, vgg's short-side distribution;
(c) pixels: for the same seeds DALI's output is the torch worker stage's (full-scale decode)
within the tolerances measured below, and a deterministic setting (centre crop, no flip)
against the torch loader itself.

Run ``python tests/test_dali_loader.py`` for a rough CPU-time comparison with the torch path.
"""

from __future__ import annotations

import io
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classzoo.data.decode import decode_pil, decode_tf
from classzoo.data.imagefolder import ImageFolderDataset
from classzoo.data.sampling import SeededDataset, TrainBatchSampler
from classzoo.data.transforms import EvalPreprocess, TrainAugment, build_transform
from classzoo.errors import UserError

try:
    import nvidia.dali  # noqa: F401

    HAVE_DALI = True
except ImportError:
    HAVE_DALI = False
needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="nvidia.dali not installed (the dali extra)")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _pre(preset: str, size: int) -> EvalPreprocess:
    return EvalPreprocess(preset, size, 0.875, "bilinear", MEAN, STD)


def _photos() -> list[Image.Image]:
    foolbox = pytest.importorskip("foolbox")  # its data folder: real ImageNet JPEGs
    folder = Path(os.path.dirname(foolbox.__file__)) / "data"
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("imagenet_*.jpg"))][:12]


def _photo_folder(root: Path, sizes=((160, 120), (120, 200), (224, 224))) -> Path:
    """3 classes of real photos, re-encoded (quality 90, 4:2:0) at a few sizes (w, h)."""
    for k, img in enumerate(_photos()):
        folder = root / f"class{k % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        for s, (w, h) in enumerate(sizes):
            img.resize((w, h), Image.BICUBIC).save(folder / f"{k:02d}_{s}.jpg", quality=90)
    return root


def _dataset(root: Path, pre: EvalPreprocess, aug: TrainAugment | None = None):
    pipe = build_transform(pre, train=True, aug=aug)
    ds = ImageFolderDataset(root, pipe.sample)
    ds.decoder = "tf" if pre.preset != "timm" else "pil"
    return ds, pipe


def _loaders(ds, batch_size, epoch, start=0, rank=0, world=1, seed=7):
    from classzoo.data.dali_loader import dali_train_loader

    s_torch = TrainBatchSampler(len(ds), batch_size, rank, world, seed)
    s_dali = TrainBatchSampler(len(ds), batch_size, rank, world, seed)
    for s in (s_torch, s_dali):
        s.set_epoch(epoch, start)
    torch_loader = torch.utils.data.DataLoader(
        SeededDataset(ds), batch_sampler=s_torch, num_workers=0
    )
    return torch_loader, dali_train_loader(ds, s_dali, "cpu", num_threads=2), s_dali


def _split(x):
    """(HWC images, the other per-image parameters) of a collated batch; a planar batch
    (``image_chw``, NCHW) is viewed as NHWC."""
    if not isinstance(x, dict):
        return x, {}
    rest = {k: v for k, v in x.items() if k not in ("image", "image_chw")}
    return (x["image"] if "image" in x else x["image_chw"].permute(0, 2, 3, 1)), rest


# ---------------------------------------------------------------- (a) order and parameters


@needs_dali
@pytest.mark.parametrize("preset", ["timm", "vgg", "inception"])
@pytest.mark.parametrize(("epoch", "start", "rank", "world"), [(0, 0, 0, 1), (3, 10, 1, 2)])
def test_batches_follow_the_sampler(tmp_path, preset, epoch, start, rank, world):
    """Labels per batch, shapes, dtypes and the per-image colour parameters equal the torch
    loader's, from an epoch start and from a resume position on rank 1 of 2."""
    ds, _ = _dataset(_photo_folder(tmp_path), _pre(preset, 64))
    torch_loader, dali, _ = _loaders(ds, 5, epoch, start, rank, world)
    assert len(dali) == len(torch_loader) > 0
    n = 0
    for (xt, yt), (xd, yd) in zip(torch_loader, dali, strict=True):
        assert torch.equal(yt, yd)
        (it, et), (id_, ed) = _split(xt), _split(xd)
        assert it.shape == id_.shape and it.dtype == id_.dtype
        assert et.keys() == ed.keys() and all(torch.equal(et[k], ed[k]) for k in et)
        n += 1
    assert n == len(dali)


@needs_dali
@pytest.mark.parametrize("preset", ["timm", "vgg", "inception"])
def test_through_the_loops_prefetcher(tmp_path, preset):
    """As engine/loop.py consumes a loader: Prefetcher(loader, device, Pipeline.batch). The
    model inputs have the torch loader's labels, shape, dtype and memory layout, and are close
    to its values; the difference is mostly the torch loader's reduced-scale DCT decode (1/2
    here for most crops), which DALI does not do. Measured mean |diff| in grey levels: timm
    0.78, vgg 2.9, inception 2.1 (at full scale DALI's levels are the torch stage's but for
    1-level roundings of under 2 % of values, test_slim_train_pixels_equal_tf_arithmetic)."""
    from classzoo.data.device import Prefetcher

    ds, pipe = _dataset(_photo_folder(tmp_path), _pre(preset, 48))
    torch_loader, dali, _ = _loaders(ds, 6, 2)
    unit = 127.5 if preset == "inception" else 1.0 if preset == "vgg" else 255 * STD[0]
    total, count = 0.0, 0
    pairs = zip(Prefetcher(torch_loader, "cpu", pipe.batch), Prefetcher(dali, "cpu", pipe.batch))
    for (xt, yt), (xd, yd) in pairs:
        assert torch.equal(yt, yd) and xt.shape == xd.shape and xt.dtype == xd.dtype
        assert xt.stride() == xd.stride()
        total, count = total + float((xt - xd).abs().sum()) * unit, count + xt.numel()
    assert count > 0 and total / count < 4.0, total / count


@needs_dali
def test_refuses_other_sources():
    from classzoo.data.dali_loader import dali_train_loader
    from classzoo.data.imagefolder import SyntheticDataset

    pipe = build_transform(_pre("timm", 32), train=True)
    ds = SyntheticDataset(8, 2, 32, pipe.sample)
    with pytest.raises(UserError, match="ImageFolder splits only, not SyntheticDataset"):
        dali_train_loader(ds, TrainBatchSampler(8, 4, 0, 1, 0), "cpu", 1)


@needs_dali
def test_abandoned_epoch_then_next_epoch(tmp_path):
    """An epoch left after one batch (a step limit, a stop) does not leak its queued batches
    into the next epoch; the loader object is reused as the training loop reuses it."""
    ds, _ = _dataset(_photo_folder(tmp_path), _pre("timm", 32))
    torch_loader, dali, sampler = _loaders(ds, 4, 0)
    next(iter(dali))
    for s in (sampler, torch_loader.batch_sampler):
        s.set_epoch(1)
    got = [y for _, y in dali]
    want = [y for _, y in torch_loader]
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    for s in (sampler, torch_loader.batch_sampler):
        s.set_epoch(2)
    assert [y.tolist() for _, y in dali] == [y.tolist() for _, y in torch_loader]


# ---------------------------------------------------------------- (c) pixels


def _reference(stage, path: str, seed: int, tf_pixels: bool):
    """The torch worker stage on the decoded image (full-scale decode: the arithmetic the
    stage reproduces, without its reduced-scale DCT shortcut), seeded as SeededDataset."""
    data = Path(path).read_bytes()
    img = decode_tf(data, path) if tf_pixels else np.asarray(decode_pil(data, path))
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    out = stage(img)
    return _split({k: v[None] for k, v in out.items()} if isinstance(out, dict) else out[None])[0][
        0
    ]


def _pixel_diffs(ds, pipe, batch_size=6):
    """|DALI - reference| per image, in grey levels (both give uint8 levels)."""
    _, dali, sampler = _loaders(ds, batch_size, 1)
    order = [item for batch in sampler for item in batch]
    tf_pixels = ds.decoder == "tf"
    diffs = []
    images = torch.cat([_split(x)[0] for x, _ in dali])
    for (index, seed), got in zip(order, images, strict=True):
        ref = _reference(pipe.sample, ds.files[index], seed, tf_pixels)
        assert got.dtype == ref.dtype == torch.uint8
        diffs.append((got.float() - ref.float()).abs())
    return torch.stack(diffs)


@needs_dali
@pytest.mark.parametrize("preset", ["vgg", "inception"])
def test_slim_train_pixels_equal_tf_arithmetic(tmp_path, preset):
    """Random crop, flip (and vgg's random short side) with the same seeds: DALI's TF1 legacy
    bilinear (ROI-shifted resize) on TF's IFAST-decoded pixels equals classzoo's TF-faithful
    stage. Before both round to levels they differed by at most 0.0044 grey levels (vgg) and
    2.1e-4 (inception); so a level differs by 1 only where the two fall on either side of a
    half level, or on a half level itself (an upscaled crop's lerp weight 0.5 between two
    levels: the two break such ties differently). Measured: 0.02 % of values (vgg), 0.7 %
    (inception)."""
    ds, pipe = _dataset(_photo_folder(tmp_path), _pre(preset, 64))
    d = _pixel_diffs(ds, pipe)
    assert float(d.max()) <= 1.0 and float((d > 0).float().mean()) < 0.02, float(d.max())


@needs_dali
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_timm_train_pixels_close_to_torch_stage(tmp_path, interpolation):
    """timm RandomResizedCrop + flip with the same seeds: DALI's antialiased resize against
    torch's uint8 antialiased interpolate of the same crop (PIL's filters). They differ at the
    crop's border (DALI clamps the kernel, PIL renormalises it) and, for bicubic, by DALI's
    tabulated kernel. Measured: bilinear max 12 levels at the border, interior <= 1, mean 0.17;
    bicubic max 8, interior max 6 (0.007 % of pixels over 2), mean 0.18; nearest exact."""
    aug = TrainAugment(interpolation=interpolation, color_jitter=0.0)
    ds, pipe = _dataset(_photo_folder(tmp_path), _pre("timm", 64), aug)
    d = _pixel_diffs(ds, pipe)
    inner = d[:, 2:-2, 2:-2]
    if interpolation == "nearest":
        assert float(d.max()) == 0.0
        return
    over = float((inner > (1 if interpolation == "bilinear" else 2)).float().mean())
    assert float(d.mean()) < 0.3 and float(d.max()) <= 16 and over < 1e-3, (d.mean(), d.max(), over)


@needs_dali
@pytest.mark.parametrize("size", [48, 112])
def test_deterministic_setting_against_timm(tmp_path, size):
    """scale=(1, 1), ratio=(1, 1), no flip (RandomResizedCrop's fallback: the centre square):
    DALI's batch through the split's Pipeline.batch against timm's own transform (PIL decode,
    crop, resize, ToTensor, Normalize), in grey levels. Measured: max 16 / 11, mean 0.17 / 0.18
    (at 48 / 112 px). The torch loader, which decodes at 1/2 or 1/4 scale where the crop
    allows, measured max 28 / 59, mean 1.96 / 1.14 against the same reference."""
    from timm.data import create_transform

    aug = TrainAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, color_jitter=0.0)
    ds, pipe = _dataset(_photo_folder(tmp_path), _pre("timm", size), aug)
    _, dali, sampler = _loaders(ds, 8, 0)
    order = [index for batch in sampler for index, _ in batch]
    ref = create_transform(size, is_training=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,
                           color_jitter=None, interpolation="bilinear", mean=MEAN, std=STD)  # fmt: skip
    want = torch.stack([ref(decode_pil(Path(ds.files[i]).read_bytes(), "x")) for i in order])
    got = torch.cat([pipe.batch(x) for x, _ in dali])
    d = (got - want).abs() * torch.tensor(STD).view(1, 3, 1, 1) * 255
    assert float(d.max()) <= 20 and float(d.mean()) < 0.3, (float(d.max()), float(d.mean()))


# ---------------------------------------------------------------- (b) statistics


def _coordinate_folder(root: Path, n: int, w: int = 256, h: int = 192) -> Path:
    """``n`` copies of one lossless image whose red channel is x and green channel is y."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx, yy, np.zeros_like(xx)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    folder = root / "only"
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"{i:04d}.png").write_bytes(buf.getvalue())
    return root


def _windows(images: torch.Tensor, size: int) -> np.ndarray:
    """(x0, y0, w, h, flipped) of each output's source window, from a line fitted to the
    interior of the coordinate ramps: a normalised filter keeps a linear ramp linear, value
    ``x0 + (k + .5) * w / size - .5`` at output column k."""
    k = np.arange(2, size - 2)
    x = images.float().numpy()
    out = []
    for img in x:
        (ax, bx), (ay, by) = (
            np.polyfit(k, img[2:-2, 2:-2, 0].mean(0), 1),
            np.polyfit(k, img[2:-2, 2:-2, 1].mean(1), 1),
        )
        flipped = ax < 0
        if flipped:  # column k shows source column size - 1 - k
            bx, ax = bx + ax * (size - 1), -ax
        out.append((bx - 0.5 * ax + 0.5, by - 0.5 * ay + 0.5, ax * size, ay * size, flipped))
    return np.array(out)


def _eight_epochs(ds) -> torch.Tensor:
    """DALI's batches of 8 epochs of ``ds`` (2,048 crops of a 256-image folder)."""
    _, dali, sampler = _loaders(ds, 64, 0)
    images = []
    for epoch in range(8):
        sampler.set_epoch(epoch)
        images += [x for x, _ in dali]
    return torch.cat(images)


@needs_dali
def test_timm_crop_statistics_match_torchvision(tmp_path):
    """2,048 crop windows read back from DALI's outputs against 2,048 independent draws of
    torchvision's RandomResizedCrop.get_params (scale (0.08, 1), ratio (3/4, 4/3)) on the same
    256 x 192 image: area fraction and aspect ratio by two-sample KS test (p > 0.01), flip
    rate 0.5 (binomial, p > 0.01)."""
    from scipy import stats
    from torchvision.transforms import RandomResizedCrop

    size, w, h = 32, 256, 192
    aug = TrainAugment(interpolation="bilinear", color_jitter=0.0)
    ds, _ = _dataset(_coordinate_folder(tmp_path, 256, w, h), _pre("timm", size), aug)
    win = _windows(_eight_epochs(ds), size)
    torch.manual_seed(123)  # get_params draws from the global generator
    shape_only = torch.zeros(3, h, w)
    ref = np.array(
        [RandomResizedCrop.get_params(shape_only, (0.08, 1.0), (3 / 4, 4 / 3))[2:]
         for _ in range(len(win))]
    )  # fmt: skip
    area, ref_area = win[:, 2] * win[:, 3] / (w * h), ref[:, 0] * ref[:, 1] / (w * h)
    aspect, ref_aspect = win[:, 2] / win[:, 3], ref[:, 1] / ref[:, 0]
    assert len(win) == 2048
    assert stats.ks_2samp(area, ref_area).pvalue > 0.01
    assert stats.ks_2samp(aspect, ref_aspect).pvalue > 0.01
    assert stats.binomtest(int(win[:, 4].sum()), len(win), 0.5).pvalue > 0.01
    inside = (win[:, 0] > -1) & (win[:, 1] > -1) & (win[:, 0] + win[:, 2] < w + 1)
    assert inside.all() and (win[:, 1] + win[:, 3] < h + 1).all()


@needs_dali
def test_vgg_short_side_and_flip_statistics(tmp_path):
    """vgg train at 32 px: the short side is uniform over the integers [37, 73] (256 and 512
    scaled by 32/224), read back from the ramp's slope; flip rate 0.5; crops inside."""
    from scipy import stats

    size, w, h = 32, 256, 192
    ds, _ = _dataset(_coordinate_folder(tmp_path, 256, w, h), _pre("vgg", size))
    win = _windows(_eight_epochs(ds), size)
    side = np.rint(h * size / win[:, 3])  # the short side is h: h / new_h = ay
    lo, hi = round(256 * size / 224), round(512 * size / 224)
    assert side.min() >= lo and side.max() <= hi
    counts = np.bincount(side.astype(int) - lo, minlength=hi - lo + 1)
    assert stats.chisquare(counts).pvalue > 0.01
    assert stats.binomtest(int(win[:, 4].sum()), len(win), 0.5).pvalue > 0.01


# ---------------------------------------------------------------- refusals and errors


@needs_dali
@pytest.mark.parametrize(
    ("aug", "named"),
    [
        (TrainAugment(auto_augment="rand-m9-mstd0.5"), "data.auto_augment"),
        (TrainAugment(re_prob=0.25), "data.re_prob"),
        (TrainAugment(train_crop="none"), "data.train_crop=none"),
    ],
)
def test_refuses_what_it_cannot_reproduce(tmp_path, aug, named):
    from classzoo.data.dali_loader import dali_train_loader

    ds, _ = _dataset(_photo_folder(tmp_path), _pre("timm", 32), aug)
    with pytest.raises(UserError) as e:
        dali_train_loader(ds, TrainBatchSampler(len(ds), 4, 0, 1, 0), "cpu", 1)
    msg = str(e.value)
    assert named in msg and "data.loader: torch" in msg and "\n" not in msg


@needs_dali
@pytest.mark.parametrize("preset", ["timm", "vgg", "inception"])
def test_refuses_eval_preprocessing(tmp_path, preset):
    from classzoo.data.dali_loader import dali_train_loader

    pipe = build_transform(_pre(preset, 32), train=False)
    ds = ImageFolderDataset(_photo_folder(tmp_path), pipe.sample)
    with pytest.raises(UserError, match=r"training splits only\); use data.loader: torch"):
        dali_train_loader(ds, TrainBatchSampler(len(ds), 4, 0, 1, 0), "cpu", 1)


@needs_dali
def test_training_process_generators_untouched(tmp_path):
    """The draws run in the training process: its torch, random and numpy generators (dropout,
    the model's own draws) continue as if the loader had not run."""
    ds, _ = _dataset(_photo_folder(tmp_path), _pre("timm", 32))
    _, dali, _ = _loaders(ds, 4, 0)
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    want = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    for _ in dali:
        pass
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], want[0]) and got[1:] == want[1:]


def test_missing_dali_is_one_line(tmp_path, monkeypatch):
    from classzoo.data.dali_loader import dali_train_loader

    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import raises ImportError
    pipe = build_transform(_pre("timm", 32), train=True)
    ds = ImageFolderDataset(_coordinate_folder(tmp_path, 2), pipe.sample)
    with pytest.raises(UserError, match=r"pip install 'classzoo\[dali\]'"):
        dali_train_loader(ds, TrainBatchSampler(len(ds), 2, 0, 1, 0), "cpu", 1)


@needs_dali
def test_corrupt_jpeg_is_named(tmp_path):
    """A file with a valid JPEG header and garbage after it: DALI's failure is turned into one
    line naming the file (found by decoding the queued batches with PIL)."""
    root = _photo_folder(tmp_path)
    bad = sorted(root.glob("class1/*.jpg"))[0]
    data = bad.read_bytes()
    bad.write_bytes(data[:400] + bytes(200))
    ds, _ = _dataset(root, _pre("timm", 32))
    _, dali, _ = _loaders(ds, 4, 0)
    with pytest.raises(UserError, match=bad.name):
        for _ in dali:
            pass


@needs_dali
def test_unreadable_file_skipped_as_torch_path(tmp_path):
    """skip_corrupt: a file that is not an image is replaced by the next readable one, as
    ImageFolderDataset does: the same labels and parameters as the torch loader."""
    root = _photo_folder(tmp_path)
    (root / "class2" / "00_0.jpg").write_bytes(b"not an image")
    ds, _ = _dataset(root, _pre("timm", 32))
    ds.skip_corrupt = True
    torch_loader, dali, _ = _loaders(ds, 5, 0)
    for (xt, yt), (xd, yd) in zip(torch_loader, dali, strict=True):
        assert torch.equal(yt, yd)
        assert torch.equal(xt["jitter"], xd["jitter"])


@needs_dali
def test_classzoo_train_with_dali_through_the_cli(tmp_path):
    """``classzoo train --set data.loader=dali``: the run trains through the loop and records
    the loader; a setting DALI cannot reproduce is one line before the run folder exists."""
    import json
    import subprocess

    root = _photo_folder(tmp_path / "data" / "train")
    _photo_folder(tmp_path / "data" / "val")
    base = [
        sys.executable, "-m", "classzoo", "train", "--recipe", "gluon_resnet50_v1b",
        "--data-dir", str(tmp_path / "data"), "--max-steps", "2", "--amp", "off",
        "--set", "model.name=resnet10t", "--set", "data.image_size=32",
        "--set", "data.batch_size=4", "--set", "data.num_workers=1",
        "--set", "train.log_every=1", "--set", "data.loader=dali",
    ]  # fmt: skip
    out = tmp_path / "run"
    done = subprocess.run([*base, "--output-dir", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loader: dali" in (out / "resolved.yaml").read_text()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("kind") == "train"] == [1, 2]
    assert root.exists()
    refused = tmp_path / "refused"
    bad = [*base, "--output-dir", str(refused), "--set", "data.re_prob=0.25"]
    done = subprocess.run(bad, capture_output=True, text=True)
    assert done.returncode == 2 and "use data.loader: torch" in done.stderr
    assert len(done.stderr.strip().splitlines()[-1]) < 300 and not refused.exists()


# ---------------------------------------------------------------- rough CPU time


def _cpu_time(root: Path, preset: str, size: int, aug=None) -> tuple[float, float]:
    """Images per CPU second (process time, all threads) of the torch worker stage (in
    process) and of the DALI CPU pipeline, one epoch each after a warm-up epoch."""
    from classzoo.data.dali_loader import dali_train_loader

    ds, _ = _dataset(root, _pre(preset, size), aug)
    rates = []
    for make in (
        lambda s: torch.utils.data.DataLoader(SeededDataset(ds), batch_sampler=s),
        lambda s: dali_train_loader(ds, s, "cpu", num_threads=1),
    ):
        sampler = TrainBatchSampler(len(ds), 32, 0, 1, 0)
        loader = make(sampler)
        for _ in loader:
            pass
        sampler.set_epoch(1)
        t = time.process_time()
        for _ in loader:
            pass
        rates.append(len(ds) / (time.process_time() - t))
    return rates[0], rates[1]


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)  # one compute thread, as a DataLoader worker runs

    with tempfile.TemporaryDirectory() as d:
        root = _photo_folder(Path(d), sizes=((500, 375), (375, 500), (500, 333), (640, 480)))
        for preset, size in (("timm", 224), ("vgg", 224), ("inception", 299)):
            t, g = _cpu_time(root, preset, size)
            print(
                f"{preset:10s} torch {t:6.1f} img/CPU-s  dali {g:6.1f} img/CPU-s  ratio {g / t:.2f}"
            )
