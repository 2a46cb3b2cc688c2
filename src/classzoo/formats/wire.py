"""Minimal protobuf wire-format reading and writing.

Enough for tf.train.Example, TensorProto, BundleEntryProto and SavedTensorSlices without
depending on generated protobuf classes. Wire types: 0 varint, 1 fixed64, 2 length-delimited,
5 fixed32 (groups, types 3 and 4, are not used by any of these messages).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """Malformed protobuf bytes; the caller adds the file and offset."""


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint at ``pos``; returns (value, next position)."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


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


def to_signed64(value: int) -> int:
    """Reinterpret a decoded varint as int64 (protobuf int64 negatives use 10 bytes)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field_number, wire_type, value)`` for each field of a message.

    ``value`` is an int for varint/fixed fields and a memoryview for length-delimited ones.
    """
    view = memoryview(buf)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = read_varint(view, pos)
        field, wtype = key >> 3, key & 7
        if field == 0:
            raise WireError("field number 0")
        if wtype == VARINT:
            value, pos = read_varint(view, pos)
        elif wtype == LENGTH:
            size, pos = read_varint(view, pos)
            if pos + size > end:
                raise WireError(f"length-delimited field {field} runs past the end")
            value = view[pos : pos + size]
            pos += size
        elif wtype == FIXED32:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            value = struct.unpack_from("<I", view, pos)[0]
            pos += 4
        elif wtype == FIXED64:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            value = struct.unpack_from("<Q", view, pos)[0]
            pos += 8
        else:
            raise WireError(f"unsupported wire type {wtype} for field {field}")
        yield field, wtype, value


def key(field: int, wtype: int) -> bytes:
    return encode_varint((field << 3) | wtype)


def length_delimited(field: int, payload: bytes) -> bytes:
    return key(field, LENGTH) + encode_varint(len(payload)) + payload
