"""Training checkpoints: rotation, best-by-metric, fallback to the newest good one, RNG states.

A checkpoint is a ``torch.save`` dict of tensors and plain values only (loads with
``weights_only=True``): model, EMA, optimizer, scheduler, AMP scaler, every RNG state, the
position in the data and the config. Files are written and read only by
``classzoo.formats.torch_checkpoint`` (atomic, SHA-256 embedded and verified, bounded, schema).

The folder holds ``ckpt-<step:09d>.pt``; the newest ``keep_last`` are kept, plus the best
``keep_best`` by ``metric`` (ties keep the earlier step, as timm's CheckpointSaver does), and
``best.pt``, a hard link to (or copy of) the best one, replaced atomically: a stable name, like
timm's ``model_best.pth.tar``. ``index.json`` records each file's step and metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from classzoo.engine.devices import accelerator_rng_state, set_accelerator_rng_state
from classzoo.errors import UserError
from classzoo.formats.torch_checkpoint import (
    atomic_write,
    is_temporary,
    load_checkpoint_file,
    save_checkpoint_file,
)

log = logging.getLogger("classzoo")

CKPT_RE = re.compile(r"^ckpt-(\d{9})\.pt$")
BEST = "best.pt"
INDEX = "index.json"
_TRAINING_FIELDS = ("model", "optimizer", "progress")


def load(path: str | Path) -> dict[str, Any]:
    """A training checkpoint to resume from (``--resume FILE``): verified, with every field
    resume reads."""
    ckpt = load_checkpoint_file(path)
    missing = [k for k in _TRAINING_FIELDS if ckpt.get(k) is None]
    if missing:
        raise UserError(
            f"{path} is not a classzoo training checkpoint (no {', '.join(missing)}); "
            "weights alone load with --set model.checkpoint=FILE"
        )
    return ckpt


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # numpy's state holds an ndarray; store it as a tensor so weights_only loading accepts it
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    state.update(accelerator_rng_state())  # cuda / npu / mps: dropout draws from them
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    set_accelerator_rng_state(state)


def newest_in_run(path: str | Path) -> Path | None:
    """The newest ``ckpt-<step>.pt`` of a run folder (``<run>/checkpoints``) or of its
    checkpoints folder, as TF-slim's eval takes a folder's latest checkpoint; None when
    ``path`` is no such folder. A folder of the layout without a checkpoint is a UserError."""
    p = Path(path)
    folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    found = CheckpointManager(folder).list()
    if found:
        return found[-1]
    if folder != p or (folder / INDEX).exists():
        raise UserError(f"{p} is a run folder without checkpoints (no {folder}/ckpt-<step>.pt)")
    return None


def lower_is_better(metric: str) -> bool:
    """``loss`` / ``*_loss`` / ``*error`` rank ascending; accuracies (top1, top5) descending."""
    return metric.endswith("loss") or metric.endswith("error")


def _clean_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    """Plain finite floats (tensors and numpy scalars from an evaluation are converted)."""
    out = {}
    for name, value in (metrics or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[str(name)] = number
    return out


def _digest(body: dict[str, Any]) -> str:
    """SHA-256 of the index's canonical JSON: a flipped bit must not re-rank checkpoints."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class CheckpointManager:
    """``<dir>/ckpt-<step>.pt``: the newest ``keep_last`` (all if <= 0) plus the best
    ``keep_best`` by ``metric``, with ``best.pt`` when ``keep_best`` >= 1."""

    def __init__(
        self, directory: str | Path, keep_last: int = 5, keep_best: int = 0, metric: str = "top1"
    ) -> None:
        self.directory = Path(directory)
        self.keep_last, self.keep_best, self.metric = keep_last, keep_best, metric
        self._index: dict[str, dict[str, Any]] | None = None

    @property
    def best_path(self) -> Path:
        return self.directory / BEST

    def path_for(self, step: int) -> Path:
        return self.directory / f"ckpt-{step:09d}.pt"

    def list(self) -> list[Path]:
        """Every ``ckpt-<step>.pt`` entry by step, whatever its type (a FIFO is reported later)."""
        if not self.directory.is_dir():
            return []
        found = [self.directory / n for n in os.listdir(self.directory) if CKPT_RE.match(n)]
        return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))

    def clean_stale(self) -> list[Path]:
        """Remove temporaries left by saves that were killed; call once at start, on rank 0."""
        if not self.directory.is_dir():
            return []
        removed = []
        for name in sorted(os.listdir(self.directory)):
            if is_temporary(name):
                (self.directory / name).unlink(missing_ok=True)
                removed.append(self.directory / name)
                log.warning("removed %s, left by an interrupted save", self.directory / name)
        return removed

    def save(self, step: int, payload: dict[str, Any], metrics: dict | None = None) -> Path:
        """Write ``payload`` (plus ``metrics``) as ckpt-<step>.pt, then rotate and update best.pt."""
        path = self.path_for(step)
        clean = _clean_metrics(metrics)
        save_checkpoint_file({**payload, "metrics": clean}, path)
        index = self._entries()
        entry = index.setdefault(path.name, {"step": step, "metrics": {}})
        entry["metrics"] = {**entry["metrics"], **clean}
        self._commit(index, step)
        return path

    def record_metrics(self, step: int, metrics: dict) -> None:
        """Rank the already-saved checkpoint of ``step`` (an evaluation that ran after the save)."""
        index = self._entries()
        name = self.path_for(step).name
        if name not in index:
            raise UserError(
                f"no checkpoint of step {step} in {self.directory} to attach metrics to"
            )
        index[name]["metrics"] = {**index[name]["metrics"], **_clean_metrics(metrics)}
        self._commit(index, max(e["step"] for e in index.values()))

    def metrics_for(self, step: int) -> dict[str, float]:
        """The metrics recorded for the checkpoint of ``step`` ({} if none, or no such file)."""
        entry = self._entries().get(self.path_for(step).name)
        return dict(entry["metrics"]) if entry is not None else {}

    def latest_good(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that verifies and has what resume needs; each newer one that
        does not is logged with the reason. None if the folder has none; UserError if it has
        some and not one is readable (starting fresh would silently throw the run away)."""
        candidates = list(reversed(self.list()))
        reasons = []
        for path in candidates:
            try:
                ckpt = load(path)
            except UserError as exc:
                reasons.append(str(exc))
                log.warning("resume: skipping %s: %s", path.name, exc)
                continue
            if reasons:
                log.warning(
                    "resume: falling back to %s (%d newer checkpoint(s) skipped)",
                    path.name,
                    len(reasons),
                )
            return path, ckpt
        if candidates:
            raise UserError(
                f"--resume auto: none of the {len(candidates)} checkpoints in {self.directory} "
                f"is readable (newest: {reasons[0]})"
            )
        return None

    # ---- rotation and best ------------------------------------------------------------------

    def _ranked(self, index: dict[str, dict[str, Any]]) -> list[str]:
        """Names with the metric, best first; ties: the earlier step first (timm's rule)."""
        sign = 1.0 if lower_is_better(self.metric) else -1.0
        have = [n for n, e in index.items() if self.metric in e["metrics"]]
        return sorted(
            have, key=lambda n: (sign * index[n]["metrics"][self.metric], index[n]["step"])
        )

    def _commit(self, index: dict[str, dict[str, Any]], current: int) -> None:
        """Rotate after a save of step ``current``. Files of later steps belong to a timeline
        that a resume from an earlier checkpoint abandoned (possibly the corrupt ones it
        skipped): they neither count as the newest nor are deleted; training overwrites them."""
        by_step = sorted(index, key=lambda n: index[n]["step"])
        done = [n for n in by_step if index[n]["step"] <= current]
        keep = set(done[-self.keep_last :] if self.keep_last > 0 else done)
        keep |= {n for n in by_step if index[n]["step"] > current}
        ranked = self._ranked(index)
        keep |= set(ranked[: max(self.keep_best, 0)])
        kept = {n: index[n] for n in by_step if n in keep}
        best = ranked[0] if ranked and self.keep_best > 0 else None
        # index first, then best.pt, then deletions: a crash in between leaves extra files only
        self._write_index(kept, best)
        if best is not None:
            self._link_best(self.directory / best)
        for name in by_step:
            if name not in keep:
                (self.directory / name).unlink(missing_ok=True)
        self._index = kept

    def _link_best(self, target: Path) -> None:
        dst = self.best_path
        if dst.exists() and os.path.samefile(dst, target):
            return
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            os.link(target, tmp)  # no copy of the tensors where the filesystem allows
        except OSError:

            def copy(f) -> None:
                with open(target, "rb") as src:
                    shutil.copyfileobj(src, f, 8 << 20)

            atomic_write(dst, copy, "best checkpoint")
        else:
            os.replace(tmp, dst)
        log.info("best.pt -> %s (%s)", target.name, self.metric)

    # ---- index.json ---------------------------------------------------------------------------

    def _write_index(self, entries: dict[str, dict[str, Any]], best: str | None) -> None:
        body = {"metric": self.metric, "best": best, "checkpoints": entries}
        text = json.dumps({**body, "sha256": _digest(body)}, indent=1, sort_keys=True)
        atomic_write(self.directory / INDEX, lambda f: f.write(text.encode()), "checkpoint index")

    def _entries(self) -> dict[str, dict[str, Any]]:
        """The index, with files on disk that it lacks (a crash before its update) read back."""
        if self._index is not None:
            return dict(self._index)
        on_disk = {p.name: int(CKPT_RE.match(p.name)[1]) for p in self.list() if p.is_file()}
        index = {n: e for n, e in self._read_index().items() if n in on_disk}
        for name, step in on_disk.items():
            if name not in index:
                index[name] = {"step": step, "metrics": self._stored_metrics(name)}
        self._index = index
        return dict(index)

    def _read_index(self) -> dict[str, dict[str, Any]]:
        path = self.directory / INDEX
        if not path.is_file():
            return {}
        try:
            raw = json.loads(path.read_text())
            if raw.pop("sha256", None) != _digest(raw):
                raise ValueError("SHA-256 mismatch")
            entries = {
                str(n): {"step": int(e["step"]), "metrics": _clean_metrics(e["metrics"])}
                for n, e in raw["checkpoints"].items()
                if CKPT_RE.match(str(n))
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s is unreadable (%s): ranking rebuilt from the checkpoints", path, exc)
            return {}
        return entries

    def _stored_metrics(self, name: str) -> dict[str, float]:
        try:
            return _clean_metrics(load_checkpoint_file(self.directory / name).get("metrics"))
        except UserError as exc:
            log.warning("%s: metrics unreadable (%s); kept by recency only", name, exc)
            return {}
