"""timm's ImageNet transforms as two stages: uint8 pixels from the worker, floats on the device.

The worker stage (``sample``) does what must see the whole image: decode, crop, resize, flip,
in PIL on uint8 as timm does, and returns HWC uint8 (4x less to collate and copy than floats).
The batch stage (``batch``) converts and normalises the collated batch on the device exactly as
``ToTensor`` + ``Normalize`` do per image (``x / 255``, ``- mean``, ``/ std`` in float32: the
same values, bit for bit), and applies the colour jitter with the per-image factors the worker
drew. Random numbers are drawn with the calls timm's own transform makes, in its order
(``RandomResizedCropAndInterpolation.get_params``, ``random.choice`` of the interpolation,
``RandomHorizontalFlip``'s ``torch.rand(1)``, ``ColorJitter.get_params``), so a seeded sample gets
timm's crop, flip and factors (tests/test_loader_pipeline.py).

A training crop whose side is at least twice the output is decoded at 1/2, 1/4 or 1/8 scale by
libjpeg (:func:`classzoo.data.decode.dct_denominator`); the crop box is mapped to that scale.
Only the window the resize reads is decoded (:func:`classzoo.data.decode.decode_window`).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation, str_to_interp_mode
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from classzoo.data.decode import (
    EncodedImage,
    Window,
    WindowPlan,
    dct_denominator,
    decode_pil,
    decode_window,
)
from classzoo.data.device import device_const, pixel_rows, row_const

_PIL_MODES = {
    InterpolationMode.NEAREST: Image.NEAREST,
    InterpolationMode.BILINEAR: Image.BILINEAR,
    InterpolationMode.BICUBIC: Image.BICUBIC,
}
# torchvision's rgb_to_grayscale weights (ITU-R 601-2), as its tensor ColorJitter uses them
_GREY = (0.2989, 0.587, 0.114)


def to_pil(img) -> Image.Image:
    """An RGB PIL image of any accepted input (PIL's own pixels for an encoded image)."""
    if isinstance(img, EncodedImage):
        return decode_pil(img.data, img.name)
    if isinstance(img, np.ndarray):
        return Image.fromarray(img).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def hwc_pixels(img: Image.Image | np.ndarray) -> torch.Tensor:
    """HWC uint8 RGB pixels of a decoded input (a PIL image or an HWC uint8 array)."""
    if isinstance(img, np.ndarray):
        return torch.from_numpy(np.require(img, np.uint8, ["C", "W"]))
    return hwc_uint8(img.convert("RGB") if img.mode != "RGB" else img)


def pixels_window(img, denom: int, plan: WindowPlan) -> tuple[torch.Tensor, Window, Any]:
    """:func:`hwc_pixels` of the window ``plan`` asks for (a view; PIL's pixels for an encoded
    JPEG: :func:`~classzoo.data.decode.decode_window`), the :class:`Window` it is, and what
    ``plan`` gave with it. A decoded input is its own whole window."""
    if isinstance(img, EncodedImage):
        win, extra = decode_window(img, False, denom, plan)
        return torch.from_numpy(np.require(win.pixels, np.uint8, ["W"])), win, extra
    x = hwc_pixels(img)
    size = (int(x.shape[0]), int(x.shape[1]))
    return x, Window(x.numpy(), 1, size), plan(size, 1)[1]


def hwc_uint8(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))


def pil_size(img) -> tuple[int, int]:
    """(height, width) without decoding an encoded image."""
    if isinstance(img, EncodedImage):
        return img.size()
    if isinstance(img, np.ndarray):
        return int(img.shape[0]), int(img.shape[1])
    return img.size[1], img.size[0]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """ToTensor on a uint8 NHWC batch: float32 / 255, as an NCHW (channels_last) view."""
    return x.permute(0, 3, 1, 2).to(torch.float32).div_(255)


def normalize(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """Normalize: ``(x - mean) / std`` in place, per channel, float32 (along rows of pixels
    where ``x`` is channels_last: :func:`~classzoo.data.device.pixel_rows`)."""
    rows = pixel_rows(x)
    if rows is None:
        return x.sub_(device_const(mean, x.device)).div_(device_const(std, x.device))
    w = x.shape[-1]
    rows.sub_(row_const(mean, w, x.device)).div_(row_const(std, w, x.device))
    return x


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).unsqueeze(-3)


def color_jitter(x: torch.Tensor, params: torch.Tensor, vectorised: bool | None = None):
    """torchvision's ColorJitter (tensor path, hue off) on a float batch in [0, 1]: for each of
    the 4 steps of each image's random order, ``_blend(img, other, f)`` =
    ``(f * img + (1 - f) * other).clamp(0, 1)`` with other 0 (brightness), the mean grey
    (contrast) or the grey image (saturation); a step without a factor is skipped.
    ``params`` rows: the order (4 op ids), then the brightness, contrast, saturation factors.
    On an accelerator all images go through each step at once (no host sync); on a CPU image
    by image (a third of the work: no step computes what another image needs)."""
    if vectorised is None:
        vectorised = x.device.type != "cpu"
    if not vectorised:
        rows = params.tolist()
        return torch.stack([_jitter_one(img, row) for img, row in zip(x.unbind(0), rows)])
    order = params[:, :4].round().to(torch.int64)
    factors = torch.cat([params[:, 4:7], torch.ones_like(params[:, :1])], dim=1)  # hue: 1
    for k in range(4):
        op = order[:, k].view(-1, 1, 1, 1)
        f = factors.gather(1, order[:, k : k + 1]).view(-1, 1, 1, 1)
        grey = _grey(x)
        other = torch.where(op == 2, grey, grey.mean(dim=(-3, -2, -1), keepdim=True))
        other = torch.where(op == 0, 0.0, other)
        # (1 - f) in double, then float, as torchvision's python-float ratio
        x = (f * x + (1.0 - f.double()).to(x.dtype) * other).clamp_(0.0, 1.0)
    return x


def _jitter_one(img: torch.Tensor, row: list[float]) -> torch.Tensor:
    for op in row[:4]:
        op = int(round(op))
        if op == 3:  # hue: off
            continue
        f = float(row[4 + op])
        other = 0.0 if op == 0 else _grey(img)
        if op == 1:
            other = other.mean(dim=(-3, -2, -1), keepdim=True)
        img = (f * img + (1.0 - f) * other).clamp_(0.0, 1.0)
    return img


def jitter_normalize_cpu(images: torch.Tensor, params: torch.Tensor, mean, std) -> torch.Tensor:
    """``normalize(color_jitter(to_unit(images), params), mean, std)`` on a CPU, bit for bit,
    one image at a time: its planes converted into a cached scratch, the jitter steps done in
    place there (the formulas of :func:`_jitter_one`, rounding included), and the normalised
    planes written into a channels_last batch (the CPU's layout; no batch-sized temporaries:
    3-4x less CPU than per-image out-of-place ops on strided views and a stack)."""
    n, h, w, _ = images.shape
    out = torch.empty(n, h, w, 3)
    planes, grey, tmp = torch.empty(3, h, w), torch.empty(1, h, w), torch.empty(1, h, w)
    mean, std = tuple(map(float, mean)), tuple(map(float, std))
    for i, row in enumerate(params.tolist()):
        img = planes.copy_(images[i].permute(2, 0, 1)).div_(255)  # to_unit's x / 255
        for op in row[:4]:
            op = int(round(op))
            if op < 3:  # hue (3): off
                _blend_(img, op, float(row[4 + op]), grey, tmp)
        for c in range(3):  # normalize: (x - mean) / std, into the channels_last batch
            torch.div(img[c].sub_(mean[c]), std[c], out=out[i, :, :, c])
    return out.permute(0, 3, 1, 2)


def _blend_(img: torch.Tensor, op: int, f: float, grey: torch.Tensor, tmp: torch.Tensor):
    """One step of :func:`_jitter_one` in place, with the same roundings: ``f * img`` then
    ``+ (1 - f) * other`` (other 0: ``+ 0.0`` changes no value), clamped to [0, 1]."""
    if op == 0:
        img.mul_(f)
    else:  # the grey image, as _grey computes it: ((c0 r + c1 g) + c2 b)
        r, g, b = img.unbind(0)
        torch.mul(r, _GREY[0], out=grey[0]).add_(torch.mul(g, _GREY[1], out=tmp[0]))
        grey.add_(torch.mul(b, _GREY[2], out=tmp[0]))
        other = grey.mean(dim=(-3, -2, -1), keepdim=True) if op == 1 else grey
        img.mul_(f).add_(other.mul_(1.0 - f))
    img.clamp_(0.0, 1.0)


class TimmTrain:
    """timm ``transforms_imagenet_train`` (rrc crop, hflip, colour jitter without hue,
    normalisation) as a worker stage and a batch stage."""

    def __init__(self, size, scale, ratio, interpolation, hflip, color_jitter, mean, std):
        self.size, self.scale, self.ratio, self.hflip = size, tuple(scale), tuple(ratio), hflip
        self.interps = (
            (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)  # timm _RANDOM_INTERPOLATION
            if interpolation == "random"
            else (str_to_interp_mode(interpolation),)
        )
        cj = float(color_jitter or 0.0)
        self.jitter = T.ColorJitter(cj, cj, cj) if cj > 0 else None  # timm: (cj,) * 3, no hue
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))

    def draw(self, h: int, w: int) -> tuple[tuple[int, int, int, int], Any, bool, torch.Tensor]:
        """timm's random numbers for an h x w image: crop box, interpolation, flip, jitter."""
        shape_only = torch.zeros(()).expand(1, h, w)  # get_params reads only the size
        box = RandomResizedCropAndInterpolation.get_params(shape_only, self.scale, self.ratio)
        interp = random.choice(self.interps) if len(self.interps) > 1 else self.interps[0]
        flip = self.hflip > 0 and bool(torch.rand(1) < self.hflip)
        params = torch.zeros(0)
        if self.jitter is not None:
            j = self.jitter
            idx, b, c, s, _ = T.ColorJitter.get_params(j.brightness, j.contrast, j.saturation, None)
            params = torch.tensor([*idx.tolist(), b, c, s], dtype=torch.float32)
        return box, interp, flip, params

    def sample(self, img):
        (i, j, h, w), interp, flip, params = self.draw(*pil_size(img))
        size = self.size

        def plan(hw: tuple[int, int], d: int):  # the pixels the crop's resize reads
            # at 1/d, the whole image: PIL's resize runs its vertical pass first or second by
            # the input's size (Pillow 13 does), and each pass rounds to uint8
            return ((i, i + h, j, j + w) if d == 1 else (0, hw[0], 0, hw[1])), None

        x, win, _ = pixels_window(img, dct_denominator((h, w), (size, size)), plan)
        d, i0, j0 = win.denom, i - win.top, j - win.left  # the crop's origin in the window
        if d == 1:  # resized_crop: crop (a view), resize; torch's uint8 antialiased kernels
            crop = x[i0 : i0 + h, j0 : j0 + w].permute(2, 0, 1)[None]  # are PIL's within 2 levels
            crop = crop.contiguous(memory_format=torch.channels_last)  # HWC out: 2x faster
            aa = interp in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)
            out = torch.nn.functional.interpolate(
                crop, size=(size, size), mode=interp.value, antialias=aa
            )[0].permute(1, 2, 0)
        else:  # the same box in the 1/d image, fractional: PIL's resize takes it as is
            box = (j / d, i / d, (j + w) / d, (i + h) / d)
            out = hwc_uint8(
                Image.fromarray(x.numpy()).resize((size, size), _PIL_MODES[interp], box=box)
            )
        out = (out.flip(1) if flip else out).contiguous()
        return {"image": out, "jitter": params} if self.jitter is not None else out

    def batch(self, x) -> torch.Tensor:
        if not isinstance(x, dict):
            return normalize(to_unit(x), self.mean, self.std)
        if x["image"].device.type == "cpu":
            return jitter_normalize_cpu(x["image"], x["jitter"], self.mean, self.std)
        img = color_jitter(to_unit(x["image"]), x["jitter"])
        return normalize(img, self.mean, self.std)


class PilStage:
    """A list of timm / torchvision PIL transforms in the worker, HWC uint8 out; the batch
    stage normalises. Used for timm's eval transform, the resize-only training crop and
    auto-augment (timm's ``use_prefetcher`` split: its PIL ops, then normalise on the device)."""

    def __init__(self, ops, mean, std, what: str | None = None):
        self.ops = T.Compose(list(ops))
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        self.what = what  # which setting made it, for a loader that refuses it

    def sample(self, img) -> torch.Tensor:
        return hwc_uint8(self.ops(to_pil(img)))

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(to_unit(x), self.mean, self.std)


class FloatStage:
    """A whole per-image float transform in the worker (random erasing needs the normalised
    image); the batch stage only stacks."""

    def __init__(self, transform):
        self.transform = transform

    def sample(self, img) -> torch.Tensor:
        return self.transform(to_pil(img))

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return x
