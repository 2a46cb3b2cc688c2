"""classzoo's checkpoint files: every flipped bit detected, atomic under a full disk, readable
under the umask, rotation and best-K as timm's CheckpointSaver ranks them, stale temporaries
removed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import timm
import torch

from classzoo.engine.checkpoint import CheckpointManager
from classzoo.engine.state import rng_state
from classzoo.errors import UserError
from classzoo.formats.safetensors_file import load_safetensors_file, save_safetensors_file
from classzoo.formats.torch_checkpoint import load_checkpoint_file, save_checkpoint_file


def _training_payload(step: int = 7) -> dict:
    """What the trainer saves, for a small real network: weights, momentum, RNG, config."""
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=4, channels=[8, 16, 32, 64], stem_width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": [rng_state()],
        "progress": {"step": step, "epoch": 1, "sample": 16, "world_size": 1},
        "config": {"model": {"name": "resnet10t", "num_classes": 4}, "data": {"image_size": 32}},
        "model_name": "resnet10t",
        "num_classes": 4,
        "classes": ["a", "b", "c", "d"],
    }


def _flips(good: bytes, n: int, folder: Path, load, seed: int = 0) -> dict[str, int]:
    """Load ``n`` copies of ``good``, each with one random bit flipped; count the outcomes."""
    rng = random.Random(seed)
    outcome = {"detected": 0, "silent": 0}
    path = folder / "flipped"
    for _ in range(n):
        bit = rng.randrange(len(good) * 8)
        data = bytearray(good)
        data[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(data)
        try:
            load(path)
        except UserError:
            outcome["detected"] += 1
        else:
            outcome["silent"] += 1
    return outcome


def test_1000_bit_flips_in_a_training_checkpoint_all_detected(tmp_path):
    target = tmp_path / "ckpt-000000007.pt"
    CheckpointManager(tmp_path, keep_last=2).save(7, _training_payload(), {"top1": 50.0})
    assert load_checkpoint_file(target)["progress"]["step"] == 7  # the control loads
    outcome = _flips(target.read_bytes(), 1000, tmp_path, load_checkpoint_file)
    print(f"1000 flips in a {target.stat().st_size}-byte checkpoint: {outcome}")
    assert outcome == {"detected": 1000, "silent": 0}


def test_300_bit_flips_in_exported_safetensors_all_detected(tmp_path):
    target = tmp_path / "w.safetensors"
    save_safetensors_file(_training_payload()["model"], target, {"model": "resnet10t"})
    assert len(load_safetensors_file(target)) > 0
    outcome = _flips(target.read_bytes(), 300, tmp_path, load_safetensors_file)
    assert outcome == {"detected": 300, "silent": 0}


def test_plain_torch_load_still_reads_a_signed_checkpoint(tmp_path):
    """The digest is a zip comment: timm / torch users can still torch.load the file."""
    payload = _training_payload()
    save_checkpoint_file(payload, tmp_path / "c.pt")
    plain = torch.load(tmp_path / "c.pt", weights_only=True)
    assert torch.equal(plain["model"]["fc.weight"], payload["model"]["fc.weight"])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_are_readable_as_the_umask_allows(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        manager = CheckpointManager(tmp_path, keep_last=2, keep_best=1)
        manager.save(1, _training_payload(1), {"top1": 1.0})
        save_safetensors_file({"w.weight": torch.ones(2)}, tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    for name in ("ckpt-000000001.pt", "best.pt", "index.json", "w.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


# ---- a full disk --------------------------------------------------------------------------------


def _small_filesystem(tmp_path: Path, size_kb: int):
    """A tmpfs of ``size_kb`` (root can mount one here), else None (RLIMIT_FSIZE is used)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount)],
        capture_output=True,
    )
    return mount if proc.returncode == 0 else None


FULL_DISK_CHILD = """
import resource, signal, sys, torch
from classzoo.engine.checkpoint import CheckpointManager
from classzoo.errors import UserError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
manager = CheckpointManager(sys.argv[1], keep_last=5)
manager.save(1, {"model": {"w.weight": torch.ones(1000)}, "progress": {"step": 1, "epoch": 0,
             "sample": 0}, "optimizer": {"state": {}, "param_groups": []}})
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    manager.save(2, {"model": {"w.weight": torch.ones(300_000)}, "progress": {"step": 2,
                 "epoch": 0, "sample": 0}, "optimizer": {"state": {}, "param_groups": []}})
except UserError as exc:
    print("ERROR " + str(exc))
"""


def test_full_disk_keeps_the_previous_checkpoint_and_says_one_line(tmp_path):
    disk = _small_filesystem(tmp_path, 512)
    folder = disk or tmp_path / "rlimit"
    try:
        if disk is not None:  # a real ENOSPC: 512 KB holds the first checkpoint, not 1.2 MB
            manager = CheckpointManager(folder, keep_last=5)
            first = {"model": {"w.weight": torch.ones(1000)}}
            first.update(progress={"step": 1, "epoch": 0, "sample": 0})
            first["optimizer"] = {"state": {}, "param_groups": []}
            manager.save(1, first)
            with pytest.raises(UserError) as err:
                manager.save(2, {**first, "model": {"w.weight": torch.ones(300_000)}})
            message = str(err.value)
        else:  # no mount allowed: a file-size limit in a child process (EFBIG, not ENOSPC)
            proc = subprocess.run(
                [sys.executable, "-c", FULL_DISK_CHILD, str(folder), str(200_000)],
                capture_output=True,
                text=True,
                check=True,
            )
            message = proc.stdout.split("ERROR ", 1)[1].strip()
        assert "\n" not in message and "ckpt-000000002.pt" in message
        assert "No space left on device" in message or "File too large" in message
        assert sorted(p.name for p in folder.iterdir()) == ["ckpt-000000001.pt", "index.json"]
        assert load_checkpoint_file(folder / "ckpt-000000001.pt")["progress"]["step"] == 1
    finally:
        if disk is not None:
            subprocess.run(["umount", str(disk)], check=False)


# ---- rotation, best K, stale temporaries ---------------------------------------------------------


def test_best_k_and_best_pt_rank_like_timm_checkpoint_saver(tmp_path):
    """timm's CheckpointSaver (max_history=3) is the outside truth for which ranked
    checkpoints are kept and which is model_best, ties keeping the earlier one."""
    from timm.utils import CheckpointSaver

    top1 = [50.0, 70.0, 60.0, 70.0, 40.0, 80.0, 80.0, 30.0, 65.0]
    model = torch.nn.Linear(2, 2)
    saver = CheckpointSaver(
        model, torch.optim.SGD(model.parameters(), lr=0.1), checkpoint_dir=str(tmp_path / "timm"),
        max_history=3,
    )  # fmt: skip
    (tmp_path / "timm").mkdir()
    ours = CheckpointManager(tmp_path / "ours", keep_last=1, keep_best=3, metric="top1")
    for epoch, metric in enumerate(top1):
        saver.save_checkpoint(epoch, metric)
        payload = {"model": {"w.weight": torch.full((2,), float(epoch))}}
        payload.update(progress={"step": epoch, "epoch": epoch, "sample": 0})
        ours.save(epoch, payload, {"top1": metric, "top5": 99.0})
    timm_kept = sorted(
        int(Path(f).stem.split("-")[1].split(".")[0]) for f, _ in saver.checkpoint_files
    )
    kept = sorted(int(p.stem.split("-")[1]) for p in ours.list())
    newest = len(top1) - 1
    assert sorted(set(timm_kept) | {newest}) == kept
    best = load_checkpoint_file(tmp_path / "ours" / "best.pt")["progress"]["step"]
    assert best == saver.best_epoch == 5  # 80.0 first reached at epoch 5, kept over epoch 6


def test_loss_ranks_ascending_and_keep_last_zero_keeps_all(tmp_path):
    ours = CheckpointManager(tmp_path, keep_last=0, keep_best=1, metric="loss")
    for step, loss in enumerate([3.0, 1.0, 2.0]):
        payload = {"model": {"w.weight": torch.full((2,), float(step))}}
        payload["progress"] = {"step": step, "epoch": 0, "sample": 0}
        ours.save(step, payload, {"loss": loss})
    assert len(ours.list()) == 3
    assert load_checkpoint_file(tmp_path / "best.pt")["progress"]["step"] == 1


def test_clean_stale_removes_only_temporaries_and_says_so(tmp_path, caplog):
    stale = [
        ".ckpt-000000003.pt.123-abcdef01.tmp",
        ".best.pt.9-00ff00ff.tmp",
        ".ckpt-1.pt.x7k2.tmp",
    ]
    for name in stale:
        (tmp_path / name).write_bytes(b"partial")
    keep = ["ckpt-000000001.pt", "notes.txt"]
    for name in keep:
        (tmp_path / name).write_bytes(b"x")
    with caplog.at_level("WARNING", logger="classzoo"):
        removed = CheckpointManager(tmp_path, keep_last=3).clean_stale()
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert all(name in caplog.text for name in stale)


def test_killed_save_leaves_the_previous_checkpoint_and_a_temporary(tmp_path):
    """SIGKILL in the middle of a save: the file it replaces is intact; the temporary it left
    is what clean_stale removes at the next start."""
    child = textwrap.dedent(
        """
        import os, sys, torch
        from classzoo.formats.torch_checkpoint import save_checkpoint_file
        path = sys.argv[1]
        save_checkpoint_file({"model": {"w.weight": torch.ones(10)}}, path)
        def slow(obj, f):
            f.write(b"PK" * 1000)
            os.kill(os.getpid(), 9)
        torch.save = slow
        save_checkpoint_file({"model": {"w.weight": torch.zeros(10)}}, path)
        """
    )
    target = tmp_path / "ckpt-000000001.pt"
    proc = subprocess.run([sys.executable, "-c", child, str(target)], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert torch.equal(load_checkpoint_file(target)["model"]["w.weight"], torch.ones(10))
    assert len(CheckpointManager(tmp_path).clean_stale()) == 1


def test_fifo_named_like_the_newest_checkpoint_does_not_hang(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    payload = _training_payload(1)
    manager.save(1, payload)
    os.mkfifo(tmp_path / "ckpt-000000002.pt")
    (tmp_path / "ckpt-000000003.pt").write_bytes(b"")
    path, ckpt = CheckpointManager(tmp_path, keep_last=3).latest_good()
    assert path.name == "ckpt-000000001.pt" and ckpt["progress"]["step"] == 1
