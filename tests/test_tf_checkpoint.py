"""TF checkpoint reading without TensorFlow: SSTable container, V1 TensorSlice and V2 bundle.

Outside truths: byte layouts hand-written from tf_slim_compat.md section 4 (no TF needed), keys
and files written by TensorFlow's own savers (``compat``), published CRC-32C test vectors.
"""

from __future__ import annotations

import glob
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from classzoo.errors import UserError
from classzoo.formats.crc import crc32c, mask, masked_crc32c, unmask
from classzoo.formats.snappy import snappy_decompress
from classzoo.formats.sstable import SSTable
from classzoo.formats.tf_checkpoint import (
    format_variables,
    is_tf_checkpoint,
    open_tf_checkpoint,
    slice_key,
)
from classzoo.formats.wire import encode_varint as varint
from classzoo.formats.wire import key, length_delimited
from fuzz.builders import MAGIC, block, on_disk, table

_block, _on_disk, _table = block, on_disk, table


def test_hand_table_writer_matches_documented_bytes():
    # Two entries sharing "ab": shared=2 for the second; empty block = 00000000 01000000.
    assert _block([(b"abc", b"x"), (b"abd", b"y")]) == bytes.fromhex(
        "000301" + b"abc".hex() + b"x".hex() + "020101" + b"d".hex() + b"y".hex() + "00000000"
        "01000000"
    )
    assert _block([]) == bytes.fromhex("0000000001000000")


# ---------------------------------------------------------------------------------------------
# CRC, Snappy, SSTable (no TensorFlow)


def test_crc32c_and_mask_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4: 32 bytes of 0xff
    # By hand: ror15(0xE3069283) = 0x2507C60D; + 0xA282EAD8 = 0xC78AB0E5 (mod 2**32)
    assert mask(0xE3069283) == 0xC78AB0E5
    assert unmask(0xC78AB0E5) == 0xE3069283
    assert mask(0) == 0xA282EAD8 == masked_crc32c(b"")


def test_snappy_hand_streams():
    # len 10 | literal "abc" (tag (3-1)<<2) | copy1 len 7 offset 3 (tag ((7-4)<<2)|1) = overlap
    assert snappy_decompress(b"\x0a\x08abc\x0d\x03") == b"abcabcabca"
    # len 8 | literal "abcd" | copy2 len 4 offset 4 (tag ((4-1)<<2)|2, offset 04 00)
    assert snappy_decompress(b"\x08\x0cabcd\x0e\x04\x00") == b"abcdabcd"
    # len 6 | literal "xy" | copy4 len 4 offset 2 (tag ((4-1)<<2)|3, offset 02 00 00 00)
    assert snappy_decompress(b"\x06\x04xy\x0f\x02\x00\x00\x00") == b"xyxyxy"
    # a 100-byte literal: tag 60<<2, then (length - 1) in one byte
    assert snappy_decompress(b"\x64\xf0\x63" + b"z" * 100) == b"z" * 100
    with pytest.raises(ValueError, match="offset"):
        snappy_decompress(b"\x05\x00a\x0d\x05")  # copy from before the start
    with pytest.raises(ValueError, match="header says"):
        snappy_decompress(b"\x05\x08abc")


def _entries(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(b"key/%05d" % i, b"value-%d" % (i * i)) for i in range(start, start + n)]


def test_sstable_reads_hand_built_table(tmp_path):
    blocks = [_entries(40), _entries(3, 40), _entries(17, 43)]  # 40 > one restart run
    path = tmp_path / "t.sst"
    path.write_bytes(_table(blocks))
    want = [e for b in blocks for e in b]
    with SSTable(path) as t:
        assert t.num_blocks == 3
        assert [(k, bytes(v)) for k, v in t.items()] == want
        for k, v in reversed(want):
            assert bytes(t.get(k)) == v
        for missing in (b"", b"key/00040x", b"key/9", b"zzz"):
            assert t.get(missing) is None


def test_sstable_reads_snappy_blocks(tmp_path):
    path = tmp_path / "s.sst"
    path.write_bytes(_table([_entries(20)], snappy=True))
    with SSTable(path) as t:
        assert [(k, bytes(v)) for k, v in t.items()] == _entries(20)


def test_sstable_corruption_names_file_and_offset(tmp_path):
    good = _table([_entries(5), _entries(5, 5)])
    second_block = len(_on_disk(_block(_entries(5))))
    path = tmp_path / "bad.sst"
    bad = bytearray(good)
    bad[second_block + 3] ^= 0x01
    path.write_bytes(bytes(bad))
    with SSTable(path) as t, pytest.raises(UserError, match=f"bad.sst.*CRC.*byte {second_block}"):
        list(t.items())
    path.write_bytes(good[:-1])
    with pytest.raises(UserError, match=f"bad.sst.*magic.*byte {len(good) - 9}"):
        SSTable(path)
    # a footer whose index handle points past the end of the file
    footer = (varint(0) + varint(8) + varint(10**6) + varint(30)).ljust(40, b"\0") + MAGIC
    path.write_bytes(good[:-48] + footer)
    with pytest.raises(
        UserError, match="bad.sst: block of 30 bytes.*past the end.*at byte 1000000"
    ):
        SSTable(path)


def test_slice_keys_match_tensorflow_bytes():
    # Keys copied from a V1 file written by tf.compat.v1.train.Saver (TF 2.21): variable "a"
    # [3, 4] whole, and partition rows 3..4 of "part" [7, 3].
    assert slice_key("a", ((0, -1), (0, -1))) == bytes.fromhex("006100010102807f807f")
    assert slice_key("part", ((3, 2), (0, 3))) == b"\x00part\x00\x01\x01\x02\x83\x82\x80\x83"
    assert slice_key("scalar", ()) == b"\x00scalar\x00\x01\x00"


# ---------------------------------------------------------------------------------------------
# Hand-built checkpoints (no TensorFlow): V2 bundle and V1 TensorSlice file

W = np.array([[1.0, -2.0, 0.5], [np.inf, -0.0, 3.25]], np.float32)


def _shape_proto(shape: tuple[int, ...]) -> bytes:
    return b"".join(length_delimited(2, key(1, 0) + varint(d)) for d in shape)


def _write_v2(prefix: str) -> None:
    """BundleHeaderProto + BundleEntryProtos (tensor_bundle.proto) and the raw data file."""
    w_bytes, step_bytes = W.tobytes(), np.int64(-7).tobytes()
    header = key(1, 0) + varint(1) + length_delimited(3, key(1, 0) + varint(1))
    w_entry = (
        key(1, 0) + varint(1)  # DT_FLOAT
        + length_delimited(2, _shape_proto(W.shape))
        + key(5, 0) + varint(len(w_bytes))
        + key(6, 5) + struct.pack("<I", masked_crc32c(w_bytes))
    )  # fmt: skip
    step_entry = (
        key(1, 0) + varint(9)  # DT_INT64, shape [] (no dims)
        + length_delimited(2, b"")
        + key(4, 0) + varint(len(w_bytes))
        + key(5, 0) + varint(8)
        + key(6, 5) + struct.pack("<I", masked_crc32c(step_bytes))
    )  # fmt: skip
    entries = [(b"", header), (b"global_step", step_entry), (b"model/w", w_entry)]
    Path(prefix + ".index").write_bytes(_table([entries]))
    Path(prefix + ".data-00000-of-00001").write_bytes(w_bytes + step_bytes)


def _write_v1(path: str, unpacked: bool = False) -> None:
    """SavedTensorSlices (saved_tensor_slice.proto): meta under "", then one SavedSlice each."""
    full = length_delimited(1, b"") * 2  # two extents without length = whole dims
    metas = length_delimited(
        1,
        length_delimited(1, b"model/w")
        + length_delimited(2, _shape_proto(W.shape))
        + key(3, 0) + varint(1)
        + length_delimited(4, full),
    ) + length_delimited(
        1,
        length_delimited(1, b"n")
        + length_delimited(2, _shape_proto((3,)))
        + key(3, 0) + varint(3)  # DT_INT32
        + length_delimited(4, length_delimited(1, b"")),
    )  # fmt: skip
    meta = length_delimited(1, metas)
    if unpacked:  # float_val as five-byte fixed32 elements (tag 0x2d), legal protobuf
        floats = b"".join(key(5, 5) + struct.pack("<f", x) for x in W.ravel())
    else:
        floats = length_delimited(5, W.tobytes())
    ints = length_delimited(7, varint(-1) + varint(5) + varint(-(2**31)))  # int32 as int64

    def record(name: bytes, sl: bytes, values: bytes) -> bytes:
        saved = length_delimited(1, name) + length_delimited(2, sl) + length_delimited(3, values)
        return length_delimited(2, saved)

    entries = [
        (b"", meta),
        (slice_key("model/w", ((0, -1), (0, -1))), record(b"model/w", full, floats)),
        (slice_key("n", ((0, -1),)), record(b"n", length_delimited(1, b""), ints)),
    ]
    entries.sort()
    Path(path).write_bytes(_table([entries[:2], entries[2:]]))


def test_hand_built_v2_bundle(tmp_path):
    prefix = str(tmp_path / "model.ckpt")
    _write_v2(prefix)
    for p in (prefix, prefix + ".index", prefix + ".data-00000-of-00001", str(tmp_path)):
        assert is_tf_checkpoint(p)
        with open_tf_checkpoint(p) as ckpt:
            assert ckpt.format == "V2"
            assert ckpt.variables() == {
                "global_step": (np.dtype(np.int64), ()),
                "model/w": (np.dtype(np.float32), (2, 3)),
            }
            w = ckpt.read("model/w")
            assert w.dtype == np.float32 and w.tobytes() == W.tobytes()
            assert ckpt.read("global_step") == -7 and ckpt.read("global_step").shape == ()
    with (
        open_tf_checkpoint(prefix) as ckpt,
        pytest.raises(UserError, match="did you mean 'model/w'"),
    ):
        ckpt.read("model/W")


def test_hand_built_v2_corruption(tmp_path):
    prefix = str(tmp_path / "m")
    _write_v2(prefix)
    data = prefix + ".data-00000-of-00001"
    raw = bytearray(Path(data).read_bytes())
    raw[5] ^= 0x40
    Path(data).write_bytes(bytes(raw))
    with open_tf_checkpoint(prefix) as ckpt:
        with pytest.raises(UserError, match=r"m\.data-00000-of-00001: CRC mismatch in 'model/w'"):
            ckpt.read("model/w")
        assert ckpt.read("global_step") == -7  # other tensors still read
    Path(data).write_bytes(bytes(raw[:30]))
    with (
        open_tf_checkpoint(prefix) as ckpt,
        pytest.raises(
            UserError,
            match=r"m\.data-00000-of-00001: 'global_step' needs bytes \[24, 32\).* 30 bytes",
        ),
    ):
        ckpt.read("global_step")
    os.remove(data)
    with pytest.raises(UserError, match="data file .*m.data-00000-of-00001 is missing"):
        open_tf_checkpoint(prefix)


@pytest.mark.parametrize("unpacked", [False, True])
def test_hand_built_v1_file(tmp_path, unpacked):
    path = str(tmp_path / "weights.bin")  # any name: detected by content
    _write_v1(path, unpacked)
    assert is_tf_checkpoint(path)
    with open_tf_checkpoint(path) as ckpt:
        assert ckpt.format == "V1"
        assert ckpt.read("model/w").tobytes() == W.tobytes()
        n = ckpt.read("n")
        assert n.dtype == np.int32 and n.tolist() == [-1, 5, -(2**31)]
        table = format_variables(ckpt)
    assert table.splitlines() == [
        "name     dtype    shape",
        "model/w  float32  [2, 3]",
        "n        int32    [3]",
        f"2 variables, 9 parameters (V1 checkpoint {path})",
    ]


def test_truncated_and_foreign_v1_files(tmp_path):
    path = str(tmp_path / "model.ckpt")
    _write_v1(path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    assert not is_tf_checkpoint(path)
    with pytest.raises(UserError, match=f"model.ckpt: no SSTable magic .*at byte {size - 108}"):
        open_tf_checkpoint(path)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\0" * 1000)
    assert not is_tf_checkpoint(junk)  # the extension alone does not make a checkpoint


def test_directory_resolution(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    _write_v2(str(d / "model.ckpt-100"))
    _write_v1(str(d / "old.ckpt"))
    with pytest.raises(UserError, match="2 checkpoints here .*model.ckpt-100, old.ckpt"):
        open_tf_checkpoint(d)
    (d / "checkpoint").write_text('model_checkpoint_path: "/gone/elsewhere/model.ckpt-100"\n')
    with open_tf_checkpoint(d) as ckpt:  # moved folder: falls back to the file next to it
        assert ckpt.format == "V2" and ckpt.path == str(d / "model.ckpt-100")
    (d / "checkpoint").write_text(
        'model_checkpoint_path: "old.ckpt"\nall_model_checkpoint_paths: "old.ckpt"\n'
    )
    with open_tf_checkpoint(d) as ckpt:
        assert ckpt.format == "V1"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_tf_checkpoint(empty)
    with pytest.raises(UserError, match="no TensorFlow checkpoint in this directory"):
        open_tf_checkpoint(empty)


# ---------------------------------------------------------------------------------------------
# Checkpoints written by TensorFlow itself (compat)

BLOCK_SIZE = 262144  # table_options.h block_size used by both writers


def _values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 4)).astype(np.float32)
    f32.flat[:4] = [np.nan, np.inf, -0.0, np.finfo(np.float32).tiny / 2]  # NaN, inf, -0, subnormal
    return {
        "net/f32": f32,
        "net/f64": rng.standard_normal(5),
        "net/i32": np.array([-1, 2, -(2**31), 2**31 - 1], np.int32),
        "net/i64": np.array([[-5, 2**40], [0, -(2**63)]], np.int64),
        "net/u8": np.array([0, 255, 7], np.uint8),
        "net/bool": np.array([True, False, True]),
        "net/f16": np.array([1.5, -2.25, 65504, 6e-8], np.float16),
        "net/i8": np.array([-128, 127], np.int8),
        "net/i16": np.array([-300, 300], np.int16),
        "net/scalar": np.float32(3.5),
        "net/empty": np.zeros((0, 3), np.float32),
        # 2.4 MB: far larger than one 256 KB table block
        "net/big": rng.standard_normal((600, 1000)).astype(np.float32),
    }


PARTITIONED = np.arange(40000, dtype=np.float32).reshape(20000, 2) * 0.5 - 7  # 3 parts


@pytest.fixture(scope="module")
def tf_ckpts(tmp_path_factory):
    """Write V1 and V2 checkpoints with TF's own savers (graph mode and eager)."""
    from tf_compat import import_tf

    tf = import_tf()
    root = tmp_path_factory.mktemp("tf")
    values = _values()
    out = {"values": values}
    for ver, write_version in (("V1", 1), ("V2", 2)):
        with tf.Graph().as_default():
            for name, v in values.items():
                tf.compat.v1.get_variable(name, initializer=v)
            bf16 = None
            if ver == "V2":  # the V1 writer has no bfloat16 ("not yet supported")
                bf16 = tf.compat.v1.get_variable(
                    "net/bf16", initializer=tf.constant([1.0, -3.0, 0.15625, 1e-3], tf.bfloat16)
                )

            def init(shape, dtype=None, partition_info=None):
                start = partition_info.var_offset[0]
                return tf.constant(PARTITIONED[start : start + shape[0]])

            tf.compat.v1.get_variable(
                "net/part", shape=PARTITIONED.shape, initializer=init,
                partitioner=tf.compat.v1.fixed_size_partitioner(3),
            )  # fmt: skip
            tf.compat.v1.train.get_or_create_global_step()
            saver = tf.compat.v1.train.Saver(write_version=write_version)
            sess_cfg = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
            with tf.device("/cpu:1"):  # a second device, so the sharded save has 2 shards
                tf.compat.v1.get_variable("other/v", initializer=np.arange(6.0))
            sharded = tf.compat.v1.train.Saver(write_version=write_version, sharded=True)
            with tf.compat.v1.Session(config=sess_cfg) as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                os.makedirs(root / ver / "sharded")
                out[ver] = saver.save(sess, str(root / ver / "model.ckpt"), write_meta_graph=False)
                out[ver + "-sharded"] = sharded.save(
                    sess, str(root / ver / "sharded" / "model.ckpt"), write_meta_graph=False
                )
                if bf16 is not None:
                    out["bf16"] = sess.run(tf.cast(bf16, tf.float32))
    eager = tf.train.Checkpoint(
        dense=tf.Variable(values["net/big"][:10]), step=tf.Variable(np.int64(42))
    )
    out["eager"] = eager.save(str(root / "eager" / "ckpt"))
    out["reader"] = tf.train.load_checkpoint
    out["unimplemented"] = tf.errors.UnimplementedError
    return out


def _check_equal(got: np.ndarray, want: np.ndarray) -> None:
    want = np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()  # bit-exact, NaN and -0.0 included


@pytest.mark.compat
@pytest.mark.parametrize("fmt", ["V1", "V2"])
def test_reads_tensorflow_saver_bit_exact(tf_ckpts, fmt):
    path = tf_ckpts[fmt]
    assert is_tf_checkpoint(path)
    tf_reader = tf_ckpts["reader"](path)
    with open_tf_checkpoint(path) as ckpt:
        assert ckpt.format == fmt
        listed = ckpt.variables()
        assert set(listed) == set(tf_reader.get_variable_to_shape_map())
        assert listed["global_step"] == (np.dtype(np.int64), ())
        got = ckpt.read_all()
    for name, want in tf_ckpts["values"].items():
        _check_equal(got[name], want)
        try:
            _check_equal(got[name], tf_reader.get_tensor(name))
        except tf_ckpts["unimplemented"]:  # TF's own V1 reader cannot read float16 back
            assert (fmt, name) == ("V1", "net/f16")
    _check_equal(got["net/part"], PARTITIONED)
    if fmt == "V2":
        _check_equal(got["net/bf16"], tf_ckpts["bf16"])  # bfloat16 comes back as float32
        assert got["net/bf16"].tolist() == [1.0, -3.0, 0.15625, 0.00099945068359375]


@pytest.mark.compat
def test_v1_file_layout_from_tensorflow(tf_ckpts):
    """A V1 value is one table entry: the 2.4 MB tensor sits alone in one oversized block
    (the writer flushes a block once it reaches 256 KB, it never splits an entry)."""
    with SSTable(tf_ckpts["V1"]) as table:
        sizes = [size for _, size in table.block_handles()]
        assert len(sizes) >= 3
        assert max(sizes) > 600 * 1000 * 4 > BLOCK_SIZE
        keys = [k for k, _ in table.items()]
    # partitions: rows 0/6667/13334 (2- and 3-byte OrderedCode numbers), all 2 columns
    assert slice_key("net/part", ((6667, 6667), (0, 2))) in keys
    assert slice_key("net/part", ((13334, 6666), (0, 2))) in keys


@pytest.mark.compat
@pytest.mark.parametrize("fmt", ["V1", "V2"])
def test_reads_sharded_saves(tf_ckpts, fmt):
    path = tf_ckpts[fmt + "-sharded"]
    suffix = "-0000?-of-00002" if fmt == "V1" else ".data-0000?-of-00002"
    assert len(glob.glob(os.path.join(os.path.dirname(path), "model.ckpt" + suffix))) == 2
    for p in (path, os.path.dirname(path)):
        with open_tf_checkpoint(p) as ckpt:
            got = ckpt.read_all(["other/v", "net/big"])
    _check_equal(got["other/v"], np.arange(6.0))
    _check_equal(got["net/big"], tf_ckpts["values"]["net/big"])


@pytest.mark.compat
def test_reads_tf_train_checkpoint(tf_ckpts):
    with open_tf_checkpoint(os.path.dirname(tf_ckpts["eager"])) as ckpt:
        assert set(ckpt.variables()) == {
            "dense/.ATTRIBUTES/VARIABLE_VALUE",
            "step/.ATTRIBUTES/VARIABLE_VALUE",
            "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        }  # the string _CHECKPOINTABLE_OBJECT_GRAPH is left out
        _check_equal(
            ckpt.read("dense/.ATTRIBUTES/VARIABLE_VALUE"), tf_ckpts["values"]["net/big"][:10]
        )
        _check_equal(ckpt.read("step/.ATTRIBUTES/VARIABLE_VALUE"), np.int64(42))
        with pytest.raises(UserError, match="string tensor"):
            ckpt.read("_CHECKPOINTABLE_OBJECT_GRAPH")


@pytest.mark.compat
def test_corrupt_tensorflow_files(tf_ckpts, tmp_path):
    src = os.path.dirname(tf_ckpts["V2"])
    v2 = tmp_path / "v2"
    shutil.copytree(src, v2)
    prefix = str(v2 / "model.ckpt")
    data = prefix + ".data-00000-of-00001"
    raw = bytearray(Path(data).read_bytes())
    big_at = raw.find(tf_ckpts["values"]["net/big"].tobytes()[:64])
    raw[big_at + 1000] ^= 0x10
    Path(data).write_bytes(bytes(raw))
    with (
        open_tf_checkpoint(prefix) as ckpt,
        pytest.raises(
            UserError, match=r"model\.ckpt\.data-00000-of-00001: CRC mismatch in 'net/big'"
        ),
    ):
        ckpt.read("net/big")
    with open(data, "r+b") as f:
        f.truncate(big_at + 10)
    with (
        open_tf_checkpoint(prefix) as ckpt,
        pytest.raises(
            UserError,
            match=rf"data-00000-of-00001: 'net/big' needs bytes \[{big_at}, {big_at + 2400000}\)",
        ),
    ):
        ckpt.read_all()

    v1 = str(tmp_path / "v1.ckpt")
    shutil.copy(tf_ckpts["V1"], v1)
    with SSTable(v1) as table:
        big_block = max(table.block_handles(), key=lambda h: h[1])[0]
    raw = bytearray(Path(v1).read_bytes())
    raw[big_block + 5000] ^= 0x01
    Path(v1).write_bytes(bytes(raw))
    with (
        open_tf_checkpoint(v1) as ckpt,
        pytest.raises(UserError, match=rf"v1\.ckpt: block CRC mismatch .* at byte {big_block}"),
    ):
        ckpt.read("net/big")
    size = len(raw)
    Path(v1).write_bytes(bytes(raw[: size // 2]))
    with pytest.raises(UserError, match=rf"v1\.ckpt: no SSTable magic .*at byte {size // 2 - 8}"):
        open_tf_checkpoint(v1)
