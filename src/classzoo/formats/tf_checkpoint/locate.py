"""Finding a TF checkpoint from what a user passes: a prefix, one of its files, a folder."""

from __future__ import annotations

import codecs
import glob
import os
import re

from classzoo.errors import UserError
from classzoo.formats.errors import FormatError
from classzoo.formats.sstable import has_table_magic
from classzoo.formats.tf_checkpoint.base import TFCheckpoint
from classzoo.formats.tf_checkpoint.bundle import BundleCheckpoint
from classzoo.formats.tf_checkpoint.v1 import SliceCheckpoint, is_v1_file

_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")
_V1_SHARD_SUFFIX = re.compile(r"-\d{5}-of-(\d{5})$")  # V1 sharded saves: prefix-00000-of-00002
_STATE_MAX = 1 << 20  # a CheckpointState text proto is a few hundred bytes


def _read_state_file(state: str) -> str:
    """``model_checkpoint_path`` from a ``checkpoint`` CheckpointState text proto."""
    with open(state, "rb") as f:
        text = f.read(_STATE_MAX)
    m = re.search(rb'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
    if m is None:
        raise FormatError(state, None, "no model_checkpoint_path in this checkpoint state file")
    try:  # text-format escapes (\", \\, \ooo, \xhh) are Python's bytes escapes
        raw = codecs.escape_decode(m.group(1))[0]
    except ValueError as exc:
        raise FormatError(
            state, m.start(1), f"bad escape in model_checkpoint_path ({exc})"
        ) from None
    return raw.decode("utf-8", "surrogateescape")


def _exists(p: str) -> bool:
    return os.path.isfile(p + ".index") or os.path.isfile(p) or bool(_v1_shards(p))


def _v1_shards(p: str) -> list[str]:
    """Files of a sharded V1 save (``prefix-00000-of-00002`` ...), given the prefix, the
    ``prefix-?????-of-00002`` pattern TF writes in its state file, or any one shard."""
    m = _V1_SHARD_SUFFIX.search(p)
    if m:
        pattern = p[: m.start()] + "-?????-of-" + m.group(1)
    elif "?" in p or "*" in p:
        pattern = p
    else:
        pattern = p + "-?????-of-?????"
    head, tail = os.path.split(pattern)
    return sorted(glob.glob(os.path.join(glob.escape(head), tail)))


def _resolve_dir(d: str) -> str:
    state = os.path.join(d, "checkpoint")
    if os.path.isfile(state):
        p = _read_state_file(state)
        if not os.path.isabs(p):
            p = os.path.join(d, p)
        if not _exists(p):  # a moved folder: TF also falls back to the state file's folder
            p = os.path.join(d, os.path.basename(p))
        return p
    found = set()
    for entry in sorted(os.listdir(d)):
        full = os.path.join(d, entry)
        if entry.endswith(".index") and has_table_magic(full):
            found.add(full[: -len(".index")])
        elif not (_DATA_SUFFIX.search(entry) or entry.endswith((".meta", ".index"))) and (
            os.path.isfile(full) and is_v1_file(full)
        ):
            found.add(_V1_SHARD_SUFFIX.sub(r"-?????-of-\1", full))
    if len(found) == 1:
        return found.pop()
    if not found:
        raise UserError(f"{d}: no TensorFlow checkpoint in this directory")
    names = ", ".join(os.path.basename(p) for p in sorted(found))
    raise UserError(f"{d}: {len(found)} checkpoints here ({names}); pass one of them")


def _resolve(path: str | os.PathLike[str]) -> tuple[str, str, list[str]]:
    """-> (format, display path / V2 prefix, V1 files)."""
    p = os.fspath(path)
    if os.path.isdir(p):
        p = _resolve_dir(p)
    if p.endswith(".index") and os.path.isfile(p):
        return "V2", p[: -len(".index")], []
    m = _DATA_SUFFIX.search(p)
    if m:
        if not os.path.isfile(p[: m.start()] + ".index"):
            raise UserError(f"{p}: V2 data file without its index {p[: m.start()]}.index")
        return "V2", p[: m.start()], []
    if os.path.isfile(p + ".index"):
        return "V2", p, []
    if p.endswith(".meta") and _exists(p[: -len(".meta")]):
        return _resolve(p[: -len(".meta")])
    m = _V1_SHARD_SUFFIX.search(p) or re.search(r"-\?{5}-of-(\d{5})$", p)
    if m:  # one shard of a sharded V1 save, or TF's pattern for all of them
        shards = _v1_shards(p)
        if len(shards) != int(m.group(1)):
            raise UserError(
                f"{p}: sharded V1 checkpoint with {len(shards)} of {int(m.group(1))} files"
            )
        return "V1", p[: m.start()] + "-?????-of-" + m.group(1), shards
    if os.path.isfile(p):
        return "V1", p, [p]
    shards = _v1_shards(p)
    if shards:
        return "V1", p, shards
    raise UserError(
        f"{p}: no TensorFlow checkpoint here (no {os.path.basename(p)}.index, no V1 file)"
    )


def is_tf_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` names a TF checkpoint, judged by content, not by extension: a V2
    prefix (or its ``.index`` / ``.data-*`` file) whose index is an SSTable, a V1 file whose
    first record is a SavedTensorSliceMeta, or a directory holding exactly one of these (or a
    ``checkpoint`` state file). Never raises."""
    try:
        fmt, p, files = _resolve(path)
        if fmt == "V2":
            return has_table_magic(p + ".index")
        return all(is_v1_file(f) for f in files)
    except (UserError, OSError, ValueError):
        return False


def open_tf_checkpoint(path: str | os.PathLike[str]) -> TFCheckpoint:
    """Open a V2 prefix (or its ``.index`` / ``.data-*`` path), a V1 file (or sharded V1
    pattern), or a directory with a ``checkpoint`` state file or exactly one checkpoint."""
    try:
        fmt, p, files = _resolve(path)
    except OSError as exc:
        raise UserError(f"{os.fspath(path)}: cannot read ({exc.strerror})") from None
    if fmt == "V2":
        return BundleCheckpoint(p)
    return SliceCheckpoint(p, files)
