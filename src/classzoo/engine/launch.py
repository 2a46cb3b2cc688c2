"""``classzoo train --nproc-per-node N``: re-run the same command under torchrun (nothing home-made)."""

from __future__ import annotations

import sys

from classzoo.engine.stop import run_forwarding_signals


def relaunch_with_torchrun(nproc: int, argv: list[str]) -> int:
    """Drop ``--nproc-per-node`` and hand the rest to ``torchrun --standalone -m classzoo``."""
    rest: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc-per-node":
            skip = True
            continue
        if a.startswith("--nproc-per-node="):
            continue
        rest.append(a)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "classzoo",
        *rest,
    ]
    return run_forwarding_signals(cmd)  # a first SIGTERM / Ctrl-C stops the workers gracefully
