"""The eval rows of a run's metrics.jsonl (written by engine/run_log.py ``RunLogger``), read
back where index.json of the checkpoints is rebuilt (engine/checkpoint.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NOT_SCORES = ("kind", "step", "epoch", "time")  # bookkeeping fields of a metrics.jsonl row


def eval_rows(path: Path) -> tuple[dict[int, list[dict[str, Any]]], str | None]:
    """The eval rows of a run's metrics.jsonl (``RunLogger``) by step, in the order written,
    and why some may be missing (None when every line read as a train, eval or marker row)."""
    rows: dict[int, list[dict[str, Any]]] = {}
    damaged = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    kind, step = row["kind"], row.get("step")
                except (ValueError, TypeError, KeyError, AttributeError):
                    kind, step = None, None
                if kind == "eval" and isinstance(step, int):
                    rows.setdefault(step, []).append(row)
                elif kind not in ("train", "marker"):
                    damaged.append(number)
    except OSError as exc:
        return rows, f"{path} is unreadable ({exc.strerror or exc})"
    if damaged:
        return rows, f"{path} has {len(damaged)} damaged line(s) (the first: line {damaged[0]})"
    return rows, None
