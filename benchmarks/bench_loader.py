"""Input pipeline per CPU core: torchvision ImageFolder + PIL vs classzoo, per training preset.

    python benchmarks/bench_loader.py [--rounds 3] [--passes 5] [--sizes 500x375 1000x750]

What a DataLoader worker does, timed as CPU time (``time.process_time``) in this one process
with one torch thread: read the file, decode, augment, and collate batches of 32 (the worker
collates). Peer and classzoo alternate, each round over the same files; medians of the rounds.

* peer: ``torchvision.datasets.ImageFolder`` (PIL loader) with RandomResizedCrop(224),
  RandomHorizontalFlip, ToTensor, Normalize, the ImageNet example's training transform;
* classzoo: ``ImageFolderDataset`` + ``SeededDataset`` (per-sample seeding included) with
  ``build_transform(...).sample`` of the preset: timm (the gluon_resnet50_v1b recipe: random
  resized crop, random interpolation, flip, colour jitter 0.4), slim vgg train, slim inception
  train (299 px).

classzoo moves conversion, normalisation and colour ops to ``pipeline.batch``, which runs on the
device; its CPU cost when the device is this CPU is printed too (per image, same thread), with
the ratio a CPU-only trainer sees (worker + batch stage).

Images: the 20 real ImageNet JPEGs that foolbox ships (progressive 512 px), resized and
re-encoded (PIL, quality 90, baseline) to each ``--sizes`` (ImageNet's typical 500x375, and a
larger one). No network access; foolbox is only read for its files, not imported.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import default_collate

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BATCH = 32


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


def worker_pass(dataset, keys: list, passes: int) -> tuple[float, list]:
    """CPU seconds per image to load ``keys`` ``passes`` times and collate batches."""
    # SeededDataset's worker path (seed, then load); its main-process path also saves and
    # restores the RNG states, which a DataLoader worker does not do
    get = dataset._load if hasattr(dataset, "_load") else dataset.__getitem__
    t0 = time.process_time()
    batches = []
    for _ in range(passes):
        items = [get(*k) if isinstance(k, tuple) else get(k) for k in keys]
        batches = [default_collate(items[i : i + BATCH]) for i in range(0, len(items), BATCH)]
    return (time.process_time() - t0) / (passes * len(keys)), batches


def batch_stage(pipeline, batches: list, repeat: int = 3) -> float:
    """CPU seconds per image of ``pipeline.batch`` on collated batches (the device = CPU)."""
    n = sum(len(y) for _, y in batches) * repeat
    t0 = time.process_time()
    for _ in range(repeat):
        for x, _ in batches:
            pipeline.batch(x)
    return (time.process_time() - t0) / n


def bench_size(root: Path, presets: list[str], rounds: int, passes: int) -> list[dict]:
    peer = peer_dataset(root)
    n = len(peer)
    rows = []
    for preset in presets:
        pipe = classzoo_pipeline(preset)
        ours = classzoo_dataset(root, pipe)
        ours_keys = [(i, 1000 + i) for i in range(n)]  # (index, per-sample seed)
        worker_pass(peer, list(range(n)), 1)  # warm-up: page cache, lazy imports
        worker_pass(ours, ours_keys, 1)
        t_peer, t_ours, t_batch = [], [], []
        for _ in range(rounds):  # alternate peer / classzoo
            t_peer.append(worker_pass(peer, list(range(n)), passes)[0])
            t, batches = worker_pass(ours, ours_keys, passes)
            t_ours.append(t)
            t_batch.append(batch_stage(pipe, batches))
        p, o, b = (statistics.median(v) for v in (t_peer, t_ours, t_batch))
        rows.append({"preset": preset, "peer": p, "ours": o, "batch": b})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--passes", type=int, default=5, help="passes over the 20 images per round")
    ap.add_argument("--sizes", nargs="+", default=["500x375", "1000x750"])
    ap.add_argument("--presets", nargs="+", default=["timm", "vgg", "inception"])
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # a DataLoader worker's setting
    print(f"CPU time per image, one process, torch threads 1, medians of {args.rounds} rounds")
    print(f"{'images':>9} {'preset':>10} {'torchvision':>12} {'classzoo':>9} {'ratio':>6}"
          f" {'+batch on CPU':>14} {'ratio':>6}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes:
            w, h = (int(v) for v in spec.split("x"))
            root = write_folder(Path(tmp) / spec, (w, h))
            for r in bench_size(root, args.presets, args.rounds, args.passes):
                both = r["ours"] + r["batch"]
                print(
                    f"{spec:>9} {r['preset']:>10} {r['peer'] * 1e3:9.2f} ms {r['ours'] * 1e3:6.2f} ms"
                    f" {r['peer'] / r['ours']:5.2f}x {both * 1e3:11.2f} ms {r['peer'] / both:5.2f}x"
                )


if __name__ == "__main__":
    main()
