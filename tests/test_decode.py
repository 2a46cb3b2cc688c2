"""classzoo's JPEG decoders give the pixels of the libraries they stand for."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classzoo.data.decode import decode_pil, decoder
from classzoo.errors import UserError


def _photos() -> list[bytes]:
    foolbox = pytest.importorskip("foolbox")  # only for its data folder of real ImageNet JPEGs
    folder = Path(os.path.dirname(foolbox.__file__)) / "data"
    return [p.read_bytes() for p in sorted(folder.glob("imagenet_*.jpg"))]


def test_decode_pil_equals_pil_on_real_jpegs():
    photos = _photos()
    assert len(photos) == 20
    for data in photos:
        ours = np.asarray(decode_pil(data, "photo"))
        np.testing.assert_array_equal(ours, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_cmyk_and_png_fall_back_to_pil():
    rng = np.random.default_rng(0)
    for mode, fmt in (("CMYK", "JPEG"), ("L", "PNG"), ("RGB", "PNG")):
        channels = {"CMYK": 4, "L": 1, "RGB": 3}[mode]
        arr = (rng.random((12, 9, channels)) * 255).astype(np.uint8).squeeze()
        buf = io.BytesIO()
        Image.fromarray(arr, mode).save(buf, fmt)
        ours = np.asarray(decoder("tf")(buf.getvalue(), "x"))
        np.testing.assert_array_equal(
            ours, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        )


def test_garbage_is_a_user_error_naming_the_image():
    with pytest.raises(UserError, match="unreadable image shard-3/record-7"):
        decode_pil(b"\xff\xd8 not really a jpeg", "shard-3/record-7")
