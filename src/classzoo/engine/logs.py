"""Console logging and progress (the run folder's files are engine/run_log.py)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path

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
