"""Write the fuzzing seeds with TensorFlow itself (the ``compat`` extra); run from the repo root:

    python tests/fuzz/make_seeds.py

The files are committed under tests/fuzz/seeds/ (a few KB), so the fuzz tests need no
TensorFlow: a TFRecord file written by ``tf.io.TFRecordWriter``, Examples serialized by
``tf.train.Example``, and V1 / V2 checkpoints written by ``tf.compat.v1.train.Saver`` (small
tensors of several dtypes, one partitioned variable, so slices are exercised).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent / "seeds"


def _examples(tf) -> list[bytes]:
    f = tf.train.Feature
    slim = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": f(bytes_list=tf.train.BytesList(value=[b"\xff\xd8" + bytes(40)])),
                "image/format": f(bytes_list=tf.train.BytesList(value=[b"JPEG"])),
                "image/class/label": f(int64_list=tf.train.Int64List(value=[417])),
                "image/height": f(int64_list=tf.train.Int64List(value=[375])),
                "image/width": f(int64_list=tf.train.Int64List(value=[500])),
                "image/object/bbox/xmin": f(float_list=tf.train.FloatList(value=[0.1, 0.5])),
            }
        )
    )
    reference = tf.train.Example(  # the ResNet-152 reference's own keys
        features=tf.train.Features(
            feature={
                "image": f(bytes_list=tf.train.BytesList(value=[b"\xff\xd8\xff"])),
                "label": f(int64_list=tf.train.Int64List(value=[-3])),
            }
        )
    )
    return [slim.SerializeToString(), reference.SerializeToString()]


def _checkpoints(tf, out: Path) -> None:
    tmp = Path(tempfile.mkdtemp())
    for version in (1, 2):
        with tf.Graph().as_default():
            tf.compat.v1.get_variable("w", initializer=np.arange(6, dtype=np.float32).reshape(2, 3))
            tf.compat.v1.get_variable("n", initializer=np.array([-1, 5, 300], np.int32))
            tf.compat.v1.get_variable("b", initializer=np.array([True, False]))
            tf.compat.v1.get_variable("h", initializer=np.array([1.5, -2.0], np.float16))
            tf.compat.v1.get_variable(
                "p",
                initializer=tf.constant(np.arange(8, dtype=np.float32).reshape(4, 2)),
                partitioner=tf.compat.v1.fixed_size_partitioner(2),
            )
            saver = tf.compat.v1.train.Saver(write_version=version)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                (tmp / f"v{version}").mkdir()
                saver.save(sess, str(tmp / f"v{version}" / "model.ckpt"), write_meta_graph=False)
    shutil.copy(tmp / "v1" / "model.ckpt", out / "v1.ckpt")
    shutil.copy(tmp / "v2" / "model.ckpt.index", out / "v2.index")
    shutil.copy(tmp / "v2" / "model.ckpt.data-00000-of-00001", out / "v2.data-00000-of-00001")
    shutil.rmtree(tmp)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tf_compat import import_tf

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = import_tf()
    HERE.mkdir(exist_ok=True)
    examples = _examples(tf)
    for i, blob in enumerate(examples):
        (HERE / f"example_{i}.bin").write_bytes(blob)
    with tf.io.TFRecordWriter(str(HERE / "records.tfrecord")) as w:
        for blob in examples + [b"", b"x" * 20]:
            w.write(blob)
    _checkpoints(tf, HERE)
    for p in sorted(HERE.iterdir()):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
