"""Run-folder logs: train.log (seed format), eval.log, metrics.jsonl, TensorBoard, progress bar.

Only rank 0 writes. ``train.log`` lines follow the InceptionV4 reference:
``step: 12100 epoch: 1.2 FPS: 469.5 loss: 4.676 total_loss: 5.051 lr:0.04499``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import time
import types
from pathlib import Path
from typing import Any

log = logging.getLogger("classzoo")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def setup_console_logging(is_main: bool, log_file: Path | None = None) -> None:
    """INFO to stderr on rank 0 (warnings elsewhere); plain lines, also copied to ``log_file``."""
    root = logging.getLogger("classzoo")
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    root.propagate = False
    for h in list(root.handlers):
        if getattr(h, "_classzoo", False):
            root.removeHandler(h)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None and is_main:
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        h._classzoo = True  # type: ignore[attr-defined]
        root.addHandler(h)


class RunLogger:
    """Writes the run folder's logs; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.tb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.train_log = open(run_dir / "train.log", "a", buffering=1)
        self.eval_log = open(run_dir / "eval.log", "a", buffering=1)
        self.metrics = open(run_dir / "metrics.jsonl", "a", buffering=1)
        if self.eval_log.tell() == 0:
            self.eval_log.write("step epoch top1 top5 loss checkpoint_time(UTC)\n")
        if tensorboard:
            try:
                # TensorBoard imports all of TensorFlow when it is installed (seconds, and noise);
                # its own "notf" switch makes it use the bundled stub for writing event files.
                sys.modules.setdefault(
                    "tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf")
                )
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency; tolerate its absence anyway
                log.warning("tensorboard not installed: no event files")

    def train_step(
        self, step: int, epoch: float, fps: float, loss: float, total_loss: float, lr: float
    ) -> None:
        if not self.enabled:
            return
        line = f"step: {step} epoch: {epoch:.3f} FPS: {fps:.1f} loss: {loss:.4f} total_loss: {total_loss:.4f} lr:{lr:.6g}"
        self.train_log.write(line + "\n")
        if (
            not sys.stderr.isatty()
        ):  # on a terminal the progress bar shows it; in a log, plain lines
            log.info(line)
        self._metric(
            {
                "kind": "train",
                "step": step,
                "epoch": round(epoch, 4),
                "loss": loss,
                "total_loss": total_loss,
                "lr": lr,
                "fps": fps,
                "time": utc_now(),
            }
        )
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, step)
            self.tb.add_scalar("train/total_loss", total_loss, step)
            self.tb.add_scalar("train/lr", lr, step)
            self.tb.add_scalar("train/fps", fps, step)

    def evaluation(
        self, step: int, epoch: float, result: dict[str, Any], checkpoint_time: str | None = None
    ) -> None:
        if not self.enabled:
            return
        when = checkpoint_time or utc_now()
        self.eval_log.write(
            f"{step} {epoch:.3f} {result['top1']:.3f} {result['top5']:.3f} {result['loss']:.4f} {when}\n"
        )
        self._metric(
            {"kind": "eval", "step": step, "epoch": round(epoch, 4), **result, "time": when}
        )
        if self.tb is not None:
            for k in ("top1", "top5", "loss"):
                self.tb.add_scalar(f"eval/{k}", result[k], step)

    def _metric(self, record: dict[str, Any]) -> None:
        self.metrics.write(json.dumps(record) + "\n")

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        if self.enabled:
            (self.run_dir / name).write_text(json.dumps(data, indent=2) + "\n")

    def close(self) -> None:
        if not self.enabled:
            return
        for f in (self.train_log, self.eval_log, self.metrics):
            f.close()
        if self.tb is not None:
            self.tb.close()


class Progress:
    """A one-line progress bar on a terminal (stderr); silent when stderr is not a TTY."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self.total, self.desc = total, desc
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, extra: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.2 and done < self.total:
            return
        self.last = now
        frac = done / max(self.total, 1)
        bar = "#" * int(frac * 30)
        rate = done / max(now - self.start, 1e-9)
        sys.stderr.write(
            f"\r{self.desc} [{bar:<30}] {done}/{self.total} {rate:.1f} it/s {extra}\033[K"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
