"""A SIGTERM that reaches only rank 1 of a torchrun job (a scheduler signalling one process):
every rank stops at the same step, and the run's logs, written by rank 0, name the signal. Before,
rank 0 wrote and printed ``stopped by None at step 6`` (it had received no signal itself)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_imagefolder
from test_distributed_bn import RECIPE

pytestmark = pytest.mark.slow


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [v[5:] for v in env if v.startswith(b"RANK=")]
    return int(found[0]) if found else None


def _worker(launcher: int, rank: int) -> int | None:
    out = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True).stdout
    return next((int(p) for p in out.split() if _rank_of(int(p)) == rank), None)


def test_sigterm_to_rank_1_only_is_named_in_rank_0s_logs(tmp_path: Path):
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("abc", 8), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("abc", 5), seed=2)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "classzoo", "train", "--recipe", str(recipe), "--data-dir", str(data)]
    cmd += ["--output-dir", str(run), "--set", "train.epochs=40", "--set", "train.log_every=1"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline, sent = time.monotonic() + 300, False
    while not sent and proc.poll() is None and time.monotonic() < deadline:
        log = run / "train.log"
        if log.exists() and "step: 2 " in log.read_text():
            pid = _worker(proc.pid, 1)
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                sent = True
        time.sleep(0.02)
    err = proc.communicate(timeout=300)[1]
    assert sent, "the run ended before rank 1 could be signalled"
    assert proc.returncode == 0, err[-3000:]
    step = json.loads((run / "checkpoints" / "index.json").read_text())["checkpoints"]
    stopped = max(e["step"] for e in step.values())
    assert stopped < 40 * 3, "the run ended before the signal"
    line = f"stopped by SIGTERM to another rank at step {stopped}"
    assert line in (run / "train.log").read_text()
    assert line in (run / "eval.log").read_text()
    assert line in (run / "metrics.jsonl").read_text()
    assert line in err  # rank 0's warning
    assert "stopped by None" not in err
