"""slim's ``distort_color`` on a collated batch: vectorised on an accelerator, one image at a time
on a CPU.

Vectorised (:func:`classzoo.data.tf_color.apply_distortion`), every op streams the whole float
batch through memory (34 MB at 32 x 299 px), the full mode runs all 4 orderings on every image,
and the fresh 34 MB output (over glibc's 32 MiB mmap threshold) page-faults in every batch: on
one CPU core that cost 4-5 ms per image, more than decoding and cropping it. On a CPU this
module runs each image's own ordering on its planes while they are in the core's cache, and
writes the result back into the batch's own memory as channels_last (the CPU's default layout):
no new batch-sized allocation.

Brightness then saturation (fast_mode's only ordering, slim's training default) is one fused
pass. TF computes ``x' = x + delta``, then moves every channel towards the value ``v' = max(x')``:
``x'' = v' - (v' - x') * rho`` with ``rho = min(f, v' / (v' - m'))``, ``0`` where ``v' <= 0``
(:func:`~classzoo.data.tf_color.adjust_saturation`). Rounding is monotonic, so ``v' = v + delta``
and ``m' = m + delta`` in float32, and ``x'' = x * rho + (v' - v * rho)``: per-pixel planes
``rho`` and ``c``, one multiply-add per channel, and the clip and ``* scale + offset`` folded
into it. It differs from TF's arithmetic by roundings only (2e-7 measured against TF, in
tests/test_tf_color_speed.py); TF's hue-wrap branch (a grey pixel where red is the maximum and blue exceeds green by
under ~2e-7 of the range, ``_hue_wrap``) is found by a cheap bound and those few pixels are
recomputed with TF's ops.
"""

from __future__ import annotations

import threading

import torch

from classzoo.data import tf_color

_INV_255 = torch.tensor(1.0 / 255.0, dtype=torch.float32)  # convert_image_dtype: x * (1./255)
_TINY = 1e-30  # a range of 0 (grey pixel) gives a huge ratio, clipped to f: never 0 / 0
# TF's wrap: hue h = (g' - b') / (6 * range') rounds h + 1 to 1.0 when -2**-25 <= h < 0, i.e.
# 0 < b' - g' <= 6 * 2**-25 * range'; 1e-3 of slack for the rounding of h and 1 / (6 * range)
_WRAP = 6.0 * 2.0**-25 * 1.001


def distort_batch(
    x: torch.Tensor,
    params: torch.Tensor,
    fast_mode: bool,
    *,
    channels_first: bool,
    scale: float = 1.0,
    offset: float = 0.0,
    value_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """``clip(distort_color(x), 0, 1) * scale + offset`` for a batch in [0, 1] with per-image
    ``params`` rows (:func:`~classzoo.data.tf_color.draw_distortion`); ``x`` is
    ``(N, 3, H, W)`` when ``channels_first`` (planar samples), else ``(N, H, W, 3)``; float, or
    uint8 levels (taken as ``x * 1/255``, converted plane by plane). Returns NCHW float32. On a
    CPU a float ``x`` is consumed: the result is a channels_last view of its memory (of new
    memory for levels). Elsewhere vectorised, a new tensor (no host sync). ``scale`` must be
    positive.
    ``value_range``: (lowest, highest) value the caller guarantees ``x`` holds (it bounds the
    search for TF's hue-wrap pixels); None: each image's own, found with two reductions."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if x.device.type != "cpu":
        nchw = x if channels_first else x.permute(0, 3, 1, 2)
        nchw = nchw.contiguous()
        nchw = nchw if nchw.is_floating_point() else _tf_unit(nchw)
        out = tf_color.apply_distortion(nchw, params, fast_mode)
        return out.mul_(scale).add_(offset)
    orders = tf_color.ORDERS_FAST if fast_mode else tf_color.ORDERS_FULL
    opts = (scale, offset, value_range)
    return _per_image_(x.contiguous(), params.tolist(), orders, channels_first, opts)


def _tf_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 levels as float32 in [0, 1]: ``x * (1 / 255)``, TF's convert_image_dtype arithmetic
    (not ToTensor's ``x / 255``, timm_pipeline.to_unit: they differ in the last bit)."""
    return x.to(torch.float32).mul_(_INV_255)


class _Scratch:
    """One image's working planes, reused for every image (they stay in the core's cache)."""

    def __init__(self, h: int, w: int) -> None:
        self.v, self.m, self.t, self.d = (torch.empty(h, w) for _ in range(4))
        self.out, self.planes = torch.empty(3, h, w), torch.empty(3, h, w)


_LOCAL = threading.local()  # per thread: the scratch planes of the last image size


def _scratch(h: int, w: int) -> _Scratch:
    """Reused across calls: fresh planes of this size would page-fault on every call (glibc
    maps allocations over 128 KiB afresh until its threshold adapts)."""
    s = getattr(_LOCAL, "scratch", None)
    if s is None or s.out.shape[1:] != (h, w):
        s = _LOCAL.scratch = _Scratch(h, w)
    return s


def _per_image_(x, rows, orders, channels_first: bool, opts):
    scale, offset, value_range = opts
    n = x.shape[0]
    h, w = x.shape[2:] if channels_first else x.shape[1:3]
    flat = x.view(n, -1)
    levels = not x.is_floating_point()  # uint8 levels: the result needs float memory
    result = torch.empty(n, h * w * 3) if levels else flat
    s = _scratch(h, w)
    for i, row in enumerate(rows):
        block = flat[i]
        if levels:  # converted in the core's cache, plane by plane
            planes = block.view(3, h, w) if channels_first else block.view(h, w, 3).permute(2, 0, 1)
            img = s.planes.copy_(planes).mul_(_INV_255)
        elif channels_first:
            img = block.view(3, h, w)
        else:  # de-interleave once: every op below reads whole planes
            img = s.planes.copy_(block.view(h, w, 3).permute(2, 0, 1))
        order = orders[int(round(row[0]))]
        if order == "bs":
            _brightness_saturation(img, row[1], row[2], s, opts)
        else:
            y = tf_color.distort(img[None], torch.tensor([row]), order)[0]
            s.out.copy_(y).mul_(scale).add_(offset)
        dest = result[i].view(h, w, 3)  # img is read: a float result goes over it
        for ch in range(3):  # clip(y, 0, 1) * s + o == clip(y * s + o, o, s + o)
            torch.clamp(s.out[ch], offset, scale + offset, out=dest[..., ch])
    return result.view(n, h, w, 3).permute(0, 3, 1, 2)


def _brightness_saturation(img, delta: float, factor: float, s: _Scratch, opts):
    """adjust_brightness(delta), adjust_saturation(factor) of one planar image, then
    ``* scale + offset`` (not clipped), into ``s.out`` (the algebra: the module docstring)."""
    scale, offset, value_range = opts
    r, g, b = img.unbind(0)
    v = _max3(r, g, b, s.v)
    m = _min3(r, g, b, s.m)
    lo, hi = value_range if value_range is not None else (float(m.min()), float(v.max()))
    exact = _wrap_pixels(r, g, b, delta, hi, lo, s.d, s.t)
    if exact is not None:  # read before anything is overwritten
        keep = img.view(3, -1).index_select(1, exact)
    rng = torch.sub(v, m, out=m).clamp_(min=_TINY)
    vp = torch.add(v, delta, out=s.t)  # v' (float32 add: TF's brightness)
    rho = torch.div(vp, rng, out=m).clamp_(0.0, max(factor, 0.0))  # 0 where v' <= 0
    c = torch.add(torch.tensor(offset), vp, alpha=scale, out=vp)  # o + s v'
    c.addcmul_(v, rho, value=-scale)  # (v' - v rho) s + o
    for ch in range(3):
        torch.addcmul(c, img[ch], rho, value=scale, out=s.out[ch])
    if exact is not None:  # TF's own ops on the few pixels that may take the wrap branch
        y = tf_color.adjust_brightness(keep[:, :, None], delta)
        y = tf_color.adjust_saturation(y, factor)[:, :, 0]
        s.out.view(3, -1).index_copy_(1, exact, y.mul_(scale).add_(offset))


def _max3(r, g, b, out):
    return torch.maximum(torch.maximum(r, g, out=out), b, out=out)


def _min3(r, g, b, out):
    return torch.minimum(torch.minimum(r, g, out=out), b, out=out)


def _wrap_pixels(r, g, b, delta: float, hi: float, lo: float, buf, buf2) -> torch.Tensor | None:
    """The flat indices of every pixel where TF's saturation, after brightness, may take the
    wrap branch, or None when there is none (the usual case, found with float ops only).

    Rounding is monotonic, so ``b' > g'`` needs ``b > g``; each ``x + delta`` rounds by at most
    ``u`` (half an ulp of the largest magnitude), so ``b' - g' <= _WRAP * range'`` needs
    ``b - g <= eps = _WRAP * (hi - lo + 2u) + 2u``: the pixels with
    ``min(b - g, eps - (b - g)) > 0``."""
    u = max(abs(hi + delta), abs(lo + delta)) * 2.0**-24
    eps = _WRAP * (hi - lo + 2 * u) + 2 * u
    d = torch.sub(b, g, out=buf)
    q = torch.minimum(d, torch.sub(torch.tensor(eps), d, out=buf2), out=buf2)
    rows = q.amax(dim=1)  # per row: a flat nonzero() would cost 6 of these reductions
    if float(rows.max()) <= 0.0:
        return None
    hit = (rows > 0).nonzero().squeeze(1)
    at = (q.index_select(0, hit) > 0).nonzero()
    return hit[at[:, 0]] * q.shape[1] + at[:, 1]
