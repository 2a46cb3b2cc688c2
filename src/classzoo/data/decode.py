"""Image decoding: PIL (timm / torchvision) or TensorFlow's own JPEG decoding (slim presets).

TF's ``decode_jpeg(dct_method='')``, which slim's input pipeline uses, runs libjpeg's IFAST
integer DCT with fancy upsampling (tensorflow/core/kernels/image/decode_image_op.cc: "The
TensorFlow-chosen default is IFAST"). PIL uses ISLOW and differs by up to 7 grey levels.
``simplejpeg`` (libjpeg-turbo) with ``fastdct=True, fastupsample=False`` reproduces TF's
pixels exactly (tests/test_decode.py); non-JPEG files go through PIL either way.

Training pipelines take an :class:`EncodedImage` instead: they read the size from the header,
sample the crop, and decode at the smallest DCT scale (1/2, 1/4, 1/8; libjpeg's scaled IDCT)
that still gives the crop at least the output's resolution (:func:`dct_denominator`), and
only the window of it that the crop samples (:func:`decode_window`, data/jpeg_region.py).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

from classzoo.data import jpeg_region
from classzoo.errors import UserError

DECODERS = ("pil", "tf")
DCT_DENOMINATORS = (8, 4, 2)  # the power-of-two scales libjpeg's IDCT gives exactly
# appended where a damaged file stops a run: the way on, if the file may be left out
SKIP_HINT = " (data.skip_corrupt=true skips such files, each named in the log)"


class UnreadableImage(UserError):
    """An image that cannot be decoded (``skip_corrupt`` skips these, and only these).
    ``cause``: what is wrong, without the image's name (a TFRecord error names the record)."""

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message)  # args = (message,): pickles through DataLoader workers
        self.cause = message if cause is None else cause


def decode_reason(exc: BaseException) -> str:
    """A decoder's reason without the repr of the in-memory file PIL read (``<_io.BytesIO
    object at 0x...>`` in UnidentifiedImageError's message): the caller names the file."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unreadable(name: str, exc: BaseException | str) -> UnreadableImage:
    """The one-line error of an image ``name`` that ``exc`` says cannot be decoded."""
    cause = exc if isinstance(exc, str) else decode_reason(exc)
    return UnreadableImage(f"unreadable image {name}: {cause}", cause)


@dataclass(frozen=True)
class EncodedImage:
    """Image file bytes, not decoded yet; ``name`` is what an error names (path or record)."""

    data: bytes
    name: str

    def size(self) -> tuple[int, int]:
        """(height, width) from the header, without decoding the pixels."""
        hw = jpeg_size(self.data)
        if hw is not None:
            return hw
        try:
            with Image.open(io.BytesIO(self.data)) as img:  # lazy: reads the header only
                return img.size[1], img.size[0]
        except MemoryError:
            raise
        except Exception as e:  # PIL on hostile bytes: see decode_pil
            raise unreadable(self.name, e) from None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG libjpeg-turbo decodes to RGB itself, else None."""
    head = _jpeg_header(data)
    return None if head is None or head[2] in _CMYK else head[:2]


_CMYK = ("CMYK", "YCCK")


def _jpeg_header(data: bytes) -> tuple[int, int, str] | None:
    """(height, width, colorspace) of a JPEG libjpeg-turbo reads, else None."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return h, w, colorspace


def dct_denominator(region_hw: tuple[float, float], out_hw: tuple[int, int]) -> int:
    """The largest d in 8, 4, 2 with ``region / d >= out`` on both axes, else 1: decoding at
    1/d then still samples the ``region`` (full-resolution pixels) at ``out`` pixels or more."""
    for d in DCT_DENOMINATORS:
        if region_hw[0] / d >= out_hw[0] and region_hw[1] / d >= out_hw[1]:
            return d
    return 1


def decode_scaled(img: EncodedImage, tf_pixels: bool, denom: int = 1) -> tuple[np.ndarray, int]:
    """HWC uint8 RGB decoded at 1/``denom`` of the full size (JPEGs only; others, and JPEGs
    libjpeg-turbo's RGB path refuses, are decoded whole by PIL) and the denominator used.
    ``tf_pixels``: TF's default IFAST DCT (slim), else PIL's ISLOW; fancy upsampling both."""
    head = _jpeg_header(img.data)
    if head is not None and head[2] in _CMYK:
        arr = _tf_cmyk(img.data) if tf_pixels else None  # whole: the caller's crop is in
        if arr is not None:  # full-resolution pixels (EncodedImage.size reads PIL's header)
            return arr, 1
    hw = head[:2] if head is not None and head[2] not in _CMYK else None
    if hw is not None:
        kw = {}
        if denom > 1:  # libjpeg rounds scaled sizes up: ceil(size / d)
            kw = {"min_height": -(-hw[0] // denom), "min_width": -(-hw[1] // denom)}
        arr = _turbo(img.data, tf_pixels, **kw)  # None: CMYK / unusual JPEGs, PIL below
        if arr is not None:
            return arr, denom if arr.shape[:2] != hw else 1
    return np.asarray(decode_pil(img.data, img.name)), 1


@dataclass(frozen=True)
class Window:
    """Decoded pixels of part of an image: ``pixels`` (HWC uint8) are rows ``top``.. and
    columns ``left``.. of the image decoded at 1/``denom``, whose whole size is ``size``
    (height, width). The whole image is the window at (0, 0)."""

    pixels: np.ndarray
    denom: int
    size: tuple[int, int]
    top: int = 0
    left: int = 0


# plan(size, denom): for the image decoded at 1/denom to (height, width) = size, the window
# (top, bottom, left, right) a crop reads, and anything the caller wants back with it
WindowPlan = Callable[[tuple[int, int], int], tuple[tuple[int, int, int, int], Any]]


def decode_window(
    img: EncodedImage, tf_pixels: bool, denom: int, plan: WindowPlan
) -> tuple[Window, Any]:
    """The part of ``img`` a crop samples, decoded at 1/``denom``, and what ``plan`` gave
    with that window. Its pixels are :func:`decode_scaled`'s (bit for bit, tests/
    test_jpeg_region.py). The whole image, by :func:`decode_scaled` and its rules, where the
    window decoder is off, the file is not a JPEG libjpeg-turbo decodes to RGB, it has no end
    marker (a truncated file stays refused whichever part a crop reads), or the decoder refuses
    it (a libjpeg warning, and what a window cannot see: data/_jpeg_region.c)."""
    head = _jpeg_header(img.data)
    if head is not None and head[2] not in _CMYK and _ends(img.data) and jpeg_region.available():
        size = (-(-head[0] // denom), -(-head[1] // denom))  # libjpeg: ceil(size / denom)
        (top, bottom, left, right), extra = plan(size, denom)
        pixels = jpeg_region.decode_window(img.data, denom, tf_pixels, (top, bottom), (left, right))
        if pixels is not None:
            return Window(pixels, denom, size, top, left), extra
    arr, used = decode_scaled(img, tf_pixels, denom)
    size = (arr.shape[0], arr.shape[1])
    return Window(arr, used, size), plan(size, used)[1]


def _ends(data: bytes) -> bool:
    """Whether the file ends with JPEG's end-of-image marker (trailing zero padding allowed)."""
    return data.rstrip(b"\0")[-2:] == b"\xff\xd9"


def _tf_cmyk(data: bytes) -> np.ndarray | None:
    """TF's ``decode_jpeg(channels=3)`` of a CMYK or YCCK JPEG: libjpeg's CMYK (IFAST DCT), then
    per channel ``x * k // 255`` where the file has an Adobe APP14 marker (Photoshop's inverted
    CMYK), else ``(255 - x) * (255 - k) // 255`` (tensorflow/core/lib/jpeg/jpeg_mem.cc; both
    equal to TF 2.21's pixels, tests/test_tf_preprocessing.py). PIL's conversion was up to 5
    levels off. None where libjpeg-turbo refuses the file (PIL then decides)."""
    try:
        cmyk = simplejpeg.decode_jpeg(data, colorspace="CMYK", fastdct=True, fastupsample=False)
    except ValueError:
        return None
    x, k = cmyk[..., :3].astype(np.uint16), cmyk[..., 3:].astype(np.uint16)
    if not _adobe_marker(data):
        x, k = 255 - x, 255 - k
    return (x * k // 255).astype(np.uint8)


def _adobe_marker(data: bytes) -> bool:
    """Whether an APP14 segment says "Adobe" before the first scan (libjpeg's
    ``saw_Adobe_marker``)."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] != 0xDA:  # 0xDA: start of scan
        if data[i + 1] == 0xEE and data[i + 4 : i + 9] == b"Adobe":
            return True
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


def _turbo(data: bytes, fastdct: bool, **kw) -> np.ndarray | None:
    """libjpeg-turbo's RGB decode (fancy upsampling), or None where it refuses (CMYK, ...).

    A JPEG libjpeg only warns about (``Corrupt JPEG data: 27 extraneous bytes before marker
    0xd9``) decodes, as TF's ``decode_jpeg`` and PIL decode it; simplejpeg's default ``strict``
    raised, and the PIL fallback gave ISLOW pixels where slim's are IFAST (4-255 levels off TF
    on such files). A truncated one (``Premature end of JPEG file``, no end-of-image marker)
    stays refused, as TF refuses it. Not covered: extraneous bytes before another marker
    (0xda, 0xc4, 0xdb): simplejpeg 1.9 refuses those even when not strict, so PIL's ISLOW
    pixels stand (up to 6 levels off TF there)."""
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", fastdct=fastdct, fastupsample=False, **kw
        )
    except ValueError as exc:
        if not str(exc).startswith("Corrupt JPEG data") or not _ends(data):
            return None
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace="RGB", fastdct=fastdct, fastupsample=False, strict=False, **kw
        )
    except ValueError:
        return None


def decode_pil(data: bytes, name: str) -> Image.Image:
    """RGB PIL image with PIL's pixels. JPEGs go through libjpeg-turbo directly (ISLOW DCT, fancy
    upsampling: the same pixels as PIL, tests/test_decode.py, ~5% less CPU); others through PIL."""
    if jpeg_size(data) is not None:
        arr = _turbo(data, fastdct=False)
        if arr is not None:
            return Image.fromarray(arr)  # else CMYK / unusual JPEGs: PIL handles (or names) them
    try:
        with Image.open(io.BytesIO(data)) as img:
            return eight_bit(img, name).convert("RGB")
    except (MemoryError, UnreadableImage):
        raise
    except Exception as exc:  # on bad bytes PIL's plugins raise OSError, ValueError,
        # SyntaxError, EOFError, struct.error, DecompressionBombError...: all the file's fault
        raise unreadable(name, exc) from None


def eight_bit(img: Image.Image, name: str) -> Image.Image:
    """8-bit values of a 16-bit image (PNG, TIFF: PIL mode ``I;16``): their high byte, as TF's
    ``decode_png(dtype=uint8)`` (and DALI) give them. PIL's ``convert("RGB")`` clips them instead
    (every value >= 255 white: timm's and torchvision's loaders do that silently). A 32-bit
    integer or float image with values outside 0..255 has no such reading: refused."""
    if img.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8), "L")
    if img.mode in ("I", "F"):
        lo, hi = img.getextrema()
        if lo < 0 or hi > 255:
            raise unreadable(
                name,
                f"a {'32-bit integer' if img.mode == 'I' else 'float'} image with values "
                f"{lo}..{hi}; classzoo reads 8- and 16-bit images (convert it to 8 bits)",
            )
    return img


def decode_tf(data: bytes, name: str) -> np.ndarray:
    """HWC uint8 RGB exactly as TF's default ``decode_jpeg``; PIL for PNG and others."""
    return decode_scaled(EncodedImage(data, name), tf_pixels=True)[0]


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
        raise unreadable(path, exc.strerror or str(exc)) from None
