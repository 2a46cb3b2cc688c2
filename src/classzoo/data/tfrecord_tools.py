"""``classzoo data to-tfrecord`` and ``classzoo data inspect``: write and check slim-style shards.

The writer follows slim's datasets/build_imagenet_data.py: same Example keys, 1-based labels
(0 stays the background class): ImageNet synset folders get their synset's label (its place among
the 1000 synsets + 1, as build_imagenet_data.py numbers them, whatever subset is present); other
folders the labels of ``OUT/labels.txt`` (slim's ``label:name`` lines) when an earlier split wrote
it, else sorted folder order, written there, so every split of a folder shares one numbering.
``{split}-%05d-of-%05d`` shard names,
records split across shards with ``np.linspace``, file order shuffled with seed 12345 (Python 3's
``random.shuffle``, so not the same permutation as slim's Python 2 run), original JPEG bytes
kept and anything else (PNG, CMYK JPEG, ...) re-encoded as RGB JPEG quality 100.
"""

from __future__ import annotations

import glob
import io
import os
import random
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from classzoo.data.class_index import imagenet_classes, is_imagenet_synsets, synset_index
from classzoo.data.decode import decode_reason, eight_bit
from classzoo.data.imagefolder import IMG_EXTENSIONS, images_under
from classzoo.data.label_file import LABELS_FILE, read_label_file
from classzoo.data.tfrecord_dataset import IMAGE_KEY, LABEL_KEY
from classzoo.data.tfrecord_shards import find_shards, split_label
from classzoo.errors import UserError
from classzoo.formats.example import build_example, parse_example
from classzoo.formats.tfrecord import TFRecordReader, TFRecordWriter


def _labels(classes: list[str], out: Path) -> tuple[dict[str, int], bool]:
    """slim's 1-based label of each class folder (module docstring), and whether
    ``OUT/labels.txt`` must be written (:func:`_write_labels`; nothing is written here)."""
    if is_imagenet_synsets(classes):
        return {c: synset_index()[c] + 1 for c in classes}, False
    path = out / LABELS_FILE
    if path.exists():
        known = read_label_file(path)
        new = [c for c in classes if c not in known]
        if new:
            raise UserError(
                f"class folder {new[0]} is not in {path} (the labels of a split converted "
                f"before, {len(known)} classes): convert the split with every class first, or "
                "write to another folder"
            )
        return {c: known[c] for c in classes}, False
    return {c: i for i, c in enumerate(classes, start=1)}, True  # slim: 0 is the background


def _write_labels(labels: dict[str, int], out: Path) -> Path:
    path = out / LABELS_FILE
    path.write_text("".join(f"{label}:{c}\n" for c, label in labels.items()))
    return path


def _refuse_stale_shards(out: Path, split: str, names: list[str]) -> None:
    """Shards of ``split`` from another conversion would be read with the new ones."""
    stale = sorted(p.name for p in out.glob(f"{glob.escape(split)}-*-of-*") if p.name not in names)
    if stale:
        raise UserError(
            f"{out} already holds other '{split}' shards ({', '.join(stale[:3])}"
            f"{', ...' if len(stale) > 3 else ''}): remove them or write to another folder"
        )


def _listdir(folder: Path) -> list[os.DirEntry]:
    """Entries sorted by name; ``scandir``'s types need no stat per file (ImageNet: 1.3 M)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as e:
        raise UserError(f"cannot list folder {folder}: {e.strerror or e}") from None


def _class_images(folder: Path) -> list[Path]:
    """The image files of one class folder: the ones classzoo's (and torchvision's) ImageFolder
    reads, subfolders and links included, in the same order, so the shards hold the images a
    run on the folder would. A broken link or a FIFO named like an image is refused."""
    try:
        files = [Path(p) for p in images_under(str(folder))]
    except OSError as e:
        raise UserError(f"cannot list {folder}: {e.strerror or e}") from None
    if not files:
        exts = ", ".join(IMG_EXTENSIONS)
        raise UserError(f"class folder {folder} holds no images ({exts}): add some or remove it")
    return files


def _scan(src: Path, out: Path) -> tuple[list[str], list[tuple[str, int, str]], bool]:
    """Sorted class folders, ``(file, label, synset)`` with slim's 1-based labels, and whether
    labels.txt is to be written. Reads only: a refused folder leaves ``out`` untouched."""
    if not src.is_dir():
        raise UserError(f"image folder {src} does not exist")
    classes = sorted(d.name for d in _listdir(src) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"image folder {src} has no class folders (expected {src}/<class>/<image>)")
    files = {synset: _class_images(src / synset) for synset in classes}
    labels, new_labels = _labels(classes, out)
    items = [(str(f), labels[synset], synset) for synset in classes for f in files[synset]]
    return classes, items, new_labels


def _encode(path: str) -> tuple[bytes, int, int, bool]:
    """(JPEG bytes, height, width, re-encoded?) of one image file, fully decoded once to catch
    damaged files now rather than mid-training (slim's _process_image decodes each image too)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:  # removed, unreadable or replaced by a folder since the scan
        raise UserError(f"cannot read image {path}: {e.strerror or e}") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            width, height = im.size
            # MPO: a camera's JPEG with an MPF block (PIL's name for it); TF and the ImageFolder
            # route decode its first image, so its bytes stay as they are, like any JPEG's
            if im.format in ("JPEG", "MPO") and im.mode in ("RGB", "L"):
                return data, height, width, False
            out = io.BytesIO()
            # 16-bit PNG / TIFF: their high byte, as TF's decode_png reads them (not clipped)
            eight_bit(im, path).convert("RGB").save(out, "JPEG", quality=100)  # slim: q 100
            return out.getvalue(), height, width, True
    except (MemoryError, UserError):  # UserError: eight_bit's refusal names the file already
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb...
        raise UserError(f"cannot decode image {path}: {decode_reason(e)}") from None


def _write_shard(tmp: str, items: list[tuple[str, int, str, str]]) -> tuple[int, int]:
    """Write one shard to ``tmp`` (renamed by the caller once every shard is written)."""
    reencoded = 0
    with TFRecordWriter(tmp) as writer:
        for path, label, synset, text in items:
            data, height, width, converted = _encode(path)
            reencoded += converted
            writer.write(
                build_example(
                    {
                        "image/height": height,
                        "image/width": width,
                        "image/colorspace": b"RGB",
                        "image/channels": 3,
                        "image/class/label": label,
                        "image/class/synset": synset,
                        "image/class/text": text,
                        "image/format": b"JPEG",
                        "image/filename": os.path.basename(path),
                        "image/encoded": data,
                    }
                )
            )
    return len(items), reencoded


def _write_shards(jobs: list[tuple[str, list]], workers: int) -> list[tuple[int, int]]:
    """Every job's shard; returns only once no worker writes any more (so the caller can clean
    up after a failure: pending shards are cancelled, running ones finish)."""
    if workers <= 1 or len(jobs) == 1:
        return [_write_shard(*job) for job in jobs]
    with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
        futures = [pool.submit(_write_shard, *job) for job in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _new_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest first."""
    missing = [d for d in (folder, *folder.parents) if not d.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _discard(files: list[Path], dirs: list[Path]) -> None:
    """Remove what a failed conversion wrote: its files, then its folders if left empty."""
    for f in files:
        f.unlink(missing_ok=True)
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # holds files of someone else: keep it
            break


def imagefolder_to_tfrecord(
    src: Path,
    out: Path,
    shards: int,
    workers: int = 2,
    split: str = "train",
    synsets_text: dict | None = None,
) -> dict:
    """Convert ``src/<class>/<image>`` into ``out/{split}-%05d-of-%05d`` slim-schema shards.

    ``synsets_text`` maps folder names to ``image/class/text`` (slim: imagenet_metadata.txt);
    without it ImageNet synsets get ImageNet's names, other folders an empty text. Shards are
    written by a pool of ``workers`` processes to hidden temporaries, renamed once all are
    written; on any failure (Ctrl-C included) what this call wrote is removed again.
    Returns a summary: split, output, shards, records, classes, per_shard, reencoded, files.
    """
    src, out = Path(src), Path(out)
    if shards < 1:
        raise UserError(f"--shards must be at least 1, got {shards}")
    names = [f"{split}-{k:05d}-of-{shards:05d}" for k in range(shards)]
    _refuse_stale_shards(out, split, names)
    classes, items, new_labels = _scan(src, out)
    labels = {synset: label for _, label, synset in items}
    order = list(range(len(items)))
    random.Random(12345).shuffle(order)  # build_imagenet_data.py _find_image_files: seed 12345
    text = synsets_text or (dict(imagenet_classes()) if is_imagenet_synsets(classes) else {})
    rows = [(*items[i], str(text.get(items[i][2], ""))) for i in order]
    bounds = np.linspace(0, len(rows), shards + 1).astype(int)  # slim's record split
    tmps = [out / f".{name}.tmp-{os.getpid()}" for name in names]
    jobs = [(str(tmps[k]), rows[bounds[k] : bounds[k + 1]]) for k in range(shards)]
    dirs, written = _new_dirs(out), list(tmps)
    try:
        if new_labels:
            written.append(_write_labels({c: labels[c] for c in classes}, out))
        results = _write_shards(jobs, workers)
        for tmp, name in zip(tmps, names):
            os.replace(tmp, out / name)
            written.append(out / name)  # after: a shard of an earlier run is never removed
    except BaseException:
        _discard(written, dirs)
        raise
    return {
        "split": split,
        "output": str(out),
        "shards": shards,
        "records": len(rows),
        "classes": len(classes),
        "per_shard": [n for n, _ in results],
        "reencoded": sum(r for _, r in results),
        "files": names,
    }


def _inspect_shard(path: Path) -> dict:
    reader = TFRecordReader(path, skip_corrupt=True)
    labels, heights, widths, bad = [], [], [], []
    records = 0
    for offset, data in reader.iter_with_offsets():
        records += 1
        try:
            feats = parse_example(data, (LABEL_KEY, IMAGE_KEY))
            label = feats.get(LABEL_KEY)
            if isinstance(label, np.ndarray) and len(label):
                labels.append(int(label[0]))
            with Image.open(io.BytesIO(feats[IMAGE_KEY][0])) as im:  # header only
                widths.append(im.size[0])
                heights.append(im.size[1])
        except Exception as e:  # malformed Example (WireError, KeyError) or image header (PIL)
            bad.append({"offset": offset, "reason": f"{type(e).__name__}: {e}"})
    bad += [{"offset": c.offset, "reason": c.reason} for c in reader.corrupt]
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        # framed records, as the dataset index counts them (a data CRC failure is still a record)
        "records": records + sum(c.reason == "data CRC mismatch" for c in reader.corrupt),
        "labels": np.array(labels, dtype=np.int64),
        "heights": np.array(heights, dtype=np.int64),
        "widths": np.array(widths, dtype=np.int64),
        "corrupt": bad,
    }


def _stats(values: np.ndarray) -> dict:
    if not len(values):
        return {"min": None, "max": None, "mean": None}
    return {"min": int(values.min()), "max": int(values.max()), "mean": float(values.mean())}


def inspect_tfrecords(location: str, workers: int = 4) -> dict:
    """Read every record of every shard at ``location`` (CRCs checked, image headers decoded).

    Returns ``{location, total_records, splits: {name: {shards, records}}, shards: [{path,
    records, bytes, corrupt}], classes, label_min, label_max, height, width ({min, max, mean}),
    corrupt_count, corrupt: [{shard, offset, reason}]}``. Damaged records are listed, not
    raised.
    """
    paths = find_shards(location)
    with ThreadPoolExecutor(max(1, min(workers, len(paths)))) as pool:
        shards = list(pool.map(_inspect_shard, paths))
    labels = np.concatenate([s["labels"] for s in shards])
    splits: dict[str, dict] = {}  # one folder can hold train-* and validation-*: never one sum
    for s in shards:
        split = splits.setdefault(split_label(Path(s["path"]).name), {"shards": 0, "records": 0})
        split["shards"] += 1
        split["records"] += s["records"]
    corrupt = [{"shard": s["path"], **c} for s in shards for c in s["corrupt"]]
    return {
        "location": location,
        "total_records": sum(s["records"] for s in shards),
        "splits": splits,
        "shards": [
            {k: s[k] for k in ("path", "records", "bytes")} | {"corrupt": len(s["corrupt"])}
            for s in shards
        ],
        "classes": len(np.unique(labels)),
        "label_min": int(labels.min()) if len(labels) else None,
        "label_max": int(labels.max()) if len(labels) else None,
        "height": _stats(np.concatenate([s["heights"] for s in shards])),
        "width": _stats(np.concatenate([s["widths"] for s in shards])),
        "corrupt_count": len(corrupt),
        "corrupt": corrupt,
    }


def format_inspect(d: dict, max_rows: int = 32) -> str:
    """A readable summary and a per-shard Markdown table (long tables are elided)."""

    def size(s: dict) -> str:
        if s["min"] is None:
            return "-"
        return f"{s['min']}..{s['max']} (mean {s['mean']:.1f})"

    splits = d.get("splits", {}).items()

    lines = [
        f"TFRecords at {d['location']}: {len(d['shards'])} shards, "
        f"{d['total_records']:,} records, {d['classes']} classes "
        f"(labels {d['label_min']}..{d['label_max']})",
        *(
            [
                f"{name}: {v['records']:,} records in {v['shards']} of the shards"
                for name, v in splits
            ]
            if len(splits) > 1
            else []
        ),
        f"image height {size(d['height'])}, width {size(d['width'])}",
        f"corrupt records: {d['corrupt_count']}",
        "",
        "| shard | records | MB | corrupt |",
        "|---|---:|---:|---:|",
    ]
    rows = d["shards"]
    shown = rows if len(rows) <= max_rows else rows[: max_rows - 4] + [None] + rows[-3:]
    for s in shown:
        if s is None:
            lines.append(f"| ... {len(rows) - max_rows + 1} more | | | |")
            continue
        lines.append(
            f"| {Path(s['path']).name} | {s['records']:,} | {s['bytes'] / 1e6:.1f} | {s['corrupt']} |"
        )
    for c in d["corrupt"][:20]:
        lines.append(f"corrupt: {c['shard']} at byte {c['offset']}: {c['reason']}")
    if d["corrupt_count"] > 20:
        lines.append(f"... and {d['corrupt_count'] - 20} more corrupt records")
    return "\n".join(lines)
