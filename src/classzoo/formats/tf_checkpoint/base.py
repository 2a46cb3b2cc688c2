"""The checkpoint object both formats share: listing, reading, assembling slices."""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np

from classzoo.formats.errors import FormatError
from classzoo.formats.tf_checkpoint.protos import (
    DTYPES,
    UNREADABLE,
    Var,
    out_dtype,
    resolve_slice,
    to_native,
)

# tensorflow/python/training/saving/trackable_utils.py OBJECT_GRAPH_PROTO_KEY
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


class TFCheckpoint(ABC):
    """A TensorFlow checkpoint opened for reading: ``.format`` is ``"V1"`` or ``"V2"``.

    Use :func:`open_tf_checkpoint`; the object is a context manager.
    """

    format = ""

    def __init__(self, path: str, vars_: dict[str, Var]):
        self.path = path
        self._vars = vars_

    # -- listing ---------------------------------------------------------------------------
    def _listed(self) -> list[str]:
        return sorted(
            n for n, v in self._vars.items() if v.dtype in DTYPES and n != OBJECT_GRAPH_KEY
        )

    def variables(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """``name -> (dtype read() returns, shape)``, sorted by name.

        String/resource tensors and the object graph of ``tf.train.Checkpoint`` are left out;
        ``global_step`` is listed.
        """
        return {n: (out_dtype(self._vars[n].dtype), self._vars[n].shape) for n in self._listed()}

    def tf_dtype(self, name: str) -> str:
        """TensorFlow's name of the stored dtype (``"bfloat16"`` where read() gives float32)."""
        dt = self._var(name).dtype
        return DTYPES[dt][0] if dt in DTYPES else UNREADABLE.get(dt, f"DataType {dt}")

    def __contains__(self, name: object) -> bool:
        var = self._vars.get(name)  # type: ignore[arg-type]
        return var is not None and var.dtype in DTYPES and name != OBJECT_GRAPH_KEY

    def _var(self, name: str) -> Var:
        var = self._vars.get(name)
        if var is None:
            close = difflib.get_close_matches(name, self._listed(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise FormatError(
                self.path,
                None,
                f"no variable {name!r} in this {self.format} checkpoint "
                f"({len(self._listed())} variables){hint}",
            )
        if var.dtype not in DTYPES:
            kind = UNREADABLE.get(var.dtype, f"DataType {var.dtype}")
            raise FormatError(self.path, None, f"variable {name!r} is a {kind} tensor, not numeric")
        return var

    # -- reading -----------------------------------------------------------------------------
    def read(self, name: str) -> np.ndarray:
        """The full tensor ``name`` with its exact dtype and shape (slices assembled)."""
        var = self._var(name)
        count = var.count
        if not var.slices:
            return to_native(self._read_piece(var, 0, count), var.dtype).reshape(var.shape)
        pieces = []
        for i, sl in enumerate(var.slices):
            index, sub = resolve_slice(sl, var, self.path)
            pieces.append((index, sub, self._read_piece(var, i, math.prod(sub))))
        if len(pieces) == 1 and pieces[0][1] == var.shape:
            return to_native(pieces[0][2], var.dtype).reshape(var.shape)
        stored = sum(raw.size for _, _, raw in pieces)
        if stored != count:  # checked before allocating the declared shape
            raise FormatError(
                self.path,
                None,
                f"the {len(pieces)} saved slices of {name!r} hold {stored} values, its shape "
                f"{list(var.shape)} needs {count}",
            )
        out = np.empty(var.shape, out_dtype(var.dtype))
        covered = np.zeros(var.shape, bool)
        for index, sub, raw in pieces:
            out[index] = to_native(raw, var.dtype).reshape(sub)
            covered[index] = True
        if not covered.all():
            raise FormatError(
                self.path,
                None,
                f"the {len(pieces)} saved slices of {name!r} overlap: they cover only "
                f"{int(covered.sum())} of its {count} elements",
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
    def _read_piece(self, var: Var, i: int, count: int) -> np.ndarray:
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


def format_variables(ckpt: TFCheckpoint) -> str:
    """A name / dtype / shape table sorted by name, with totals, for ``--list``."""
    rows = []
    total = 0
    for name, (_, shape) in ckpt.variables().items():
        total += math.prod(shape)
        rows.append((name, ckpt.tf_dtype(name), "[" + ", ".join(map(str, shape)) + "]"))
    w0 = max([len("name")] + [len(r[0]) for r in rows])
    w1 = max([len("dtype")] + [len(r[1]) for r in rows])
    lines = [f"{'name':<{w0}}  {'dtype':<{w1}}  shape"]
    lines += [f"{n:<{w0}}  {d:<{w1}}  {s}" for n, d, s in rows]
    lines.append(
        f"{len(rows)} variables, {total:,} parameters ({ckpt.format} checkpoint {ckpt.path})"
    )
    return "\n".join(lines)
