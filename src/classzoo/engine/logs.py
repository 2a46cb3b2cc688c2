"""Console logging and progress bars (the run folder's files are engine/run_log.py), and the
append-only log file both write to: one whole line or none, an OS error as one line."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO, TypeVar

from tqdm import tqdm

from classzoo.errors import WriteError

log = logging.getLogger("classzoo")
T = TypeVar("T")


class RunFileError(WriteError):
    """A file or folder of the run could not be written (a full disk, a quota, a read-only
    folder): one line naming it and the OS error (engine/run_dir.py adds where to resume)."""


def write_error(path: Path | str, exc: OSError, verb: str = "write") -> RunFileError:
    """``cannot write PATH: No space left on device (errno 28)``."""
    if exc.errno is None:
        return RunFileError(f"cannot {verb} {path}: {exc}")
    reason = f"{os.strerror(exc.errno)} (errno {exc.errno})"
    return RunFileError(f"cannot {verb} {path}: {reason}", exc.errno)


class AppendFile:
    """A log file appended one whole record at a time: a write that fails part way (a full disk
    takes what fits) is cut back to where the file ended, so no reader meets a cut-off line,
    and the error is one :class:`RunFileError` line. Unbuffered: a line is in the file (the
    page cache) when ``write`` returns, as the line-buffered files it replaces had it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd: int | None = os.open(self.path, flags, 0o666)
            end = os.fstat(self.fd).st_size
            # a line cut off by a kill in an earlier attempt stays one bad line, not two
            if end and os.pread(self.fd, 1, end - 1) != b"\n":
                self.write("\n")
        except OSError as exc:
            raise write_error(self.path, exc) from None

    @property
    def empty(self) -> bool:
        return self.fd is None or os.fstat(self.fd).st_size == 0

    def write(self, text: str) -> None:
        if self.fd is None:
            return
        data = memoryview(text.encode("utf-8", "surrogateescape"))  # a non-UTF-8 file name
        start = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except OSError as exc:
            with contextlib.suppress(OSError):  # frees space: works on a full disk too
                os.ftruncate(self.fd, start)
            raise write_error(self.path, exc) from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _ConsoleHandler(logging.StreamHandler):
    """Plain lines on stderr that go above a live progress bar (tqdm.write clears and redraws
    it), so the terminal's scrollback keeps every line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            try:
                tqdm.write(text, file=self.stream)
            except UnicodeEncodeError:  # a file name that is not UTF-8, on a strict stream
                tqdm.write(text.encode("ascii", "backslashreplace").decode(), file=self.stream)
        except Exception:  # logging's contract: report, never raise
            self.handleError(record)


class _FileCopy(logging.Handler):
    """The console's lines copied to a file (console.log). A write that fails (the disk
    filled) stops the copy with one warning line on stderr: a logging handler must not raise
    (log calls sit in cleanup paths), and the run's own logs, on the same folder, end the run
    with the error at their next line."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.file = AppendFile(path)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.file.write(self.format(record) + "\n")
        except RunFileError as exc:
            self.file.close()
            print(f"classzoo: warning: {exc}; console lines are no longer copied there",
                  file=sys.stderr)  # fmt: skip
        except Exception:  # a formatting error: logging's contract, report, never raise
            self.handleError(record)

    def close(self) -> None:
        self.file.close()
        super().close()


def setup_console_logging(is_main: bool, log_file: Path | None = None) -> None:
    """INFO to stderr on rank 0 (warnings elsewhere); plain lines, also copied to ``log_file``
    (a :class:`RunFileError` when it cannot be opened: the handlers set before stay)."""
    handlers: list[logging.Handler] = [_ConsoleHandler(sys.stderr)]
    if log_file is not None and is_main:
        handlers.append(_FileCopy(log_file))
    root = logging.getLogger("classzoo")
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    root.propagate = False
    for h in list(root.handlers):
        if getattr(h, "_classzoo", False):
            root.removeHandler(h)
            if isinstance(h, _FileCopy):
                h.close()
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        h._classzoo = True  # type: ignore[attr-defined]
        root.addHandler(h)


def _duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    return tqdm.format_interval(seconds)


class Progress:
    """Progress of one job (a run, an evaluation, a conversion), cheap enough to call every step.

    On a terminal: one tqdm bar (count, percent, elapsed, ETA, rate, then loss and data wait
    when given). Elsewhere (a log file, a pipe): a plain line every ``interval_s`` seconds and at
    each tenth of the job, ``desc i/N (p%) elapsed E ETA T, data wait W%, loss L``, once the job
    has run ``quiet_s`` seconds (a quick job leaves no lines in a log). Nothing here
    reads a device tensor: ``loss`` is a float the caller already has.

    ``update(done)`` takes the absolute count; the first call sets where the job starts (a
    resumed run starts at its step), so the rate and ETA count only this process's work.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        enabled: bool = True,
        *,
        unit: str = "step",
        interval_s: float = 30.0,
        quiet_s: float = 5.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.interval_s = int(total), desc, unit, interval_s
        self.quiet_s = quiet_s
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.total > 0
        self.tty = self.enabled and _isatty(self.stream)
        self._bar: tqdm | None = None
        self._start_done: int | None = None
        self._start_t = self._last_line_t = time.perf_counter()
        self._done = 0
        self._last_tenth = -1
        self._loss: float | None = None
        self._wait_frac: float | None = None
        self._wait_t = self._start_t
        self._lines = 0

    def update(
        self, done: int, loss: float | None = None, data_wait_s: float | None = None
    ) -> None:
        """``done`` items finished in all; ``loss`` the latest logged value; ``data_wait_s`` the
        seconds spent waiting for data since the previous call that passed it."""
        if not self.enabled:
            return
        now = time.perf_counter()
        first = self._start_done is None
        if first:
            self._start_done, self._start_t, self._wait_t = done, now, now
            self._last_tenth = self._tenth(done)
        self._done = done
        if loss is not None:
            self._loss = loss
        if data_wait_s is not None and not first:  # the first covers time before the start
            self._wait_frac = data_wait_s / max(now - self._wait_t, 1e-9)
            self._wait_t = now
        if self.tty:
            self._tick_bar(done, loss is not None or data_wait_s is not None)
        elif now - self._start_t >= self.quiet_s and (
            now - self._last_line_t >= self.interval_s or self._tenth(done) > self._last_tenth
        ):
            self._write_line(now)

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description_str(desc, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()  # leave=True: the finished bar stays on screen
            self._bar = None
        elif self.enabled and not self.tty and self._lines and self._last_tenth < 10:
            self._write_line(time.perf_counter())  # where a job that stopped early ended
        self.enabled = False

    # ---- internals ---------------------------------------------------------------------
    def _tenth(self, done: int) -> int:
        return min(10, done * 10 // self.total)

    def _extras(self) -> str:
        parts = []
        if self._wait_frac is not None:
            parts.append(f"data wait {100 * min(self._wait_frac, 1.0):.0f}%")
        if self._loss is not None:
            parts.append(f"loss {self._loss:.4f}")
        return ", ".join(parts)

    def _tick_bar(self, done: int, new_extras: bool) -> None:
        if self._bar is None:
            self._bar = tqdm(
                total=self.total,
                initial=done,
                desc=self.desc,
                unit=self.unit,
                file=self.stream,
                # follow the window's width; a terminal reporting 0 columns (a bare pty) would
                # make tqdm print nothing, so it gets a fixed width
                dynamic_ncols=_columns(self.stream) > 0,
                ncols=None if _columns(self.stream) > 0 else 100,
                leave=True,
            )
        if new_extras:
            self._bar.set_postfix_str(self._extras(), refresh=False)
        self._bar.update(done - self._bar.n)  # tqdm redraws at most every mininterval (0.1 s)

    def _write_line(self, now: float) -> None:
        done, total = self._done, self.total
        elapsed = now - self._start_t
        rate = (done - (self._start_done or 0)) / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else None
        line = (
            f"{self.desc} {done}/{total} ({100 * done / total:.0f}%) "
            f"elapsed {_duration(elapsed)} ETA {_duration(eta)}"
        )
        extras = self._extras()
        self.stream.write(f"{line}, {extras}\n" if extras else f"{line}\n")
        self.stream.flush()
        self._last_line_t = now
        self._last_tenth = self._tenth(done)
        self._lines += 1


def track(
    items: Iterable[T], total: int, desc: str, unit: str = "item", enabled: bool = True
) -> Iterator[T]:
    """``items`` unchanged, with a :class:`Progress` over them: the one-line way to give a loop
    (shards written, shards indexed, tensors converted) a bar or periodic lines."""
    bar = Progress(total, desc, enabled, unit=unit)
    bar.update(0)
    done = 0
    try:
        for item in items:
            yield item
            done += 1
            bar.update(done)
    finally:
        bar.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0
