"""Where a resumed run continues: ``--resume auto`` (the newest good checkpoint of the run
folder) or ``--resume FILE``, restored into the training state on every rank.

On several ranks each one looks in its own file system, so the step found is compared across
the ranks first (engine/rank_agreement.py): a machine without the run folder had started afresh
beside ranks that resumed.
"""

from __future__ import annotations

import logging
from dataclasses import astuple
from pathlib import Path
from typing import Any

from classzoo.engine.checkpoint import CheckpointManager
from classzoo.engine.checkpoint import load as load_ckpt
from classzoo.engine.distributed import DistEnv
from classzoo.engine.rank_agreement import check_same_checkpoint
from classzoo.engine.state import TrainState
from classzoo.errors import UserError

log = logging.getLogger("classzoo")


def restore(
    state: TrainState,
    ckpts: CheckpointManager,
    resume: str | None,
    given: dict[str, Any] | None,
    env: DistEnv,
    seed: int,
) -> dict[str, Any] | None:
    """``resume``: "auto" (the newest good checkpoint) or a file, ``given`` as run() read it.
    Returns the resolved record stored in the checkpoint it continued from ({} for one that
    stores none), None when nothing was restored."""
    if resume is None:
        return None
    if resume == "auto":
        found = ckpts.latest_good()
        step = int(found[1]["progress"]["step"]) if found is not None else None
        check_same_checkpoint(step, str(ckpts.directory), env)
        if found is None:
            log.info("resume auto: no checkpoint in %s, starting fresh", ckpts.directory)
            return None
        path, ckpt = found
    else:
        path, ckpt = Path(resume), given if given is not None else load_ckpt(Path(resume))
    try:
        state.restore(ckpt, env, seed)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise UserError(f"cannot resume from {path}: {str(exc).splitlines()[0]}") from None
    if env.is_main:  # the files of the continuation a resume from an earlier step abandons
        ckpts.resumed_from(state.pos.step)
    log.info("resumed from %s at step %d (epoch %d, sample %d)", path, *astuple(state.pos))
    record = ckpt.get("resolved")
    return record if isinstance(record, dict) else {}
