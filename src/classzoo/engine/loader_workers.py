"""A DataLoader worker that dies (the kernel's out-of-memory killer sends it SIGKILL; a decoder
can crash) ends the run in one line, at a point where the steps done can be saved.

PyTorch raises a worker's death as a RuntimeError from its SIGCHLD handler, i.e. at whatever
Python line the main thread runs when the signal comes: mostly inside a training step, between
the backward pass and the optimizer or scheduler, where the state is half updated and cannot be
saved. The run then ended with a traceback and lost every step since the last checkpoint
(measured: 21 steps, no checkpoint, with ``kill -9`` of one worker; up to an epoch on ImageNet).
Without that handler the loader finds the dead worker when it waits for its next batch (it polls
its workers every ``MP_STATUS_CHECK_INTERVAL``, 5 s), between two steps: :func:`fetching` turns
that into :class:`WorkerDied`, which the training loop handles as it does a damaged image (the
steps done are saved first, engine/loop.py).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

from classzoo.errors import UserError

# the kernel's out-of-memory killer: SIGKILL (mm/oom_kill.c)
_OOM_HINT = (
    "as the kernel's out-of-memory killer does: fewer data.num_workers or a smaller "
    "data.batch_size need less memory"
)


class WorkerDied(UserError):
    """A DataLoader worker process ended while the loop waited for its batch."""


def detect_deaths_at_fetch() -> None:
    """Leave a dead worker to the loader's own check when it fetches, not to PyTorch's SIGCHLD
    handler (which raises mid-step). Idempotent; before the first multi-worker iterator."""
    try:
        from torch.utils.data._utils import signal_handling
    except ImportError:  # another PyTorch layout: its handler stays, the run still ends
        return
    if hasattr(signal_handling, "_SIGCHLD_handler_set"):
        signal_handling._SIGCHLD_handler_set = True  # torch's handler is then never installed


# what reading a batch raises when its worker died (_raise_if_died tells which)
_MAYBE_DIED = (RuntimeError, OSError, EOFError)


def start(loader: Any) -> Iterator[Any]:
    """``iter(loader)``: persistent workers hand over the last epoch's batches here, so a
    worker's death can surface here too (as :class:`WorkerDied`)."""
    detect_deaths_at_fetch()
    try:
        return iter(loader)
    except _MAYBE_DIED as exc:
        _raise_if_died(exc, getattr(loader, "_iterator", None))
        raise


def fetching(it: Iterator[Any]) -> Iterator[Any]:
    """``it``'s items; a worker's death (PyTorch's RuntimeError) as one :class:`WorkerDied`."""
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except _MAYBE_DIED as exc:
            _raise_if_died(exc, it)
            raise
        yield item


def _raise_if_died(exc: Exception, it: Any) -> None:
    """WorkerDied for PyTorch's "DataLoader worker ... exited unexpectedly", and for an OSError
    or EOFError met while reading a batch a worker queued before it was killed (the socket that
    hands over its shared memory resets, ConnectionResetError, seen 1 run in 3 under load; or
    closes before multiprocessing's handshake, EOFError, seen once in a suite run) once that
    worker is seen dead."""
    torch_said = isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)
    if torch_said or (isinstance(exc, (OSError, EOFError)) and _dead(it, wait_s=2.0)):
        raise WorkerDied(_which(it, exc)) from None


def _dead(it: Any, wait_s: float) -> bool:
    """Whether a worker of ``it`` has ended, waiting up to ``wait_s`` for one being killed."""
    deadline = time.monotonic() + wait_s
    while True:
        if any(w.exitcode not in (None, 0) for w in getattr(it, "_workers", [])):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _which(it: Any, exc: Exception) -> str:
    dead = [w for w in getattr(it, "_workers", []) if w.exitcode not in (None, 0)]
    if not dead:
        return f"a data loader worker ended: {str(exc).splitlines()[0]}"
    w = dead[0]
    if w.exitcode < 0:
        name = signal.Signals(-w.exitcode).name
        how = f"was killed by {name}" + (f", {_OOM_HINT}" if name == "SIGKILL" else "")
    else:
        how = f"exited with code {w.exitcode}"
    return f"data loader worker (pid {w.pid}) {how}"
