"""ResNet-152 (TF 1.15 reference, ``run_resnet.py``; scripts train_1p.sh, test_1p.sh).

The reference is one program for both jobs: ``--do_train True`` fine-tunes (or trains from random
init with ``--model_path None``), and without ``--do_train`` it evaluates ``--model_path``. Its
README's eval command is ``run_resnet.py --model_path M --data_path D --image_num 50000
--class_num 1000 --batch_size 100``: no ``--do_train``. Omitted flags take the reference's
defaults (:data:`REFERENCE_DEFAULTS`), so that command evaluates here too: ``classzoo eval`` over
every record once, nothing written, top-1 printed. Training runs the ``resnet152_slim_finetune``
recipe (slim's VGG preprocessing, the checkpoint's own head when the class count allows).
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
)

RECIPE = "resnet152_slim_finetune"
# run_resnet.py's tf.flags.DEFINE_* defaults (the reference program itself).
REFERENCE_DEFAULTS = {
    "--model_path": None,  # None: random init when training; evaluating needs a checkpoint
    "--data_path": None,  # a folder; every file in it is a TFRecord shard
    "--output_path": None,  # checkpoints when training; unused when evaluating
    "--do_train": False,  # "默认加载模型进行eval": evaluate unless --do_train True
    "--image_num": 50000,  # the reference ran int(image_num / batch_size) steps
    "--class_num": 1000,
    "--batch_size": 64,
    "--epoch": 10,
    "--learning_rate": 0.001,
    "--save_checkpoints_steps": 100,
}
# Flags the reference reads only when training (its eval branch ignores them).
_TRAIN_ONLY = ("--output_path", "--epoch", "--learning_rate", "--save_checkpoints_steps")


def _parser():
    p = new_parser("resnet152")
    p.add_argument("--model_path", type=optional_path, default=None)
    p.add_argument("--data_path", default=None)
    p.add_argument("--output_path", default=None)
    # absl booleans: --do_train, --do_train=true, --nodo_train; also "--do_train False".
    p.add_argument("--do_train", type=parse_bool, nargs="?", const=True, default=None)
    p.add_argument("--nodo_train", dest="do_train", action="store_false", default=None)
    p.add_argument("--image_num", type=int, default=None)
    p.add_argument("--class_num", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--epoch", type=float, default=None)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--save_checkpoints_steps", type=int, default=None)
    return p


def _value(a: argparse.Namespace, flag: str):
    """The flag as given, else the reference's default."""
    given = getattr(a, flag.lstrip("-"))
    return REFERENCE_DEFAULTS[flag] if given is None else given


def translate(argv: list[str], environ: Mapping[str, str]) -> Command:
    a = parse(_parser(), argv, "resnet152")
    if a.data_path is None:
        raise UserError("--data_path is required (a folder of TFRecord files, any names)")
    if any(c in a.data_path for c in "*?["):
        raise UserError(f"--data_path {a.data_path}: give the folder holding the TFRecord files")
    class_num = _value(a, "--class_num")
    if class_num < 1:
        raise UserError(f"--class_num {class_num} must be at least 1")
    batch = positive(_value(a, "--batch_size"), "--batch_size")
    recipe = recipe_name(RECIPE, a.variant)
    if _value(a, "--do_train"):
        cmd = _train(a, recipe, class_num, batch)
    else:
        cmd = _evaluate(a, recipe, class_num, batch)
    # --image_num is checked only when given: the reference's 50000 was a step count, not a
    # fact about the data (classzoo counts the records and reads each once).
    cmd.image_num = a.image_num
    cmd.sets += a.sets
    return cmd


def _evaluate(a: argparse.Namespace, recipe: str, class_num: int, batch: int) -> Command:
    if a.model_path is None:
        raise UserError(
            "evaluating (--do_train is False, the reference's default) needs --model_path "
            "(a classzoo checkpoint or the slim resnet_v1_152.ckpt); pass --do_train True to train"
        )
    cmd = Command(recipe, a.data_path, verb="eval", checkpoint=a.model_path)
    cmd.set("model.num_classes", class_num)
    cmd.set("data.eval_batch_size", batch)
    for flag in _TRAIN_ONLY:
        if getattr(a, flag.lstrip("-")) is not None:
            cmd.notes.append(f"{flag} is read only when training; this run evaluates")
    return cmd


def _torch_file(path: str) -> bool:
    """A classzoo / safetensors file (else the slim checkpoint the reference takes)."""
    from classzoo.models.weights import detect_format

    try:
        return Path(path).is_file() and detect_format(path) in ("classzoo", "safetensors")
    except UserError:
        return False


def _train(a: argparse.Namespace, recipe: str, class_num: int, batch: int) -> Command:
    if a.output_path is None:
        raise UserError("--output_path is required with --do_train True (the run folder)")
    cmd = Command(recipe, a.data_path, a.output_path)
    cmd.set("train.mode", "train")  # the reference trains only; test_1p.sh evaluates
    if a.model_path is not None:
        cmd.set("model.checkpoint", a.model_path)
    cmd.set("model.num_classes", class_num)
    if class_num != 1000 and a.model_path is not None and not _torch_file(a.model_path):
        # Fine-tuning the 1000-class slim checkpoint to another head: its logits are not loaded.
        # (A classzoo checkpoint keeps its own head, or one of another size is left at init.)
        from classzoo.models.slim_names import slim_head_scopes

        cmd.set("model.exclude", list(slim_head_scopes("resnet_v1_152")))
    cmd.set("data.batch_size", batch)
    cmd.set("train.epochs", float(positive(_value(a, "--epoch"), "--epoch")))
    cmd.set("optim.lr", _value(a, "--learning_rate"))
    cmd.set("optim.lr_base_batch", None)  # the reference used its lr as given
    steps = _value(a, "--save_checkpoints_steps")
    cmd.set("train.ckpt_every_steps", steps if steps > 0 else None)
    return cmd
