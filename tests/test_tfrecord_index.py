"""The TFRecord index sidecar: checksummed, verified against its shard, rebuilt when it fails.

Outside truths: the records each test writes (offsets from their lengths, labels), and the
CRC-32C property that every single-bit error is detected (any CRC whose polynomial has more
than one term).
"""

from __future__ import annotations

import logging
import struct
import time

import numpy as np
import pytest

from classzoo.data.tfrecord_dataset import TFRecordImageDataset
from classzoo.data.tfrecord_index import sidecar_path
from classzoo.formats import tfrecord_index as fmt
from classzoo.formats.crc import masked_crc32c
from classzoo.formats.example import build_example
from classzoo.formats.tfrecord import TFRecordWriter


def _shard(path, labels):
    payloads = []
    with TFRecordWriter(path) as w:
        for label in labels:
            payloads.append(
                build_example({"image/encoded": b"x" * label, "image/class/label": label})
            )
            w.write(payloads[-1])
    return payloads


def test_sidecar_holds_offsets_lengths_labels(tmp_path):
    path = tmp_path / "s"
    payloads = _shard(path, [5, 1, 9])
    TFRecordImageDataset([path])
    index = fmt.decode(sidecar_path(path).read_bytes(), "x")
    lengths = [len(p) for p in payloads]
    offsets = np.cumsum([0] + [12 + n + 4 for n in lengths[:-1]]).tolist()
    assert index.rows.tolist() == [[o, n, y] for o, n, y in zip(offsets, lengths, [5, 1, 9])]
    assert index.status.tolist() == [fmt.LABEL_OK] * 3
    assert index.label_key == "image/class/label" and index.shard_size == path.stat().st_size


def test_every_single_bit_flip_is_detected_and_rebuilt(tmp_path, caplog):
    path = tmp_path / "s"
    _shard(path, [3, 1, 4, 1, 5])
    ds = TFRecordImageDataset([path])
    good = sidecar_path(path).read_bytes()
    want = ds.targets.tolist()
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 8 * len(good), 1000)
    caplog.set_level(logging.WARNING)
    start = time.process_time()
    for bit in bits.tolist():
        raw = bytearray(good)
        raw[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(fmt.SidecarError):
            fmt.decode(bytes(raw), "flipped")
        sidecar_path(path).write_bytes(bytes(raw))
        caplog.clear()
        assert TFRecordImageDataset([path]).targets.tolist() == want
        assert "index sidecar rejected, rebuilding it" in caplog.text
        assert sidecar_path(path).read_bytes() == good  # rebuilt byte for byte
    assert time.process_time() - start < 30


def test_consistent_checksum_but_wrong_rows_is_refused(tmp_path):
    """A sidecar crafted with a valid CRC (not a random flip) still has to fit its shard."""
    path = tmp_path / "s"
    _shard(path, [2, 2])
    TFRecordImageDataset([path])
    index = fmt.decode(sidecar_path(path).read_bytes(), "x")
    rows = index.rows.copy()
    rows[[0, 1]] = rows[[1, 0]]  # record 0 would come back as record 1
    for bad_rows, why in (
        (rows, "do not follow"),
        (index.rows + [0, index.shard_size, 0], "outside the shard"),
    ):
        forged = fmt.ShardIndex(
            index.shard_size, index.mtime_ns, index.label_key, bad_rows, index.status
        )
        with pytest.raises(fmt.SidecarError, match=why):
            fmt.decode(fmt.encode(forged), "forged")


def test_other_label_key_and_old_format_are_rebuilt(tmp_path, caplog):
    path = tmp_path / "s"
    with TFRecordWriter(path) as w:
        w.write(build_example({"image/encoded": b"x", "image/class/label": 1, "label": 7}))
    assert TFRecordImageDataset([path]).label_range() == (1, 1)
    caplog.set_level(logging.INFO)
    assert TFRecordImageDataset([path], label_key="label").label_range() == (7, 7)
    assert "holds labels of 'image/class/label', not 'label'; rebuilding" in caplog.text
    # a sidecar of the previous classzoo format (CZTFIDX1, no checksum): rebuilt
    old = struct.pack("<8sQqQ", b"CZTFIDX1", path.stat().st_size, path.stat().st_mtime_ns, 1)
    sidecar_path(path).write_bytes(old + np.array([0, 10], "<i8").tobytes())
    caplog.clear()
    assert TFRecordImageDataset([path]).label_range() == (1, 1)
    assert "not a classzoo index sidecar of this version" in caplog.text
    raw = sidecar_path(path).read_bytes()
    assert raw[:8] == fmt.MAGIC and masked_crc32c(raw[:-4]) == struct.unpack("<I", raw[-4:])[0]
