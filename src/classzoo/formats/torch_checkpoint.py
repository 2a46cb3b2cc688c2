"""The one writer and the one reader of classzoo's torch checkpoint files.

**Writing** (:func:`save_checkpoint_file`) is atomic: a temporary file in the target's folder,
created with mode 0666 minus the umask (mkstemp's 0600 hid checkpoints from colleagues), fsync,
rename over the target, fsync of the folder. A full disk or any other write error removes the
temporary, leaves the previous file untouched and ends in one :class:`UserError` line.

**Integrity**: the SHA-256 of the file is embedded in the file, as the zip archive comment
``classzoo-sha256:<64 hex>\\n`` (torch.save's zip leaves the comment empty). Chosen over a
manifest beside the file because one file is one rename: there is no moment at which a file and
its manifest disagree, and the digest travels with the file when it is copied, moved or linked
as ``best.pt``. torch.load and every zip tool still read the file (a comment is part of the zip
format; ``unzip -z FILE`` prints it). The digest covers every byte before the comment, the zip
end record's comment length included; the comment must have exactly that form. So a flipped bit
anywhere is detected: in the covered bytes by the digest, in the comment by its form or value.
Files without a comment (torch.save by timm, torchvision, older classzoo) load unverified, logged.

**Reading** (:func:`load_checkpoint_file`): a regular file only (a FIFO would block), the digest
verified, then the zip directory checked against the file size before torch inflates anything,
then ``torch.load(weights_only=True)`` (no code is ever unpickled), then the schema of every field
classzoo reads (``formats.checkpoint_schema``). Every failure is one line naming the file.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from classzoo.errors import UserError, WriteError
from classzoo.formats.checkpoint_schema import check_checkpoint

log = logging.getLogger("classzoo")

__all__ = [
    "atomic_write",
    "is_temporary",
    "load_checkpoint_file",
    "regular_file_size",
    "save_checkpoint_file",
    "verify_checkpoint_file",
]

COMMENT_PREFIX = b"classzoo-sha256:"
COMMENT_LEN = len(COMMENT_PREFIX) + 64 + 1  # 81: prefix, hex digest, newline
_COMMENT_RE = re.compile(rb"classzoo-sha256:([0-9a-f]{64})\n")
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record, 22 bytes + comment (APPNOTE 4.3.16)
_EOCD_LEN = 22
_CHUNK = 8 << 20

# Bounds checked on the zip directory before torch reads an entry. torch.save stores entries
# uncompressed, so a real checkpoint declares exactly its own size; a deflate bomb declares more.
_MAX_DECLARED_RATIO = 2  # declared bytes <= 2 x file size + 1 MiB
_MAX_ENTRIES = 1_000_000
# The pickle is what the (pure Python) weights-only unpickler walks: about 1 us per byte here
# (4 MB of MARK opcodes: 3.6 s CPU), so its size bounds the time. resnet_v1_152 with EMA,
# momentum and 8 RNG states pickles to 281 KB (1,407 records, 200 B each): allow 2 MiB plus
# 256 B per record of the archive.
_PICKLE_BASE = 2 << 20
_PICKLE_PER_RECORD = 256
_TMP_RE = re.compile(r"^\..+\.tmp$")


# ---- writing ----------------------------------------------------------------------------------


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], what: str = "file") -> None:
    """Run ``write(f)`` into a temporary beside ``path``, fsync, rename over ``path``, fsync dir.

    OSError (ENOSPC, EDQUOT, EFBIG, EACCES...) and the RuntimeError torch's writer raises for a
    failed write become one UserError line; the temporary is removed in every case.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(
            f"cannot create the folder of {what} {path}: {exc.strerror}", exc.errno
        ) from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        # O_EXCL: never write through a planted symlink; 0o666: the umask decides who may read
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        with os.fdopen(fd, "w+b") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, _WriteFailed)) or _is_torch_write_error(exc):
            raise WriteError(
                f"cannot write {what} {path}: {_reason(exc)}; nothing was replaced "
                f"(the previous file, if any, is intact)",
                _errno(exc),
            ) from None
        raise


class _WriteFailed(Exception):
    """A write error seen by the digest sink, re-raised after torch's writer wrapped it."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _is_torch_write_error(exc: BaseException) -> bool:
    # caffe2's PyTorchStreamWriter: "PytorchStreamWriter failed writing file data/0: file write
    # failed" (torch/csrc/... inline_container.cc)
    return isinstance(exc, RuntimeError) and "write" in str(exc).lower()


def _errno(exc: BaseException) -> int | None:
    cause = exc.cause if isinstance(exc, _WriteFailed) else exc
    return cause.errno if isinstance(cause, OSError) else None


def _reason(exc: BaseException) -> str:
    cause = exc.cause if isinstance(exc, _WriteFailed) else exc
    if isinstance(cause, OSError) and cause.errno is not None:
        return os.strerror(cause.errno)
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX: the directory entry lives in the folder)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory fds: the rename is still atomic
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class _DigestSink:
    """What torch.save writes into: the file and a SHA-256 of every byte, with the last two
    bytes (the zip end record's comment length, 0) held back so the digest can cover the
    comment length that replaces them."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha = f, hashlib.sha256()
        self.held = b""  # the last two bytes written so far
        self.last = b""  # the last 22 bytes, to find the end record
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        mv = memoryview(data).cast("B")
        n = len(mv)
        if n == 0:
            return 0
        self.last = (self.last + bytes(mv[-_EOCD_LEN:]))[-_EOCD_LEN:]
        if n >= 2:
            self._emit(self.held)
            self._emit(mv[:-2])
            self.held = bytes(mv[-2:])
        else:
            joined = self.held + bytes(mv)
            self._emit(joined[:-2])
            self.held = joined[-2:]
        return n

    def flush(self) -> None:  # torch may flush; the file is flushed once, at the end
        pass

    def _emit(self, chunk: Any) -> None:
        if len(chunk):
            self.sha.update(chunk)
            try:
                self.f.write(chunk)
            except OSError as exc:  # torch's C++ writer turns it into a RuntimeError
                self.error = exc
                raise

    def finish(self) -> str:
        if self.last[:4] != _EOCD or self.held != b"\x00\x00":
            raise RuntimeError("torch.save did not end its zip with an empty comment")
        self._emit(struct.pack("<H", COMMENT_LEN))
        digest = self.sha.hexdigest()
        self.f.write(COMMENT_PREFIX + digest.encode() + b"\n")
        return digest


def save_checkpoint_file(obj: Any, path: str | Path, what: str = "checkpoint") -> str:
    """``torch.save(obj)`` to ``path`` atomically, with its SHA-256 embedded; returns the digest."""
    result: list[str] = []

    def write(f: BinaryIO) -> None:
        sink = _DigestSink(f)
        try:
            torch.save(obj, sink)
        except Exception:
            if sink.error is not None:
                raise _WriteFailed(sink.error) from None
            raise
        result.append(sink.finish())

    atomic_write(path, write, what)
    return result[0]


def is_temporary(name: str) -> bool:
    """A temporary left by :func:`atomic_write` (or by mkstemp in classzoo <= 0.1)."""
    return bool(_TMP_RE.match(name))


# ---- reading ----------------------------------------------------------------------------------


def regular_file_size(path: str | Path, what: str = "checkpoint") -> int:
    """The size of ``path``, which must be a regular file (a FIFO or device would block reads)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a directory"
        kind = kind if stat.S_ISFIFO(st.st_mode) or stat.S_ISDIR(st.st_mode) else "not a file"
        raise UserError(f"{what} {path} is {kind}, not a regular file")
    return st.st_size


def _trailer_digest(f: BinaryIO, size: int, path: Path) -> str | None:
    """The embedded hex digest, None for a plain torch zip; UserError if the end is damaged."""
    tail_len = _EOCD_LEN + COMMENT_LEN
    if size >= tail_len:
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        if tail[:4] == _EOCD and tail[20:22] == struct.pack("<H", COMMENT_LEN):
            m = _COMMENT_RE.fullmatch(tail[_EOCD_LEN:])
            if m is None:
                raise UserError(f"checkpoint {path}: its SHA-256 trailer is damaged")
            return m.group(1).decode()
    if size >= _EOCD_LEN:
        f.seek(size - _EOCD_LEN)
        last = f.read(_EOCD_LEN)
        if last[:4] == _EOCD and last[20:22] == b"\x00\x00":
            return None
    if size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes)")
    raise UserError(
        f"checkpoint {path} ({size} bytes) does not end in a zip end record: truncated or damaged"
    )


def _hash_prefix(f: BinaryIO, length: int) -> str:
    sha, buf = hashlib.sha256(), bytearray(_CHUNK)
    f.seek(0)
    left = length
    while left:
        n = f.readinto(memoryview(buf)[: min(left, _CHUNK)])
        if not n:
            break
        sha.update(memoryview(buf)[:n])
        left -= n
    return sha.hexdigest()


def verify_checkpoint_file(path: str | Path) -> str | None:
    """Check the embedded SHA-256 of a torch checkpoint: its hex digest, or None if it has none.

    UserError (one line) for a non-regular, empty, truncated or altered file.
    """
    path = Path(path)
    size = regular_file_size(path)
    try:
        with open(path, "rb") as f:
            digest = _trailer_digest(f, size, path)
            if digest is None:
                return None
            actual = _hash_prefix(f, size - COMMENT_LEN)
    except OSError as exc:
        raise UserError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    if not hmac.compare_digest(actual, digest):
        raise UserError(
            f"checkpoint {path} is corrupt: SHA-256 {actual[:16]}... differs from the "
            f"{digest[:16]}... recorded when it was written"
        )
    return digest


def _check_zip_directory(path: Path, size: int) -> None:
    """Refuse what torch would inflate or unpickle without bound, from the zip directory alone."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception as exc:  # zipfile raises several types on crafted directories
        raise UserError(f"checkpoint {path}: not a readable zip archive ({_reason(exc)})") from None
    if len(infos) > _MAX_ENTRIES:
        raise UserError(f"checkpoint {path}: {len(infos)} zip entries (at most {_MAX_ENTRIES})")
    declared = 0
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UserError(
                f"checkpoint {path}: entry {info.filename!r} uses compression method "
                f"{info.compress_type} (torch.save stores entries uncompressed)"
            )
        if info.header_offset + info.compress_size > size:
            raise UserError(f"checkpoint {path}: entry {info.filename!r} ends beyond the file")
        declared += info.file_size
    limit = _MAX_DECLARED_RATIO * size + (1 << 20)
    if declared > limit:
        raise UserError(
            f"checkpoint {path}: its entries declare {declared} bytes, more than {limit} for a "
            f"{size}-byte file (a decompression bomb?)"
        )
    pickles = [i for i in infos if i.filename.rsplit("/", 1)[-1] == "data.pkl"]
    if not pickles:
        raise UserError(f"checkpoint {path}: no data.pkl entry (not written by torch.save)")
    cap = _PICKLE_BASE + _PICKLE_PER_RECORD * len(infos)
    for info in pickles:
        if info.file_size > cap:
            raise UserError(
                f"checkpoint {path}: pickle {info.filename!r} is {info.file_size} bytes, more "
                f"than {cap} for {len(infos)} records"
            )


_BOILERPLATE = ("Weights only load failed", "(1)", "(2)", "Please file", "Check the documentation")


def _torch_reason(exc: Exception) -> str:
    """The informative line of torch.load's message. Weights-only refusals are paragraphs
    ("Weights only load failed ... (1) In PyTorch 2.6 ... WeightsUnpickler error: <reason>",
    then a documentation link); the reason is after the marker, or the first other line, less
    torch's advice to call add_safe_globals (a Python call: no way out for a CLI user)."""
    text = re.sub(r"\s*Please use `?torch\.serialization\.add_safe_globals.*", "", str(exc))
    marker = "WeightsUnpickler error:"
    if marker in text:
        after = [s.strip() for s in text.split(marker, 1)[1].splitlines() if s.strip()]
        return "refused by the weights-only unpickler: " + (after[0][:200] if after else "?")
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    if lines and lines[0].startswith(_BOILERPLATE[0]):
        rest = [s for s in lines if not s.startswith(_BOILERPLATE)]
        return "refused by the weights-only unpickler: " + (rest[0][:200] if rest else "?")
    return lines[0][:200] if lines else type(exc).__name__


def load_checkpoint_file(path: str | Path, *, require_digest: bool = False) -> dict[str, Any]:
    """Read a torch checkpoint file safely: digest, bounds, weights-only unpickling, schema.

    Returns the dict torch.save wrote (classzoo training checkpoint, exported weights, or a
    timm / torchvision checkpoint or bare state dict). ``require_digest``: refuse a file that
    carries no classzoo SHA-256 (one that classzoo did not write).
    """
    path = Path(path)
    digest = verify_checkpoint_file(path)
    if digest is None and require_digest:
        raise UserError(f"checkpoint {path} carries no classzoo SHA-256 (not written by it)")
    _check_zip_directory(path, regular_file_size(path))
    try:
        with warnings.catch_warnings():  # a crafted protocol byte: one error line, not a warning
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # timm's train.py stores its argparse.Namespace under "args"; timm's own loader
            # allows that one class (timm/models/_helpers.py), so classzoo does too
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zips, refused globals, bad storages, MemoryError...
        raise UserError(f"cannot read checkpoint {path}: {_torch_reason(exc)}") from None
    checked = check_checkpoint(obj, f"checkpoint {path}")
    if digest is None:  # logged once it loaded: a refused file gets its one error line only
        log.info(
            "checkpoint %s has no classzoo SHA-256 (not written by classzoo): unverified", path
        )
    return checked
