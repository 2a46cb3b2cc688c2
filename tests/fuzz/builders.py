"""Hand-made writers for the byte formats classzoo reads, following the documented layouts.

Used by the tests (tests/test_tf_checkpoint.py builds checkpoints by hand with them) and by the
fuzz targets, which mutate the entries of a table and write it back with valid CRCs so that
mutations reach the parsers behind the checksums. Layout facts: TF core/lib/io/
{block_builder.cc, format.cc, table_builder.cc}; snappy format_description.txt.
"""

from __future__ import annotations

import struct

from classzoo.formats.crc import crc32c, mask
from classzoo.formats.wire import encode_varint as varint

MAGIC = bytes.fromhex("57fb808b247547db")  # kTableMagicNumber 0xdb4775248b80fb57, LE words


def block(entries: list[tuple[bytes, bytes]], restart_interval: int = 16) -> bytes:
    """Block contents: prefix-compressed entries, restart array, restart count."""
    out = bytearray()
    restarts: list[int] = []
    prev = b""
    for i, (k, v) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(prev), len(k)) and prev[shared] == k[shared]:
                shared += 1
        out += varint(shared) + varint(len(k) - shared) + varint(len(v)) + k[shared:] + v
        prev = k
    restarts = restarts or [0]
    return (
        bytes(out) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))
    )


def on_disk(contents: bytes, kind: int = 0) -> bytes:
    """A block as stored: contents, type byte, masked CRC-32C of both."""
    trailer = bytes([kind])
    return contents + trailer + struct.pack("<I", mask(crc32c(contents + trailer)))


def snappy_literal(data: bytes) -> bytes:
    """``data`` as one raw Snappy stream of a single literal element."""
    n = len(data) - 1
    if n < 60:
        return varint(len(data)) + bytes([n << 2]) + data
    width = (n.bit_length() + 7) // 8
    return varint(len(data)) + bytes([(59 + width) << 2]) + n.to_bytes(width, "little") + data


def table(blocks: list[list[tuple[bytes, bytes]]], snappy: bool = False) -> bytes:
    """A whole SSTable file: data blocks, an empty metaindex, the index, the footer."""
    out = bytearray()
    index = []
    for entries in blocks:
        contents = block(entries)
        if snappy:
            contents = snappy_literal(contents)
        last = entries[-1][0] if entries else b""
        index.append((last, len(out), len(contents)))
        out += on_disk(contents, 1 if snappy else 0)
    meta_at, meta = len(out), block([])
    out += on_disk(meta)
    index_block = block([(k, varint(o) + varint(n)) for k, o, n in index], restart_interval=1)
    index_at = len(out)
    out += on_disk(index_block)
    handles = varint(meta_at) + varint(len(meta)) + varint(index_at) + varint(len(index_block))
    return bytes(out) + handles.ljust(40, b"\0") + MAGIC
