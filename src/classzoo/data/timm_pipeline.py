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
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation, str_to_interp_mode
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from classzoo.data.decode import EncodedImage, dct_denominator, decode_pil, decode_scaled
from classzoo.data.device import device_const

_PIL_MODES = {
    InterpolationMode.NEAREST: Image.NEAREST,
    InterpolationMode.BILINEAR: Image.BILINEAR,
    InterpolationMode.BICUBIC: Image.BICUBIC,
}
# torchvision's rgb_to_grayscale weights (ITU-R 601-2), as its tensor ColorJitter uses them
_GREY = (0.2989, 0.587, 0.114)


def to_pil(img, denom: int = 1) -> tuple[Image.Image, int]:
    """An RGB PIL image of any accepted input (PIL's pixels for encoded JPEGs, at 1/``denom``
    of the size when possible) and the denominator used."""
    if isinstance(img, EncodedImage):
        if denom == 1:
            return decode_pil(img.data, img.name), 1
        arr, used = decode_scaled(img, tf_pixels=False, denom=denom)
        return Image.fromarray(arr), used
    if isinstance(img, np.ndarray):
        return Image.fromarray(img).convert("RGB"), 1
    return (img if img.mode == "RGB" else img.convert("RGB")), 1


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
    """Normalize: ``(x - mean) / std`` in place, per channel, float32."""
    return x.sub_(device_const(mean, x.device)).div_(device_const(std, x.device))


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).unsqueeze(-3)


def color_jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter (tensor path, hue off) on a float batch in [0, 1]: for each of
    the 4 steps of each image's random order, ``_blend(img, other, f)`` =
    ``(f * img + (1 - f) * other).clamp(0, 1)`` with other 0 (brightness), the mean grey
    (contrast) or the grey image (saturation); a step without a factor blends with f = 1.
    ``params`` rows: the order (4 op ids), then the brightness, contrast, saturation factors."""
    order = params[:, :4].round().to(torch.int64)
    factors = torch.cat([params[:, 4:7], torch.ones_like(params[:, :1])], dim=1)  # hue: 1
    for k in range(4):
        op = order[:, k]
        f = factors.gather(1, op[:, None]).view(-1, 1, 1, 1)
        grey = _grey(x)
        mean = grey.mean(dim=(-3, -2, -1), keepdim=True)
        other = torch.where(op.view(-1, 1, 1, 1) == 2, grey, mean)
        other = torch.where(op.view(-1, 1, 1, 1) == 0, 0.0, other)
        # (1 - f) in double, then float, as torchvision's python-float ratio
        x = (f * x + (1.0 - f.double()).to(x.dtype) * other).clamp_(0.0, 1.0)
    return x


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

    def draw(self, h: int, w: int) -> tuple[tuple[int, int, int, int], int, bool, torch.Tensor]:
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
        return box, _PIL_MODES[interp], flip, params

    def sample(self, img):
        box, mode, flip, params = self.draw(*pil_size(img))
        i, j, h, w = box
        pil, d = to_pil(img, dct_denominator((h, w), (self.size, self.size)))
        if d == 1:  # torchvision resized_crop: crop, then resize
            out = pil.crop((j, i, j + w, i + h)).resize((self.size, self.size), mode)
        else:  # the same box in the 1/d image
            out = pil.resize(
                (self.size, self.size), mode, box=(j / d, i / d, (j + w) / d, (i + h) / d)
            )
        if flip:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = hwc_uint8(out)
        return {"image": x, "jitter": params} if self.jitter is not None else x

    def batch(self, x) -> torch.Tensor:
        if not isinstance(x, dict):
            return normalize(to_unit(x), self.mean, self.std)
        img = color_jitter(to_unit(x["image"]), x["jitter"])
        return normalize(img, self.mean, self.std)


class PilStage:
    """A list of timm / torchvision PIL transforms in the worker, HWC uint8 out; the batch
    stage normalises. Used for timm's eval transform, the resize-only training crop and
    auto-augment (timm's ``use_prefetcher`` split: its PIL ops, then normalise on the device)."""

    def __init__(self, ops, mean, std):
        self.ops = T.Compose(list(ops))
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))

    def sample(self, img) -> torch.Tensor:
        return hwc_uint8(self.ops(to_pil(img)[0]))

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(to_unit(x), self.mean, self.std)


class FloatStage:
    """A whole per-image float transform in the worker (random erasing needs the normalised
    image); the batch stage only stacks."""

    def __init__(self, transform):
        self.transform = transform

    def sample(self, img) -> torch.Tensor:
        return self.transform(to_pil(img)[0])

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return x
