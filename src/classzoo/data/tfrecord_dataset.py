"""TFRecord shards as PyTorch datasets: find the shards, index them once, read records by offset.

* :func:`find_shards` accepts a folder of arbitrarily named shards (the ResNet-152 reference),
  a glob pattern, or slim's ``{split}-00000-of-01024`` names inside a folder.
* Each shard's index (record offsets) is built once from the record headers and cached in a
  hidden sidecar ``.<shard>.cz-index`` (or under ``$XDG_CACHE_HOME/classzoo/tfrecord-index`` when the
  folder is read-only), so record counts are exact and random access is one ``pread``.
* :class:`TFRecordImageDataset` is map-style: the trainer's sampler gives exact sharding,
  exact resume and exact evaluation. :class:`TFRecordStream` streams with a shuffle buffer for
  when random access is too slow (network storage).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import random
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from classzoo.data.decode import decode_pil, decode_tf
from classzoo.data.example import parse_example, parse_example_sparse
from classzoo.data.tfrecord import (
    HEADER,
    Corruption,
    CorruptRecordError,
    build_index,
    read_record_at,
)
from classzoo.errors import UserError
from classzoo.formats.wire import WireError

log = logging.getLogger(__name__)

LABEL_KEY = "image/class/label"  # slim build_imagenet_data.py _convert_to_example
IMAGE_KEY = "image/encoded"
SIDECAR_SUFFIX = ".cz-index"
# Files that sit next to shards but are not shards (label maps, READMEs, other tools' indexes).
_NOT_SHARDS = {".txt", ".json", ".md", ".csv", ".tsv", ".yaml", ".yml", ".py", ".sh", ".log"}
_NOT_SHARDS |= {".idx", ".index", ".html", ".pdf", SIDECAR_SUFFIX}
_SPLIT_ALIASES = {"val": ("val", "validation"), "validation": ("validation", "val")}
_KNOWN_SPLITS = re.compile(r"^(train|validation|val|valid|test|eval|dev)(?:[-_.]|$)", re.I)


# ---- finding shards -------------------------------------------------------------------------


def _shard_files(paths) -> list[Path]:
    keep = []
    for p in map(Path, paths):
        if p.name.startswith(".") or p.suffix.lower() in _NOT_SHARDS or not p.is_file():
            continue
        keep.append(p)
    return sorted(keep, key=str)


def find_shards(location: str, split: str | None = None) -> list[Path]:
    """The shard files of ``split`` at ``location``, sorted by name.

    ``location``: a folder, a glob pattern (``/data/train-*``) or one file. In a folder with
    ``split``: files named ``{split}-*`` / ``{split}_*`` / ``{split}.*`` (``val`` and ``validation``
    are the same split), else a ``{split}/`` subfolder, else every file when the folder holds
    only arbitrarily named shards (no recognisable split names). Hidden files, index sidecars
    and text-like files (``.txt``, ``.json``...) are never shards.
    """
    loc = Path(os.path.expanduser(location))
    if any(c in location for c in "*?["):
        files = _shard_files(glob.glob(os.path.expanduser(location)))
        if not files:
            raise UserError(f"no TFRecord files match the pattern {location}")
        return files
    if loc.is_file():
        return [loc]
    if not loc.is_dir():
        raise UserError(f"TFRecord location {loc} does not exist")
    files = _shard_files(loc.iterdir())
    if split is None:
        if not files:
            raise UserError(f"no TFRecord files in {loc}")
        return files
    names = _SPLIT_ALIASES.get(split, (split,))
    for name in names:
        sep = re.compile(rf"^{re.escape(name)}(?:[-_.]|$)", re.I)
        hits = [f for f in files if sep.match(f.name)]
        if hits:
            return hits
    for name in names:
        if (loc / name).is_dir():
            return find_shards(str(loc / name), None)
    tried = ", ".join(f"{n}-*, {n}/" for n in names)
    others = sorted({m.group(1) for f in files if (m := _KNOWN_SPLITS.match(f.name))})
    if others:
        raise UserError(f"no '{split}' shards in {loc} (tried {tried}; found {', '.join(others)})")
    if not files:
        raise UserError(f"no TFRecord files in {loc} (tried {tried}, then any file)")
    return files


# ---- per-shard index, cached ----------------------------------------------------------------

_IDX_HEAD = struct.Struct("<8sQqQ")  # magic, shard size, shard mtime_ns, record count
_IDX_MAGIC = b"CZTFIDX1"


def sidecar_path(path: Path) -> Path:
    """Hidden, so slim's ``train-*`` / TF's glob patterns never mistake it for a shard."""
    return path.with_name(f".{path.name}{SIDECAR_SUFFIX}")


def _cache_file(path: Path, st: os.stat_result) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()
    return base / "classzoo" / "tfrecord-index" / (hashlib.sha1(key).hexdigest() + ".idx")


def _load_index(file: Path, st: os.stat_result) -> np.ndarray | None:
    try:
        raw = file.read_bytes()
    except OSError:
        return None
    if len(raw) < _IDX_HEAD.size:
        return None
    magic, size, mtime, n = _IDX_HEAD.unpack_from(raw)
    if magic != _IDX_MAGIC or (size, mtime) != (st.st_size, st.st_mtime_ns):
        return None  # written for another version of the shard
    if len(raw) != _IDX_HEAD.size + 16 * n:
        return None
    return np.frombuffer(raw, dtype="<i8", offset=_IDX_HEAD.size).reshape(n, 2).astype(np.int64)


def _save_index(file: Path, st: os.stat_result, index: np.ndarray) -> bool:
    """Atomic write (tmp + rename: ranks indexing the same shard never see half a file)."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        head = _IDX_HEAD.pack(_IDX_MAGIC, st.st_size, st.st_mtime_ns, len(index))
        tmp.write_bytes(head + index.astype("<i8").tobytes())
        os.replace(tmp, file)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def shard_index(path: str | os.PathLike, skip_corrupt: bool = False) -> np.ndarray:
    """``int64 [N, 2]`` (header offset, data length) of every record of one shard, cached.

    A damaged shard is never cached, so the error (or the skip warning) shows on every run.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise UserError(f"cannot read TFRecord file {path}: {e.strerror}") from None
    for file in (sidecar_path(path), _cache_file(path, st)):
        index = _load_index(file, st)
        if index is not None:
            return index
    corrupt: list[Corruption] = []
    index = build_index(path, skip_corrupt=skip_corrupt, corrupt=corrupt)
    if not corrupt and not _save_index(sidecar_path(path), st, index):
        _save_index(_cache_file(path, st), st, index)
    return index


def index_shards(
    paths: Sequence[str | os.PathLike], skip_corrupt: bool = False, threads: int = 8
) -> list[np.ndarray]:
    """Indexes of many shards; header reads are I/O bound, so a thread pool overlaps them."""
    if len(paths) <= 1 or threads <= 1:
        return [shard_index(p, skip_corrupt) for p in paths]
    with ThreadPoolExecutor(min(threads, len(paths))) as pool:
        return list(pool.map(partial(shard_index, skip_corrupt=skip_corrupt), paths))


# ---- label policy ---------------------------------------------------------------------------


def slim_label_offset(num_classes: int, dataset_classes: int = 1000) -> int:
    """Offset for slim labels (1..N, 0 = background): N+1 logits -> 0 (InceptionV4's 1001),
    N logits -> 1 (ResNet-v1's 1000)."""
    if num_classes == dataset_classes + 1:
        return 0
    if num_classes == dataset_classes:
        return 1
    raise UserError(
        f"a {num_classes}-logit model does not fit slim labels 1..{dataset_classes} "
        f"(use {dataset_classes} logits with label_offset 1 or {dataset_classes + 1} with 0)"
    )


def check_labels(labels, num_classes: int, label_offset: int, source: str = "the dataset") -> None:
    """Raise a UserError unless every ``label - label_offset`` is a valid logit index."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo - label_offset >= 0 and hi - label_offset < num_classes:
        return
    bad = hi if hi - label_offset >= num_classes else lo
    hint = ""
    if label_offset == 0 and lo >= 1 and hi == num_classes:
        hint = (
            f"; these look like slim labels (1..{hi}, 0 = background): use label_offset 1 "
            f"with {num_classes} logits, or {num_classes + 1} logits with label_offset 0"
        )
    elif label_offset > 0 and lo == 0:
        hint = "; these labels start at 0: use label_offset 0"
    raise UserError(
        f"label {bad} in {source} is out of range for {num_classes} logits with label_offset "
        f"{label_offset} (stored labels span {lo}..{hi}){hint}"
    )


# ---- reading --------------------------------------------------------------------------------


class _FdCache:
    """Per-process LRU of open file descriptors.

    Forked DataLoader workers start with an empty cache (the pid changes), so no descriptor is
    ever shared; ``os.pread`` keeps no file position, so threads can share one descriptor.
    """

    def __init__(self, size: int = 64):
        self.size = size
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def get(self, path: str) -> int:
        if self._pid != os.getpid():  # forked: descriptors and lock state are the parent's
            self._fds, self._lock, self._pid = OrderedDict(), threading.Lock(), os.getpid()
        with self._lock:
            fd = self._fds.get(path)
            if fd is not None:
                self._fds.move_to_end(path)
                return fd
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise UserError(f"cannot open TFRecord file {path}: {e.strerror}") from None
            self._fds[path] = fd
            if len(self._fds) > self.size:
                os.close(self._fds.popitem(last=False)[1])
            return fd

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds.clear()

    def __getstate__(self):
        return {"size": self.size}

    def __setstate__(self, state):
        self.__init__(state["size"])

    def __del__(self):
        with contextlib.suppress(OSError):
            self.close()


class _Records:
    """Shared by both datasets: shard paths, indexes and decoding of one record."""

    def __init__(self, shards, label_key, image_key, label_offset, skip_corrupt, index_threads):
        if isinstance(shards, (str, os.PathLike)):
            shards = find_shards(str(shards))
        self.shards = [str(s) for s in shards]
        if not self.shards:
            raise UserError("no TFRecord shards given")
        self.label_key, self.image_key = label_key, image_key
        self.label_offset = label_offset
        self.skip_corrupt = skip_corrupt
        indexes = index_shards(self.shards, skip_corrupt, index_threads)
        self.counts = np.array([len(ix) for ix in indexes], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.index = np.concatenate(indexes) if len(indexes) else np.zeros((0, 2), np.int64)
        self.keys = (image_key, label_key)
        self.decoder = "pil"  # or "tf": see classzoo.data.decode

    def where(self, i: int) -> tuple[int, int]:
        """(shard number, record number in that shard) of global record ``i``."""
        shard = int(np.searchsorted(self.starts, i, side="right")) - 1
        return shard, i - int(self.starts[shard])

    def decode(self, data, shard: int, record: int) -> tuple[Image.Image, int]:
        """(RGB image, label - label_offset) of one record's Example bytes."""
        path = self.shards[shard]
        offset = int(self.index[self.starts[shard] + record, 0])  # for messages
        try:
            feats = parse_example(data, self.keys)
        except WireError as e:
            raise CorruptRecordError(
                Corruption(path, record, offset, f"bad Example ({e})")
            ) from None
        for key in self.keys:
            if key not in feats:
                raise UserError(
                    f"record {record} in {path} (byte {offset}) has no feature '{key}'; "
                    f"set the image / label key to one of: "
                    + ", ".join(sorted(parse_example(data)))
                )
        label, encoded = feats[self.label_key], feats[self.image_key]
        if not isinstance(label, np.ndarray) or label.dtype != np.int64 or not len(label):
            raise UserError(
                f"feature '{self.label_key}' of record {record} in {path} is not an int64"
            )
        if not isinstance(encoded, list) or not encoded:
            raise UserError(f"feature '{self.image_key}' of record {record} in {path} is not bytes")
        try:
            if self.decoder == "tf":  # TF's own JPEG pixels (IFAST DCT) for the slim presets
                img = decode_tf(bytes(encoded[0]), f"record {record} of {path}")
            else:  # PIL's pixels; raises on truncated / garbage data
                img = decode_pil(bytes(encoded[0]), f"record {record} of {path}")
        except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBomb...
            reason = f"undecodable {self.image_key} ({type(e).__name__}: {e})"
            raise CorruptRecordError(Corruption(path, record, offset, reason)) from None
        return img, int(label[0]) - self.label_offset

    def read_labels(self, threads: int = 8) -> np.ndarray:
        """Stored labels of every record, reading only a few KB per record (no image bytes)."""

        def shard_labels(shard: int) -> np.ndarray:
            path, out = self.shards[shard], []
            rows = self.index[self.starts[shard] : self.starts[shard + 1]]
            fd = os.open(path, os.O_RDONLY)
            try:
                for record, (offset, length) in enumerate(rows.tolist()):
                    start = offset + HEADER
                    try:
                        feats = parse_example_sparse(
                            lambda p, n, s=start: os.pread(fd, n, s + p), length, [self.label_key]
                        )
                        out.append(int(feats[self.label_key][0]))
                    except (WireError, KeyError, IndexError, TypeError):
                        raise UserError(
                            f"record {record} in {path} (byte {offset}) has no int64 "
                            f"'{self.label_key}'"
                        ) from None
            finally:
                os.close(fd)
            return np.array(out, dtype=np.int64)

        with ThreadPoolExecutor(max(1, min(threads, len(self.shards)))) as pool:
            parts = list(pool.map(shard_labels, range(len(self.shards))))
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class TFRecordImageDataset(torch.utils.data.Dataset):
    """Map-style dataset over TFRecord shards of ``tf.train.Example`` images (slim schema).

    ``ds[i]`` is ``(transform(RGB PIL image), label - label_offset)``. Records are numbered
    shard by shard in the given order; ``len`` is exact (from the indexes). Files are opened
    lazily in each process (at most ``max_open_files`` at a time) and read with one ``pread``
    per record, checking both CRCs.

    A corrupt record or undecodable image raises a UserError naming the shard and byte offset.
    With ``skip_corrupt=True`` it is logged, counted in :attr:`corrupt_count` (per process:
    DataLoader workers count their own) and the next good record is returned instead, so the
    epoch keeps its length but that neighbour appears twice.
    """

    def __init__(
        self,
        shards: Sequence[str | os.PathLike] | str,
        transform: Callable | None = None,
        label_key: str = LABEL_KEY,
        image_key: str = IMAGE_KEY,
        label_offset: int = 0,
        skip_corrupt: bool = False,
        *,
        index_threads: int = 8,
        max_open_files: int = 64,
    ):
        self._records = _Records(
            shards, label_key, image_key, label_offset, skip_corrupt, index_threads
        )
        self.shards = self._records.shards
        self.transform = transform
        self.label_offset = label_offset
        self.skip_corrupt = skip_corrupt
        self.corrupt_count = 0
        self._files = _FdCache(max_open_files)
        self._targets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self._records.starts[-1])

    @property
    def decoder(self) -> str:
        """ "pil" (default) or "tf" (TensorFlow's JPEG pixels, for the slim presets)."""
        return self._records.decoder

    @decoder.setter
    def decoder(self, name: str) -> None:
        self._records.decoder = name

    def _load(self, i: int) -> tuple[Image.Image, int]:
        rec = self._records
        shard, record = rec.where(i)
        offset, length = (int(v) for v in rec.index[i])
        path = rec.shards[shard]
        data = read_record_at(self._files.get(path), offset, length, path=path, record=record)
        return rec.decode(data, shard, record)

    def __getitem__(self, i: int):
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range for {n} records")
        for step in range(n if self.skip_corrupt else 1):
            try:
                img, label = self._load((i + step) % n)
                break
            except CorruptRecordError as e:
                if not self.skip_corrupt:
                    raise
                self.corrupt_count += 1
                log.warning("skipping %s", e)
        else:
            raise UserError(f"every record of {len(self.shards)} TFRecord shards is corrupt")
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    @property
    def targets(self) -> np.ndarray:
        """``label - label_offset`` of every record, read once without image bytes (a few KB of
        reads per record: about a minute for ImageNet's 1.28 M records on local disk)."""
        if self._targets is None:
            self._targets = self._records.read_labels() - self.label_offset
        return self._targets

    def check_labels(self, num_classes: int) -> None:
        """Raise a UserError if a label falls outside ``num_classes`` logits after the offset."""
        check_labels(
            self.targets + self.label_offset,
            num_classes,
            self.label_offset,
            f"{len(self.shards)} TFRecord shards ({self.shards[0]}...)",
        )


def _bounds(n: int, parts: int, k: int) -> tuple[int, int]:
    return n * k // parts, n * (k + 1) // parts


class TFRecordStream(torch.utils.data.IterableDataset):
    """Streaming read of TFRecord shards with a shard-level shuffle and a shuffle buffer.

    Each epoch the shard order is a permutation drawn from ``(seed, epoch)``; the records, in
    that order, are cut into ``world_size`` contiguous ranges (one per rank) and each rank's
    range into one per DataLoader worker, at record granularity through the indexes, so every
    record is read exactly once per epoch even with fewer shards than ranks x workers. Each
    worker reads its range sequentially (one ``pread`` per record, never a whole shard) through
    a buffer of ``shuffle_buffer`` undecoded records (~110 KB each for ImageNet). The output order
    depends only on (seed, epoch, rank, world_size, num_workers).

    Call :meth:`set_epoch` before iterating each epoch; it works with ``persistent_workers``
    (the epoch lives in shared memory). ``len`` is this rank's record count. With
    ``skip_corrupt`` damaged records are logged and left out.
    """

    def __init__(
        self,
        shards: Sequence[str | os.PathLike] | str,
        transform: Callable | None = None,
        *,
        label_key: str = LABEL_KEY,
        image_key: str = IMAGE_KEY,
        label_offset: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = 1024,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        skip_corrupt: bool = False,
        index_threads: int = 8,
    ):
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside world size {world_size}")
        self._records = _Records(
            shards, label_key, image_key, label_offset, skip_corrupt, index_threads
        )
        self.shards = self._records.shards
        self.transform = transform
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.rank, self.world_size = rank, world_size
        self.skip_corrupt = skip_corrupt
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    def __len__(self) -> int:
        a, b = _bounds(int(self._records.starts[-1]), self.world_size, self.rank)
        return b - a

    def plan(self, epoch: int, worker: int = 0, num_workers: int = 1) -> list[tuple[int, int, int]]:
        """``(shard, first record, end record)`` pieces this rank's ``worker`` reads in ``epoch``."""
        counts = self._records.counts
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(counts))
        else:
            order = np.arange(len(counts))
        ra, rb = _bounds(int(counts.sum()), self.world_size, self.rank)
        a, b = (ra + x for x in _bounds(rb - ra, num_workers, worker))
        pieces, pos = [], 0
        for shard in order.tolist():
            lo, hi = max(a, pos), min(b, pos + int(counts[shard]))
            if lo < hi:
                pieces.append((shard, lo - pos, hi - pos))
            pos += int(counts[shard])
        return pieces

    def _read(self, pieces) -> Iterator[tuple[memoryview, int, int]]:
        rec = self._records
        for shard, lo, hi in pieces:
            path = rec.shards[shard]
            rows = rec.index[rec.starts[shard] + lo : rec.starts[shard] + hi].tolist()
            fd = os.open(path, os.O_RDONLY)
            try:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                for record, (offset, length) in enumerate(rows, lo):
                    try:
                        data = read_record_at(fd, offset, length, path=path, record=record)
                    except CorruptRecordError as e:
                        if not self.skip_corrupt:
                            raise
                        log.warning("skipping %s", e)
                        continue
                    yield data, shard, record
            finally:
                os.close(fd)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = int(self._epoch[0])
        items = self._read(self.plan(epoch, worker, num_workers))
        if self.shuffle and self.shuffle_buffer > 1:
            part = self.rank * num_workers + worker
            state = np.random.SeedSequence([self.seed, epoch, part]).generate_state(2)
            items = _shuffled(
                items, self.shuffle_buffer, random.Random(int(state[0]) << 32 | int(state[1]))
            )
        for data, shard, record in items:
            try:
                img, label = self._records.decode(data, shard, record)
            except CorruptRecordError as e:
                if not self.skip_corrupt:
                    raise
                log.warning("skipping %s", e)
                continue
            yield (self.transform(img) if self.transform is not None else img), label


def _shuffled(items, size: int, rng: random.Random):
    """TF-style shuffle buffer: once full, emit a random element and put the new one in its slot."""
    buf = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        k = rng.randrange(size)
        yield buf[k]
        buf[k] = item
    rng.shuffle(buf)
    yield from buf
