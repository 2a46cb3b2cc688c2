"""Read TensorFlow checkpoints (V2 tensor bundles and V1 TensorSlice files) without TensorFlow.

* V2 (TF >= 0.12 default): ``prefix.index`` is an SSTable of ``name -> BundleEntryProto``
  (dtype, shape, shard, offset, size, masked crc32c); the tensors are raw little-endian bytes
  in ``prefix.data-0000i-of-0000N`` (core/util/tensor_bundle/tensor_bundle.cc).
* V1 (the public 2016 slim tarballs): one SSTable; key ``""`` holds the SavedTensorSliceMeta
  (names, dtypes, shapes, slices), every other key is ``EncodeTensorNameSlice(name, slice)``
  holding a SavedSlice whose TensorProto carries the values in the typed repeated fields
  (``float_val`` ...), not ``tensor_content`` (core/util/tensor_slice_writer.h).

Partitioned variables are stored as slices in both formats and are assembled here into the
full tensor. bfloat16 has no NumPy dtype: it is returned upcast to float32 (exact).
Facts: shared/reference/tf_slim_compat.md section 4.
"""

from __future__ import annotations

import codecs
import difflib
import glob
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from classzoo.convert.sstable import SSTable, has_table_magic
from classzoo.errors import UserError
from classzoo.formats.crc import masked_crc32c
from classzoo.formats.wire import FIXED32, FIXED64, LENGTH, VARINT, WireError, iter_fields

# core/framework/types.proto DataType -> (name, on-disk little-endian numpy dtype)
_DTYPES: dict[int, tuple[str, str]] = {
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
_UNREADABLE = {7: "string", 20: "resource", 21: "variant"}
DT_BFLOAT16 = 14
# tensorflow/python/training/saving/trackable_utils.py OBJECT_GRAPH_PROTO_KEY
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
_V1_SHARD_SUFFIX = re.compile(r"-\d{5}-of-(\d{5})$")  # V1 sharded saves: prefix-00000-of-00002

Slice = tuple[tuple[int, int], ...]  # per dimension (start, length); length -1 = whole dim


@dataclass
class _Var:
    """What a variable is and where its bytes are (format-specific ``where``)."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    slices: list[Slice] = field(default_factory=list)  # empty: stored whole (V2 only)
    where: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Small decoders: protos, OrderedCode keys, TensorProto value fields


def _fields(buf: memoryview, what: str, path: str) -> list[tuple[int, int, object]]:
    try:
        return list(iter_fields(buf))
    except WireError as exc:
        raise UserError(f"{path}: malformed {what} ({exc})") from None


def _shape(buf: memoryview, what: str, path: str) -> tuple[int, ...]:
    """TensorShapeProto: ``repeated Dim dim = 2 {int64 size = 1}``, ``unknown_rank = 3``."""
    dims = []
    for num, wt, val in _fields(buf, what, path):
        if num == 2 and wt == LENGTH:
            size = 0
            for n2, w2, v2 in _fields(val, what, path):
                if n2 == 1 and w2 == VARINT:
                    size = v2 if v2 < 1 << 63 else v2 - (1 << 64)
            if size < 0:
                raise UserError(f"{path}: {what} has an unknown dimension")
            dims.append(size)
        elif num == 3 and wt == VARINT and val:
            raise UserError(f"{path}: {what} has an unknown rank")
    return tuple(dims)


def _slice(buf: memoryview, what: str, path: str) -> Slice:
    """TensorSliceProto: ``repeated Extent extent = 1 {int64 start = 1; int64 length = 2}``."""
    extents = []
    for num, wt, val in _fields(buf, what, path):
        if num == 1 and wt == LENGTH:
            start, length = 0, -1  # no length: the whole dimension (tensor_slice.cc)
            for n2, w2, v2 in _fields(val, what, path):
                if n2 == 1 and w2 == VARINT:
                    start = v2
                elif n2 == 2 and w2 == VARINT:
                    length = v2
            extents.append((start, length))
    return tuple(extents)


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
    """OrderedCode::WriteSignedNumIncreasing (core/lib/strings/ordered_code.cc)."""
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


def _varints(buf: memoryview) -> np.ndarray:
    """Decode a run of packed varints at NumPy speed (uint64, wrapping like protobuf)."""
    b = np.frombuffer(buf, np.uint8)
    if b.size == 0:
        return np.zeros(0, np.uint64)
    if b[-1] & 0x80:
        raise WireError("truncated packed varints")
    ends = np.flatnonzero(b < 0x80)
    if ends.size == b.size:  # every value < 128
        return b.astype(np.uint64)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise WireError("varint longer than 10 bytes")
    shift = (np.arange(b.size) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
    return np.bitwise_or.reduceat((b & 0x7F).astype(np.uint64) << shift, starts)


# TensorProto field holding each dtype in a V1 SavedSlice (core/util/saved_tensor_slice_util.h)
_VALUE_FIELD = {1: 5, 2: 6, 3: 7, 4: 7, 5: 7, 6: 7, 17: 7, 8: 9, 18: 12, 9: 10, 10: 11,
                19: 13, 14: 13, 22: 16, 23: 17}  # fmt: skip
_FIXED_FIELD = {5: "<f4", 9: "<f4", 6: "<f8", 12: "<f8"}  # float/complex fields; others: varints
_TENSOR_CONTENT = 4


def _tensor_proto_values(buf: memoryview, dtype: int, count: int) -> np.ndarray:
    """The ``count`` values of a V1 TensorProto as a flat array of the on-disk dtype.

    Packed fields decode with one ``np.frombuffer`` (floats) or one vectorised varint pass;
    unpacked elements (legal protobuf, never written by TF) fall back to a Python loop.
    Integers narrower than 64 bits wrap like TF's C++ cast; half_val holds 16-bit patterns.
    """
    disk = np.dtype(_DTYPES[dtype][1])
    want = _VALUE_FIELD[dtype]
    fixed = _FIXED_FIELD.get(want)
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

    try:
        for num, wt, val in iter_fields(buf):
            if num == _TENSOR_CONTENT and wt == LENGTH and len(val):
                content = val
            elif num == want and wt == LENGTH:  # packed
                flush()
                pieces.append(np.frombuffer(val, fixed) if fixed else _varints(val))
            elif num == want and wt in (FIXED32, FIXED64, VARINT):  # unpacked: one per tag
                loose.append(val)
        flush()
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


def _to_native(raw: np.ndarray, dtype: int) -> np.ndarray:
    """On-disk values -> the dtype read() returns (native byte order; bfloat16 -> float32)."""
    if dtype == DT_BFLOAT16:  # bfloat16 is the top half of a float32: exact upcast
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if not raw.dtype.isnative:
        return raw.astype(raw.dtype.newbyteorder("="))
    return raw


def _out_dtype(dtype: int) -> np.dtype:
    if dtype == DT_BFLOAT16:
        return np.dtype(np.float32)
    return np.dtype(_DTYPES[dtype][1]).newbyteorder("=")


# ---------------------------------------------------------------------------------------------
# The checkpoint object


class TFCheckpoint(ABC):
    """A TensorFlow checkpoint opened for reading: ``.format`` is ``"V1"`` or ``"V2"``.

    Use :func:`open_tf_checkpoint`; the object is a context manager.
    """

    format = ""

    def __init__(self, path: str, vars_: dict[str, _Var]):
        self.path = path
        self._vars = vars_

    # -- listing ---------------------------------------------------------------------------
    def _listed(self) -> list[str]:
        return sorted(
            n for n, v in self._vars.items() if v.dtype in _DTYPES and n != OBJECT_GRAPH_KEY
        )

    def variables(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """``name -> (dtype read() returns, shape)``, sorted by name.

        String/resource tensors and the object graph of ``tf.train.Checkpoint`` are left out;
        ``global_step`` is listed.
        """
        return {n: (_out_dtype(self._vars[n].dtype), self._vars[n].shape) for n in self._listed()}

    def tf_dtype(self, name: str) -> str:
        """TensorFlow's name of the stored dtype (``"bfloat16"`` where read() gives float32)."""
        dt = self._var(name).dtype
        return _DTYPES[dt][0] if dt in _DTYPES else _UNREADABLE.get(dt, f"DataType {dt}")

    def __contains__(self, name: object) -> bool:
        var = self._vars.get(name)  # type: ignore[arg-type]
        return var is not None and var.dtype in _DTYPES and name != OBJECT_GRAPH_KEY

    def _var(self, name: str) -> _Var:
        var = self._vars.get(name)
        if var is None:
            close = difflib.get_close_matches(name, self._listed(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UserError(
                f"{self.path}: no variable {name!r} in this {self.format} checkpoint "
                f"({len(self._listed())} variables){hint}"
            )
        if var.dtype not in _DTYPES:
            kind = _UNREADABLE.get(var.dtype, f"DataType {var.dtype}")
            raise UserError(f"{self.path}: variable {name!r} is a {kind} tensor, not numeric")
        return var

    # -- reading -----------------------------------------------------------------------------
    def read(self, name: str) -> np.ndarray:
        """The full tensor ``name`` with its exact dtype and shape (slices assembled)."""
        var = self._var(name)
        count = int(np.prod(var.shape, dtype=np.int64))
        if not var.slices:
            return _to_native(self._read_piece(var, 0, count), var.dtype).reshape(var.shape)
        pieces = []
        for i, sl in enumerate(var.slices):
            index, sub = _resolve_slice(sl, var, self.path)
            raw = self._read_piece(var, i, int(np.prod(sub, dtype=np.int64)))
            pieces.append((index, sub, raw))
        if len(pieces) == 1 and all(s == d for s, d in zip(pieces[0][1], var.shape)):
            return _to_native(pieces[0][2], var.dtype).reshape(var.shape)
        out = np.empty(var.shape, _out_dtype(var.dtype))
        covered = np.zeros(var.shape, bool)
        for index, sub, raw in pieces:
            out[index] = _to_native(raw, var.dtype).reshape(sub)
            covered[index] = True
        if not covered.all():
            raise UserError(
                f"{self.path}: the {len(pieces)} saved slices of {name!r} cover only "
                f"{int(covered.sum())} of its {count} elements"
            )
        return out

    def _read_order(self, names: list[str]) -> list[str]:
        return names

    def read_all(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Read many variables (default: all of :meth:`variables`) in on-disk order."""
        wanted = self._listed() if names is None else list(names)
        for n in wanted:
            self._var(n)  # fail on a bad name before reading anything
        got = {n: self.read(n) for n in self._read_order(wanted)}
        return {n: got[n] for n in wanted}

    @abstractmethod
    def _read_piece(self, var: _Var, i: int, count: int) -> np.ndarray:
        """Piece ``i`` (a slice, or the whole tensor) of ``var``, flat, ``count`` values."""

    @abstractmethod
    def close(self) -> None:
        """Release the checkpoint's files."""

    def __enter__(self) -> TFCheckpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TFCheckpoint {self.format} {self.path!r}: {len(self._listed())} variables>"


def _resolve_slice(sl: Slice, var: _Var, path: str) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    if len(sl) != len(var.shape):
        raise UserError(f"{path}: a slice of {var.name!r} has rank {len(sl)}, not {len(var.shape)}")
    index, sub = [], []
    for (start, length), dim in zip(sl, var.shape):
        stop = dim if length < 0 else start + length
        if not 0 <= start <= stop <= dim:
            raise UserError(f"{path}: slice [{start}:{stop}] of {var.name!r} is outside {dim}")
        index.append(slice(start, stop))
        sub.append(stop - start)
    return tuple(index), tuple(sub)


class _BundleCheckpoint(TFCheckpoint):
    """V2: ``prefix.index`` + ``prefix.data-*`` (core/util/tensor_bundle/tensor_bundle.cc)."""

    format = "V2"

    def __init__(self, prefix: str):
        index_path = prefix + ".index"
        with SSTable(index_path) as table:
            entries = list(table.items())
        if not entries or entries[0][0] != b"":
            raise UserError(f"{index_path}: no bundle header (key '') - not a V2 checkpoint index")
        num_shards, big_endian = 1, False
        for num, wt, val in _fields(entries[0][1], "bundle header", index_path):
            if num == 1 and wt == VARINT:
                num_shards = val
            elif num == 2 and wt == VARINT:
                big_endian = val == 1  # Endianness LITTLE = 0, BIG = 1
        self._order = "<>"[big_endian]
        self.data_paths = [f"{prefix}.data-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
        for p in self.data_paths:
            if not os.path.isfile(p):
                raise UserError(f"{index_path}: its data file {p} is missing")
        raw: dict[bytes, dict] = {}
        for key, value in entries[1:]:
            raw[key] = self._entry(value, key, index_path)
        vars_: dict[str, _Var] = {}
        for key, e in raw.items():
            if key.startswith(b"\x00"):  # a slice of a partitioned tensor, listed by its owner
                continue
            name = key.decode("utf-8", "replace")
            var = _Var(name, e["dtype"], e["shape"], e["slices"])
            for sl in var.slices:
                piece = raw.get(slice_key(name, sl))
                if piece is None:
                    raise UserError(f"{index_path}: slice {sl} of {name!r} has no index entry")
                var.where.append(piece)
            if not var.slices:
                var.where.append(e)
            vars_[name] = var
        super().__init__(prefix, vars_)
        self._files: dict[int, object] = {}

    def _entry(self, value: memoryview, key: bytes, path: str) -> dict:
        """BundleEntryProto: dtype=1 shape=2 shard_id=3 offset=4 size=5 crc32c=6 slices=7."""
        e = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "crc": 0, "slices": []}
        what = f"index entry {key!r}"
        for num, wt, val in _fields(value, what, path):
            if num == 1 and wt == VARINT:
                e["dtype"] = val
            elif num == 2 and wt == LENGTH:
                e["shape"] = _shape(val, what, path)
            elif num in (3, 4, 5) and wt == VARINT:
                e[{3: "shard", 4: "offset", 5: "size"}[num]] = val
            elif num == 6 and wt == FIXED32:
                e["crc"] = val
            elif num == 7 and wt == LENGTH:
                e["slices"].append(_slice(val, what, path))
        if e["shard"] >= len(self.data_paths):
            raise UserError(
                f"{path}: {what} points at shard {e['shard']} of {len(self.data_paths)}"
            )
        return e

    def _read_order(self, names: list[str]) -> list[str]:
        def pos(n: str) -> tuple[int, int]:
            e = self._vars[n].where[0]
            return e["shard"], e["offset"]

        return sorted(names, key=pos)

    def _read_piece(self, var: _Var, i: int, count: int) -> np.ndarray:
        e = var.where[i]
        disk = np.dtype(_DTYPES[var.dtype][1]).newbyteorder(self._order)
        data_path = self.data_paths[e["shard"]]
        if e["size"] != count * disk.itemsize or e["dtype"] != var.dtype:
            raise UserError(
                f"{self.path}.index: entry of {var.name!r} says {e['size']} bytes, its dtype "
                f"and shape need {count * disk.itemsize}"
            )
        f = self._files.get(e["shard"])
        if f is None:
            f = self._files[e["shard"]] = open(data_path, "rb")  # noqa: SIM115 - closed by close()
        buf = bytearray(e["size"])
        f.seek(e["offset"])
        got = f.readinto(buf)
        if got != e["size"]:
            size = os.fstat(f.fileno()).st_size
            raise UserError(
                f"{data_path}: {var.name!r} needs bytes [{e['offset']}, {e['offset'] + e['size']}) "
                f"but the file has {size} bytes (truncated)"
            )
        if masked_crc32c(buf) != e["crc"]:
            raise UserError(
                f"{data_path}: CRC mismatch in {var.name!r} at bytes "
                f"[{e['offset']}, {e['offset'] + e['size']}) (corrupt file)"
            )
        return np.frombuffer(buf, disk)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


class _SliceCheckpoint(TFCheckpoint):
    """V1: one SSTable per shard of SavedTensorSlices (core/util/tensor_slice_reader.cc)."""

    format = "V1"

    def __init__(self, path: str, files: list[str]):
        self._tables: list[SSTable] = []
        vars_: dict[str, _Var] = {}
        try:
            for f in files:
                table = SSTable(f)
                self._tables.append(table)
                for name, dtype, shape, slices in _v1_meta(table):
                    var = vars_.setdefault(name, _Var(name, dtype, shape))
                    if (var.dtype, var.shape) != (dtype, shape):
                        raise UserError(
                            f"{f}: {name!r} has another dtype or shape in another shard"
                        )
                    var.slices += slices
                    var.where += [table] * len(slices)
        except BaseException:
            self.close()
            raise
        super().__init__(path, vars_)

    def _read_order(self, names: list[str]) -> list[str]:
        return sorted(names, key=lambda n: n.encode())  # key order: each block read once

    def _read_piece(self, var: _Var, i: int, count: int) -> np.ndarray:
        table: SSTable = var.where[i]
        sl = var.slices[i]
        value = table.get(slice_key(var.name, sl))
        if value is None:
            raise UserError(f"{table.path}: no data record for slice {sl} of {var.name!r}")
        try:
            proto = None
            for num, wt, val in iter_fields(value):  # SavedTensorSlices.data = 2
                if num == 2 and wt == LENGTH:
                    for n2, w2, v2 in iter_fields(val):  # SavedSlice.data = 3
                        if n2 == 3 and w2 == LENGTH:
                            proto = v2
            if proto is None:
                raise WireError("no TensorProto")
            flat = _tensor_proto_values(proto, var.dtype, count)
        except WireError as exc:
            raise UserError(f"{table.path}: bad data record for {var.name!r} ({exc})") from None
        return flat.copy()  # never keep the block buffer alive through a view

    def close(self) -> None:
        for t in self._tables:
            t.close()


def _v1_meta(table: SSTable) -> list[tuple[str, int, tuple[int, ...], list[Slice]]]:
    """The ``""`` record: SavedTensorSlices.meta=1 -> SavedTensorSliceMeta.tensor=1 ->
    SavedSliceMeta {name=1, shape=2, type=3, slice=4}."""
    first = table.first()
    if first is None or first[0] != b"":
        raise UserError(f"{table.path}: no SavedTensorSlices meta record: not a V1 checkpoint")
    out = []
    meta = None
    for num, wt, val in _fields(first[1], "V1 meta record", table.path):
        if num == 1 and wt == LENGTH:
            meta = val
    if meta is None:
        raise UserError(f"{table.path}: the first record has no SavedTensorSliceMeta")
    for num, wt, val in _fields(meta, "V1 meta record", table.path):
        if num != 1 or wt != LENGTH:
            continue
        name, dtype, shape, slices = "", 0, (), []
        for n2, w2, v2 in _fields(val, "V1 tensor meta", table.path):
            if n2 == 1 and w2 == LENGTH:
                name = bytes(v2).decode("utf-8", "replace")
            elif n2 == 2 and w2 == LENGTH:
                shape = _shape(v2, f"shape of {name!r}", table.path)
            elif n2 == 3 and w2 == VARINT:
                dtype = v2
            elif n2 == 4 and w2 == LENGTH:
                slices.append(_slice(v2, f"slice of {name!r}", table.path))
        out.append((name, dtype, shape, slices))
    return out


# ---------------------------------------------------------------------------------------------
# Finding and opening checkpoints


def _is_v1_file(path: str) -> bool:
    """Content check: SSTable magic, and a first record ``""`` holding a SavedTensorSliceMeta."""
    if not has_table_magic(path):
        return False
    try:
        with SSTable(path) as table:
            first = table.first()
            if first is None or first[0] != b"":
                return False
            return any(num == 1 and wt == LENGTH for num, wt, _ in iter_fields(first[1]))
    except (UserError, WireError):
        return False


def _read_state_file(state: str) -> str:
    """``model_checkpoint_path`` from a ``checkpoint`` CheckpointState text proto."""
    with open(state, "rb") as f:
        text = f.read()
    m = re.search(rb'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
    if m is None:
        raise UserError(f"{state}: no model_checkpoint_path in this checkpoint state file")
    return codecs.escape_decode(m.group(1))[0].decode("utf-8", "surrogateescape")


def _exists(p: str) -> bool:
    return os.path.isfile(p + ".index") or os.path.isfile(p) or bool(_v1_shards(p))


def _v1_shards(p: str) -> list[str]:
    """Files of a sharded V1 save (``prefix-00000-of-00002`` ...), given the prefix, the
    ``prefix-?????-of-00002`` pattern TF writes in its state file, or any one shard."""
    m = _V1_SHARD_SUFFIX.search(p)
    if m:
        pattern = p[: m.start()] + "-?????-of-" + m.group(1)
    elif "?" in p or "*" in p:
        pattern = p
    else:
        pattern = p + "-?????-of-?????"
    head, tail = os.path.split(pattern)
    return sorted(glob.glob(os.path.join(glob.escape(head), tail)))


def _resolve_dir(d: str) -> str:
    state = os.path.join(d, "checkpoint")
    if os.path.isfile(state):
        p = _read_state_file(state)
        if not os.path.isabs(p):
            p = os.path.join(d, p)
        if not _exists(p):  # a moved folder: TF also falls back to the state file's folder
            p = os.path.join(d, os.path.basename(p))
        return p
    found = set()
    for entry in sorted(os.listdir(d)):
        full = os.path.join(d, entry)
        if entry.endswith(".index") and has_table_magic(full):
            found.add(full[: -len(".index")])
        elif not (_DATA_SUFFIX.search(entry) or entry.endswith((".meta", ".index"))) and (
            os.path.isfile(full) and _is_v1_file(full)
        ):
            found.add(_V1_SHARD_SUFFIX.sub(r"-?????-of-\1", full))
    if len(found) == 1:
        return found.pop()
    if not found:
        raise UserError(f"{d}: no TensorFlow checkpoint in this directory")
    names = ", ".join(os.path.basename(p) for p in sorted(found))
    raise UserError(f"{d}: {len(found)} checkpoints here ({names}); pass one of them")


def _resolve(path: str | os.PathLike[str]) -> tuple[str, str, list[str]]:
    """-> (format, display path / V2 prefix, V1 files)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        p = _resolve_dir(p)
    if p.endswith(".index") and os.path.isfile(p):
        return "V2", p[: -len(".index")], []
    m = _DATA_SUFFIX.search(p)
    if m:
        if not os.path.isfile(p[: m.start()] + ".index"):
            raise UserError(f"{p}: V2 data file without its index {p[: m.start()]}.index")
        return "V2", p[: m.start()], []
    if os.path.isfile(p + ".index"):
        return "V2", p, []
    if p.endswith(".meta") and _exists(p[: -len(".meta")]):
        return _resolve(p[: -len(".meta")])
    m = _V1_SHARD_SUFFIX.search(p) or re.search(r"-\?{5}-of-(\d{5})$", p)
    if m:  # one shard of a sharded V1 save, or TF's pattern for all of them
        shards = _v1_shards(p)
        if len(shards) != int(m.group(1)):
            raise UserError(
                f"{p}: sharded V1 checkpoint with {len(shards)} of {int(m.group(1))} files"
            )
        return "V1", p[: m.start()] + "-?????-of-" + m.group(1), shards
    if os.path.isfile(p):
        return "V1", p, [p]
    shards = _v1_shards(p)
    if shards:
        return "V1", p, shards
    raise UserError(
        f"{p}: no TensorFlow checkpoint here (no {os.path.basename(p)}.index, no V1 file)"
    )


def is_tf_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` names a TF checkpoint, judged by content, not by extension: a V2
    prefix (or its ``.index`` / ``.data-*`` file) whose index is an SSTable, a V1 file whose
    first record is a SavedTensorSliceMeta, or a directory holding exactly one of these (or a
    ``checkpoint`` state file)."""
    try:
        fmt, p, files = _resolve(path)
    except (UserError, OSError):
        return False
    if fmt == "V2":
        return has_table_magic(p + ".index")
    return all(_is_v1_file(f) for f in files)


def open_tf_checkpoint(path: str | os.PathLike[str]) -> TFCheckpoint:
    """Open a V2 prefix (or its ``.index`` / ``.data-*`` path), a V1 file (or sharded V1
    pattern), or a directory with a ``checkpoint`` state file or exactly one checkpoint."""
    fmt, p, files = _resolve(path)
    if fmt == "V2":
        return _BundleCheckpoint(p)
    return _SliceCheckpoint(p, files)


def format_variables(ckpt: TFCheckpoint) -> str:
    """A name / dtype / shape table sorted by name, with totals, for ``--list``."""
    rows = []
    total = 0
    for name, (_, shape) in ckpt.variables().items():
        count = int(np.prod(shape, dtype=np.int64))
        total += count
        rows.append((name, ckpt.tf_dtype(name), "[" + ", ".join(map(str, shape)) + "]"))
    w0 = max([len("name")] + [len(r[0]) for r in rows])
    w1 = max([len("dtype")] + [len(r[1]) for r in rows])
    lines = [f"{'name':<{w0}}  {'dtype':<{w1}}  shape"]
    lines += [f"{n:<{w0}}  {d:<{w1}}  {s}" for n, d, s in rows]
    lines.append(
        f"{len(rows)} variables, {total:,} parameters ({ckpt.format} checkpoint {ckpt.path})"
    )
    return "\n".join(lines)
