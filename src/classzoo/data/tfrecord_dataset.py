"""TFRecord shards as a map-style PyTorch dataset: indexed once, read by offset.

Each shard's index (record offsets and stored labels, :mod:`classzoo.data.tfrecord_index`) is
built once and cached, so record counts are exact, label ranges need no decoding, and random
access is one ``pread`` per record: the trainer's sampler gives exact sharding across ranks,
exact resume and exact evaluation. Which files are shards: :mod:`classzoo.data.tfrecord_shards`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch

from classzoo.data.decode import (
    SKIP_HINT,
    EncodedImage,
    UnreadableImage,
    decode_pil,
    decode_tf,
)
from classzoo.data.imagefolder import left_out_target
from classzoo.data.labels import check_labels
from classzoo.data.tfrecord_index import index_shards
from classzoo.data.tfrecord_shards import find_shards
from classzoo.errors import UserError
from classzoo.formats.example import feature_names, parse_example
from classzoo.formats.tfrecord import Corruption, CorruptRecordError, read_record_at
from classzoo.formats.tfrecord_index import EXAMPLE_BAD, LABEL_OK
from classzoo.formats.wire import WireError

log = logging.getLogger(__name__)

LABEL_KEY = "image/class/label"  # slim build_imagenet_data.py _convert_to_example
IMAGE_KEY = "image/encoded"


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


def _missing_key(data, key: str, setting: str, where: str) -> UserError:
    names = feature_names(data)
    listed = ", ".join(names) if names else "none readable"
    return UserError(f"{where} has no feature '{key}' ({setting}); its features: {listed}")


class TFRecordImageDataset(torch.utils.data.Dataset):
    """Map-style dataset over TFRecord shards of ``tf.train.Example`` images.

    ``ds[i]`` is ``(transform(image), label - label_offset)``; records are numbered shard by
    shard in the given order; ``len`` (= :attr:`num_records`) is exact. Both features must
    hold exactly one value, as slim's ``FixedLenFeature([])`` requires. Files are opened
    lazily in each process (at most ``max_open_files`` at a time), one ``pread`` per record,
    both CRCs checked. A transform with ``accepts_encoded`` (a pipeline's ``sample``) gets the
    record's image bytes undecoded (:class:`~classzoo.data.decode.EncodedImage`, as
    ImageFolderDataset gives them) and decodes them at the scale its crop needs; any other
    transform gets the decoded image: ``decoder`` "pil" (default, an RGB PIL image) or "tf"
    (TF's JPEG pixels, an HWC uint8 array).

    A corrupt record or undecodable image raises a UserError naming the shard and byte offset.
    With ``skip_corrupt=True`` it is logged and the next good record is returned instead, so the
    epoch keeps its length but that neighbour appears twice; with ``leave_out_unreadable``
    (evaluation) the neighbour comes with the target ``left_out_target(i)`` (negative) instead
    of its label, so the damaged record is left out of the metrics (engine/evaluate.py).
    """

    def __init__(
        self,
        shards: Sequence[str | os.PathLike] | str,
        transform: Callable | None = None,
        label_offset: int = 0,
        skip_corrupt: bool = False,
        image_key: str = IMAGE_KEY,
        label_key: str = LABEL_KEY,
        *,
        index_threads: int = 8,
        max_open_files: int = 64,
        leave_out_unreadable: bool = False,
    ):
        if isinstance(shards, (str, os.PathLike)):
            shards = find_shards(str(shards))
        self.shards = [str(s) for s in shards]
        if not self.shards:
            raise UserError("no TFRecord shards given")
        self.transform = transform
        self.label_offset = label_offset
        self.skip_corrupt = skip_corrupt
        self.leave_out_unreadable = leave_out_unreadable
        self.image_key, self.label_key = image_key, label_key
        self.decoder = "pil"
        indexes = index_shards(self.shards, label_key, skip_corrupt, index_threads)
        counts = np.array([len(ix) for ix in indexes], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._rows = np.concatenate([ix.rows for ix in indexes])
        self._status = np.concatenate([ix.status for ix in indexes])
        self._files = _FdCache(max_open_files)
        self._check_keys()

    def _check_keys(self) -> None:
        """Both feature keys in the first readable record: a wrong data.image_key /
        data.label_key is named now, not at the first batch."""
        readable = np.flatnonzero(self._status != EXAMPLE_BAD)
        if not readable.size:
            return
        i = int(readable[0])
        path, record, offset = self.where(i)
        try:
            data = read_record_at(
                self._files.get(path), offset, int(self._rows[i, 1]), path=path, record=record
            )
        except CorruptRecordError:
            return  # reported when read (or skipped)
        feats = feature_names(data) or []
        at = f"record {record} in {path} (byte {offset})"
        for key, setting in (
            (self.image_key, "data.image_key"),
            (self.label_key, "data.label_key"),
        ):
            if key not in feats:
                raise _missing_key(data, key, setting, at)

    @property
    def num_records(self) -> int:
        return int(self._starts[-1])

    def __len__(self) -> int:
        return self.num_records

    def where(self, i: int) -> tuple[str, int, int]:
        """(shard path, record number in it, byte offset) of global record ``i``."""
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.shards[shard], i - int(self._starts[shard]), int(self._rows[i, 0])

    def name_of(self, i: int) -> str:
        """Global record ``i`` for messages: its number in its shard and the shard's path."""
        path, record, _ = self.where(i)
        return f"record {record} of {path}"

    # ---- reading --------------------------------------------------------------------------

    def _fields(self, data, path: str, record: int, offset: int) -> tuple[bytes, int]:
        """The image bytes and the label of one record's Example (one value each)."""
        at = f"record {record} in {path} (byte {offset})"
        try:
            feats = parse_example(data, (self.image_key, self.label_key))
        except WireError as e:
            raise CorruptRecordError(
                Corruption(path, record, offset, f"bad Example ({e})")
            ) from None
        for key, setting in (
            (self.image_key, "data.image_key"),
            (self.label_key, "data.label_key"),
        ):
            if key not in feats:
                raise _missing_key(data, key, setting, at)
        label, encoded = feats[self.label_key], feats[self.image_key]
        if not isinstance(label, np.ndarray) or label.dtype != np.int64 or label.size != 1:
            raise UserError(f"feature '{self.label_key}' of {at} is not one int64 (data.label_key)")
        if not isinstance(encoded, list) or len(encoded) != 1:
            raise UserError(
                f"feature '{self.image_key}' of {at} is not one bytes value (data.image_key)"
            )
        return encoded[0], int(label[0]) - self.label_offset

    def _sample(self, i: int):
        """Record ``i`` through the transform; an image that cannot be decoded (by the
        transform, for encoded input) is a CorruptRecordError naming shard, record, byte."""
        path, record, offset = self.where(i)
        data = read_record_at(
            self._files.get(path), offset, int(self._rows[i, 1]), path=path, record=record
        )
        encoded, label = self._fields(data, path, record, offset)
        name = f"record {record} of {path}"
        try:
            if getattr(self.transform, "accepts_encoded", False):
                return self.transform(EncodedImage(encoded, name)), label
            # "tf": TF's own JPEG pixels (IFAST DCT) for the slim presets, else PIL's
            img = (decode_tf if self.decoder == "tf" else decode_pil)(encoded, name)
        except UnreadableImage as e:
            reason = f"undecodable {self.image_key} ({e.cause})"
            raise CorruptRecordError(Corruption(path, record, offset, reason)) from None
        return (self.transform(img) if self.transform is not None else img), label

    def __getitem__(self, i: int):
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range for {n} records")
        for step in range(n if self.skip_corrupt else 1):
            try:
                image, label = self._sample((i + step) % n)
            except CorruptRecordError as e:
                if not self.skip_corrupt:
                    raise CorruptRecordError(f"{e}{SKIP_HINT}") from None
                log.warning("skipping %s", e)
                continue
            if step and self.leave_out_unreadable:  # the neighbour only fills the batch
                return image, left_out_target(i)
            return image, label
        raise UserError(f"every record of {len(self.shards)} TFRecord shards is corrupt")

    # ---- labels, from the index (no image is read) ----------------------------------------

    def _labelled(self) -> np.ndarray:
        """Mask of records with a readable label; a UserError for the first one without,
        unless ``skip_corrupt`` (then they are left out, as reading would skip them)."""
        ok = self._status == LABEL_OK
        if not ok.all() and not self.skip_corrupt:
            i = int(np.argmin(ok))
            path, record, offset = self.where(i)
            at = f"record {record} in {path} (byte {offset})"
            if self._status[i] == EXAMPLE_BAD:
                raise UserError(f"{at} is not a readable tf.train.Example")
            raise UserError(f"{at} has no single int64 feature '{self.label_key}' (data.label_key)")
        return ok

    @property
    def targets(self) -> np.ndarray:
        """``label - label_offset`` of every record with a readable label (from the index)."""
        return self._rows[self._labelled(), 2] - self.label_offset

    def label_range(self) -> tuple[int, int]:
        """(min, max) of the stored labels (before ``label_offset``), from the index."""
        labels = self._rows[self._labelled(), 2]
        if not labels.size:
            raise UserError(f"no labelled records in {len(self.shards)} TFRecord shards")
        return int(labels.min()), int(labels.max())

    def distinct_labels(self) -> int:
        """How many different stored labels there are."""
        return int(np.unique(self._rows[self._labelled(), 2]).size)

    def check_labels(self, num_classes: int) -> None:
        """A UserError naming the first record whose label does not fit ``num_classes``."""
        lo, hi = self.label_range()
        labels = self._rows[:, 2] - self.label_offset
        bad = np.flatnonzero(self._labelled() & ((labels < 0) | (labels >= num_classes)))
        source = f"{len(self.shards)} TFRecord shards"
        if bad.size:
            path, record, offset = self.where(int(bad[0]))
            source = f"record {record} of {path} (byte {offset})"
        check_labels(lo, hi, num_classes, self.label_offset, source)
