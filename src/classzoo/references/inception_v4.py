"""InceptionV4 (TF 1.15 reference, ``train.py``; scripts run_1p.sh, run_8p.sh, test.sh).

The reference's ``train.py`` is not available here; its defaults come from its README's
parameter table (:data:`README_DEFAULTS`). Where that table agrees with the reference's own
scripts (``--mode train``, ``--log_dir ./model``, ``--epochs_between_evals 5``) an omitted flag
takes it. Where the table contradicts the README's "default configuration" and the scripts
(batch 256 / lr 0.01 / weight decay 4e-4 against 128 / 0.045 / 1e-5), or could not have held
for the runs the README shows (``--max_train_steps 100`` with 100-epoch runs), an omitted flag
keeps the ``inception_v4`` recipe's value, which is that default configuration.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from classzoo.errors import UserError
from classzoo.references.common import (
    Command,
    new_parser,
    optional_path,
    parse,
    parse_bool,
    positive,
    recipe_name,
    world,
)

RECIPE = "inception_v4"
# The reference README's parameter table ("脚本参数"), as printed there.
README_DEFAULTS = {
    "--data_dir": "path/to/data",
    "--batch_size": 256,
    "--lr": 0.01,
    "--max_epochs": 100,
    "--weight_decay": 4e-4,
    "--momentum": 0.9,
    "--label_smoothing": 0.1,
    "--log_dir": "./model",
    "--log_name": "googlebet.log",
    "--mode": "train",
    "--eval_dir": None,
    "--max_train_steps": 100,
    "--iteration_per_loop": 10,
    "--use_nesterov": True,
    "--rank_size": 1,
    "--T_max": None,
    "--epochs_between_evals": 5,
}
# The ones an omitted flag takes here (see the module docstring and docs/references.md).
APPLIED = ("--log_dir", "--mode", "--epochs_between_evals")
# Reference flags with no classzoo meaning, and why (each is an error, never ignored).
UNSUPPORTED = {
    "--lr_decay": "the reference's exponential decay is unused by its cosine schedule (--T_max)",
    "--lr_decay_steps": "the reference's exponential decay is unused by its cosine schedule (--T_max)",
    "--dtype": "inputs are float32; mixed precision is train.amp (--set train.amp=bf16|fp16)",
    "--over_dump": "Ascend overflow dumps have no PyTorch equivalent",
    "--over_dump_path": "Ascend overflow dumps have no PyTorch equivalent",
    "--network": "this launcher runs inception_v4 only",
    "--num_classes": "not a run_1p.sh/run_8p.sh flag; use --set model.num_classes=N "
    "(slim labels: N+1 logits with the background class)",
    "--restore_path": "not a run_1p.sh/run_8p.sh flag; use --set model.checkpoint=PATH "
    "--set model.exclude=[Logits/Logits,AuxLogits/Aux_logits]",
}
# Run-folder files a --log_name must not replace (classzoo.engine.logs, engine.run).
_RUN_FILES = {"eval.log", "metrics.jsonl", "config.yaml", "resolved.yaml", "summary.json"}
_RUN_FILES |= {"console.log"}


def _parser():
    p = new_parser("inception_v4")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--max_epochs", type=float, default=None)
    p.add_argument("--weight_decay", type=float, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--label_smoothing", type=float, default=None)
    p.add_argument("--log_dir", default=README_DEFAULTS["--log_dir"])
    p.add_argument("--log_name", default=None)
    modes = ["train", "train_and_evaluate", "evaluate"]
    p.add_argument("--mode", choices=modes, default=README_DEFAULTS["--mode"])
    p.add_argument("--eval_dir", type=optional_path, default=None)
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--iteration_per_loop", "--iterations_per_loop", type=int, default=None)
    p.add_argument("--use_nesterov", type=parse_bool, nargs="?", const=True, default=None)
    p.add_argument("--rank_size", type=int, default=None)
    p.add_argument("--T_max", type=float, default=None)
    every = README_DEFAULTS["--epochs_between_evals"]
    p.add_argument("--epochs_between_evals", type=int, default=every)
    p.add_argument("--display_every", type=int, default=None)
    return p


def translate(argv: list[str], environ: Mapping[str, str]) -> Command:
    a = parse(_parser(), argv, "inception_v4", UNSUPPORTED)
    if a.data_dir is None:
        raise UserError("--data_dir is required (slim TFRecords: train-*, validation-*)")
    nprocs, _ = world(environ)
    _check_launch(a, nprocs)
    # The 8p variant: 64 images per device (64 x 8), as run_8p.sh.
    variant = a.variant or ("8p" if nprocs > 1 else None)
    cmd = Command(recipe_name(RECIPE, variant), a.data_dir, a.log_dir, log_name=a.log_name)
    cmd.set("train.mode", a.mode)
    _evaluate_what(cmd, a)
    _set_numbers(cmd, a)
    if a.iteration_per_loop is not None and a.iteration_per_loop > 1:
        cmd.notes.append(
            f"--iteration_per_loop {a.iteration_per_loop}: Ascend's loop sinking (steps run on "
            "the device per host call) changes no number here; every step returns to the host "
            "and the log interval is --display_every"
        )
    if a.log_name is not None:
        _check_log_name(a.log_name)
    cmd.sets += a.sets
    return cmd


def _check_launch(a: argparse.Namespace, nprocs: int) -> None:
    """--rank_size describes the launch: it must match torchrun's; --iteration_per_loop >= 1."""
    if a.rank_size is not None and a.rank_size != nprocs:
        raise UserError(
            f"--rank_size {a.rank_size} but {nprocs} process(es) were launched "
            f"(WORLD_SIZE={nprocs}); launch with torchrun --nproc-per-node {a.rank_size}"
        )
    if a.iteration_per_loop is not None:
        positive(a.iteration_per_loop, "--iteration_per_loop")


def _evaluate_what(cmd: Command, a: argparse.Namespace) -> None:
    """--mode evaluate reads --eval_dir: a checkpoint, a folder of them, or a run folder."""
    if a.eval_dir is not None:
        if a.mode != "evaluate":
            raise UserError(f"--eval_dir is read only with --mode evaluate (mode is {a.mode})")
        ckpts = Path(a.eval_dir) / "checkpoints"  # a classzoo run folder: its checkpoints/
        cmd.set("model.checkpoint", str(ckpts if ckpts.is_dir() else a.eval_dir))
    elif a.mode == "evaluate":
        raise UserError("--mode evaluate needs --eval_dir (a checkpoint or a folder of them)")


def _set_numbers(cmd: Command, a: argparse.Namespace) -> None:
    for flag, key, value in (
        ("--batch_size", "data.batch_size", a.batch_size),
        ("--max_train_steps", "train.max_steps", a.max_train_steps),
        ("--epochs_between_evals", "train.eval_every", a.epochs_between_evals),
        ("--display_every", "train.log_every", a.display_every),
    ):
        if value is not None:
            cmd.set(key, positive(value, flag))
    if a.max_epochs is not None:
        cmd.set("train.epochs", float(positive(a.max_epochs, "--max_epochs")))
    for key, value in (
        ("optim.weight_decay", a.weight_decay),
        ("optim.momentum", a.momentum),
        ("train.label_smoothing", a.label_smoothing),
        ("sched.t_max", a.T_max),
    ):
        if value is not None:
            cmd.set(key, float(value))
    if a.lr is not None:
        cmd.set("optim.lr", a.lr)
        cmd.set("optim.lr_base_batch", None)  # the reference used --lr as given, 1p and 8p
    if a.use_nesterov is not None:
        cmd.set("optim.nesterov", a.use_nesterov)


def _check_log_name(name: str) -> None:
    if "/" in name or name in ("", ".", ".."):
        raise UserError(f"--log_name {name!r} must be a file name (the folder is --log_dir)")
    if name in _RUN_FILES:
        raise UserError(f"--log_name {name} would replace the run folder's own {name}")
