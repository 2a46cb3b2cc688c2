"""Decoders for the protos inside TF checkpoints: shapes, slices, TensorProto values, keys.

Protobuf rules, as TensorFlow's C++ parser applies them: a scalar field given twice keeps the
last value; a message field given twice is merged, which is the same as parsing the
concatenation of its occurrences (so ``shape`` twice concatenates the dims); repeated numbers
may come packed or one by one. Facts: tensorflow/core/framework/{types,tensor_shape,
tensor_slice,tensor}.proto, core/util/saved_tensor_slice.proto, core/lib/strings/ordered_code.cc.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from classzoo.formats.errors import FormatError
from classzoo.formats.wire import (
    FIXED32,
    FIXED64,
    LENGTH,
    VARINT,
    WireError,
    iter_fields,
    read_packed_varints,
    to_signed64,
)

# core/framework/types.proto DataType -> (name, on-disk little-endian numpy dtype)
DTYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "<f4"),
    2: ("float64", "<f8"),
    3: ("int32", "<i4"),
    4: ("uint8", "u1"),
    5: ("int16", "<i2"),
    6: ("int8", "i1"),
    8: ("complex64", "<c8"),
    9: ("int64", "<i8"),
    10: ("bool", "?"),
    14: ("bfloat16", "<u2"),  # raw bits; read() upcasts to float32
    17: ("uint16", "<u2"),
    18: ("complex128", "<c16"),
    19: ("float16", "<f2"),
    22: ("uint32", "<u4"),
    23: ("uint64", "<u8"),
}
UNREADABLE = {7: "string", 20: "resource", 21: "variant"}
DT_BFLOAT16 = 14
MAX_RANK = 254  # core/framework/tensor_shape.h TensorShape::MaxDimensions()

Slice = tuple[tuple[int, int], ...]  # per dimension (start, length); length -1 = whole dim


@dataclass
class Var:
    """What a variable is and where its bytes are (format-specific ``where``)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    slices: list[Slice] = field(default_factory=list)  # empty: stored whole (V2 only)
    where: list = field(default_factory=list)

    @property
    def count(self) -> int:
        return math.prod(self.shape)  # Python ints: never wraps


def fields(buf, what: str, path: str) -> list[tuple[int, int, object]]:
    """Every field of a message; malformed bytes become a FormatError naming ``what``."""
    try:
        return list(iter_fields(buf))
    except WireError as exc:
        raise FormatError(path, None, f"malformed {what} ({exc})") from None


def message(parsed: list[tuple[int, int, object]], num: int) -> bytes | None:
    """Field ``num`` as one message: its occurrences concatenated (protobuf's merge)."""
    parts = [bytes(v) for n, wt, v in parsed if n == num and wt == LENGTH]
    return b"".join(parts) if parts else None


def parse_shape(buf, what: str, path: str) -> tuple[int, ...]:
    """TensorShapeProto: ``repeated Dim dim = 2 {int64 size = 1}``, ``bool unknown_rank = 3``."""
    dims = []
    unknown = False
    for num, wt, val in fields(buf, what, path):
        if num == 2 and wt == LENGTH:
            size = 0
            for n2, w2, v2 in fields(val, what, path):
                if n2 == 1 and w2 == VARINT:
                    size = to_signed64(v2)
            if size < 0:
                raise FormatError(path, None, f"{what} has an unknown dimension ({size})")
            dims.append(size)
        elif num == 3 and wt == VARINT:
            unknown = bool(val)
    if unknown:
        raise FormatError(path, None, f"{what} has an unknown rank")
    if len(dims) > MAX_RANK:
        raise FormatError(path, None, f"{what} has rank {len(dims)} (TF allows {MAX_RANK})")
    return tuple(dims)


def parse_slice(buf, what: str, path: str) -> Slice:
    """TensorSliceProto: ``repeated Extent extent = 1 {int64 start = 1; oneof {int64 length
    = 2}}``; an extent without a length is the whole dimension (tensor_slice.cc)."""
    extents = []
    for num, wt, val in fields(buf, what, path):
        if num == 1 and wt == LENGTH:
            start, length = 0, -1
            for n2, w2, v2 in fields(val, what, path):
                if n2 == 1 and w2 == VARINT:
                    start = to_signed64(v2)
                elif n2 == 2 and w2 == VARINT:
                    length = to_signed64(v2)
                    if length < 0:
                        raise FormatError(path, None, f"{what} has a slice length {length}")
            extents.append((start, length))
    if len(extents) > MAX_RANK:
        raise FormatError(path, None, f"{what} has a slice of rank {len(extents)}")
    return tuple(extents)


def resolve_slice(sl: Slice, var: Var, path: str) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """NumPy index and shape of slice ``sl`` of ``var``, checked against its shape."""
    if len(sl) != len(var.shape):
        raise FormatError(
            path, None, f"a slice of {var.name!r} has rank {len(sl)}, not {len(var.shape)}"
        )
    index, sub = [], []
    for (start, length), dim in zip(sl, var.shape):
        stop = dim if length < 0 else start + length
        if not 0 <= start <= stop <= dim:
            raise FormatError(
                path, None, f"slice [{start}:{stop}] of {var.name!r} is outside its {dim}"
            )
        index.append(slice(start, stop))
        sub.append(stop - start)
    return tuple(index), tuple(sub)


# ---- OrderedCode keys (core/lib/strings/ordered_code.cc) ------------------------------------


def _ordered_num(n: int) -> bytes:
    """OrderedCode::WriteNumIncreasing: a length byte, then big-endian bytes."""
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([len(b)]) + b


def _ordered_string(s: bytes) -> bytes:
    """OrderedCode::WriteString: 0x00 -> 00 ff, 0xff -> ff 00, terminated by 00 01."""
    return (
        re.sub(rb"[\x00\xff]", lambda m: m.group() + bytes([m.group()[0] ^ 0xFF]), s) + b"\x00\x01"
    )


# OrderedCode kLengthToHeaderBits: header bits XORed into the first two bytes of a signed number
_SIGNED_HEADER = [(0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0),
                  (0xFE, 0), (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0)]  # fmt: skip


def _ordered_signed(v: int) -> bytes:
    """OrderedCode::WriteSignedNumIncreasing (int64 range)."""
    x = ~v if v < 0 else v
    if x < 64:
        return bytes([(0x80 ^ v) & 0xFF])
    length = (x.bit_length() + 7) // 7  # kBitsToLength: 7 payload bits per byte, 1 sign bit
    buf = bytearray((v & ((1 << 80) - 1)).to_bytes(10, "big")[10 - length :])
    buf[0] ^= _SIGNED_HEADER[length][0]
    buf[1] ^= _SIGNED_HEADER[length][1]
    return bytes(buf)


def slice_key(name: str, sl: Slice) -> bytes:
    """checkpoint::EncodeTensorNameSlice: the table key of one slice of a tensor."""
    parts = [_ordered_num(0), _ordered_string(name.encode()), _ordered_num(len(sl))]
    for start, length in sl:
        parts += [_ordered_signed(start), _ordered_signed(length)]
    return b"".join(parts)


# ---- TensorProto values (V1) ----------------------------------------------------------------

# TensorProto field holding each dtype in a V1 SavedSlice (core/util/saved_tensor_slice_util.h)
_VALUE_FIELD = {1: 5, 2: 6, 3: 7, 4: 7, 5: 7, 6: 7, 17: 7, 8: 9, 18: 12, 9: 10, 10: 11,
                19: 13, 14: 13, 22: 16, 23: 17}  # fmt: skip
_FIXED_FIELD = {5: "<f4", 9: "<f4", 6: "<f8", 12: "<f8"}  # float/complex fields; others: varints
_TENSOR_CONTENT = 4


def _collect(buf, want: int, fixed: str | None) -> tuple[list[np.ndarray], memoryview | None]:
    """The value pieces of field ``want`` (packed runs and single elements, in order) and the
    last ``tensor_content`` (a bytes scalar: the last one wins)."""
    pieces: list[np.ndarray] = []
    loose: list[int] = []
    content = None

    def flush() -> None:
        if loose:
            arr = np.array(loose, np.uint64)
            pieces.append(
                arr.astype("<u4" if fixed == "<f4" else "<u8").view(fixed) if fixed else arr
            )
            loose.clear()

    for num, wt, val in iter_fields(buf):
        if num == _TENSOR_CONTENT and wt == LENGTH:
            content = val if len(val) else None
        elif num == want and wt == LENGTH:  # packed
            flush()
            pieces.append(np.frombuffer(val, fixed) if fixed else read_packed_varints(val))
        elif num == want and wt in (FIXED32, FIXED64, VARINT):  # unpacked: one per tag
            loose.append(val)
    flush()
    return pieces, content


def tensor_proto_values(buf, dtype: int, count: int) -> np.ndarray:
    """The ``count`` values of a V1 TensorProto as a flat array of the on-disk dtype.

    Packed fields decode with one ``np.frombuffer`` (floats) or one vectorised varint pass;
    unpacked elements (legal protobuf, never written by TF) are gathered one by one.
    Integers narrower than 64 bits wrap like TF's C++ cast; half_val holds 16-bit patterns.
    Raises WireError on malformed bytes or a count that differs from ``count``.
    """
    disk = np.dtype(DTYPES[dtype][1])
    fixed = _FIXED_FIELD.get(_VALUE_FIELD[dtype])
    try:
        pieces, content = _collect(buf, _VALUE_FIELD[dtype], fixed)
        if content is not None:
            flat = np.frombuffer(content, disk)
        else:
            if len(pieces) == 1:  # the usual case: one packed field, no copy here
                elems = pieces[0]
            else:
                elems = np.concatenate(pieces) if pieces else np.zeros(0, fixed or np.uint64)
            if fixed:
                flat = elems.view(disk)  # float32/float64 as is; complex from (re, im) pairs
            elif disk == np.bool_:
                flat = elems != 0
            else:
                flat = elems.astype(f"<u{disk.itemsize}").view(disk)
    except ValueError as exc:  # a byte count that is not a multiple of the item size
        raise WireError(str(exc)) from None
    if flat.size != count:
        raise WireError(f"holds {flat.size} values, its slice needs {count}")
    return flat


def to_native(raw: np.ndarray, dtype: int) -> np.ndarray:
    """On-disk values -> the dtype read() returns (native byte order; bfloat16 -> float32)."""
    if dtype == DT_BFLOAT16:  # bfloat16 is the top half of a float32: exact upcast
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if not raw.dtype.isnative:
        return raw.astype(raw.dtype.newbyteorder("="))
    return raw


def out_dtype(dtype: int) -> np.dtype:
    if dtype == DT_BFLOAT16:
        return np.dtype(np.float32)
    return np.dtype(DTYPES[dtype][1]).newbyteorder("=")
