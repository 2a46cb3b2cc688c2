"""TF-slim's crop geometry and ``tf.image.sample_distorted_bounding_box``, in float32 like TF.

* ``vgg_preprocessing`` size arithmetic (``rint`` short side) and ``tf.image.central_crop``;
* ``sample_distorted_bounding_box_op.cc`` (GenerateRandomCrop / SatisfiesOverlapConstraints),
  the same algorithm with random numbers from the global torch generator: equal to TF's op in
  distribution (tests/test_tf_train_distribution.py, KS test over 10,000 draws), not bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from classzoo.errors import UserError

_F32 = np.float32


def smallest_size_at_least(height: int, width: int, smallest_side: int) -> tuple[int, int]:
    """vgg_preprocessing._smallest_size_at_least: float32 scale, ``rint`` (half to even)."""
    h, w, side = _F32(height), _F32(width), _F32(smallest_side)
    scale = side / w if h > w else side / h
    return int(np.rint(h * scale)), int(np.rint(w * scale))


def central_crop_box(height: int, width: int, fraction: float) -> tuple[int, int, int, int]:
    """tf.image.central_crop: start = int((H - H*f) / 2) in float64, size = H - 2*start.
    Returns (top, left, height, width)."""
    top, left = int((height - height * fraction) / 2), int((width - width * fraction) / 2)
    return top, left, height - 2 * top, width - 2 * left


def uniform_int(n: int) -> int:
    """A uniform integer in [0, n) from the global torch generator (SimplePhilox::Uniform)."""
    return int(torch.randint(n, ()).item())


def uniform(lo: float, hi: float) -> float:
    """A uniform float in [lo, hi) from the global torch generator (tf.random_uniform)."""
    return lo + (hi - lo) * float(torch.rand(()).item())


def _lrint(x: np.float32) -> int:
    return int(np.rint(x))  # lrintf: round half to even


def _random_crop(
    width: int, height: int, min_area_frac: float, max_area_frac: float, aspect: np.float32
) -> tuple[int, int, int, int] | None:
    """sample_distorted_bounding_box_op.cc GenerateRandomCrop, float32 like the C++; returns
    (x, y, w, h) or None when the constraints cannot be met for this aspect ratio."""
    min_area = _F32(min_area_frac) * _F32(width) * _F32(height)
    max_area = _F32(max_area_frac) * _F32(width) * _F32(height)
    h = _lrint(np.sqrt(min_area / aspect))
    max_h = _lrint(np.sqrt(max_area / aspect))
    if _lrint(_F32(max_h) * aspect) > width:
        # smallest max_height with round(max_height * aspect) <= width; kEps = 1e-7 (float)
        max_h = int((width + 0.5 - float(_F32(1e-7))) / float(aspect))
        if _lrint(_F32(max_h) * aspect) > width:
            max_h -= 1
    max_h = min(max_h, height)
    h = min(h, max_h)
    if h < max_h:
        h += uniform_int(max_h - h + 1)  # closed range [h, max_h]
    w = _lrint(_F32(h) * aspect)
    area = _F32(w * h)
    if area < min_area:  # rounding made it too small: try one row taller
        h += 1
        w = _lrint(_F32(h) * aspect)
        area = _F32(w * h)
    if area > max_area:  # ... or one row shorter
        h -= 1
        w = _lrint(_F32(h) * aspect)
        area = _F32(w * h)
    if area < min_area or area > max_area or w > width or h > height or w <= 0 or h <= 0:
        return None
    y = uniform_int(height - h) if h < height else 0  # [0, H-h): TF never picks H-h itself
    x = uniform_int(width - w) if w < width else 0
    return x, y, w, h


def check_crop_ranges(
    area_range: Sequence[float],
    aspect_ratio_range: Sequence[float],
    min_object_covered: float,
    max_attempts: int,
) -> None:
    """The SampleDistortedBoundingBox attribute checks (area in (0, 1], ratios > 0, ...)."""
    ok = len(area_range) == 2 and all(0 < v <= 1 for v in area_range)
    ok = ok and len(aspect_ratio_range) == 2 and all(v > 0 for v in aspect_ratio_range)
    if not ok or max_attempts <= 0 or min_object_covered < 0:
        raise UserError(
            f"bad distorted-crop settings area_range={tuple(area_range)} aspect_ratio_range="
            f"{tuple(aspect_ratio_range)} min_object_covered={min_object_covered} "
            f"max_attempts={max_attempts}: need area in (0, 1], ratios > 0, attempts > 0"
        )


def _covers(
    crop: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]], min_cov: float
) -> bool:
    # SatisfiesOverlapConstraints: kMinArea 1.0; one box covered >= min_object_covered suffices
    x, y, w, h = crop
    if _F32(w * h) < 1.0:
        return False
    for bx0, by0, bx1, by1 in boxes:
        box_area = _F32((bx1 - bx0) * (by1 - by0))
        if box_area < 1.0:
            continue
        ix0, iy0, ix1, iy1 = max(x, bx0), max(y, by0), min(x + w, bx1), min(y + h, by1)
        inter = _F32((ix1 - ix0) * (iy1 - iy0)) if ix0 <= ix1 and iy0 <= iy1 else _F32(0)
        if inter / box_area >= _F32(min_cov):
            return True
    return False


def sample_distorted_bounding_box(
    height: int,
    width: int,
    *,
    boxes: Sequence[Sequence[float]] | None = None,
    min_object_covered: float = 0.1,
    aspect_ratio_range: Sequence[float] = (0.75, 1.33),
    area_range: Sequence[float] = (0.05, 1.0),
    max_attempts: int = 100,
) -> tuple[int, int, int, int]:
    """tf.image.sample_distorted_bounding_box(use_image_if_no_bounding_boxes=True) for an
    image of ``height x width``; ``boxes`` are normalised [ymin, xmin, ymax, xmax] (none ->
    the whole image, as slim's trainer passes). Returns (top, left, crop_h, crop_w); after
    ``max_attempts`` failures, the whole image. Same algorithm and float32 arithmetic as the
    C++ kernel, random numbers from torch (so equal in distribution, not bit for bit).
    With the whole image as the box, crops under ``min_object_covered`` of the image are
    rejected, so slim's effective area range is [0.1, 1.0], not [0.05, 1.0]."""
    check_crop_ranges(area_range, aspect_ratio_range, min_object_covered, max_attempts)
    lo_ar, hi_ar = (_F32(v) for v in aspect_ratio_range)
    lo_area, hi_area = (float(v) for v in area_range)
    rects = [
        (
            int(_F32(b[1]) * width),
            int(_F32(b[0]) * height),
            int(_F32(b[3]) * width),
            int(_F32(b[2]) * height),
        )
        for b in (boxes or ())
    ] or [(0, 0, width, height)]
    for _ in range(max_attempts):
        aspect = _F32(torch.rand(()).item()) * (hi_ar - lo_ar) + lo_ar
        crop = _random_crop(width, height, lo_area, hi_area, aspect)
        if crop is not None and _covers(crop, rects, min_object_covered):
            x, y, w, h = crop
            return y, x, h, w
    return 0, 0, height, width
