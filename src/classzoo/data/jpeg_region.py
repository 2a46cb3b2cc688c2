"""The window of a JPEG that a training crop samples, decoded without the rest of the image.

A training crop (slim vgg: a 224 crop of the short side resized to 256-512; random resized
crops: 8-100 % of the area) reads a part of a photo (28 % of a 500x375 one for slim vgg, on
average), but a whole-image decode pays for every pixel. ``_jpeg_region`` (data/_jpeg_region.c,
built at install where libjpeg-turbo's headers are) decodes only the rows down to the window's
bottom, and runs the IDCT and colour conversion for its columns only: for slim vgg's windows of
500x375 JPEGs, 0.37 ms against 0.55 ms for the whole image (benchmarks/bench_jpeg_window.py;
docs/benchmarks.md, session 15).

Its pixels are those of the whole-image decode (simplejpeg, the same libjpeg-turbo settings),
bit for bit; a file where that could fail (damaged, an incomplete progressive one, an unusual
subsampling on an old libjpeg-turbo) is refused by the C code and decoded whole by the caller,
by the whole decode's rules (tests/test_jpeg_region.py checks every kind of JPEG and those
files). :func:`state` checks this libjpeg against simplejpeg once per process before the first
window is decoded: a libjpeg that disagreed would be left unused, and said so. Where the module
was not built, every image is decoded whole, as before: the same numbers, more CPU.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import simplejpeg
from PIL import Image

# decode_window's arguments and results (data/_jpeg_region.c's INTERFACE): a module built from
# another version of the C file (an in-place .so left where a rebuild failed) is not called.
_INTERFACE = 1

try:
    from classzoo.data import _jpeg_region
except ImportError as exc:  # not built at install (no compiler / headers), or no libjpeg now
    _jpeg_region, _MISSING = None, f"not built or not loadable ({exc})"
else:
    _MISSING = ""
    if getattr(_jpeg_region, "INTERFACE", None) != _INTERFACE:
        _MISSING = (
            f"built from another version of _jpeg_region.c ({_jpeg_region.__file__}: interface "
            f"{getattr(_jpeg_region, 'INTERFACE', 0)}, this classzoo calls {_INTERFACE}; "
            "`pip install .` again rebuilds it)"
        )
        _jpeg_region = None


@functools.cache
def state() -> str:
    """What decodes training crops' JPEG windows in this process: ``libjpeg-turbo X.Y.Z``,
    or ``off: <why>`` (whole images are decoded then). Recorded in resolved.yaml's
    ``software`` (engine/software.py)."""
    if _jpeg_region is None:
        return f"off: {_MISSING}"
    built = f"libjpeg-turbo {_jpeg_region.BUILT_WITH}"  # its headers' version, at install
    differs = _self_check()
    return f"off: {built} {differs}" if differs else built


def available() -> bool:
    return not state().startswith("off")


def decode_window(
    data: bytes, denom: int, fastdct: bool, rows: tuple[int, int], cols: tuple[int, int]
) -> np.ndarray | None:
    """Rows ``rows[0]..rows[1]-1`` and columns ``cols[0]..cols[1]-1`` (clipped to the image) of
    the JPEG ``data`` decoded at 1/``denom`` as RGB, HWC uint8 (a view), with fancy upsampling
    and the IFAST (``fastdct``) or ISLOW DCT; None where libjpeg reports anything at all (a
    warning included) or the file holds what a window cannot see (data/_jpeg_region.c): the
    caller decodes the whole file then, by its own rules."""
    try:
        buf, h, w, x0 = _jpeg_region.decode_window(data, denom, fastdct, *rows, *cols)
    except ValueError:
        return None
    pixels = np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    return pixels[:, cols[0] - x0 : cols[1] - x0]


def _self_check() -> str:
    """'' when this libjpeg's windows equal simplejpeg's whole-image pixels on a small test
    image (4:2:0 chroma, baseline and progressive, both DCTs, full and 1/2 scale; windows whose
    columns start and end on the iMCU grid inside the image, where a cropped scanline's
    upsampling goes wrong, and one-column windows at the edges, where a narrow crop's chroma is
    upsampled otherwise), else what differed."""
    y, x = np.mgrid[0:61, 0:82]
    rgb = np.stack([(x * 3 + y) % 256, (y * 5) % 256, (x * y) % 256], -1).astype(np.uint8)
    for progressive in (False, True):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=90, subsampling=2, progressive=progressive)
        data = buf.getvalue()
        for fastdct in (True, False):
            for denom, rows, cols in (
                (1, (7, 50), (32, 64)),
                (1, (0, 61), (81, 82)),
                (1, (0, 61), (0, 1)),
                (2, (3, 29), (8, 24)),
            ):
                size = {} if denom == 1 else {"min_height": 31, "min_width": 41}
                whole = simplejpeg.decode_jpeg(
                    data, "RGB", fastdct=fastdct, fastupsample=False, **size
                )
                part = decode_window(data, denom, fastdct, rows, cols)
                if part is None or not np.array_equal(part, whole[slice(*rows), slice(*cols)]):
                    kind = "progressive" if progressive else "baseline"
                    dct = "IFAST" if fastdct else "ISLOW"
                    return (
                        f"gives other pixels than simplejpeg ({kind}, {dct} DCT, 1/{denom} scale)"
                    )
    return ""
