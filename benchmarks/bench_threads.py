"""Why bf16 training on a busy CPU collapses, and which thread settings hold up.

    python benchmarks/bench_threads.py [--seconds 4] [--busy 0 1] [--threads 2 1]

Trains the quickstart network (timm resnet10t at a quarter width, 32 px, batch 128,
channels_last, AdamW) for a few seconds per configuration, each in a fresh process, and prints
images/s. Configurations: fp32 / bf16 autocast x torch threads x ``OMP_WAIT_POLICY``
(unset: libgomp lets idle threads spin 300,000 iterations before sleeping; ``passive``: they
sleep at once; ``spinN``: ``GOMP_SPINCOUNT=N``) x a
number of competing processes this script starts itself (busy loops, one core each, killed
after each measurement: a stand-in for DataLoader workers or another user's job).
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time


def child(dtype: str, threads: int, seconds: float) -> None:
    import timm
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=10, channels=[32, 64, 128, 256])
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        with amp:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: oneDNN primitive creation
        step()
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
    wall = time.perf_counter() - t0
    print(f"{n * 128 / wall:.1f}")


def run(dtype: str, threads: int, policy: str, busy: int, seconds: float) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("GOMP_SPINCOUNT", None)
    if policy.startswith("spin"):  # libgomp: spin this many iterations, then sleep
        env["GOMP_SPINCOUNT"] = policy[4:]
    elif policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", dtype, str(threads), str(seconds)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--policies", nargs="+", default=["default", "passive", "spin10000"])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), float(args.child[2]))
        return
    print(f"cores {os.cpu_count()}; images/s of the quickstart network, {args.seconds:g} s each;")
    print(f"each configuration {args.repeat}x, in alternating order (the load drifts); all runs")
    configs = list(itertools.product(args.busy, args.threads, args.policies, ["fp32", "bf16"]))
    runs: dict = {c: [] for c in configs}
    for r in range(args.repeat):
        for c in configs if r % 2 == 0 else configs[::-1]:
            busy, threads, policy, dtype = c
            runs[c].append(run(dtype, threads, policy, busy, args.seconds))
    print(f"{'busy':>4} {'threads':>7} {'wait policy':>15} {'fp32':>16} {'bf16':>16}")
    for busy, threads, policy in itertools.product(args.busy, args.threads, args.policies):
        cells = [
            " ".join(f"{v:7.1f}" for v in runs[(busy, threads, policy, d)])
            for d in ("fp32", "bf16")
        ]
        print(f"{busy:>4} {threads:>7} {policy:>15} {cells[0]:>16} {cells[1]:>16}")


if __name__ == "__main__":
    main()
