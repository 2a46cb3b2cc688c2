"""Read TensorFlow's SSTable ("table") files without TensorFlow.

Both checkpoint formats sit on this container: the V2 bundle's ``.index`` file and the whole
V1 TensorSlice checkpoint (tensorflow core/lib/io/{format.cc, block.cc, table.cc}; a LevelDB
descendant). Layout: data blocks, a metaindex block, an index block, then a 48-byte footer.
Every block on disk is ``contents | type:u8 | masked crc32c(contents + type):u32le``.

The reader keeps only the index in memory and reads one block at a time (``get`` caches the
last block, so reading keys in order reads each block once), so a 240 MB V1 checkpoint is
never loaded whole. Every corruption becomes a :class:`UserError` naming the file and the
byte offset.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Iterator

import crc32c as _crc32c

from classzoo.errors import UserError
from classzoo.formats.crc import unmask

# core/lib/io/format.h: Footer::kEncodedLength = 2 * BlockHandle::kMaxEncodedLength (20) + 8
FOOTER_SIZE = 48
# core/lib/io/format.h kTableMagicNumber = 0xdb4775248b80fb57, stored as two fixed32 LE
TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
# core/lib/io/format.h kBlockTrailerSize: 1 type byte + 4 CRC bytes
BLOCK_TRAILER_SIZE = 5
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1  # core/lib/io/table_options.h CompressionType


class _Corrupt(ValueError):
    """Malformed bytes inside a block; the caller adds the file and block offset."""


def _varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """Unsigned LEB128 at ``pos`` (varint32/varint64); raises _Corrupt past the end."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise _Corrupt("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt("varint longer than 10 bytes")


def snappy_decompress(data: bytes | bytearray | memoryview) -> bytes:
    """Decode raw Snappy (github.com/google/snappy format_description.txt).

    Some TF ~1.1 writers compressed table blocks with Snappy (tensor_bundle.cc comment), so a
    reader must either decode type-1 blocks or refuse them; the raw format is short enough to
    decode here: a varint length, then literal and back-reference ("copy") elements.
    """
    length, pos = _varint(data, 0)
    out = bytearray()
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths >= 61 store (length - 1) in 1-4 extra LE bytes
            n = tag >> 2
            if n >= 60:
                extra = n - 59
                if pos + extra > end:
                    raise _Corrupt("snappy literal length runs past the end")
                n = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            n += 1
            if pos + n > end:
                raise _Corrupt("snappy literal runs past the end")
            out += data[pos : pos + n]
            pos += n
            continue
        if kind == 1:  # copy, 1-byte offset: length 4..11, offset has 11 bits
            if pos + 1 > end:
                raise _Corrupt("truncated snappy copy")
            n = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:  # copy with a 2-byte (kind 2) or 4-byte (kind 3) LE offset, length 1..64
            width = 2 if kind == 2 else 4
            if pos + width > end:
                raise _Corrupt("truncated snappy copy")
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise _Corrupt(f"snappy copy offset {offset} outside the {len(out)} bytes decoded")
        start = len(out) - offset
        if n <= offset:
            out += out[start : start + n]
        else:  # overlapping copy repeats the last `offset` bytes (run-length style)
            pattern = bytes(out[start:])
            out += (pattern * (n // offset + 1))[:n]
    if len(out) != length:
        raise _Corrupt(f"snappy data decodes to {len(out)} bytes, header says {length}")
    return bytes(out)


class _Block:
    """One parsed block: its contents and ``key -> (value start, value end)``."""

    __slots__ = ("data", "keys", "spans")

    def __init__(self, data: bytes | bytearray, keys: list[bytes], spans: list[tuple[int, int]]):
        self.data = data
        self.keys = keys
        self.spans = spans


def _parse_entries(data: bytes | bytearray) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Entries of a block (core/lib/io/block_builder.cc).

    Each entry: ``varint32 shared | varint32 non_shared | varint32 value_len | key delta |
    value``, the key being ``previous_key[:shared] + delta``; the block ends with
    ``uint32 restarts[n] | uint32 n`` (LE), which a sequential reader only needs for the bound.
    """
    n = len(data)
    if n < 4:
        raise _Corrupt(f"block of {n} bytes is too short for its restart count")
    (num_restarts,) = struct.unpack_from("<I", data, n - 4)
    limit = n - 4 - 4 * num_restarts
    if limit < 0:
        raise _Corrupt(f"{num_restarts} restarts do not fit in a block of {n} bytes")
    keys: list[bytes] = []
    spans: list[tuple[int, int]] = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(data, pos)
        non_shared, pos = _varint(data, pos)
        value_len, pos = _varint(data, pos)
        if shared > len(key):
            raise _Corrupt(f"entry at {pos} shares {shared} bytes of a {len(key)}-byte key")
        value_start = pos + non_shared
        value_end = value_start + value_len
        if value_end > limit:
            raise _Corrupt(f"entry at {pos} runs past the restart array at {limit}")
        key = key[:shared] + bytes(data[pos:value_start])
        keys.append(key)
        spans.append((value_start, value_end))
        pos = value_end
    return keys, spans


class SSTable:
    """A TensorFlow table file opened for reading; keys are ``bytes``, values ``memoryview``.

    ``items()`` walks every entry in key order; ``get(key)`` finds one entry through the index
    block (each index key is a separator >= every key of its data block, table.cc).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise UserError(f"cannot open {self.path}: {exc.strerror}") from None
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self._cached: tuple[int, _Block] | None = None
            self._index_keys, self._handles = self._read_index()
        except BaseException:
            self._file.close()
            raise

    # -- context manager -----------------------------------------------------------------
    def close(self) -> None:
        self._cached = None
        self._file.close()

    def __enter__(self) -> SSTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------
    def _error(self, offset: int, what: str) -> UserError:
        return UserError(f"{self.path}: {what} at byte {offset} (corrupt or truncated table)")

    def _read_footer(self) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.size < FOOTER_SIZE:
            raise UserError(
                f"{self.path}: {self.size} bytes is shorter than the {FOOTER_SIZE}-byte SSTable "
                "footer (truncated file, or not a TensorFlow checkpoint)"
            )
        footer_at = self.size - FOOTER_SIZE
        footer = self._pread(footer_at, FOOTER_SIZE)
        if footer[-8:] != TABLE_MAGIC:
            raise UserError(
                f"{self.path}: no SSTable magic in the last 8 bytes (at byte {self.size - 8}): "
                "truncated file, or not a TensorFlow checkpoint"
            )
        try:
            meta_off, pos = _varint(footer, 0)
            meta_size, pos = _varint(footer, pos)
            index_off, pos = _varint(footer, pos)
            index_size, pos = _varint(footer, pos)
        except _Corrupt as exc:
            raise self._error(footer_at, f"bad footer ({exc})") from None
        if pos > FOOTER_SIZE - 8:
            raise self._error(footer_at, "footer block handles overrun the magic")
        return (meta_off, meta_size), (index_off, index_size)

    def _pread(self, offset: int, size: int) -> bytearray:
        buf = bytearray(size)
        self._file.seek(offset)
        got = self._file.readinto(buf)
        if got != size:
            raise UserError(
                f"{self.path}: expected {size} bytes at byte {offset}, file ends after {got} "
                f"(size {self.size}; truncated?)"
            )
        return buf

    def read_block(self, offset: int, size: int) -> bytes | bytearray:
        """Contents of the block at ``offset`` (``size`` excludes the 5-byte trailer).

        Checks the trailer CRC, ``mask(crc32c(contents + type byte))`` (format.cc ReadBlock),
        and decompresses Snappy blocks.
        """
        end = offset + size + BLOCK_TRAILER_SIZE
        if end > self.size - FOOTER_SIZE:
            raise UserError(
                f"{self.path}: block at byte {offset} ({size} bytes + trailer) runs past the end "
                f"of the data at byte {self.size - FOOTER_SIZE} (truncated or corrupt file)"
            )
        buf = self._pread(offset, size + BLOCK_TRAILER_SIZE)
        (stored,) = struct.unpack_from("<I", buf, size + 1)
        if _crc32c.crc32c(memoryview(buf)[: size + 1]) != unmask(stored):
            raise self._error(offset, f"block CRC mismatch in the {size}-byte block")
        kind = buf[size]
        del buf[size:]
        if kind == NO_COMPRESSION:
            return buf
        if kind == SNAPPY_COMPRESSION:
            try:
                return snappy_decompress(buf)
            except _Corrupt as exc:
                raise self._error(offset, f"bad Snappy block ({exc})") from None
        raise self._error(offset, f"unknown block compression type {kind}")

    def _parse_block(self, offset: int, size: int) -> _Block:
        data = self.read_block(offset, size)
        try:
            keys, spans = _parse_entries(data)
        except _Corrupt as exc:
            raise self._error(offset, f"malformed block ({exc})") from None
        return _Block(data, keys, spans)

    def _read_index(self) -> tuple[list[bytes], list[tuple[int, int]]]:
        _, (index_off, index_size) = self._read_footer()
        block = self._parse_block(index_off, index_size)
        handles = []
        for key, (start, end) in zip(block.keys, block.spans):
            try:
                off, pos = _varint(block.data, start)
                size, pos = _varint(block.data, pos)
            except _Corrupt:
                pos = end + 1
            if pos > end:
                raise self._error(index_off, f"bad block handle for index key {key!r}")
            handles.append((off, size))
        return block.keys, handles

    def _block(self, i: int) -> _Block:
        if self._cached is None or self._cached[0] != i:
            self._cached = (i, self._parse_block(*self._handles[i]))
        return self._cached[1]

    @property
    def num_blocks(self) -> int:
        return len(self._handles)

    def block_handles(self) -> list[tuple[int, int]]:
        """``(offset, size)`` of every data block in file order."""
        return list(self._handles)

    def items(self) -> Iterator[tuple[bytes, memoryview]]:
        """Every ``(key, value)`` in key order, checking each block's CRC."""
        for i in range(len(self._handles)):
            block = self._block(i)
            view = memoryview(block.data)
            for key, (start, end) in zip(block.keys, block.spans):
                yield key, view[start:end]

    def first(self) -> tuple[bytes, memoryview] | None:
        """The smallest entry, or None for an empty table."""
        return next(self.items(), None)

    def get(self, key: bytes) -> memoryview | None:
        """The value stored under ``key``, or None."""
        i = bisect.bisect_left(self._index_keys, key)
        if i == len(self._index_keys):
            return None
        block = self._block(i)
        j = bisect.bisect_left(block.keys, key)
        if j == len(block.keys) or block.keys[j] != key:
            return None
        start, end = block.spans[j]
        return memoryview(block.data)[start:end]


def has_table_magic(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a file of at least a footer's size ending with the table magic."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < FOOTER_SIZE:
                return False
            f.seek(size - 8)
            return f.read(8) == TABLE_MAGIC
    except OSError:
        return False
