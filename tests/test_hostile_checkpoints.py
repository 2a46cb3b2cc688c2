"""Hostile checkpoint files through every entry point that takes a path: one line, exit 2, nothing
written, bounded time and memory.

Families built by :func:`build_hostile` (100 files; 96 without TensorFlow's fuzz seeds):

* **pickle** (a torch zip around a crafted ``data.pkl``): GLOBAL + REDUCE of ``os.system``,
  ``builtins.eval``, ``subprocess.Popen``, ``torch.load``; INST / OBJ / NEWOBJ of a class;
  a text PERSID; a storage of 10^12 elements, of an unknown type, with a missing record; a
  tensor view beyond its storage, a negative stride, 2^62 sizes; 100,000-deep nested lists; a
  memo read of a missing index; a 2,000-bit integer class count; pickle protocol 99; no STOP;
  an empty pickle; a list / int / string / None instead of a dict; a huge BINUNICODE length.
* **archive**: a 2 MB zip bomb (entries declaring 2 GB), a 300 KB deflated pickle (300 MB
  inflated), bzip2 and lzma entries, an entry beyond the end, no data.pkl, two data.pkl, a
  truncated central directory, a ``PK`` header over noise, a foreign zip comment.
* **safetensors**: header length beyond the file and 2^64 - 1, a non-UTF-8 / non-JSON / array /
  100,000-deep header, offsets beyond the data, reversed, overlapping, a wrong byte count, an
  unknown dtype, a negative dimension, a 2^80-element shape, bad ``__metadata__``, a tampered /
  damaged classzoo digest, truncated data, trailing bytes, int8 / bool / complex / NaN / inf
  weights, an empty and an 8-byte file.
* **classzoo** (signed checkpoints): truncated to 1, half, all but 1 and all but 81 bytes, one
  byte changed, a damaged trailer, and re-signed files whose fields are wrong: config not a
  mapping, a config section not a mapping, 10^12 classes, 10^6 px images, classes not names,
  negative or missing progress, empty / non-tensor / int-keyed model, int8 / bool / complex /
  NaN / inf weights, optimizer and rng of the wrong shape, non-numeric metrics, a non-string
  model name, 100-deep config nesting, weights of another network, of another shape.
* **filesystem**: a FIFO, a directory, a character device (/dev/zero via a symlink), a missing
  path, an empty file.
* **tf** (TensorFlow-written seeds of tests/fuzz, when present): a V2 index truncated, a data
  file truncated, a V1 file truncated, noise under a .index name.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import traceback
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from classzoo.formats.safetensors_file import save_safetensors_file
from classzoo.formats.torch_checkpoint import save_checkpoint_file

TESTS = Path(__file__).parent
SEEDS = TESTS / "fuzz" / "seeds"

# ---- torch zips with a crafted pickle ---------------------------------------------------------


def _base_zip() -> dict[str, bytes]:
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.ones(2, 2)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return {i.filename: z.read(i.filename) for i in z.infolist()}


def torch_zip(pkl: bytes, records: dict[str, bytes] | None = None, method=zipfile.ZIP_STORED):
    """A torch.save-style zip whose data.pkl is ``pkl`` (records: extra storages)."""
    entries = {k: v for k, v in _base_zip().items() if "/data/" not in k}
    entries["archive/data.pkl"] = pkl
    for key, data in (records or {"0": struct.pack("<4f", 1, 1, 1, 1)}).items():
        entries[f"archive/data/{key}"] = data
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in entries.items():
            z.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return out.getvalue()


def _p(*ops: bytes) -> bytes:
    return b"\x80\x02" + b"".join(ops) + b"."


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n) if -(2**31) <= n < 2**31 else _long(n)


def _long(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _tensor(size, stride, numel=4, key="0", storage="FloatStorage", offset=0) -> bytes:
    """{'fc.weight': _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())}."""
    tup = lambda xs: b"(" + b"".join(_int(x) for x in xs) + b"t"  # noqa: E731
    pid = b"(" + _str("storage") + f"ctorch\n{storage}\n".encode() + _str(key) + _str("cpu")
    pid += _int(numel) + b"tQ"
    rebuild = b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + _int(offset) + tup(size)
    rebuild += tup(stride) + b"\x89ccollections\nOrderedDict\n)Rt" + b"R"
    return _p(b"}" + _str("fc.weight") + rebuild + b"s")


def pickle_family() -> dict[str, bytes]:
    call = lambda mod, fn, arg: _p(f"c{mod}\n{fn}\n".encode() + _str(arg) + b"\x85R")  # noqa: E731
    deep = _p(b"]" * 100_000 + b"a" * 99_999)
    return {
        "pickle-global-os-system.pt": torch_zip(call("os", "system", "touch /tmp/pwned")),
        "pickle-global-eval.pt": torch_zip(call("builtins", "eval", "__import__('os')")),
        "pickle-global-popen.pt": torch_zip(call("subprocess", "Popen", "id")),
        "pickle-global-torch-load.pt": torch_zip(call("torch", "load", "/etc/passwd")),
        "pickle-inst.pt": torch_zip(_p(b"(ios\nsystem\n" + _str("id") + b"t")),  # INST
        "pickle-obj.pt": torch_zip(_p(b"(cos\nsystem\n" + _str("id") + b"o")),  # OBJ
        "pickle-newobj.pt": torch_zip(_p(b"cos\n_wrap_close\n)\x81")),
        "pickle-text-persid.pt": torch_zip(_p(b"Pstorage 0\n")),
        "pickle-storage-1e12.pt": torch_zip(_tensor((2, 2), (2, 1), numel=10**12)),
        "pickle-storage-unknown-type.pt": torch_zip(_tensor((2, 2), (2, 1), storage="Popen")),
        "pickle-storage-missing-record.pt": torch_zip(_tensor((2, 2), (2, 1), key="7")),
        "pickle-view-beyond-storage.pt": torch_zip(_tensor((1000, 1000), (1000, 1))),
        "pickle-negative-stride.pt": torch_zip(_tensor((2, 2), (-2, 1))),
        "pickle-size-2e62.pt": torch_zip(_tensor((2**62, 2**62), (1, 1))),
        "pickle-offset-beyond.pt": torch_zip(_tensor((2, 2), (2, 1), offset=2**40)),
        "pickle-nested-100k.pt": torch_zip(deep),
        "pickle-memo-missing.pt": torch_zip(_p(b"}h\x07")),
        "pickle-long-2000-bits.pt": torch_zip(
            _p(b"}" + _str("num_classes") + _long(2**2000) + b"s")
        ),
        "pickle-no-stop.pt": torch_zip(b"\x80\x02}" + _str("a")),
        "pickle-empty.pt": torch_zip(b""),
        "pickle-list.pt": torch_zip(_p(b"]")),
        "pickle-int.pt": torch_zip(_p(b"K\x07")),
        "pickle-str.pt": torch_zip(_p(_str("model"))),
        "pickle-none.pt": torch_zip(_p(b"N")),
        "pickle-binunicode-4gb.pt": torch_zip(b"\x80\x02X\xff\xff\xff\xffabc."),
        "pickle-protocol-99.pt": torch_zip(b"\x80\x63}."),
    }


def _repeat_deflate(head: bytes, block: bytes, times: int, tail: bytes) -> bytes:
    """Raw deflate of ``head + block * times + tail`` in milliseconds: after a full flush the
    compressor starts afresh, so each copy of ``block`` compresses to the same bytes."""

    def flushed(c, data: bytes) -> bytes:
        return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first, again = flushed(c, head), flushed(c, block)
    assert flushed(c, block) == again
    return first + again * (times - 1) + again + c.compress(tail) + c.flush(zlib.Z_FINISH)


def raw_zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip of (name, method, stored bytes, inflated size, crc) entries, zip64 sizes, by hand."""
    out, central = bytearray(), bytearray()
    for name, method, data, size, crc in entries:
        raw = name.encode()
        extra = struct.pack("<HHQQ", 1, 16, size, len(data))  # zip64: real sizes
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0, crc,
                           0xFFFFFFFF, 0xFFFFFFFF, len(raw), len(extra)) + raw + extra + data  # fmt: skip
        cextra = struct.pack("<HHQQQ", 1, 24, size, len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(raw), len(cextra), 0, 0, 0, 0,
                               0xFFFFFFFF) + raw + cextra  # fmt: skip
    cd_at = len(out)
    out += central
    n = len(entries)
    zip64_at = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_at)
    out += struct.pack("<IIQI", 0x07064B50, 0, zip64_at, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), cd_at, 0)
    return bytes(out)


# zlib.crc32(bytes(1 << 30)), computed once (1.6 s): zipfile checks it when reading the bomb
_CRC_1GIB_ZEROS = 0x5B64C2B0


def _bomb() -> bytes:
    """2 entries of 1 GiB of zeros, deflated: 2 MB on disk, a real (CRC-correct) zip bomb."""
    data = _repeat_deflate(b"", bytes(1 << 24), 64, b"")
    pkl = _p(b"}")
    entries = [("archive/data.pkl", 0, pkl, len(pkl), zlib.crc32(pkl))]
    entries += [(f"archive/data/{i}", 8, data, 1 << 30, _CRC_1GIB_ZEROS) for i in range(2)]
    return raw_zip(entries)


def _deflated_pickle() -> bytes:
    """data.pkl = ``]`` + ``Na`` x 150 M + ``.``: 300 MB that deflate to ~300 KB and keep the
    pure-Python weights-only unpickler busy ~1 us per byte (minutes)."""
    head, block, times, tail = b"\x80\x02]", b"Na" * (1 << 20), 143, b"."
    crc = zlib.crc32(head)
    for _ in range(times):
        crc = zlib.crc32(block, crc)
    pkl = (_repeat_deflate(head, block, times, tail), zlib.crc32(tail, crc))
    size = len(head) + len(block) * times + len(tail)
    version = b"3\n"
    return raw_zip(
        [
            ("archive/data.pkl", 8, pkl[0], size, pkl[1]),
            ("archive/version", 0, version, len(version), zlib.crc32(version)),
        ]
    )


def archive_family() -> dict[str, bytes]:
    out = {}
    out["zip-bomb-2gb.pt"] = _bomb()
    out["zip-deflated-pickle-300mb.pt"] = _deflated_pickle()
    base = torch_zip(_p(b"}"))
    out["zip-bzip2.pt"] = torch_zip(_p(b"}"), method=zipfile.ZIP_BZIP2)
    out["zip-lzma.pt"] = torch_zip(_p(b"}"), method=zipfile.ZIP_LZMA)
    eocd = base.rindex(b"PK\x05\x06")
    cd = struct.unpack("<I", base[eocd + 16 : eocd + 20])[0]
    beyond = bytearray(base)  # first central entry: local header offset far past the end
    beyond[cd + 42 : cd + 46] = struct.pack("<I", 0x7FFFFFF0)
    out["zip-entry-beyond-end.pt"] = bytes(beyond)
    nopkl = io.BytesIO()
    with zipfile.ZipFile(nopkl, "w") as z:
        z.writestr("archive/version", b"3\n")
    out["zip-no-data-pkl.pt"] = nopkl.getvalue()
    two = io.BytesIO()
    with zipfile.ZipFile(two, "w") as z:
        z.writestr("archive/data.pkl", _p(b"}"))
        z.writestr("archive/data.pkl", _p(b"cos\nsystem\n" + _str("id") + b"\x85R"))
    out["zip-two-data-pkl.pt"] = two.getvalue()
    out["zip-truncated-central-dir.pt"] = base[: eocd - 10] + base[eocd:]
    out["zip-header-over-noise.pt"] = b"PK\x03\x04" + os.urandom(4000)
    commented = bytearray(base)
    commented[-2:] = struct.pack("<H", 12)
    out["zip-foreign-comment.pt"] = bytes(commented) + b"hello, world"
    return out


# ---- safetensors ------------------------------------------------------------------------------


def _st(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _st_tensor(dtype: str, shape, offsets, data: bytes, meta=None) -> bytes:
    header = {"fc.weight": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}
    if meta is not None:
        header["__metadata__"] = meta
    return _st(header, data)


def safetensors_family(folder: Path) -> dict[str, bytes]:
    f16 = struct.pack("<4f", 1, 2, 3, 4)
    signed = folder / "_signed.safetensors"
    save_safetensors_file({"fc.weight": torch.ones(2, 2)}, signed)
    good = signed.read_bytes()
    signed.unlink()
    tampered = bytearray(good)
    tampered[-1] ^= 0x40
    damaged = good.replace(b'"classzoo.sha256":"', b'"classzoo.sha256":"z', 1)
    damaged = struct.pack("<Q", struct.unpack("<Q", damaged[:8])[0] + 1) + damaged[8:]
    nan = struct.pack("<4f", 1, float("nan"), 3, 4)
    inf = struct.pack("<4f", 1, float("inf"), 3, 4)
    return {
        "st-header-beyond-file.safetensors": _st(b"{}", length=10**6),
        "st-header-2e64.safetensors": _st(b"{}", length=2**64 - 1),
        "st-header-not-utf8.safetensors": _st(b"\xff\xfe{}"),
        "st-header-not-json.safetensors": _st(b"{this is not json"),
        "st-header-array.safetensors": _st(b"[1, 2, 3]"),
        "st-header-deep.safetensors": _st(b"[" * 100_000 + b"]" * 100_000),
        "st-offsets-beyond.safetensors": _st_tensor("F32", [2, 2], [0, 2**40], f16),
        "st-offsets-reversed.safetensors": _st_tensor("F32", [2, 2], [16, 0], f16),
        "st-offsets-overlap.safetensors": _st(
            {
                "a.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b.weight": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
            },
            f16,
        ),
        "st-wrong-byte-count.safetensors": _st_tensor("F32", [3, 3], [0, 16], f16),
        "st-unknown-dtype.safetensors": _st_tensor("Q99", [2, 2], [0, 16], f16),
        "st-negative-dim.safetensors": _st_tensor("F32", [-2, -2], [0, 16], f16),
        "st-shape-2e80.safetensors": _st_tensor("F32", [2**40, 2**40], [0, 16], f16),
        "st-metadata-not-object.safetensors": _st_tensor("F32", [2, 2], [0, 16], f16, [1]),
        "st-metadata-not-string.safetensors": _st_tensor("F32", [2, 2], [0, 16], f16, {"a": 1}),
        "st-classzoo-tampered.safetensors": bytes(tampered),
        "st-classzoo-digest-damaged.safetensors": damaged,
        "st-truncated-data.safetensors": good[:-5],
        "st-trailing-bytes.safetensors": _st_tensor("F32", [2, 2], [0, 16], f16 + b"junk"),
        "st-int8-weights.safetensors": _st_tensor("I8", [2, 2], [0, 4], b"\x01\x02\x03\x04"),
        "st-bool-weights.safetensors": _st_tensor("BOOL", [2, 2], [0, 4], b"\x01\x00\x01\x00"),
        "st-complex-weights.safetensors": _st_tensor("C64", [2], [0, 16], f16),
        "st-nan-weights.safetensors": _st_tensor("F32", [2, 2], [0, 16], nan),
        "st-inf-weights.safetensors": _st_tensor("F32", [2, 2], [0, 16], inf),
        "st-8-bytes.safetensors": struct.pack("<Q", 0),
    }


# ---- classzoo checkpoints ---------------------------------------------------------------------


def _payload(**changes) -> dict:
    model = {"fc.weight": torch.ones(2, 2), "fc.bias": torch.zeros(2)}
    p = {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"params": [0, 1], "lr": 0.1}]},
        "progress": {"step": 3, "epoch": 0, "sample": 24, "world_size": 1},
        "config": {"model": {"name": "resnet18", "num_classes": 2}, "data": {"image_size": 32}},
        "model_name": "resnet18",
        "num_classes": 2,
    }
    p.update(changes)
    return p


def classzoo_family(folder: Path) -> dict[str, bytes]:
    def signed(payload) -> bytes:
        path = folder / "_tmp.pt"
        save_checkpoint_file(payload, path)
        data = path.read_bytes()
        path.unlink()
        return data

    good = signed(_payload())
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    damaged = bytearray(good)
    damaged[-40] = ord("z")
    weights = lambda t: _payload(model={"fc.weight": t, "fc.bias": torch.zeros(2)})  # noqa: E731
    deep: dict = {}
    for _ in range(100):
        deep = {"x": deep}
    bad_fields = {
        "config-not-mapping": _payload(config=[1, 2]),
        "config-section-str": _payload(config={"model": "resnet18"}),
        "classes-1e12": _payload(num_classes=10**12),
        "config-classes-1e12": _payload(config={"model": {"num_classes": 10**12}}),
        "config-image-1e6": _payload(config={"data": {"image_size": 10**6}}),
        "classes-not-names": _payload(classes=[1, 2]),
        "progress-negative": _payload(progress={"step": -5, "epoch": 0, "sample": 0}),
        "progress-missing": _payload(progress={"epoch": 0}),
        "model-empty": _payload(model={}),
        "model-not-tensor": _payload(model={"fc.weight": [1.0, 2.0]}),
        "model-int-key": _payload(model={7: torch.ones(2)}),
        "int8-weights": weights(torch.ones(2, 2, dtype=torch.int8)),
        "bool-weights": weights(torch.ones(2, 2, dtype=torch.bool)),
        "complex-weights": weights(torch.ones(2, 2, dtype=torch.complex64)),
        "nan-weights": weights(torch.tensor([[1.0, float("nan")], [0.0, 1.0]])),
        "inf-weights": weights(torch.tensor([[1.0, float("inf")], [0.0, 1.0]])),
        "optimizer-list": _payload(optimizer=[1, 2]),
        "rng-str": _payload(rng="not a state"),
        "metrics-str": _payload(metrics={"top1": "high"}),
        "model-name-int": _payload(model_name=5),
        "config-deep": _payload(config={"model": deep}),
        "other-network": _payload(model={"encoder.weight": torch.ones(3)}),
        "other-shape": weights(torch.ones(7, 3)),
    }
    out = {
        "cz-truncated-1.pt": good[:1],
        "cz-truncated-half.pt": good[: len(good) // 2],
        "cz-truncated-minus-1.pt": good[:-1],
        "cz-digest-removed.pt": good[:-81],
        "cz-byte-changed.pt": bytes(flipped),
        "cz-trailer-damaged.pt": bytes(damaged),
    }
    out.update({f"cz-{name}.pt": signed(p) for name, p in bad_fields.items()})
    out["bare-int8-state-dict.pt"] = _unsigned({"fc.weight": torch.ones(2, 2, dtype=torch.int8)})
    return out


def _unsigned(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def tf_family() -> dict[str, bytes]:
    """TensorFlow-written checkpoints (tests/fuzz/seeds), damaged; {} without the seeds."""
    if not (SEEDS / "v2.index").exists():
        return {}
    index, data = (SEEDS / "v2.index").read_bytes(), (SEEDS / "v2.data-00000-of-00001").read_bytes()
    v1 = (SEEDS / "v1.ckpt").read_bytes()
    return {
        "tf-v2-index-truncated.index": index[: len(index) // 2],
        "tf-v1-truncated.ckpt": v1[: len(v1) // 2],
        "tf-noise.index": os.urandom(2000),
        "tf-v2-data-truncated.index": index,  # its data file is written truncated below
        "tf-v2-data-truncated.data-00000-of-00001": data[: len(data) // 3],
    }


def build_hostile(folder: Path) -> list[Path]:
    """Write every hostile file into ``folder``; returns the paths the entry points get."""
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # zipfile warns about the duplicate data.pkl, on purpose
        warnings.simplefilter("ignore")
        files = {**pickle_family(), **archive_family(), **safetensors_family(folder)}
    files.update(classzoo_family(folder))
    files.update(tf_family())
    files["fs-empty.pt"] = b""
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        if not name.endswith(".data-00000-of-00001"):
            paths.append(folder / name)
    paths = [p if p.suffix != ".index" else p.with_suffix("") for p in paths]
    os.mkfifo(folder / "fs-fifo.pt")
    (folder / "fs-directory.pt").mkdir()
    os.symlink("/dev/zero", folder / "fs-dev-zero.pt")
    paths += [folder / n for n in ("fs-fifo.pt", "fs-directory.pt", "fs-dev-zero.pt")]
    return paths + [folder / "fs-missing.pt"]


# ---- the entry points -------------------------------------------------------------------------

RECIPE = """\
model: {name: resnet10t, kwargs: {channels: [8, 16, 32, 64], stem_width: 8}}
data: {source: imagefolder, image_size: 32, batch_size: 8, eval_batch_size: 8, num_workers: 0}
optim: {name: sgd, lr: 0.01}
train: {epochs: 1, amp: "off", progress: false}
"""

ENTRY_POINTS = {  # {f}: the hostile file, {data} {image} {recipe} {out}: made by the test
    "eval": ["eval", "--checkpoint", "{f}", "--data-dir", "{data}", "--model", "resnet18"],
    "predict": ["predict", "--checkpoint", "{f}", "--model", "resnet18", "{image}"],
    "export": ["export", "--checkpoint", "{f}", "--model", "resnet18", "{out}/m.onnx"],
    "train-resume": [
        "train",
        "--recipe",
        "{recipe}",
        "--data-dir",
        "{data}",
        "--output-dir",
        "{out}/run",
        "--resume",
        "{f}",
    ],  # fmt: skip
    "train-checkpoint": [
        "train",
        "--recipe",
        "{recipe}",
        "--data-dir",
        "{data}",
        "--output-dir",
        "{out}/run",
        "--set",
        "model.checkpoint={f}",
    ],  # fmt: skip
    "convert-slim": [
        "convert",
        "slim",
        "--model",
        "resnet_v1_50",
        "--checkpoint",
        "{f}",
        "--output",
        "{out}/c.pt",
    ],  # fmt: skip
    "create_model": ["resnet18", "{f}"],  # classzoo.create_model(name, checkpoint=f)
}
MEM_MB = 2048  # address space allowed above what the child maps after importing torch
PER_FILE_S = 60.0  # bounded; typical is < 0.5 s, but building resnet_v1_50 alone took 30 s on
# this loaded 2-core machine (convert slim builds the model before reading the TF files)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(folder.iterdir())}


def _call(entry: str, argv: list[str]) -> int:
    from classzoo.cli import main
    from classzoo.errors import UserError

    if entry != "create_model":
        return main(argv)
    import classzoo

    try:
        classzoo.create_model(argv[0], num_classes=2, checkpoint=argv[1])
    except UserError as exc:
        print(f"classzoo: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _child(spec_path: str) -> None:
    """One entry point over every hostile file, in this process (RLIMIT_AS set after imports)."""
    import contextlib
    import logging
    import resource
    import shutil

    import classzoo.cli  # noqa: F401  (imports before the memory cap)

    spec = json.loads(Path(spec_path).read_text())
    with open("/proc/self/statm") as f:
        limit = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") + MEM_MB * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out, hostile = Path(spec["out"]), Path(spec["hostile"])
    results = []
    for f in spec["files"]:
        out.mkdir(exist_ok=True)
        argv = [a.format(f=f, **spec["values"]) for a in spec["argv"]]
        before = _snapshot(hostile)
        err = io.StringIO()
        logger = logging.getLogger("classzoo")
        for h in list(logger.handlers):
            logger.removeHandler(h)
        t0 = time.monotonic()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = _call(spec["entry"], argv)
            except BaseException:  # noqa: BLE001 - recorded as a failure below
                rc = "raised"
                print(traceback.format_exc(), file=sys.stderr)
        written = [str(p.relative_to(out)) for p in out.rglob("*")]
        results.append(
            {
                "file": Path(f).name,
                "rc": rc,
                "stderr": err.getvalue(),
                "seconds": time.monotonic() - t0,
                "written": written,
                "hostile_changed": _snapshot(hostile) != before,
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    print("RESULTS " + json.dumps(results))


def _problems(r: dict) -> list[str]:
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    found = []
    if r["rc"] != 2:
        found.append(f"exit {r['rc']}")
    if len(lines) != 1 or not lines[0].startswith("classzoo: error: "):
        found.append(f"{len(lines)} stderr lines: {r['stderr'][-300:]!r}")
    elif r["file"].split(".")[0] not in lines[0]:
        found.append(f"error does not name the file: {lines[0]!r}")
    if r["seconds"] > PER_FILE_S:
        found.append(f"{r['seconds']:.1f} s")
    if r["written"] or r["hostile_changed"]:
        found.append(
            f"side effect: wrote {r['written']}, hostile folder changed {r['hostile_changed']}"
        )
    return found


@pytest.fixture(scope="module")
def hostile_setup(tmp_path_factory):
    from conftest import write_imagefolder

    root = tmp_path_factory.mktemp("hostile")
    files = build_hostile(root / "files")
    data = root / "data"
    write_imagefolder(data / "train", dict.fromkeys("ab", 4), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("ab", 2), seed=2)
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    values = {"data": str(data), "image": str(data / "val" / "a" / "00000.png")}
    values["recipe"] = str(recipe)
    return root, files, values


@pytest.mark.slow
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_hostile_files_one_line_exit_2_no_side_effect(entry, hostile_setup):
    root, files, values = hostile_setup
    assert len(files) >= 60
    out = root / f"out-{entry}"
    spec = {
        "entry": entry,
        "argv": ENTRY_POINTS[entry],
        "files": [str(f) for f in files],
        "out": str(out),
        "hostile": str(root / "files"),
        "values": {**values, "out": str(out)},
    }
    spec_path = root / f"{entry}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent / "src")]))
    proc = subprocess.run(
        [sys.executable, __file__, str(spec_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60 + PER_FILE_S * len(files),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    results = json.loads(lines[-1][len("RESULTS ") :])
    bad = {r["file"]: p for r in results if (p := _problems(r))}
    slowest = max(results, key=lambda r: r["seconds"])
    print(f"{entry}: {len(results)} files, slowest {slowest['file']} {slowest['seconds']:.2f} s")
    assert not bad, "\n".join(f"{name}: {'; '.join(p)}" for name, p in bad.items())


if __name__ == "__main__":
    _child(sys.argv[1])
