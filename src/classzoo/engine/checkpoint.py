"""Training checkpoints: rotation, best-by-metric, fallback to the newest good one, RNG states.

A checkpoint is a ``torch.save`` dict of tensors and plain values only (loads with
``weights_only=True``): model, EMA, optimizer, scheduler, AMP scaler, every RNG state, the
position in the data and the config. Files are written and read only by
``classzoo.formats.torch_checkpoint`` (atomic, SHA-256 embedded and verified, bounded, schema).

The folder holds ``ckpt-<step:09d>.pt``; the newest ``keep_last`` are kept, plus the best
``keep_best`` by ``metric`` (ties keep the earlier step, as timm's CheckpointSaver does), and
``best.pt``, a hard link to (or copy of) the best one, replaced atomically: a stable name, like
timm's ``model_best.pth.tar``. ``index.json`` records each file's step and metrics.

**A damaged or missing index.json** is rebuilt from the files, each scored by the last eval
row of its step in the run's metrics.jsonl written at or after the file's ``time`` (an earlier
row scored an abandoned file). A file that stays unscored because that log is missing or has a
damaged line is marked ``score_lost`` and kept while checkpoints are ranked (it may be the best).

**A resume from an earlier step** abandons the continuation that went further: its files (later
steps) move to ``abandoned-from-step-<N>/`` (with their index.json; one log line) at
``resumed_from``, else at the attempt's first save of step S (then ckpt-S too: its origin is
unknown). Kept, they are no longer the newest (``--resume auto``, ``newest_in_run``), ranked or
rotated; no damaged index.json can bring them back. A save of a step replaces its file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from classzoo.engine.metrics_rows import NOT_SCORES, eval_rows
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
    ``keep_best`` by ``metric``, with ``best.pt`` when ``keep_best`` >= 1; a folder named
    ``checkpoints`` has its run's metrics.jsonl beside it (read when index.json is rebuilt)."""

    def __init__(
        self, directory: str | Path, keep_last: int = 5, keep_best: int = 0, metric: str = "top1"
    ) -> None:
        self.directory = Path(directory)
        self.keep_last, self.keep_best, self.metric = keep_last, keep_best, metric
        in_run = self.directory.name == "checkpoints"  # the run folder's layout (engine/run.py)
        self.metrics_log = self.directory.parent / "metrics.jsonl" if in_run else None
        self._index: dict[str, dict[str, Any]] | None = None
        self._best: str | None = None  # best.pt's file as index.json names it
        self._start: int | None = None  # the step this attempt resumed from, when known
        self._saved = False  # whether this attempt has saved (its files are the newest)

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
        """Write ``payload`` (plus ``metrics``) as ckpt-<step>.pt, then rotate and update best.pt.
        Files of later steps (and, at an attempt's first save when it does not know where it
        started, of this step) are an abandoned continuation's: set aside first."""
        path = self.path_for(step)
        clean = _clean_metrics(metrics)
        index = self._entries()
        beyond = step if self._saved else self._start if self._start is not None else step - 1
        self._set_aside(index, beyond)
        save_checkpoint_file({**payload, "metrics": clean}, path)
        self._saved = True
        entry = index.setdefault(path.name, {"step": step, "metrics": {}})
        entry["metrics"] = {**entry["metrics"], **clean}
        self._commit(index, step)
        return path

    def resumed_from(self, step: int) -> None:
        """The run continues from ``step`` (call on rank 0 once the restore succeeded): files of
        later steps are set aside now, so that a kill before the first save cannot make
        ``--resume auto`` return to the continuation the user left. Nothing is rotated here."""
        self._start = step
        index = self._entries()
        if self._set_aside(index, step):
            self._commit(index, step, rotate=False)

    def record_metrics(self, step: int, metrics: dict) -> None:
        """Rank the already-saved checkpoint of ``step`` (an evaluation that ran after the save)."""
        index = self._entries()
        name = self.path_for(step).name
        if name not in index:  # resumed from a file of another folder: eval.log has the row
            log.info(
                "no checkpoint of step %d in %s to rank by its evaluation", step, self.directory
            )
            return
        index[name]["metrics"] = {**index[name]["metrics"], **_clean_metrics(metrics)}
        index[name].pop("score_lost", None)
        self._commit(index, max(e["step"] for e in index.values()))

    def metrics_for(self, step: int) -> dict[str, float]:
        """The metrics recorded for the checkpoint of ``step`` ({} if none, or no such file)."""
        entry = self._entries().get(self.path_for(step).name)
        return dict(entry["metrics"]) if entry is not None else {}

    def latest_good(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that verifies and has what resume needs; each newer one that
        does not is logged with the reason (and set aside at the first save: the run continues
        from the one returned). None if the folder has none; UserError if it has some and not
        one is readable (starting fresh would silently throw the run away)."""
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
            self._start = int(CKPT_RE.match(path.name)[1])
            return path, ckpt
        if candidates:
            raise UserError(
                f"--resume auto: none of the {len(candidates)} checkpoints in {self.directory} "
                f"is readable (newest: {reasons[0]})"
            )
        return None

    # ---- an abandoned continuation ------------------------------------------------------------

    def _set_aside(self, index: dict[str, dict[str, Any]], beyond: int) -> bool:
        """Move the files of steps after ``beyond`` (and their index entries) to a new
        ``abandoned-from-step-<N>``; best.pt goes when it is one of them. True if any moved."""
        names = [p.name for p in self.list() if int(CKPT_RE.match(p.name)[1]) > beyond]
        if not names:
            return False
        base = self.directory / f"abandoned-from-step-{int(CKPT_RE.match(names[0])[1])}"
        folder, n = base, 1
        while folder.exists():  # rank 0 alone writes here
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
        try:
            folder.mkdir()
            for name in names:
                os.replace(self.directory / name, folder / name)
                linked = self.best_path.is_file() and os.path.samefile(
                    self.best_path, folder / name
                )
                if self._best == name or linked:  # best.pt: a link to or a copy of a file kept
                    self.best_path.unlink(missing_ok=True)
        except OSError as exc:
            raise UserError(f"cannot set aside {names} in {folder}: {exc}") from None
        self._write_index({n: index.pop(n) for n in names if n in index}, None, folder)
        self._index = index
        log.warning(
            "moved %s to %s: a continuation beyond step %d that this run abandoned (kept; not "
            "the newest, not ranked for best.pt, not rotated)",
            ", ".join(names),
            folder,
            beyond,
        )
        return True

    # ---- rotation and best ------------------------------------------------------------------

    def _ranked(self, index: dict[str, dict[str, Any]]) -> list[str]:
        """Names with the metric, best first; ties: the earlier step first (timm's rule)."""
        sign = 1.0 if lower_is_better(self.metric) else -1.0
        have = [n for n, e in index.items() if self.metric in e["metrics"]]
        return sorted(
            have, key=lambda n: (sign * index[n]["metrics"][self.metric], index[n]["step"])
        )

    def _commit(self, index: dict[str, dict[str, Any]], current: int, rotate: bool = True) -> None:
        """Rotate after a save of step ``current``; files whose score was lost stay while
        checkpoints are ranked (one of them may be the best)."""
        by_step = sorted(index, key=lambda n: index[n]["step"])
        done = [n for n in by_step if index[n]["step"] <= current]
        keep = set(done[-self.keep_last :] if self.keep_last > 0 and rotate else by_step)
        keep |= {n for n in by_step if index[n]["step"] > current}
        ranked = self._ranked(index)
        keep |= set(ranked[: max(self.keep_best, 0)])
        if self.keep_best > 0:
            keep |= {n for n in by_step if index[n].get("score_lost")}
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

    def _write_index(self, entries: dict, best: str | None, folder: Path | None = None) -> None:
        body = {"metric": self.metric, "best": best, "checkpoints": entries}
        text = json.dumps({**body, "sha256": _digest(body)}, indent=1, sort_keys=True)
        path = (folder or self.directory) / INDEX
        atomic_write(path, lambda f: f.write(text.encode()), "checkpoint index")
        if folder is None:
            self._best = best

    def _entries(self) -> dict[str, dict[str, Any]]:
        """The index, with files on disk that it lacks (a crash before its update) read back;
        rebuilt from the files and metrics.jsonl when it is unreadable or missing."""
        if self._index is not None:
            return dict(self._index)
        on_disk = {p.name: int(CKPT_RE.match(p.name)[1]) for p in self.list() if p.is_file()}
        read = self._read_index()
        if read is None:
            index = self._rebuild(on_disk) if on_disk else {}
        else:
            index = {n: e for n, e in read.items() if n in on_disk}
            for name, step in on_disk.items():
                if name not in index:  # saved, never evaluated: the index comes before the eval
                    index[name] = {"step": step, "metrics": self._stored(name)[0]}
        self._index = index
        return dict(index)

    def _rebuild(self, on_disk: dict[str, int]) -> dict[str, dict[str, Any]]:
        """Each file's step and scores: its own ``metrics``, then the last eval row of its step
        in metrics.jsonl written at or after the file's ``time`` (both UTC seconds, the same
        format; an earlier row scored a file of a continuation a resume abandoned)."""
        rows, why = {}, "no metrics.jsonl (not a run folder's checkpoints)"
        if self.metrics_log is not None:
            rows, why = eval_rows(self.metrics_log)
            if why is None and not rows:  # removed, and made anew by this attempt's logger
                why = f"{self.metrics_log} has no evaluation rows"
        index, lost = {}, []
        for name, step in sorted(on_disk.items(), key=lambda item: item[1]):
            metrics, saved = self._stored(name)
            after = [r for r in rows.get(step, []) if not saved or str(r.get("time")) >= saved]
            if after:
                scores = {k: v for k, v in after[-1].items() if k not in NOT_SCORES}
                metrics = {**metrics, **_clean_metrics(scores)}
            index[name] = {"step": step, "metrics": metrics}
            if not after and why is not None:
                index[name]["score_lost"] = True
                lost.append(name)
        if lost:
            log.warning("%s: no score for %s; not rotated away", why, ", ".join(lost))
        return index

    def _read_index(self) -> dict[str, dict[str, Any]] | None:
        """index.json's entries; None when it is missing or unreadable (said once)."""
        path = self.directory / INDEX
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text())
            if raw.pop("sha256", None) != _digest(raw):
                raise ValueError("SHA-256 mismatch")
            entries = {
                str(n): {"step": int(e["step"]), "metrics": _clean_metrics(e["metrics"])}
                | ({"score_lost": True} if e.get("score_lost") is True else {})
                for n, e in raw["checkpoints"].items()
                if CKPT_RE.match(str(n))
            }
            self._best = raw["best"] if isinstance(raw["best"], str) else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "%s is unreadable (%s): ranking rebuilt from the checkpoints and %s",
                path,
                exc,
                self.metrics_log or "their own metrics",
            )
            return None
        return entries

    def _stored(self, name: str) -> tuple[dict[str, float], str | None]:
        """A file's own metrics and save ``time`` (({}, None) when it does not read)."""
        try:
            ckpt = load_checkpoint_file(self.directory / name)
        except UserError as exc:
            log.warning("%s: metrics unreadable (%s); kept by recency only", name, exc)
            return {}, None
        saved = ckpt.get("time")
        return _clean_metrics(ckpt.get("metrics")), saved if isinstance(saved, str) else None
