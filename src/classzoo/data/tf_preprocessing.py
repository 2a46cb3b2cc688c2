"""TF-slim's ``vgg_preprocessing`` and ``inception_preprocessing`` as PyTorch transforms.

The slim checkpoints were scored on images made by TensorFlow's own kernels; a network sees a
different input through torchvision's ``Resize`` (half-pixel centres, antialiasing); the
ResNet-152 seed's one-point gap was blamed on preprocessing. This module re-implements, without
TensorFlow, the exact arithmetic of the ops slim calls, in float32 like TF:

* the legacy TF1 resize kernels (``resize_bilinear_op.cc`` etc. with ``LegacyScaler``:
  ``src = dst * in/out``, no half-pixel centres), vectorised with ``index_select``;
* slim's size / crop arithmetic (``rint`` short side, truncating offsets, ``central_crop``);
* ``sample_distorted_bounding_box`` (``sample_distorted_bounding_box_op.cc``) and the colour
  ops ``adjust_{brightness,saturation,hue,contrast}`` (``adjust_*_op.cc``).

Train transforms draw every random number from the global ``torch`` generator, so a trainer
that seeds it per sample gets repeatable runs and exact resumes.

Decoding is PIL's: libjpeg-turbo ISLOW with fancy upsampling, bit-identical to
``tf.io.decode_jpeg(dct_method='INTEGER_ACCURATE')``. TF's default ``dct_method=''`` (what slim
uses) is INTEGER_FAST (``decode_image_op.cc``: "The TensorFlow-chosen default is IFAST"), which
differs from PIL by up to a few grey levels; callers that need that decoder too can pass an
already decoded HWC uint8 array to every transform here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from classzoo.errors import UserError

__all__ = [
    "VGG_MEAN_RGB",
    "InceptionEval",
    "InceptionTrain",
    "VggEval",
    "VggTrain",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "build_tf_transform",
    "central_crop_box",
    "distort_color",
    "resize_bilinear_tf1",
    "resize_tf1",
    "sample_distorted_bounding_box",
    "smallest_size_at_least",
]

VGG_MEAN_RGB = (123.68, 116.78, 103.94)  # vgg_preprocessing _R_MEAN, _G_MEAN, _B_MEAN
_F32 = np.float32
_INV_255 = torch.tensor(1.0 / 255.0, dtype=torch.float32)  # convert_image_dtype: x * (1./255)
RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area")  # tf ResizeMethodV1 values 0..3

# ----------------------------------------------------------------------------- input


def _rgb_hwc(img: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """A PIL image (any mode: L, CMYK, P... go through ``convert("RGB")``) or an HWC uint8
    RGB array -> HWC uint8 tensor."""
    if isinstance(img, Image.Image):
        img = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    if isinstance(img, np.ndarray):
        arr = np.ascontiguousarray(img)
        if not arr.flags.writeable:  # PIL's buffer: torch.from_numpy warns on read-only arrays
            arr = arr.copy()
        img = torch.from_numpy(arr)
    t = img
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.ndim != 3 or t.shape[2] != 3:
        raise UserError(
            f"image must be a PIL image or an HWC uint8 RGB array, got {type(img).__name__} "
            f"{getattr(img, 'dtype', '')} {tuple(getattr(img, 'shape', ()))}"
        )
    return t


# ----------------------------------------------------------------------------- resize kernels


def _resize_scale(in_size: int, out_size: int) -> torch.Tensor:
    # image_resizer_state.h CalculateResizeScale, align_corners=False: in / float(out), float32
    return torch.tensor(_F32(in_size) / _F32(out_size))


def _bilinear_taps(
    in_size: int, out_size: int, start: int, count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """resize_bilinear_op.cc compute_interpolation_weights with LegacyScaler, for outputs
    ``start .. start+count-1``: lower = max(floor(in), 0), upper = min(ceil(in), in-1)."""
    src = torch.arange(start, start + count, dtype=torch.float32) * _resize_scale(in_size, out_size)
    lo_f = torch.floor(src)
    lo = lo_f.to(torch.int64).clamp_(min=0)
    hi = torch.ceil(src).to(torch.int64).clamp_(max=in_size - 1)
    return lo, hi, src - lo_f


def _lerp_shape(n: int, dim: int, ndim: int) -> list[int]:
    shape = [1] * ndim
    shape[dim] = n
    return shape


def _bilinear(
    img: torch.Tensor,
    out_hw: tuple[int, int],
    window: tuple[int, int, int, int] | None,
    h_dim: int,
    w_dim: int,
    prescale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Legacy TF1 bilinear resize of ``img`` to ``out_hw``, computing only the output
    ``window = (top, left, height, width)``. Every output pixel depends only on its own
    coordinate, so resize-then-crop equals computing the crop window directly.
    ``prescale`` multiplies the gathered input pixels (convert_image_dtype before the resize)."""
    in_h, in_w = img.shape[h_dim], img.shape[w_dim]
    top, left, h, w = window if window is not None else (0, 0, *out_hw)
    ylo, yhi, ylerp = _bilinear_taps(in_h, out_hw[0], top, h)
    xlo, xhi, xlerp = _bilinear_taps(in_w, out_hw[1], left, w)
    rows_lo, rows_hi = img.index_select(h_dim, ylo), img.index_select(h_dim, yhi)

    def pixels(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        v = rows.index_select(w_dim, cols).to(torch.float32)
        return v * prescale if prescale is not None else v

    tl, tr = pixels(rows_lo, xlo), pixels(rows_lo, xhi)
    bl, br = pixels(rows_hi, xlo), pixels(rows_hi, xhi)
    xl = xlerp.view(_lerp_shape(w, w_dim, img.ndim))
    yl = ylerp.view(_lerp_shape(h, h_dim, img.ndim))
    # resize_bilinear_op.cc compute_lerp: top/bottom along x, then along y (separate float ops)
    top_row = tl + (tr - tl) * xl
    bottom_row = bl + (br - bl) * xl
    return top_row + (bottom_row - top_row) * yl


def _spatial_dims(channels_last: bool) -> tuple[int, int]:
    return (-3, -2) if channels_last else (-2, -1)


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(int(s) <= 0 for s in hw):
        raise UserError(f"resize size must be a positive int or (height, width), got {size!r}")
    return int(hw[0]), int(hw[1])


def resize_bilinear_tf1(
    img: torch.Tensor, size: int | Sequence[int], *, channels_last: bool = False
) -> torch.Tensor:
    """``tf.compat.v1.image.resize_bilinear(align_corners=False)`` (half_pixel_centers=False),
    the kernel slim uses. ``img`` is ``(..., C, H, W)`` or, with ``channels_last``,
    ``(..., H, W, C)``; uint8 or float input, float32 output (like TF)."""
    h_dim, w_dim = _spatial_dims(channels_last)
    return _bilinear(img, _check_size(size), None, h_dim, w_dim)


def _nearest(img: torch.Tensor, out_hw: tuple[int, int], h_dim: int, w_dim: int) -> torch.Tensor:
    # resize_nearest_neighbor_op.cc, LegacyScaler: in = min(floor(out * scale), in - 1)
    for dim, out in ((h_dim, out_hw[0]), (w_dim, out_hw[1])):
        n = img.shape[dim]
        src = torch.arange(out, dtype=torch.float32) * _resize_scale(n, out)
        img = img.index_select(dim, torch.floor(src).to(torch.int64).clamp_(max=n - 1))
    return img.to(torch.float32)


def _bicubic_table() -> torch.Tensor:
    # resize_bicubic_op.cc InitCoeffsTable(-0.75): kTableSize 1024, double math stored as float
    a = float(_F32(-0.75))
    x = (np.arange(1025) * 1.0 / 1024).astype(np.float32).astype(np.float64)
    w_near = ((a + 2) * x - (a + 3)) * x * x + 1
    x = (x.astype(np.float32) + np.float32(1.0)).astype(np.float64)
    w_far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.from_numpy(np.stack([w_near, w_far], 1).astype(np.float32))


_BICUBIC = _bicubic_table()


def _bicubic_1d(img: torch.Tensor, dim: int, out: int) -> torch.Tensor:
    # GetWeightsAndIndices<LegacyScaler, use_keys_cubic=false>: offset = lrintf(delta * 1024)
    n = img.shape[dim]
    src = torch.arange(out, dtype=torch.float32) * _resize_scale(n, out)
    base_f = torch.floor(src)
    offset = torch.round((src - base_f) * 1024).to(torch.int64)  # round half even == lrintf
    base = base_f.to(torch.int64)
    t, far = _BICUBIC, 1024 - offset
    weights = (t[offset, 1], t[offset, 0], t[far, 0], t[far, 1])
    acc = None
    for k, wk in enumerate(weights):  # Interpolate1D: v0*w0 + v1*w1 + v2*w2 + v3*w3
        idx = (base + (k - 1)).clamp_(0, n - 1)
        term = img.index_select(dim, idx) * wk.view(_lerp_shape(out, dim, img.ndim))
        acc = term if acc is None else acc + term
    return acc


def _area_matrix(n: int, out: int) -> torch.Tensor:
    """resize_area_op.cc weights for one axis as a dense (out, n) matrix: cell i of output o
    gets its covered fraction of [o*scale, (o+1)*scale); indices past the edge are Bound()."""
    scale = _resize_scale(n, out)
    o = torch.arange(out, dtype=torch.float32)
    lo, hi = o * scale, (o + 1) * scale
    start, end = torch.floor(lo).to(torch.int64), torch.ceil(hi).to(torch.int64)
    taps = int((end - start).max())
    i = start[:, None] + torch.arange(taps)[None, :]
    fi = i.to(torch.float32)
    w = torch.where(
        fi < lo[:, None],
        torch.where(fi + 1 > hi[:, None], scale, fi + 1 - lo[:, None]),
        torch.where(fi + 1 > hi[:, None], hi[:, None] - fi, torch.ones(())),
    )
    w = torch.where(i < end[:, None], w, torch.zeros(()))
    mat = torch.zeros(out, n, dtype=torch.float32)
    return mat.scatter_add_(1, i.clamp(0, n - 1), w)


def _area(img: torch.Tensor, out_hw: tuple[int, int], h_dim: int, w_dim: int) -> torch.Tensor:
    x = img.to(torch.float32).movedim((h_dim, w_dim), (-2, -1))
    wy = _area_matrix(x.shape[-2], out_hw[0])
    wx = _area_matrix(x.shape[-1], out_hw[1])
    area = _resize_scale(img.shape[h_dim], out_hw[0]) * _resize_scale(img.shape[w_dim], out_hw[1])
    y = wy @ x @ wx.T * (1.0 / area)  # float scale = 1.0 / (height_scale * width_scale)
    return y.movedim((-2, -1), (h_dim, w_dim))


def resize_tf1(
    img: torch.Tensor, size: int | Sequence[int], method: str, *, channels_last: bool = False
) -> torch.Tensor:
    """TF1 ``tf.image.resize_images(img, size, method)`` with its legacy kernels (what
    inception_preprocessing picks from when ``fast_mode=False``). Same layouts as
    :func:`resize_bilinear_tf1`. Bicubic is Keys a=-0.75 with edge clamping; area is TF's
    box filter."""
    out_hw = _check_size(size)
    h_dim, w_dim = _spatial_dims(channels_last)
    if method == "bilinear":
        return _bilinear(img, out_hw, None, h_dim, w_dim)
    if method == "nearest":
        return _nearest(img, out_hw, h_dim, w_dim)
    if method == "bicubic":
        # resize_bicubic_op.cc interpolates along y first, then along x
        x = _bicubic_1d(img.to(torch.float32), h_dim, out_hw[0])
        return _bicubic_1d(x, w_dim, out_hw[1])
    if method == "area":
        return _area(img, out_hw, h_dim, w_dim)
    raise UserError(
        f"unknown resize method {method!r}; expected one of {', '.join(RESIZE_METHODS)}"
    )


# ----------------------------------------------------------------------------- geometry


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


def _uniform_int(n: int) -> int:
    """A uniform integer in [0, n) from the global torch generator (SimplePhilox::Uniform)."""
    return int(torch.randint(n, ()).item())


def _uniform(lo: float, hi: float) -> float:
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
        h += _uniform_int(max_h - h + 1)  # closed range [h, max_h]
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
    y = _uniform_int(height - h) if h < height else 0  # [0, H-h): TF never picks H-h itself
    x = _uniform_int(width - w) if w < width else 0
    return x, y, w, h


def _check_crop_ranges(
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
    _check_crop_ranges(area_range, aspect_ratio_range, min_object_covered, max_attempts)
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


# ----------------------------------------------------------------------------- colour ops
# All take and return a float32 CHW RGB tensor, with TF's float32 semantics.

_ZERO = torch.zeros(())
_THIRDS = (torch.tensor(0.0, dtype=torch.float64), torch.tensor(2.0 / 6.0, dtype=torch.float64))
_THIRDS += (torch.tensor(4.0 / 6.0, dtype=torch.float64),)


def _sectors(sector: torch.Tensor, n: int) -> list[torch.Tensor]:
    return [sector == k for k in range(n)]


def adjust_brightness(img: torch.Tensor, delta: float) -> torch.Tensor:
    """tf.image.adjust_brightness on a float image: ``x + delta``, no clipping."""
    return img + delta


def adjust_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    """AdjustSaturation CPU kernel: RGB -> HSV, s = clip(s * factor, 0, 1), HSV -> RGB."""
    r, g, b = img.unbind(0)
    v = torch.maximum(r, torch.maximum(g, b))
    rng = v - torch.minimum(r, torch.minimum(g, b))
    s = torch.where(v > 0, rng / v, _ZERO)
    norm = torch.reciprocal(rng * 6.0)
    r_max, g_max = r == v, g == v
    diff = torch.where(r_max, g - b, torch.where(g_max, b - r, r - g))
    # `norm * (b - r) + 2.0 / 6.0` adds a double constant, so the sum is rounded once from
    # double; adding 0.0 in double (the r == v case) leaves the float unchanged
    offset = torch.where(r_max, _THIRDS[0], torch.where(g_max, _THIRDS[1], _THIRDS[2]))
    h = ((norm * diff).double() + offset).float()
    h = torch.where(rng <= 0, _ZERO, h)
    h = torch.where(h < 0, h + 1, h)
    s = (s * factor).clamp_(0.0, 1.0)
    c = s * v
    m = v - c
    dh = h * 6
    fmodu = dh - 2 * torch.floor(dh / 2)  # the C++ while loops: dh mod 2 (exact here)
    x = c * (1 - (fmodu - 1).abs())
    # static_cast<int>(dh); h == 1.0 gives sector 6, the switch's `default`: (0, 0, 0)
    s0, s1, s2, s3, s4, s5 = _sectors(dh.to(torch.int32), 6)
    rr = torch.where(s0 | s5, c, torch.where(s1 | s4, x, _ZERO))
    gg = torch.where(s0 | s3, x, torch.where(s1 | s2, c, _ZERO))
    bb = torch.where(s2 | s5, x, torch.where(s3 | s4, c, _ZERO))
    return torch.stack([rr + m, gg + m, bb + m])


def adjust_hue(img: torch.Tensor, delta: float) -> torch.Tensor:
    """AdjustHue CPU kernel: hue as sector + ratio in [0, 6), shifted by ``delta * 6``."""
    r, g, b = img.unbind(0)
    # rgb_to_hv_range's sectors; its v_max / v_min are the plain max / min
    rg = r < g
    c1 = rg & (b < r)
    c3 = rg & ~c1 & (b > g)
    c2 = rg & ~c1 & ~c3
    c0 = ~rg & (b < g)
    c4 = ~rg & ~c0 & (b > r)
    c5 = ~rg & ~c0 & ~c4
    vmax = torch.maximum(r, torch.maximum(g, b))
    vmin = torch.minimum(r, torch.minimum(g, b))
    vmid = torch.where(c0 | c3, g, torch.where(c1 | c4, r, b))
    ratio = (vmid - vmin) / (vmax - vmin)
    sector = c1.float() + 2 * c2.float() + 3 * c3.float() + 4 * c4.float() + 5 * c5.float()
    h = sector + torch.where(c0 | c2 | c4, ratio, 1 - ratio)
    h = torch.where(vmax == vmin, _ZERO, h)
    h = h + float(_F32(delta) * _F32(6))  # delta_h * kChannelRange, in float
    h = torch.where(h < 0, h + 6, h)
    h = torch.where(h >= 6, h - 6, h)
    # hv_range_to_rgb
    sector_i = h.to(torch.int32)
    ratio = h - sector_i.to(torch.float32)
    ratio = torch.where((sector_i & 1) == 1, 1 - ratio, ratio)
    vmid = vmin + ratio * (vmax - vmin)
    s0, s1, s2, s3, s4, s5 = _sectors(sector_i, 6)
    rr = torch.where(s0 | s5, vmax, torch.where(s1 | s4, vmid, vmin))
    gg = torch.where(s0 | s3, vmid, torch.where(s1 | s2, vmax, vmin))
    bb = torch.where(s0 | s1, vmin, torch.where(s2 | s5, vmid, vmax))
    return torch.stack([rr, gg, bb])


def adjust_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    """AdjustContrastv2: ``mean + factor * (x - mean)``, per-channel mean over the image."""
    mean = img.sum(dim=(1, 2), keepdim=True) * float(_F32(1.0) / _F32(img.shape[1] * img.shape[2]))
    return mean + factor * (img - mean)


def distort_color(img: torch.Tensor, ordering: int, fast_mode: bool = True) -> torch.Tensor:
    """inception_preprocessing.distort_color: the random factors of each op are drawn in the
    order the ops are applied; the result is clipped to [0, 1]."""
    ops = {
        "b": lambda x: adjust_brightness(x, _uniform(-32.0 / 255.0, 32.0 / 255.0)),
        "s": lambda x: adjust_saturation(x, _uniform(0.5, 1.5)),
        "h": lambda x: adjust_hue(x, _uniform(-0.2, 0.2)),
        "c": lambda x: adjust_contrast(x, _uniform(0.5, 1.5)),
    }
    orders = ("bs", "sb") if fast_mode else ("bshc", "sbch", "chbs", "hscb")
    if not 0 <= ordering < len(orders):
        raise UserError(f"color ordering must be in [0, {len(orders) - 1}], got {ordering}")
    for op in orders[ordering]:
        img = ops[op](img)
    return img.clamp_(0.0, 1.0)  # "The random_* ops do not necessarily clamp."


# ----------------------------------------------------------------------------- transforms


def _check_side(name: str, value: int, image_size: int) -> None:
    if value < image_size:
        raise UserError(f"{name}={value} is smaller than image_size={image_size}")


def _to_chw(x_hwc: torch.Tensor) -> torch.Tensor:
    return x_hwc.permute(2, 0, 1).contiguous()


class VggEval:
    """vgg_preprocessing.preprocess_for_eval: aspect-preserving TF1 bilinear resize of the
    short side to ``resize_side``, central ``image_size`` crop, RGB mean subtraction (0-255)."""

    def __init__(self, image_size: int = 224, resize_side: int = 256) -> None:
        _check_side("resize_side", resize_side, image_size)
        self.image_size, self.resize_side = image_size, resize_side
        self._mean = torch.tensor(VGG_MEAN_RGB, dtype=torch.float32)

    def __call__(self, img: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        x = _rgb_hwc(img)
        new_hw = smallest_size_at_least(x.shape[0], x.shape[1], self.resize_side)
        size = self.image_size
        # _central_crop: offset = (new - crop) / 2, truncated by tf.to_int32
        window = ((new_hw[0] - size) // 2, (new_hw[1] - size) // 2, size, size)
        return _to_chw(_bilinear(x, new_hw, window, 0, 1) - self._mean)

    def __repr__(self) -> str:
        return f"VggEval(image_size={self.image_size}, resize_side={self.resize_side})"


class VggTrain:
    """vgg_preprocessing.preprocess_for_train: short side ~ U_int[min, max] (inclusive),
    aspect-preserving TF1 bilinear resize, random ``image_size`` crop, random left-right
    flip, RGB mean subtraction. Randomness: global torch generator."""

    def __init__(
        self, image_size: int = 224, resize_side_min: int = 256, resize_side_max: int = 512
    ) -> None:
        _check_side("resize_side_min", resize_side_min, image_size)
        _check_side("resize_side_max", resize_side_max, resize_side_min)
        self.image_size = image_size
        self.resize_side_min, self.resize_side_max = resize_side_min, resize_side_max
        self._mean = torch.tensor(VGG_MEAN_RGB, dtype=torch.float32)

    def __call__(self, img: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        x = _rgb_hwc(img)
        side = self.resize_side_min + _uniform_int(self.resize_side_max - self.resize_side_min + 1)
        new_h, new_w = smallest_size_at_least(x.shape[0], x.shape[1], side)
        size = self.image_size
        # _random_crop: offset = random_uniform([], maxval=new - crop + 1, int32)
        top, left = _uniform_int(new_h - size + 1), _uniform_int(new_w - size + 1)
        out = _bilinear(x, (new_h, new_w), (top, left, size, size), 0, 1)
        if torch.rand(()).item() < 0.5:  # random_flip_left_right: mirror when u < .5
            out = out.flip(1)
        return _to_chw(out - self._mean)

    def __repr__(self) -> str:
        return (
            f"VggTrain(image_size={self.image_size}, resize_side_min={self.resize_side_min}, "
            f"resize_side_max={self.resize_side_max})"
        )


class InceptionEval:
    """inception_preprocessing.preprocess_for_eval: x * (1/255), central_crop(fraction),
    TF1 bilinear resize to ``image_size``, then (x - 0.5) * 2 -> [-1, 1]."""

    def __init__(self, image_size: int = 299, central_fraction: float = 0.875) -> None:
        if not 0.0 < central_fraction <= 1.0:
            raise UserError(f"central_fraction must be in (0, 1], got {central_fraction}")
        self.image_size, self.central_fraction = image_size, central_fraction

    def __call__(self, img: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        x = _rgb_hwc(img)
        top, left, h, w = central_crop_box(x.shape[0], x.shape[1], self.central_fraction)
        size = self.image_size
        out = _bilinear(x[top : top + h, left : left + w], (size, size), None, 0, 1, _INV_255)
        return _to_chw((out - 0.5) * 2.0)

    def __repr__(self) -> str:
        return (
            f"InceptionEval(image_size={self.image_size}, central_fraction={self.central_fraction})"
        )


class InceptionTrain:
    """inception_preprocessing.preprocess_for_train with no bounding box (slim's trainer):
    sample_distorted_bounding_box crop, resize to ``image_size`` (fast_mode: TF1 bilinear;
    else one of the 4 TF1 methods at random), random left-right flip, distort_color
    (fast_mode: brightness then saturation; else one of 4 orderings adding hue and contrast),
    clip to [0, 1], (x - 0.5) * 2. Randomness: global torch generator."""

    def __init__(
        self,
        image_size: int = 299,
        fast_mode: bool = True,
        area_range: tuple[float, float] = (0.05, 1.0),
        aspect_ratio_range: tuple[float, float] = (0.75, 1.33),
        min_object_covered: float = 0.1,
        max_attempts: int = 100,
    ) -> None:
        self.image_size, self.fast_mode = image_size, fast_mode
        self.area_range, self.aspect_ratio_range = tuple(area_range), tuple(aspect_ratio_range)
        self.min_object_covered, self.max_attempts = min_object_covered, max_attempts
        # validate now, not in a DataLoader worker
        _check_crop_ranges(
            self.area_range, self.aspect_ratio_range, min_object_covered, max_attempts
        )

    def __call__(self, img: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        x = _rgb_hwc(img)
        top, left, h, w = sample_distorted_bounding_box(
            x.shape[0],
            x.shape[1],
            min_object_covered=self.min_object_covered,
            aspect_ratio_range=self.aspect_ratio_range,
            area_range=self.area_range,
            max_attempts=self.max_attempts,
        )
        crop = x[top : top + h, left : left + w]
        size = (self.image_size, self.image_size)
        # apply_with_random_selector(num_cases = 1 if fast_mode else 4)
        method = RESIZE_METHODS[0 if self.fast_mode else _uniform_int(4)]
        if method == "bilinear":
            out = _bilinear(crop, size, None, 0, 1, _INV_255)
        else:
            out = resize_tf1(crop.to(torch.float32) * _INV_255, size, method, channels_last=True)
        out = _to_chw(out)
        if torch.rand(()).item() < 0.5:  # random_flip_left_right
            out = out.flip(2)
        ordering = 0 if self.fast_mode else _uniform_int(4)  # num_distort_cases = 1 or 4
        out = distort_color(out, ordering, self.fast_mode)
        return (out - 0.5) * 2.0

    def __repr__(self) -> str:
        return (
            f"InceptionTrain(image_size={self.image_size}, fast_mode={self.fast_mode}, "
            f"area_range={self.area_range}, aspect_ratio_range={self.aspect_ratio_range}, "
            f"min_object_covered={self.min_object_covered}, max_attempts={self.max_attempts})"
        )


PRESETS = ("inception", "vgg")


def build_tf_transform(
    preset: str, train: bool, image_size: int | None = None, crop_pct: float | None = None
) -> Callable[[Image.Image | np.ndarray | torch.Tensor], torch.Tensor]:
    """The slim preprocessing of a model: ``preset`` "vgg" (ResNet-v1, VGG) or "inception".

    ``image_size`` None -> the preset's own (224 / 299). ``crop_pct`` (eval only) None -> the
    preset's own: vgg resize_side = floor(image_size / crop_pct) (224 / 256 = 0.875);
    inception central_fraction = crop_pct (0.875). For vgg training at another image size the
    [256, 512] short-side range is scaled by image_size / 224."""
    if preset not in PRESETS:
        raise UserError(
            f"unknown preprocessing preset {preset!r}; expected one of {', '.join(PRESETS)}"
        )
    if crop_pct is not None and not 0.0 < crop_pct <= 1.0:
        raise UserError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if image_size is not None and image_size <= 0:
        raise UserError(f"image_size must be positive, got {image_size}")
    if preset == "vgg":
        size = image_size or 224  # vgg.default_image_size / resnet_v1.default_image_size
        if train:
            return VggTrain(size, round(256 * size / 224), round(512 * size / 224))
        side = int(size / (crop_pct or 0.875))  # vgg_preprocessing _RESIZE_SIDE_MIN 256 at 224
        return VggEval(size, side)
    size = image_size or 299  # inception_v4.default_image_size
    if train:
        return InceptionTrain(size)
    return InceptionEval(size, 0.875 if crop_pct is None else crop_pct)
