"""TFRecord files without TensorFlow: write, read sequentially, read one record by offset, index.

Framing (tensorflow core/lib/io/record_writer.h), all little-endian::

    uint64 length | uint32 mask(crc32c(8 length bytes)) | data[length] | uint32 mask(crc32c(data))

Every corruption becomes a :class:`CorruptRecordError` (a ``UserError``) naming the file, the record
number and the byte offset where that record starts, e.g.
``corrupt record 1234 in /x/train-00017-of-01024 (data CRC mismatch at byte 88113920)``.
With ``skip_corrupt=True`` the readers log and collect :class:`Corruption` entries instead:
a bad data CRC skips that one record (its length was verified, so the next header is found);
a bad length CRC cannot be resynchronised, so the rest of the file is dropped; a truncated
header, data or footer ends the file.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classzoo.errors import UserError
from classzoo.formats.crc import masked_crc32c as _masked_crc

log = logging.getLogger(__name__)

HEADER = 12  # uint64 length + uint32 masked CRC of the length
FOOTER = 4  # uint32 masked CRC of the data
_HEADER = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_LEN = struct.Struct("<Q")


@dataclass(frozen=True)
class Corruption:
    """One damaged record: where it is and what is wrong with it."""

    path: str
    record: int  # 0-based record number in the file
    offset: int  # byte offset of the record's header in the file
    reason: str

    def message(self) -> str:
        return f"corrupt record {self.record} in {self.path} ({self.reason} at byte {self.offset})"


class CorruptRecordError(UserError):
    """A damaged TFRecord record; ``.corruption`` says where.

    Also constructible from a message alone (``corruption`` is then None): pickling and the
    DataLoader's re-raise of worker exceptions rebuild exceptions as ``type(message)``.
    """

    def __init__(self, corruption: Corruption | str):
        if isinstance(corruption, Corruption):
            super().__init__(corruption.message())
            self.corruption: Corruption | None = corruption
        else:
            super().__init__(corruption)
            self.corruption = None


class TFRecordWriter:
    """Writes records to one uncompressed TFRecord file (what slim's ImageNet files are).

    Use as a context manager: ``with TFRecordWriter(path) as w: w.write(example_bytes)``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()/__exit__
        self.records = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        length = _LEN.pack(len(data))
        self._file.write(length + _U32.pack(_masked_crc(length)))
        self._file.write(data)
        self._file.write(_U32.pack(_masked_crc(data)))
        self.records += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _header_problem(buf, pos: int, file_offset: int) -> tuple[int, str | None]:
    """Decode the 12-byte header at ``buf[pos:]`` (``file_offset`` in its file).

    Returns (length, problem or None).
    """
    length, crc = _HEADER.unpack_from(buf, pos)
    if _masked_crc(memoryview(buf)[pos : pos + 8]) != crc:
        if file_offset == 0 and bytes(buf[pos : pos + 2]) == b"\x1f\x8b":
            return (
                length,
                "GZIP-compressed TFRecord files are not supported (gunzip it): bad header",
            )
        return length, "length CRC mismatch"
    return length, None


class TFRecordReader:
    """Iterates the records (as ``bytes``) of one TFRecord file, checking both CRCs.

    ``verify_data=False`` skips the data CRC (the length CRC is always checked: it is what keeps
    the reader in step). With ``skip_corrupt`` damaged records are logged and appended to
    :attr:`corrupt` instead of raising. Per record: three reads of a buffered file, two ``struct``
    calls, the CRCs (hardware crc32c) and no copy beyond the one into the data's ``bytes``.
    """

    def __init__(
        self, path: str | os.PathLike, *, verify_data: bool = True, skip_corrupt: bool = False
    ):
        self.path = str(path)
        self.verify_data = verify_data
        self.skip_corrupt = skip_corrupt
        self.corrupt: list[Corruption] = []

    def _problem(self, record: int, offset: int, reason: str) -> None:
        c = Corruption(self.path, record, offset, reason)
        if not self.skip_corrupt:
            raise CorruptRecordError(c)
        log.warning("skipping %s", c.message())
        self.corrupt.append(c)

    def __iter__(self) -> Iterator[bytes]:
        for _offset, data in self.iter_with_offsets():
            yield data

    def iter_with_offsets(self) -> Iterator[tuple[int, bytes]]:
        """Yields ``(record header offset, data)``."""
        verify = self.verify_data
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed in finally
        except OSError as e:
            raise UserError(f"cannot open TFRecord file {self.path}: {e.strerror}") from None
        # Three reads per record on a buffered file measured fastest (header and footer come
        # from the buffer, the data is read straight into its own bytes object: one copy).
        try:
            size = os.fstat(f.fileno()).st_size
            pos = record = 0
            while pos < size:
                head = f.read(HEADER)
                if len(head) < HEADER:
                    self._problem(record, pos, f"truncated header ({len(head)} of {HEADER} bytes)")
                    return
                length, problem = _header_problem(head, 0, pos)
                if problem:
                    self._problem(record, pos, problem)
                    return  # no way to find the next header
                end = pos + HEADER + length + FOOTER
                if end > size:  # checked before reading: never allocate a bogus length
                    part = "data" if end - FOOTER > size else "footer"
                    self._problem(
                        record,
                        pos,
                        f"truncated {part} (record of {length} bytes, file ends at byte {size})",
                    )
                    return
                data = f.read(length)
                footer = f.read(FOOTER)
                if len(footer) < FOOTER:  # the file shrank while we read it
                    self._problem(record, pos, f"truncated footer (file ends at byte {size})")
                    return
                if verify and _masked_crc(data) != _U32.unpack(footer)[0]:
                    self._problem(record, pos, "data CRC mismatch")
                else:
                    yield pos, data
                pos = end
                record += 1
        finally:
            f.close()


def read_records(
    path: str | os.PathLike, *, verify_data: bool = True, skip_corrupt: bool = False
) -> Iterator[bytes]:
    """Shorthand for ``iter(TFRecordReader(path, ...))``."""
    return iter(TFRecordReader(path, verify_data=verify_data, skip_corrupt=skip_corrupt))


def read_record_at(
    fd: int, offset: int, length: int, *, path: str, record: int, verify_data: bool = True
) -> memoryview:
    """The data of the record whose header is at ``offset`` (from an index), in one ``pread``.

    Checks the length CRC, that the stored length still equals the indexed one, and the data CRC.
    ``os.pread`` needs no seek, so DataLoader threads or forked workers never share a position.
    """
    total = HEADER + length + FOOTER
    buf = os.pread(fd, total, offset)
    if len(buf) < total:
        part = "header" if len(buf) < HEADER else "data" if len(buf) < HEADER + length else "footer"
        raise CorruptRecordError(
            Corruption(
                path, record, offset, f"truncated {part} (file ends at byte {offset + len(buf)})"
            )
        )
    stored, problem = _header_problem(buf, 0, offset)
    if problem:
        raise CorruptRecordError(Corruption(path, record, offset, problem))
    if stored != length:
        raise CorruptRecordError(
            Corruption(
                path,
                record,
                offset,
                f"length {stored} differs from the index ({length}); stale index",
            )
        )
    data = memoryview(buf)[HEADER : HEADER + length]
    if verify_data and _masked_crc(data) != _U32.unpack_from(buf, HEADER + length)[0]:
        raise CorruptRecordError(Corruption(path, record, offset, "data CRC mismatch"))
    return data


def build_index(
    path: str | os.PathLike, *, skip_corrupt: bool = False, corrupt: list[Corruption] | None = None
) -> np.ndarray:
    """``int64 [N, 2]`` array of (header offset, data length) of every record in the file.

    Reads only the 12-byte headers (one ``pread`` each, then jumps over the data), so indexing a
    140 MB shard costs ~1,250 small reads; length CRCs and the file size are checked, data CRCs
    are left to the reader. With ``skip_corrupt`` a damaged header or truncated tail ends the
    index and is appended to ``corrupt`` (and logged); otherwise it raises.
    """
    path = str(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise UserError(f"cannot open TFRecord file {path}: {e.strerror}") from None
    rows: list[tuple[int, int]] = []
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            head = os.pread(fd, HEADER, pos)
            reason = None
            if len(head) < HEADER:
                reason = f"truncated header ({len(head)} of {HEADER} bytes)"
            else:
                length, reason = _header_problem(head, 0, pos)
                if reason is None and pos + HEADER + length + FOOTER > size:
                    part = "data" if pos + HEADER + length > size else "footer"
                    reason = (
                        f"truncated {part} (record of {length} bytes, file ends at byte {size})"
                    )
            if reason is not None:
                c = Corruption(path, len(rows), pos, reason)
                if not skip_corrupt:
                    raise CorruptRecordError(c)
                log.warning("index stops at %s", c.message())
                if corrupt is not None:
                    corrupt.append(c)
                break
            rows.append((pos, length))
            pos += HEADER + length + FOOTER
    finally:
        os.close(fd)
    return np.array(rows, dtype=np.int64).reshape(-1, 2)
