"""The software a run computed with, recorded in resolved.yaml (``software``), and what changed
since the run began when an attempt resumes it.

Resumed runs continue bit for bit only on the software they began with: another PyTorch picks
other kernels, and another classzoo may compute its preprocessing differently (rounding slim's
training samples to uint8 levels moved their pixels by up to half a grey level). A resume on other versions
is allowed (upgrading a long run is a user's choice) but never silent: the marker it writes in
train.log, eval.log and metrics.jsonl names each version that changed.
"""

from __future__ import annotations

import importlib.metadata
import platform

import torch

import classzoo

# distributions whose code computes a run's numbers: kernels, models, decoding, augmentation
_PACKAGES = ("torchvision", "timm", "numpy", "pillow", "simplejpeg", "torch_npu", "nvidia-dali")


def versions() -> dict[str, str]:
    """This process's versions: classzoo, Python, torch (with its build tag, e.g. +cu130) and
    its CUDA, and each installed package of :data:`_PACKAGES`."""
    found = {"classzoo": classzoo.__version__, "python": platform.python_version()}
    found["torch"] = str(torch.__version__)  # a TorchVersion: YAML wants a plain str
    if torch.version.cuda:
        found["cuda"] = torch.version.cuda
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def changes(then: dict[str, str] | None, now: dict[str, str]) -> str | None:
    """``"torch 2.13.0 -> 2.14.1, timm 1.0.31 -> (none)"``: what differs between the versions
    a run recorded and this attempt's; None when nothing does, or when the record is from a
    classzoo that kept none."""
    if not then:
        return None
    names = [*now, *(k for k in then if k not in now)]
    moved = [
        f"{k} {then.get(k, '(none)')} -> {now.get(k, '(none)')}"
        for k in names
        if then.get(k) != now.get(k)
    ]
    return ", ".join(moved) or None
