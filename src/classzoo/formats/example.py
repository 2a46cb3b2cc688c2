"""``tf.train.Example`` without TensorFlow or generated protobuf classes.

Wire layout (tensorflow/core/example/example.proto, feature.proto; proto3):

* ``Example { Features features = 1; }``, ``Features { map<string, Feature> feature = 1; }``:
  each map entry is a submessage ``{string key = 1; Feature value = 2}``.
* ``Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }``
* ``BytesList { repeated bytes value = 1; }``; ``FloatList { repeated float value = 1 [packed]; }``;
  ``Int64List { repeated int64 value = 1 [packed]; }``.

Parsed values: ``list[bytes]`` for bytes lists, ``float32`` / ``int64`` numpy arrays otherwise.

**TensorFlow's reading, not protobuf's.** Training pipelines read Examples with
``tf.io.parse_single_example``, whose fast parser (core/util/example_proto_fast_parsing.cc)
differs from protobuf's merge rules. The contract here: a value is returned only where
TensorFlow returns the same value; where TF refuses, this refuses; a few malformed layouts TF
tolerates are refused too (never a different value). Checked against TF 2.21 on crafted bytes
(tests/test_tfrecord_tf.py):

* a key listed twice: the last entry whose Feature is not empty wins (TF's dense features);
* a map entry must hold exactly one key and one value (either order), nothing else;
* a Feature holds exactly one list (TF reads the first and ignores the rest: refused here);
* a list is one packed run or unpacked elements only (TF reads only the first packed run);
* varints wrap modulo 2**64, 11-byte varints are refused (see classzoo.formats.wire);
* a Features tag not written as the single byte 0x0a (TF skips it as unknown) is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import numpy as np

from classzoo.formats.wire import (
    FIXED32,
    FIXED64,
    LENGTH,
    VARINT,
    WireError,
    encode_varint,
    length_delimited,
    read_packed_varints,
    read_varint,
    skip_field,
)

FeatureValue = list | np.ndarray  # list[bytes] or a float32 / int64 array

_BYTES, _FLOAT, _INT64 = 0x0A, 0x12, 0x1A  # Feature oneof tags (fields 1, 2, 3, length-delimited)
_KIND_NAMES = {_BYTES: "bytes_list", _FLOAT: "float_list", _INT64: "int64_list"}


class _Source:
    """The bytes of one serialized Example, in memory or read on demand through ``read``.

    On demand, a window of ``chunk`` bytes is kept, so walking the map entries of a record on
    disk reads a few KB and jumps over the ~110 KB JPEG of an unwanted ``image/encoded``.
    """

    def __init__(self, size: int, buf=None, read: Callable | None = None, chunk: int = 4096):
        self.size = size
        self._mv = memoryview(buf).cast("B") if buf is not None else None
        self._read, self._chunk = read, chunk
        self._win, self._at = memoryview(b""), 0

    def view(self, pos: int, n: int) -> memoryview:
        if n < 0 or pos + n > self.size:
            raise WireError("message ends inside a field", pos)
        if self._mv is not None:
            return self._mv[pos : pos + n]
        if not (self._at <= pos and pos + n <= self._at + len(self._win)):
            want = min(max(n, self._chunk), self.size - pos)
            self._win, self._at = memoryview(self._read(pos, want)), pos
            if len(self._win) < n:
                raise WireError("message ends inside a field (short read)", pos)
        return self._win[pos - self._at : pos - self._at + n]

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        head = self.view(pos, min(10, end - pos))
        value, used = read_varint(head, 0)
        return value, pos + used

    def span(self, pos: int, end: int) -> tuple[int, int]:
        """(start, stop) of the length-delimited value whose length varint is at ``pos``."""
        n, start = self.varint(pos, end)
        if n > end - start:
            raise WireError(f"length {n} runs past the end of its message", pos)
        return start, start + n

    def byte(self, pos: int) -> int:
        return self.view(pos, 1)[0]


def _skip(src: _Source, pos: int, end: int) -> int:
    """Position after the unknown field whose tag is at ``pos``."""
    tag, p = src.varint(pos, end)
    if tag >> 3 == 0:
        raise WireError("field number 0", pos)
    if tag & 7 == LENGTH:
        return src.span(p, end)[1]
    if tag & 7 in (VARINT, FIXED32, FIXED64):
        return skip_field(src.view(p, min(10, end - p)), 0, tag & 7, end - p) + p
    raise WireError(f"unsupported wire type {tag & 7}", pos)


def _entry(src: _Source, a: int, b: int) -> tuple[bytes, tuple[int, int]]:
    """(key, Feature span) of one map entry: exactly one key and one value, either order."""
    key = value = None
    pos = a
    while pos < b:
        tag = src.byte(pos)
        if tag == 0x0A and key is None:
            ka, pos = src.span(pos + 1, b)
            key = bytes(src.view(ka, pos - ka))
        elif tag == 0x12 and value is None:
            value = src.span(pos + 1, b)
            pos = value[1]
        else:
            raise WireError("map entry is not one key and one value", pos)
    if key is None or value is None:
        raise WireError("map entry without a key or a value", a)
    return key, value


def _entries(src: _Source) -> list[tuple[bytes, tuple[int, int]]]:
    """Every map entry of the Example, in order (repeated ``features`` fields concatenate)."""
    out = []
    pos, end = 0, src.size
    while pos < end:
        if src.byte(pos) == 0x0A:  # Example.features
            a, pos = src.span(pos + 1, end)
            while a < pos:
                if src.byte(a) != 0x0A:
                    raise WireError("Features holds a field that is not a map entry", a)
                ea, a = src.span(a + 1, pos)
                out.append(_entry(src, ea, a))
        elif src.varint(pos, end)[0] == 0x0A:
            raise WireError("Example.features with an over-long tag", pos)
        else:
            pos = _skip(src, pos, end)
    return out


def _parse_list(src: _Source, kind: int, a: int, b: int) -> FeatureValue:
    """The values of the one list inside a Feature whose kind byte is at ``a - 1``."""
    la, lb = src.span(a, b)
    if lb != b:
        raise WireError(f"{_KIND_NAMES[kind]} is followed by other fields", lb)
    data = src.view(la, lb - la)
    if kind == _BYTES:
        items, pos = [], 0
        while pos < len(data):
            if data[pos] != 0x0A:
                raise WireError("bytes_list holds a field that is not a value", la + pos)
            n, start = read_varint(data, pos + 1)
            if n > len(data) - start:
                raise WireError("bytes value runs past the end of its list", la + pos)
            items.append(bytes(data[start : start + n]))
            pos = start + n
        return items
    if not len(data):
        return np.zeros(0, np.float32 if kind == _FLOAT else np.int64)
    if data[0] == 0x0A:  # one packed run, alone (TF reads only the first one)
        n, start = read_varint(data, 1)
        if start + n != len(data):
            raise WireError("packed list is not one run filling its list", la)
        run = data[start:]
        if kind == _FLOAT:
            if n % 4:
                raise WireError(f"packed float list of {n} bytes", la)
            return np.frombuffer(run, "<f4").astype(np.float32)
        return read_packed_varints(run).view(np.int64)
    return _unpacked(data, kind, la)


def _unpacked(data: memoryview, kind: int, at: int) -> np.ndarray:
    """Unpacked elements (tag 0x0d + float32, or tag 0x08 + varint), nothing else."""
    values, pos = [], 0
    tag = 0x0D if kind == _FLOAT else 0x08
    while pos < len(data):
        if data[pos] != tag:
            raise WireError(f"{_KIND_NAMES[kind]} mixes packed and unpacked values", at + pos)
        if kind == _FLOAT:
            if pos + 5 > len(data):
                raise WireError("truncated float", at + pos)
            values.append(bytes(data[pos + 1 : pos + 5]))
            pos += 5
        else:
            v, pos = read_varint(data, pos + 1)
            values.append(v)
    if kind == _FLOAT:
        return np.frombuffer(b"".join(values), "<f4").astype(np.float32)
    return np.array(values, dtype=np.uint64).view(np.int64)


def _parse(src: _Source, keys: Collection[str] | None) -> dict[str, FeatureValue]:
    wanted = None if keys is None else {k.encode("utf-8") for k in keys}
    out: dict[str, FeatureValue] = {}
    for key, (a, b) in reversed(_entries(src)):  # the last entry of a key wins
        if wanted is not None and key not in wanted:
            continue  # TF never looks inside features it was not asked for
        if a == b:
            continue  # empty Feature: TF treats it as absent and keeps looking
        kind = src.byte(a)
        if kind not in _KIND_NAMES:  # TF checks the kind of every entry of a wanted key
            raise WireError(f"Feature of kind byte 0x{kind:02x}", a)
        name = key.decode("utf-8", "surrogateescape")
        if name not in out:
            out[name] = _parse_list(src, kind, a + 1, b)
    return out


def parse_example(
    buf: bytes | bytearray | memoryview, keys: Collection[str] | None = None
) -> dict[str, FeatureValue]:
    """Decode a serialized ``tf.train.Example``; with ``keys``, decode only those features.

    Raises ``WireError`` (with the byte offset) on bytes TensorFlow would not read the same.
    """
    src = _Source(len(memoryview(buf).cast("B")), buf=buf)
    try:
        return _parse(src, keys)
    except IndexError:  # defensive: every read is bounds-checked above
        raise WireError("message ends inside a field") from None


def parse_example_sparse(
    read: Callable[[int, int], bytes], size: int, keys: Collection[str], chunk: int = 4096
) -> dict[str, FeatureValue]:
    """:func:`parse_example` of a record that is not in memory: ``read(pos, n)`` returns its
    bytes ``pos .. pos+n``. Only entry headers and wanted values are read, so the labels of
    ImageNet cost a few KB per record instead of 140 GB."""
    return _parse(_Source(size, read=read, chunk=chunk), keys)


def feature_names(buf: bytes | bytearray | memoryview) -> list[str] | None:
    """The feature keys of an Example, sorted, or None if its map cannot be read
    (for error messages: never raises)."""
    try:
        src = _Source(len(memoryview(buf).cast("B")), buf=buf)
        return sorted({k.decode("utf-8", "replace") for k, _ in _entries(src)})
    except (WireError, IndexError, ValueError, TypeError):
        return None


# ---- building -------------------------------------------------------------------------------


def _kind_of(name: str, value) -> tuple[int, object]:
    """(Feature tag, flat values) of a Python / numpy value; the kind is inferred from types."""
    if isinstance(value, (bytes, bytearray, memoryview, str, int, float, np.generic)):
        value = [value]
    if isinstance(value, np.ndarray):
        kind = {"f": _FLOAT, "i": _INT64, "u": _INT64, "b": _INT64}.get(value.dtype.kind, _BYTES)
        return kind, value.ravel()
    value = list(value)
    if not value:
        raise ValueError(
            f"feature {name!r}: empty list has no type; pass np.zeros(0, np.int64 / np.float32)"
        )
    first = value[0]
    if isinstance(first, (bytes, bytearray, memoryview, str)):
        return _BYTES, value
    if isinstance(first, (bool, int, np.integer)):
        return _INT64, value
    if isinstance(first, (float, np.floating)):
        return _FLOAT, value
    raise ValueError(f"feature {name!r}: cannot store {type(first).__name__}")


def _feature_bytes(name: str, value) -> bytes:
    """Serialized ``Feature`` (packed numbers, as TF writes them)."""
    kind, value = _kind_of(name, value)
    if kind == _BYTES:
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value]
        payload = b"".join(length_delimited(1, v) for v in items)
    elif kind == _FLOAT:
        packed = np.asarray(value, dtype="<f4").tobytes()
        payload = length_delimited(1, packed) if packed else b""
    else:
        packed = b"".join(encode_varint(int(v)) for v in value)
        payload = length_delimited(1, packed) if packed else b""
    return bytes([kind]) + encode_varint(len(payload)) + payload


def build_example(features: Mapping[str, object]) -> bytes:
    """Serialize a ``tf.train.Example`` from ``{key: value}``.

    Values: ``bytes`` / ``str`` (or lists of them) -> bytes_list; ``int`` / integer arrays ->
    int64_list (packed); ``float`` / float arrays -> float_list (packed float32). Keys are written
    sorted, which is byte-identical to TF's ``SerializeToString(deterministic=True)``.
    """
    entries = []
    for name in sorted(features):
        entry = length_delimited(1, name.encode("utf-8")) + length_delimited(
            2, _feature_bytes(name, features[name])
        )
        entries.append(length_delimited(1, entry))
    return length_delimited(1, b"".join(entries))
