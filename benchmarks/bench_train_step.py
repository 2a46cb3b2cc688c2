"""Training step throughput: timm's own benchmark.py against ``classzoo bench`` and ``classzoo
train``, same model / batch / image size / dtype / layout, in one run (issue 10, benchmark a).

Contenders, each in a fresh process, in alternating rounds (medians of the rounds):
  timm          timm's benchmark.py --bench train (eager)           [needs --timm-benchmark]
  timm-compile  the same with --torchcompile                         [needs --timm-benchmark]
  bench         classzoo bench (the trainer's train_step, synthetic tensors)
  bench-compile classzoo bench --compile (train.compile=true)
  bench-plain-memory  classzoo bench with CLASSZOO_HOST_MEMORY=default: PyTorch's and glibc's
                own host memory defaults, as timm runs (engine/host_memory.py)
  train         classzoo train on synthetic data (data.source=synthetic): the whole loop, its
                loader in-process (data.num_workers=0: no worker shares the cores, as in
                bench); images/s of the log intervals after warm-up
timm's benchmark.py is not in the timm wheel: pass the file of a timm checkout, e.g.
  git clone https://github.com/huggingface/pytorch-image-models && \\
  python benchmarks/bench_train_step.py --timm-benchmark pytorch-image-models/benchmark.py

    python benchmarks/bench_train_step.py [--model resnet50] [--batch-size 32] [--image-size 224]
        [--rounds 3] [--steps 10] [--warmup 3] [--skip timm-compile,bench-compile]

Both sides get the same thread count (torch's default: one per core), and each runs as its
users run it: this script sets no OpenMP variable, so timm's process waits with libgomp's
default (spin, then sleep) and classzoo chooses its own (engine/threads.py: the same spinning
here, as no loader worker shares the cores; PASSIVE only beside workers). Before session 5 the
script forced OMP_WAIT_POLICY=PASSIVE on every contender, which slowed both sides alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _json_after(text: str, marker: str = "") -> dict:
    start = text.index(marker) + len(marker) if marker else 0
    return json.JSONDecoder().raw_decode(text, text.index("{", start))[0]


def _run(cmd: list[str], timeout: int, **extra_env: str) -> str:
    env = {**os.environ, **extra_env}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed: {done.stderr[-800:]}")
    return done.stdout  # timm prints its --result JSON and classzoo its --json object here


def timm_cmd(a, compile: bool) -> list[str]:
    cmd = [
        sys.executable, a.timm_benchmark, "--bench", "train", "--model", a.model,
        "-b", str(a.batch_size), "--img-size", str(a.image_size), "--device", "cpu",
        "--channels-last", "--num-warm-iter", str(a.warmup), "--num-bench-iter", str(a.steps),
    ]  # fmt: skip
    if a.amp == "bf16":
        cmd += ["--amp", "--amp-dtype", "bfloat16"]
    return cmd + (["--torchcompile"] if compile else [])


def bench_cmd(a, compile: bool) -> list[str]:
    cmd = [
        sys.executable, "-m", "classzoo", "bench", "--model", a.model, "--batch-size",
        str(a.batch_size), "--image-size", str(a.image_size), "--amp", a.amp, "--channels-last",
        "--steps", str(a.steps), "--warmup", str(a.warmup), "--device", "cpu", "--json",
    ]  # fmt: skip
    return cmd + (["--compile"] if compile else [])


DATA_WAIT: list[float] = []  # train's share of wall time waiting for its batch, per round


def train_ips(a, workdir: Path, round_: int) -> float:
    """classzoo train on synthetic data: mean images/s of the log intervals after warm-up."""
    out = workdir / f"train-{round_}"
    n_steps = a.warmup + a.steps
    cmd = [
        sys.executable, "-m", "classzoo", "train", "--recipe", "gluon_resnet50_v1b",
        "--output-dir", str(out), "--amp", a.amp, "--batch-size", str(a.batch_size),
        "--max-steps", str(n_steps), "--device", "cpu",
        "--set", f"model.name={a.model}", "--set", "data.source=synthetic",
        "--set", f"data.synthetic_size={a.batch_size * n_steps}", "--set", "data.preset=timm",
        "--set", f"data.image_size={a.image_size}", "--set", "data.num_workers=0",
        "--set", "train.mode=train", "--set", f"train.log_every={a.warmup}",
        "--set", "train.channels_last=true", "--set", "train.keep_max=1",
    ]  # fmt: skip
    _run(cmd, 1800)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("kind") == "train"][1:]  # after the warm-up interval
    DATA_WAIT.append(statistics.mean(r["data_wait"] for r in train))
    return statistics.mean(r["fps"] for r in train)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    # 32: the batch of issue 10's table and targets; sessions 5-13 ran 16 (docs/benchmarks.md),
    # where timm's process does relatively better on this 2-core VM (session 14, bench / timm
    # eager: 1.11x, 1.18x paired, at 16; 1.24-1.27x paired in three runs at 32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--amp", choices=["bf16", "off"], default="bf16")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timm-benchmark", default=None, help="benchmark.py of a timm checkout")
    p.add_argument("--skip", default="", help="contenders to leave out, comma-separated")
    a = p.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    if a.timm_benchmark is None:
        skip |= {"timm", "timm-compile"}
    contenders = {
        "timm": lambda r: _json_after(_run(timm_cmd(a, False), 1800), "--result")[
            "train_samples_per_sec"
        ],
        "timm-compile": lambda r: _json_after(_run(timm_cmd(a, True), 3600), "--result")[
            "train_samples_per_sec"
        ],
        "bench": lambda r: _json_after(_run(bench_cmd(a, False), 1800))["images_per_sec"],
        "bench-compile": lambda r: _json_after(_run(bench_cmd(a, True), 3600))["images_per_sec"],
        "bench-plain-memory": lambda r: _json_after(
            _run(bench_cmd(a, False), 1800, CLASSZOO_HOST_MEMORY="default")
        )["images_per_sec"],
        "train": lambda r: train_ips(a, work, r),
    }
    contenders = {k: v for k, v in contenders.items() if k not in skip}
    results: dict[str, list[float]] = {k: [] for k in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(a.rounds):
            for name, fn in contenders.items():
                results[name].append(fn(r))
            print(
                f"round {r + 1}: "
                + ", ".join(f"{k} {v[-1]:.2f}" for k, v in results.items())
                + " img/s",
                flush=True,
            )
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"{a.model} {a.image_size}px batch {a.batch_size} {a.amp} channels_last, CPU, "
        f"{os.cpu_count()} cores, torch default threads; medians of {a.rounds} alternating rounds:"
    )
    for k, v in med.items():
        print(f"  {k:18s} {v:8.2f} img/s")
    pairs = [
        ("bench", "timm"),
        ("bench-compile", "timm"),
        ("bench", "timm-compile"),
        ("bench-compile", "timm-compile"),
        ("train", "bench"),
        ("bench", "bench-plain-memory"),
        ("bench-plain-memory", "timm"),
    ]
    for ours, peer in pairs:
        if ours in med and peer in med:
            # each round's pair ran minutes apart: their ratio drifts less with the machine
            paired = statistics.median(x / y for x, y in zip(results[ours], results[peer]))
            print(
                f"  ratio {ours} / {peer}: {med[ours] / med[peer]:.3f} "
                f"(median of the rounds' ratios {paired:.3f})"
            )
    if DATA_WAIT:  # with no worker, making the synthetic images is part of train's step
        wait = statistics.median(DATA_WAIT)
        print(f"  train waited for data {100 * wait:.1f} % of its wall time (median of rounds)")


if __name__ == "__main__":
    main()
