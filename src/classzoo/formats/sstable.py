"""Read TensorFlow's SSTable ("table") files without TensorFlow.

Both checkpoint formats sit on this container: the V2 bundle's ``.index`` file and the whole
V1 TensorSlice checkpoint (tensorflow core/lib/io/{format.cc, block.cc, table.cc}; a LevelDB
descendant). Layout: data blocks, a metaindex block, an index block, then a 48-byte footer.
Every block on disk is ``contents | type:u8 | masked crc32c(contents + type):u32le``.

The reader keeps only the index in memory and reads one block at a time (``get`` caches the
last block, so reading keys in order reads each block once), so a 240 MB V1 checkpoint is
never loaded whole. Every bound is checked before anything is allocated: block handles against
the file size, Snappy lengths against what the block can expand to, and the keys a block
expands to (prefix compression lets a few bytes repeat a long key) against 16x its size.
Every problem is a :class:`FormatError` naming the file and the byte offset.
"""

from __future__ import annotations

import bisect
import os
import struct
from array import array
from collections.abc import Iterator

from classzoo.formats.crc import crc32c, unmask
from classzoo.formats.errors import FormatError
from classzoo.formats.snappy import snappy_decompress
from classzoo.formats.wire import WireError, read_varint

# core/lib/io/format.h: Footer::kEncodedLength = 2 * BlockHandle::kMaxEncodedLength (20) + 8
FOOTER_SIZE = 48
# core/lib/io/format.h kTableMagicNumber = 0xdb4775248b80fb57, stored as two fixed32 LE
TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)
# core/lib/io/format.h kBlockTrailerSize: 1 type byte + 4 CRC bytes
BLOCK_TRAILER_SIZE = 5
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1  # core/lib/io/table_options.h CompressionType
KEY_EXPANSION = 16  # keys a block expands to: at most 16x its size (+1 MiB); see module doc


def _varint32(buf, pos: int) -> tuple[int, int]:
    """LevelDB GetVarint32: at most 5 bytes, a uint32."""
    value, pos = read_varint(buf, pos, max_bytes=5)
    return value & 0xFFFFFFFF, pos


class _Block:
    """One parsed block: contents, keys packed into one buffer, value spans (8 bytes each)."""

    __slots__ = ("data", "_keys", "_key_at", "_vals")

    def __init__(self, data: bytes | bytearray):
        self.data = data
        self._keys, self._key_at, self._vals = _parse_entries(data)

    def __len__(self) -> int:
        return len(self._key_at) - 1

    def key(self, i: int) -> bytes:
        return bytes(self._keys[self._key_at[i] : self._key_at[i + 1]])

    def value(self, i: int) -> memoryview:
        return memoryview(self.data)[self._vals[2 * i] : self._vals[2 * i + 1]]

    def find(self, key: bytes) -> int:
        """Index of the first entry whose key is >= ``key`` (entries are in key order)."""
        lo, hi = 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.key(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo


def _parse_entries(data) -> tuple[bytearray, array, array]:
    """Entries of a block (core/lib/io/block_builder.cc).

    Each entry: ``varint32 shared | varint32 non_shared | varint32 value_len | key delta |
    value``, the key being ``previous_key[:shared] + delta``; the block ends with
    ``uint32 restarts[n] | uint32 n`` (LE), which a sequential reader only needs for the bound.
    """
    n = len(data)
    if n < 4:
        raise WireError(f"block of {n} bytes is too short for its restart count", 0)
    (num_restarts,) = struct.unpack_from("<I", data, n - 4)
    limit = n - 4 - 4 * num_restarts
    if limit < 0:
        raise WireError(f"{num_restarts} restarts do not fit in a block of {n} bytes", n - 4)
    keys, key_at, vals = bytearray(), array("q", [0]), array("q")
    budget = KEY_EXPANSION * n + (1 << 20)
    key = b""
    pos = 0
    while pos < limit:
        at = pos
        shared, pos = _varint32(data, pos)
        non_shared, pos = _varint32(data, pos)
        value_len, pos = _varint32(data, pos)
        if shared > len(key):
            raise WireError(f"entry shares {shared} bytes of a {len(key)}-byte key", at)
        value_start = pos + non_shared
        value_end = value_start + value_len
        if value_end > limit:
            raise WireError(f"entry runs past the restart array at {limit}", at)
        if len(keys) + shared + non_shared > budget:
            raise WireError(f"keys expand to more than {KEY_EXPANSION}x the block size", at)
        key = key[:shared] + bytes(data[pos:value_start])
        keys += key
        key_at.append(len(keys))
        vals.append(value_start)
        vals.append(value_end)
        pos = value_end
    return keys, key_at, vals


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
            raise FormatError(self.path, None, f"cannot open ({exc.strerror})") from None
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
    def _error(self, offset: int, what: str) -> FormatError:
        return FormatError(self.path, offset, f"{what} (corrupt or truncated table)")

    def _read_footer(self) -> tuple[int, int]:
        """(offset, size) of the index block, from the footer's two block handles."""
        if self.size < FOOTER_SIZE:
            raise FormatError(
                self.path,
                None,
                f"{self.size} bytes is shorter than the {FOOTER_SIZE}-byte SSTable "
                "footer (truncated file, or not a TensorFlow checkpoint)",
            )
        footer_at = self.size - FOOTER_SIZE
        footer = self._pread(footer_at, FOOTER_SIZE)
        if footer[-8:] != TABLE_MAGIC:
            raise FormatError(
                self.path,
                self.size - 8,
                "no SSTable magic in the last 8 bytes: truncated file, or not a TF checkpoint",
            )
        try:
            values, pos = [], 0
            for _ in range(4):  # metaindex offset, size; index offset, size (varint64 each)
                v, pos = read_varint(footer, pos)
                values.append(v)
        except WireError as exc:
            raise self._error(footer_at, f"bad footer ({exc})") from None
        if pos > FOOTER_SIZE - 8:
            raise self._error(footer_at, "footer block handles overrun the magic")
        return values[2], values[3]

    def _pread(self, offset: int, size: int) -> bytearray:
        """``size`` bytes at ``offset``; the caller has checked the range against the file."""
        buf = bytearray(size)
        self._file.seek(offset)
        got = self._file.readinto(buf)
        if got != size:
            raise FormatError(
                self.path, offset, f"expected {size} bytes, the file ends after {got} (shrank?)"
            )
        return buf

    def read_block(self, offset: int, size: int) -> bytes | bytearray:
        """Contents of the block at ``offset`` (``size`` excludes the 5-byte trailer).

        Checks the trailer CRC, ``mask(crc32c(contents + type byte))`` (format.cc ReadBlock),
        and decompresses Snappy blocks.
        """
        data_end = self.size - FOOTER_SIZE
        if offset > data_end or size > data_end - offset - BLOCK_TRAILER_SIZE:
            raise FormatError(
                self.path,
                offset,
                f"block of {size} bytes + trailer runs past the end of the data at byte "
                f"{data_end} (truncated or corrupt file)",
            )
        buf = self._pread(offset, size + BLOCK_TRAILER_SIZE)
        (stored,) = struct.unpack_from("<I", buf, size + 1)
        if crc32c(memoryview(buf)[: size + 1]) != unmask(stored):
            raise self._error(offset, f"block CRC mismatch in the {size}-byte block")
        kind = buf[size]
        del buf[size:]
        if kind == NO_COMPRESSION:
            return buf
        if kind == SNAPPY_COMPRESSION:
            try:
                return snappy_decompress(buf)
            except WireError as exc:
                raise self._error(offset, f"bad Snappy block ({exc})") from None
        raise self._error(offset, f"unknown block compression type {kind}")

    def _parse_block(self, offset: int, size: int) -> _Block:
        data = self.read_block(offset, size)
        try:
            return _Block(data)
        except WireError as exc:
            raise self._error(offset, f"malformed block ({exc})") from None

    def _read_index(self) -> tuple[list[bytes], list[tuple[int, int]]]:
        index_off, index_size = self._read_footer()
        block = self._parse_block(index_off, index_size)
        keys, handles = [], []
        for i in range(len(block)):
            value = block.value(i)
            try:
                off, pos = read_varint(value, 0)
                size, pos = read_varint(value, pos)
            except WireError:
                pos = len(value) + 1
            if pos > len(value):
                raise self._error(index_off, f"bad block handle for index key {block.key(i)!r}")
            keys.append(block.key(i))
            handles.append((off, size))
        return keys, handles

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
            for j in range(len(block)):
                yield block.key(j), block.value(j)

    def first(self) -> tuple[bytes, memoryview] | None:
        """The smallest entry, or None for an empty table."""
        return next(self.items(), None)

    def get(self, key: bytes) -> memoryview | None:
        """The value stored under ``key``, or None."""
        i = bisect.bisect_left(self._index_keys, key)
        if i == len(self._index_keys):
            return None
        block = self._block(i)
        j = block.find(key)
        if j == len(block) or block.key(j) != key:
            return None
        return block.value(j)


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
