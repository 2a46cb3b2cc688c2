"""``tf.train.Example`` without TensorFlow or generated protobuf classes.

Wire layout (tensorflow/core/example/example.proto, feature.proto; proto3):

* ``Example { Features features = 1; }``, ``Features { map<string, Feature> feature = 1; }``:
  each map entry is a submessage ``{string key = 1; Feature value = 2}``, in any order.
* ``Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }``
* ``BytesList { repeated bytes value = 1; }``; ``FloatList { repeated float value = 1 [packed]; }``;
  ``Int64List { repeated int64 value = 1 [packed]; }``. Parsers must accept unpacked elements too
  (float tag 0x0D, int64 tag 0x08); negative int64 values are 10-byte varints.

Parsed values: ``list[bytes]`` for bytes lists, ``float32`` / ``int64`` numpy arrays otherwise.
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
    read_varint,
    to_signed64,
)

FeatureValue = list | np.ndarray  # list[bytes] or a float32 / int64 array

_BYTES, _FLOAT, _INT64 = 1, 2, 3  # Feature oneof field numbers
_KINDS = {_BYTES: "bytes_list", _FLOAT: "float_list", _INT64: "int64_list"}


def _varint(view, pos: int) -> tuple[int, int]:
    """read_varint with a fast path for the 1-byte case (tags, short lengths)."""
    b = view[pos]
    if b < 0x80:
        return b, pos + 1
    return read_varint(view, pos)


def _skip(view, pos: int, tag: int, end: int) -> int:
    """Position after the value of an unknown field (protobuf: unknown fields are ignored)."""
    wtype = tag & 7
    if wtype == VARINT:
        return read_varint(view, pos)[1]
    if wtype == LENGTH:
        n, pos = _varint(view, pos)
        pos += n
    elif wtype == FIXED32:
        pos += 4
    elif wtype == FIXED64:
        pos += 8
    else:
        raise WireError(f"unsupported wire type {wtype}")
    if pos > end:
        raise WireError("field runs past the end of its message")
    return pos


def _span(view, pos: int, end: int) -> tuple[int, int]:
    """(start, stop) of a length-delimited value whose length varint is at ``pos``."""
    n, pos = _varint(view, pos)
    if pos + n > end:
        raise WireError("length-delimited field runs past the end of its message")
    return pos, pos + n


def _parse_list(view, kind: int, pos: int, end: int, into: list) -> None:
    """Append the values of one BytesList / FloatList / Int64List message to ``into``."""
    while pos < end:
        tag, pos = _varint(view, pos)
        if tag == 0x0A:  # field 1, length-delimited: a bytes value or a packed run
            a, pos = _span(view, pos, end)
            if kind == _BYTES:
                into.append(bytes(view[a:pos]))
            elif kind == _FLOAT:
                if (pos - a) % 4:
                    raise WireError("packed float list length is not a multiple of 4")
                into.append(np.frombuffer(view[a:pos], dtype="<f4"))
            else:
                while a < pos:
                    v, a = read_varint(view, a)
                    into.append(to_signed64(v))
                if a != pos:
                    raise WireError("packed int64 list overruns its length")
        elif tag == 0x0D and kind == _FLOAT:  # unpacked float
            if pos + 4 > end:
                raise WireError("truncated float")
            into.append(np.frombuffer(view[pos : pos + 4], dtype="<f4"))
            pos += 4
        elif tag == 0x08 and kind == _INT64:  # unpacked int64
            v, pos = read_varint(view, pos)
            into.append(to_signed64(v))
        else:
            pos = _skip(view, pos, tag, end)


def parse_feature(view, pos: int = 0, end: int | None = None) -> FeatureValue:
    """Decode one ``Feature`` message. An empty Feature (no kind set) gives ``[]``."""
    view = memoryview(view)
    end = len(view) if end is None else end
    kind, parts = 0, []
    while pos < end:
        tag, pos = _varint(view, pos)
        field = tag >> 3
        if field in _KINDS and tag & 7 == LENGTH:
            a, pos = _span(view, pos, end)
            if field != kind:  # oneof: a later member replaces an earlier one
                kind, parts = field, []
            _parse_list(view, kind, a, pos, parts)
        else:
            pos = _skip(view, pos, tag, end)
    if kind == _FLOAT:
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if kind == _INT64:
        return np.array(parts, dtype=np.int64)
    return parts


def _parse_features(view, pos: int, end: int, wanted, out: dict) -> None:
    while pos < end:
        tag, pos = _varint(view, pos)
        if tag != 0x0A:
            pos = _skip(view, pos, tag, end)
            continue
        a, pos = _span(view, pos, end)  # one map entry
        key = value = None
        while a < pos:
            etag, a = _varint(view, a)
            if etag == 0x0A:
                ka, a = _span(view, a, pos)
                key = bytes(view[ka:a])
            elif etag == 0x12:
                value = _span(view, a, pos)
                a = value[1]
            else:
                a = _skip(view, a, etag, pos)
        if key is None:
            key = b""  # proto3 default for a missing key
        if wanted is not None and key not in wanted:
            continue
        name = key.decode("utf-8", "replace")
        out[name] = parse_feature(view, *value) if value else []  # last duplicate wins


def parse_example(
    buf: bytes | bytearray | memoryview, keys: Collection[str] | None = None
) -> dict[str, FeatureValue]:
    """Decode a serialized ``tf.train.Example``; with ``keys``, decode only those features.

    Unwanted features are skipped by their length without decoding (the hot path needs only
    ``image/encoded`` and ``image/class/label``). Raises ``WireError`` on malformed bytes.
    """
    view = memoryview(buf).cast("B") if not isinstance(buf, bytes) else memoryview(buf)
    wanted = None if keys is None else {k.encode("utf-8") for k in keys}
    out: dict[str, FeatureValue] = {}
    pos, end = 0, len(view)
    try:
        while pos < end:
            tag, pos = _varint(view, pos)
            if tag == 0x0A:  # Example.features; repeated occurrences merge (protobuf rule)
                a, pos = _span(view, pos, end)
                _parse_features(view, a, pos, wanted, out)
            else:
                pos = _skip(view, pos, tag, end)
    except IndexError:
        raise WireError("message ends inside a field") from None
    return out


def parse_example_sparse(
    read: Callable[[int, int], bytes], size: int, keys: Collection[str], chunk: int = 4096
) -> dict[str, FeatureValue]:
    """Like :func:`parse_example` for a record that is not in memory: reads only what it needs.

    ``read(pos, n)`` returns bytes ``pos .. pos+n`` of the serialized Example of ``size`` bytes.
    Map entries are walked by their headers and unwanted ones (the ~110 KB JPEG) are jumped over,
    so reading the labels of ImageNet costs a few KB per record instead of 140 GB.
    """
    wanted = {k.encode("utf-8") for k in keys}
    win, win_at = b"", 0

    def get(pos: int, n: int) -> memoryview:
        nonlocal win, win_at
        if not (win_at <= pos and pos + n <= win_at + len(win)):
            win, win_at = read(pos, min(max(n, chunk), size - pos)), pos
            if len(win) < n:
                raise WireError("message ends inside a field")
        return memoryview(win)[pos - win_at : pos - win_at + n]

    def header(pos: int, end: int) -> tuple[int, int, int]:
        """(tag, start of value, end of value) of the length-delimited field at ``pos``."""
        head = get(pos, min(20, end - pos))
        tag, p = _varint(head, 0)
        if tag & 7 != LENGTH:
            raise WireError("unexpected field")
        n, p = _varint(head, p)
        return tag, pos + p, pos + p + n

    out: dict[str, FeatureValue] = {}
    try:
        tag, pos, end = header(0, size)
        if tag != 0x0A or end != size:  # unusual layout: decode the whole message
            return parse_example(read(0, size), keys)
        while pos < end:
            tag, a, stop = header(pos, end)
            if tag != 0x0A or stop > end:
                return parse_example(read(0, size), keys)
            ktag, ka, kstop = header(a, stop)
            # key first (every writer does this): look at the key, jump over unwanted entries
            if ktag != 0x0A or bytes(get(ka, kstop - ka)) in wanted:
                _parse_entry_into(get(a, stop - a), wanted, out)
            pos = stop
    except (IndexError, WireError):
        return parse_example(read(0, size), keys)
    return out


def _parse_entry_into(entry: memoryview, wanted, out: dict) -> None:
    """Decode one map entry (its content bytes) into ``out`` if its key is wanted."""
    buf = memoryview(b"\x0a" + encode_varint(len(entry)) + bytes(entry))
    _parse_features(buf, 0, len(buf), wanted, out)


# ---- building -------------------------------------------------------------------------------


def _feature_bytes(name: str, value) -> bytes:
    """Serialized ``Feature`` for a Python / numpy value; the list kind is inferred from types."""
    if isinstance(value, (bytes, bytearray, memoryview, str, int, float, np.generic)):
        value = [value]
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None:
        value = list(value)
        if not value:
            raise ValueError(
                f"feature {name!r}: empty list has no type; pass np.zeros(0, np.int64 / np.float32)"
            )
        first = value[0]
        if isinstance(first, (bytes, bytearray, memoryview, str)):
            kind = _BYTES
        elif isinstance(first, (bool, int, np.integer)):
            kind = _INT64
        elif isinstance(first, (float, np.floating)):
            kind = _FLOAT
        else:
            raise ValueError(f"feature {name!r}: cannot store {type(first).__name__}")
    else:
        kind = {"f": _FLOAT, "i": _INT64, "u": _INT64, "b": _INT64}.get(arr.dtype.kind, _BYTES)
        value = arr.ravel()
    if kind == _BYTES:
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value]
        payload = b"".join(length_delimited(1, v) for v in items)
    elif kind == _FLOAT:
        packed = np.asarray(value, dtype="<f4").tobytes()
        payload = length_delimited(1, packed) if packed else b""
    else:
        packed = b"".join(encode_varint(int(v)) for v in value)
        payload = length_delimited(1, packed) if packed else b""
    return length_delimited(kind, payload)


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
