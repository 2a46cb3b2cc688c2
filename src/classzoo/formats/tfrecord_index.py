"""The TFRecord index sidecar: record offsets, lengths and labels of one shard, checksummed.

Layout (all little-endian)::

    magic "CZTFIX02" | uint64 shard size | int64 shard mtime_ns | uint64 record count N
    | uint32 label-key length K | label key (K bytes, UTF-8)
    | int64 [N, 3] (header offset, data length, stored label) | uint8 [N] label status
    | uint32 masked crc32c of every byte before it

CRC-32C detects every single-bit error (and every burst up to 32 bits) anywhere in the file,
the stored CRC included; the rows are also checked against each other and the shard size
(each record starts where the previous one ends: offset + 12 + length + 4), so a sidecar that
decodes is the index of that exact shard. Anything else is a :class:`SidecarError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from classzoo.formats.crc import masked_crc32c
from classzoo.formats.errors import FormatError
from classzoo.formats.tfrecord import FOOTER, HEADER

MAGIC = b"CZTFIX02"
_HEAD = struct.Struct("<8sQqQI")
_CRC = struct.Struct("<I")
LABEL_OK, LABEL_MISSING, EXAMPLE_BAD = 0, 1, 2  # per-record label status
MAX_KEY = 4096


class SidecarError(FormatError):
    """A sidecar that cannot be trusted (damaged, stale, or another version): rebuild it."""


@dataclass(frozen=True)
class ShardIndex:
    """Index of one shard: ``rows`` int64 [N, 3] (offset, length, label), ``status`` uint8 [N]."""

    shard_size: int
    mtime_ns: int
    label_key: str
    rows: np.ndarray
    status: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def encode(index: ShardIndex) -> bytes:
    key = index.label_key.encode("utf-8")
    head = _HEAD.pack(MAGIC, index.shard_size, index.mtime_ns, len(index.rows), len(key))
    body = head + key + index.rows.astype("<i8").tobytes() + index.status.astype("u1").tobytes()
    return body + _CRC.pack(masked_crc32c(body))


def decode(raw: bytes, path: str) -> ShardIndex:
    """Parse and verify a sidecar's bytes; raises SidecarError naming ``path`` and the offset."""
    if len(raw) < _HEAD.size + _CRC.size or raw[:8] != MAGIC:
        raise SidecarError(path, 0, "not a classzoo index sidecar of this version")
    body = memoryview(raw)[: -_CRC.size]
    if masked_crc32c(body) != _CRC.unpack_from(raw, len(body))[0]:
        raise SidecarError(path, len(body), "checksum mismatch")
    _, size, mtime, n, k = _HEAD.unpack_from(raw)
    rows_at = _HEAD.size + k
    if k > MAX_KEY or n > len(raw) or rows_at + 25 * n != len(body):
        raise SidecarError(path, _HEAD.size - 12, f"{n} records do not fill {len(raw)} bytes")
    try:
        key = bytes(raw[_HEAD.size : rows_at]).decode("utf-8")
    except UnicodeDecodeError:
        raise SidecarError(path, _HEAD.size, "label key is not UTF-8") from None
    rows = np.frombuffer(raw, "<i8", 3 * n, rows_at).reshape(n, 3).astype(np.int64)
    status = np.frombuffer(raw, "u1", n, rows_at + 24 * n).copy()
    index = ShardIndex(size, mtime, key, rows, status)
    problem = check_rows(index)
    if problem:
        raise SidecarError(path, rows_at, problem)
    return index


def check_rows(index: ShardIndex) -> str | None:
    """Why the rows cannot be the index of a shard of ``index.shard_size`` bytes, or None."""
    rows = index.rows
    if not len(rows):
        return None if index.shard_size == 0 else "no records for a non-empty shard"
    offsets, lengths = rows[:, 0], rows[:, 1]
    size = index.shard_size
    if ((lengths < 0) | (lengths > size) | (offsets < 0) | (offsets >= size)).any():
        return "a record lies outside the shard"  # also rules out int64 wrap-around below
    ends = offsets + HEADER + lengths + FOOTER
    if offsets[0] != 0 or (offsets[1:] != ends[:-1]).any():
        return "records do not follow each other"
    if ends[-1] != index.shard_size:
        return f"records end at byte {int(ends[-1])}, the shard has {index.shard_size}"
    if (index.status > EXAMPLE_BAD).any():
        return "unknown label status"
    return None
