"""Fuzz targets for classzoo's byte formats and recipes (see harness.py for the contract).

Seeds are files TensorFlow wrote (tests/fuzz/seeds, made by make_seeds.py) and the bundled
recipes. Checksummed containers get structure-aware mutators that write valid CRCs back, so
mutations reach the parsers behind the checksums: SSTable entries are mutated as protobuf
messages and the table rebuilt; V2 data CRCs are recomputed for the entries that still point
inside the data file.
"""

from __future__ import annotations

import contextlib
import os
import random
import struct
import tempfile
from pathlib import Path

from classzoo.config import load_recipe
from classzoo.errors import UserError
from classzoo.formats.crc import masked_crc32c
from classzoo.formats.example import parse_example, parse_example_sparse
from classzoo.formats.sstable import SSTable
from classzoo.formats.tf_checkpoint import format_variables, is_tf_checkpoint, open_tf_checkpoint
from classzoo.formats.tfrecord import TFRecordReader, TFRecordWriter, build_index, read_record_at
from classzoo.formats.wire import (
    FIXED32,
    LENGTH,
    VARINT,
    WireError,
    encode_varint,
    iter_fields,
    key,
)
from fuzz.builders import table
from fuzz.harness import Target, interesting, mutate_bytes

SEEDS = Path(__file__).parent / "seeds"
RECIPES = Path(__file__).resolve().parents[2] / "src" / "classzoo" / "recipes"


def _seed(name: str) -> bytes:
    return (SEEDS / name).read_bytes()


# ---- protobuf-aware mutation ------------------------------------------------------------------


def _encode_field(num: int, wt: int, value) -> bytes:
    if wt == LENGTH:
        return key(num, LENGTH) + encode_varint(len(value)) + bytes(value)
    if wt == VARINT:
        return key(num, VARINT) + encode_varint(value % (1 << 64))
    size = 4 if wt == FIXED32 else 8
    return key(num, wt) + (value % (1 << (8 * size))).to_bytes(size, "little")


def mutate_proto(msg: bytes, rng: random.Random, depth: int = 0) -> bytes:
    """Change one field of a protobuf message (recursing into submessages); bytes otherwise."""
    try:
        fields = list(iter_fields(msg))
    except WireError:
        fields = []
    if not fields or rng.randrange(6) == 0:
        return mutate_bytes(msg, rng, max_ops=3)
    i = rng.randrange(len(fields))
    num, wt, value = fields[i]
    op = rng.randrange(5)
    if op == 0:  # a new value
        if wt == LENGTH:
            value = bytes(value)
            value = mutate_proto(value, rng, depth + 1) if depth < 4 else mutate_bytes(value, rng)
        else:
            value = interesting(rng) * rng.choice([1, 1, -1])
        fields[i] = (num, wt, value)
    elif op == 1:  # the field twice (duplicate scalars / merged messages)
        fields.insert(i, fields[i])
    elif op == 2:  # dropped
        del fields[i]
    elif op == 3:  # another field number
        fields[i] = (rng.randint(1, 20), wt, value)
    else:  # moved to the end
        fields.append(fields.pop(i))
    return b"".join(_encode_field(n, w, bytes(v) if w == LENGTH else v) for n, w, v in fields)


def _entries(data: bytes, folder: Path) -> list[tuple[bytes, bytes]]:
    path = folder / "seed.sst"
    path.write_bytes(data)
    with SSTable(path) as t:
        return [(k, bytes(v)) for k, v in t.items()]


_TABLE_CACHE: dict[bytes, list[tuple[bytes, bytes]]] = {}


def mutate_table(data: bytes, rng: random.Random) -> bytes:
    """Mutate the entries of a (seed) table and rebuild it with valid CRCs, or its raw bytes."""
    entries = _TABLE_CACHE.get(data)
    if entries is None or rng.randrange(4) == 0:
        return mutate_bytes(data, rng)
    entries = list(entries)
    for _ in range(rng.randint(1, 3)):
        if not entries:
            break
        i = rng.randrange(len(entries))
        k, v = entries[i]
        op = rng.randrange(4)
        if op == 0:
            entries[i] = (k, mutate_proto(v, rng))
        elif op == 1:
            entries[i] = (mutate_bytes(k, rng, max_ops=2), v)
        elif op == 2:
            entries.insert(i, (k, v))  # a duplicate key
        else:
            del entries[i]
    split = rng.randint(0, len(entries))
    blocks = [b for b in (entries[:split], entries[split:]) if b]
    return table(blocks, snappy=rng.random() < 0.5)


def _table_seeds(*names: str) -> list[bytes]:
    out = []
    for name in names:
        data = _seed(name)
        _TABLE_CACHE[data] = _entries(data, Path(tempfile.mkdtemp()))
        out.append(data)
    return out


# ---- TFRecord framing --------------------------------------------------------------------------


def _run_tfrecord(data: bytes, folder: Path) -> None:
    path = folder / "shard"
    path.write_bytes(data)
    for skip in (False, True):
        try:
            list(TFRecordReader(path, skip_corrupt=skip))
            build_index(path, skip_corrupt=skip)
        except UserError:
            if skip:
                raise AssertionError("skip_corrupt reader raised") from None
    rows = build_index(path, skip_corrupt=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        for r, (offset, length) in enumerate(rows.tolist()):
            with contextlib.suppress(UserError):
                read_record_at(fd, offset, length, path=str(path), record=r)
    finally:
        os.close(fd)


TFRECORD = Target("tfrecord", seeds=lambda: [_seed("records.tfrecord")], run=_run_tfrecord)


# ---- tf.train.Example --------------------------------------------------------------------------

KEYS = ["image/encoded", "image/class/label", "label", "image"]


def _parse_both(data: bytes):
    """parse_example and the on-demand parser must agree: same values or both refuse."""
    results = []
    for parse in (
        lambda: parse_example(data),
        lambda: parse_example(data, KEYS),
        lambda: parse_example_sparse(lambda p, n: data[p : p + n], len(data), KEYS, chunk=7),
    ):
        try:
            out = parse()
            results.append(
                {
                    k: [bytes(x) for x in v] if isinstance(v, list) else v.tobytes()
                    for k, v in out.items()
                }
            )
        except WireError:
            results.append(None)
    full, wanted, sparse = results
    assert (wanted is None) == (sparse is None) and wanted == sparse, "sparse parse differs"
    if full is not None:
        assert wanted == {k: v for k, v in full.items() if k in KEYS}, "keys= parse differs"


def _import_dataset() -> None:
    import classzoo.data.tfrecord_dataset  # noqa: F401 - torch, imported before the memory cap


def _run_example(data: bytes, folder: Path) -> None:
    from classzoo.data.tfrecord_dataset import TFRecordImageDataset

    _parse_both(data)
    path = folder / "one.tfrecord"
    for stale in folder.glob(".one.tfrecord*"):
        stale.unlink()
    with TFRecordWriter(path) as w:
        w.write(data)
    pick = masked_crc32c(data) % 4  # one of the four dataset set-ups per input, by content
    image_key, label_key = (("image/encoded", "image/class/label"), ("image", "label"))[pick % 2]
    ds = TFRecordImageDataset(
        [path], skip_corrupt=pick >= 2, image_key=image_key, label_key=label_key
    )
    for call in (ds.label_range, lambda: ds[0], lambda: ds.check_labels(10)):
        with contextlib.suppress(UserError):
            call()


def _mutate_example(data: bytes, rng: random.Random) -> bytes:
    return mutate_proto(data, rng) if rng.random() < 0.5 else mutate_bytes(data, rng)


EXAMPLE = Target(
    "example",
    seeds=lambda: [_seed("example_0.bin"), _seed("example_1.bin")],
    run=_run_example,
    mutate=_mutate_example,
    setup=_import_dataset,
)


# ---- SSTable ----------------------------------------------------------------------------------


def _run_sstable(data: bytes, folder: Path) -> None:
    path = folder / "t.sst"
    path.write_bytes(data)
    with SSTable(path) as t:
        keys = [k for k, _ in t.items()]
        t.first()
        for k in keys[:8] + [b"", b"\xff" * 4]:
            t.get(k)


SSTABLE = Target(
    "sstable",
    seeds=lambda: _table_seeds("v1.ckpt", "v2.index"),
    run=_run_sstable,
    mutate=mutate_table,
)


# ---- TF checkpoints ---------------------------------------------------------------------------


def _read_checkpoint(path: Path) -> None:
    is_tf_checkpoint(path)
    with open_tf_checkpoint(path) as ckpt:
        format_variables(ckpt)
        for name in ckpt.variables():
            with contextlib.suppress(UserError):
                ckpt.read(name)


def _run_v1(data: bytes, folder: Path) -> None:
    path = folder / "model.ckpt"
    path.write_bytes(data)
    _read_checkpoint(path)


TF_V1 = Target(
    "tf-checkpoint-v1", seeds=lambda: _table_seeds("v1.ckpt"), run=_run_v1, mutate=mutate_table
)


def _pack_v2(index: bytes, data: bytes) -> bytes:
    return struct.pack("<I", len(index)) + index + data


def _unpack_v2(blob: bytes) -> tuple[bytes, bytes]:
    n = struct.unpack_from("<I", blob.ljust(4, b"\0"))[0]
    return blob[4 : 4 + n], blob[4 + n :]


def _fix_crcs(index: bytes, data: bytes, folder: Path) -> bytes:
    """Recompute each entry's crc32c (field 6) over the bytes it points at, where it can."""
    try:
        entries = _entries(index, folder)
    except UserError:
        return index
    fixed = []
    for k, v in entries:
        try:
            fields = list(iter_fields(v))
        except WireError:
            fixed.append((k, v))
            continue
        at = {n: val for n, wt, val in fields if wt == VARINT}
        off, size = at.get(4, 0), at.get(5, 0)
        if k and off + size <= len(data):
            crc = masked_crc32c(data[off : off + size])
            fields = [f for f in fields if f[0] != 6] + [(6, FIXED32, crc)]
        fixed.append(
            (k, b"".join(_encode_field(n, w, bytes(x) if w == LENGTH else x) for n, w, x in fields))
        )
    return table([fixed]) if fixed else index


def _mutate_v2(blob: bytes, rng: random.Random) -> bytes:
    index, data = _unpack_v2(blob)
    if rng.random() < 0.5:
        index = mutate_table(index, rng)
    if rng.randrange(3) == 0:
        data = mutate_bytes(data, rng)
    if rng.random() < 0.5:
        index = _fix_crcs(index, data, Path(tempfile.gettempdir()))
    return _pack_v2(index, data)


def _run_v2(blob: bytes, folder: Path) -> None:
    index, data = _unpack_v2(blob)
    (folder / "model.ckpt.index").write_bytes(index)
    (folder / "model.ckpt.data-00000-of-00001").write_bytes(data)
    _read_checkpoint(folder / "model.ckpt")


def _v2_seeds() -> list[bytes]:
    index = _table_seeds("v2.index")[0]
    return [_pack_v2(index, _seed("v2.data-00000-of-00001"))]


TF_V2 = Target("tf-checkpoint-v2", seeds=_v2_seeds, run=_run_v2, mutate=_mutate_v2)


# ---- recipes ----------------------------------------------------------------------------------

NASTY = ["-1", "0", "1e309", "-1e309", ".nan", ".inf", "[]", "{}", "null", "~", "true", "'x'",
         "99999999999999999999999", "[1, [2, [3]]]", "{a: 1}", "!!binary aGVsbG8=", "&a [*a]",
         "'" + "x" * 5000 + "'", "2**64", "0x10", "1_000", "!!python/object/apply:os.system ['true']"]  # fmt: skip
ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "model: {name: resnet50, kwargs: {x: *f}}\n"
)


def _mutate_recipe(text: bytes, rng: random.Random) -> bytes:
    if rng.randrange(3) == 0:
        return mutate_bytes(text, rng)
    lines = text.decode("utf-8", "replace").splitlines()
    for _ in range(rng.randint(1, 4)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        op = rng.randrange(3)
        if op == 0 and ":" in lines[i]:
            head = lines[i].split(":", 1)[0]
            lines[i] = f"{head}: {rng.choice(NASTY)}"
        elif op == 1:
            lines.insert(i, lines[i])  # a duplicate key
        else:
            del lines[i]
    return "\n".join(lines).encode()


def _run_recipe(data: bytes, folder: Path) -> None:
    path = folder / "recipe.yaml"
    path.write_bytes(data)
    load_recipe(str(path))


def _recipe_seeds() -> list[bytes]:
    """The bundled recipes without their comment lines (same YAML; parsing cost is per byte)."""
    seeds = []
    for p in sorted(RECIPES.glob("*.yaml")):
        lines = [
            ln
            for ln in p.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")
        ]
        seeds.append("\n".join(lines).encode())
    return seeds + [ALIAS_BOMB.encode()]


RECIPE = Target("recipe", seeds=_recipe_seeds, run=_run_recipe, mutate=_mutate_recipe)
