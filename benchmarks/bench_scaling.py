"""Data-parallel scaling on this machine: the quickstart recipe (real Fashion-MNIST ImageFolder,
the full data pipeline) for a fixed number of steps on 1 process and on 2 processes (torchrun,
gloo), same global batch. Prints images/s over all ranks and the ratio to 1 process.

    python benchmarks/bench_scaling.py [--steps 150] [--data-dir runs/quickstart/data/fashion-mnist]

Run `classzoo quickstart` once first (it writes the ImageFolder), or pass --data-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(nproc: int, per_device: int, steps: int, data: Path, out: Path) -> dict:
    args = [
        "train",
        "--recipe",
        "quickstart",
        "--data-dir",
        str(data),
        "--output-dir",
        str(out),
        "--mode",
        "train",
        "--max-steps",
        str(steps),
        "--batch-size",
        str(per_device),
        "--set",
        "train.log_every=25",
        "--set",
        "train.progress=false",
        "--set",
        "data.num_workers=1",
    ]
    cmd = [sys.executable, "-m", "classzoo", *args]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]  # classzoo hands the command to torchrun
    env = {**os.environ}
    env.pop("OMP_NUM_THREADS", None)  # torchrun sets 1 per process for nproc > 1; 1 process keeps 2
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--data-dir", default="runs/quickstart/data/fashion-mnist")
    args = p.parse_args()
    data = Path(args.data_dir)
    if not (data / "train").is_dir():
        sys.exit(f"{data}/train not found: run `classzoo quickstart` first or pass --data-dir")
    print(f"quickstart recipe, {args.steps} steps, global batch 128, {os.cpu_count()} CPU cores\n")
    print(
        "| processes | per-device batch | threads per process | images/s (all ranks) | vs 1 process |"
    )
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        for nproc, per_device in ((1, 128), (2, 64)):
            s = run(nproc, per_device, args.steps, data, Path(tmp) / f"p{nproc}")
            base = base or s["images_per_sec"]
            threads = 2 if nproc == 1 else 1
            print(
                f"| {nproc} | {per_device} | {threads} | {s['images_per_sec']:.1f} | "
                f"{s['images_per_sec'] / base:.2f}x |"
            )


if __name__ == "__main__":
    main()
