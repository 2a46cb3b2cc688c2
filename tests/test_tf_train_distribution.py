"""The slim TRAIN presets against TensorFlow's own ops: crop statistics by a KS test over 10,000
draws of ``tf.image.sample_distorted_bounding_box``, and the batched colour ops (per-image
factors, as the training pipeline applies them on the device) within 1/255 of TF's ops."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch
from scipy import stats

from classzoo.data import tf_color, tf_crop
from classzoo.data.decode import decode_tf
from conftest import foolbox_data
from tf_compat import import_tf

pytestmark = pytest.mark.compat

tf = import_tf()

SLIM = dict(min_object_covered=0.1, aspect_ratio_range=(0.75, 1.33), area_range=(0.05, 1.0))


def _tf_boxes(h: int, w: int, n: int) -> np.ndarray:
    tf.random.set_seed(1)
    whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])

    @tf.function
    def draw():
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            [h, w, 3], whole, max_attempts=100, use_image_if_no_bounding_boxes=True, **SLIM
        )
        return tf.concat([begin[:2], size[:2]], 0)

    return np.array([draw().numpy() for _ in range(n)])


def _features(boxes: np.ndarray, h: int, w: int) -> dict[str, np.ndarray]:
    top, left, ch, cw = boxes.T.astype(np.float64)
    return {
        "area": ch * cw / (h * w),
        "aspect": cw / ch,
        "top": top / np.maximum(h - ch, 1),
        "left": left / np.maximum(w - cw, 1),
    }


@pytest.mark.parametrize("hw", [(375, 500), (500, 333)])
def test_distorted_crop_matches_tf_by_ks_over_10000_draws(hw):
    h, w = hw
    n = 10_000
    theirs = _tf_boxes(h, w, n)
    torch.manual_seed(0)
    ours = np.array([tf_crop.sample_distorted_bounding_box(h, w, **SLIM) for _ in range(n)])
    fo, ft = _features(ours, h, w), _features(theirs, h, w)
    report = {k: stats.ks_2samp(fo[k], ft[k]).pvalue for k in fo}
    print(f"{h}x{w} KS p-values over {n} draws: {report}")
    assert len(np.unique(theirs, axis=0)) > n // 10  # TF's op really drew (not one seed)
    for name, p in report.items():
        assert p > 0.01, f"{name}: KS p = {p:.3g}"


# --- colour ops: batched with per-image factors vs TF's ops one image at a time --------------


def _photo_crops() -> torch.Tensor:
    files = sorted(glob.glob(os.path.join(foolbox_data(), "imagenet_*")))
    crops = [decode_tf(open(f, "rb").read(), f)[100:164, 80:160] for f in files[:8]]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() * (1.0 / 255.0)
    return x.contiguous()


def _tf_distort(img: np.ndarray, row: np.ndarray, order: str) -> np.ndarray:
    ops = {
        "b": lambda x: tf.image.adjust_brightness(x, float(row[1])),
        "s": lambda x: tf.image.adjust_saturation(x, float(row[2])),
        "h": lambda x: tf.image.adjust_hue(x, float(row[3])),
        "c": lambda x: tf.image.adjust_contrast(x, float(row[4])),
    }
    x = tf.constant(img)
    for op in order:
        x = ops[op](x)
    return tf.clip_by_value(x, 0.0, 1.0).numpy()


@pytest.mark.parametrize("fast_mode", [True, False])
def test_batched_distort_color_matches_tf_ops_per_image(fast_mode):
    x = _photo_crops()
    torch.manual_seed(5)
    params = torch.stack([tf_color.draw_distortion(fast_mode) for _ in range(len(x))])
    if not fast_mode:  # make sure every ordering is in the batch
        params[:4, 0] = torch.arange(4, dtype=torch.float32)
    ours = tf_color.apply_distortion(x.clone(), params, fast_mode).permute(0, 2, 3, 1).numpy()
    orders = tf_color.ORDERS_FAST if fast_mode else tf_color.ORDERS_FULL
    worst = 0.0
    for i in range(len(x)):
        img = x[i].permute(1, 2, 0).numpy()
        ref = _tf_distort(img, params[i].numpy(), orders[int(params[i, 0])])
        worst = max(worst, float(np.abs(ours[i] - ref).max()))
    print(f"distort_color fast_mode={fast_mode}: max abs diff vs TF {worst:.2e}")
    assert worst <= 1 / 255


@pytest.mark.parametrize("factor", [0.5, 0.77, 1.31, 1.5])
def test_batched_saturation_with_brightness_pushed_pixels_matches_tf(factor):
    """Brightness runs first and does not clip: saturation sees values below 0 and above 1."""
    x = _photo_crops() + 0.12
    x[::2] -= 0.3
    f = torch.full((len(x),), float(np.float32(factor)))
    ours = tf_color.adjust_saturation(x, f).permute(0, 2, 3, 1).numpy()
    ref = np.stack([tf.image.adjust_saturation(im.permute(1, 2, 0).numpy(), factor) for im in x])
    assert np.abs(ours - ref).max() <= 1e-5


# --- the training presets' resize: TF's legacy bilinear kernel, by grid_sample ----------------


def test_train_crop_and_resize_match_tf_legacy_bilinear():
    """bilinear_hwc_fast (what VggTrain / InceptionTrain use) at the same boxes as slim: within
    0.05 grey levels of tf.compat.v1.image.resize_bilinear, mirrored outputs included."""
    from classzoo.data.tf_resize import bilinear_hwc_fast, legacy_coords

    img = _photo_crops()[0].permute(1, 2, 0).mul(255).round().to(torch.uint8).contiguous()
    img = torch.cat([img, img.flip(0)], 0).repeat(2, 4, 1).contiguous()  # 256 x 320
    H, W = img.shape[:2]
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(12):
        h, w = int(rng.integers(20, H)), int(rng.integers(20, W))
        top, left = int(rng.integers(0, H + 1 - h)), int(rng.integers(0, W + 1 - w))
        out = int(rng.integers(16, 300))
        crop = tf.constant(img.numpy()[top : top + h, left : left + w][None])
        ref = tf.compat.v1.image.resize_bilinear(crop, (out, out)).numpy()[0]
        ys, xs = legacy_coords(h, out, 0, out), legacy_coords(w, out, 0, out)
        ours = bilinear_hwc_fast(img, ys, xs, region=(top, left, h, w)).numpy()
        mirrored = bilinear_hwc_fast(img, ys, xs.flip(0), region=(top, left, h, w)).numpy()
        worst = max(worst, np.abs(ours - ref).max(), np.abs(mirrored - ref[:, ::-1]).max())
    print(f"train resize vs TF: max abs diff {worst:.3g} grey levels")
    assert worst <= 0.05


# --- whole training presets: TF's chain at the same draws ------------------------------------


def _photos(n: int = 6) -> list[np.ndarray]:
    files = sorted(glob.glob(os.path.join(foolbox_data(), "imagenet_*")))[:n]
    return [decode_tf(open(f, "rb").read(), f) for f in files]


def _tf_colour(x, row: np.ndarray) -> np.ndarray:
    """slim's fast_mode distort_color (brightness, then saturation), clip, ``(x - 0.5) * 2``."""
    x = tf.image.adjust_saturation(tf.image.adjust_brightness(x, float(row[1])), float(row[2]))
    return ((tf.clip_by_value(x, 0.0, 1.0) - 0.5) * 2.0).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inception_train_is_tf_chain_within_rounding(seed):
    """InceptionTrain at the draws it makes (box, flip, brightness, saturation) against TF's own
    ops in slim's order. The worker's sample is TF's resize (x 255) rounded to a level: within
    0.51 of it (half a level and grid_sample's 0.01). The batch stage on it is TF's colour ops
    on those levels (convert_image_dtype) within 1/255. The whole preset is within 2 x 1.5 x 0.51
    levels of TF's float chain: saturation moves a pixel by its own rounding and by its largest
    channel's, each scaled by up to the factor, 1.5 (measured 1.37; in [0, 1] units x 255, i.e.
    halved after ``(x - 0.5) * 2``)."""
    from classzoo.data.tf_presets import InceptionTrain

    pre, worst = InceptionTrain(), {"sample": 0.0, "colour": 0.0, "chain": 0.0}
    for k, img in enumerate(_photos()):
        torch.manual_seed(seed * 100 + k)
        (top, left, h, w), _, flip, row = pre.draw(*img.shape[:2])
        torch.manual_seed(seed * 100 + k)  # the same draws again, then the pixels
        sample = pre.sample(img)["image_chw"]
        torch.manual_seed(seed * 100 + k)
        ours = pre(img).permute(1, 2, 0).numpy()
        x = tf.image.convert_image_dtype(tf.constant(img), tf.float32)[
            top : top + h, left : left + w
        ]
        x = tf.compat.v1.image.resize_bilinear(x[None], [299, 299])[0]
        x = tf.image.flip_left_right(x) if flip else x
        assert sample.dtype == torch.uint8 and sample.shape == (3, 299, 299)
        levels = sample.permute(1, 2, 0).numpy()
        d = np.abs(levels - x.numpy() * 255)
        worst["sample"] = max(worst["sample"], float(d.max()))
        colour = _tf_colour(tf.image.convert_image_dtype(tf.constant(levels), tf.float32), row)
        worst["colour"] = max(worst["colour"], float(np.abs(ours - colour).max()) * 255 / 2)
        worst["chain"] = max(
            worst["chain"], float(np.abs(ours - _tf_colour(x, row)).max()) * 255 / 2
        )
    print(f"inception train vs TF, levels in [0, 255]: {worst}")
    assert worst["sample"] <= 0.51 and worst["colour"] <= 1.0 and worst["chain"] <= 1.5 * 0.51 * 2


def test_vgg_train_is_tf_chain_within_half_a_level():
    """VggTrain at its draws (short side, crop offset, flip) against TF's resize_bilinear of the
    whole image, cropped, mirrored, minus slim's means: within half a level (+ 0.01)."""
    from classzoo.data.tf_presets import VGG_MEAN_RGB, VggTrain

    pre, worst = VggTrain(), 0.0
    for k, img in enumerate(_photos()):
        torch.manual_seed(k)
        (new_h, new_w), (top, left), flip = pre.draw(*img.shape[:2])
        torch.manual_seed(k)
        ours = pre(img).permute(1, 2, 0).numpy()
        x = tf.compat.v1.image.resize_bilinear(tf.constant(img)[None], [new_h, new_w])[0].numpy()
        ref = x[top : top + 224, left : left + 224]
        ref = (ref[:, ::-1] if flip else ref) - np.array(VGG_MEAN_RGB, np.float32)
        worst = max(worst, float(np.abs(ours - ref).max()))
    print(f"vgg train vs TF: max {worst:.3f} levels")
    assert worst <= 0.51
