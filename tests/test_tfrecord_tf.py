"""TFRecord and tf.train.Example parity with TensorFlow itself (the `compat` extra).

Both directions: files and Examples TensorFlow writes are read back identically by classzoo,
and what classzoo writes is read by ``tf.data.TFRecordDataset`` / ``tf.io.parse_single_example``
(with slim's own ImageNet ``keys_to_features``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from classzoo.data.tfrecord_dataset import TFRecordImageDataset
from classzoo.data.tfrecord_shards import find_shards
from classzoo.data.tfrecord_tools import imagefolder_to_tfrecord
from classzoo.formats.example import build_example, parse_example
from classzoo.formats.tfrecord import TFRecordWriter, build_index, read_records
from tf_compat import import_tf

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def tf():
    return import_tf()


def _records(seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 11, 12, 13, 4096, 300_000, 1 << 20] + rng.integers(0, 5000, 30).tolist()
    return [rng.bytes(int(n)) for n in sizes]


def test_tf_written_records_read_back(tf, tmp_path):
    records = _records()
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)
    assert list(read_records(path)) == records
    assert build_index(path)[:, 1].tolist() == [len(r) for r in records]


def test_our_records_read_by_tf(tf, tmp_path):
    records = _records(1)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    with TFRecordWriter(ours) as w:
        for r in records:
            w.write(r)
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for r in records:
            w.write(r)
    assert ours.read_bytes() == theirs.read_bytes()
    assert [t.numpy() for t in tf.data.TFRecordDataset(str(ours))] == records


def _tf_example(tf):
    f = tf.train.Feature
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": f(bytes_list=tf.train.BytesList(value=[bytes(range(256)) * 9])),
                "multi": f(bytes_list=tf.train.BytesList(value=[b"", b"a", "é".encode()])),
                "image/class/label": f(int64_list=tf.train.Int64List(value=[1000])),
                "ints": f(int64_list=tf.train.Int64List(value=[0, -1, 2**63 - 1, -(2**63), 300])),
                "floats": f(float_list=tf.train.FloatList(value=[0.1, -2.5, 1e-30, 3.4e38])),
                "empty_f": f(float_list=tf.train.FloatList(value=[])),
                "empty_i": f(int64_list=tf.train.Int64List(value=[])),
                "clé": f(int64_list=tf.train.Int64List(value=[7])),
            }
        )
    )


def test_tf_examples_parse_identically(tf):
    ex = _tf_example(tf)
    for blob in (ex.SerializeToString(), ex.SerializeToString(deterministic=True)):
        ours = parse_example(blob)
        assert set(ours) == set(ex.features.feature)
        for key, feat in ex.features.feature.items():
            kind = feat.WhichOneof("kind")
            want = list(getattr(feat, kind).value)
            if kind == "bytes_list":
                assert ours[key] == want
            elif kind == "float_list":
                assert ours[key].dtype == np.float32
                assert ours[key].tobytes() == np.array(want, np.float32).tobytes()
            else:
                assert ours[key].dtype == np.int64 and ours[key].tolist() == want
        only = parse_example(blob, keys=["image/class/label", "image/encoded"])
        assert set(only) == {"image/class/label", "image/encoded"}


def test_our_examples_parse_in_tf(tf):
    ex = _tf_example(tf)
    values = {}
    for key, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        dtype = {"bytes_list": None, "float_list": np.float32, "int64_list": np.int64}[kind]
        v = list(getattr(feat, kind).value)
        values[key] = v if dtype is None else np.array(v, dtype)
    blob = build_example(values)
    # sorted keys: byte-identical to TF's deterministic serialization
    assert blob == ex.SerializeToString(deterministic=True)
    spec = {
        "ints": tf.io.VarLenFeature(tf.int64),
        "floats": tf.io.VarLenFeature(tf.float32),
        "multi": tf.io.VarLenFeature(tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = tf.io.parse_single_example(blob, spec)
    assert parsed["ints"].values.numpy().tolist() == values["ints"].tolist()
    assert parsed["floats"].values.numpy().tobytes() == values["floats"].tobytes()
    assert parsed["multi"].values.numpy().tolist() == values["multi"]
    assert int(parsed["image/class/label"]) == 1000


def test_slim_schema_shards_read_by_tf_and_by_us(tf, tmp_path):
    foolbox_data = Path(pytest.importorskip("foolbox").__file__).parent / "data"
    files = sorted(foolbox_data.glob("imagenet_*.jpg"))[:4]
    src = tmp_path / "img"
    for k, f in enumerate(files):
        (src / f"n0{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, src / f"n0{k % 2}" / f.name)
    out = tmp_path / "rec"
    imagefolder_to_tfrecord(src, out, shards=2, workers=1, split="validation")
    # slim datasets/imagenet.py get_split keys_to_features
    keys_to_features = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
        "image/class/label": tf.io.FixedLenFeature([], dtype=tf.int64, default_value=-1),
        "image/class/text": tf.io.FixedLenFeature([], dtype=tf.string, default_value=""),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
    }
    ds = TFRecordImageDataset(find_shards(str(out), "val"))  # also writes index sidecars
    # slim's reader globs '%s-*': our hidden sidecars must not be picked up as shards
    shards = sorted(tf.io.gfile.glob(str(out / "validation-*")))
    assert shards == [str(p) for p in ds.shards]
    tf_rows = []
    for blob in tf.data.TFRecordDataset(shards):
        ex = tf.io.parse_single_example(blob, keys_to_features)
        img = tf.io.decode_jpeg(ex["image/encoded"], channels=3).numpy()
        assert img.shape[:2] == (int(ex["image/height"]), int(ex["image/width"]))
        assert ex["image/format"].numpy() == b"JPEG"
        tf_rows.append((int(ex["image/class/label"]), img.shape))
    ours = [ds[i] for i in range(len(ds))]
    assert [(label, np.asarray(img).shape) for img, label in ours] == tf_rows
    assert sorted(label for label, _ in tf_rows) == [1, 1, 2, 2]


# ---- hostile Examples: classzoo returns TF's value or refuses (never another value) -------------


def _ours(blob: bytes, key: str, kind: str):
    """What the dataset takes from a record: exactly one int64 / bytes value, else refused."""
    from classzoo.formats.wire import WireError

    try:
        value = parse_example(blob, [key]).get(key)
    except WireError:
        return "ERR", None
    if kind == "int" and isinstance(value, np.ndarray) and value.dtype == np.int64:
        return ("OK", int(value[0])) if value.size == 1 else ("ERR", None)
    if kind == "bytes" and isinstance(value, list):
        return ("OK", value[0]) if len(value) == 1 else ("ERR", None)
    return "ERR", None


def _ex(*entries: bytes) -> bytes:
    from classzoo.formats.wire import length_delimited as ld

    return ld(1, b"".join(ld(1, e) for e in entries))


def _entry(k: bytes, feature: bytes) -> bytes:
    from classzoo.formats.wire import length_delimited as ld

    return ld(1, k) + ld(2, feature)


def _hand_cases() -> list[bytes]:
    """The layouts where TF's fast parser and protobuf's merge rules part ways."""
    from classzoo.formats.wire import encode_varint as v
    from classzoo.formats.wire import length_delimited as ld

    def i64(*vals):
        return ld(3, ld(1, b"".join(v(x) for x in vals)))

    lab = b"label"
    return [
        _ex(_entry(lab, i64(1)), _entry(lab, i64(2))),  # a key twice: the last wins
        _ex(_entry(lab, i64(4)), _entry(lab, b"")),  # ... the last non-empty one
        _ex(ld(1, lab) + ld(2, i64(1)) + ld(2, i64(2))),  # one entry, two values: TF refuses
        _ex(ld(2, i64(3)) + ld(1, lab)),  # value before key
        _ex(_entry(lab, i64(1) + i64(2))),  # two lists in a Feature (TF: the first)
        _ex(_entry(lab, ld(3, ld(1, v(4)) + ld(1, v(5))))),  # two packed runs (TF: the first)
        _ex(_entry(lab, ld(3, b"\x08\x07\x0a\x01\x08"))),  # unpacked then packed: TF refuses
        _ex(_entry(lab, ld(3, b"\x0a\x0a" + b"\x85" + b"\x80" * 8 + b"\x02"))),  # 5 + 2**64
        _ex(_entry(lab, ld(3, b"\x0a\x0b" + b"\xff" * 10 + b"\x01"))),  # 11-byte varint
        _ex(_entry(lab, b"\x22\x00")),  # unknown Feature kind
        ld(1, ld(1, _entry(lab, i64(1)))) + ld(1, ld(1, _entry(lab, i64(2)))),  # features twice
        b"\x8a\x00" + v(len(ld(1, _entry(lab, i64(3))))) + ld(1, _entry(lab, i64(3))),  # long tag
        _ex(_entry(lab, i64(3))) + b"\x10\x05",  # an unknown Example field
        _ex(_entry(lab, i64(3) + b"\xff\xff")),  # bytes after the list (TF ignores them)
    ]


def test_example_edge_cases_match_tensorflow(tf):
    spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
    stricter = 0
    for blob in _hand_cases():
        try:
            theirs = ("OK", int(tf.io.parse_single_example(blob, spec)["label"]))
        except Exception:  # noqa: BLE001 - TF refuses
            theirs = ("ERR", None)
        ours = _ours(blob, "label", "int")
        if ours != theirs:
            assert ours == ("ERR", None), (blob.hex(), ours, theirs)  # never another value
            stricter += 1
    assert stricter <= 3  # over-long tag, two lists, bytes after the list: refused, TF reads


@pytest.mark.slow
def test_example_differential_fuzz_against_tensorflow(tf):
    """1,000 mutated Examples (seeds written by TF), 4 keys each: where classzoo returns a value
    TF returns the same; where TF refuses (or crashes) classzoo refuses."""
    import random

    from fuzz.harness import mutate_bytes
    from fuzz.targets import _seed, mutate_proto
    from fuzz.tf_oracle import Oracle

    seeds = [_seed("example_0.bin"), _seed("example_1.bin")]
    keys = [("image/class/label", "int"), ("image/encoded", "bytes"), ("label", "int")]
    keys.append(("image", "bytes"))
    oracle = Oracle()
    counts = {"same": 0, "stricter": 0, "tf_crash": 0}
    try:
        for i in range(1000):
            rng = random.Random(i)
            seed = rng.choice(seeds)
            blob = mutate_proto(seed, rng) if rng.random() < 0.5 else mutate_bytes(seed, rng)
            for key, kind in keys:
                ours, theirs = _ours(blob, key, kind), oracle(blob, key, kind)
                if theirs[0] == "CRASH":
                    counts["tf_crash"] += 1
                    assert ours[0] == "ERR", blob.hex()
                elif ours == theirs:
                    counts["same"] += 1
                else:
                    assert ours[0] == "ERR", (blob.hex(), key, ours, theirs)
                    counts["stricter"] += 1
    finally:
        oracle.close()
    print(counts)
    assert counts["same"] > 3000
