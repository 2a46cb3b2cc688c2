"""Every rank of a run must continue from the same checkpoint and read the same data.

On several machines each rank reads its own file system. Two setups gave wrong numbers without
an error (two machines simulated with ``torchrun --nnodes 2`` on one host, each with its own
folder):

- ``--resume auto`` where only the first machine holds the run folder (no shared file system):
  rank 0 continued from ckpt-4 while rank 1 found no checkpoint and started at step 0 (a fresh
  optimizer, the warm-up lr, epoch 0's shard); steps 5-6 logged losses of neither run (0.3655 /
  0.6252 against 0.3819 / 0.6140 with a shared folder), a checkpoint was written from the
  diverged ranks, and the ranks then hung in different collectives.
- A copy of the data that differs on one machine (one more image in its val folder): each rank
  cut its shard from its own list, so an image of one copy was never scored and the extra one
  was, and ``classzoo eval`` printed ``count 15, top1 93.33`` where the data scores 100.

torch's DistributedSampler does not check either. Here the ranks compare what they found (the
checkpoint's step; each split's image count, classes and file names) in one gather, and every
rank stops with the same line where they differ.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from classzoo.engine.checkpoint import CKPT_RE, CheckpointManager
from classzoo.engine.distributed import DistEnv, gather_objects
from classzoo.errors import UserError

_SHARED = "every machine needs the same files: a shared folder, or an identical copy on each"


def check_same_newest(run_dir: Path, env: DistEnv) -> None:
    """``--resume auto``, before anything is written: the newest checkpoint file each rank sees
    in its run folder (:func:`check_same_checkpoint` compares the one each rank restores)."""
    if env.distributed:
        folder = run_dir / "checkpoints"
        newest = CheckpointManager(folder).list()
        step = int(CKPT_RE.match(newest[-1].name)[1]) if newest else None
        check_same_checkpoint(step, str(folder), env)


def check_same_checkpoint(step: int | None, where: str, env: DistEnv) -> None:
    """``--resume auto``: the step each rank would continue from (None: no checkpoint in
    ``where``, its checkpoints folder) must be the same on every rank."""
    seen = gather_objects((step, where), env)
    if len({s for s, _ in seen}) <= 1:
        return
    found = "; ".join(
        f"rank {r}: {f'step {s}' if s is not None else 'no checkpoint'} in {w}"
        for r, (s, w) in enumerate(seen)
    )
    raise UserError(
        f"--resume auto: the ranks would continue from different steps ({found}); the run "
        f"folder must be the same on every machine ({_SHARED})"
    )


def check_same_data(splits: dict[str, Any], env: DistEnv) -> None:
    """Each split (``name -> build.Split`` or None) must hold the same images on every rank."""
    if not env.distributed:
        return
    mine = {k: _fingerprint(s) for k, s in splits.items() if s is not None}
    seen = gather_objects(mine, env)
    for name, ours in mine.items():
        # the same files may lie at another path on another machine: the location is shown only
        if any((theirs.get(name) or ())[:3] != ours[:3] for theirs in seen):
            shown = "; ".join(
                f"rank {r}: {_shown(fp[name])}" for r, fp in enumerate(seen) if name in fp
            )
            raise UserError(f"the {name} split differs between ranks ({shown}): {_SHARED}")


def _fingerprint(split: Any) -> tuple[int, int, str, str]:
    """(images, classes, a digest of the class names and of the files in order (relative to
    the split's folder), the split's location)."""
    ds = split.dataset
    h = hashlib.blake2b(digest_size=8)
    h.update("\0".join(split.classes or ()).encode("utf-8", "surrogateescape"))
    files = getattr(ds, "files", None)  # an ImageFolder: its files under its root, in order
    root = str(getattr(ds, "root", ""))
    names = (f[len(root) :] if f.startswith(root) else f for f in files) if files else ()
    h.update("\n".join(names).encode("utf-8", "surrogateescape"))
    h.update(
        "\n".join(p.rsplit("/", 1)[-1] for p in split.info.files).encode("utf-8", "surrogateescape")
    )  # TFRecord
    return len(ds), len(split.classes or ()), h.hexdigest(), split.info.location


def _shown(fp: tuple[int, int, str, str]) -> str:
    images, classes, digest, where = fp
    return f"{images} images, {classes} classes in {where} (files {digest})"
