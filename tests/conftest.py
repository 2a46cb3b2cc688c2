"""Shared fixtures: small real image datasets written to disk by the tests themselves."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # tests/tf_compat.py and other test helpers

# Runs started by tests compute with a fixed thread count: a run measures the cores other
# processes keep busy at its first start (engine/threads.py), and a load blip during one of two
# runs a test compares bit for bit would change its float results. tests/test_loader_threads.py
# tests the measurement with this variable removed.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))


def write_imagefolder(
    root: Path,
    counts: dict[str, int],
    size: int = 16,
    fmt: str = "png",
    seed: int = 0,
    level: dict[str, int] | None = None,
) -> Path:
    """``root/<class>/<i>.<fmt>``; each class gets its own colour plus noise, so it is learnable.

    ``level``: a constant grey level per class instead (for hand-computable predictions).
    """
    rng = np.random.default_rng(seed)
    for ci, (name, n) in enumerate(sorted(counts.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            if level is not None:
                pixels = np.full((size, size, 3), level[name], dtype=np.uint8)
            else:
                base = np.array([(ci * 97) % 256, (ci * 57 + 80) % 256, (ci * 31 + 160) % 256])
                pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.{fmt}")
    return root


def kill_in_the_evaluation_after(checkpoint: Path, argv: list[str]) -> None:
    """Run ``classzoo ARGV`` (one torch thread) and SIGKILL its process group 0.2 s after
    ``checkpoint`` appears: inside the evaluation that follows it when the validation split is
    large enough (800 images of 16 px take seconds)."""
    import signal
    import subprocess
    import time

    code = "import sys; from classzoo.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # into the evaluation
    assert proc.poll() is None, "the run ended before it could be killed in its evaluation"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def foolbox_data() -> Path:
    """The data folder of the foolbox package: 20 real labelled ImageNet validation JPEGs
    (``imagenet_<index>_<label>.jpg``). Found without importing foolbox (its files are read,
    the package is not run); the test is skipped where it is not installed."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or spec.origin is None:
        pytest.skip("foolbox (its 20 ImageNet JPEGs) is not installed")
    return Path(spec.origin).parent / "data"


def tiny_checkpoint(path: Path):
    """A plain torch.save of a 4-class resnet10t (narrow: 8-64 channels) with the config a
    checkpoint without a classzoo record needs; returns the model."""
    import timm
    import torch

    model = timm.create_model(
        "resnet10t", num_classes=4, channels=(8, 16, 32, 64), stem_width=8
    ).eval()
    config = {
        "model": {
            "name": "resnet10t",
            "num_classes": 4,
            "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8},
        },
        "data": {"image_size": 32, "crop_pct": 1.0},
    }
    torch.save({"model": model.state_dict(), "config": config}, path)
    return model


@pytest.fixture
def small_imagefolder(tmp_path: Path) -> Path:
    """train/ (4 classes x 10) and val/ (4 x 5) of 16 px images."""
    classes = ["a", "b", "c", "d"]
    write_imagefolder(tmp_path / "data" / "train", dict.fromkeys(classes, 10), seed=1)
    write_imagefolder(tmp_path / "data" / "val", dict.fromkeys(classes, 5), seed=2)
    return tmp_path / "data"


@pytest.fixture(autouse=True)
def _classzoo_logging_reset():
    """In-process CLI calls install classzoo's console handler (propagate off, so the terminal
    does not print twice); undo it after each test so caplog sees the next test's records."""
    yield
    import logging

    logger = logging.getLogger("classzoo")
    for h in [h for h in logger.handlers if getattr(h, "_classzoo", False)]:
        logger.removeHandler(h)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)
