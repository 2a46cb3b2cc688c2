"""Gluon ResNet50_v1b (PyTorch + timm reference; scripts test/train_{full,performance}_{1p,8p}.sh).

The reference is Ascend's copy of timm's ``train.py`` at commit 381b279 (its README), with
``--data_path`` and ``--device_id`` added. That copy is not available here; timm's own
``train.py`` at that commit is (:data:`TIMM_DEFAULTS`), and the README states two defaults that
differ from it (``--model gluon_resnet50_v1b``, ``--sched cosine``). An omitted flag takes timm's
default where it describes what the program does rather than the recipe: no mixed precision
without ``--amp``, a new time-stamped run folder under ``--output`` (default ``./output/train``),
no pretrained weights. The recipe numbers (batch, lr, epochs, cooldown) keep the
``gluon_resnet50_v1b`` recipe's values, which are the reference scripts' own.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping

from classzoo.errors import UserError
from classzoo.references.common import (
    Command,
    new_parser,
    optional_path,
    parse,
    positive,
    recipe_name,
    world,
)

RECIPE = "gluon_resnet50_v1b"
# timm train.py at 381b2797 (the reference's base), for the flags the reference scripts use.
TIMM_DEFAULTS = {
    "--model": "resnet101",  # the reference README: gluon_resnet50_v1b
    "-b": 32,
    "--amp": False,
    "--apex-amp": False,
    "--native-amp": False,
    "--sched": "step",  # the reference README: cosine
    "--epochs": 200,
    "--cooldown-epochs": 10,
    "--lr": 0.01,
    "--log-interval": 50,
    "--use-multi-epochs-loader": False,
    "--output": "",  # -> ./output/train/<experiment>
    "--experiment": "",  # -> <date-time>-<model>-<image size>
    "--pretrained": False,
    "--initial-checkpoint": "",
    "--num-classes": None,  # the model's own head (1000)
}
# timm's architecture name for the gluon weights (timm >= 0.9: resnet50.gluon_in1k).
_GLUON_NAMES = ("gluon_resnet50_v1b", "resnet50", "resnet50.gluon_in1k")


def _parser():
    p = new_parser("gluon_resnet50_v1b")
    p.add_argument("data", nargs="?", default=None, help="timm's positional data folder")
    p.add_argument("--data_path", default=None)
    p.add_argument("--device_id", type=int, default=None)
    p.add_argument("-b", "--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--apex-amp", dest="apex_amp", action="store_true")
    p.add_argument("--native-amp", dest="native_amp", action="store_true")
    p.add_argument("--sched", default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--cooldown-epochs", dest="cooldown", type=float, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--log-interval", dest="log_interval", type=int, default=None)
    p.add_argument("--use-multi-epochs-loader", dest="multi_epochs", action="store_true")
    p.add_argument("--output", default="", help="timm: parent folder of the run folder")
    p.add_argument("--experiment", default="", help="timm: the run folder's name")
    p.add_argument("--pretrained", action="store_true", help="timm's pretrained weights")
    p.add_argument("--initial-checkpoint", dest="initial_checkpoint", type=optional_path)
    p.add_argument("--num-classes", dest="num_classes", type=int, default=None)
    return p


def translate(argv: list[str], environ: Mapping[str, str]) -> Command:
    a = parse(_parser(), argv, "gluon_resnet50_v1b")
    if a.data is not None and a.data_path is not None and a.data != a.data_path:
        raise UserError(f"two data folders: positional {a.data} and --data_path {a.data_path}")
    if a.data is None and a.data_path is None:
        raise UserError("the data folder is required (--data_path, or timm's positional DIR)")
    nprocs, local_rank = world(environ)
    if a.local_rank is not None and a.local_rank != local_rank:
        raise UserError(
            f"--local_rank {a.local_rank} but this process has LOCAL_RANK={local_rank}"
            " (--local_rank is set by the launcher, not by hand)"
        )
    if a.device_id is not None:
        _select_device(a.device_id, nprocs, environ)
    recipe = recipe_name(RECIPE, a.variant)
    cmd = Command(recipe, a.data or a.data_path)
    _set_model(cmd, a)
    _set_recipe_numbers(cmd, a, recipe)
    if a.log_interval is not None:
        cmd.set("train.log_every", positive(a.log_interval, "--log-interval"))
    # --use-multi-epochs-loader keeps loader workers across epochs: classzoo's train loader
    # always does (persistent_workers), so the flag asks for what already happens.
    cmd.sets += a.sets
    cmd.output_dir = _run_folder(a, nprocs, cmd)
    return cmd


def _set_model(cmd: Command, a: argparse.Namespace) -> None:
    """--model, --pretrained, --initial-checkpoint, --num-classes: timm's model flags."""
    name = a.model or RECIPE
    if name not in _GLUON_NAMES:
        # other timm models run with this recipe's hyper-parameters, as the reference's --model did
        cmd.set("model.name", name)
    elif a.pretrained:
        # timm of the reference's era: gluon_resnet50_v1b = the MXNet Gluon weights; today's
        # timm names them resnet50.gluon_in1k (plain resnet50 would load other weights).
        cmd.set("model.name", "resnet50.gluon_in1k" if name != "resnet50" else name)
    if a.pretrained:
        cmd.set("model.pretrained", True)
    if a.initial_checkpoint is not None:
        cmd.set("model.checkpoint", a.initial_checkpoint)
    if a.num_classes is not None:
        cmd.set("model.num_classes", positive(a.num_classes, "--num-classes"))
    # timm train.py: no mixed precision unless --amp / --apex-amp / --native-amp is given.
    cmd.set("train.amp", "auto" if (a.amp or a.apex_amp or a.native_amp) else "off")


def _set_recipe_numbers(cmd: Command, a: argparse.Namespace, recipe: str) -> None:
    if a.batch_size is not None:
        cmd.set("data.batch_size", positive(a.batch_size, "-b"))
    if a.sched is not None:
        if a.sched not in ("cosine", "step"):
            raise UserError(f"--sched {a.sched}: classzoo schedules are cosine and step")
        cmd.set("sched.name", a.sched)
    # timm: the cosine spans --epochs and --cooldown-epochs are added after it at lr_min;
    # classzoo: train.epochs is the total and the cosine spans epochs - cooldown_epochs.
    if a.epochs is not None or a.cooldown is not None:
        from classzoo.config import load_recipe

        base = load_recipe(recipe)
        cooldown = a.cooldown if a.cooldown is not None else base.sched.cooldown_epochs
        # no --epochs: the recipe's cosine length (its total less its own cooldown), whatever
        # --cooldown-epochs adds after it, as timm's num_epochs = epochs + cooldown_epochs
        epochs = (
            a.epochs if a.epochs is not None else base.train.epochs - base.sched.cooldown_epochs
        )
        cmd.set("train.epochs", float(positive(epochs, "--epochs") + cooldown))
        cmd.set("sched.cooldown_epochs", float(cooldown))
    if a.lr is not None:
        cmd.set("optim.lr", a.lr)
        cmd.set("optim.lr_base_batch", None)  # timm's --lr is used as given


def _run_folder(a: argparse.Namespace, nprocs: int, cmd: Command) -> str:
    """timm: ``<--output or ./output/train>/<--experiment or date-time-model-size>``, a new
    folder per run. Under torchrun every rank must name the same folder, which a clock read in
    each process cannot promise: there --experiment is required (the 8p scripts pass one)."""
    name = a.experiment
    if not name:
        if nprocs > 1:
            raise UserError(
                f"--experiment NAME is required with {nprocs} processes (the run folder under "
                "--output; timm names it from rank 0's clock, which the other ranks cannot see)"
            )
        model = (a.model or RECIPE).replace("/", "_").replace(":", "_")  # timm safe_model_name
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{_image_size(cmd)}"
    if "/" in name or name in (".", ".."):
        raise UserError(f"--experiment {name!r} must be a folder name (the parent is --output)")
    return os.path.join(a.output or os.path.join(".", "output", "train"), name)


def _image_size(cmd: Command) -> int:
    """The training image size, for timm's run-folder name: the recipe's, else the model's."""
    from classzoo.config import load_recipe

    cfg = load_recipe(cmd.recipe, cmd.sets)
    if cfg.data.image_size:
        return int(cfg.data.image_size)
    import timm

    try:
        input_size = timm.get_pretrained_cfg_value(cfg.model.name, "input_size")
    except RuntimeError:  # not a timm architecture (classzoo's slim models)
        input_size = None
    return int(input_size[-1]) if input_size else 224


def _select_device(device_id: int, nprocs: int, environ: Mapping[str, str]) -> None:
    """``--device_id N`` for one process: the N-th accelerator, through the visibility variables."""
    if nprocs > 1:
        raise UserError(
            f"--device_id {device_id} with {nprocs} processes: under torchrun each rank uses the "
            "device of its LOCAL_RANK; leave --device_id out"
        )
    if device_id < 0:
        raise UserError(f"--device_id {device_id} must be 0 or more")
    if device_id == 0:
        return  # the first (or only) device: what classzoo picks anyway
    for var in ("CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES"):
        if environ.get(var):
            raise UserError(f"--device_id {device_id} together with {var}={environ[var]}: use one")
    os.environ["CUDA_VISIBLE_DEVICES"] = os.environ["ASCEND_RT_VISIBLE_DEVICES"] = str(device_id)
    from classzoo.engine.distributed import resolve_device

    if resolve_device("auto").type == "cpu":
        raise UserError(
            f"--device_id {device_id}: this machine has no CUDA or Ascend device {device_id}"
        )


def seed_table(summary: dict, world_size: int) -> str:
    """The reference's result table (``Name | Acc@1 | FPS | Epochs | AMP_Type``) for one run."""
    top1 = "-" if summary.get("top1") is None else f"{summary['top1']:.2f}"
    fps = summary.get("images_per_sec")
    fps = "-" if fps is None else f"{fps:.2f}"
    return "\n".join(
        [
            "| Name | Acc@1 | FPS | Epochs | AMP_Type |",
            "| ------ | :---: | -------- | :----: | :------: |",
            f"| {world_size}p | {top1} | {fps} | {summary.get('epochs', 0):g} | "
            f"{summary.get('amp')} |",
        ]
    )
