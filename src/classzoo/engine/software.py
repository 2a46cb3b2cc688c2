"""The software a run computed with, recorded in resolved.yaml (``software``), and what changed
since the run began when an attempt resumes it.

Resumed runs continue bit for bit only on the software they began with: another PyTorch picks
other kernels, and another classzoo may compute its preprocessing differently (rounding slim's
training samples to uint8 levels moved their pixels by up to half a grey level). A resume on
other versions is allowed (upgrading a long run is a user's choice) but never silent: the
marker it writes in train.log, eval.log and metrics.jsonl names each version that differs from
those recorded in the checkpoint it continues from (the attempt that made that checkpoint ran
them).
"""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from classzoo.data import jpeg_region

# distributions whose code computes a run's numbers: kernels, models, decoding, augmentation
_PACKAGES = (
    *("torchvision", "timm", "numpy", "pillow", "simplejpeg", "torch_npu"),
    *("nvidia-dali-cuda110", "nvidia-dali-cuda120", "nvidia-dali-cuda130"),  # DALI's wheels
)


def versions() -> dict[str, str]:
    """This process's versions: classzoo (as installed: the engine does not import the package
    above it), Python, torch (with its build tag, e.g. +cu130) and its CUDA, each installed
    package of :data:`_PACKAGES`, and the JPEG window decoder's libjpeg-turbo (or ``off``)."""
    found = {"classzoo": _installed("classzoo") or "(not installed)"}
    found["python"] = platform.python_version()
    found["torch"] = str(torch.__version__)  # a TorchVersion: YAML wants a plain str
    if torch.version.cuda:
        found["cuda"] = torch.version.cuda
    for name in _PACKAGES:
        version = _installed(name)
        if version is not None:
            found[name] = version
    # what decodes training crops' JPEG windows (the same pixels either way: recorded, not
    # a version a resume must match, yet a difference is said like any other)
    found["jpeg_windows"] = jpeg_region.state()
    return found


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def resume_note(record: dict | None, now: dict[str, str]) -> str | None:
    """What a resume's marker adds about the software, given the resolved ``record`` stored in
    the checkpoint it continues from: the versions that differ from this attempt's (None when
    none does), or that the checkpoint records none (made by a classzoo that kept none)."""
    then = (record or {}).get("software")
    if not isinstance(then, dict) or not then:
        return "; its checkpoint records no software versions (an older classzoo): unchecked"
    names = [*now, *(k for k in then if k not in now)]
    moved = [
        f"{k} {then.get(k, '(none)')} -> {now.get(k, '(none)')}"
        for k in names
        if then.get(k) != now.get(k)
    ]
    if not moved:
        return None
    return f" on other software ({', '.join(moved)}): not bit for bit from here on"
