"""With data.skip_corrupt, an unreadable evaluation image is left out of every metric.

Before, the dataset returned the next readable image in its place (which keeps a training batch
full), so evaluation scored that neighbour twice and counted 12 images where 11 could be read.
The truths: the same evaluation with the unreadable file (or record) removed, and a probe whose
predictions are worked out by hand from each image's grey level (10 of the 11 readable images
right: 90.909 %; scoring the misfiled neighbour twice gave 10 of 12: 83.333 %).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from classzoo.cli import main
from classzoo.formats.example import build_example
from classzoo.formats.tfrecord import TFRecordWriter
from classzoo.models.registry import register_model, registered_model

PROBE = "test_skip_probe"
DEFAULTS = {"input_size": (3, 8, 8), "crop_pct": 1.0, "mean": (0,) * 3, "std": (1,) * 3}
LEVELS = {"a": 30, "b": 128, "c": 220}  # grey level of each class (logits below)
# Folder order a0..a3, b0..b3, c0..c3: image 6 (b/2) is unreadable; its neighbour, image 7
# (b/3), is a bright image filed under b, so the probe calls it c (wrong).
BAD, MISFILED = ("b", 2), ("b", 3)
TRUTH_TOP1 = 100.0 * 10 / 11  # by hand: 11 readable images, 10 predicted right


def _probe(num_classes: int = 3) -> nn.Module:
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))
    model.num_classes = num_classes
    return model


def register_probe() -> None:
    """For the torchrun workers, which do not run this module's fixture."""
    register_model(PROBE, _probe, {**DEFAULTS, "preset": "timm"})


@pytest.fixture(scope="module", autouse=True)
def probe():
    with registered_model(PROBE, _probe, {**DEFAULTS, "preset": "timm"}):
        yield


def _weights(path: Path) -> str:
    """Logits a = 4 - 10x, b = 0, c = 10x - 6 of the mean level x in [0, 1]: x < 0.4 is a,
    0.4 < x < 0.6 is b, x > 0.6 is c (levels 30, 128, 220: 0.12, 0.50, 0.86)."""
    model = _probe()
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[-10.0] * 3, [0.0] * 3, [10.0] * 3]) / 3)
        model[2].bias.copy_(torch.tensor([4.0, 0.0, -6.0]))
    save_file(model.state_dict(), str(path))
    return str(path)


def _png(level: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(out, "PNG")
    return out.getvalue()


def _images() -> list[tuple[str, int, bytes]]:
    """(class, number, file bytes) in the datasets' order; the unreadable one is not an image."""
    out = []
    for name in sorted(LEVELS):
        for i in range(4):
            level = LEVELS["c"] if (name, i) == MISFILED else LEVELS[name]
            out.append((name, i, b"not a png" if (name, i) == BAD else _png(level)))
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path, str]:
    """ImageFolder with the unreadable file, the same without it, and the probe's weights."""
    root = tmp_path_factory.mktemp("skipped")
    for name, i, data in _images():
        (root / "bad" / "val" / name).mkdir(parents=True, exist_ok=True)
        (root / "bad" / "val" / name / f"{i}.png").write_bytes(data)
    shutil.copytree(root / "bad", root / "truth")
    (root / "truth" / "val" / BAD[0] / f"{BAD[1]}.png").unlink()
    return root / "bad", root / "truth", _weights(root / "probe.safetensors")


def _eval(capsys, weights: str, data: Path, *sets: str) -> tuple[dict, str]:
    argv = ["eval", "--checkpoint", weights, "--model", PROBE, "--data-dir", str(data)]
    argv += ["--device", "cpu", "--batch-size", "4", "--json"]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    seen = capsys.readouterr()
    assert code == 0, seen.err
    return json.loads(seen.out), seen.err


def _same_numbers(result: dict, truth: dict) -> None:
    assert result["count"] == truth["count"] == 11  # before: 12
    assert result["top1"] == truth["top1"] == pytest.approx(TRUTH_TOP1)  # before: 83.333
    assert result["top5"] == truth["top5"] == 100.0
    assert result["loss"] == pytest.approx(truth["loss"], rel=1e-6)
    assert result["skipped"] == 1 and truth["skipped"] == 0


def test_an_unreadable_imagefolder_image_is_left_out(folders, capsys):
    bad, truth_dir, weights = folders
    truth, _ = _eval(capsys, weights, truth_dir, "data.num_workers=0")
    # one loader worker: the file is named from the item's index, not the worker's log
    result, err = _eval(capsys, weights, bad, "data.num_workers=1", "data.skip_corrupt=true")
    _same_numbers(result, truth)
    path = bad / "val" / BAD[0] / f"{BAD[1]}.png"
    line = f"eval: 1 unreadable image left out of the metrics (data.skip_corrupt): {path}"
    assert line in err


def _shard(path: Path, drop_bad: bool) -> None:
    """The same images as TFRecord records (slim's schema, labels 1..3 as slim writes them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with TFRecordWriter(path) as w:  # valid CRCs: only the image bytes are damaged
        for name, i, data in _images():
            if drop_bad and (name, i) == BAD:
                continue
            label = sorted(LEVELS).index(name) + 1
            w.write(build_example({"image/encoded": data, "image/class/label": label}))


def test_a_record_with_undecodable_image_bytes_is_left_out(folders, tmp_path, capsys):
    _, _, weights = folders
    shard = "validation-00000-of-00001"
    _shard(tmp_path / "bad" / shard, drop_bad=False)
    _shard(tmp_path / "truth" / shard, drop_bad=True)
    sets = ("data.source=tfrecord", "data.label_offset=1", "data.num_workers=0")
    truth, _ = _eval(capsys, weights, tmp_path / "truth", *sets)
    result, err = _eval(capsys, weights, tmp_path / "bad", *sets, "data.skip_corrupt=true")
    _same_numbers(result, truth)
    where = f"record 6 of {tmp_path / 'bad' / shard}"
    assert f"eval: 1 unreadable image left out of the metrics (data.skip_corrupt): {where}" in err


@pytest.mark.slow
def test_on_two_ranks_the_image_is_left_out_once_and_named(folders, tmp_path):
    """torchrun, 2 CPU ranks: rank 1 holds images 6..11, so the unreadable one is found there;
    the sums (and the first left-out image) are reduced to rank 0, which prints them."""
    bad, _, weights = folders
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_eval_skipped_images import register_probe\n"
        "from classzoo.cli import main\n"
        "register_probe()\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    argv += ["2", str(script), "eval", "--checkpoint", weights, "--model", PROBE, "--data-dir"]
    argv += [str(bad), "--device", "cpu", "--batch-size", "4", "--json"]
    argv += ["--set", "data.num_workers=0", "--set", "data.skip_corrupt=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["count"], result["skipped"]) == (11, 1)
    assert result["top1"] == pytest.approx(TRUTH_TOP1)
    path = bad / "val" / BAD[0] / f"{BAD[1]}.png"
    line = f"eval: 1 unreadable image left out of the metrics (data.skip_corrupt): {path}"
    assert done.stderr.count(line) == 1  # rank 0 only
