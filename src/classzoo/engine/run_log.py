"""Run-folder logs: train.log (seed format), eval.log, metrics.jsonl, TensorBoard events.

Only rank 0 writes. ``train.log`` lines follow the InceptionV4 reference:
``step: 12100 epoch: 1.2 FPS: 469.5 loss: 4.676 total_loss: 5.051 lr:0.04499``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

from classzoo.engine.logs import AppendFile, RunFileError, utc_now, write_error
from classzoo.errors import UserError
from classzoo.formats.torch_checkpoint import atomic_write

log = logging.getLogger("classzoo")


def _summary_writer(folder: Path):
    """TensorBoard's writer without importing TensorFlow (seconds, and noise, when installed).

    ``tensorboard.compat.notf`` is TensorBoard's own switch to its bundled TF stub (its
    ``no_tensorflow`` target): present only while its lazy ``tf`` is resolved, then removed, so
    nothing else in the process sees it.
    """
    name = "tensorboard.compat.notf"
    added = name not in sys.modules
    if added:
        sys.modules[name] = types.ModuleType(name)
    try:
        import tensorboard.compat

        _ = tensorboard.compat.tf.__name__  # resolves (and caches) the stub now
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(folder))
    finally:
        if added:
            sys.modules.pop(name, None)


class RunLogger:
    """Writes the run folder's logs; a no-op on ranks other than 0.

    A write the OS refuses (a full disk, a read-only folder) is one :class:`RunFileError`
    line, and leaves no cut-off line behind (engine/logs.AppendFile); summary.json and the
    YAML records are replaced whole or not at all. As a context manager it closes the files
    however the run ends."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.tb = None
        self.files: list[AppendFile] = []
        if not enabled:
            return
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(run_dir, exc, "create") from None
        self.train_log = self._open("train.log")
        self.eval_log = self._open("eval.log")
        self.metrics = self._open("metrics.jsonl")
        if self.eval_log.empty:
            self.eval_log.write("step epoch top1 top5 loss checkpoint_time(UTC)\n")
        if tensorboard:
            try:
                self.tb = _summary_writer(run_dir / "tensorboard")
            except ImportError:  # tensorboard is a dependency; tolerate its absence anyway
                log.warning("tensorboard not installed: no event files")
            except OSError as exc:
                raise write_error(run_dir / "tensorboard", exc) from None

    def _open(self, name: str) -> AppendFile:
        self.files.append(AppendFile(self.run_dir / name))
        return self.files[-1]

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:  # the run's own error is the one to show: nothing new from closing
            with contextlib.suppress(RunFileError):
                self.close()

    def train_step(
        self,
        step: int,
        epoch: float,
        fps: float,
        loss: float,
        total_loss: float,
        lr: float,
        data_wait: float = 0.0,
    ) -> None:
        """One seed-format line; ``data_wait``: share of the interval spent waiting for data."""
        if not self.enabled:
            return
        line = f"step: {step} epoch: {epoch:.3f} FPS: {fps:.1f} loss: {loss:.4f} total_loss: {total_loss:.4f} lr:{lr:.6g}"
        self.train_log.write(line + "\n")
        log.info(line)  # also on a terminal: the bar stays below, the loss history in scrollback
        self._metric(
            {
                "kind": "train",
                "step": step,
                "epoch": round(epoch, 4),
                "loss": loss,
                "total_loss": total_loss,
                "lr": lr,
                "fps": fps,
                "data_wait": round(data_wait, 4),
                "time": utc_now(),
            }
        )
        scalars = {"loss": loss, "total_loss": total_loss, "lr": lr, "fps": fps}
        self._scalars("train", {**scalars, "data_wait": data_wait}, step)

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
        self._scalars("eval", {k: result[k] for k in ("top1", "top5", "loss")}, step)

    def marker(self, what: str, step: int | None = None) -> None:
        """A line in every log saying what happened to the run here (e.g. a resume); ``step``:
        where the run continues (rows of later steps above it are an abandoned attempt's)."""
        if not self.enabled:
            return
        line = f"# {utc_now()} {what}"
        for f in (self.train_log, self.eval_log):
            f.write(line + "\n")
        at = {} if step is None else {"step": step}
        self._metric({"kind": "marker", "what": what, **at, "time": utc_now()})

    def _metric(self, record: dict[str, Any]) -> None:
        self.metrics.write(json.dumps(record) + "\n")

    def _scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        """TensorBoard writes in a thread of its own: its OS error shows at a later call."""
        if self.tb is None:
            return
        try:
            for name, value in values.items():
                self.tb.add_scalar(f"{prefix}/{name}", value, step)
        except OSError as exc:
            raise write_error(self.run_dir / "tensorboard", exc) from None

    def write_text(self, name: str, text: str) -> None:
        """``name`` in the run folder, replaced whole (a temporary renamed over it)."""
        if not self.enabled:
            return
        path = self.run_dir / name
        try:
            atomic_write(path, lambda f: f.write(text.encode("utf-8")), "file")
        except UserError as exc:  # "cannot write summary.json ...: No space left on device"
            raise RunFileError(str(exc)) from None

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        self.write_text(name, json.dumps(data, indent=2) + "\n")

    def close(self) -> None:
        if not self.enabled:
            return
        for f in self.files:
            f.close()
        if self.tb is not None:
            tb, self.tb = self.tb, None
            try:
                tb.close()  # flushes the events still queued
            except OSError as exc:
                raise write_error(self.run_dir / "tensorboard", exc) from None
