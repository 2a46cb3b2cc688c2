"""V2 checkpoints: ``prefix.index`` (an SSTable of BundleEntryProto) + ``prefix.data-*``.

core/util/tensor_bundle/tensor_bundle.{h,cc} and tensor_bundle.proto: the entry under key ``""``
is the BundleHeaderProto {num_shards = 1, endianness = 2, version = 3}; every other key is a
tensor name (or, starting with a 0 byte, one slice of a partitioned tensor) whose
BundleEntryProto {dtype = 1, shape = 2, shard_id = 3, offset = 4, size = 5, crc32c = 6
(fixed32), slices = 7} says where its raw little-endian bytes are.

Every count, shard number, offset and size is checked (against the header, the dtype and shape,
and the data file's size) before a byte is allocated or read.
"""

from __future__ import annotations

import os

import numpy as np

from classzoo.formats.crc import masked_crc32c
from classzoo.formats.errors import FormatError
from classzoo.formats.sstable import SSTable
from classzoo.formats.tf_checkpoint.base import TFCheckpoint
from classzoo.formats.tf_checkpoint.protos import (
    DTYPES,
    Var,
    fields,
    message,
    parse_shape,
    parse_slice,
    slice_key,
)
from classzoo.formats.wire import FIXED32, LENGTH, VARINT

# tensor_bundle.cc DataFilename writes "%05d" shard numbers: 99999 + 1 is the most there can be
MAX_SHARDS = 100_000
# index entries kept in memory; real checkpoints hold thousands (a guard against crafted tables)
MAX_ENTRIES = 1 << 20


def _header(value, index_path: str) -> tuple[int, str]:
    """(num_shards, byte order) from the BundleHeaderProto."""
    num_shards, endianness = 1, 0
    for num, wt, val in fields(value, "bundle header", index_path):
        if num == 1 and wt == VARINT:
            num_shards = val
        elif num == 2 and wt == VARINT:
            endianness = val  # Endianness LITTLE = 0, BIG = 1
    if not 1 <= num_shards <= MAX_SHARDS:
        raise FormatError(index_path, None, f"bundle header declares {num_shards} data shards")
    if endianness not in (0, 1):
        raise FormatError(index_path, None, f"bundle header has endianness {endianness}")
    return num_shards, "<>"[endianness]


def _entry(value, key: bytes, path: str, num_shards: int) -> dict:
    """One BundleEntryProto (scalars: last wins; shape: merged; slices: repeated)."""
    e = {"dtype": 0, "shard": 0, "offset": 0, "size": 0, "crc": 0, "slices": []}
    what = f"index entry {key[:200]!r}"
    parsed = fields(value, what, path)
    for num, wt, val in parsed:
        if num == 1 and wt == VARINT:
            e["dtype"] = val
        elif num in (3, 4, 5) and wt == VARINT:
            e[{3: "shard", 4: "offset", 5: "size"}[num]] = val
        elif num == 6 and wt == FIXED32:
            e["crc"] = val
        elif num == 7 and wt == LENGTH:
            e["slices"].append(parse_slice(val, what, path))
    shape = message(parsed, 2)
    e["shape"] = parse_shape(shape, what, path) if shape is not None else ()
    if e["shard"] >= num_shards:
        raise FormatError(path, None, f"{what} points at shard {e['shard']} of {num_shards}")
    return e


class BundleCheckpoint(TFCheckpoint):
    """V2: ``prefix.index`` + ``prefix.data-*`` (core/util/tensor_bundle/tensor_bundle.cc)."""

    format = "V2"

    def __init__(self, prefix: str):
        index_path = prefix + ".index"
        with SSTable(index_path) as table:
            entries = []
            for item in table.items():
                if len(entries) == MAX_ENTRIES:
                    raise FormatError(index_path, None, f"more than {MAX_ENTRIES} index entries")
                entries.append(item)
        if not entries or entries[0][0] != b"":
            raise FormatError(index_path, None, "no bundle header (key ''): not a V2 index")
        num_shards, self._order = _header(entries[0][1], index_path)
        self.data_paths = [f"{prefix}.data-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
        for p in self.data_paths:
            if not os.path.isfile(p):
                raise FormatError(index_path, None, f"its data file {p} is missing")
        raw = {k: _entry(v, k, index_path, num_shards) for k, v in entries[1:]}
        super().__init__(prefix, self._variables(raw, index_path))
        self._files: dict[int, tuple[object, int]] = {}

    @staticmethod
    def _variables(raw: dict[bytes, dict], index_path: str) -> dict[str, Var]:
        vars_: dict[str, Var] = {}
        for key, e in raw.items():
            if key.startswith(b"\x00"):  # a slice of a partitioned tensor, listed by its owner
                continue
            name = key.decode("utf-8", "replace")
            var = Var(name, e["dtype"], e["shape"], e["slices"])
            for sl in var.slices:
                piece = raw.get(slice_key(name, sl))
                if piece is None:
                    raise FormatError(index_path, None, f"slice {sl} of {name!r} has no entry")
                var.where.append(piece)
            if not var.slices:
                var.where.append(e)
            vars_[name] = var
        return vars_

    def _read_order(self, names: list[str]) -> list[str]:
        def pos(n: str) -> tuple[int, int]:
            e = self._vars[n].where[0]
            return e["shard"], e["offset"]

        return sorted(names, key=pos)

    def _data_file(self, shard: int):
        """(open file, size) of data shard ``shard``, opened once."""
        got = self._files.get(shard)
        if got is None:
            path = self.data_paths[shard]
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise FormatError(path, None, f"cannot open ({exc.strerror})") from None
            got = self._files[shard] = (f, os.fstat(f.fileno()).st_size)
        return got

    def _read_piece(self, var: Var, i: int, count: int) -> np.ndarray:
        e = var.where[i]
        disk = np.dtype(DTYPES[var.dtype][1]).newbyteorder(self._order)
        data_path = self.data_paths[e["shard"]]
        start, size = e["offset"], e["size"]
        if size != count * disk.itemsize or e["dtype"] != var.dtype:
            raise FormatError(
                self.path + ".index",
                None,
                f"entry of {var.name!r} says {size} bytes of DataType {e['dtype']}, its "
                f"dtype and shape need {count * disk.itemsize}",
            )
        f, file_size = self._data_file(e["shard"])
        if start + size > file_size:  # before allocating: a crafted size cannot exhaust memory
            raise FormatError(
                data_path,
                None,
                f"{var.name!r} needs bytes [{start}, {start + size}) but the file has "
                f"{file_size} bytes (truncated)",
            )
        buf = bytearray(size)
        f.seek(start)
        if f.readinto(buf) != size:
            raise FormatError(data_path, start, f"short read of {var.name!r} (file shrank?)")
        if masked_crc32c(buf) != e["crc"]:
            raise FormatError(
                data_path,
                start,
                f"CRC mismatch in {var.name!r} (bytes [{start}, {start + size}); corrupt file)",
            )
        return np.frombuffer(buf, disk)

    def close(self) -> None:
        for f, _ in self._files.values():
            f.close()
        self._files.clear()
