"""``classzoo train --resume auto`` when the newest checkpoints are damaged: an empty file (what
a power cut leaves), a truncated one, a bit-flipped one and a FIFO are each skipped with the
reason, the run continues from the newest good checkpoint and finishes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from classzoo.formats.torch_checkpoint import load_checkpoint_file

RECIPE = """\
model: {name: resnet10t, kwargs: {channels: [8, 16, 32, 64], stem_width: 8}}
data: {source: imagefolder, image_size: 32, batch_size: 8, eval_batch_size: 16, num_workers: 0}
optim: {name: sgd, lr: 0.01}
train: {mode: train, epochs: 2, amp: "off", progress: false, keep_max: 10}
"""


def _train(recipe: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "classzoo", "train", "--recipe", str(recipe)]
    cmd += ["--data-dir", str(data), "--output-dir", str(out)]
    cmd += ["--set", "train.ckpt_every_steps=1", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_resume_auto_skips_empty_truncated_flipped_and_fifo_checkpoints(
    tmp_path, small_imagefolder
):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    run = tmp_path / "run"
    first = _train(recipe, small_imagefolder, run, "--max-steps", "3")
    assert first.returncode == 0, first.stderr[-2000:]
    ckpts = run / "checkpoints"
    good = (ckpts / "ckpt-000000003.pt").read_bytes()
    (ckpts / "ckpt-000000004.pt").write_bytes(good[:-1000])  # truncated
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0x10
    (ckpts / "ckpt-000000005.pt").write_bytes(bytes(flipped))  # one bit flipped
    (ckpts / "ckpt-000000006.pt").write_bytes(b"")  # a power cut
    os.mkfifo(ckpts / "ckpt-000000007.pt")  # must not hang the resume

    second = _train(recipe, small_imagefolder, run, "--resume", "auto", "--max-steps", "9")
    log = second.stderr
    assert second.returncode == 0, log[-3000:]
    for name, why in [
        ("ckpt-000000007.pt", "FIFO"),
        ("ckpt-000000006.pt", "empty"),
        ("ckpt-000000005.pt", "SHA-256"),
        ("ckpt-000000004.pt", "truncated"),
    ]:
        line = next((ln for ln in log.splitlines() if f"skipping {name}" in ln), "")
        assert why in line, f"{name}: {line!r}"
    assert "falling back to ckpt-000000003.pt (4 newer checkpoint(s) skipped)" in log
    assert load_checkpoint_file(ckpts / "ckpt-000000009.pt")["progress"]["step"] == 9
    assert load_checkpoint_file(ckpts / "ckpt-000000005.pt")["progress"]["step"] == 5  # rewritten


@pytest.mark.slow
def test_stale_temporaries_are_removed_at_start_and_logged(tmp_path, small_imagefolder):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    run = tmp_path / "run"
    assert _train(recipe, small_imagefolder, run, "--max-steps", "1").returncode == 0
    stale = run / "checkpoints" / ".ckpt-000000002.pt.4242-deadbeef.tmp"
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    second = _train(recipe, small_imagefolder, run, "--resume", "auto", "--max-steps", "2")
    assert second.returncode == 0, second.stderr[-2000:]
    assert not stale.exists()
    assert f"removed {stale}" in second.stderr
