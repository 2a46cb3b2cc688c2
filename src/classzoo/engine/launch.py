"""``classzoo train --nproc-per-node N``: re-run the same command under torchrun (nothing home-made).

torchrun's own entry point (``torch.distributed.run.run``) runs in a child process of the
launcher (:func:`torchrun_main`), so its ``ChildFailedError`` can be caught: when the workers
stopped on a :class:`~classzoo.errors.UserError` the run ends with that one line, printed once
(not once per rank), and exit code 2, never torchrun's traceback. The workers keep torchrun's
stdout and stderr (their output is live); a worker under this launcher hands its error line to
the launcher through a file in ``$CLASSZOO_RANK_ERRORS`` instead of printing it
(:func:`hand_to_launcher`). A worker whose collective failed because another rank went away
(:func:`peer_stopped`) exits with :data:`PEER_STOPPED_EXIT`, so the launcher can tell it from a
crash. Any other failure (a crash) shows what torchrun says about which rank failed, exit 1 as
torchrun's.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from pathlib import Path

ERRORS_ENV = "CLASSZOO_RANK_ERRORS"  # the folder each rank's error line goes to
USER_ERROR_EXIT = 2  # classzoo.errors.UserError.exit_code (errors.py; asserted in the tests)
PEER_STOPPED_EXIT = 3  # a rank that stopped only because another rank stopped
TORCHRUN_FAILED_EXIT = 1  # what torchrun itself exits with when a worker failed

# The "peer went away" family, and nothing wider, so a rank's own crash keeps its traceback.
# gloo: "[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:34475"
# (seen when rank 0 of a 2-rank CPU run exited on a full disk) and "Connection reset by peer"
# (ECONNRESET, the same socket closed mid-read); NCCL: ncclRemoteError, whose text is "remote
# process exited or there was a network error" (nccl.h ncclGetErrorString).
_PEER_GONE = re.compile(
    r"Connection (closed|reset) by peer|ncclRemoteError|remote process exited", re.IGNORECASE
)
_WRAPPER = "from classzoo.engine.launch import torchrun_main; raise SystemExit(torchrun_main())"


def relaunch_with_torchrun(nproc: int, argv: list[str]) -> int:
    """Drop ``--nproc-per-node`` and hand the rest to torchrun (``--standalone -m classzoo``)."""
    from classzoo.engine.stop import run_forwarding_signals

    rest: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc-per-node":
            skip = True
            continue
        if a.startswith("--nproc-per-node="):
            continue
        rest.append(a)
    cmd = [
        sys.executable,
        "-c",
        _WRAPPER,
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "classzoo",
        *rest,
    ]
    return run_forwarding_signals(cmd)  # a first SIGTERM / Ctrl-C stops the workers gracefully


# ---- the launcher's side ------------------------------------------------------------------------


class _HeldRecords(logging.Filter):
    """Holds torchrun's per-failure log lines ("failed (exitcode: 2) local_rank: 0 ...",
    "Sending process N closing signal SIGTERM"): shown only when the failure was a crash."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.holding = True

    def filter(self, record: logging.LogRecord) -> bool:
        if self.holding:
            self.records.append(record)
            return False
        return True

    def replay(self) -> None:
        self.holding = False
        for record in self.records:
            logging.getLogger(record.name).handle(record)


def torchrun_main(argv: list[str] | None = None) -> int:
    """torchrun (``python -m torch.distributed.run ARGS``), its failures ended as above."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    plain = logging.StreamHandler()  # torchrun's notices as `python -m torch.distributed.run`
    plain.setFormatter(logging.Formatter("%(message)s"))  # prints them: no glog prefix
    notices = logging.getLogger("torch.distributed.run")
    notices.addHandler(plain)
    notices.propagate = False
    held = _HeldRecords()
    # the worker-process context's logger (torch/distributed/elastic/multiprocessing/api.py)
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(held)
    with tempfile.TemporaryDirectory(prefix="classzoo-ranks-") as folder:
        os.environ[ERRORS_ENV] = folder  # the workers inherit torchrun's environment
        try:
            run(args)
        except ChildFailedError as exc:
            codes = {rank: f.exitcode for rank, f in exc.failures.items()}
            return _report_failure(codes, Path(folder), held, str(exc))
        except SignalException as exc:  # a second signal: torchrun shut the workers down
            print(f"classzoo: stopped by {exc.sigval.name}", file=sys.stderr)
            return 128 + int(exc.sigval)
        for line in dict.fromkeys(_stopped_lines(Path(folder))):  # stopped before step 1
            print(line, file=sys.stderr)
    return 0


def _stopped_lines(folder: Path) -> list[str]:
    """The lines of ranks a signal ended before there was anything to save (engine/stop.py)."""
    return [p.read_text().strip() for p in sorted(folder.glob("rank*.stopped"))]


def _report_failure(codes: dict[int, int], folder: Path, held: _HeldRecords, table: str) -> int:
    """One line per distinct error and exit 2 when the workers stopped on a UserError; else
    torchrun's account of the failure (which rank, which exit code), exit 1."""
    errors = _rank_lines(folder, codes, USER_ERROR_EXIT, "error")
    if stopped_by_user_error(codes):
        for line in distinct_lines(errors):
            print(line, file=sys.stderr)
        return USER_ERROR_EXIT
    held.replay()
    print(table, file=sys.stderr)
    notes = _rank_lines(folder, codes, PEER_STOPPED_EXIT, "peer")
    for line in [*notes.values(), *distinct_lines(errors)]:
        print(line, file=sys.stderr)
    return TORCHRUN_FAILED_EXIT


def stopped_by_user_error(codes: dict[int, int]) -> bool:
    """Some rank exited 2 and every other failed rank stopped because of it: its peer went away
    (3) or torchrun ended it after the first failure (SIGTERM, then SIGKILL after its
    ``shutdown_timeout``; elastic/multiprocessing/api.py ``_poll`` closes the other workers)."""
    stopped = {USER_ERROR_EXIT, PEER_STOPPED_EXIT, -15, -9}
    return USER_ERROR_EXIT in codes.values() and set(codes.values()) <= stopped


def distinct_lines(lines: dict[int, str]) -> list[str]:
    """The ranks' error lines, each once; ranks named only when they disagree."""
    unique = list(dict.fromkeys(lines.values()))
    if len(unique) <= 1:
        return unique
    prefix = "classzoo: error: "
    return [
        f"{prefix}rank {rank}: {line.removeprefix(prefix)}" for rank, line in sorted(lines.items())
    ]


def _rank_lines(folder: Path, codes: dict[int, int], code: int, kind: str) -> dict[int, str]:
    """The line each rank that exited with ``code`` left (a restarted group's older files are
    ignored: only ranks whose final exit code matches are read)."""
    out = {}
    for rank in sorted(r for r, c in codes.items() if c == code):
        try:
            out[rank] = (folder / f"rank{rank}.{kind}").read_text().strip()
        except OSError:  # it printed its line itself (see hand_to_launcher)
            continue
    return out


# ---- the workers' side (classzoo.cli.main) ------------------------------------------------------


def world_size() -> int:
    """torchrun's WORLD_SIZE (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def hand_to_launcher(line: str, kind: str = "error") -> bool:
    """Leave ``line`` for this launcher to print (once for all ranks); False when this process
    runs under no launcher of classzoo's (plain torchrun) or the file cannot be written (a full
    disk): the caller prints it itself then."""
    folder = os.environ.get(ERRORS_ENV)
    if not folder or world_size() <= 1:
        return False
    try:
        rank = int(os.environ.get("RANK", "0"))
        (Path(folder) / f"rank{rank}.{kind}").write_text(line + "\n")
    except (OSError, ValueError):
        return False
    return True


def peer_stopped(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank went away, and nothing
    else: every exception in its chain (``__cause__`` / ``__context__``) is of the peer-gone
    family, so an error of this rank's own that a failed collective followed keeps its
    traceback. Only under torchrun (WORLD_SIZE > 1)."""
    if world_size() <= 1:
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, (RuntimeError, ConnectionError)):
            return False
        if not _PEER_GONE.search(str(current)):
            return False
        current = current.__cause__ or current.__context__
    return True


def peer_stopped_line() -> str:
    """The one line of such a rank: the rank that stopped first printed why, before it."""
    rank = os.environ.get("RANK", "?")
    # on several machines the rank that failed may be on another one: its console has the line
    nodes = os.environ.get("LOCAL_WORLD_SIZE", "") != os.environ.get("WORLD_SIZE", "")
    where = "above, or in another machine's output" if nodes else "above"
    return f"classzoo: rank {rank} stopped because another rank stopped; its error is {where}"
