"""Graceful stop on SIGTERM / SIGINT / SIGUSR1: finish the step, save, exit 0; a second signal
exits at once.
Before the first step (a run being set up) the first signal ends the process: one line, exit 0.

Exit code convention: **0** after a clean stop (a checkpoint of the stop step is written; resume
with ``--resume auto``). Chosen for torchrun: its elastic agent restarts the worker group when a
worker exits non-zero and restarts are left (``--max-restarts``; torch/distributed/elastic/agent/
server/api.py ``_invoke_run``: FAILED -> ``_restart_workers``), so the conventional 143 / 130
would restart a job that was asked to stop. Workers that exit 0 make the group SUCCEEDED and
torchrun exits 0. (When torchrun itself receives the signal it forwards it to the workers, waits
up to 30 s for them, ``shutdown_timeout``, then raises SignalException and exits 1 with a
traceback: the workers still stop cleanly; :func:`run_forwarding_signals` avoids that for
``classzoo train --nproc-per-node``.) A second signal, at least ``repeat_window_s`` after the
first, restores the default action and re-sends itself: the process dies by that signal (shell
status 128 + signum). Nothing is corrupted: checkpoint writes are atomic and a temporary left
behind is removed at the next start.

A copy of the same Ctrl-C arrives twice when the terminal signals the whole process group and
torchrun forwards it too; copies within ``repeat_window_s`` (1 s) count as one signal. Forked
children (DataLoader workers) inherit the handler: they ignore SIGINT (the main process owns the
stop; the workers end with the loader) and serve on for ``WORKER_GRACE_S`` (30 s) after a
SIGTERM before they exit, so a SIGTERM sent to the whole process group (Slurm's scancel) stops
the run as cleanly as one sent to classzoo's process; the DataLoader's own ``terminate()`` of a
stuck worker still ends it, that much later (``_in_worker``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

log = logging.getLogger("classzoo")

# SIGUSR1: what Slurm sends ahead of a job's time limit when asked (``--signal=USR1@T``), and
# Lightning's convention for "save and stop"; its default action would end the process and
# lose the steps since the last checkpoint
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
REPEAT_WINDOW_S = 1.0


class GracefulStop:
    """Handlers for :data:`STOP_SIGNALS`; ``should_stop(env)`` once per optimizer step.

    After :meth:`early` (``before``: what a stop would wait for, e.g. "the first training
    step") and until :meth:`ready`, the first signal ends the process at once with one line
    and exit 0 (:func:`_exit_early`): a run being set up (minutes of data scans on ImageNet)
    has nothing to save. Before, SIGTERM kept its default action there (the rank died with
    143, nothing said, and torchrun ``--max-restarts`` restarted a job asked to stop) and
    SIGINT ended in "interrupted", exit 130.

    Use as a context manager (or ``install()`` / ``close()``) in the main thread::

        with GracefulStop() as stop:
            for step ...:
                train_step(...)
                if stop.should_stop(env):
                    save(); log.info("stopped at step %d; resume with --resume auto", step)
                    return stop.exit_code
    """

    exit_code = 0  # after a clean stop; see the module docstring for why not 128 + signum

    def __init__(
        self, signals: Sequence[int] = STOP_SIGNALS, repeat_window_s: float = REPEAT_WINDOW_S
    ) -> None:
        self.signals = tuple(signals)
        self.repeat_window_s = repeat_window_s
        self.signum: int | None = None
        self.agreed_signum: int | None = None  # the signal the ranks stopped for (any rank's)
        self._first_at = 0.0
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}
        self._pending: tuple | None = None  # the all-reduce launched at the previous step
        self._before: str | None = None  # exit at the first signal until ready(): class doc
        self._after = "this step"  # what a stop waits for, as the first signal's warning says

    def early(self, before: str) -> GracefulStop:
        """End the process at the first signal (:func:`_exit_early`) until :meth:`ready`."""
        self._before = before
        return self

    def ready(self) -> None:
        """From here on the first signal only asks ``should_stop`` to stop."""
        self._before = None

    def finishing(self, what: str) -> None:
        """No step is left: a signal waits for ``what`` (the last checkpoint, the final
        evaluation), not a step."""
        self._after = what
        if self.signum is not None:  # came in the last step (the ranks agree one step late)
            log.warning(
                "no step is left (%s came in the last one): finishing %s", self.signal_name, what
            )

    @property
    def requested(self) -> bool:
        """A signal arrived in this process (the loop stops at the step all ranks agree on)."""
        return self.signum is not None

    @property
    def signal_name(self) -> str | None:
        """The signal this process received (None on a rank that received none)."""
        return signal.Signals(self.signum).name if self.signum is not None else None

    @property
    def reason(self) -> str:
        """Why the ranks stopped, on every rank: "SIGTERM", or "SIGTERM to another rank" where
        this process received no signal itself (the agreement carries the signal's number)."""
        if self.signum is not None:
            return signal.Signals(self.signum).name
        if self.agreed_signum:
            return f"{signal.Signals(self.agreed_signum).name} to another rank"
        return "a signal to another rank"

    def install(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            log.debug("graceful stop: not the main thread, signals keep their handlers")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def close(self, until_exit: bool = False) -> None:
        """Complete a pending all-reduce (all ranks launched it), then restore the previous
        handlers. ``until_exit`` (a process that ends after the run: the CLI): keep handling
        instead, until the process exits. A first signal during the shutdown (destroying the
        process group, the interpreter's exit) is then only logged: its default action would
        end a finished run with 143, a failure for torchrun. A second still exits at once."""
        if self._pending is not None:
            self._pending[0].wait()
            self._pending = None
        if until_exit and self._previous:
            self._before, self._after = None, "the run, which has ended"
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> GracefulStop:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker
            _in_worker(signum)
            return
        now = time.monotonic()
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum, self._first_at = signum, now
            if self._before is not None:
                _exit_early(name, self._before)
            log.warning("stopping after %s (%s); a second signal exits at once", self._after, name)
            return
        if now - self._first_at < self.repeat_window_s:
            return  # the same Ctrl-C, delivered by the terminal and forwarded by torchrun
        log.warning("second signal (%s): exiting now", name)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def should_stop(self, env: Any) -> bool:
        """Whether to stop after the step just done; the same answer on every rank.

        One process: the flag. Under torchrun: a MAX all-reduce of the signal's number (0: none),
        launched asynchronously at one step and read at the next (no host sync on the step's own
        work), so every rank stops at the same step, one step after the first rank saw a signal,
        and knows which signal it was (``reason``).
        """
        if not getattr(env, "distributed", False):
            self.agreed_signum = self.signum
            return self.requested
        stop = False
        if self._pending is not None:
            work, buf, host, event = self._pending
            self._pending = None
            if event is not None:
                event.synchronize()  # the copy queued after the previous step: done by now
            else:
                work.wait()
            agreed = int((host if host is not None else buf).item())
            stop = agreed > 0
            self.agreed_signum = agreed if stop else None
        if not stop:
            self._pending = _launch(self.signum or 0, device=env.device)
        return stop


def _exit_early(name: str, before: str) -> None:
    """End a process that has nothing to save: one line (left for classzoo's launcher to print
    once for all ranks), the logs flushed, exit 0 with ``os._exit``. No exception is raised
    into the set-up code the signal interrupted, where it could land in a cleanup (destroying
    the process group, closing the stop itself) and skip it; ``os._exit`` runs no exit-time
    destructor, so gloo's threads cannot abort the process after the line either."""
    from classzoo.engine.launch import hand_to_launcher  # launch imports this module

    line = f"classzoo: stopped by {name} before {before}; nothing to save"
    if not hand_to_launcher(line, "stopped"):
        print(line, file=sys.stderr, flush=True)
    logging.shutdown()  # console.log and the terminal: what was logged before the line
    sys.stdout.flush()
    os._exit(0)


def _launch(signum: int, device: torch.device) -> tuple:
    """An async MAX all-reduce of ``signum`` (0: no signal); on CUDA, its copy to pinned host
    memory is queued."""
    import torch.distributed as dist

    buf = torch.tensor([signum], dtype=torch.int32, device=device)
    work = dist.all_reduce(buf, op=dist.ReduceOp.MAX, async_op=True)
    if device.type != "cuda":
        return work, buf, None, None
    work.wait()  # NCCL: makes the current stream wait for the collective, the host does not
    host = torch.empty(1, dtype=torch.int32, pin_memory=True)
    host.copy_(buf, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return work, buf, host, event


# How long a DataLoader worker serves on after a SIGTERM: torchrun's own shutdown_timeout, the
# time its agent gives workers to stop (torch/distributed/elastic/agent/server/api.py).
WORKER_GRACE_S = 30.0
_exit_timer: threading.Timer | None = None


def _in_worker(signum: int) -> None:
    """A DataLoader worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process group;
    the main process owns the stop) and serves on for ``WORKER_GRACE_S`` after a SIGTERM, then
    exits 143. A SIGTERM sent to the whole process group (Slurm's scancel signals every process
    of a job step) used to kill the workers at once, and torch's SIGCHLD handler then raised in
    the main process (a traceback, exit 1) before it could finish its step and save it: work
    since the last checkpoint was lost. Serving on, they end with the loader once the main
    process has saved. The DataLoader's ``terminate()`` of a stuck worker still ends it, that
    much later; a second SIGTERM changes nothing."""
    global _exit_timer
    if signum == signal.SIGTERM and _exit_timer is None:
        _exit_timer = threading.Timer(WORKER_GRACE_S, os._exit, args=(128 + signal.SIGTERM,))
        _exit_timer.daemon = True
        _exit_timer.start()


def _worker_handler(signum: int, frame: object) -> None:
    _in_worker(signum)


def worker_ignore_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` for DataLoaders (also with the spawn start method, where the handler is
    not inherited): ignore SIGINT, which a terminal sends to the whole process group; a SIGTERM
    ends the worker ``WORKER_GRACE_S`` later (see ``_in_worker``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # its default action would end the worker
    signal.signal(signal.SIGTERM, _worker_handler)


def _child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` that are still running (Linux /proc; empty elsewhere): an
    exited child not yet reaped (a zombie) is left out, as a signal to it reaches nobody."""
    out = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != b"Z":  # fields: state, parent pid, ...
            out.append(int(entry))
    return out


class _WorkersSeen(threading.Event):
    """Set once torchrun (``proc``) has had a child: from then on, no child means the workers
    ended, not that they are still to start (a daemon thread looks every 0.2 s until then)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__()

        def watch() -> None:
            while proc.poll() is None and not _child_pids(proc.pid):
                time.sleep(0.2)
            self.set()

        threading.Thread(target=watch, name="classzoo-workers-seen", daemon=True).start()


def run_forwarding_signals(cmd: Sequence[str]) -> int:
    """Run ``cmd`` (torchrun) in its own session and return its exit code, forwarding signals.

    The first SIGTERM / SIGINT / SIGUSR1 goes to torchrun's workers, which stop at an agreed
    step, save and exit 0, so torchrun exits 0 and restarts nothing. A later SIGTERM / SIGINT
    (after the repeat window) goes to torchrun itself, which shuts its workers down at once.
    A first signal when torchrun's workers have ended (the run is finishing) is not sent on:
    killing torchrun then would lose the run's outcome (exit code 241 with nothing printed,
    though the run had finished and saved).
    Its own session keeps a terminal's Ctrl-C from reaching the workers a second time.
    """
    # torchrun's agent has no handler for SIGUSR1: its default action would end the agent and
    # orphan the workers when a scheduler signals every process of the job. Ignored here, the
    # disposition is inherited by torchrun and its workers; each worker's run() installs its
    # own handler (GracefulStop) once its rendezvous is done: a SIGUSR1 before is lost.
    usr1 = signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # ignored here too until forwarded
    try:
        proc = subprocess.Popen(list(cmd), start_new_session=True)
    except BaseException:
        signal.signal(signal.SIGUSR1, usr1)
        raise
    first: list[float] = []
    started = _WorkersSeen(proc)

    def forward(signum: int, frame: object) -> None:
        if proc.poll() is not None:
            return
        now = time.monotonic()
        if first and now - first[0] < REPEAT_WINDOW_S:
            return
        # SIGUSR1 always to the workers: torchrun ignores it (above)
        again = bool(first) and signum != signal.SIGUSR1
        targets = _child_pids(proc.pid) if not again else []
        first.append(now)
        if not targets and not again and started.is_set():
            # the workers ended (the run is finishing): a signal to torchrun now would kill an
            # agent about to report the run's outcome
            name = signal.Signals(signum).name
            again_hint = "" if signum == signal.SIGUSR1 else f"; a second {name} stops torchrun"
            with contextlib.suppress(OSError, ValueError):  # stderr gone: say nothing, go on
                print(f"classzoo: {name}: no worker running to stop{again_hint}", file=sys.stderr)
            return
        for pid in targets or [proc.pid]:
            with contextlib.suppress(ProcessLookupError):  # a worker that already ended
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    previous[signal.SIGUSR1] = usr1
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
