"""TF-slim's ``vgg_preprocessing`` and ``inception_preprocessing`` as two-stage pipelines.

Each preset has ``sample(img)`` (per image, in a DataLoader worker: crop and resize; eval:
float32 HWC, TF's values; training: rounded to uint8 levels, HWC, inception planar CHW) and
``batch(x)`` (per collated batch, on the device: colour ops
and scaling, NCHW float32, channels_last on a CPU); calling the preset does both for one image
(CHW). ``img`` is an
:class:`~classzoo.data.decode.EncodedImage` (decoded here with TF's pixels; training decodes at
a reduced DCT scale when the sampled crop allows it), a PIL image or an HWC uint8 array.

Eval presets give TensorFlow's exact pixels (tests/test_tf_preprocessing.py, difference 0).
Train presets draw every random number from the global torch generator, in slim's order (a
trainer that seeds it per sample gets repeatable runs and exact resumes), with TF's crop
distribution and colour ops (tests/test_tf_train_distribution.py). Their resized samples are
rounded to uint8 levels (within 0.51 of TF's float: half a level and grid_sample's 0.01): a
quarter of the bytes to collate, to pass between processes and to copy to the device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from PIL import Image

from classzoo.data.decode import (
    EncodedImage,
    Window,
    WindowPlan,
    dct_denominator,
    decode_scaled,
    decode_window,
)
from classzoo.data.device import sub_channels
from classzoo.data.tf_color import draw_distortion
from classzoo.data.tf_color_batch import distort_batch
from classzoo.data.tf_crop import (
    central_crop_box,
    check_crop_ranges,
    sample_distorted_bounding_box,
    smallest_size_at_least,
    uniform_int,
)
from classzoo.data.tf_resize import (
    RESIZE_METHODS,
    bilinear_hwc,
    bilinear_hwc_fast,
    legacy_coords,
    resize_tf1,
    sampled_window,
)
from classzoo.errors import UserError

VGG_MEAN_RGB = (123.68, 116.78, 103.94)  # vgg_preprocessing _R_MEAN, _G_MEAN, _B_MEAN
_INV_255 = torch.tensor(1.0 / 255.0, dtype=torch.float32)  # convert_image_dtype: x * (1./255)
PRESETS = ("inception", "vgg")


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
    return t.contiguous()


def image_hw(img) -> tuple[int, int]:
    """(height, width) of any accepted input; an encoded image is not decoded for it."""
    if isinstance(img, EncodedImage):
        return img.size()
    if isinstance(img, Image.Image):
        return img.size[1], img.size[0]
    return int(img.shape[0]), int(img.shape[1])


def load_hwc(img) -> torch.Tensor:
    """HWC uint8 pixels of the whole image (TF's decode_jpeg pixels for encoded JPEGs)."""
    if isinstance(img, EncodedImage):
        return _rgb_hwc(decode_scaled(img, tf_pixels=True)[0])
    return _rgb_hwc(img)


def load_window(img, denom: int, plan: WindowPlan) -> tuple[torch.Tensor, Window, Any]:
    """The pixels ``plan`` asks for (:func:`~classzoo.data.decode.decode_window`: TF's
    decode_jpeg pixels, at 1/``denom`` when possible) as an HWC uint8 tensor (a view), the
    :class:`Window` they are, and what ``plan`` gave with them. A decoded input is its own
    whole window."""
    if isinstance(img, EncodedImage):
        win, extra = decode_window(img, True, denom, plan)
        px = win.pixels  # simplejpeg's and the window decoder's arrays are writable; PIL's not
        return (torch.from_numpy(px) if px.flags.writeable else _rgb_hwc(px)), win, extra
    x = _rgb_hwc(img)
    size = (int(x.shape[0]), int(x.shape[1]))
    return x, Window(x.numpy(), 1, size), plan(size, 1)[1]


def _levels(x: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of uint8 pixels (a convex mix of levels 0..255) rounded to uint8, in
    ``x``'s shape, C-contiguous: a quarter of float32's bytes to collate and to send to the
    device. Rounding moves a pixel by at most half a level (1/510 in [0, 1] units) before the
    batch stage's colour ops. numpy's cast: ~4x faster than torch's float-to-uint8 on a CPU.
    A convex mix of levels is at most 255 plus float32 rounding: + 0.5 truncates to 255, never
    wraps (no clamp needed)."""
    return torch.from_numpy(np.ascontiguousarray(x.add_(0.5).numpy(), dtype=np.uint8))


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """Collated HWC samples as an NCHW view (channels_last memory: no copy)."""
    return x.permute(0, 3, 1, 2)


class _Preset(ABC):
    """A slim preset: ``sample`` per image in a worker, ``batch`` on the collated batch."""

    @abstractmethod
    def sample(self, img): ...

    @abstractmethod
    def batch(self, x) -> torch.Tensor: ...

    def __call__(self, img) -> torch.Tensor:
        s = self.sample(img)
        one = {k: v[None] for k, v in s.items()} if isinstance(s, dict) else s[None]
        return self.batch(one)[0].contiguous()


def _check_side(name: str, value: int, image_size: int) -> None:
    if value < image_size:
        raise UserError(f"{name}={value} is smaller than image_size={image_size}")


class _VggBatch(_Preset):
    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return sub_channels(_nchw(x), VGG_MEAN_RGB)  # RGB mean subtraction, 0-255 units


class VggEval(_VggBatch):
    """vgg_preprocessing.preprocess_for_eval: aspect-preserving TF1 bilinear resize of the
    short side to ``resize_side``, central ``image_size`` crop, RGB mean subtraction (0-255)."""

    def __init__(self, image_size: int = 224, resize_side: int = 256) -> None:
        _check_side("resize_side", resize_side, image_size)
        self.image_size, self.resize_side = image_size, resize_side

    def sample(self, img) -> torch.Tensor:
        x = load_hwc(img)
        h, w = x.shape[:2]
        new_h, new_w = smallest_size_at_least(h, w, self.resize_side)
        size = self.image_size
        # _central_crop: offset = (new - crop) / 2, truncated by tf.to_int32
        ys = legacy_coords(h, new_h, (new_h - size) // 2, size)
        xs = legacy_coords(w, new_w, (new_w - size) // 2, size)
        return bilinear_hwc(x, ys, xs)

    def __repr__(self) -> str:
        return f"VggEval(image_size={self.image_size}, resize_side={self.resize_side})"


class VggTrain(_VggBatch):
    """vgg_preprocessing.preprocess_for_train: short side ~ U_int[min, max] (inclusive),
    aspect-preserving TF1 bilinear resize, random ``image_size`` crop, random left-right
    flip, RGB mean subtraction. A JPEG is decoded at 1/2, 1/4 or 1/8 when the resized image
    is at most that size. ``sample`` gives uint8 HWC levels; ``batch`` the float difference."""

    def __init__(
        self, image_size: int = 224, resize_side_min: int = 256, resize_side_max: int = 512
    ) -> None:
        _check_side("resize_side_min", resize_side_min, image_size)
        _check_side("resize_side_max", resize_side_max, resize_side_min)
        self.image_size = image_size
        self.resize_side_min, self.resize_side_max = resize_side_min, resize_side_max

    def draw(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int], bool]:
        """slim's random numbers for an h x w image, in its order: the resized size
        (new_h, new_w), the crop's (top, left) in it, the flip."""
        side = self.resize_side_min + uniform_int(self.resize_side_max - self.resize_side_min + 1)
        new_h, new_w = smallest_size_at_least(h, w, side)
        size = self.image_size
        # _random_crop: offset = random_uniform([], maxval=new - crop + 1, int32)
        top, left = uniform_int(new_h - size + 1), uniform_int(new_w - size + 1)
        flip = torch.rand(()).item() < 0.5  # random_flip_left_right: mirror when u < .5
        return (new_h, new_w), (top, left), flip

    def sample(self, img) -> torch.Tensor:
        h, w = image_hw(img)
        (new_h, new_w), (top, left), flip = self.draw(h, w)
        size = self.image_size

        def plan(hw: tuple[int, int], _: int):  # the decoded image's sample positions
            ys, xs = legacy_coords(hw[0], new_h, top, size), legacy_coords(hw[1], new_w, left, size)
            return sampled_window(ys, xs, *hw), (ys, xs)

        x, win, (ys, xs) = load_window(img, dct_denominator((h, w), (new_h, new_w)), plan)
        ys, xs = ys - win.top, xs - win.left  # exact: float32 coordinates less integers <= them
        out = bilinear_hwc_fast(x, ys, xs.flip(0) if flip else xs)
        return _levels(out.contiguous())  # torch's float transpose, then a contiguous cast

    def __repr__(self) -> str:
        return (
            f"VggTrain(image_size={self.image_size}, resize_side_min={self.resize_side_min}, "
            f"resize_side_max={self.resize_side_max})"
        )


class InceptionEval(_Preset):
    """inception_preprocessing.preprocess_for_eval: x * (1/255), central_crop(fraction),
    TF1 bilinear resize to ``image_size``, then (x - 0.5) * 2 -> [-1, 1]."""

    def __init__(self, image_size: int = 299, central_fraction: float = 0.875) -> None:
        if not 0.0 < central_fraction <= 1.0:
            raise UserError(f"central_fraction must be in (0, 1], got {central_fraction}")
        self.image_size, self.central_fraction = image_size, central_fraction

    def sample(self, img) -> torch.Tensor:
        x = load_hwc(img)
        top, left, h, w = central_crop_box(x.shape[0], x.shape[1], self.central_fraction)
        size = self.image_size
        ys, xs = legacy_coords(h, size, 0, size), legacy_coords(w, size, 0, size)
        return bilinear_hwc(x, ys, xs, region=(top, left, h, w), prescale=_INV_255)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return (_nchw(x) - 0.5) * 2.0

    def __repr__(self) -> str:
        return (
            f"InceptionEval(image_size={self.image_size}, central_fraction={self.central_fraction})"
        )


class InceptionTrain(_Preset):
    """inception_preprocessing.preprocess_for_train with no bounding box (slim's trainer):
    sample_distorted_bounding_box crop, resize to ``image_size`` (fast_mode: TF1 bilinear;
    else one of the 4 TF1 methods at random), random left-right flip, distort_color
    (fast_mode: brightness then saturation; else one of 4 orderings adding hue and contrast),
    clip to [0, 1], (x - 0.5) * 2. The worker crops, resizes and flips, and returns the image
    planar (``"image_chw"``: CHW, so the colour ops read whole planes): in fast_mode as uint8
    levels (``x * 1/255`` follows on the batch), else float32 in [0, 1] (bicubic overshoots
    it). The colour ops run on the batch with the factors the worker drew
    (:func:`~classzoo.data.tf_color_batch.distort_batch`). ``batch`` also takes HWC samples
    under ``"image"`` (the layout of the other presets and of the DALI loader)."""

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
        check_crop_ranges(
            self.area_range, self.aspect_ratio_range, min_object_covered, max_attempts
        )

    def draw(self, h: int, w: int) -> tuple[tuple[int, int, int, int], str, bool, torch.Tensor]:
        """slim's random numbers for an h x w image, in its order: the crop box (top, left,
        height, width), the resize method, the flip, the colour parameters."""
        box = sample_distorted_bounding_box(
            h,
            w,
            min_object_covered=self.min_object_covered,
            aspect_ratio_range=self.aspect_ratio_range,
            area_range=self.area_range,
            max_attempts=self.max_attempts,
        )
        # apply_with_random_selector(num_cases = 1 if fast_mode else 4)
        method = RESIZE_METHODS[0 if self.fast_mode else uniform_int(4)]
        flip = torch.rand(()).item() < 0.5  # random_flip_left_right
        return box, method, flip, draw_distortion(self.fast_mode)

    def sample(self, img) -> dict[str, torch.Tensor]:
        box, method, flip, color = self.draw(*image_hw(img))
        return {"image_chw": self._crop_resize(img, box, method, flip), "color": color}

    def _crop_resize(self, img, box, method: str, flip: bool) -> torch.Tensor:
        top, left, h, w = box
        size = self.image_size
        if method != "bilinear":
            x, win, _ = load_window(img, 1, lambda hw, d: ((top, top + h, left, left + w), None))
            crop = x[top - win.top :, left - win.left :][:h, :w].to(torch.float32) * _INV_255
            out = resize_tf1(crop, size, method, channels_last=True).permute(2, 0, 1)
            return (out.flip(2) if flip else out).contiguous()

        def plan(hw: tuple[int, int], d: int):  # sample positions, and the pixels they read
            if d == 1:  # TF's own arithmetic on the crop: positions in the box, clamped to it
                ys, xs = legacy_coords(h, size, 0, size), legacy_coords(w, size, 0, size)
                y0, y1, x0, x1 = sampled_window(ys, xs, h, w)
                return (top + y0, top + y1, left + x0, left + x1), (ys, xs)
            # the crop in the 1/d image: origin top/d, step (h/d)/size
            ys = top / d + torch.arange(size, dtype=torch.float32) * (h / d / size)
            xs = left / d + torch.arange(size, dtype=torch.float32) * (w / d / size)
            return sampled_window(ys, xs, *hw), (ys, xs)

        x, win, (ys, xs) = load_window(img, dct_denominator((h, w), (size, size)), plan)
        region = None
        if win.denom == 1:  # the box's origin in the window
            region = (top - win.top, left - win.left, h, w)
        else:  # exact: float32 positions less integers <= them
            ys, xs = ys - win.top, xs - win.left
        xs = xs.flip(0) if flip else xs
        if not self.fast_mode:  # other methods overshoot [0, 1]: a batch of float32 samples
            return bilinear_hwc_fast(x, ys, xs, region=region, prescale=_INV_255, planar=True)
        return _levels(bilinear_hwc_fast(x, ys, xs, region=region, planar=True))

    def batch(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """distort_color, clip, ``(x - 0.5) * 2`` as ``2x - 1``; on a CPU channels_last (float
        samples: written over, consumed)."""
        planar = "image_chw" in x
        img = x["image_chw"] if planar else x["image"]
        # levels * (1/255), or the worker's resize of pixels * (1/255): values in [0, 1]
        kw = dict(scale=2.0, offset=-1.0, value_range=(0.0, 1.0))
        return distort_batch(img, x["color"], self.fast_mode, channels_first=planar, **kw)

    def __repr__(self) -> str:
        return (
            f"InceptionTrain(image_size={self.image_size}, fast_mode={self.fast_mode}, "
            f"area_range={self.area_range}, aspect_ratio_range={self.aspect_ratio_range}, "
            f"min_object_covered={self.min_object_covered}, max_attempts={self.max_attempts})"
        )


def build_tf_transform(
    preset: str, train: bool, image_size: int | None = None, crop_pct: float | None = None
) -> _Preset:
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
