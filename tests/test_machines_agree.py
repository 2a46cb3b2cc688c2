"""Two machines (two torchrun agents, ``--nnodes 2``, on one host), each with its own folders:
every rank must continue from the same checkpoint and read the same images
(engine/rank_agreement.py).

Before, ``--resume auto`` where only the first machine held the run folder resumed rank 0 at
step 4 and started rank 1 afresh (losses of neither run, then a hang), and an eval where one
machine's copy of the val folder had one more image printed ``count 15`` of a set of images
that neither copy holds. The truths: the run folder and the data folders each machine was given
(counted by hand), and the same resume with a shared folder, which continues.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import write_imagefolder
from test_distributed import _env, _free_port

pytestmark = pytest.mark.slow

QUICK = ["--recipe", "quickstart", "--batch-size", "4", "--amp", "off"]
QUICK += ["--set", "data.num_workers=0", "--set", "train.progress=false"]


def _two_machines(args_of, timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """``classzoo ARGS`` on node 0 and node 1 at once; ``args_of(node)`` gives each its own."""
    port = str(_free_port())
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
        cmd += ["--nproc-per-node", "1", "--node-rank", str(node), "--master-addr", "127.0.0.1"]
        cmd += ["--master-port", port, "-m", "classzoo", *args_of(node)]
        procs.append(subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    done = []
    for cmd, p in zip(("node 0", "node 1"), procs):
        out, err = p.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    return done


def _line(proc: subprocess.CompletedProcess) -> str:
    lines = [x for x in proc.stderr.splitlines() if x.startswith("classzoo: error:")]
    assert lines, proc.stderr[-3000:]
    return lines[0]


def test_resume_auto_needs_the_run_folder_on_every_machine(tmp_path):
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("abc", 8), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("abc", 3), seed=2)
    runs = [tmp_path / "node0" / "run", tmp_path / "node1" / "run"]  # no shared file system

    def train(node: int, out, *extra: str) -> list[str]:
        return ["train", *QUICK, "--data-dir", str(data), "--output-dir", str(out), *extra]

    first = _two_machines(lambda n: train(n, runs[n], "--max-steps", "2"))
    assert [p.returncode for p in first] == [0, 0], first[0].stderr[-3000:]
    assert (runs[0] / "checkpoints" / "ckpt-000000002.pt").is_file()
    assert not runs[1].exists()  # only global rank 0 writes
    metrics = (runs[0] / "metrics.jsonl").read_text()

    again = _two_machines(lambda n: train(n, runs[n], "--max-steps", "4", "--resume", "auto"))
    for proc in again:
        assert proc.returncode != 0
        line = _line(proc)
        assert "--resume auto: the ranks would continue from different steps" in line
        assert f"rank 0: step 2 in {runs[0]}/checkpoints" in line
        assert f"rank 1: no checkpoint in {runs[1]}/checkpoints" in line
    assert (runs[0] / "metrics.jsonl").read_text() == metrics  # refused before any write
    assert (runs[0] / "summary.json").is_file()

    assert not runs[1].exists()
    # a shared folder: both machines continue from step 2
    shared = _two_machines(lambda n: train(n, runs[0], "--max-steps", "4", "--resume", "auto"))
    assert [p.returncode for p in shared] == [0, 0], shared[0].stderr[-3000:]
    assert "resumed from" in shared[0].stderr and "at step 2" in shared[0].stderr
    assert (runs[0] / "checkpoints" / "ckpt-000000004.pt").is_file()


def test_eval_needs_the_same_images_on_every_machine(tmp_path):
    copies = [tmp_path / "node0" / "data", tmp_path / "node1" / "data"]
    write_imagefolder(copies[0] / "train", dict.fromkeys("abc", 4), seed=1)
    write_imagefolder(copies[0] / "val", dict.fromkeys("abc", 5), seed=2)
    run = tmp_path / "run"
    made = subprocess.run(
        [sys.executable, "-m", "classzoo", "train", *QUICK, "--data-dir", str(copies[0]),
         "--output-dir", str(run), "--max-steps", "1"],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    shutil.copytree(copies[0], copies[1])

    def evaluate(node: int) -> list[str]:
        return ["eval", "--checkpoint", str(run), "--data-dir", str(copies[node]), "--json"]

    same = _two_machines(evaluate)  # identical copies at other paths: every image once
    assert [p.returncode for p in same] == [0, 0], same[1].stderr[-3000:]
    assert json.loads(same[0].stdout.splitlines()[-1])["count"] == 15
    (copies[1] / "val" / "c" / "00099.png").write_bytes(
        (copies[1] / "val" / "a" / "00000.png").read_bytes()
    )
    differ = _two_machines(evaluate)
    for proc in differ:
        assert proc.returncode != 0 and '"count"' not in proc.stdout
        line = _line(proc)
        assert "the eval split differs between ranks" in line
        assert f"rank 0: 15 images, 3 classes in {copies[0]}/val" in line
        assert f"rank 1: 16 images, 3 classes in {copies[1]}/val" in line

    def train(node: int) -> list[str]:  # each rank cuts its shard of every epoch from its list
        return ["train", *QUICK, "--data-dir", str(copies[node]), "--output-dir", str(run) + "2"]

    for proc in _two_machines(train):
        assert proc.returncode != 0
        assert "the val split differs between ranks" in _line(proc)
    assert not (tmp_path / "run2").exists()  # before anything is written

    shutil.rmtree(copies[1])  # no data on the second machine: its console says so
    gone = _two_machines(evaluate)
    assert f"data directory {copies[1]} does not exist" in _line(gone[1])
    said = "rank 0 stopped because another rank stopped; its error is above, or in another "
    assert said + "machine's output" in gone[0].stderr
