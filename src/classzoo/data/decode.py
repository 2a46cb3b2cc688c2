"""Image decoding: PIL (timm / torchvision) or TensorFlow's own JPEG decoding (slim presets).

TF's ``decode_jpeg(dct_method='')``, which slim's input pipeline uses, runs libjpeg's IFAST
integer DCT with fancy upsampling (tensorflow/core/kernels/image/decode_image_op.cc: "The
TensorFlow-chosen default is IFAST"). PIL uses ISLOW and differs by up to 7 grey levels.
``simplejpeg`` (libjpeg-turbo) with ``fastdct=True, fastupsample=False`` reproduces TF's
pixels exactly (tests/test_decode.py); non-JPEG files go through PIL either way.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from classzoo.errors import UserError

DECODERS = ("pil", "tf")


def decode_pil(data: bytes, name: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"unreadable image {name}: {exc}") from None


def decode_tf(data: bytes, name: str) -> np.ndarray | Image.Image:
    """HWC uint8 RGB exactly as TF's default ``decode_jpeg``; PIL for PNG and others."""
    if data[:2] == b"\xff\xd8":
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
        except ValueError:
            pass  # CMYK and other JPEGs libjpeg-turbo's RGB path refuses: PIL converts them
    return decode_pil(data, name)


def decoder(name: str) -> Callable[[bytes, str], object]:
    if name == "pil":
        return decode_pil
    if name == "tf":
        return decode_tf
    raise UserError(f"unknown image decoder '{name}' (allowed: {', '.join(DECODERS)})")


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"unreadable image {path}: {exc.strerror}") from None
