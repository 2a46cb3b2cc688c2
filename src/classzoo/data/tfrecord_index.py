"""Per-shard indexes (offsets, lengths, labels), built once and cached in checksummed sidecars.

The sidecar is ``.<shard>.cz-index`` next to the shard (hidden, so slim's ``train-*`` globs never
take it for a shard), or under ``$XDG_CACHE_HOME/classzoo/tfrecord-index`` when the folder is
read-only. Its byte layout and checksum: :mod:`classzoo.formats.tfrecord_index`. A sidecar that
fails its checksum, belongs to another version of the shard, or was built for another label
key is rebuilt, with a log line saying why. A damaged shard's index is never cached, so its
error (or skip warning) shows on every run.

Labels are read while indexing with a sparse Example parse (entry headers and the label value:
a few KB per record, never the image), so label ranges and class counts need no decoding.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from classzoo.errors import UserError
from classzoo.formats import tfrecord_index as fmt
from classzoo.formats.example import parse_example_sparse
from classzoo.formats.tfrecord import HEADER, Corruption, build_index
from classzoo.formats.wire import WireError

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".cz-index"


def sidecar_path(path: Path) -> Path:
    """Hidden, so slim's ``train-*`` / TF's glob patterns never mistake it for a shard."""
    return path.with_name(f".{path.name}{SIDECAR_SUFFIX}")


def _cache_file(path: Path, st: os.stat_result) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode("utf-8", "surrogateescape")
    return base / "classzoo" / "tfrecord-index" / (hashlib.sha1(key).hexdigest() + ".idx")


def read_label(read, size: int, label_key: str) -> tuple[int, int]:
    """(stored label, status) of one serialized Example read through ``read(pos, n)``.

    The label must be exactly one int64, as slim's ``FixedLenFeature([], tf.int64)`` needs.
    """
    try:
        feats = parse_example_sparse(read, size, [label_key])
    except WireError:
        return 0, fmt.EXAMPLE_BAD
    value = feats.get(label_key)
    if not isinstance(value, np.ndarray) or value.dtype != np.int64 or value.size != 1:
        return 0, fmt.LABEL_MISSING
    return int(value[0]), fmt.LABEL_OK


def _labels(path: str, offsets_lengths: np.ndarray, label_key: str):
    labels = np.zeros(len(offsets_lengths), np.int64)
    status = np.zeros(len(offsets_lengths), np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        for i, (offset, length) in enumerate(offsets_lengths.tolist()):
            start = offset + HEADER
            labels[i], status[i] = read_label(
                lambda p, n, s=start: os.pread(fd, n, s + p), length, label_key
            )
    finally:
        os.close(fd)
    return labels, status


def _load(file: Path, st: os.stat_result, label_key: str, shard: Path) -> fmt.ShardIndex | None:
    """The sidecar's index if it is intact and current; None (with a log line) otherwise."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.info("cannot read index sidecar %s (%s); rebuilding", file, e.strerror)
        return None
    try:
        index = fmt.decode(raw, str(file))
    except fmt.SidecarError as e:
        log.warning("index sidecar rejected, rebuilding it: %s", e)
        return None
    if (index.shard_size, index.mtime_ns) != (st.st_size, st.st_mtime_ns):
        log.info("index sidecar %s is for another version of %s; rebuilding", file, shard)
        return None
    if index.label_key != label_key:
        log.info(
            "index sidecar %s holds labels of '%s', not '%s'; rebuilding",
            file,
            index.label_key,
            label_key,
        )
        return None
    return index


def _save(file: Path, index: fmt.ShardIndex) -> bool:
    """Atomic write (tmp + rename: ranks indexing the same shard never see half a file)."""
    tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(fmt.encode(index))
        os.replace(tmp, file)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def shard_index(
    path: str | os.PathLike, label_key: str, skip_corrupt: bool = False
) -> fmt.ShardIndex:
    """Index of one shard with the labels under ``label_key``, from its sidecar or built."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise UserError(f"cannot read TFRecord file {path}: {e.strerror}") from None
    for file in (sidecar_path(path), _cache_file(path, st)):
        index = _load(file, st, label_key, path)
        if index is not None:
            return index
    corrupt: list[Corruption] = []
    rows = build_index(path, skip_corrupt=skip_corrupt, corrupt=corrupt)
    labels, status = _labels(str(path), rows, label_key)
    index = fmt.ShardIndex(
        st.st_size, st.st_mtime_ns, label_key, np.column_stack([rows, labels]), status
    )
    if not corrupt and not _save(sidecar_path(path), index):
        _save(_cache_file(path, st), index)
    return index


def index_shards(
    paths: Sequence[str | os.PathLike],
    label_key: str,
    skip_corrupt: bool = False,
    threads: int = 8,
) -> list[fmt.ShardIndex]:
    """Indexes of many shards; header reads are I/O bound, so a thread pool overlaps them."""
    if len(paths) <= 1 or threads <= 1:
        return [shard_index(p, label_key, skip_corrupt) for p in paths]
    with ThreadPoolExecutor(min(threads, len(paths))) as pool:
        return list(pool.map(lambda p: shard_index(p, label_key, skip_corrupt), paths))
