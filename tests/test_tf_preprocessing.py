"""classzoo.data.tf_preprocessing against TensorFlow's own ops (the outside truth).

slim's ``preprocess_for_eval`` functions are ported below from tensorflow/models
research/slim/preprocessing (only renamed to the TF2 spellings: tf.compat.v1.image.resize_bilinear,
tf.cast, tf.split(value, n, axis)), run eagerly on the 20 real ImageNet JPEGs that foolbox
ships, and compared with our transforms on the same photos.
"""

from __future__ import annotations

import glob
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from classzoo.data import tf_preprocessing as tfp
from conftest import foolbox_data
from tf_compat import import_tf

pytestmark = pytest.mark.compat

tf = import_tf()


def _foolbox_jpegs() -> list[str]:
    files = sorted(glob.glob(os.path.join(foolbox_data(), "imagenet_*.jpg")))
    if len(files) != 20:
        pytest.skip("foolbox's 20 ImageNet JPEGs not found")
    return files


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    out = []
    for path in _foolbox_jpegs():
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def _pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# --- slim vgg_preprocessing.preprocess_for_eval, ported --------------------------------------
_R_MEAN, _G_MEAN, _B_MEAN = 123.68, 116.78, 103.94


def _crop(image, offset_height, offset_width, crop_height, crop_width):
    original_shape = tf.shape(image)
    cropped_shape = tf.stack([crop_height, crop_width, original_shape[2]])
    offsets = tf.cast(tf.stack([offset_height, offset_width, 0]), tf.int32)
    image = tf.slice(image, offsets, cropped_shape)
    return tf.reshape(image, cropped_shape)


def _central_crop(image_list, crop_height, crop_width):
    outputs = []
    for image in image_list:
        image_height = tf.shape(image)[0]
        image_width = tf.shape(image)[1]
        offset_height = (image_height - crop_height) / 2
        offset_width = (image_width - crop_width) / 2
        outputs.append(_crop(image, offset_height, offset_width, crop_height, crop_width))
    return outputs


def _mean_image_subtraction(image, means):
    num_channels = image.get_shape().as_list()[-1]
    channels = tf.split(image, num_channels, axis=2)
    for i in range(num_channels):
        channels[i] -= means[i]
    return tf.concat(channels, 2)


def _smallest_size_at_least(height, width, smallest_side):
    smallest_side = tf.convert_to_tensor(smallest_side, dtype=tf.int32)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    smallest_side = tf.cast(smallest_side, tf.float32)
    scale = tf.cond(
        tf.greater(height, width), lambda: smallest_side / width, lambda: smallest_side / height
    )
    new_height = tf.cast(tf.math.rint(height * scale), tf.int32)
    new_width = tf.cast(tf.math.rint(width * scale), tf.int32)
    return new_height, new_width


def _aspect_preserving_resize(image, smallest_side):
    smallest_side = tf.convert_to_tensor(smallest_side, dtype=tf.int32)
    shape = tf.shape(image)
    new_height, new_width = _smallest_size_at_least(shape[0], shape[1], smallest_side)
    image = tf.expand_dims(image, 0)
    resized_image = tf.compat.v1.image.resize_bilinear(
        image, [new_height, new_width], align_corners=False
    )
    return tf.squeeze(resized_image)


def slim_vgg_eval(image, output_height=224, output_width=224, resize_side=256):
    image = _aspect_preserving_resize(image, resize_side)
    image = _central_crop([image], output_height, output_width)[0]
    image = tf.cast(image, tf.float32)
    return _mean_image_subtraction(image, [_R_MEAN, _G_MEAN, _B_MEAN])


# --- slim inception_preprocessing.preprocess_for_eval, ported --------------------------------
def slim_inception_eval(image, height=299, width=299, central_fraction=0.875):
    if image.dtype != tf.float32:
        image = tf.image.convert_image_dtype(image, dtype=tf.float32)
    if central_fraction:
        image = tf.image.central_crop(image, central_fraction=central_fraction)
    if height and width:
        image = tf.expand_dims(image, 0)
        image = tf.compat.v1.image.resize_bilinear(image, [height, width], align_corners=False)
        image = tf.squeeze(image, [0])
    image = tf.subtract(image, 0.5)
    image = tf.multiply(image, 2.0)
    return image


def _tf_decode(data: bytes, dct_method: str):
    return tf.io.decode_jpeg(data, channels=3, dct_method=dct_method)


# --- decoding ---------------------------------------------------------------------------------


def test_pil_decode_equals_tf_integer_accurate_and_tf_default_is_ifast(photos):
    """PIL (libjpeg-turbo ISLOW, fancy upsampling) == TF's INTEGER_ACCURATE bit for bit; TF's
    default dct_method='' (slim's) is INTEGER_FAST and differs from PIL by a few levels."""
    diffs = []
    for data in photos:
        ours = np.asarray(_pil(data).convert("RGB")).astype(np.int16)
        np.testing.assert_array_equal(ours, _tf_decode(data, "INTEGER_ACCURATE").numpy())
        default = _tf_decode(data, "").numpy()
        np.testing.assert_array_equal(default, _tf_decode(data, "INTEGER_FAST").numpy())
        diffs.append(np.abs(ours - default).ravel())
    d = np.concatenate(diffs)
    print(f"PIL vs TF default decode: max {d.max()} levels, mean {d.mean():.3f}")
    assert 0 < d.max() <= 8 and d.mean() < 1.5  # measured: max 7, mean 0.98 levels


def test_grayscale_and_cmyk_jpegs_decode_like_tf():
    """Grayscale -> R=G=B in both; CMYK (Adobe, inverted) within 1 level (TF truncates the
    k*c/255 product, PIL rounds it)."""
    rng = np.random.default_rng(0)
    gray = (rng.random((40, 56)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(gray, "L").save(buf, "JPEG", quality=90)
    ours = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(ours, _tf_decode(buf.getvalue(), "INTEGER_ACCURATE").numpy())

    cmyk = Image.fromarray((rng.random((40, 56, 4)) * 255).astype(np.uint8), "CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG", quality=95)
    ours = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(int)
    theirs = _tf_decode(buf.getvalue(), "INTEGER_ACCURATE").numpy().astype(int)
    assert np.abs(ours - theirs).max() <= 1


# --- eval pipelines on the 20 photos ----------------------------------------------------------


def _compare(photos, ours_fn, slim_fn, scale: float, dct_method: str) -> tuple[float, float]:
    maxes, means = [], []
    for data in photos:
        ours = ours_fn(_pil(data)).numpy()
        ref = slim_fn(_tf_decode(data, dct_method)).numpy().transpose(2, 0, 1)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        d = np.abs(ours - ref) / scale
        maxes.append(d.max())
        means.append(d.mean())
    return float(max(maxes)), float(np.mean(means))


def test_vgg_eval_matches_slim(photos):
    mx, mean = _compare(photos, tfp.VggEval(), slim_vgg_eval, 255.0, "INTEGER_ACCURATE")
    print(f"VggEval vs slim (same decode): max {mx:.2e}, mean {mean:.2e} on the [0,1] scale")
    assert mx <= 1e-6  # the 1/255 budget is not needed: same float32 ops, bit-exact in practice
    mx, mean = _compare(photos, tfp.VggEval(), slim_vgg_eval, 255.0, "")
    print(f"VggEval vs slim (TF default IFAST decode): max {mx:.4f}, mean {mean:.5f}")
    assert mx < 8 / 255 and mean < 1.5 / 255  # measured 0.0235 (6/255), 0.0038: decoder only


def test_inception_eval_matches_slim(photos):
    mx, mean = _compare(photos, tfp.InceptionEval(), slim_inception_eval, 2.0, "INTEGER_ACCURATE")
    print(f"InceptionEval vs slim (same decode): max {mx:.2e}, mean {mean:.2e} on the [0,1] scale")
    assert mx <= 1e-6
    mx, mean = _compare(photos, tfp.InceptionEval(), slim_inception_eval, 2.0, "")
    print(f"InceptionEval vs slim (TF default IFAST decode): max {mx:.4f}, mean {mean:.5f}")
    assert mx < 8 / 255 and mean < 1.5 / 255  # measured 0.0233, 0.0038: decoder only


def test_non_default_sizes_match_slim(photos):
    """Odd crop sizes, resize sides and fractions take the truncating-offset branches."""
    for data in photos[:4]:
        image = _tf_decode(data, "INTEGER_ACCURATE")
        ours = tfp.VggEval(image_size=201, resize_side=333)(_pil(data)).numpy()
        ref = slim_vgg_eval(image, 201, 201, 333).numpy().transpose(2, 0, 1)
        np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
        ours = tfp.InceptionEval(image_size=257, central_fraction=0.7)(_pil(data)).numpy()
        ref = slim_inception_eval(image, 257, 257, 0.7).numpy().transpose(2, 0, 1)
        np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


# --- kernels on random float images -----------------------------------------------------------

_SIZES = [((37, 53), (101, 77)), ((300, 211), (97, 149)), ((5, 7), (3, 2)), ((1, 9), (4, 4))]


@pytest.mark.parametrize(("in_hw", "out_hw"), _SIZES)
def test_resize_bilinear_tf1_matches_tf_kernel(in_hw, out_hw):
    x = np.random.default_rng(1).random((*in_hw, 3), dtype=np.float32) * 255
    ref = tf.compat.v1.image.resize_bilinear(x[None], out_hw, align_corners=False).numpy()[0]
    ours = tfp.resize_bilinear_tf1(torch.from_numpy(x), out_hw, channels_last=True).numpy()
    assert np.abs(ours - ref).max() <= 1e-5 * 255
    chw = tfp.resize_bilinear_tf1(torch.from_numpy(x).permute(2, 0, 1), out_hw).numpy()
    np.testing.assert_array_equal(chw.transpose(1, 2, 0), ours)


@pytest.mark.parametrize("method", ["nearest", "bicubic", "area"])
@pytest.mark.parametrize(("in_hw", "out_hw"), _SIZES)
def test_other_resize_methods_match_tf1(method, in_hw, out_hw):
    """The methods inception_preprocessing draws from when fast_mode=False."""
    x = np.random.default_rng(2).random((*in_hw, 3), dtype=np.float32)
    fn = {
        "nearest": tf.compat.v1.image.resize_nearest_neighbor,
        "bicubic": tf.compat.v1.image.resize_bicubic,
        "area": tf.compat.v1.image.resize_area,
    }[method]
    ref = fn(x[None], out_hw, align_corners=False).numpy()[0]
    ours = tfp.resize_tf1(torch.from_numpy(x), out_hw, method, channels_last=True).numpy()
    assert np.abs(ours - ref).max() <= 1e-5  # area sums in another order: ~2e-7 measured


# --- colour ops with a fixed factor -----------------------------------------------------------


@pytest.fixture(scope="module")
def colour_image() -> np.ndarray:
    x = np.random.default_rng(3).random((48, 64, 3), dtype=np.float32)
    x[0, :4] = 0.5  # grey: zero range
    x[1, :4] = 0.0  # black: v == 0
    x[2, :4] = [1.0, 0.0, 0.0]  # pure red: hue 0
    x[3, :4] = [0.2, 0.7, 0.7]  # ties between channels
    return x


@pytest.mark.parametrize("factor", [0.5, 0.8123, 1.27, 1.5])
def test_saturation_and_contrast_match_tf(colour_image, factor):
    f = float(np.float32(factor))
    chw = torch.from_numpy(colour_image).permute(2, 0, 1).contiguous()
    ref = tf.image.adjust_saturation(colour_image, f).numpy()
    np.testing.assert_allclose(tfp.adjust_saturation(chw, f).permute(1, 2, 0), ref, atol=1e-6)
    ref = tf.image.adjust_contrast(colour_image, f).numpy()
    np.testing.assert_allclose(tfp.adjust_contrast(chw, f).permute(1, 2, 0), ref, atol=1e-6)


@pytest.mark.parametrize("delta", [-0.2, -0.0731, 0.125, 0.2])
def test_brightness_and_hue_match_tf(colour_image, delta):
    d = float(np.float32(delta))
    chw = torch.from_numpy(colour_image).permute(2, 0, 1).contiguous()
    ref = tf.image.adjust_brightness(colour_image, d).numpy()
    np.testing.assert_array_equal(tfp.adjust_brightness(chw, d).permute(1, 2, 0).numpy(), ref)
    ref = tf.image.adjust_hue(colour_image, d).numpy()
    np.testing.assert_allclose(tfp.adjust_hue(chw, d).permute(1, 2, 0), ref, atol=1e-6)


def test_colour_ops_on_photos_match_tf(photos):
    """Real photos have many channel ties (uint8 origins), the branchy cases of the HSV code."""
    worst = 0.0
    for i, data in enumerate(photos[:6]):
        image = tf.image.convert_image_dtype(_tf_decode(data, "INTEGER_ACCURATE"), tf.float32)
        chw = torch.from_numpy(image.numpy()).permute(2, 0, 1).contiguous()
        f = float(np.float32(0.5 + i / 5))
        d = float(np.float32(-0.2 + i * 0.08))
        for ours, ref in (
            (tfp.adjust_saturation(chw, f), tf.image.adjust_saturation(image, f)),
            (tfp.adjust_hue(chw, d), tf.image.adjust_hue(image, d)),
            (tfp.adjust_contrast(chw, f), tf.image.adjust_contrast(image, f)),
        ):
            worst = max(worst, float(np.abs(ours.permute(1, 2, 0).numpy() - ref.numpy()).max()))
    print(f"colour ops on photos: max abs diff {worst:.2e}")
    assert worst <= 1e-6


# --- distorted bounding box: same distribution as TF's op -------------------------------------


def test_distorted_bbox_statistics_match_tf():
    """Our sampler and TF's op on a 375x500 image: same area / aspect distribution (slim's
    settings, whole-image box). Compared by quantiles over 2000 draws each."""
    h, w, n = 375, 500, 2000
    kwargs = dict(min_object_covered=0.1, aspect_ratio_range=(0.75, 1.33), area_range=(0.05, 1.0))
    torch.manual_seed(0)
    ours = np.array(
        [tfp.sample_distorted_bounding_box(h, w, max_attempts=100, **kwargs) for _ in range(n)]
    )
    tf.random.set_seed(0)
    box = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
    theirs = []
    for _ in range(n):
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            [h, w, 3], box, max_attempts=100, use_image_if_no_bounding_boxes=True, **kwargs
        )
        theirs.append([begin[0], begin[1], size[0], size[1]])
    theirs = np.array(theirs)

    def stats(a):
        area = a[:, 2] * a[:, 3] / (h * w)
        aspect = a[:, 3] / a[:, 2]
        bottom_gap = (h - a[:, 0] - a[:, 2]) / np.maximum(h - a[:, 2], 1)
        return area, aspect, bottom_gap

    q = [0.05, 0.25, 0.5, 0.75, 0.95]
    for ours_v, tf_v, tol in zip(stats(ours), stats(theirs), (0.04, 0.03, 0.06)):
        np.testing.assert_allclose(np.quantile(ours_v, q), np.quantile(tf_v, q), atol=tol)
    o_area, o_aspect, _ = stats(ours)
    assert o_area.min() >= 0.1 - 1e-3 and o_area.max() <= 1.0  # min_object_covered wins over 0.05
    assert o_aspect.min() >= 0.75 - 0.02 and o_aspect.max() <= 1.33 + 0.02
    for a in (ours, theirs):  # Uniform(H - h) is in [0, H - h): the offset never reaches H - h
        shorter = a[:, 2] < h
        assert shorter.any() and (a[shorter, 0] + a[shorter, 2] <= h - 1).all()


# --- classzoo's own pipeline: TF-exact decode (simplejpeg IFAST) + transform ---------------------


def test_tf_decoder_equals_tf_default_decode_jpeg(photos):
    """classzoo.data.decode.decode_tf gives exactly the pixels of slim's decode_jpeg (dct '')."""
    from classzoo.data.decode import decode_tf

    for data in photos:
        np.testing.assert_array_equal(
            np.asarray(decode_tf(data, "photo")), _tf_decode(data, "").numpy()
        )


@pytest.mark.parametrize(
    ("preset", "slim_fn", "scale"),
    [("vgg", slim_vgg_eval, 255.0), ("inception", slim_inception_eval, 2.0)],
)
def test_pipeline_from_jpeg_bytes_matches_slim_within_1_over_255(photos, preset, slim_fn, scale):
    """JPEG bytes -> classzoo (decoder + preset) vs JPEG bytes -> TF decode_jpeg + slim eval."""
    from classzoo.data.decode import decode_tf

    transform = tfp.build_tf_transform(preset, train=False)
    worst, means = 0.0, []
    for data in photos:
        ours = transform(decode_tf(data, "photo")).numpy()
        ref = slim_fn(tf.io.decode_jpeg(data, channels=3)).numpy().transpose(2, 0, 1)
        d = np.abs(ours - ref) / scale  # on the [0, 1] pixel scale
        worst, means = max(worst, float(d.max())), means + [float(d.mean())]
    print(
        f"{preset} pipeline vs slim on {len(photos)} ImageNet JPEGs: max {worst:.2e}, mean {np.mean(means):.2e}"
    )
    assert worst <= 1 / 255


def test_a_jpeg_libjpeg_only_warns_about_decodes_as_tf_decodes_it(photos):
    """Bytes before the end-of-image marker make libjpeg warn ("Corrupt JPEG data: 27
    extraneous bytes before marker 0xd9"); TF and PIL decode such a file. classzoo fell back to
    PIL's ISLOW pixels for it where slim's are TF's IFAST. A truncated file stays refused, as
    TF refuses it."""
    from classzoo.data.decode import UnreadableImage, decode_pil, decode_tf

    buf = io.BytesIO()
    Image.open(io.BytesIO(photos[0])).convert("RGB").save(buf, "JPEG", quality=90)
    good = buf.getvalue()
    warned = good[:-2] + b"\x00" * 27 + good[-2:]
    np.testing.assert_array_equal(
        decode_tf(warned, "w.jpg"), tf.io.decode_jpeg(warned, channels=3).numpy()
    )
    np.testing.assert_array_equal(np.asarray(decode_pil(warned, "w.jpg")), np.asarray(_pil(warned)))
    truncated = good[: len(good) // 2]
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_jpeg(truncated, channels=3).numpy()
    with pytest.raises(UnreadableImage, match="t.jpg"):
        decode_tf(truncated, "t.jpg")


def _without_adobe_marker(data: bytes) -> bytes:
    """The JPEG with its APP14 "Adobe" segment cut out (libjpeg then reads plain CMYK)."""
    out, i = bytearray(data[:2]), 2
    while data[i] == 0xFF and data[i + 1] != 0xDA:
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if not (data[i + 1] == 0xEE and data[i + 4 : i + 9] == b"Adobe"):
            out += data[i:end]
        i = end
    return bytes(out + data[i:])


def test_cmyk_jpegs_decode_to_tfs_pixels(photos):
    """TF converts libjpeg's CMYK itself, inverted where an Adobe marker says so (Photoshop's
    CMYK); classzoo converted through PIL, up to 5 levels off TF."""
    from classzoo.data.decode import EncodedImage, decode_scaled, decode_tf

    for data in photos[:3]:
        buf = io.BytesIO()
        _pil(data).convert("CMYK").save(buf, "JPEG", quality=90)
        for cmyk in (buf.getvalue(), _without_adobe_marker(buf.getvalue())):
            truth = tf.io.decode_jpeg(cmyk, channels=3).numpy()
            np.testing.assert_array_equal(decode_tf(cmyk, "c.jpg"), truth)
            scaled, d = decode_scaled(EncodedImage(cmyk, "c.jpg"), tf_pixels=True, denom=2)
            assert d == 1  # decoded whole: the caller samples full-resolution coordinates
            np.testing.assert_array_equal(scaled, truth)
