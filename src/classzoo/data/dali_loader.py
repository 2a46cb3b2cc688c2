"""An NVIDIA DALI training loader for ImageFolder splits (``data.loader: dali``, extra ``dali``).

DALI decodes, crops, resizes and flips; everything random stays classzoo's. The sample order is
:class:`~classzoo.data.sampling.TrainBatchSampler`'s (per rank, per epoch, resumable), and each
sample's crop, flip, interpolation and colour factors are drawn in Python with the calls the
torch worker stage makes, from the global generators seeded with the sample's seed exactly as
:class:`~classzoo.data.sampling.SeededDataset` seeds them. The file bytes and those parameters
go to DALI through one ``fn.external_source``, batch by batch. So a DALI batch has the torch
path's samples, labels and random parameters, and resumes where the torch path would.

Batches are what the torch worker stage collates: ``uint8`` NHWC (the resized samples rounded to
levels, as the workers round them; they give slim inception's planar, as NCHW), in a dict with
the per-image colour parameters when the preset has colour ops, so the split's
``Pipeline.batch`` applies unchanged. Pixels (tests/test_dali_loader.py):

* timm ``rrc``: ``decoders.image_slice`` (libjpeg-turbo ISLOW: PIL's pixels) of the crop box,
  then ``resize`` with antialiasing (bilinear / bicubic as PIL's filters; nearest through a ROI
  shifted to torch's ``floor(k * scale)``), then ``flip``;
* slim vgg / inception (fast_mode): TF's IFAST decode (``use_fast_idct``: TF's pixels), then
  TF1's legacy bilinear resize (``src = dst * in / out``, no antialiasing), reproduced with a
  ROI shifted by ``0.5 - 0.5 * scale``; vgg resizes the whole image, inception its crop.

On CUDA the decoder is ``mixed`` (nvJPEG: pixels within a few grey levels of libjpeg's) and the
ops run on the GPU; elsewhere the pipeline is CPU-only. What DALI cannot reproduce is refused
with one line (:func:`plan_for`).
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode

from classzoo.data.decode import EncodedImage, UnreadableImage, decode_pil, read_file
from classzoo.data.imagefolder import ImageFolderDataset
from classzoo.data.tf_presets import InceptionTrain, VggTrain
from classzoo.data.tf_resize import resize_scale
from classzoo.data.timm_pipeline import FloatStage, PilStage, TimmTrain
from classzoo.errors import UserError

log = logging.getLogger("classzoo")

_INSTALL = (
    "data.loader=dali needs the dali extra: pip install 'classzoo[dali]' (nvidia-dali-cuda120)"
)
_USE_TORCH = "use data.loader: torch"
_PREFETCH = 2  # DALI's prefetch_queue_depth: batches decoded ahead of the step


def _dali():
    try:
        import nvidia.dali as dali
    except ImportError:
        raise UserError(f"{_INSTALL}; nvidia.dali is not importable") from None
    return dali


@dataclass(frozen=True)
class Plan:
    """What the DALI graph does for one preset; :func:`draw` makes its per-image inputs."""

    stage: Any
    size: int
    antialias: bool
    fast_idct: bool  # TF's IFAST DCT (slim presets) or ISLOW (PIL's pixels)
    extra: str | None  # the key of the per-image parameters in the worker's dict


def plan_for(stage: Any) -> Plan:
    """The DALI plan of a training stage (``Pipeline.sample``'s object); a one-line UserError
    naming the preset / option for what DALI cannot reproduce faithfully."""
    stage = getattr(getattr(stage, "fn", stage), "__self__", stage)  # Stage -> bound method
    if isinstance(stage, TimmTrain):
        extra = "jitter" if stage.jitter is not None else None
        return Plan(stage, stage.size, True, False, extra)
    if isinstance(stage, VggTrain):
        return Plan(stage, stage.image_size, False, True, None)
    if isinstance(stage, InceptionTrain):
        if not stage.fast_mode:  # 4 random TF1 resize methods: area / bicubic not in DALI
            raise UserError(
                f"data.loader=dali: slim inception train with fast_mode=False; {_USE_TORCH}"
            )
        return Plan(stage, stage.image_size, False, True, "color")
    raise UserError(f"data.loader=dali cannot reproduce {_refused(stage)}; {_USE_TORCH}")


def _refused(stage: Any) -> str:
    if isinstance(stage, FloatStage):
        return "timm random erasing (data.re_prob > 0)"
    if isinstance(stage, PilStage):
        names = [type(op).__name__ for op in stage.ops.transforms]
        if any("Augment" in n or "AugMix" in n for n in names):
            return "timm auto augment (data.auto_augment)"
        if stage.what:
            return f"{stage.what} ({', '.join(names)})"
    return f"the preprocessing {type(stage).__name__} (it loads training splits only)"


def draw(plan: Plan, h: int, w: int) -> tuple:
    """The per-image parameters for an h x w image, from the global generators (seeded per
    sample by the caller), with the calls and in the order of the torch worker stage:
    (anchor (x, y), shape (w, h) of the region to decode, ROI start and end (y, x) in it,
    interpolation, flip, extra parameters or None)."""
    stage, size = plan.stage, plan.size
    if isinstance(stage, TimmTrain):
        (top, left, ch, cw), interp, flip, params = stage.draw(h, w)
        lo = np.zeros(2, np.float32)
        if interp == InterpolationMode.NEAREST:  # torch's nearest: src = floor(dst * scale)
            lo = np.array([-0.5 * ch / size, -0.5 * cw / size], np.float32)
        roi = (lo, lo + np.array([ch, cw], np.float32))
        extra = params if plan.extra else None
        return (left, top), (cw, ch), roi, _INTERP[interp], flip, extra
    if isinstance(stage, VggTrain):
        new_hw, top_left, flip = stage.draw(h, w)
        roi = legacy_roi((h, w), new_hw, top_left, size)
        return (0, 0), (w, h), roi, "linear", flip, None
    (top, left, ch, cw), _, flip, color = stage.draw(h, w)  # fast_mode: bilinear
    roi = legacy_roi((ch, cw), (size, size), (0, 0), size)
    return (left, top), (cw, ch), roi, "linear", flip, color


_INTERP = {
    InterpolationMode.BILINEAR: "linear",
    InterpolationMode.BICUBIC: "cubic",
    InterpolationMode.NEAREST: "nn",
}


def legacy_roi(
    in_hw: tuple[int, int], out_hw: tuple[int, int], offset: tuple[int, int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ROI (y, x) with which DALI's half-pixel resize of an ``in_hw`` image samples TF1's
    legacy grid of the ``out_hw`` resize, outputs ``offset .. offset + size``:
    DALI reads ``src = start + (k + .5) * s - .5`` with ``s = (end - start) / size``; TF1 reads
    ``src = (offset + k) * s`` with ``s = in / out`` (float32, image_resizer_state.h). Equal
    when ``start = (offset - .5) * s + .5``."""
    s = np.array([float(resize_scale(i, o)) for i, o in zip(in_hw, out_hw)], np.float64)
    start = (np.asarray(offset, np.float64) - 0.5) * s + 0.5
    return start.astype(np.float32), (start + size * s).astype(np.float32)


def build_pipeline(plan: Plan, source, batch_size: int, num_threads: int, device_id):
    """The DALI graph: external source -> ROI decode -> resize (with ROI) -> flip.
    ``device_id`` None: CPU only; else the CUDA device, nvJPEG (mixed) decode, GPU ops."""
    dali = _dali()
    from nvidia.dali import fn, types

    pipe = dali.Pipeline(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        prefetch_queue_depth=_PREFETCH,
        seed=0,  # nothing random runs in DALI; fixed anyway
    )
    with pipe:
        data, anchor, shape, roi_start, roi_end, interp_code, flip = fn.external_source(
            source=source, num_outputs=7, batch=True, parallel=False
        )
        gpu = device_id is not None
        img = fn.decoders.image_slice(
            data,
            anchor,
            shape,
            axis_names="WH",
            device="mixed" if gpu else "cpu",
            output_type=types.RGB,
            adjust_orientation=False,  # PIL / simplejpeg / TF ignore EXIF orientation
            use_fast_idct=plan.fast_idct,
            jpeg_fancy_upsampling=True,  # libjpeg's default, as PIL and TF decode
        )
        img = fn.resize(
            img,
            size=[plan.size, plan.size],
            roi_start=roi_start,
            roi_end=roi_end,
            interp_type=fn.cast(interp_code, dtype=types.INTERP_TYPE),
            antialias=plan.antialias,
            dtype=types.UINT8,  # rounded to levels, as the torch worker stage rounds them
        )
        pipe.set_outputs(fn.flip(img, horizontal=flip))
    pipe.build()
    return pipe


class _Feed:
    """DALI's external source: one call per batch, in the sampler's order. Keeps the labels,
    extra parameters and file names of the batches handed to DALI, first in first out."""

    def __init__(self, files, targets, skip_corrupt: bool, plan: Plan) -> None:
        self.files, self.targets, self.skip_corrupt, self.plan = files, targets, skip_corrupt, plan
        self.batches: Iterator = iter(())
        self.pending: deque = deque()
        from nvidia.dali import types

        self.codes = {  # the DALIInterpType values, fed as int32 and cast in the graph
            name: np.array(int(getattr(types, f"INTERP_{name.upper()}")), np.int32)
            for name in ("linear", "cubic", "nn")
        }

    def start(self, batches: Iterator) -> None:
        self.batches, self.pending = batches, deque()

    def __call__(self):
        items = next(self.batches)  # StopIteration ends DALI's epoch
        rows, labels, extras, names = [], [], [], []
        with _keep_rng():
            for index, seed in items:
                i, data, (anchor, shape, (lo, hi), interp, flip, extra) = self._load(index, seed)
                anchor, shape = np.array(anchor, np.int32), np.array(shape, np.int32)
                flag = np.array(int(flip), np.int32)
                rows.append(
                    (np.frombuffer(data, np.uint8), anchor, shape, lo, hi, self.codes[interp], flag)
                )
                labels.append(int(self.targets[i]))
                extras.append(extra)
                names.append(self.files[i])
        extra = torch.stack(extras) if self.plan.extra else None
        self.pending.append((torch.tensor(labels, dtype=torch.int64), extra, names))
        return tuple(list(col) for col in zip(*rows))

    def _load(self, index: int, seed: int):
        """ImageFolderDataset.__getitem__'s rule: an unreadable file is an error, or with
        skip_corrupt the next readable one (same seed); SeededDataset's seeding."""
        n = len(self.files)
        _seed_all(seed)
        for attempt in range(n):
            i = (index + attempt) % n
            try:
                data = read_file(self.files[i])
                h, w = EncodedImage(data, self.files[i]).size()
                return i, data, draw(self.plan, h, w)
            except UnreadableImage as exc:
                if not self.skip_corrupt:
                    raise
                log.warning("skipped: %s", exc)
        raise UserError(f"no readable image among {n} files")


def _seed_all(seed: int) -> None:
    # SeededDataset._load: the CPU generator, random, numpy (32 bits)
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)


class _keep_rng:
    """The caller's torch (CPU), random and numpy generator states, restored on exit: the
    draws run in the training process, whose dropout must not see them."""

    def __enter__(self) -> None:
        self.t, self.r, self.n = torch.get_rng_state(), random.getstate(), np.random.get_state()

    def __exit__(self, *exc) -> None:
        torch.set_rng_state(self.t)
        random.setstate(self.r)
        np.random.set_state(self.n)


class DaliTrainLoader:
    """Iterates ``(samples, targets)`` of the sampler's current epoch (``set_epoch`` before
    ``iter``, as the loop does); ``len()`` is the sampler's. ``samples``: the torch worker
    stage's collated output, on the CUDA device when the pipeline runs there."""

    def __init__(self, feed: _Feed, sampler, num_threads: int, device: torch.device) -> None:
        self.feed, self.sampler, self.num_threads = feed, sampler, num_threads
        self.device = torch.device(device)
        self.device_id = None
        if self.device.type == "cuda":
            self.device_id = (
                self.device.index if self.device.index is not None else torch.cuda.current_device()
            )
        self.pipe = None  # reused while every epoch is read to its end (then reset)
        self.copy_stream = None  # CUDA only

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        self.feed.start(iter(self.sampler))  # the sampler's epoch and start, read now
        if self.pipe is None:
            self.pipe = build_pipeline(
                self.feed.plan, self.feed, self.sampler.batch_size, self.num_threads, self.device_id
            )
        else:
            self.pipe.reset()
        drained = False
        try:
            while True:
                try:
                    (out,) = self._run()
                except StopIteration:
                    drained = True
                    return
                labels, extra, _ = self.feed.pending.popleft()
                images = self._to_torch(out)
                yield (
                    (images if extra is None else {"image": images, self.feed.plan.extra: extra}),
                    labels,
                )
        finally:
            if not drained:  # abandoned mid-epoch (or failed): batches are queued in DALI
                self.pipe = None

    def _run(self):
        try:
            return self.pipe.run()  # host-synchronous: the batch is complete when returned
        except StopIteration:
            raise
        except RuntimeError as exc:
            raise _decode_error(exc, self.feed.pending) from None

    def _to_torch(self, out) -> torch.Tensor:
        t = out.as_tensor()
        if self.device_id is None:
            return torch.from_dlpack(t)  # DALI's CPU buffer, kept alive by the tensor
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        # A torch-owned copy made on the loader's own stream, which the host waits for (that
        # stream runs nothing else: no wait on the model's work). The caching allocator then
        # owns the memory; a consumer on another stream marks it (record_stream).
        if self.copy_stream is None:
            self.copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self.copy_stream):
            dst = torch.empty(t.shape(), dtype=to_torch_type[t.dtype], device=self.device)
            feed_ndarray(t, dst, cuda_stream=self.copy_stream)
        self.copy_stream.synchronize()
        dst.record_stream(torch.cuda.current_stream(self.device))
        return dst


def _decode_error(exc: RuntimeError, pending: deque) -> UserError:
    """The DALI failure as one line naming the file: the queued batches' files are decoded
    with PIL to find it (DALI's message does not name it)."""
    for _, _, names in pending:
        for name in names:
            try:
                decode_pil(read_file(name), name)
            except UnreadableImage as bad:
                return UnreadableImage(f"{bad} (DALI could not decode it)")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"data.loader=dali: DALI failed: {first}; {_USE_TORCH} to find the cause")


def check_supported(dataset) -> Plan:
    """The plan for ``dataset``, or one UserError naming what DALI cannot reproduce (checked
    before a run folder exists)."""
    _dali()
    if not isinstance(dataset, ImageFolderDataset):
        raise UserError(
            f"data.loader=dali reads ImageFolder splits only, not {type(dataset).__name__}; "
            f"{_USE_TORCH}"
        )
    return plan_for(dataset.transform)


def dali_train_loader(
    dataset, sampler, device: torch.device | str, num_threads: int
) -> DaliTrainLoader:
    """The DALI loader of a training ImageFolder split.

    ``dataset``: the split's ImageFolderDataset (its ``transform`` is the pipeline's per-image
    stage, which names the preset); ``sampler``: its TrainBatchSampler (order, batch size,
    epoch, resume position); ``device``: the training device (CUDA: DALI on that GPU, else CPU
    only); ``num_threads``: DALI's CPU threads."""
    plan = check_supported(dataset)
    feed = _Feed(dataset.files, dataset.targets, dataset.skip_corrupt, plan)
    return DaliTrainLoader(feed, sampler, max(1, int(num_threads)), torch.device(device))
