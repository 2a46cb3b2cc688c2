"""TF's colour ops (``adjust_{brightness,saturation,hue,contrast}``) and slim's ``distort_color``.

Every op takes a float32 RGB image ``(3, H, W)`` or a batch ``(N, 3, H, W)``, and a factor that
is a number or, for a batch, one value per image (a tensor of N). The training pipeline draws
the factors per sample in the worker (:func:`draw_distortion`, the draws slim makes, in its
order) and applies them to the whole batch (:func:`distort_batch`): vectorised on an
accelerator (:func:`apply_distortion`), one image at a time on a CPU, where brightness then
saturation (slim's fast_mode, its training default) is one fused pass over cached planes
(:mod:`classzoo.data.tf_color_cpu`).
Each op matches TF's CPU kernel within 1e-6 for fixed factors (tests/test_tf_preprocessing.py);
the batch paths are within 1/255 of TF's ops (tests/test_tf_train_distribution.py,
tests/test_tf_color_speed.py).
"""

from __future__ import annotations

import numpy as np
import torch

from classzoo.data.tf_crop import uniform, uniform_int

_F32 = np.float32
_ZERO = torch.zeros(())
# distort_color's orderings; fast_mode uses only the first (num_distort_cases = 1)
ORDERS_FAST = ("bs", "sb")
ORDERS_FULL = ("bshc", "sbch", "chbs", "hscb")
# one row of per-sample parameters: ordering, brightness delta, saturation, hue delta, contrast
IDENTITY = (0.0, 0.0, 1.0, 0.0, 1.0)
_COLUMN = {"b": 1, "s": 2, "h": 3, "c": 4}
_RANGES = {  # inception_preprocessing.distort_color
    "b": (-32.0 / 255.0, 32.0 / 255.0),
    "s": (0.5, 1.5),
    "h": (-0.2, 0.2),
    "c": (0.5, 1.5),
}


def _per_image(factor, like: torch.Tensor, ndim: int):
    """A number stays a number; a tensor of N factors is shaped to broadcast over N images."""
    if isinstance(factor, torch.Tensor) and factor.ndim > 0:
        return factor.to(like.dtype).view(-1, *([1] * (ndim - 1)))
    return float(factor)


def adjust_brightness(img: torch.Tensor, delta) -> torch.Tensor:
    """tf.image.adjust_brightness on a float image: ``x + delta``, no clipping."""
    return img + _per_image(delta, img, img.ndim)


def adjust_saturation(img: torch.Tensor, factor) -> torch.Tensor:
    """AdjustSaturation (adjust_saturation_op.cc): RGB -> HSV, s = clip(s * factor, 0, 1),
    HSV -> RGB. Hue and value are kept, so every channel moves on the line to the value
    v = max: x' = v - (v - x) * s'/s, and s'/s = min(factor, 1/s) with 1/s = v / (v - min).
    Where v <= 0 TF's s is 0 and each channel becomes v (ratio 0)."""
    f = torch.as_tensor(_per_image(factor, img, img.ndim), dtype=img.dtype, device=img.device)
    v = img.amax(dim=-3, keepdim=True)
    rng = v - img.amin(dim=-3, keepdim=True)
    ratio = torch.where(v > 0, torch.minimum(v / rng, f).clamp_(min=0.0), 0.0)
    out = img - v
    out.mul_(ratio).add_(v)  # == v - (v - x) * ratio, computed as v + (x - v) * ratio
    return _hue_wrap(img, out, v, rng, f)


def _hue_wrap(img, out, v, rng, f) -> torch.Tensor:
    """TF's kernel when red is the max and green a hair under blue: h = norm * (g - b) is so
    slightly negative that h + 1 rounds to exactly 1.0 (|h| <= 2**-25), the switch's
    `default` sector; every channel becomes the new minimum m = v - clip(s * f, 0, 1) * v."""
    r, g, b = img.unbind(-3)
    d = g - b
    wrap = (d < 0) & (r == v.squeeze(-3))
    wrap &= torch.reciprocal(rng.squeeze(-3) * 6.0) * d >= -(2.0**-25)
    if img.device.type == "cpu" and not bool(wrap.any()):  # rare; a GPU skips the host sync
        return out
    m = v - ((rng / v) * f).clamp_(0.0, 1.0) * v
    return torch.where(wrap.unsqueeze(-3), m, out)


def _sectors(sector: torch.Tensor, n: int) -> list[torch.Tensor]:
    return [sector == k for k in range(n)]


def adjust_hue(img: torch.Tensor, delta) -> torch.Tensor:
    """AdjustHue CPU kernel: hue as sector + ratio in [0, 6), shifted by ``delta * 6``."""
    r, g, b = img.unbind(-3)
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
    d = _per_image(delta, img, img.ndim - 1)
    h = h + (d * 6.0 if isinstance(d, torch.Tensor) else float(_F32(d) * _F32(6)))  # in float
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
    return torch.stack([rr, gg, bb], dim=-3)


def adjust_contrast(img: torch.Tensor, factor) -> torch.Tensor:
    """AdjustContrastv2: ``mean + factor * (x - mean)``, per-channel mean over the image."""
    inv_n = float(_F32(1.0) / _F32(img.shape[-2] * img.shape[-1]))
    mean = img.sum(dim=(-2, -1), keepdim=True) * inv_n
    return mean + _per_image(factor, img, img.ndim) * (img - mean)


_OPS = {"b": adjust_brightness, "s": adjust_saturation, "h": adjust_hue, "c": adjust_contrast}


def _orders(fast_mode: bool) -> tuple[str, ...]:
    return ORDERS_FAST if fast_mode else ORDERS_FULL


def draw_distortion(fast_mode: bool) -> torch.Tensor:
    """The random numbers of ``apply_with_random_selector(distort_color)`` for one image, drawn
    from the global torch generator in slim's order: the ordering (1 case in fast_mode, else
    4), then each op's factor in the order the ops run. Returns one row of :data:`IDENTITY`."""
    ordering = 0 if fast_mode else uniform_int(len(ORDERS_FULL))  # num_distort_cases 1 or 4
    row = list(IDENTITY)
    row[0] = float(ordering)
    for op in _orders(fast_mode)[ordering]:
        row[_COLUMN[op]] = uniform(*_RANGES[op])
    return torch.tensor(row, dtype=torch.float32)


def distort(x: torch.Tensor, params: torch.Tensor, order: str) -> torch.Tensor:
    """The ops of one ``order`` (e.g. "bshc") on ``x`` with the factors of ``params`` rows."""
    for op in order:
        x = _OPS[op](x, params[:, _COLUMN[op]])
    return x


def apply_distortion(x: torch.Tensor, params: torch.Tensor, fast_mode: bool) -> torch.Tensor:
    """distort_color on a batch ``(N, 3, H, W)`` in [0, 1] with per-image ``params`` rows
    (:func:`draw_distortion`), clipped to [0, 1] ("The random_* ops do not necessarily clamp").
    Without a host sync: each ordering present in the batch runs on the whole batch and the
    images of that ordering are kept (fast_mode has one ordering)."""
    orders = _orders(fast_mode)
    if fast_mode:
        return distort(x, params, orders[0]).clamp_(0.0, 1.0)
    ordering = params[:, 0].round().to(torch.int64).view(-1, 1, 1, 1)
    out = torch.zeros_like(x)
    for k, order in enumerate(orders):
        out = torch.where(ordering == k, distort(x, params, order), out)
    return out.clamp_(0.0, 1.0)
