"""The thread budget: how the cores are split, and the OpenMP wait policy set before torch loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from classzoo.engine.threads import apply, plan_threads

# the smallest `classzoo bench` on synthetic tensors: one step of a tiny network
_BENCH = [
    sys.executable, "-m", "classzoo", "bench", "--model", "resnet10t", "--batch-size", "2",
    "--image-size", "32", "--steps", "1", "--warmup", "0", "--amp", "off", "--json",
]  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(var, raising=False)


def test_cpu_keeps_its_free_cores_an_accelerator_leaves_them_to_workers(clean_env):
    cpu = plan_threads(2, torch.device("cpu"), cores=2, load=0.1)
    assert (cpu.compute_threads, cpu.num_workers) == (2, 2)  # the quickstart: 2 + 2 on 2 cores
    # another process keeps a core busy: one thread (bf16 at 2 threads collapsed there)
    assert plan_threads(2, "cpu", cores=2, load=1.2).compute_threads == 1
    assert plan_threads(2, "cpu", cores=2, load=9.0).compute_threads == 1
    # deterministic unless a load is passed: a resume must compute with the same count
    assert plan_threads(2, "cpu", cores=2).compute_threads == 2
    assert plan_threads(2, "cpu", cores=2, load=9.0, threads=2).compute_threads == 2
    gpu = plan_threads(8, torch.device("cuda"), cores=16)
    assert gpu.compute_threads == 4 and gpu.cores == 16  # 8 workers, the host needs few
    assert plan_threads(16, "cuda", cores=16).compute_threads == 1
    # torchrun with 4 local processes on 16 cores: 4 each
    assert plan_threads(2, "cpu", local_world_size=4, cores=16, load=0).compute_threads == 4


def test_user_settings_win(clean_env, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert plan_threads(2, "cpu", cores=16, load=12).compute_threads == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert plan_threads(1, "cpu", cores=16, load=0).compute_threads == 2


def test_apply_sets_torch_threads(clean_env):
    before = torch.get_num_threads()
    try:
        apply(plan_threads(0, "cpu", cores=1, load=0))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _policy_in_child(env_extra: dict[str, str], torch_first: bool) -> str:
    code = (
        ("import torch\n" if torch_first else "")
        + "import os\nfrom classzoo.engine.threads import prefer_passive_wait\n"
        + "ok = prefer_passive_wait()\nprint(ok, os.environ.get('OMP_WAIT_POLICY'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_passive_wait_is_set_before_torch_loads_unless_the_user_chose():
    assert _policy_in_child({}, torch_first=False) == "True PASSIVE"
    assert _policy_in_child({"OMP_WAIT_POLICY": "ACTIVE"}, torch_first=False) == "True ACTIVE"
    assert _policy_in_child({"GOMP_SPINCOUNT": "1000"}, torch_first=False) == "True None"
    # torch already loaded libgomp: too late for this process, and it says so
    assert _policy_in_child({}, torch_first=True) == "False PASSIVE"


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="busy cores are read from /proc/stat")
def test_a_run_beside_a_busy_process_leaves_it_a_core_and_its_resume_keeps_the_count(
    small_imagefolder, tmp_path
):
    """A CPU run started while another process keeps a core busy computes with the cores left
    free (bf16 at 2 threads collapsed there: 26-100 against 222-276 img/s at 1 thread); the
    count is recorded in resolved.yaml, and ``--resume auto`` reuses it when the machine is
    idle again (another count would change the float results). ``classzoo bench`` started
    there times the step with the count a run would start with."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [
        sys.executable, "-m", "classzoo", "train", "--recipe", "quickstart", "--data-dir",
        str(small_imagefolder), "--output-dir", str(tmp_path / "run"), "--amp", "off",
        "--set", "model.name=resnet10t", "--set", "data.image_size=32",
        "--set", "data.batch_size=8", "--set", "data.num_workers=0",
        "--set", "train.mode=train",
    ]  # fmt: skip
    cores = len(os.sched_getaffinity(0))
    spin = "import time\nt = time.time()\nwhile time.time() - t < 60: pass"
    busy = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(cores - 1)]
    try:
        first = subprocess.run([*cmd, "--max-steps", "1"], env=env, capture_output=True, text=True)
        timed = subprocess.run(_BENCH, env=env, capture_output=True, text=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert first.returncode == 0, first.stderr[-2000:]
    resolved = (tmp_path / "run" / "resolved.yaml").read_text()
    assert "threads: 1\n" in resolved, resolved
    assert f"{cores - 1} busy with other processes" in first.stderr
    # classzoo bench times the step with the threads a run would start with there
    assert timed.returncode == 0, timed.stderr[-2000:]
    report = json.loads(timed.stdout)
    assert report["threads"] == 1 and f"{cores - 1} busy" in report["thread_plan"], report
    again = subprocess.run(
        [*cmd, "--max-steps", "2", "--resume", "auto"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "as recorded at the run's start" in again.stderr
    assert "threads: 1\n" in (tmp_path / "run" / "resolved.yaml").read_text()
    # the user's OMP_NUM_THREADS wins, and the record says what it costs
    mine = subprocess.run(
        [*cmd, "--max-steps", "3", "--resume", "auto"],
        env={**env, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
    )
    assert mine.returncode == 0, mine.stderr[-2000:]
    began = "OMP_NUM_THREADS=2 (the run began with 1: not bit-identical to a run never stopped)"
    record = yaml.safe_load((tmp_path / "run" / "resolved.yaml").read_text())
    assert began in mine.stderr and began in record["thread_plan"], mine.stderr[-2000:]


def _libgomp_spin_count(stderr: str) -> str:
    """The spin count libgomp itself reports at load (``OMP_DISPLAY_ENV=verbose``): how many
    iterations an idle OpenMP thread spins before it sleeps (0: PASSIVE)."""
    lines = [x for x in stderr.splitlines() if x.strip().startswith("GOMP_SPINCOUNT")]
    if not lines:  # torch built with another OpenMP runtime (macOS, Intel's): no such report
        pytest.skip("this torch's OpenMP runtime is not libgomp")
    return lines[0].split("=")[1].strip().strip("'")


def test_openmp_threads_spin_only_where_no_loader_worker_shares_the_cores(tmp_path):
    """libgomp's spinning default ran the ResNet-50 step alone 1.23x (median of 8 alternating
    pairs) the images/s of PASSIVE, but the quickstart with its 2 workers on 2 cores 1.1x
    slower: the CLI keeps PASSIVE only where workers share the cores (engine/threads.py), and
    libgomp's own report at load says which it got; a user's choice wins."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_DISPLAY_ENV"] = "verbose"
    alone = subprocess.run(_BENCH, env=env, capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert _libgomp_spin_count(alone.stderr) == "300000"  # libgomp's documented default
    assert "spin" in alone.stdout and "PASSIVE" not in alone.stdout

    def train(workers: int, **extra: str) -> tuple[subprocess.CompletedProcess, str]:
        out = tmp_path / f"run{workers}{len(extra)}"
        cmd = [
            sys.executable, "-m", "classzoo", "train", "--recipe", "quickstart", "--output-dir",
            str(out), "--amp", "off", "--max-steps", "1", "--set", "data.source=synthetic",
            "--set", "data.image_size=32", "--set", "data.batch_size=8",
            "--set", f"data.num_workers={workers}", "--set", "train.mode=train",
        ]  # fmt: skip
        done = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done, yaml.safe_load((out / "resolved.yaml").read_text())["thread_plan"]

    shared, resolved = train(1)
    assert _libgomp_spin_count(shared.stderr) == "0"  # PASSIVE: threads sleep at once
    assert "PASSIVE (loader workers share the cores)" in resolved
    inline, resolved = train(0)
    assert _libgomp_spin_count(inline.stderr) == "300000"
    assert "spin, then sleep" in resolved
    yours, resolved = train(1, OMP_WAIT_POLICY="ACTIVE")
    assert _libgomp_spin_count(yours.stderr) == "30000000000"  # libgomp's ACTIVE
    assert "OMP_WAIT_POLICY=ACTIVE (yours)" in resolved
