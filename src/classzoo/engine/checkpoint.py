"""Checkpoints: atomic writes, rotation, and everything a bit-exact resume needs.

A checkpoint is a ``torch.save`` dict of tensors and plain values only, so it loads with
``weights_only=True`` (no code is ever unpickled): model, EMA, optimizer, scheduler, AMP scaler,
every RNG state, the position in the data (epoch and samples consumed) and the resolved config.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classzoo.errors import UserError

log = logging.getLogger("classzoo")

CKPT_RE = re.compile(r"^ckpt-(\d{9})\.pt$")


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state holds an ndarray; store it as a tensor so weights_only loading accepts it
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """``<dir>/ckpt-<step>.pt`` files; keeps the newest ``keep_max``."""

    def __init__(self, directory: Path, keep_max: int = 5) -> None:
        self.directory = Path(directory)
        self.keep_max = keep_max

    def path_for(self, step: int) -> Path:
        return self.directory / f"ckpt-{step:09d}.pt"

    def list(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if CKPT_RE.match(p.name)]
        return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))

    def save(self, step: int, payload: dict[str, Any]) -> Path:
        path = self.path_for(step)
        atomic_save(payload, path)
        for old in self.list()[: -self.keep_max] if self.keep_max > 0 else []:
            old.unlink(missing_ok=True)
        return path

    def latest_good(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that loads; unreadable ones are reported and passed over."""
        for path in reversed(self.list()):
            try:
                return path, load(path)
            except UserError as exc:
                log.warning("skipping unreadable checkpoint: %s", exc)
        return None


def load(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path} is not a classzoo training checkpoint (no 'model' entry)")
    return ckpt
