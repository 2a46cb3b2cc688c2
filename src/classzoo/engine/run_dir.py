"""The run folder: named once for every rank, never silently shared by two runs; a folder the
OS will not let the run write is one line (with the checkpoint a later attempt resumes from)."""

from __future__ import annotations

import errno
import itertools
import logging
import shutil
import time
from pathlib import Path

import yaml

from classzoo.engine.checkpoint import CheckpointManager
from classzoo.engine.distributed import DistEnv, barrier, broadcast_object
from classzoo.engine.logs import RunFileError, write_error
from classzoo.errors import UserError, WriteError

log = logging.getLogger("classzoo")


def claim_run_dir(
    run_dir: Path | None, recipe: str | None, resume: str | None, overwrite: bool, env: DistEnv
) -> Path:
    """The run folder, the same on every rank, checked by every rank before anything is written."""
    if run_dir is None:
        if resume == "auto":
            raise UserError("--resume auto needs --output-dir: the run folder to continue")
        made = [str(new_run_dir(recipe)) if env.is_main else None]
        broadcast_object(made, env)  # rank 0 named and made it for every rank
        return Path(made[0])  # empty: nothing of another run to look for
    run_dir = Path(run_dir)
    above = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if above is not None and not above.is_dir():  # before any step: not a traceback at mkdir
        raise UserError(f"--output-dir {run_dir}: {above} is a file, not a folder")
    taken = [n for n in RUN_FILES if (run_dir / n).exists()]
    if taken and resume is None and not overwrite:
        raise UserError(
            f"{run_dir} already holds a run ({', '.join(taken[:3])}): continue it with --resume auto,"
            " replace it with --overwrite, or choose another --output-dir"
        )
    barrier(env)  # every rank has looked before rank 0 writes anything
    return run_dir


def new_run_dir(recipe: str | None) -> Path:
    """``runs/<recipe>-<UTC time>``, made here: mkdir either creates the folder or fails, so two
    runs started in the same second (a sweep launched in a loop) get ``-2``, ``-3``, ... instead
    of one folder both write their checkpoints into (the check for a run's files alone let both
    in, before either had written one)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = f"{(recipe or 'run').replace(':', '-')}-{stamp}"
    path = Path("runs")
    try:
        path.mkdir(exist_ok=True)
        for n in itertools.count(1):
            path = Path("runs") / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:  # e.g. a read-only working folder
        where = f"without --output-dir a run goes in runs/ of {Path.cwd()}: give a writable one"
        raise RunFileError(f"{write_error(path, exc, 'create')}; {where}", exc.errno) from None
    raise AssertionError("unreachable")  # itertools.count never ends


def remove_if_empty(run_dir: Path | None) -> None:
    """A folder new_run_dir made for a command that then stopped on its input: not left empty."""
    if run_dir is not None and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def create_run_dir(run_dir: Path, resume: str | None, overwrite: bool, env: DistEnv) -> None:
    """Make the folder once the run's inputs were read and checked: a bad checkpoint or data
    folder ends the command before anything is written."""
    if env.is_main:
        if overwrite and resume is None:
            _remove_run_files(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(run_dir, exc, "create") from None
    barrier(env)


def with_resume_hint(exc: WriteError, run_dir: Path | None) -> WriteError:
    """``exc`` with where the run continues from: its newest checkpoint (saves are atomic, so
    the newest file is whole) and the command; the steps after it are the ones lost. Nothing
    added for a run that has no checkpoint and logged no step (a folder that failed at start)."""
    if run_dir is None:
        return exc
    newest = CheckpointManager(run_dir / "checkpoints").list()
    room = "there is room" if exc.errno in _FULL else "it is writable"
    if newest:
        step = int(newest[-1].stem.split("-")[1])
        return RunFileError(
            f"{exc}; the run can continue from its last checkpoint {newest[-1]} (step {step}),"
            f" the steps after it were not saved: once {room}, --output-dir {run_dir}"
            " --resume auto",
            exc.errno,
        )
    if _has_steps(run_dir / "train.log"):
        return RunFileError(f"{exc}; no checkpoint was saved: a new attempt starts over", exc.errno)
    return exc


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # else EROFS, EACCES, EPERM...


def _has_steps(train_log: Path) -> bool:
    try:
        return any(line.startswith("step: ") for line in train_log.open(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False


# What a run writes; --overwrite removes exactly these, nothing else of the folder.
RUN_FILES = (
    "config.yaml",
    "resolved.yaml",
    "summary.json",
    "train.log",
    "eval.log",
    "metrics.jsonl",
    "console.log",
    "checkpoints",
    "tensorboard",
)


def _remove_run_files(run_dir: Path) -> None:
    for name in RUN_FILES:
        path = run_dir / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError as exc:
            raise write_error(path, exc, "remove") from None
    log.info("--overwrite: removed the previous run's files from %s", run_dir)


def recorded_threads(run_dir: Path, resume: str | None, checkpoint: dict | None) -> int | None:
    """The compute-thread count a resumed run must reuse (the thread count changes float
    results): from ``checkpoint`` (``--resume FILE``) or the folder's resolved.yaml (``--resume
    auto``); None for a new run or a record made before threads were recorded."""
    if checkpoint is not None:
        return (checkpoint.get("resolved") or {}).get("threads")
    path = run_dir / "resolved.yaml"
    if resume != "auto" or not path.is_file():
        return None
    try:
        record = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None  # the checkpoint's own record is checked when it is restored
    threads = record.get("threads") if isinstance(record, dict) else None
    return threads if isinstance(threads, int) and threads > 0 else None
