"""Thread budget: the training process's compute threads and its DataLoader workers share cores.

Why a busy CPU collapsed training (benchmarks/bench_threads.py; 2-core AMX VM shared with other
jobs, load average ~10): PyTorch's OpenMP runtime (libgomp) lets a thread that reaches the end
of a parallel region spin for GOMP_SPINCOUNT = 300,000 iterations before it sleeps, as long as
there are no more threads than CPUs in its affinity mask; it does not look at the load. When
another process (a DataLoader worker, another job) holds one of the two cores, the spinning
thread keeps its own core while the thread it waits for has none, so every barrier costs a
scheduler time slice: the quickstart network's fp32 step took 11-16 s wall and 2-2.7 s CPU
with 2 threads, against ~1 s wall and 0.17 s CPU with 1 thread or with
``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once), in the same minutes. bf16 autocast runs
more, shorter parallel regions (oneDNN reorders to and from bf16 around each conv), so it
collapsed first: the ~25 img/s against fp32's ~700 reported in issue 10.

Passive waiting fixes fp32 (and saves the spinning CPU), but not bf16 with 2 threads: with one
competing busy process, bf16 at 2 threads stayed at 5-22 img/s while 1 thread ran 330-480 img/s
(fp32 ~200-320), same minutes. A likely cause (not verified in PyTorch's own oneDNN build):
oneDNN's own barrier, ``simple_barrier`` (a sense-reversing barrier on volatile counters, used by
``cpu_reducer`` for the reductions of some backward-weights convolutions), does not go through
OpenMP's wait policy. Fewer compute threads than busy cores avoid it, but the thread count
changes the float results (the quickstart network's gradients differ by up to 5e-4 between 1
and 2 threads), so it must not change between a run and its resume: :func:`plan_threads` is
deterministic unless the caller passes the load (:func:`machine_load`), which a run should do
at its first start only, recording the count and passing it back (``threads``) on resume.

Spinning is what a process needs when nobody else wants its cores: the ResNet-50 training step
alone (batch 16, bf16, 2 threads, no loader workers) ran 0.93-1.73x (median 1.23x of 8
alternating pairs) the images/s with libgomp's spinning default than with PASSIVE; process CPU
/ wall 2.00 against ~1.8 (likely: waking a sleeping thread costs this VM more than the spin),
while the quickstart, whose 2 DataLoader workers share the 2 cores, took 180 and 185 s spinning
against 159 and 166 s passive, alternating (docs/benchmarks.md, session 5).

So: the wait policy is PASSIVE unless the user chose one (:func:`prefer_passive_wait`, which
must run before ``import torch``: libgomp reads it when it loads); a command that knows before
torch loads that no loader worker will share its cores (``classzoo bench`` on synthetic tensors,
``classzoo train`` with ``data.num_workers=0``) gives libgomp its spinning default back
(:func:`choose_wait_policy`); and :func:`plan_threads` splits the cores between the local
processes; a CPU device keeps the cores of its share that are free for compute (workers mostly
wait for the step; passive threads give their cores back when they do), an accelerator leaves
the workers the cores its host thread does not need. DataLoader workers run one torch thread
each (PyTorch sets that in every worker).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass

log = logging.getLogger("classzoo")

WAIT_POLICY = "PASSIVE"
SPIN = "OpenMP threads spin, then sleep (libgomp's default; no loader worker shares the cores)"
_USER_POLICY = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
_SET_BY_US = "_CLASSZOO_SET_WAIT"  # inherited by torchrun ranks: their PASSIVE is ours too


def _ours() -> bool:
    return os.environ.get(_SET_BY_US) == "1" and os.environ.get("OMP_WAIT_POLICY") == WAIT_POLICY


def prefer_passive_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a wait policy. Call it before
    anything imports torch (``classzoo/__init__.py``). Returns False when torch was already
    imported (then it is too late for this process; DataLoader workers are forks of it)."""
    if not any(v in os.environ for v in _USER_POLICY):
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
        os.environ[_SET_BY_US] = "1"
    return "torch" not in sys.modules


def choose_wait_policy(loader_workers: int) -> str:
    """Before torch loads: keep classzoo's PASSIVE when ``loader_workers`` (DataLoader worker
    processes or DALI threads) will share this process's cores, else give libgomp its spinning
    default back (module docstring). A user's choice and a torch loaded earlier stay as they
    are. Returns the policy libgomp runs with (:func:`wait_policy`)."""
    if loader_workers == 0 and _ours() and "torch" not in sys.modules:
        del os.environ["OMP_WAIT_POLICY"], os.environ[_SET_BY_US]
    return wait_policy()


def loader_threads(loader: str, num_workers: int) -> int:
    """Loader processes or threads running beside the training step: ``data.num_workers``
    DataLoader workers, or DALI's threads (at least one)."""
    return num_workers if loader == "torch" else max(1, num_workers)


def wait_policy() -> str:
    """What libgomp waits with in this process, as its environment says, for the log."""
    if _ours():
        return f"OpenMP threads sleep when idle: {WAIT_POLICY} (loader workers share the cores)"
    user = [f"{v}={os.environ[v]}" for v in _USER_POLICY if v in os.environ]
    return f"OpenMP wait: {', '.join(user)} (yours)" if user else SPIN


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cgroup cpusets, SLURM)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def machine_load(cores: int) -> float:
    """The 1-minute load average scaled from all the machine's CPUs to ``cores`` (a container
    sees its host's load); 0 where the platform has none."""
    try:
        return os.getloadavg()[0] * cores / max(os.cpu_count() or cores, cores)
    except (AttributeError, OSError):  # Windows
        return 0.0


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line; None elsewhere."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(cores: int, seconds: float = 0.3) -> float:
    """How many of ``cores`` other processes keep busy right now: the machine's CPU use over
    ``seconds`` while this process sleeps, scaled to ``cores``. Unlike the load average it does
    not remember the last minute (a run started right after another one sees an idle machine).
    Falls back to :func:`machine_load` where /proc/stat is missing."""
    first = _cpu_times()
    if first is None:
        return machine_load(cores)
    time.sleep(seconds)
    second = _cpu_times()
    busy, total = second[0] - first[0], second[1] - first[1]
    share = busy / total if total > 0 else 0.0
    return share * cores


@dataclass(frozen=True)
class ThreadPlan:
    cores: int  # this process's share of the machine's cores
    compute_threads: int  # torch intra-op threads of the training process
    interop_threads: int
    num_workers: int  # DataLoader workers, one torch thread each
    wait_policy: str  # what libgomp runs with in this process
    why: str  # one line for the start-of-run log

    @property
    def explained(self) -> str:
        """Why this many threads, and how they wait: resolved.yaml's ``thread_plan``."""
        return f"{self.why}; {self.wait_policy}"


def plan_threads(
    num_workers: int,
    device,
    local_world_size: int | None = None,
    cores: int | None = None,
    load: float = 0.0,
    threads: int | None = None,
) -> ThreadPlan:
    """How many compute threads the training process runs next to ``num_workers`` workers on
    ``device`` (a torch.device or its type name). ``local_world_size``: processes on this node
    (default: torchrun's LOCAL_WORLD_SIZE, else 1); ``cores``: default the affinity mask's CPUs.
    ``load``: how many of those cores other processes keep busy (e.g. :func:`machine_load`);
    a CPU device leaves them. ``threads``: a count recorded at the run's first start (a resume
    must compute with the same count to give the same numbers). ``OMP_NUM_THREADS`` set by the
    user wins over everything."""
    kind = getattr(device, "type", str(device))
    local = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    share = max(1, (cores or available_cores()) // max(1, local))
    policy = wait_policy()
    asked = os.environ.get("OMP_NUM_THREADS")
    if asked and asked.isdigit() and int(asked) > 0:
        n, why = int(asked), f"OMP_NUM_THREADS={asked}"
        if threads and int(threads) != n:  # the user's choice, said where it is recorded
            why += f" (the run began with {threads}: not bit-identical to a run never stopped)"
    elif threads:
        n, why = int(threads), "as recorded at the run's start"
    elif kind == "cpu":
        busy = max(0, min(share - 1, int(load + 0.5)))
        n = share - busy
        why = f"cpu: {share} cores, {busy} busy with other processes; {num_workers} workers wait"
    else:
        n = max(1, min(share - num_workers, 4))
        why = f"{kind}: {share} cores, {num_workers} for workers, the rest (<= 4) for the host"
    return ThreadPlan(share, n, 1 if n <= 2 else 2, num_workers, policy, why)


def plan_for_run(num_workers: int, device, world_size: int, recorded: int | None) -> ThreadPlan:
    """A run's plan: the count ``recorded`` at its first start when it resumes; else, for one
    CPU process, the cores other processes leave free now (:func:`busy_cores`: beside one busy
    process the quickstart network's bf16 step ran 222-276 img/s with 1 thread against 26-100
    with 2); else the fixed split (ranks of one run must not measure different loads)."""
    kind = getattr(device, "type", str(device))
    load = 0.0
    if (
        recorded is None
        and world_size == 1
        and kind == "cpu"
        and "OMP_NUM_THREADS" not in os.environ
    ):
        load = busy_cores(available_cores())
    return plan_threads(num_workers, device, load=load, threads=recorded)


def describe(plan: ThreadPlan) -> str:
    return (
        f"{plan.compute_threads} compute, {plan.num_workers} workers ({plan.why}); "
        f"{plan.wait_policy}"
    )


def apply(plan: ThreadPlan, announce: bool = True) -> None:
    """Set torch's thread counts for this process; log the plan unless the caller logs it
    with its own record (a run: in the resolved block, after its input was checked)."""
    import torch

    torch.set_num_threads(plan.compute_threads)
    with contextlib.suppress(RuntimeError):  # only before the process's first inter-op work
        torch.set_num_interop_threads(plan.interop_threads)
    if announce:
        log.info("threads: %s", describe(plan))
    if plan.num_workers > 0 and plan.wait_policy == SPIN:
        log.warning(
            "OpenMP threads spin while %d loader workers share the cores (torch was imported "
            "before classzoo): the quickstart ran 1.1x slower so, and a busy machine can make "
            "it 10x; set OMP_WAIT_POLICY=PASSIVE (benchmarks/bench_threads.py)",
            plan.num_workers,
        )
