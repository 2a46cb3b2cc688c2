"""classzoo.data.tf_preprocessing without TensorFlow: hand-computed values and properties.

The expected numbers below are worked out by hand from the TF kernels' formulas (legacy
``src = dst * in/out``; slim's rint / truncation rules), not produced by the code under test.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from classzoo.data import tf_preprocessing as tfp
from classzoo.errors import UserError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run as a DataLoader worker does (torch.set_num_threads(1)): on a shared 2-core box,
    intra-op threads only add waiting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- legacy TF1 bilinear, by hand -------------------------------------------------------------


def test_bilinear_4x4_to_3x3_by_hand():
    # a[i, j] = 10 i + j^2; scale 4/3: sources 0, 4/3, 8/3 on both axes.
    # x: j^2 at 4/3 = 1 + (4 - 1)/3 = 2; at 8/3 = 4 + (9 - 4) * 2/3 = 22/3. y: linear, 10 * src.
    a = torch.tensor([[10.0 * i + j * j for j in range(4)] for i in range(4)])
    row = np.array([0.0, 2.0, 22.0 / 3.0])
    expected = np.stack([row + 10.0 * s for s in (0.0, 4.0 / 3.0, 8.0 / 3.0)])
    out = tfp.resize_bilinear_tf1(a[None], (3, 3))[0]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    # half-pixel centres (torch, TF2 tf.image.resize) would give a[0,0] = 0.8 here, not 0
    assert out[0, 0] == 0.0


def test_bilinear_2x2_to_5x5_by_hand():
    # scale 2/5: sources 0, .4, .8, 1.2, 1.6 -> upper index clamps to 1, so the last two
    # outputs repeat the edge: 1-D [p, q] -> [p, p + .4(q-p), p + .8(q-p), q, q]
    a = torch.tensor([[0.0, 10.0], [20.0, 30.0]])
    expected = [
        [0, 4, 8, 10, 10],
        [8, 12, 16, 18, 18],
        [16, 20, 24, 26, 26],
        [20, 24, 28, 30, 30],
        [20, 24, 28, 30, 30],
    ]
    out = tfp.resize_bilinear_tf1(a[None], 5)[0]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_bilinear_layouts_and_dtypes():
    x = torch.randint(0, 256, (3, 17, 29), dtype=torch.uint8)
    chw = tfp.resize_bilinear_tf1(x, (11, 40))
    hwc = tfp.resize_bilinear_tf1(x.permute(1, 2, 0), (11, 40), channels_last=True)
    assert chw.dtype == torch.float32 and chw.shape == (3, 11, 40)
    torch.testing.assert_close(hwc.permute(2, 0, 1), chw, rtol=0, atol=0)
    torch.testing.assert_close(tfp.resize_bilinear_tf1(x.float(), (11, 40)), chw, rtol=0, atol=0)
    batched = tfp.resize_bilinear_tf1(torch.stack([x, x]), (11, 40))
    torch.testing.assert_close(batched[1], chw, rtol=0, atol=0)
    with pytest.raises(UserError, match="resize size"):
        tfp.resize_bilinear_tf1(x, (0, 4))
    with pytest.raises(UserError, match="unknown resize method 'lanczos'"):
        tfp.resize_tf1(x, 4, "lanczos")


# --- slim's size arithmetic, by hand ----------------------------------------------------------


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((375, 500), (256, 341)),  # 500 * 256/375 = 341.33 -> 341
        ((333, 500), (256, 384)),  # 500 * 256/333 = 384.38 -> 384
        ((500, 375), (341, 256)),
        ((683, 1024), (256, 384)),  # foolbox imagenet_10: 383.81 -> 384
        ((512, 681), (256, 340)),  # 340.5: rint rounds half to even (half-up would say 341)
        ((256, 256), (256, 256)),
    ],
)
def test_vgg_short_side_rint(hw, expected):
    assert tfp.smallest_size_at_least(*hw, 256) == expected


@pytest.mark.parametrize(
    ("size", "start", "kept"),
    [
        (299, 18, 263),  # (299 - 261.625) / 2 = 18.69 -> 18; 299 - 36
        (375, 23, 329),  # 46.875 / 2 = 23.44 -> 23
        (333, 20, 293),  # 41.625 / 2 = 20.81 -> 20
        (500, 31, 438),  # 62.5 / 2 = 31.25 -> 31
        (7, 0, 7),  # 0.875 / 2 < 1: nothing cut
        (1, 0, 1),
    ],
)
def test_central_crop_offsets(size, start, kept):
    assert tfp.central_crop_box(size, size, 0.875) == (start, start, kept, kept)


def test_vgg_eval_crop_window_is_central():
    # 375x500 -> 256x341, crop offsets (0, (341 - 224) // 2 = 58): column j of the output is
    # resized column 58 + j, i.e. source x = (58 + j) * 500/341.
    ramp = np.tile(np.arange(500, dtype=np.float64) * 255 / 499, (375, 1))
    img = np.repeat(ramp.round().astype(np.uint8)[:, :, None], 3, axis=2)
    out = tfp.VggEval()(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    src_x = np.float32(58) * (np.float32(500) / np.float32(341))
    assert abs(float(out[0, 100, 0]) + 123.68 - src_x * 255 / 499) < 0.6  # within a uint8 step


# --- colour ops, by hand ----------------------------------------------------------------------


def _px(rgb) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1)


def test_saturation_and_hue_by_hand():
    # red (h 0, s 1, v 1), s * 0.5 -> c = .5, m = .5 -> (1, .5, .5)
    out = tfp.adjust_saturation(_px([1.0, 0.0, 0.0]), 0.5).flatten()
    np.testing.assert_allclose(out.numpy(), [1.0, 0.5, 0.5], atol=1e-7)
    # grey has no saturation to change; black stays black
    grey = np.float32(0.3)
    np.testing.assert_array_equal(tfp.adjust_saturation(_px([grey] * 3), 1.5).flatten(), [grey] * 3)
    np.testing.assert_array_equal(tfp.adjust_saturation(_px([0.0] * 3), 1.5).flatten(), [0.0] * 3)
    # red + 1/3 of the hue circle = green; red - 1/6 = magenta
    np.testing.assert_allclose(
        tfp.adjust_hue(_px([1.0, 0, 0]), 1 / 3).flatten(), [0, 1, 0], atol=1e-6
    )
    np.testing.assert_allclose(
        tfp.adjust_hue(_px([1.0, 0, 0]), -1 / 6).flatten(), [1, 0, 1], atol=1e-6
    )


def test_contrast_and_brightness_by_hand():
    img = torch.tensor([[[0.2, 0.4], [0.6, 0.8]]] * 3)  # per-channel mean 0.5
    np.testing.assert_allclose(
        tfp.adjust_contrast(img, 0.5)[0].numpy(), [[0.35, 0.45], [0.55, 0.65]], atol=1e-6
    )
    np.testing.assert_allclose(
        tfp.adjust_brightness(img, 0.25)[0].numpy(), [[0.45, 0.65], [0.85, 1.05]], atol=1e-6
    )


# --- distorted bounding box -------------------------------------------------------------------


def test_distorted_bbox_ranges_over_many_draws():
    torch.manual_seed(1)
    h, w = 375, 500
    boxes = np.array([tfp.sample_distorted_bounding_box(h, w) for _ in range(3000)])
    top, left, ch, cw = boxes.T
    area, aspect = ch * cw / (h * w), cw / ch
    assert (
        (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
    )
    # area_range (0.05, 1) but min_object_covered 0.1 of the whole-image box rejects < 0.1
    assert area.min() >= 0.1 - 2e-3 and area.max() <= 1.0
    assert area.max() > 0.9 and area.min() < 0.11
    # width = round(height * aspect): aspect within the range up to one pixel of rounding
    assert (np.abs(cw - ch * np.clip(aspect, 0.75, 1.33)) <= 1).all()
    assert aspect.min() < 0.77 and aspect.max() > 1.3
    assert 0.36 < area.mean() < 0.42  # TF's op gives 0.385 on this image (compat test)
    assert 1.0 < aspect.mean() < 1.08  # uniform aspect on [.75, 1.33] -> 1.04


def test_distorted_bbox_falls_back_to_whole_image():
    # aspect 3-4 cannot cover 90% of a square: after max_attempts, the whole image
    torch.manual_seed(0)
    box = tfp.sample_distorted_bounding_box(
        100, 100, area_range=(0.9, 1.0), aspect_ratio_range=(3.0, 4.0), max_attempts=5
    )
    assert box == (0, 0, 100, 100)
    with pytest.raises(UserError, match="area_range"):
        tfp.sample_distorted_bounding_box(10, 10, area_range=(0.0, 1.0))


# --- train transforms -------------------------------------------------------------------------


def _photo(h=375, w=500, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize(
    "transform", [tfp.VggTrain(), tfp.InceptionTrain(), tfp.InceptionTrain(fast_mode=False)]
)
def test_train_transforms_repeatable_from_torch_seed_only(transform):
    img = _photo()
    outs = []
    for other_seed in (1, 2):
        random.seed(other_seed)  # python / numpy state must not matter...
        np.random.seed(other_seed)
        torch.manual_seed(1234)
        outs.append(transform(img))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    torch.manual_seed(99)
    other = transform(img)
    assert not torch.equal(other, outs[0])
    assert (
        np.random.get_state()[1] == np_state
    ).all() and random.getstate() == py_state  # ...nor change


def test_vgg_train_shapes_ranges_and_scale_distribution():
    # source = horizontal ramp 0..255 over 256 px: resized to side s, cropped at ``left`` and
    # maybe mirrored, output column j samples x = (left + j) * 256 / s (legacy coordinates),
    # where bilinear on a ramp is x itself (255 past the last pixel); the sample rounds it to a
    # level: within half a level (and grid_sample's 0.01) of x.
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    img = Image.fromarray(np.repeat(ramp[:, :, None], 3, axis=2))
    vgg = tfp.VggTrain()
    sides, flips = [], 0
    for seed in range(300):
        torch.manual_seed(seed)
        (side, side_w), (top, left), flip = vgg.draw(256, 256)
        assert side == side_w and 0 <= top <= side - 224 and 0 <= left <= side - 224
        sides.append(side)
        flips += flip
        torch.manual_seed(seed)  # the same draws, then the pixels
        out = vgg(img)
        assert out.shape == (3, 224, 224) and out.dtype == torch.float32
        r = out[0, 0] + 123.68
        x = ((left + torch.arange(224.0)) * 256 / side).clamp(max=255)
        assert float((r - (x.flip(0) if flip else x)).abs().max()) <= 0.52
    sides = np.array(sides)
    assert sides.min() >= 256 and sides.max() <= 512  # in [256, 512]
    assert sides.min() < 270 and sides.max() > 498 and 365 < sides.mean() < 403  # uniform
    assert 120 < flips < 180


def test_inception_train_shape_range_and_brightness_distribution():
    # a flat grey image: saturation is a no-op on grey and the crop/resize keep it flat, so the
    # output is 2 * brightness_delta everywhere, delta ~ U[-32/255, 32/255]
    grey = Image.new("RGB", (500, 375), (128, 128, 128))
    torch.manual_seed(0)
    deltas = []
    for _ in range(200):
        out = tfp.InceptionTrain()(grey)
        assert out.shape == (3, 299, 299) and out.dtype == torch.float32
        assert float(out.max() - out.min()) < 1e-6
        deltas.append(float(out[0, 0, 0]) / 2 + 0.5 - 128 / 255)
    deltas = np.array(deltas)
    assert np.abs(deltas).max() <= 32 / 255 + 1e-6
    assert deltas.min() < -28 / 255 and deltas.max() > 28 / 255 and abs(deltas.mean()) < 0.02
    torch.manual_seed(3)
    out = tfp.InceptionTrain()(_photo())
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0 and float(out.std()) > 0.1


# --- inputs and the factory -------------------------------------------------------------------


def test_inputs_pil_modes_and_arrays_agree():
    img = _photo(61, 83)
    ref = tfp.InceptionEval()(img)
    torch.testing.assert_close(tfp.InceptionEval()(np.asarray(img)), ref, rtol=0, atol=0)
    grey = img.convert("L")
    out = tfp.VggEval()(grey)  # grey JPEGs: R = G = B like decode_jpeg(channels=3)
    torch.testing.assert_close(out[0] + 123.68, out[1] + 116.78)
    with pytest.raises(UserError, match="HWC uint8 RGB"):
        tfp.VggEval()(np.zeros((10, 10), np.uint8))


def test_build_tf_transform():
    t = tfp.build_tf_transform("vgg", train=False)
    assert isinstance(t, tfp.VggEval) and (t.image_size, t.resize_side) == (224, 256)
    t = tfp.build_tf_transform("vgg", train=False, image_size=320, crop_pct=1.0)
    assert (t.image_size, t.resize_side) == (320, 320)
    t = tfp.build_tf_transform("vgg", train=True)
    assert isinstance(t, tfp.VggTrain) and (t.resize_side_min, t.resize_side_max) == (256, 512)
    t = tfp.build_tf_transform("inception", train=False, crop_pct=0.9)
    assert isinstance(t, tfp.InceptionEval) and (t.image_size, t.central_fraction) == (299, 0.9)
    t = tfp.build_tf_transform("inception", train=True, image_size=331)
    assert isinstance(t, tfp.InceptionTrain) and t.image_size == 331 and t.fast_mode
    with pytest.raises(UserError, match=r"unknown preprocessing preset 'timm'.*inception, vgg"):
        tfp.build_tf_transform("timm", train=False)
    with pytest.raises(UserError, match="resize_side=200 is smaller than image_size=224"):
        tfp.VggEval(224, 200)
