"""V1 checkpoints: SSTables of SavedTensorSlices (core/util/tensor_slice_reader.cc).

Key ``""`` holds SavedTensorSlices.meta = SavedTensorSliceMeta {repeated SavedSliceMeta
tensor = 1 {name = 1, shape = 2, type = 3, repeated slice = 4}}; every other key is
``EncodeTensorNameSlice(name, slice)`` holding SavedTensorSlices.data = SavedSlice {name = 1,
slice = 2, data = 3 (a TensorProto with the values in its typed repeated fields)}.
"""

from __future__ import annotations

import numpy as np

from classzoo.formats.errors import FormatError
from classzoo.formats.sstable import SSTable, has_table_magic
from classzoo.formats.tf_checkpoint.base import TFCheckpoint
from classzoo.formats.tf_checkpoint.protos import (
    Slice,
    Var,
    fields,
    message,
    parse_shape,
    parse_slice,
    slice_key,
    tensor_proto_values,
)
from classzoo.formats.wire import LENGTH, VARINT, WireError, iter_fields


class SliceCheckpoint(TFCheckpoint):
    """V1: one SSTable per shard of SavedTensorSlices."""

    format = "V1"

    def __init__(self, path: str, files: list[str]):
        self._tables: list[SSTable] = []
        vars_: dict[str, Var] = {}
        try:
            for f in files:
                table = SSTable(f)
                self._tables.append(table)
                for name, dtype, shape, slices in v1_meta(table):
                    var = vars_.setdefault(name, Var(name, dtype, shape))
                    if (var.dtype, var.shape) != (dtype, shape):
                        raise FormatError(f, None, f"{name!r} has another dtype or shape here")
                    var.slices += slices
                    var.where += [table] * len(slices)
        except BaseException:
            self.close()
            raise
        for var in vars_.values():
            if not var.slices:
                raise FormatError(path, None, f"{var.name!r} is listed without any saved slice")
        super().__init__(path, vars_)

    def _read_order(self, names: list[str]) -> list[str]:
        return sorted(names, key=lambda n: n.encode())  # key order: each block read once

    def _read_piece(self, var: Var, i: int, count: int) -> np.ndarray:
        table: SSTable = var.where[i]
        sl = var.slices[i]
        value = table.get(slice_key(var.name, sl))
        if value is None:
            raise FormatError(table.path, None, f"no data record for slice {sl} of {var.name!r}")
        try:
            saved = message(list(iter_fields(value)), 2)  # SavedTensorSlices.data
            proto = None if saved is None else message(list(iter_fields(saved)), 3)
            if proto is None:
                raise WireError("no TensorProto")
            flat = tensor_proto_values(proto, var.dtype, count)
        except WireError as exc:
            raise FormatError(
                table.path, None, f"bad data record for {var.name!r} ({exc})"
            ) from None
        return flat.copy()  # never keep the block buffer alive through a view

    def close(self) -> None:
        for t in self._tables:
            t.close()


def v1_meta(table: SSTable) -> list[tuple[str, int, tuple[int, ...], list[Slice]]]:
    """(name, dtype, shape, slices) of every tensor listed in the ``""`` record."""
    first = table.first()
    if first is None or first[0] != b"":
        raise FormatError(table.path, None, "no SavedTensorSlices meta record: not a V1 file")
    meta = message(fields(first[1], "V1 meta record", table.path), 1)
    if meta is None:
        raise FormatError(table.path, None, "the first record has no SavedTensorSliceMeta")
    out = []
    for num, wt, val in fields(meta, "V1 meta record", table.path):
        if num != 1 or wt != LENGTH:
            continue
        name, dtype, slices = "", 0, []
        parsed = fields(val, "V1 tensor meta", table.path)
        for n2, w2, v2 in parsed:
            if n2 == 1 and w2 == LENGTH:
                name = bytes(v2).decode("utf-8", "replace")
            elif n2 == 3 and w2 == VARINT:
                dtype = v2
            elif n2 == 4 and w2 == LENGTH:
                slices.append(parse_slice(v2, f"slice of {name!r}", table.path))
        shape = message(parsed, 2)
        shape = parse_shape(shape, f"shape of {name!r}", table.path) if shape is not None else ()
        out.append((name, dtype, shape, slices))
    return out


def is_v1_file(path: str) -> bool:
    """Content check: SSTable magic, and a first record ``""`` holding a SavedTensorSliceMeta."""
    if not has_table_magic(path):
        return False
    try:
        with SSTable(path) as table:
            first = table.first()
            if first is None or first[0] != b"":
                return False
            return any(num == 1 and wt == LENGTH for num, wt, _ in iter_fields(first[1]))
    except (FormatError, WireError):
        return False
