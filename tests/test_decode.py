"""classzoo's JPEG decoders give the pixels of the libraries they stand for."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from classzoo.data.decode import UnreadableImage, decode_pil, decode_tf, decoder
from classzoo.errors import UserError
from conftest import foolbox_data


def _photos() -> list[bytes]:
    folder = foolbox_data()  # real ImageNet JPEGs
    return [p.read_bytes() for p in sorted(folder.glob("imagenet_*.jpg"))]


def test_decode_pil_equals_pil_on_real_jpegs():
    photos = _photos()
    assert len(photos) == 20
    for data in photos:
        ours = np.asarray(decode_pil(data, "photo"))
        np.testing.assert_array_equal(ours, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_cmyk_and_png_fall_back_to_pil():
    """PNGs (either decoder) and CMYK JPEGs (PIL's decoder) are PIL's pixels; the TF decoder's
    CMYK pixels are TF's own (tests/test_tf_preprocessing.py)."""
    rng = np.random.default_rng(0)
    for mode, fmt, name in (("CMYK", "JPEG", "pil"), ("L", "PNG", "tf"), ("RGB", "PNG", "tf")):
        channels = {"CMYK": 4, "L": 1, "RGB": 3}[mode]
        arr = (rng.random((12, 9, channels)) * 255).astype(np.uint8).squeeze()
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, fmt)
        ours = np.asarray(decoder(name)(buf.getvalue(), "x"))
        np.testing.assert_array_equal(
            ours, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        )


def test_garbage_is_a_user_error_naming_the_image():
    with pytest.raises(UserError, match="unreadable image shard-3/record-7"):
        decode_pil(b"\xff\xd8 not really a jpeg", "shard-3/record-7")


def test_a_16_bit_png_is_read_as_tf_reads_it_not_clipped_white():
    """TF's decode_png(dtype=uint8) of a 16-bit PNG keeps each value's high byte (checked against
    TF 2.21: equal to v >> 8 for every value 0..65535); PIL's convert("RGB"), which timm's and
    torchvision's loaders use, clips every value >= 255 to white."""
    from PIL import Image

    values = np.arange(256 * 256, dtype=np.uint16).reshape(256, 256)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "I;16"
    expected = np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=2)
    np.testing.assert_array_equal(np.asarray(decode_pil(buf.getvalue(), "g16.png")), expected)
    np.testing.assert_array_equal(decode_tf(buf.getvalue(), "g16.png"), expected)


def test_a_32_bit_image_beyond_8_bits_is_refused_by_name():
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32), "I").save(buf, "TIFF")
    with pytest.raises(UnreadableImage, match=r"unreadable image i32.tif: a 32-bit integer image"):
        decode_pil(buf.getvalue(), "i32.tif")
