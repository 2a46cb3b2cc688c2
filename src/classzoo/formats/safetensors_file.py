"""safetensors files: written atomically with an embedded SHA-256, read with bounds and a schema.

The format (github.com/huggingface/safetensors, "Format"): 8 bytes little-endian header length
N, N bytes of JSON ``{name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}``, then the
tensor bytes. Readers refuse trailing bytes, so the digest lives in ``__metadata__``: the writer
puts 64 zeros under ``classzoo.sha256``, hashes the whole file, then writes the digest over the
zeros (same length, so no offset moves). The reader replaces the digest by zeros again and
hashes. ``classzoo.format`` marks the file as classzoo's: with either key present the digest is
required, so one flipped bit in a key name cannot turn a signed file into an unsigned one.
Files from elsewhere (no classzoo keys) load unverified, logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import torch

from classzoo.errors import UserError
from classzoo.formats.checkpoint_schema import check_state_dict
from classzoo.formats.torch_checkpoint import atomic_write, regular_file_size

log = logging.getLogger("classzoo")

__all__ = ["load_safetensors_file", "save_safetensors_file", "verify_safetensors_file"]

DIGEST_KEY = "classzoo.sha256"
FORMAT_KEY = "classzoo.format"
FORMAT = "classzoo-weights/1"
_ZEROS = "0" * 64
# safetensors' own limit on the header (safetensors/src/tensor.rs MAX_HEADER_SIZE)
_MAX_HEADER = 100_000_000
_CHUNK = 8 << 20


def _placeholder(digest: str) -> bytes:
    return json.dumps({DIGEST_KEY: digest}, separators=(",", ":"))[1:-1].encode()


def save_safetensors_file(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] = ()
) -> str:
    """Write ``tensors`` (contiguous CPU) as safetensors, atomically, signed; returns the digest."""
    from safetensors.torch import save

    meta = {str(k): str(v) for k, v in dict(metadata).items()}
    meta.update({FORMAT_KEY: FORMAT, DIGEST_KEY: _ZEROS})
    data = bytearray(save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))
    n = struct.unpack("<Q", data[:8])[0]
    where = bytes(data[8 : 8 + n]).find(_placeholder(_ZEROS))
    if where < 0:  # serde_json's compact form is what safetensors writes; never seen otherwise
        raise RuntimeError("safetensors header has no digest placeholder")
    digest = hashlib.sha256(data).hexdigest()
    start = 8 + where + len(_placeholder(_ZEROS)) - 65  # the 64 zeros before the closing quote
    data[start : start + 64] = digest.encode()

    def write(f: BinaryIO) -> None:
        f.write(data)

    atomic_write(path, write, "weights file")
    return digest


def _header(f: BinaryIO, size: int, path: Path) -> tuple[int, bytes, dict]:
    if size < 8:
        raise UserError(f"safetensors file {path} is {size} bytes: truncated")
    n = struct.unpack("<Q", f.read(8))[0]
    if n > min(size - 8, _MAX_HEADER):
        raise UserError(
            f"safetensors file {path}: header length {n} exceeds the file ({size} bytes)"
        )
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(f"safetensors file {path}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise UserError(f"safetensors file {path}: header is not a JSON object")
    return n, raw, header


def verify_safetensors_file(path: str | Path) -> str | None:
    """The verified hex digest of a classzoo safetensors file, None for one without classzoo
    keys; UserError if the digest does not match or the header is malformed."""
    path = Path(path)
    size = regular_file_size(path, "weights file")
    with open(path, "rb") as f:
        n, raw, header = _header(f, size, path)
        meta = header.get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise UserError(f"safetensors file {path}: __metadata__ is not an object")
        if DIGEST_KEY not in meta and FORMAT_KEY not in meta:
            return None
        digest = meta.get(DIGEST_KEY)
        ok = isinstance(digest, str) and len(digest) == 64 and meta.get(FORMAT_KEY) == FORMAT
        if not ok or raw.count(_placeholder(digest)) != 1:
            raise UserError(f"safetensors file {path}: its classzoo SHA-256 entry is damaged")
        sha = hashlib.sha256(struct.pack("<Q", n))
        sha.update(raw.replace(_placeholder(digest), _placeholder(_ZEROS)))
        f.seek(8 + n)
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    if not hmac.compare_digest(sha.hexdigest(), digest):
        raise UserError(
            f"safetensors file {path} is corrupt: SHA-256 differs from the recorded one"
        )
    return digest


def load_safetensors_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file: digest verified (when classzoo wrote it), header
    bounds checked, then safetensors' own reader, then the state-dict schema."""
    path = Path(path)
    digest = verify_safetensors_file(path)
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # SafetensorError, OSError, MemoryError...
        text = str(exc).strip().splitlines()
        reason = text[0][:200] if text else type(exc).__name__
        raise UserError(f"cannot read safetensors file {path}: {reason}") from None
    checked = check_state_dict(state, f"safetensors file {path}")
    if digest is None:  # logged once it loaded: a refused file gets its one error line only
        log.info(
            "weights file %s has no classzoo SHA-256 (not written by classzoo): unverified", path
        )
    return checked
