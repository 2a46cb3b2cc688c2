"""Input pipeline per CPU core: torchvision ImageFolder + PIL vs classzoo, per training preset.

    python benchmarks/bench_loader.py                      # 500x375 and 1000x750 JPEGs, 5 rounds
    python benchmarks/bench_loader.py --sizes 500x375 --rounds 3 --presets inception
    python benchmarks/bench_loader.py --dataloader         # workers as real DataLoader processes
    python benchmarks/bench_loader.py --host-memory default  # both sides with PyTorch's defaults

Timed as CPU time with one torch thread (a DataLoader worker's setting): what a worker does per
image (read the file, decode, augment, collate batches of 32) and, for classzoo, what the batch
stage (``pipeline.batch``: conversion, normalisation, colour ops) costs when the device is this
CPU, i.e. what a CPU-only trainer pays. Each round times the peer, then classzoo, over the same
files, each side in a fresh process that runs as its users run it (``--host-memory own``): the
peer with PyTorch's and glibc's defaults, classzoo with the host memory settings its trainer
applies before it starts its loader workers (engine/host_memory.py: huge pages for tensors of
2 MiB or more, freed memory kept). They are worth ~20 % of the peer's CPU too (its per-image
float tensors fault their pages in afresh): ``--host-memory default`` or ``trainer`` gives both
sides the same. The table shows medians over the rounds and three per-core ratios (> 1:
classzoo is cheaper):

* ``worker``: worker stage only (what a GPU trainer's loader workers do; they have huge pages
  but not the kept freed memory, which ``keep_freed_memory`` applies for CPU training only, so
  for them ``--host-memory default`` is the closer comparison);
* ``+batch``: classzoo's worker + batch stage against the peer's worker (a CPU-only trainer);
* ``+layout``: the same, the peer also paying the copy to channels_last that a CPU trainer
  makes of its NCHW batch (classzoo's batches are channels_last already; CPU default);
* ``paired``: the median over rounds of each round's own ``+batch`` ratio: a round's two sides
  ran seconds apart, so it drifts less with the load of a shared machine than the ratio of
  the medians does.

The peer is ``torchvision.datasets.ImageFolder`` (PIL loader) with RandomResizedCrop(224),
RandomHorizontalFlip, ToTensor, Normalize (the ImageNet example's training transform). classzoo
is ``ImageFolderDataset`` + ``SeededDataset`` (per-sample seeding included) with the preset's
``build_transform(...)``: timm (the gluon_resnet50_v1b recipe: random resized crop, random
interpolation, flip, colour jitter 0.4), slim vgg train (224), slim inception train (299, the
InceptionV4 recipe's fast_mode distort_color).

By default the worker stage runs in the side's process (``time.process_time``). ``--dataloader``
runs it in one real DataLoader worker process forked from it (collating into shared memory, as
training does) and reads that process's CPU time from ``getrusage(RUSAGE_CHILDREN)``, less a
measured start-up.

Images: the 20 real ImageNet JPEGs that foolbox ships (progressive 512 px), resized and
re-encoded (PIL, quality 90, baseline) to each ``--sizes`` (ImageNet's typical 500x375, and a
larger one). No network access; foolbox is only read for its files, not imported.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import classzoo  # noqa: F401  before torch, as the CLI: huge pages (engine/host_memory.py)

# isort: split
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from classzoo.engine import host_memory

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# what classzoo's import sets in the environment (engine/host_memory.py): not handed to a side
HOST_MEMORY_ENV = (host_memory.THP_ENV, "_CLASSZOO_SET_THP", host_memory.OPT_OUT)
BATCH = 32
PRESETS = ("timm", "vgg", "inception")


def foolbox_jpegs() -> list[Path]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or spec.origin is None:
        raise SystemExit(
            "needs the foolbox package for its 20 ImageNet JPEGs (pip install foolbox)"
        )
    files = sorted((Path(spec.origin).parent / "data").glob("imagenet_*.jpg"))
    if len(files) != 20:
        raise SystemExit(f"expected foolbox's 20 ImageNet JPEGs, found {len(files)}")
    return files


def write_folder(root: Path, size: tuple[int, int]) -> Path:
    """root/<class>/<n>.jpg: the 20 photos resized to ``size`` (w, h), 4 classes."""
    for k, src in enumerate(foolbox_jpegs()):
        img = Image.open(src).convert("RGB").resize(size, Image.BICUBIC)
        folder = root / f"class{k % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        (folder / f"{k:02d}.jpg").write_bytes(buf.getvalue())
    return root


def peer_dataset(root: Path):
    from torchvision import datasets
    from torchvision import transforms as T

    tf = T.Compose(
        [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
    )
    return datasets.ImageFolder(str(root), transform=tf)


def classzoo_pipeline(preset: str):
    from classzoo.data.transforms import EvalPreprocess, TrainAugment, build_transform

    if preset == "timm":  # gluon_resnet50_v1b's data section
        pre = EvalPreprocess("timm", 224, 0.875, "bilinear", MEAN, STD)
        aug = TrainAugment(interpolation="random", color_jitter=0.4)
        return build_transform(pre, train=True, aug=aug)
    size = 224 if preset == "vgg" else 299
    return build_transform(EvalPreprocess(preset, size, 0.875, "bilinear", MEAN, STD), True)


def classzoo_dataset(root: Path, pipeline):
    from classzoo.data.imagefolder import ImageFolderDataset
    from classzoo.data.sampling import SeededDataset

    return SeededDataset(ImageFolderDataset(root, transform=pipeline.sample))


class Passes(Dataset):
    """``passes`` passes over a dataset's items; classzoo's items carry a per-sample seed."""

    def __init__(self, dataset, passes: int, seeded: bool) -> None:
        self.dataset, self.n, self.seeded = dataset, len(dataset), seeded
        self.total = passes * self.n

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int):
        if self.seeded:  # SeededDataset's worker path: seed, then load (no RNG save/restore)
            return self.dataset._load(i % self.n, 1000 + i)
        torch.default_generator.manual_seed(1000 + i)  # the same crops in every round
        return self.dataset[i % self.n]


def in_process(items: Passes) -> tuple[float, list]:
    """CPU seconds per image to load the items here and collate batches of 32."""
    t0 = time.process_time()
    loaded = [items[i] for i in range(len(items))]
    batches = [default_collate(loaded[i : i + BATCH]) for i in range(0, len(loaded), BATCH)]
    return (time.process_time() - t0) / len(items), batches


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def in_worker(items: Passes, startup: float = 0.0) -> tuple[float, list]:
    """CPU seconds per image of one DataLoader worker process loading and collating the items
    (into shared memory, as in training), less ``startup``; the batches it sent."""
    c0 = _children_cpu()
    loader = DataLoader(items, batch_size=BATCH, num_workers=1, worker_init_fn=_one_thread)
    batches = list(loader)
    del loader  # joins the worker: its CPU time is now in RUSAGE_CHILDREN
    return (_children_cpu() - c0 - startup) / max(len(items), 1), batches


def worker_startup(dataset, seeded: bool) -> float:
    """CPU seconds a DataLoader worker spends starting and exiting, loading nothing."""
    none = Passes(dataset, 0, seeded)
    return statistics.median(in_worker(none)[0] for _ in range(3))


def batch_stage(pipeline, batches: list) -> float:
    """CPU seconds per image of ``pipeline.batch`` on the collated batches (device = CPU).
    The slim inception batch stage writes over its input: each batch is copied first
    (outside the timing)."""
    total, n = 0.0, 0
    for x, y in batches:
        x = {k: v.clone() for k, v in x.items()} if isinstance(x, dict) else x.clone()
        t0 = time.process_time()
        pipeline.batch(x)
        total += time.process_time() - t0
        n += len(y)
    return total / n


def to_channels_last(batches: list) -> float:
    """CPU seconds per image of the copy a channels_last CPU trainer makes of an NCHW batch."""
    t0 = time.process_time()
    for x, _ in batches:
        x.contiguous(memory_format=torch.channels_last)
    return (time.process_time() - t0) / sum(len(y) for _, y in batches)


def measure_side(root: Path, preset: str, side: str, passes: int, dataloader: bool) -> dict:
    """One round of one side in this process: CPU seconds per image of the worker stage and of
    what follows it (classzoo: the batch stage; the peer: the copy to channels_last), medians of
    3 timings after a warm-up one: a fresh process faults in its heap over its first rounds
    (up to 3 ms per image of a batch stage here, where a trainer many batches in pays none)."""
    torch.set_num_threads(1)  # a DataLoader worker's setting
    host_memory.keep_freed_memory("cpu")  # a classzoo trainer's process; off if opted out
    seeded = side == "classzoo"
    pipe = classzoo_pipeline(preset) if seeded else None
    dataset = classzoo_dataset(root, pipe) if seeded else peer_dataset(root)
    items = Passes(dataset, passes, seeded)
    startup = worker_startup(dataset, seeded) if dataloader else 0.0
    t = {"worker": [], "after": []}
    for _ in range(4):  # the first: page cache, lazy imports, the heap's first faults
        sec, batches = in_worker(items, startup) if dataloader else in_process(items)
        t["worker"].append(sec)
        t["after"].append(batch_stage(pipe, batches) if seeded else to_channels_last(batches))
    return {
        **{k: statistics.median(v[1:]) for k, v in t.items()},
        "host_memory": host_memory.describe(),
    }


def _side_env(side: str, memory: str) -> dict:
    """The environment of a side's process: ``own`` runs the peer with PyTorch's and glibc's
    defaults (as torchvision's users run it) and classzoo with its trainer's settings. What
    this script's ``import classzoo`` put in the environment is left out (the side's own import
    decides again), so is a ``CLASSZOO_HOST_MEMORY`` of yours: ``--host-memory`` decides."""
    env = {k: v for k, v in os.environ.items() if k not in HOST_MEMORY_ENV}
    if env.pop("_CLASSZOO_SET_WAIT", None) == "1":  # classzoo's OMP_WAIT_POLICY, not yours
        env.pop("OMP_WAIT_POLICY", None)
    if memory == "default" or (memory == "own" and side == "peer"):
        env[host_memory.OPT_OUT] = "default"
    return env


def run_side(root: Path, preset: str, side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--root", str(root), "--presets", preset]
    cmd += ["--passes", str(args.passes)] + (["--dataloader"] if args.dataloader else [])
    env = _side_env(side, args.host_memory)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{side} {preset} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_preset(root: Path, preset: str, args) -> dict:
    """Alternating rounds (peer, classzoo, peer, ...), each side in a fresh process."""
    t = {k: [] for k in ("peer", "layout", "ours", "batch")}
    memory = {}
    for _ in range(args.rounds):
        peer, ours = run_side(root, preset, "peer", args), run_side(root, preset, "classzoo", args)
        t["peer"].append(peer["worker"])
        t["layout"].append(peer["after"])
        t["ours"].append(ours["worker"])
        t["batch"].append(ours["after"])
        memory = {"peer": peer["host_memory"], "classzoo": ours["host_memory"]}
    # the two sides of a round ran seconds apart: their ratio drifts less with this VM's load
    paired = [p / (o + b) for p, o, b in zip(t["peer"], t["ours"], t["batch"])]
    medians = {k: statistics.median(v) for k, v in t.items()}
    return {**medians, "paired": statistics.median(paired), "memory": memory}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(args) -> str:
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    where = "one DataLoader worker process" if args.dataloader else "the side's process"
    memory = {
        "own": "the peer with PyTorch's and glibc's defaults, classzoo with its trainer's",
        "default": "both with PyTorch's and glibc's defaults",
        "trainer": "both with classzoo's trainer's",
    }[args.host_memory]
    return (
        f"bench_loader: CPU time per image, torch threads 1 "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), worker stage in "
        f"{where}, medians of {args.rounds} alternating rounds (each side a fresh process) x "
        f"{args.passes} passes over 20 JPEGs\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, "
        f"load average {load} (1/5/15 min); torch {torch.__version__}; host memory "
        f"(--host-memory {args.host_memory}): {memory}\n"
        "ratio > 1: classzoo is cheaper per core. worker: worker stage only; +batch: classzoo "
        "also runs its batch stage on this CPU; +layout: the peer also copies its NCHW batch "
        "to channels_last, as a CPU trainer does"
    )


def parse(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (>= 3)")
    ap.add_argument("--passes", type=int, default=8, help="passes over the 20 images per round")
    ap.add_argument("--sizes", nargs="+", default=["500x375", "1000x750"])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--dataloader", action="store_true", help="worker stage in a DataLoader")
    ap.add_argument(
        "--host-memory",
        choices=("own", "default", "trainer"),
        default="own",
        help="own: each side as its users run it (default); default / trainer: both sides "
        "with PyTorch's and glibc's defaults / with classzoo's settings (engine/host_memory.py)",
    )
    ap.add_argument("--side", choices=("peer", "classzoo"), help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rounds < 3:
        ap.error("--rounds must be at least 3 (medians of alternating rounds)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.side:  # one round of one side, for the driver below
        r = measure_side(args.root, args.presets[0], args.side, args.passes, args.dataloader)
        print(json.dumps(r))
        return
    print(header(args))
    cols = ("images", "preset", "torchvision", "classzoo", "worker", "+batch", "+layout", "paired")
    print("{:>9} {:>10} {:>12} {:>20} {:>7} {:>7} {:>8} {:>7}".format(*cols))
    memory = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes:
            w, h = (int(v) for v in spec.split("x"))
            root = write_folder(Path(tmp) / spec, (w, h))
            for preset in args.presets:
                r = bench_preset(root, preset, args)
                memory = r["memory"]
                both = r["ours"] + r["batch"]
                ours = f"{r['ours'] * 1e3:.2f} + {r['batch'] * 1e3:.2f} ms"
                print(
                    f"{spec:>9} {preset:>10} {r['peer'] * 1e3:9.2f} ms {ours:>20}"
                    f" {r['peer'] / r['ours']:6.2f}x {r['peer'] / both:6.2f}x"
                    f" {(r['peer'] + r['layout']) / both:7.2f}x {r['paired']:6.2f}x"
                )
    print("classzoo column: worker stage + batch stage, ms per image; paired: the median of each")
    print("round's own +batch ratio (its two sides ran seconds apart)")
    print(
        f"host memory as run: torchvision: {memory.get('peer')}; classzoo: {memory.get('classzoo')}"
    )


if __name__ == "__main__":
    main()
