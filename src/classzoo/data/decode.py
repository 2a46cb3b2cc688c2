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


def _plain_jpeg(data: bytes) -> bool:
    """A JPEG libjpeg-turbo turns into RGB itself (not CMYK / YCCK, which PIL converts)."""
    if data[:2] != b"\xff\xd8":
        return False
    try:
        return simplejpeg.decode_jpeg_header(data)[2] not in ("CMYK", "YCCK")
    except ValueError:
        return False


def decode_pil(data: bytes, name: str) -> Image.Image:
    """RGB PIL image with PIL's pixels. JPEGs go through libjpeg-turbo directly (ISLOW DCT, fancy
    upsampling: the same pixels as PIL, tests/test_decode.py, ~5% less CPU); others through PIL."""
    if _plain_jpeg(data):
        try:
            return Image.fromarray(
                simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
            )
        except ValueError:
            pass  # CMYK / unusual JPEGs: PIL handles (or names) them below
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"unreadable image {name}: {exc}") from None


def decode_tf(data: bytes, name: str) -> np.ndarray | Image.Image:
    """HWC uint8 RGB exactly as TF's default ``decode_jpeg``; PIL for PNG and others."""
    if _plain_jpeg(data):
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
