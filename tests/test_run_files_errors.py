"""The run folder's own files when the OS refuses them, and what a stopped run claims.

A full disk (or a file-size limit) hit by a log line mid-run, and a read-only output folder, end
in one line naming the file and the OS error, exit 2, with the checkpoint the run continues
from; no cut-off line is left in metrics.jsonl, and ``classzoo report`` and ``--resume auto``
still read the folder. A run stopped by SIGTERM writes no summary.json (timm writes nothing
final after an interrupt): the report marks it incomplete until the resumed run finishes.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from classzoo.cli import main
from classzoo.engine.logs import setup_console_logging
from classzoo.report import load_run
from conftest import write_imagefolder

STEPS_PER_EPOCH = 60  # 120 training images, batch 2: the next epoch-end save is far off
SRC = Path(__file__).resolve().parents[1] / "src"  # the child runs this checkout's code
PATH = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": PATH}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_imagefolder(root / "train", dict.fromkeys(["a", "b", "c"], 40), seed=1)
    write_imagefolder(root / "val", dict.fromkeys(["a", "b", "c"], 4), seed=2)
    return root


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(out),
        "--batch-size", "2", "--epochs", "2", "--set", "data.num_workers=0",
        "--set", "train.log_every=1", *extra,
    ]  # fmt: skip


def _classzoo(argv: list[str], preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "classzoo", *argv],
        capture_output=True,
        text=True,
        env=ENV,
        preexec_fn=preexec,
        timeout=300,
    )


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    return made.returncode == 0


def _in_process(argv: list[str], capsys) -> subprocess.CompletedProcess:
    """``classzoo ARGV`` in this process (no interpreter start): its exit code and stderr."""
    capsys.readouterr()
    code = main(argv)
    return subprocess.CompletedProcess(argv, code, "", capsys.readouterr().err)


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("classzoo: error:")]


def _report(run: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    return capsys.readouterr().out


# ---- a full disk mid-run --------------------------------------------------------------------


def _fill(folder: Path, leave: int) -> None:
    """A file taking all of ``folder``'s file system but ``leave`` bytes."""
    st = os.statvfs(folder)
    with open(folder / "filler", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - leave)


def _size_limit(limit: int):
    def preexec() -> None:  # in the child: a write past ``limit`` fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.slow  # three runs: 20-30 s
@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_a_full_disk_mid_run_is_one_line_and_the_folder_stays_readable(tmp_path, data, capsys, how):
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if how == "tmpfs" and not _mount_tmpfs(disk, "size=40m"):
        pytest.skip("cannot mount a tmpfs here (not root): the rlimit case covers it")
    run = (disk if how == "tmpfs" else tmp_path) / "run"
    try:
        # a finished run of 6 steps (its checkpoint: step 6), then resumed for 120
        first = _in_process(_args(data, run, "--set", "train.max_steps=6"), capsys)
        assert first.returncode == 0, first.stderr
        assert (run / "summary.json").is_file()
        preexec = None
        if how == "tmpfs":
            _fill(disk, 12 << 10)  # the log lines of some 20 steps, not the next checkpoint
        else:  # no file may outgrow the largest log file by more than ~6 metrics lines
            sizes = [p.stat().st_size for p in run.rglob("*") if "checkpoints" not in p.parts]
            preexec = _size_limit(max(sizes) + 1500)
        again = _args(data, run, "--resume", "auto")
        failed = _classzoo(again, preexec) if preexec else _in_process(again, capsys)
        assert failed.returncode == 2
        assert "Traceback" not in failed.stderr
        (line,) = _error_lines(failed.stderr)
        assert re.search(r"cannot write \S+/(metrics\.jsonl|train\.log): ", line), line
        reason = "No space left on device (errno 28)" if how == "tmpfs" else "(errno 27)"
        assert reason in line
        assert f"last checkpoint {run}/checkpoints/ckpt-000000006.pt (step 6)" in line
        assert f"--output-dir {run} --resume auto" in line
        # the run trained past the end summary.json recorded: no longer its result
        assert not (run / "summary.json").exists()
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert all(isinstance(json.loads(x), dict) for x in lines)  # no cut-off line
        logged = load_run(run).train
        assert 7 < logged[-1]["step"] < STEPS_PER_EPOCH  # mid-run, before the next save
        report = _report(run, capsys)
        assert "| run (incomplete) |" in report and "unreadable" not in report

        if how == "tmpfs":
            (disk / "filler").unlink()
        done = _in_process(
            _args(data, run, "--set", "train.max_steps=20", "--resume", "auto"), capsys
        )
        assert done.returncode == 0, done.stderr
        assert "resumed from" in done.stderr and "ckpt-000000006.pt at step 6" in done.stderr
        steps = sorted(r["step"] for r in load_run(run).train)  # one record a step
        assert steps[:20] == list(range(1, 21)) and len(steps) == len(set(steps))
        summary = json.loads((run / "summary.json").read_text())
        assert summary["epochs"] == round(20 / STEPS_PER_EPOCH, 3)
        assert "| run |" in _report(run, capsys)
    finally:
        if how == "tmpfs":
            setup_console_logging(True)  # closes console.log, open since the in-process runs
            subprocess.run(["umount", "-l", str(disk)], check=True)  # -l: also if busy


def test_a_full_disk_at_a_checkpoint_save_says_where_the_run_continues(tmp_path, data, capsys):
    run = tmp_path / "run"
    first = _in_process(_args(data, run, "--set", "train.max_steps=6"), capsys)
    assert first.returncode == 0, first.stderr
    # logs stay far under 1 MB; a checkpoint of this model (weights, optimizer) is ~15 MB
    again = _args(data, run, "--resume", "auto", "--set", "train.ckpt_every_steps=4")
    failed = _classzoo([*again, "--set", "train.max_steps=12"], _size_limit(1 << 20))
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    (line,) = _error_lines(failed.stderr)
    assert f"cannot write checkpoint {run}/checkpoints/ckpt-000000008.pt: File too large" in line
    assert f"last checkpoint {run}/checkpoints/ckpt-000000006.pt (step 6)" in line, line
    assert f"once there is room, --output-dir {run} --resume auto" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.pt", "ckpt-000000006.pt", "index.json"
    ]  # fmt: skip
    done = _in_process([*again, "--set", "train.max_steps=8"], capsys)
    assert done.returncode == 0, done.stderr
    assert "ckpt-000000006.pt at step 6" in done.stderr
    assert (run / "checkpoints" / "ckpt-000000008.pt").is_file()


# ---- a read-only output folder --------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path) -> Path:
    """A folder nothing can be written into: a read-only tmpfs as root (root ignores modes),
    else a folder of mode 0o555."""
    folder = tmp_path / "ro"
    if os.geteuid() == 0:
        if not _mount_tmpfs(folder, "size=1m,ro"):
            pytest.skip("root, and no read-only tmpfs can be mounted: no read-only folder")
        yield folder
        subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.mark.parametrize("where", ["new folder inside", "the folder itself", "runs/ in it"])
def test_a_read_only_output_folder_is_one_line(data, read_only, capsys, monkeypatch, where):
    out = {"new folder inside": read_only / "x", "the folder itself": read_only}.get(where)
    argv = _args(data, out or read_only)
    if out is None:  # no --output-dir: runs/<recipe>-<time> in the working folder
        monkeypatch.chdir(read_only)
        argv = argv[: argv.index("--output-dir")] + argv[argv.index("--output-dir") + 2 :]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    (line,) = _error_lines(err)
    assert "Traceback" not in err
    errno = "(errno 30)" if os.geteuid() == 0 else "(errno 13)"  # EROFS, else EACCES
    expected = {
        "new folder inside": f"cannot create {read_only}/x: ",
        "the folder itself": f"cannot write {read_only}/console.log: ",
        "runs/ in it": "cannot create runs: ",
    }[where]
    assert line.startswith(f"classzoo: error: {expected}") and errno in line, line
    assert list(read_only.iterdir()) == []


# ---- a stopped run ----------------------------------------------------------------------


def _stop_at(run: Path, argv: list[str], step: int) -> subprocess.CompletedProcess:
    """Start ``classzoo ARGV`` and send SIGTERM once train.log has reached ``step``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "classzoo", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 300
    log = run / "train.log"
    while proc.poll() is None and time.monotonic() < deadline:
        if log.is_file() and f"step: {step} " in log.read_text():
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.slow  # a run stopped, then resumed: about 20 s
def test_a_stopped_run_claims_no_final_result_until_its_resume_finishes(tmp_path, data, capsys):
    run = tmp_path / "run"
    argv = _args(data, run, "--set", "train.eval_every=1")
    stopped = _stop_at(run, argv, STEPS_PER_EPOCH + 5)  # after epoch 1's evaluation
    assert stopped.returncode == 0, stopped.stderr
    step = int(re.search(r"stopped by SIGTERM at step (\d+)", stopped.stderr).group(1))
    assert STEPS_PER_EPOCH < step < 2 * STEPS_PER_EPOCH
    assert f"continue with: --output-dir {run} --resume auto" in stopped.stderr
    assert not (run / "summary.json").exists()  # epoch 1's score is not the run's result
    evals = load_run(run).evals
    assert [e["step"] for e in evals] == [STEPS_PER_EPOCH]
    report = _report(run, capsys)
    assert "| run (incomplete) |" in report
    assert f"stopped by SIGTERM at step {step}; --resume auto continues it" in report

    done = _in_process([*argv, "--resume", "auto"], capsys)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    final = load_run(run).evals[-1]
    assert final["step"] == 2 * STEPS_PER_EPOCH and summary["epochs"] == 2.0
    assert (summary["top1"], summary["count"]) == (final["top1"], final["count"])
    report = _report(run, capsys)
    assert "| run |" in report and "incomplete" not in report
