"""Raw Snappy decompression, bounded (github.com/google/snappy format_description.txt).

Some TF ~1.1 writers compressed SSTable blocks with Snappy (tensor_bundle.cc comment), so the
table reader must decode type-1 blocks or refuse them; the raw format is short enough to decode
here: a varint32 length, then literal and back-reference ("copy") elements.

Bounded by construction: the declared length is checked against the most any Snappy stream of
this size can expand to (a 3-byte copy element yields at most 64 bytes: < 22x) and against the
caller's ``max_size`` before anything is allocated, and decoding stops as soon as the output
would pass the declared length.
"""

from __future__ import annotations

from classzoo.formats.wire import WireError, read_varint

MAX_RATIO = 22  # 64 output bytes per 3-byte copy element (kind 2), the densest Snappy element


def snappy_decompress(data: bytes | bytearray | memoryview, max_size: int | None = None) -> bytes:
    """Decode one raw Snappy stream; raises ``WireError`` (with a byte offset) when malformed."""
    data = memoryview(data).cast("B")
    length, pos = read_varint(data, 0, max_bytes=5)  # varint32
    end = len(data)
    bound = MAX_RATIO * end
    if length > bound or (max_size is not None and length > max_size):
        limit = bound if max_size is None else min(bound, max_size)
        raise WireError(f"snappy header declares {length} bytes, at most {limit} possible", 0)
    out = bytearray()
    while pos < end:
        at = pos
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths >= 61 store (length - 1) in 1-4 extra LE bytes
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                if pos + extra > end:
                    raise WireError("snappy literal length runs past the end", at)
                n = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            n += 1
            if pos + n > end:
                raise WireError("snappy literal runs past the end", at)
            if len(out) + n > length:
                raise WireError(f"snappy data runs past its declared {length} bytes", at)
            out += data[pos : pos + n]
            pos += n
            continue
        if kind == 1:  # copy, 1-byte offset: length 4..11, offset has 11 bits
            if pos + 1 > end:
                raise WireError("truncated snappy copy", at)
            n = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:  # copy with a 2-byte (kind 2) or 4-byte (kind 3) LE offset, length 1..64
            width = 2 if kind == 2 else 4
            if pos + width > end:
                raise WireError("truncated snappy copy", at)
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise WireError(f"snappy copy offset {offset} outside the {len(out)} bytes decoded", at)
        if len(out) + n > length:
            raise WireError(f"snappy data runs past its declared {length} bytes", at)
        start = len(out) - offset
        if n <= offset:
            out += out[start : start + n]
        else:  # overlapping copy repeats the last `offset` bytes (run-length style)
            pattern = bytes(out[start:])
            out += (pattern * (n // offset + 1))[:n]
    if len(out) != length:
        raise WireError(f"snappy data decodes to {len(out)} bytes, header says {length}", end)
    return bytes(out)
