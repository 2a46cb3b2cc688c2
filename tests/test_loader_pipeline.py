"""The two-stage pipelines (worker ``sample`` + device ``batch``) against timm / torchvision's own
transforms, the per-sample seeding of SeededDataset, and the pixel formula ``describe`` reports."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from torchvision.transforms import functional as F

from classzoo.data import decode
from classzoo.data.decode import EncodedImage, decode_pil, decode_tf
from classzoo.data.device import Prefetcher, sub_channels, to_device
from classzoo.data.imagefolder import ImageFolderDataset
from classzoo.data.sampling import SeededDataset, TrainBatchSampler
from classzoo.data.timm_pipeline import color_jitter, normalize
from classzoo.data.transforms import EvalPreprocess, TrainAugment, build_transform, describe

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TIMM = EvalPreprocess("timm", 224, 0.875, "bilinear", MEAN, STD)


def _jpegs() -> list[bytes]:
    foolbox = pytest.importorskip("foolbox")  # only for its data folder of real ImageNet JPEGs
    folder = Path(os.path.dirname(foolbox.__file__)) / "data"
    return [p.read_bytes() for p in sorted(folder.glob("imagenet_*.jpg"))][:8]


def _reencoded(data: bytes, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.BICUBIC).save(buf, "JPEG")
    return buf.getvalue()


def _seed(seed: int) -> None:
    """What SeededDataset does before loading a sample."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)


def test_timm_train_worker_stage_equals_timm_transform_pixels():
    """No jitter: our uint8 sample is timm's use_prefetcher transform (its own RNG draws, PIL
    crop + resize + flip) for the same seeds, random interpolation included, up to the 2 grey
    levels between torch's and PIL's antialiased uint8 resize kernels."""
    aug = TrainAugment(interpolation="random", color_jitter=0.0)
    pipe = build_transform(TIMM, train=True, aug=aug)
    ref = create_transform(224, is_training=True, interpolation="random", color_jitter=None,
                           use_prefetcher=True)  # fmt: skip
    for k, data in enumerate(_jpegs()):
        img = decode_pil(data, "x")
        _seed(k)
        ours = pipe.sample(img)
        _seed(k)
        theirs = ref(img).to(torch.int16)  # CHW uint8
        d = (ours.permute(2, 0, 1).to(torch.int16) - theirs).abs()
        assert int(d.max()) <= 2 and float(d.float().mean()) < 0.3  # a wrong draw: tens


def test_timm_train_with_jitter_close_to_timm_float_transform():
    """With colour jitter the crop, flip and factors are timm's (same draws); the jitter runs
    on the float batch (torchvision's tensor formulas) instead of PIL's uint8 ones."""
    pipe = build_transform(TIMM, train=True, aug=TrainAugment(interpolation="bilinear"))
    ref = create_transform(224, is_training=True, interpolation="bilinear", color_jitter=0.4)
    worst = 0.0
    for k, data in enumerate(_jpegs()):
        img = decode_pil(data, "x")
        _seed(100 + k)
        ours = pipe(img)
        _seed(100 + k)
        theirs = ref(img)
        d = (ours - theirs).abs() * torch.tensor(STD).view(3, 1, 1) * 255  # in grey levels
        worst = max(worst, float(d.mean()))
    assert worst < 1.5  # PIL rounds to uint8 after each op; a wrong draw gives tens of levels


def test_color_jitter_batch_equals_torchvision_per_image():
    x = torch.rand(5, 3, 20, 24)
    params = torch.tensor(
        [
            [0, 1, 2, 3, 0.7, 1.3, 0.6],
            [3, 2, 1, 0, 1.2, 0.8, 1.4],
            [1, 0, 3, 2, 0.9, 0.65, 1.1],
            [2, 3, 0, 1, 1.05, 1.35, 0.75],
            [0, 2, 3, 1, 0.6, 1.0, 1.39],
        ]
    )
    ours = color_jitter(x.clone(), params)
    torch.testing.assert_close(
        color_jitter(x.clone(), params, vectorised=True), ours, rtol=0, atol=0
    )
    fns = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for i in range(len(x)):
        ref = x[i]
        for op in params[i, :4].long().tolist():
            if op < 3:
                ref = fns[op](ref, float(params[i, 4 + op]))
        torch.testing.assert_close(ours[i], ref, rtol=0, atol=2e-7)


def test_timm_eval_equals_timm_transform_bit_for_bit():
    pipe = build_transform(TIMM, train=False)
    ref = create_transform(224, is_training=False, interpolation="bilinear", crop_pct=0.875)
    for data in _jpegs():
        torch.testing.assert_close(
            pipe(EncodedImage(data, "x")), ref(Image.open(io.BytesIO(data)).convert("RGB")),
            rtol=0, atol=0,
        )  # fmt: skip


@pytest.mark.parametrize("channels_last", [True, False])
def test_per_channel_batch_ops_are_numpys_arithmetic_in_either_layout(channels_last):
    """The batch stage's mean subtraction (vgg) and normalisation (timm) broadcast along rows
    of pixels on channels_last batches and per channel otherwise: numpy's float32 values bit
    for bit either way, in the layout they came in."""
    x = torch.randint(0, 256, (4, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator())
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    vgg_mean = (123.68, 116.779, 103.939)
    got = sub_channels(x, vgg_mean)
    np.testing.assert_array_equal(got.numpy(), x.numpy() - _per_channel(vgg_mean))
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    unit = x.to(torch.float32) / 255
    want = (unit.numpy() - _per_channel(MEAN)) / _per_channel(STD)
    np.testing.assert_array_equal(normalize(unit, MEAN, STD).numpy(), want)


def _per_channel(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)[None, :, None, None]


@pytest.mark.parametrize("preset", ["vgg", "inception"])
def test_slim_eval_from_bytes_equals_decoded_path(preset):
    pre = EvalPreprocess(preset, 224 if preset == "vgg" else 299, 0.875, "bilinear", MEAN, STD)
    pipe = build_transform(pre, train=False)
    from classzoo.data.tf_presets import build_tf_transform

    ref = build_tf_transform(preset, train=False)
    for data in _jpegs()[:3]:
        torch.testing.assert_close(pipe(EncodedImage(data, "x")), ref(decode_tf(data, "x")),
                                   rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("preset", ["timm", "vgg", "inception"])
def test_describe_steps_by_numpy_give_the_model_input(preset):
    size = 299 if preset == "inception" else 224
    pre = EvalPreprocess(preset, size, 0.875, "bilinear", MEAN, STD)
    pipe = build_transform(pre, train=False)
    spec = describe(pre)
    for data in _jpegs()[:3]:
        s = pipe.sample(EncodedImage(data, "x"))
        model_input = pipe.batch(s[None])[0].numpy()
        x = s.numpy().astype(np.float32)  # HWC, as the worker returns it
        for op, value in spec["steps"]:
            v = np.asarray(value, dtype=np.float32)
            x = {"sub": np.subtract, "div": np.divide, "mul": np.multiply}[op](x, v)
        np.testing.assert_array_equal(x.transpose(2, 0, 1), model_input)
        approx = s.numpy() * (255.0 if preset == "inception" else 1.0) - spec["mean"]
        np.testing.assert_allclose(approx / spec["std"], x, atol=2e-5)  # the 0-255 mean / std


PRESETS = [
    ("timm", 64, TrainAugment(interpolation="random")),
    ("vgg", 64, None),
    ("inception", 64, None),
]


@pytest.mark.parametrize(("preset", "size", "aug"), PRESETS)
def test_loader_batches_equal_per_image_transform(tmp_path, preset, size, aug):
    """DataLoader(2 workers) over ImageFolder with sample -> collate -> to_device -> batch
    (through the Prefetcher) gives what the single-image transform gives per sample seed: the
    per-sample parameters reach the batch op, and worker count does not matter."""
    root = tmp_path / "train"
    for k, data in enumerate(_jpegs()[:6]):
        (root / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"c{k % 2}" / f"{k}.jpg").write_bytes(_reencoded(data, (160, 120)))
    pre = EvalPreprocess(preset, size, 0.875, "bilinear", MEAN, STD)
    pipe = build_transform(pre, train=True, aug=aug)
    ds = ImageFolderDataset(root, transform=pipe.sample)
    sampler = TrainBatchSampler(len(ds), 3, 0, 1, seed=7)
    loader = torch.utils.data.DataLoader(SeededDataset(ds), batch_sampler=sampler, num_workers=2)
    got = torch.cat([x for x, _ in Prefetcher(loader, torch.device("cpu"), pipe.batch)])
    single = ImageFolderDataset(root, transform=pipe)  # the old single-image call
    want = torch.stack([SeededDataset(single)[item][0] for b in sampler for item in b])
    assert got.shape == (6, 3, size, size)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_dct_scaled_decode_keeps_the_crop(tmp_path):
    """A 2048 px photo: crops of >= 2x the output decode at 1/2..1/8 and give the image the
    full decode gives, up to the scaled IDCT's own filtering."""
    data = _reencoded(_jpegs()[10 % len(_jpegs())], (2048, 1536))
    assert decode.dct_denominator((1536, 2048), (224, 224)) == 4
    assert decode.dct_denominator((447, 900), (224, 224)) == 1
    full = decode_pil(data, "x")
    for preset, aug in (("timm", TrainAugment(color_jitter=0.0)), ("vgg", None)):
        pre = EvalPreprocess(preset, 224, 0.875, "bilinear", MEAN, STD)
        pipe = build_transform(pre, train=True, aug=aug)
        for k in range(4):
            _seed(k)
            scaled = pipe(EncodedImage(data, "x"))
            _seed(k)
            whole = pipe(full if preset == "timm" else np.asarray(decode_tf(data, "x")))
            scale = 255 * (torch.tensor(STD).view(3, 1, 1) if preset == "timm" else 1.0)
            d = (scaled - whole).abs() * (scale if preset == "timm" else 1.0)
            assert float(d.mean()) < 4.0, (preset, k, float(d.mean()))


def test_to_device_and_prefetcher_structures():
    x = {"image": torch.zeros(2, 3), "jitter": torch.ones(2, 7)}
    moved = to_device(x, torch.device("cpu"))
    assert set(moved) == {"image", "jitter"} and torch.equal(moved["jitter"], x["jitter"])
    batches = [(torch.full((2, 1), float(i)), torch.tensor([i, i])) for i in range(3)]
    out = list(Prefetcher(batches, torch.device("cpu"), lambda t: t * 2))
    assert [float(a[0, 0]) for a, _ in out] == [0.0, 2.0, 4.0] and len(out) == 3
    assert list(Prefetcher([], torch.device("cpu"), lambda t: t)) == []
