"""``classzoo train``: train / fine-tune / evaluate a recipe."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from classzoo.cli.common import add_set_flag, add_verb


def add_parser(subparsers) -> None:
    t = add_verb(subparsers, "train", "train / fine-tune / evaluate a recipe")
    t.add_argument(
        "--recipe", required=True, help="recipe name[:variant] or YAML file (`classzoo recipes`)"
    )
    t.add_argument(
        "--data-dir", default=None, help="dataset folder (data.dir; default: the recipe's)"
    )
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
        "--mode",
        choices=["train", "train_and_evaluate", "evaluate"],
        default=None,
        help="train.mode (default: the recipe's)",
    )
    t.add_argument(
        "--device", default=None, help="auto|cpu|cuda|npu|mps (train.device; default: the recipe's)"
    )
    t.add_argument(
        "--amp", default=None, help="auto|off|bf16|fp16 (train.amp; default: the recipe's)"
    )
    t.add_argument(
        "--epochs", type=float, default=None, help="train.epochs (default: the recipe's)"
    )
    t.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="per device (data.batch_size; default: the recipe's)",
    )
    t.add_argument(
        "--max-steps", type=int, default=None, help="train.max_steps (default: the recipe's)"
    )
    t.add_argument(
        "--grad-accum-steps",
        type=int,
        default=None,
        help="train.grad_accum_steps (default: the recipe's)",
    )
    t.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="launch this many processes via torchrun (default: this process only)",
    )


def run(args: argparse.Namespace) -> int:
    if args.nproc_per_node and "LOCAL_RANK" not in os.environ:
        from classzoo.engine.launch import relaunch_with_torchrun

        return relaunch_with_torchrun(args.nproc_per_node, sys.argv[1:])
    from classzoo.config import load_recipe, with_overrides, with_values
    from classzoo.engine.run import run as run_recipe

    flags = {
        "data.dir": args.data_dir,
        "train.mode": args.mode,
        "train.device": args.device,
        "train.amp": args.amp,
        "train.epochs": args.epochs,
        "data.batch_size": args.batch_size,
        "train.max_steps": args.max_steps,
        "train.grad_accum_steps": args.grad_accum_steps,
    }
    given = {key: value for key, value in flags.items() if value is not None}
    cfg = with_values(load_recipe(args.recipe), given, "command line")
    cfg = with_overrides(cfg, args.overrides)
    out = Path(args.output_dir) if args.output_dir else None
    run_recipe(cfg, out, resume=args.resume, overwrite=args.overwrite)
    return 0
