"""What `classzoo data to-tfrecord` and `classzoo export` leave in their output folder.

A refused or interrupted run leaves nothing of its own (no hidden temporary, no shard, no
labels.txt, no ONNX file, no folder it created) and never removes what was there before; a
successful export is exactly one self-contained OUT.onnx. Outside truths: the file listing, PIL
(a JPEG made here), timm's model run by PyTorch against onnxruntime on the exported file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from classzoo.cli import main
from conftest import tiny_checkpoint, write_imagefolder


def _listing(folder: Path) -> list[str] | None:
    """Every path under ``folder`` (hidden ones too), or None when the folder does not exist."""
    if not folder.exists():
        return None
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_error_line(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("classzoo: error: "), err
    assert "Traceback" not in err and "BytesIO" not in err, err
    for name in names:
        assert name in err, err
    return err


def _images(tmp_path: Path) -> Path:
    return write_imagefolder(tmp_path / "train", {"cat": 6, "dog": 6}, fmt="jpg")


def _odd(kind: str, cat: Path) -> Path:
    """One odd entry in class folder ``cat``; returns what the error must name."""
    if kind == "broken-symlink":
        bad = cat / "900.jpg"
        bad.symlink_to(cat / "no-such-file.jpg")
    elif kind == "fifo-named-jpg":  # reading it would hang a worker
        bad = cat / "x.jpg"
        os.mkfifo(bad)
    elif kind == "empty-class":
        bad = cat.parent / "bird"
        bad.mkdir()
        (bad / "notes.txt").write_text("not an image")
    else:  # an undecodable file, found by a shard-writing worker
        bad = cat / "900.jpg"
        bad.write_bytes(b"not an image at all")
    return bad


@pytest.mark.parametrize("kind", ["broken-symlink", "fifo-named-jpg", "empty-class", "undecodable"])
def test_refused_conversion_leaves_no_output(tmp_path, capsys, kind):
    src = _images(tmp_path)
    bad = _odd(kind, src / "cat")
    out = tmp_path / "tfr"
    argv = ["data", "to-tfrecord", str(src), str(out), "--shards", "2", "--workers", "2"]
    assert main(argv) == 2
    _one_error_line(capsys, str(bad))
    assert _listing(out) is None  # the folder this run would have created is gone too


def test_the_shards_hold_the_images_an_imagefolder_run_reads(tmp_path, capsys):
    """Images in subfolders of a class folder (and in a folder named like an image) are read
    by torchvision's ImageFolder, and by classzoo's: the shards hold them too."""
    import torchvision

    from classzoo.data.tfrecord_tools import inspect_tfrecords

    src = _images(tmp_path)
    write_imagefolder(src / "cat" / "more", {"x.jpg": 2, "deeper": 3}, fmt="jpg")
    out = tmp_path / "tfr"
    argv = ["data", "to-tfrecord", str(src), str(out), "--shards", "2", "--workers", "1"]
    assert main(argv) == 0
    truth = torchvision.datasets.ImageFolder(str(src))
    assert inspect_tfrecords(str(out))["total_records"] == len(truth.samples) == 17


def test_failed_conversion_keeps_what_out_held(tmp_path, capsys):
    """A good conversion, then a failing one into the same folder with the same shard names:
    the first one's files stay byte for byte, nothing is added."""
    src = _images(tmp_path)
    out = tmp_path / "tfr"
    argv = ["data", "to-tfrecord", str(src), str(out), "--shards", "2", "--workers", "2"]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["labels.txt", "train-00000-of-00002", "train-00001-of-00002"]
    (src / "dog" / "zzz.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(argv) == 2
    _one_error_line(capsys, str(src / "dog" / "zzz.png"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_export_writes_exactly_one_self_contained_file(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    model = tiny_checkpoint(tmp_path / "tiny.pt")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "notes.txt").write_text("kept")
    (folder / "a.onnx.data").write_bytes(b"weights of an earlier export")  # a stale sidecar
    out = folder / "a.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "tiny.pt"), str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert _listing(folder) == ["a.onnx", "notes.txt"]
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    theirs = session.run(["logits"], {"images": x.numpy()})[0]
    with torch.no_grad():
        ours = model(x).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


def _interrupt_export(tmp_path: Path, watched: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run `classzoo export` in its own process group and send the group SIGINT (a terminal's
    Ctrl-C) the moment ``watched`` (a glob under the output folder) first matches."""
    tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "new" / "a.onnx"
    cmd = [sys.executable, "-m", "classzoo", "export", "--checkpoint", str(tmp_path / "tiny.pt")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*cmd, str(out)], stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if out.parent.exists() and any(out.parent.glob(watched)):
            os.killpg(proc.pid, signal.SIGINT)
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, "", err), out


@pytest.mark.parametrize(
    "watched",
    [
        pytest.param(".a.onnx.tmp-*", id="before-torch-export"),
        # runs the export to its end (check and verify): ~10 s idle, 20 s on a busy machine
        pytest.param(".a.onnx.tmp-*/a.onnx", id="after-torch-export", marks=pytest.mark.slow),
    ],
)
def test_interrupted_export_leaves_nothing(tmp_path, watched):
    pytest.importorskip("onnxruntime")
    done, out = _interrupt_export(tmp_path, watched)
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "classzoo: interrupted", done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert _listing(out.parent) is None  # no OUT, no temporary, not the folder it created


def test_publish_moves_the_external_weights_a_file_references(tmp_path):
    """Past protobuf's 2 GB torch writes the weights to OUT.data (too big to export here): the
    published pair loads in onnxruntime from OUT's folder and gives numpy's product."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from classzoo.export import _publish

    w = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    staged = tmp_path / ".a.onnx.tmp-1" / "a.onnx"
    staged.parent.mkdir()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(
        model, str(staged), save_as_external_data=True, location="a.onnx.data", size_threshold=0
    )
    (tmp_path / "b.onnx.data").write_bytes(b"another model's weights")
    _publish(staged, tmp_path / "a.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".a.onnx.tmp-1",
        "a.onnx",
        "a.onnx.data",
        "b.onnx.data",
    ]
    x = np.random.default_rng(1).normal(size=(2, 64)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], x @ w, rtol=1e-5, atol=1e-5)
