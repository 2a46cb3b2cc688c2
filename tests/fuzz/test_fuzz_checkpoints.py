"""Fuzz classzoo's own weight files (harness.py): >= 10,000 mutated inputs per target.

* ``classzoo-checkpoint``: signed training checkpoints, byte mutations: the SHA-256 trailer
  must refuse every one (a mutation that loads would be a digest miss).
* ``classzoo-checkpoint-resigned``: one zip entry (the pickle, a storage, the version) mutated,
  the zip rebuilt and signed again, so mutations reach the zip bounds, the weights-only
  unpickler, torch's storage checks and the schema.
* ``safetensors``: signed and unsigned files, byte mutations.
* ``safetensors-header``: unsigned files whose JSON header is mutated field by field (offsets,
  shapes, dtypes, names, metadata; interesting integers) and re-framed with a correct length,
  so mutations reach safetensors' own header checks and the state-dict schema.

A finding is any exception other than UserError, an input over 5 s, or memory past 1 GiB.
Inputs that load are fine (a mutated float is still a float); what must not happen is an
exception, a hang, or a load of a signed file whose bytes changed (checked by the first and
third targets: ``run`` raises AssertionError, a finding, if a mutated signed file loads).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import struct
import zipfile
from pathlib import Path

import pytest

from fuzz.harness import Target, fuzz, interesting, mutate_bytes

INPUTS = int(os.environ.get("CLASSZOO_FUZZ_INPUTS", "10000"))


def _import_torch() -> None:
    import torch  # noqa: F401  (before the harness's memory cap)

    import classzoo.formats.safetensors_file  # noqa: F401
    import classzoo.formats.torch_checkpoint  # noqa: F401


def _payload(seed: int) -> dict:
    import torch

    from classzoo.engine.state import rng_state

    g = torch.Generator().manual_seed(seed)
    model = {
        "conv1.weight": torch.randn(4, 3, 3, 3, generator=g),
        "bn1.weight": torch.ones(4),
        "bn1.running_var": torch.ones(4),
        "bn1.num_batches_tracked": torch.tensor(3),
        "fc.weight": torch.randn(2, 4, generator=g, dtype=torch.float16),
        "fc.bias": torch.zeros(2),
    }
    return {
        "model": model,
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.zeros(4, 3, 3, 3)}},
            "param_groups": [{"params": [0], "lr": 0.1}],
        },  # fmt: skip
        "rng": [rng_state()],
        "progress": {"step": seed, "epoch": 0, "sample": 8, "world_size": 1},
        "config": {"model": {"name": "resnet10t", "num_classes": 2}, "data": {"image_size": 32}},
        "classes": ["a", "b"],
        "metrics": {"top1": 50.0},
    }


def _signed_bytes(payload) -> bytes:
    import tempfile

    from classzoo.formats.torch_checkpoint import save_checkpoint_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.pt"
        save_checkpoint_file(payload, path)
        return path.read_bytes()


def _ckpt_seeds() -> list[bytes]:
    return [_signed_bytes(_payload(s)) for s in (1, 2)]


def _run_ckpt(data: bytes, folder: Path) -> None:
    from classzoo.formats.torch_checkpoint import load_checkpoint_file, verify_checkpoint_file

    path = folder / "c.pt"
    path.write_bytes(data)
    load_checkpoint_file(path)
    if verify_checkpoint_file(path) is not None:  # (several mutations can strip the comment)
        assert data in _SEEDS_SEEN, "a mutated signed checkpoint loaded"


_SEEDS_SEEN: set[bytes] = set()


def _ckpt_seeds_remembered() -> list[bytes]:
    seeds = _ckpt_seeds()
    _SEEDS_SEEN.update(seeds)
    return seeds


CKPT = Target(
    "classzoo-checkpoint", seeds=_ckpt_seeds_remembered, run=_run_ckpt, setup=_import_torch
)

# ---- mutate inside the zip, then sign again ------------------------------------------------------

_COMMENT_LEN = 81  # classzoo.formats.torch_checkpoint.COMMENT_LEN


def _sign(zip_bytes: bytes) -> bytes:
    """A torch zip with its empty comment replaced by classzoo's digest comment."""
    if len(zip_bytes) < 22 or zip_bytes[-22:-18] != b"PK\x05\x06":
        return zip_bytes  # mutated beyond a zip end: unsigned, as it is
    body = zip_bytes[:-2] + struct.pack("<H", _COMMENT_LEN)
    return body + b"classzoo-sha256:" + hashlib.sha256(body).hexdigest().encode() + b"\n"


def _mutate_entry(data: bytes, rng: random.Random) -> bytes:
    unsigned = data[:-_COMMENT_LEN]
    unsigned = unsigned[:-2] + b"\x00\x00"
    with zipfile.ZipFile(io.BytesIO(unsigned)) as z:
        entries = {i.filename: z.read(i.filename) for i in z.infolist()}
    names = list(entries)
    pkl = next(n for n in names if n.endswith("data.pkl"))
    name = pkl if rng.random() < 0.6 else rng.choice(names)
    entries[name] = mutate_bytes(entries[name], rng, max_ops=3)
    if rng.random() < 0.1:  # drop or duplicate an entry
        victim = rng.choice(names)
        entries[victim + ("" if rng.random() < 0.5 else "x")] = entries.pop(victim)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for n, v in entries.items():
            z.writestr(n, v)
    rebuilt = out.getvalue()
    if rng.random() < 0.1:
        rebuilt = mutate_bytes(rebuilt, rng, max_ops=2)
    return _sign(rebuilt)


def _run_resigned(data: bytes, folder: Path) -> None:
    from classzoo.formats.torch_checkpoint import load_checkpoint_file

    path = folder / "c.pt"
    path.write_bytes(data)
    load_checkpoint_file(path)


CKPT_RESIGNED = Target(
    "classzoo-checkpoint-resigned",
    seeds=_ckpt_seeds,
    run=_run_resigned,
    mutate=_mutate_entry,
    setup=_import_torch,
)

# ---- safetensors ---------------------------------------------------------------------------------


def _st_seeds(signed: bool) -> list[bytes]:
    import tempfile

    from safetensors.torch import save

    from classzoo.formats.safetensors_file import save_safetensors_file

    out = []
    for s in (1, 2):
        state = {k: v.contiguous() for k, v in _payload(s)["model"].items()}
        if not signed:
            out.append(save(state, metadata={"model": "resnet10t"}))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            save_safetensors_file(state, Path(tmp) / "w.safetensors", {"model": "resnet10t"})
            out.append((Path(tmp) / "w.safetensors").read_bytes())
    return out


_SIGNED_ST: set[bytes] = set()


def _st_all_seeds() -> list[bytes]:
    signed = _st_seeds(True)
    _SIGNED_ST.update(signed)
    return signed + _st_seeds(False)


def _run_st(data: bytes, folder: Path) -> None:
    from classzoo.formats.safetensors_file import load_safetensors_file, verify_safetensors_file

    path = folder / "w.safetensors"
    path.write_bytes(data)
    load_safetensors_file(path)
    if verify_safetensors_file(path) is not None:
        assert data in _SIGNED_ST, "a mutated signed safetensors file loaded"


SAFETENSORS = Target("safetensors", seeds=_st_all_seeds, run=_run_st, setup=_import_torch)


def _mutate_header(data: bytes, rng: random.Random) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8 : 8 + n]), data[8 + n :]
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = header[name]
    choice = rng.randrange(8)
    if choice == 0:
        entry["data_offsets"][rng.randrange(2)] = interesting(rng)
    elif choice == 1 and entry["shape"]:
        entry["shape"][rng.randrange(len(entry["shape"]))] = interesting(rng)
    elif choice == 2:
        entry["shape"] = entry["shape"] + [interesting(rng) % 5]
    elif choice == 3:
        entry["dtype"] = rng.choice(["I8", "U8", "BOOL", "C64", "F64", "BF16", "F8_E4M3", "Q4", ""])
    elif choice == 4:
        header[name + rng.choice(["", ".weight", "\x00", "é"])] = header.pop(name)
    elif choice == 5:
        header["__metadata__"] = rng.choice([{"a": "b"}, {"classzoo.sha256": "0" * 64}, [], 7])
    elif choice == 6:
        header[rng.choice(names)] = rng.choice([None, 1, [], "x", {"dtype": "F32"}])
    else:
        body = mutate_bytes(body, rng, max_ops=2) if body else body
    raw = json.dumps(header).encode()
    if rng.random() < 0.2:
        raw = mutate_bytes(raw, rng, max_ops=2)
    return struct.pack("<Q", len(raw)) + raw + body


SAFETENSORS_HEADER = Target(
    "safetensors-header",
    seeds=lambda: _st_seeds(False),
    run=_run_st,
    mutate=_mutate_header,
    setup=_import_torch,
)

# (target, time box in seconds: ~4x the wall time measured on this loaded 2-core machine:
# 23 s, 56 s, 13 s and 21 s for 10,000 inputs, 0 findings)
TARGETS = [
    pytest.param("CKPT", 90, id="classzoo-checkpoint"),
    pytest.param("CKPT_RESIGNED", 240, id="classzoo-checkpoint-resigned"),
    pytest.param("SAFETENSORS", 60, id="safetensors"),
    pytest.param("SAFETENSORS_HEADER", 90, id="safetensors-header"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "box"), TARGETS)
def test_fuzz_checkpoints(name, box):
    report = fuzz(f"fuzz.test_fuzz_checkpoints:{name}", inputs=INPUTS, seconds=box)
    print(report.summary())
    assert report.ok, report.summary()
    assert report.inputs >= INPUTS, f"only {report.inputs} inputs in the {box} s time box"
