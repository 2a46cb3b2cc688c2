"""Graceful stop: the first SIGTERM / SIGINT finishes the step, saves and exits 0; a second one
exits at once; under torchrun every rank stops at the same step; ``--resume auto`` then ends
bit-identical to a run that was never stopped (1 process and 2 under torchrun)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from classzoo.engine.stop import GracefulStop
from classzoo.formats.torch_checkpoint import load_checkpoint_file

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

# ---- GracefulStop on its own ----------------------------------------------------------------

LOOP = textwrap.dedent(
    """
    import logging, os, sys, time
    import torch
    from classzoo.engine.distributed import init_distributed
    from classzoo.engine.stop import GracefulStop
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = init_distributed("cpu")

    def say(line):  # one write(2) per line: under PIPE_BUF, so two ranks' lines never interleave
        os.write(1, (line + "\\n").encode())

    save_s = float(sys.argv[1])
    kill_at = int(sys.argv[2]) if len(sys.argv) > 2 else -1
    with GracefulStop() as stop:
        for step in range(1, 100_000):
            time.sleep(0.02)  # the optimizer step
            if env.rank == 1 and step == kill_at:
                os.kill(os.getpid(), 15)  # only this rank is told to stop
            say(f"STEP {env.rank} {step}")
            if stop.should_stop(env):
                say(f"STOP {env.rank} {step} {stop.signal_name}")
                time.sleep(save_s)  # the save
                say(f"SAVED {env.rank} {step}")
                sys.exit(stop.exit_code)
    """
)


def _start_loop(tmp_path: Path, save_s: float) -> subprocess.Popen:
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(save_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout.readline().startswith("STEP 0 1")  # handlers are installed
    return proc


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=["SIGTERM", "SIGINT", "SIGUSR1"]
)
def test_first_signal_finishes_the_step_saves_and_exits_0(tmp_path, sig):
    proc = _start_loop(tmp_path, save_s=0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    stop = next(ln for ln in out.splitlines() if ln.startswith("STOP"))
    assert stop.endswith(sig.name) and f"SAVED 0 {stop.split()[2]}" in out
    assert f"stopping after this step ({sig.name}); a second signal exits at once" in err


def test_second_signal_exits_at_once_by_that_signal(tmp_path):
    proc = _start_loop(tmp_path, save_s=60)  # a save that would take a minute
    proc.send_signal(signal.SIGTERM)
    while not proc.stdout.readline().startswith("STOP"):
        pass
    time.sleep(1.2)  # past the repeat window: a new signal, not the copy of the first
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM and time.monotonic() - t0 < 10


def test_a_copy_of_the_same_signal_within_the_window_counts_once(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group and torchrun forwards it too."""
    proc = _start_loop(tmp_path, save_s=1.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_a_signal_in_the_last_step_is_said_to_finish_the_run():
    """Under torchrun the ranks agree on a stop one step late, so a signal in the last step
    stops nothing: finishing() says what the run finishes (before: "after this step")."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("classzoo")
    logger.addHandler(handler)
    stop = GracefulStop().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # handled before the next line runs
        stop.finishing("the last checkpoint (no step is left)")
    finally:
        stop.close()
        logger.removeHandler(handler)
    said = "no step is left (SIGTERM came in the last one): finishing the last checkpoint"
    assert any(r.startswith(said) for r in records), records


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", *args]


@pytest.mark.slow
def test_ranks_agree_on_the_stop_step_under_torchrun(tmp_path):
    """Only rank 1 gets SIGTERM (at its step 20): both ranks stop at step 21, exit 0, and
    torchrun exits 0 (a group that SUCCEEDED is not restarted, --max-restarts or not)."""
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    proc = subprocess.run(
        _torchrun("--nproc-per-node=2", "--max-restarts=3", str(script), "0.2", "20"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    stops = sorted(re.findall(r"^STOP \d+ \d+ \S+$", proc.stdout, re.M))
    assert stops == ["STOP 0 21 None", "STOP 1 21 SIGTERM"]  # rank 0 got no signal itself
    # not restarted
    assert len(re.findall(r"STEP 0 1(?!\d)", proc.stdout)) == 1


def _launcher(cmd: list[str], stderr=None) -> subprocess.Popen:
    """classzoo train --nproc-per-node's launcher (run_forwarding_signals) running ``cmd``."""
    launcher = f"import sys; from classzoo.engine.stop import run_forwarding_signals as r; sys.exit(r({cmd!r}))"  # noqa: E501
    return subprocess.Popen(
        [sys.executable, "-c", launcher], stdout=subprocess.PIPE, stderr=stderr, text=True, env=ENV
    )


def _launched_loop(tmp_path: Path) -> subprocess.Popen:
    """The loop on 2 ranks under classzoo's launcher (torchrun --max-restarts=3), at step 5."""
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    proc = _launcher(_torchrun("--nproc-per-node=2", "--max-restarts=3", str(script), "0.2"))
    while not (line := proc.stdout.readline()).startswith("STEP 1 5"):
        assert line, "the workers ended before step 5"
    return proc


def _stops_of(proc: subprocess.Popen) -> list[list[str]]:
    """Each rank's (step, signal) of its STOP line, once the launcher exited 0. The loop writes
    each line with one write(2), so the ranks' lines do not interleave (print, which writes the
    text and its newline apart, gave "STOP 1 7 SIGUSR1STEP 1 7" on a 2-core EPYC)."""
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0
    return sorted(list(m) for m in re.findall(r"^STOP \d+ (\d+) (\S+)$", out, re.M))


@pytest.mark.slow
def test_launcher_forwards_one_signal_to_the_workers(tmp_path):
    """classzoo train --nproc-per-node's launcher: SIGTERM to it reaches each worker once."""
    proc = _launched_loop(tmp_path)
    proc.send_signal(signal.SIGTERM)
    stops = _stops_of(proc)
    assert len(stops) == 2 and stops[0] == stops[1]
    assert stops[0][1] == "SIGTERM"


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["exited", "reaped"])
def test_a_signal_once_the_workers_ended_leaves_torchrun_to_finish(tmp_path, moment):
    """SIGTERM to the launcher after the run's workers ended and before torchrun did: the run
    has finished, so the launcher says so in one line and exits 0 (it used to kill torchrun,
    which exited 241 with nothing said). ``--monitor-interval=3`` keeps torchrun from
    noticing the exit for up to 3 s: the signal comes while the worker is a zombie (exited,
    not reaped), or right after torchrun reaped it, while it reports the group's success."""
    script = tmp_path / "worker.py"
    script.write_text("import os, time; print('WORKER', os.getpid(), flush=True); time.sleep(1)")
    for _attempt in range(3):  # again if torchrun ended before the signal could be sent
        with open(tmp_path / "stderr", "w+") as err:
            cmd = _torchrun("--nproc-per-node=1", "--monitor-interval=3", str(script))
            proc = _launcher(cmd, stderr=err)
            worker = proc.stdout.readline().split()[1]
            (agent,) = _children(proc.pid)
            while _running(Path(f"/proc/{worker}/stat"), moment):
                time.sleep(0.002)
            sent = _running(Path(f"/proc/{agent}/stat"), "exited")
            if sent:
                proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
            err.seek(0)
            said = err.read()
        if sent:
            break
    assert sent and proc.returncode == 0, said[-3000:]
    if moment == "exited":  # reaped: torchrun may have ended before the launcher's handler ran
        assert "classzoo: SIGTERM: no worker running to stop; a second SIGTERM stops" in said


def _running(stat: Path, until: str) -> bool:
    """Whether the process of /proc/PID/``stat`` has not yet ``until`` ("exited": is a zombie
    or gone; "reaped": gone)."""
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return until == "reaped" or state != "Z"


@pytest.mark.slow
def test_slurms_sigusr1_to_every_process_stops_the_launched_run_with_exit_0(tmp_path):
    """Slurm's ``--signal=USR1@T`` reaches every process of the job step: the launcher,
    torchrun's agent and the workers. The agent has no handler for SIGUSR1, so it used to die
    by it (the launcher exited -10, the workers orphaned); the launcher now starts torchrun
    with SIGUSR1 ignored and the workers stop at one step and save."""
    proc = _launched_loop(tmp_path)
    agent = _children(proc.pid)
    everyone = [proc.pid, *agent, *(w for a in agent for w in _children(a))]
    assert len(everyone) == 4
    for pid in everyone:
        os.kill(pid, signal.SIGUSR1)
    stops = _stops_of(proc)
    assert len(stops) == 2 and stops[0] == stops[1] and stops[0][1] == "SIGUSR1"


# ---- classzoo train, end to end -----------------------------------------------------------------

RECIPE = """\
model:
  name: resnet10t
  drop_rate: 0.2
  kwargs: {channels: [8, 16, 32, 64], stem_width: 8}
data:
  source: imagefolder
  image_size: 32
  batch_size: 4
  eval_batch_size: 16
  num_workers: 2
  scale: [0.5, 1.0]
optim: {name: adamw, lr: 0.01, weight_decay: 0.05}
sched: {name: cosine, warmup_epochs: 0.4, warmup_lr: 0.001}
train: {mode: train, epochs: 5, ema: true, ema_decay: 0.9, amp: "off", log_every: 2, progress: false}
"""


def _cmd(recipe: Path, data: Path, out: Path, nproc: int, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "classzoo", "train", "--recipe", str(recipe)]
    cmd += ["--data-dir", str(data), "--output-dir", str(out), *extra]
    return cmd + (["--nproc-per-node", str(nproc)] if nproc > 1 else [])


def _newest(run: Path) -> dict:
    return load_checkpoint_file(sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1])


def _assert_identical(a: dict, b: dict) -> None:
    assert a["progress"] == b["progress"]
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for pid in sa:
        for k, v in sa[pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[pid][k])), f"opt {pid}.{k}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The never-stopped run of each world size, made once."""
    runs: dict[int, tuple] = {}

    def get(nproc: int, data: Path):
        if nproc not in runs:
            root = tmp_path_factory.mktemp(f"whole{nproc}")
            recipe = root / "tiny.yaml"
            recipe.write_text(RECIPE)
            proc = subprocess.run(
                _cmd(recipe, data, root / "run", nproc), capture_output=True, text=True, env=ENV
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            runs[nproc] = (recipe, _newest(root / "run"))
        return runs[nproc]

    return get


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "nproc", "group"),
    [
        pytest.param(signal.SIGTERM, 1, False, id="SIGTERM-1p"),
        pytest.param(signal.SIGINT, 1, False, id="SIGINT-1p"),
        # a terminal's Ctrl-C: the whole process group, DataLoader workers included
        pytest.param(signal.SIGINT, 1, True, id="SIGINT-group-1p"),
        # a scheduler's SIGTERM to every process of the job (Slurm's scancel): the workers
        # serve on until the step is saved (engine/stop.py WORKER_GRACE_S)
        pytest.param(signal.SIGTERM, 1, True, id="SIGTERM-group-1p"),
        # Slurm's --signal=USR1@T ahead of a time limit, to every process of the job step
        pytest.param(signal.SIGUSR1, 1, True, id="SIGUSR1-group-1p"),
        pytest.param(signal.SIGTERM, 2, False, id="SIGTERM-2p"),
        pytest.param(signal.SIGINT, 2, False, id="SIGINT-2p"),
    ],
)
def test_signal_saves_the_current_step_and_resume_is_bit_identical(
    sig, nproc, group, tmp_path, small_imagefolder, uninterrupted
):
    recipe, whole = uninterrupted(nproc, small_imagefolder)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(recipe, small_imagefolder, run, nproc),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,  # the signal goes to classzoo only (it forwards to torchrun)
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((run / "checkpoints").glob("ckpt-*.pt"))) >= 2:  # two epochs done
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
            break
        time.sleep(0.02)
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    stopped = _newest(run)["progress"]["step"]
    assert stopped < whole["progress"]["step"], "the run ended before the signal"
    assert f"stopped by {sig.name} at step {stopped}" in err and "--resume auto" in err
    resumed = subprocess.run(
        _cmd(recipe, small_imagefolder, run, nproc, "--resume", "auto"),
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_identical(_newest(run), whole)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == str(pid):  # field 4: the parent's pid
                kids.append(int(entry))
    return kids


@pytest.mark.slow
def test_a_killed_loader_worker_saves_the_steps_done_and_resume_is_bit_identical(
    tmp_path, small_imagefolder, uninterrupted
):
    """``kill -9`` of one DataLoader worker (what the kernel's out-of-memory killer does) ended
    the run with PyTorch's traceback, raised mid-step, and lost every step since the last
    checkpoint (21 in the hunt's run). The truth for the resumed run: the never-stopped run."""
    recipe, whole = uninterrupted(1, small_imagefolder)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(recipe, small_imagefolder, run, 1),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if list((run / "checkpoints").glob("ckpt-*.pt")) and (workers := _children(proc.pid)):
            time.sleep(0.5)  # into the next epoch
            os.kill(workers[0], signal.SIGKILL)
            break
        time.sleep(0.02)
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("classzoo: error:")]
    assert re.search(r"data loader worker \(pid \d+\) was killed by SIGKILL", line), line
    saved = _newest(run)["progress"]["step"]
    assert f"the {saved} steps done are saved: --resume auto continues" in line
    logged = re.findall(r"^step: (\d+) ", (run / "train.log").read_text(), re.M)
    assert int(logged[-1]) == saved < whole["progress"]["step"]  # no step lost
    resumed = subprocess.run(
        _cmd(recipe, small_imagefolder, run, 1, "--resume", "auto"),
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_identical(_newest(run), whole)


# ---- a signal while a run is being set up ---------------------------------------------------

# classzoo train, its set-up held for a minute: a data scan of ImageNet takes minutes
SLOW_SETUP = textwrap.dedent(
    """
    import os, sys, time
    import classzoo.engine.run as run_module
    from classzoo.cli import main
    set_up = run_module.set_up
    def slow_set_up(*args, **kwargs):
        os.write(1, f"SETTING UP {os.environ.get('RANK', '0')}\\n".encode())
        time.sleep(60)
        return set_up(*args, **kwargs)
    run_module.set_up = slow_set_up
    sys.exit(main(sys.argv[1:]))
    """
)


def _slow_setup_cmd(tmp_path: Path, data: Path, *launcher: str) -> list[str]:
    script = tmp_path / "slow_setup.py"
    script.write_text(SLOW_SETUP)
    args = ["train", "--recipe", "quickstart", "--data-dir", str(data)]
    args += ["--output-dir", str(tmp_path / "run"), "--set", "model.name=resnet10t"]
    return [*(launcher or [sys.executable]), str(script), *args]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_setup_stops_at_once_with_one_line_and_exit_0(
    tmp_path, small_imagefolder, sig
):
    """Before, SIGTERM kept its default action until training began (the process died with
    143 and said nothing) and SIGINT ended in "interrupted", exit 130: a scheduler or torchrun
    took either for a failure."""
    cmd = _slow_setup_cmd(tmp_path, small_imagefolder)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline() == "SETTING UP 0\n"
    t0 = time.monotonic()
    proc.send_signal(sig)
    err = proc.communicate(timeout=50)[1]
    assert time.monotonic() - t0 < 30  # not after the minute of set-up
    assert proc.returncode == 0, err[-3000:]
    said = f"classzoo: stopped by {sig.name} before the first training step; nothing to save"
    assert err.strip().splitlines()[-1] == said, err[-3000:]
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_signal_during_setup_under_torchrun_restarts_nothing(tmp_path, small_imagefolder):
    """Both ranks told to stop while setting up (torchrun forwards a signal to every worker,
    Slurm's scancel signals every process): both exit 0, so torchrun --max-restarts=3 exits 0
    without starting the group again, as docs/reliability.md promises for a stop."""
    torchrun = _torchrun("--nproc-per-node=2", "--max-restarts=3")
    cmd = _slow_setup_cmd(tmp_path, small_imagefolder, *torchrun)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    seen = {proc.stdout.readline(), proc.stdout.readline()}
    assert seen == {"SETTING UP 0\n", "SETTING UP 1\n"}
    workers = _children(proc.pid)
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "SETTING UP" not in out  # no second attempt
    said = "classzoo: stopped by SIGTERM before the first training step; nothing to save"
    assert err.count(said) == 2, err[-3000:]


# the run's final evaluation (HOLD=eval), its last checkpoint's save (HOLD=save), or the
# shutdown after the run (HOLD=exit), held for 3 s
FINAL_PART_HELD = textwrap.dedent(
    """
    import os, sys, time
    import classzoo.engine.run as run_module
    from classzoo.cli import main
    eval_during, save, shutdown = run_module._eval_during, run_module.save, run_module.shutdown
    def hold():
        os.write(1, b"FINAL PART\\n")
        time.sleep(3)
    def held_eval(*args):
        if args[7] and os.environ["HOLD"] == "eval":  # final
            hold()
        return eval_during(*args)
    def held_save(state, *args):
        if state.pos.step == 2 and os.environ["HOLD"] == "save":  # --max-steps 2
            hold()
        return save(state, *args)
    def held_shutdown(env):
        if os.environ["HOLD"] == "exit":  # the run has ended: the process group goes
            hold()
        return shutdown(env)
    run_module._eval_during, run_module.save = held_eval, held_save
    run_module.shutdown = held_shutdown
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize(
    ("mode", "hold", "said"),
    [
        ("train_and_evaluate", "eval", "the final evaluation (the last step is saved)"),
        (
            "train_and_evaluate",
            "save",
            "the last checkpoint and the final evaluation (no step is left)",
        ),
        ("train", "save", "the last checkpoint (no step is left)"),
        ("train", "exit", "the run, which has ended"),
    ],
)
def test_a_signal_during_the_final_part_says_what_it_waits_for(
    tmp_path, small_imagefolder, mode, hold, said
):
    """No step is left during the last checkpoint's save or the final evaluation: the warning
    names what the run finishes (before, "stopping after this step" while it went on). In the
    shutdown after the run (the process group destroyed, the interpreter's exit) a first
    signal is only logged (before, SIGTERM's default action ended a finished run with -15)."""
    script = tmp_path / "held.py"
    script.write_text(FINAL_PART_HELD)
    args = ["train", "--recipe", "quickstart", "--data-dir", str(small_imagefolder)]
    args += ["--output-dir", str(tmp_path / "run"), "--max-steps", "2"]
    for kv in ("model.name=resnet10t", "data.num_workers=0", "train.progress=false"):
        args += ["--set", kv]
    cmd = [sys.executable, str(script), *args, "--set", f"train.mode={mode}"]
    env = {**ENV, "HOLD": hold}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    while proc.stdout.readline() not in ("FINAL PART\n", ""):
        pass
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, err[-3000:]
    said = f"stopping after {said} (SIGTERM)"
    assert said in err and "stopping after this step" not in err, err[-3000:]
    assert (tmp_path / "run" / "summary.json").is_file()  # the run finished
