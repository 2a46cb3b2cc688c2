"""Protobuf wire format: the one varint reader of classzoo, field iteration, and writing.

Enough for tf.train.Example, TensorProto, BundleEntryProto and SavedTensorSlices without
generated protobuf classes. Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
(groups, types 3 and 4, appear in none of these messages and are refused).

Varints follow protobuf's CodedInputStream::ReadVarint64, which TensorFlow uses: at most 10
bytes, the value wraps modulo 2**64 (bits past bit 63 of the 10th byte are dropped), an 11th
byte is an error. Checked against TF 2.21: ``tf.io.parse_single_example`` reads the 10-byte
varint ``85 80 80 80 80 80 80 80 80 02`` (5 + 2**64) as 5 and refuses 11-byte varints.
Lengths are read the same way, then bounds-checked by the caller against what is left.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
MAX_VARINT_BYTES = 10  # protobuf kMaxVarintBytes
_U64 = (1 << 64) - 1


class WireError(ValueError):
    """Malformed protobuf bytes at byte ``pos`` of the message; the caller adds the file.

    Internal: every reader turns it into a ``UserError`` naming the file and byte offset.
    """

    def __init__(self, what: str, pos: int | None = None):
        super().__init__(what if pos is None else f"{what} at byte {pos}")
        self.pos = pos


def read_varint(buf, pos: int, max_bytes: int = MAX_VARINT_BYTES) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint at ``pos``; returns (value mod 2**64, next position).

    ``max_bytes``: 10 for protobuf varints, 5 for LevelDB/SSTable varint32 fields (the caller
    masks to 32 bits where the format says uint32).
    """
    try:
        b = buf[pos]
    except IndexError:
        raise WireError("truncated varint", pos) from None
    if b < 0x80:  # the common case: tags and short lengths
        return b, pos + 1
    start = pos
    result = 0
    shift = 0
    end = min(len(buf), pos + max_bytes)
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
        shift += 7
    if pos - start >= max_bytes:
        raise WireError(f"varint longer than {max_bytes} bytes", start)
    raise WireError("truncated varint", start)


def read_packed_varints(buf) -> np.ndarray:
    """A run of packed varints as ``uint64``, at NumPy speed, with :func:`read_varint`'s rules
    (10 bytes at most, values wrap modulo 2**64)."""
    b = np.frombuffer(buf, np.uint8)
    if b.size == 0:
        return np.zeros(0, np.uint64)
    if b[-1] & 0x80:
        raise WireError("truncated packed varints", int(b.size) - 1)
    ends = np.flatnonzero(b < 0x80)
    if ends.size == b.size:  # every value < 128
        return b.astype(np.uint64)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > MAX_VARINT_BYTES:
        at = int(starts[np.argmax(lengths > MAX_VARINT_BYTES)])
        raise WireError(f"varint longer than {MAX_VARINT_BYTES} bytes", at)
    shift = (np.arange(b.size) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
    # uint64 shifts drop the bits past bit 63: the same wrap as read_varint
    return np.bitwise_or.reduceat((b & 0x7F).astype(np.uint64) << shift, starts)


def to_signed64(value: int) -> int:
    """Reinterpret a decoded (mod 2**64) varint as int64, as protobuf's int64 fields do."""
    return value - (1 << 64) if value >= 1 << 63 else value


def read_length(buf, pos: int, end: int) -> tuple[int, int]:
    """(start, stop) of the length-delimited value whose length varint is at ``pos``."""
    n, start = read_varint(buf, pos)
    if n > end - start:
        raise WireError(f"length {n} runs past the end of its message ({end - start} left)", pos)
    return start, start + n


def skip_field(buf, pos: int, wtype: int, end: int) -> int:
    """Position after the value (of wire type ``wtype``) that starts at ``pos``."""
    if wtype == VARINT:
        return read_varint(buf, pos)[1]
    if wtype == LENGTH:
        return read_length(buf, pos, end)[1]
    size = {FIXED32: 4, FIXED64: 8}.get(wtype)
    if size is None:
        raise WireError(f"unsupported wire type {wtype}", pos)
    if pos + size > end:
        raise WireError(f"truncated fixed{size * 8}", pos)
    return pos + size


def iter_fields(buf, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field_number, wire_type, value)`` for each field of a message.

    ``value`` is an int for varint/fixed fields and a memoryview for length-delimited ones.
    """
    view = memoryview(buf)
    pos = start
    end = len(view) if end is None else end
    while pos < end:
        at = pos
        tag, pos = read_varint(view, pos)
        field, wtype = tag >> 3, tag & 7
        if field == 0:
            raise WireError("field number 0", at)
        if wtype == LENGTH:
            a, pos = read_length(view, pos, end)
            value: object = view[a:pos]
        elif wtype == VARINT:
            value, pos = read_varint(view, pos)
        elif wtype in (FIXED32, FIXED64):
            nxt = skip_field(view, pos, wtype, end)
            value = struct.unpack_from("<I" if wtype == FIXED32 else "<Q", view, pos)[0]
            pos = nxt
        else:
            raise WireError(f"unsupported wire type {wtype} for field {field}", at)
        if pos > end:
            raise WireError(f"field {field} runs past the end of its message", at)
        yield field, wtype, value


def encode_varint(value: int) -> bytes:
    """Encode a non-negative int (negatives as 64-bit two's complement, like protobuf int64)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field: int, wtype: int) -> bytes:
    return encode_varint((field << 3) | wtype)


def length_delimited(field: int, payload: bytes) -> bytes:
    return key(field, LENGTH) + encode_varint(len(payload)) + payload
