"""Hostile inputs that broke the parsers (issue 11 items 4 and 5, and the fuzz harness), kept
as regression cases: each one is a one-line classzoo error, in bounded time and memory.

Outside truths: the byte layouts (tensor_bundle.proto, saved_tensor_slice.proto, LevelDB
block format, snappy format_description.txt) and, for the Example cases, what
``tf.io.parse_single_example`` returns for the same bytes (tests/test_tfrecord_tf.py).
"""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

from classzoo.errors import UserError
from classzoo.formats.crc import masked_crc32c
from classzoo.formats.errors import FormatError
from classzoo.formats.example import build_example
from classzoo.formats.sstable import SSTable
from classzoo.formats.tf_checkpoint import is_tf_checkpoint, open_tf_checkpoint, slice_key
from classzoo.formats.tfrecord import TFRecordWriter
from classzoo.formats.wire import encode_varint as varint
from classzoo.formats.wire import key, length_delimited
from fuzz.builders import MAGIC, on_disk, table

MIB = 1 << 20


def _bounded(fn, *, seconds: float = 2.0, mib: float = 32):
    """Run ``fn`` and check it used little time and memory; returns what it raised (or None)."""
    tracemalloc.start()
    start = time.process_time()
    try:
        fn()
        raised = None
    except Exception as exc:  # noqa: BLE001 - the caller checks the type
        raised = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.process_time() - start < seconds
    assert peak < mib * MIB, f"peak {peak / MIB:.0f} MiB"
    return raised


def _one_line_error(fn, match: str, kind=FormatError) -> str:
    exc = _bounded(fn)
    assert isinstance(exc, kind), repr(exc)
    assert "\n" not in str(exc)
    assert match in str(exc), str(exc)
    return str(exc)


def _shape(*dims: int) -> bytes:
    return b"".join(length_delimited(2, key(1, 0) + varint(d)) for d in dims)


def _v2(tmp_path: Path, header: bytes, entries: list[tuple[bytes, bytes]], data: bytes) -> str:
    prefix = str(tmp_path / "m")
    Path(prefix + ".index").write_bytes(table([[(b"", header), *entries]]))
    Path(prefix + ".data-00000-of-00001").write_bytes(data)
    return prefix


ONE_SHARD = key(1, 0) + varint(1)


def _entry(dtype: int, dims: tuple[int, ...], offset: int, size: int, data: bytes = b"") -> bytes:
    return (
        key(1, 0) + varint(dtype) + length_delimited(2, _shape(*dims))
        + key(4, 0) + varint(offset) + key(5, 0) + varint(size)
        + key(6, 5) + struct.pack("<I", masked_crc32c(data))
    )  # fmt: skip


# ---- TF checkpoint V2 ---------------------------------------------------------------------------


def test_v2_shard_count_2_pow_40(tmp_path):
    prefix = _v2(tmp_path, key(1, 0) + varint(2**40), [], b"")
    _one_line_error(lambda: open_tf_checkpoint(prefix), "declares 1099511627776 data shards")


def test_v2_size_beyond_the_file_is_not_allocated(tmp_path):
    prefix = _v2(tmp_path, ONE_SHARD, [(b"w", _entry(1, (2**38,), 0, 2**40))], bytes(8))
    with open_tf_checkpoint(prefix) as ckpt:
        _one_line_error(lambda: ckpt.read("w"), "needs bytes [0, 1099511627776) but the file has 8")


def test_v2_shape_product_that_wraps_in_int64(tmp_path):
    # 2**62 * 4 elements * 4 bytes wraps to 0 in 64-bit arithmetic: size 0 must not pass
    prefix = _v2(tmp_path, ONE_SHARD, [(b"w", _entry(1, (2**62, 4), 0, 0))], b"")
    with open_tf_checkpoint(prefix) as ckpt:
        _one_line_error(lambda: ckpt.read("w"), "says 0 bytes of DataType 1")


def test_v2_repeated_shape_field_merges_like_protobuf(tmp_path):
    """shape given twice: protobuf merges the messages (dims concatenate), as TF's parser does."""
    data = bytes(24)
    entry = (
        key(1, 0) + varint(1) + length_delimited(2, _shape(2)) + length_delimited(2, _shape(3))
        + key(5, 0) + varint(24) + key(6, 5) + struct.pack("<I", masked_crc32c(data))
    )  # fmt: skip
    prefix = _v2(tmp_path, ONE_SHARD, [(b"w", entry)], data)
    with open_tf_checkpoint(prefix) as ckpt:
        assert ckpt.read("w").shape == (2, 3)


# ---- TF checkpoint V1 ---------------------------------------------------------------------------


def _v1(tmp_path: Path, name: bytes, dims: tuple[int, ...], extents: bytes, values: bytes) -> str:
    meta = length_delimited(
        1,
        length_delimited(
            1,
            length_delimited(1, name) + length_delimited(2, _shape(*dims)) + key(3, 0) + varint(1)
            + length_delimited(4, extents),
        ),
    )  # fmt: skip
    saved = length_delimited(1, name) + length_delimited(2, extents) + length_delimited(3, values)
    entries = [(b"", meta), (slice_key(name.decode(), ((0, 1),)), length_delimited(2, saved))]
    path = tmp_path / "v1.ckpt"
    path.write_bytes(table([sorted(entries)]))
    return str(path)


def test_v1_one_element_slice_of_a_huge_shape(tmp_path):
    extent = length_delimited(1, key(1, 0) + varint(0) + key(2, 0) + varint(1))
    path = _v1(tmp_path, b"w", (2**40,), extent, length_delimited(5, struct.pack("<f", 1.0)))
    with open_tf_checkpoint(path) as ckpt:
        _one_line_error(lambda: ckpt.read("w"), "hold 1 values, its shape [1099511627776] needs")


def test_v1_seventy_bit_varint_and_start_past_2_pow_64(tmp_path):
    seventy = b"\xff" * 10 + b"\x01"  # 11 bytes: refused, never silently truncated
    extent = length_delimited(1, key(1, 0) + seventy)
    path = _v1(tmp_path, b"w", (4,), extent, b"")
    _one_line_error(lambda: open_tf_checkpoint(path), "varint longer than 10 bytes")
    start = b"\xff" * 9 + b"\x01"  # 2**64 - 1: int64 -1 after TF's wrap
    extent = length_delimited(1, key(1, 0) + start + key(2, 0) + varint(1))
    path = _v1(tmp_path, b"w", (4,), extent, length_delimited(5, struct.pack("<f", 1.0)))
    with open_tf_checkpoint(path) as ckpt:
        _one_line_error(lambda: ckpt.read("w"), "slice [-1:0] of 'w' is outside its 4")


def test_state_file_with_a_bad_escape(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model\\x"\n')
    assert _bounded(lambda: is_tf_checkpoint(tmp_path)) is None
    assert is_tf_checkpoint(tmp_path) is False
    _one_line_error(lambda: open_tf_checkpoint(tmp_path), "bad escape in model_checkpoint_path")


# ---- SSTable and Snappy -------------------------------------------------------------------------


def _raw_table(contents: bytes, kind: int) -> bytes:
    out = on_disk(contents, kind)
    index = varint(0) + varint(len(contents))
    index_block = varint(0) + varint(1) + varint(len(index)) + b"z" + index
    index_block += struct.pack("<II", 0, 1)
    idx = on_disk(index_block)
    handles = varint(0) + varint(0) + varint(len(out)) + varint(len(index_block))
    return out + idx + handles.ljust(40, b"\0") + MAGIC


def test_snappy_declared_size_is_bounded(tmp_path):
    path = tmp_path / "t.sst"
    # declares 10**9 bytes from a 6-byte stream: more than any Snappy stream can expand
    path.write_bytes(_raw_table(varint(10**9) + b"\x00a", kind=1))
    with SSTable(path) as t:
        _one_line_error(lambda: list(t.items()), "snappy header declares 1000000000 bytes")
    # a copy that would run past the declared length stops there
    path.write_bytes(_raw_table(varint(3) + b"\x00a" + b"\xfe\x01\x00", kind=1))
    with SSTable(path) as t:
        _one_line_error(lambda: list(t.items()), "runs past its declared 3 bytes")


def test_prefix_compressed_keys_cannot_expand_without_bound(tmp_path):
    """Each entry repeats the whole previous key plus one byte: 4 bytes on disk, a key of
    up to 60 KB in memory. Refused once keys pass 16x the block size (+1 MiB)."""
    first = b"k" * 60_000
    entries = varint(0) + varint(len(first)) + varint(0) + first
    n = 0
    while len(entries) < 100_000:
        entries += varint(len(first) + n) + varint(1) + varint(0) + b"x"
        n += 1
    contents = entries + struct.pack("<II", 0, 1)
    path = tmp_path / "t.sst"
    path.write_bytes(_raw_table(contents, kind=0))
    with SSTable(path) as t:
        _one_line_error(lambda: list(t.items()), "keys expand to more than 16x the block size")


# ---- Example / TFRecord (issue 11 item 5) -------------------------------------------------------


def _record(tmp_path: Path, example: bytes) -> Path:
    path = tmp_path / "train-00000-of-00001"
    with TFRecordWriter(path) as w:
        w.write(example)
    return path


def _ex(*entries: bytes) -> bytes:
    return length_delimited(1, b"".join(length_delimited(1, e) for e in entries))


def _int64_feature(raw_varints: bytes) -> bytes:
    return length_delimited(3, length_delimited(1, raw_varints))


def test_label_varint_above_2_pow_64_wraps_like_tensorflow(tmp_path):
    from classzoo.data.tfrecord_dataset import TFRecordImageDataset

    label = b"\x85" + b"\x80" * 8 + b"\x02"  # 5 + 2**64: TF reads 5
    image = length_delimited(1, length_delimited(1, b"\xff\xd8"))
    example = _ex(
        length_delimited(1, b"image/class/label") + length_delimited(2, _int64_feature(label)),
        length_delimited(1, b"image/encoded") + length_delimited(2, image),
    )
    assert TFRecordImageDataset([_record(tmp_path, example)]).label_range() == (5, 5)


def test_malformed_examples_are_one_line_errors_and_skippable(tmp_path):
    from classzoo.data.tfrecord_dataset import TFRecordImageDataset

    good = build_example({"image/encoded": b"\xff\xd8", "image/class/label": 1})
    two_values = _ex(
        length_delimited(1, b"image/class/label")
        + length_delimited(2, _int64_feature(b"\x01"))
        + length_delimited(2, _int64_feature(b"\x02"))
    )
    path = tmp_path / "s"
    with TFRecordWriter(path) as w:
        w.write(two_values)  # TF refuses a map entry with two values: so does classzoo
        w.write(good)
    ds = TFRecordImageDataset([path])
    _one_line_error(lambda: ds[0], "bad Example (map entry is not one key and one value", UserError)
    _one_line_error(ds.label_range, "is not a readable tf.train.Example", UserError)
    skipping = TFRecordImageDataset([path], skip_corrupt=True)
    assert skipping.label_range() == (1, 1)


def test_missing_key_message_survives_a_malformed_neighbour(tmp_path):
    """The error names the features even when one of them is malformed (it used to raise a
    WireError while building the message)."""
    from classzoo.data.tfrecord_dataset import TFRecordImageDataset

    example = _ex(
        length_delimited(1, b"label") + length_delimited(2, _int64_feature(b"\x03")),
        length_delimited(1, b"junk") + length_delimited(2, b"\x22\x00"),  # unknown kind byte
    )
    path = _record(tmp_path, example)
    _one_line_error(
        lambda: TFRecordImageDataset([path], label_key="label"),
        "no feature 'image/encoded' (data.image_key); its features: junk, label",
        UserError,
    )


# ---- recipes ------------------------------------------------------------------------------------


def test_recipe_that_is_not_utf8(tmp_path):
    from classzoo.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_bytes(b"model:\n  name: resnet50\xff\n")
    _one_line_error(lambda: load_recipe(str(path)), "r.yaml", UserError)
