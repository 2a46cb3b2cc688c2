"""``classzoo train``: train / fine-tune / evaluate a recipe."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from classzoo.cli.common import add_set_flag, add_verb

# Flags that set one config key each: (flag, key, type, help); --set KEY=VALUE sets any key.
SHORTCUTS = (
    ("--data-dir", "data.dir", str, "dataset folder"),
    ("--mode", "train.mode", str, "train | train_and_evaluate | evaluate"),
    ("--device", "train.device", str, "auto | cpu | cuda | npu | mps"),
    ("--amp", "train.amp", str, "training precision: auto | off | bf16 | fp16"),
    ("--epochs", "train.epochs", float, "epochs"),
    ("--batch-size", "data.batch_size", int, "images per device per step"),
    ("--max-steps", "train.max_steps", int, "stop after this many optimizer steps"),
    ("--grad-accum-steps", "train.grad_accum_steps", int, "micro-batches per optimizer step"),
)


def add_parser(subparsers) -> None:
    t = add_verb(subparsers, "train", "train / fine-tune / evaluate a recipe")
    t.add_argument(
        "--recipe", required=True, help="recipe name[:variant] or YAML file (`classzoo recipes`)"
    )
    for flag, key, kind, text in SHORTCUTS:
        t.add_argument(flag, type=kind, default=None, help=f"{text} ({key}; default: the recipe's)")
    t.add_argument(
        "--output-dir",
        default=None,
        help="run folder (default: a new runs/<recipe>-<UTC time>); one holding another run needs"
        " --resume auto or --overwrite",
    )
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --output-dir (its logs, checkpoints, summary)",
    )
    add_set_flag(t)
    t.add_argument(
        "--resume",
        default=None,
        help="'auto' (newest good checkpoint of the run folder) or a file (default: start fresh)",
    )
    t.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="launch this many processes via torchrun (default: this process only)",
    )


def run(args: argparse.Namespace) -> int:
    if args.resume is not None and args.overwrite:  # which one wins would be a silent choice
        from classzoo.errors import UserError

        raise UserError("--resume and --overwrite contradict: continue the run, or replace it")
    if args.nproc_per_node and "LOCAL_RANK" not in os.environ:
        from classzoo.engine.launch import relaunch_with_torchrun

        return relaunch_with_torchrun(args.nproc_per_node, sys.argv[1:])
    from classzoo.config import load_recipe, with_overrides, with_values
    from classzoo.engine.threads import choose_wait_policy, loader_threads

    flags = {key: getattr(args, flag[2:].replace("-", "_")) for flag, key, _, _ in SHORTCUTS}
    given = {key: value for key, value in flags.items() if value is not None}
    both = sorted(set(given) & {o.split("=", 1)[0].strip() for o in args.overrides})
    if both:  # the --set would win: a silent choice between two values the user typed
        from classzoo.errors import UserError

        flag = next(f for f, key, _, _ in SHORTCUTS if key == both[0])
        raise UserError(f"{both[0]} is given twice, by {flag} and by --set: give it once")
    cfg = with_values(load_recipe(args.recipe), given, "command line")
    cfg = with_overrides(cfg, args.overrides)
    if "train.amp" in given and cfg.train.mode == "evaluate":  # else silently not used
        from classzoo.errors import UserError

        raise UserError(
            "--amp sets the training precision (train.amp), which --mode evaluate does not use;"
            " its precision is eval.amp (--set eval.amp=...)"
        )
    # before torch loads (engine/threads.py)
    choose_wait_policy(loader_threads(cfg.data.loader, cfg.data.num_workers))
    from classzoo.engine.run import run as run_recipe

    out = Path(args.output_dir) if args.output_dir else None
    run_recipe(cfg, out, resume=args.resume, overwrite=args.overwrite, until_exit=True)
    return 0
