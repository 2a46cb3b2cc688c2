"""TFRecord reading: classzoo vs TensorFlow, and TFRecordImageDataset vs torchvision ImageFolder.

    python benchmarks/bench_tfrecord.py            # ~300 MB of JPEG records; ~2 minutes on 2 cores

(1) Raw record reading with CRC checks on, from the page cache (each pass is preceded by a
    warm-up pass), records/s and MB/s: ``TFRecordReader`` and the indexed ``pread`` path of
    ``TFRecordStream`` vs ``tf.data.TFRecordDataset`` iterated record by record (what a Python
    loop over it costs), in batches of 256 (TF's best case for a Python consumer) and counted
    in-graph with ``reduce`` (TF's C++ reader alone, which no PyTorch pipeline can use).
(2) Decode + eval preprocessing (Resize(256) + CenterCrop(224) + ToTensor), in one process with
    one torch thread like a DataLoader worker:
    ``TFRecordImageDataset`` vs ``torchvision.datasets.ImageFolder`` on the same JPEG files.

The records are the 20 ImageNet JPEGs shipped with foolbox (18-130 KB, ImageNet averages
~110 KB), repeated, in slim's Example schema. TensorFlow is needed only for (1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _foolbox_jpegs() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("foolbox")
    if spec is None or spec.origin is None:
        raise SystemExit("needs the foolbox package for its 20 ImageNet JPEGs")
    return sorted((Path(spec.origin).parent / "data").glob("imagenet_*.jpg"))


def write_records(folder: Path, size_mb: int, shards: int) -> tuple[list[str], int, int]:
    """Slim-schema shards of ~size_mb; returns (paths, records, bytes of record data)."""
    from classzoo.formats.example import build_example
    from classzoo.formats.tfrecord import TFRecordWriter

    jpegs = [(f.name, f.read_bytes()) for f in _foolbox_jpegs()]
    examples = [
        build_example(
            {
                "image/encoded": data,
                "image/format": b"JPEG",
                "image/class/label": k + 1,
                "image/class/synset": f"n{k:08d}",
                "image/filename": name,
                "image/height": 512,
                "image/width": 512,
                "image/channels": 3,
                "image/colorspace": b"RGB",
            }
        )
        for k, (name, data) in enumerate(jpegs)
    ]
    per = sum(map(len, examples)) / len(examples)
    n = int(size_mb * 1e6 / per)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    paths, total = [], 0
    for s in range(shards):
        path = folder / f"train-{s:05d}-of-{shards:05d}"
        with TFRecordWriter(path) as w:
            for i in range(bounds[s], bounds[s + 1]):
                w.write(examples[i % len(examples)])
                total += len(examples[i % len(examples)])
        paths.append(str(path))
    return paths, n, total


def _best(fn, repeats: int) -> tuple[float, int]:
    fn()  # warm-up: page cache, lazy imports
    times, count = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        count = fn()
        times.append(time.perf_counter() - t)
    return min(times), count


def bench_raw(paths: list[str], nbytes: int, repeats: int) -> list[tuple[str, float, float]]:
    from classzoo.data.tfrecord_index import index_shards
    from classzoo.formats.tfrecord import TFRecordReader, read_record_at

    def ours():
        return sum(1 for p in paths for _ in TFRecordReader(p))

    indexes = index_shards(paths, "image/class/label")  # built once, outside the timing
    fds = [os.open(p, os.O_RDONLY) for p in paths]

    def ours_indexed():  # what the dataset does per item, minus decoding: one pread by offset
        n = 0
        for path, fd, index in zip(paths, fds, indexes):
            for r, (offset, length, _) in enumerate(index.rows.tolist()):
                n += bool(read_record_at(fd, offset, length, path=path, record=r))
        return n

    rows = []
    for name, fn in [("classzoo TFRecordReader", ours), ("classzoo indexed pread", ours_indexed)]:
        dt, n = _best(fn, repeats)
        rows.append((name, n / dt, nbytes / dt / 1e6))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    try:
        import tensorflow as tf
    except ImportError:
        print("tensorflow not installed: skipping the TF rows")
        return rows

    def tf_each():
        return sum(1 for _ in tf.data.TFRecordDataset(paths))

    def tf_batched():
        return sum(len(b) for b in tf.data.TFRecordDataset(paths).batch(256))

    def tf_in_graph():  # TF's C++ reader alone: no tensor reaches Python
        ds = tf.data.TFRecordDataset(paths)
        return int(ds.reduce(np.int64(0), lambda n, r: n + 1))

    tf_runs = [
        ("tf.data.TFRecordDataset", tf_each),
        ("tf.data ... .batch(256)", tf_batched),
        ("tf.data ... .reduce (in graph)", tf_in_graph),
    ]
    for name, fn in tf_runs:
        dt, n = _best(fn, repeats)
        rows.append((name, n / dt, nbytes / dt / 1e6))
    return rows


def bench_decode(folder: Path, images: int, repeats: int) -> list[tuple[str, float, float]]:
    import torch
    import torchvision
    from torchvision import transforms as T

    torch.set_num_threads(1)  # as in a DataLoader worker (torch sets 1 thread there)

    from classzoo.data.tfrecord_dataset import TFRecordImageDataset
    from classzoo.data.tfrecord_shards import find_shards
    from classzoo.data.tfrecord_tools import imagefolder_to_tfrecord

    src = folder / "imagefolder"
    jpegs = _foolbox_jpegs()
    for i in range(images):
        cls = src / f"n{i % 10:08d}"
        cls.mkdir(parents=True, exist_ok=True)
        shutil.copy(jpegs[i % len(jpegs)], cls / f"{i:06d}.JPEG")
    imagefolder_to_tfrecord(src, folder / "decode", shards=4, workers=2)
    tf_shards = find_shards(str(folder / "decode"), "train")
    preprocess = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    datasets = [
        ("torchvision ImageFolder", torchvision.datasets.ImageFolder(str(src), preprocess)),
        ("classzoo TFRecordImageDataset", TFRecordImageDataset(tf_shards, preprocess)),
    ]
    # Alternate the two datasets pass by pass, so a change in machine load hits both alike; the
    # ratio uses CPU time of this (single-threaded) process, which other jobs barely disturb.
    wall = {name: [] for name, _ in datasets}
    cpu = {name: [] for name, _ in datasets}
    for rep in range(repeats + 1):
        for name, ds in datasets:
            t, c = time.perf_counter(), time.process_time()
            for i in range(len(ds)):
                ds[i]
            if rep:  # pass 0 warms the page cache
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
    return [(name, images / min(wall[name]), images / min(cpu[name])) for name, _ in datasets]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=300, help="record data for (1)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--images", type=int, default=400, help="images for (2)")
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_tfrecord_") as tmp:
        tmp = Path(tmp)
        # (2) first: TensorFlow, imported by (1), must not be loaded before the process pool
        # of imagefolder_to_tfrecord forks, nor mix its libjpeg with PIL's mid-benchmark.
        decode = bench_decode(tmp, args.images, args.repeats)
        paths, n, nbytes = write_records(tmp, args.size_mb, args.shards)
        rows = bench_raw(paths, nbytes, args.repeats)
    print(f"(1) {n} records, {nbytes / 1e6:.0f} MB in {args.shards} shards, CRC checked\n")
    tf_rate = {name: rate for name, rate, _ in rows}.get("tf.data.TFRecordDataset")
    print("| reader | records/s | MB/s | vs tf.data (per record) |")
    print("|---|---:|---:|---:|")
    for name, rate, mbs in rows:
        ratio = f"{rate / tf_rate:.2f}x" if tf_rate else "-"
        print(f"| {name} | {rate:,.0f} | {mbs:,.0f} | {ratio} |")
    print(
        f"\n(2) {args.images} JPEGs, decode + Resize(256) + CenterCrop(224) + ToTensor, 1 process\n"
    )
    print("| dataset | images/s (wall) | images per CPU-second | vs ImageFolder (CPU) |")
    print("|---|---:|---:|---:|")
    for name, rate, cpu_rate in decode:
        print(f"| {name} | {rate:,.1f} | {cpu_rate:,.1f} | {cpu_rate / decode[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
