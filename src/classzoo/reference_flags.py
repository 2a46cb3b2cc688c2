"""The three reference programs' own flags, translated into one ``classzoo train`` command.

    python -m classzoo.reference_flags {resnet152,inception_v4,gluon_resnet50_v1b} [flags...]

Each seed was launched with its own flags (docs/recipes.md, reference/recipes.md). This module
accepts exactly those flags, maps each one to the recipe key it sets, prints the equivalent
``classzoo train`` command and runs it in-process. Two classzoo flags are accepted too:
``--set KEY=VALUE`` (any recipe key, applied last) and ``--variant NAME`` (a recipe variant, e.g.
``performance``). A flag classzoo does not know, or a value it cannot honour, is a UserError that
names the flag and says why (exit code 2), never silently dropped. Flags that only describe the
launch (``--rank_size``, ``--local_rank``) are checked against torchrun's environment. Under
torchrun every rank parses the same flags and so runs the same command.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from classzoo.errors import UserError

REFERENCES = ("resnet152", "inception_v4", "gluon_resnet50_v1b")
# Run-folder files a reference --log_name must not replace (classzoo.engine.logs, engine.run).
_RUN_FILES = {"eval.log", "metrics.jsonl", "config.yaml", "summary.json", "console.log"}
# Reference flags with no classzoo meaning, and why (each is an error, never ignored).
_UNSUPPORTED = {
    "inception_v4": {
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
    },
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises UserError (one line naming the flag) instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


@dataclass
class Command:
    """A ``classzoo train`` invocation built from reference flags."""

    recipe: str
    data_dir: str | None = None
    output_dir: str | None = None
    sets: list[str] = field(default_factory=list)  # "key=value", in order (later wins)
    log_name: str | None = None  # a link to train.log under this name (InceptionV4 --log_name)
    image_num: int | None = None  # ResNet-152 --image_num: checked against the record count

    def set(self, key: str, value) -> None:
        self.sets.append(f"{key}={_yaml_text(value)}")

    def run_dir(self) -> Path:
        """The run folder: --output-dir, else the default classzoo.cli picks."""
        return Path(self.output_dir or Path("runs") / self.recipe.replace(":", "-"))

    def argv(self) -> list[str]:
        out = ["train", "--recipe", self.recipe]
        if self.data_dir is not None:
            out += ["--data-dir", self.data_dir]
        if self.output_dir is not None:
            out += ["--output-dir", self.output_dir]
        for item in self.sets:
            out += ["--set", item]
        return out


def _yaml_text(value) -> str:
    """``value`` as ``--set`` reads it back (YAML): strings quoted only when YAML would not
    return them unchanged (``null``, ``1e-4``-like numbers, ``#`` comments, ...)."""
    import json

    from classzoo.config import parse_yaml

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_text(v) for v in value) + "]"
    text = str(value)
    try:
        same = parse_yaml(text) == text
    except Exception:  # yaml.YAMLError: not a plain scalar
        same = False
    return text if same else json.dumps(text)


def _bool(text: str) -> bool:
    """TF flags / ``ast.literal_eval`` booleans: True/False, also true/false/1/0."""
    low = str(text).strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _optional_path(text: str) -> str | None:
    """TF string flags default to None; the reference scripts pass 'None' for 'no checkpoint'."""
    return None if text in ("", "None", "none", "null") else text


def _parser(reference: str) -> _Parser:
    p = _Parser(prog=f"classzoo.reference_flags {reference}", allow_abbrev=False, add_help=True)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--variant", default=None, help="recipe variant (classzoo), e.g. performance")
    return p


def _world(environ: Mapping[str, str]) -> tuple[int, int]:
    """(WORLD_SIZE, LOCAL_RANK) as torchrun set them; (1, 0) for a single process."""
    return int(environ.get("WORLD_SIZE", "1")), int(environ.get("LOCAL_RANK", "0"))


def _recipe(name: str, variant: str | None) -> str:
    return f"{name}:{variant}" if variant else name


# ---- ResNet-152 (TF 1.15 reference: train_1p.sh, test_1p.sh) -----------------------------------


def _resnet152(argv: list[str], environ: Mapping[str, str]) -> Command:
    p = _parser("resnet152")
    p.add_argument("--model_path", type=_optional_path, default=None)
    p.add_argument("--data_path", default=None)
    p.add_argument("--output_path", default=None)
    p.add_argument("--do_train", type=_bool, nargs="?", const=True, default=True)
    p.add_argument("--image_num", type=int, default=None)
    p.add_argument("--class_num", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--epoch", type=float, default=None)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--save_checkpoints_steps", type=int, default=None)
    a = _parse(p, argv, "resnet152")
    if a.data_path is None:
        raise UserError("--data_path is required (a folder of TFRecord files, any names)")
    if any(c in a.data_path for c in "*?["):
        raise UserError(f"--data_path {a.data_path}: give the folder holding the TFRecord files")
    # The reference was one program for both: the fine-tune recipe, or random init without a
    # checkpoint (its "None = from scratch"); the paper's scratch recipe is resnet152_slim_scratch.
    cmd = Command(_recipe("resnet152_slim_finetune", a.variant), a.data_path, a.output_path)
    cmd.set("train.mode", "train" if a.do_train else "evaluate")
    if a.model_path is not None:
        cmd.set("model.checkpoint", a.model_path)
    elif not a.do_train:
        raise UserError("--do_train false evaluates --model_path, which is missing (None)")
    if a.class_num is not None:
        if a.class_num < 1:
            raise UserError(f"--class_num {a.class_num} must be at least 1")
        cmd.set("model.num_classes", a.class_num)
        if a.class_num != 1000 and a.model_path is not None and a.do_train:
            # Fine-tuning the 1000-class slim checkpoint to another head: its logits are not loaded.
            from classzoo.convert.slim import slim_head_scopes

            cmd.set("model.exclude", list(slim_head_scopes("resnet_v1_152")))
    if a.batch_size is not None:
        cmd.set("data.batch_size", _positive(a.batch_size, "--batch_size"))
    if a.epoch is not None:
        cmd.set("train.epochs", float(_positive(a.epoch, "--epoch")))
    if a.learning_rate is not None:
        cmd.set("optim.lr", a.learning_rate)
        cmd.set("optim.lr_base_batch", None)  # the reference used its lr as given
    if a.save_checkpoints_steps is not None:
        steps = a.save_checkpoints_steps
        cmd.set("train.ckpt_every_steps", steps if steps > 0 else None)
    cmd.image_num = a.image_num
    cmd.sets += a.sets
    return cmd


# ---- InceptionV4 (TF 1.15 reference: run_1p.sh, run_8p.sh) -------------------------------------


def _inception_v4(argv: list[str], environ: Mapping[str, str]) -> Command:
    p = _parser("inception_v4")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--max_epochs", type=float, default=None)
    p.add_argument("--weight_decay", type=float, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--label_smoothing", type=float, default=None)
    p.add_argument("--log_dir", default=None)
    p.add_argument("--log_name", default=None)
    p.add_argument("--mode", choices=["train", "train_and_evaluate", "evaluate"], default=None)
    p.add_argument("--eval_dir", type=_optional_path, default=None)
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--iteration_per_loop", "--iterations_per_loop", type=int, default=None)
    p.add_argument("--use_nesterov", type=_bool, nargs="?", const=True, default=None)
    p.add_argument("--rank_size", type=int, default=None)
    p.add_argument("--T_max", type=float, default=None)
    p.add_argument("--epochs_between_evals", type=int, default=None)
    p.add_argument("--display_every", type=int, default=None)
    a = _parse(p, argv, "inception_v4")
    world, _ = _world(environ)
    if a.rank_size is not None and a.rank_size != world:
        raise UserError(
            f"--rank_size {a.rank_size} but {world} process(es) were launched "
            f"(WORLD_SIZE={world}); launch with torchrun --nproc-per-node {a.rank_size}"
        )
    if a.iteration_per_loop not in (None, 1):
        raise UserError(
            f"--iteration_per_loop {a.iteration_per_loop}: Ascend's loop sinking (steps run on "
            "the device per host call) has no PyTorch equivalent; pass 1 or leave it out "
            "(log frequency: --display_every)"
        )
    # The 8p variant: 64 images per device (64 x 8), as run_8p.sh.
    variant = a.variant or ("8p" if world > 1 else None)
    cmd = Command(_recipe("inception_v4", variant), a.data_dir, a.log_dir, log_name=a.log_name)
    mode = a.mode
    if mode is not None:
        cmd.set("train.mode", mode)
    if a.eval_dir is not None:
        if mode != "evaluate":
            raise UserError(f"--eval_dir is read only with --mode evaluate (mode is {mode})")
        ckpts = Path(a.eval_dir) / "checkpoints"  # a classzoo run folder: its checkpoints/
        cmd.set("model.checkpoint", str(ckpts if ckpts.is_dir() else a.eval_dir))
    elif mode == "evaluate":
        raise UserError("--mode evaluate needs --eval_dir (a checkpoint or a folder of them)")
    for flag, key, value in (
        ("--batch_size", "data.batch_size", a.batch_size),
        ("--max_train_steps", "train.max_steps", a.max_train_steps),
        ("--epochs_between_evals", "train.eval_every", a.epochs_between_evals),
        ("--display_every", "train.log_every", a.display_every),
    ):
        if value is not None:
            cmd.set(key, _positive(value, flag))
    for key, value in (
        ("train.epochs", a.max_epochs),
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
    if a.log_name is not None:
        _check_log_name(a.log_name)
    cmd.sets += a.sets
    return cmd


def _check_log_name(name: str) -> None:
    if "/" in name or name in ("", ".", ".."):
        raise UserError(f"--log_name {name!r} must be a file name (the folder is --log_dir)")
    if name in _RUN_FILES:
        raise UserError(f"--log_name {name} would replace the run folder's own {name}")


# ---- Gluon ResNet50_v1b (PyTorch + timm reference: test/train_{full,performance}_{1,8}p.sh) ----


def _gluon(argv: list[str], environ: Mapping[str, str]) -> Command:
    p = _parser("gluon_resnet50_v1b")
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
    p.add_argument("--output", default=None, help="timm's output folder (the run folder)")
    a = _parse(p, argv, "gluon_resnet50_v1b")
    if a.data is not None and a.data_path is not None and a.data != a.data_path:
        raise UserError(f"two data folders: positional {a.data} and --data_path {a.data_path}")
    world, local_rank = _world(environ)
    if a.local_rank is not None and a.local_rank != local_rank:
        raise UserError(
            f"--local_rank {a.local_rank} but this process has LOCAL_RANK={local_rank}"
            " (--local_rank is set by the launcher, not by hand)"
        )
    if a.device_id is not None:
        _select_device(a.device_id, world, environ)
    cmd = Command(_recipe("gluon_resnet50_v1b", a.variant), a.data or a.data_path, a.output)
    if a.model is not None and a.model not in ("gluon_resnet50_v1b", "resnet50"):
        # timm's resnet50 *is* gluon_resnet50_v1b (its weights are resnet50.gluon_in1k); other
        # timm models run with this recipe's hyper-parameters, as the reference's --model did.
        cmd.set("model.name", a.model)
    if a.batch_size is not None:
        cmd.set("data.batch_size", _positive(a.batch_size, "-b"))
    # timm train.py: no mixed precision unless --amp / --apex-amp / --native-amp is given.
    cmd.set("train.amp", "auto" if (a.amp or a.apex_amp or a.native_amp) else "off")
    if a.sched is not None:
        if a.sched not in ("cosine", "step"):
            raise UserError(f"--sched {a.sched}: classzoo schedules are cosine and step")
        cmd.set("sched.name", a.sched)
    # timm: the cosine spans --epochs and --cooldown-epochs are added after it at lr_min;
    # classzoo: train.epochs is the total and the cosine spans epochs - cooldown_epochs.
    if a.epochs is not None or a.cooldown is not None:
        from classzoo.config import load_recipe

        base = load_recipe(_recipe("gluon_resnet50_v1b", a.variant))
        cooldown = a.cooldown if a.cooldown is not None else base.sched.cooldown_epochs
        epochs = a.epochs if a.epochs is not None else base.train.epochs - cooldown
        cmd.set("train.epochs", float(_positive(epochs, "--epochs") + cooldown))
        cmd.set("sched.cooldown_epochs", float(cooldown))
    if a.lr is not None:
        cmd.set("optim.lr", a.lr)
        cmd.set("optim.lr_base_batch", None)  # timm's --lr is used as given
    if a.log_interval is not None:
        cmd.set("train.log_every", _positive(a.log_interval, "--log-interval"))
    # --use-multi-epochs-loader keeps loader workers across epochs: classzoo's train loader
    # always does (persistent_workers), so the flag asks for what already happens.
    cmd.sets += a.sets
    return cmd


def _select_device(device_id: int, world: int, environ: Mapping[str, str]) -> None:
    """``--device_id N`` for one process: the N-th accelerator, through the visibility variables."""
    if world > 1:
        raise UserError(
            f"--device_id {device_id} with {world} processes: under torchrun each rank uses the "
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


# ---- shared -------------------------------------------------------------------------------------


def _positive(value, flag: str):
    if value <= 0:
        raise UserError(f"{flag} {value} must be positive")
    return value


def _parse(p: _Parser, argv: list[str], reference: str) -> argparse.Namespace:
    args, unknown = p.parse_known_args(argv)
    for item in unknown:
        flag = item.split("=", 1)[0]
        why = _UNSUPPORTED.get(reference, {}).get(flag)
        if why:
            raise UserError(f"{flag} is not supported: {why}")
        if flag.startswith("-"):
            raise UserError(
                f"{flag} is not a flag of the {reference} reference that classzoo supports "
                f"(see python -m classzoo.reference_flags {reference} --help)"
            )
        raise UserError(f"unexpected argument {item!r} for the {reference} reference")
    return args


_TRANSLATORS: dict[str, Callable[[list[str], Mapping[str, str]], Command]] = {
    "resnet152": _resnet152,
    "inception_v4": _inception_v4,
    "gluon_resnet50_v1b": _gluon,
}


def translate(reference: str, argv: list[str], environ: Mapping[str, str] | None = None) -> Command:
    """The ``classzoo train`` command for one reference's flags; checks it against the recipe."""
    environ = os.environ if environ is None else environ
    if reference not in _TRANSLATORS:
        raise UserError(f"unknown reference '{reference}' (one of: {', '.join(REFERENCES)})")
    cmd = _TRANSLATORS[reference](list(argv), environ)
    _check(cmd)
    return cmd


def _check(cmd: Command) -> None:
    """Values only the resolved recipe can judge: Nesterov with RMSProp, --image_num."""
    from classzoo.config import load_recipe

    overrides = ([f"data.dir={cmd.data_dir}"] if cmd.data_dir is not None else []) + cmd.sets
    cfg = load_recipe(cmd.recipe, overrides)
    if cfg.optim.nesterov and cfg.optim.name in ("rmsproptf", "rmsprop"):
        raise UserError(
            f"--use_nesterov true: {cfg.optim.name} has no Nesterov form (TF's RMSPropOptimizer "
            "has no such option either); pass --use_nesterov False"
        )
    if cmd.image_num is not None:
        split = cfg.data.val_split if cfg.train.mode == "evaluate" else cfg.data.train_split
        found = count_records(cfg.data.source, cfg.data.dir, split, cfg.data.synthetic_size)
        if found != cmd.image_num:
            raise UserError(
                f"--image_num {cmd.image_num} but the '{split}' data at {cfg.data.dir} holds "
                f"{found} records"
            )


def count_records(source: str, location: str | None, split: str, synthetic_size: int = 0) -> int:
    """Exact number of images of one split, from the indexes / folder listing (no decoding)."""
    if source == "synthetic":
        return synthetic_size
    if location is None:
        raise UserError("no data directory to count --image_num against")
    if source == "imagefolder":
        from classzoo.data.imagefolder import scan_imagefolder

        return len(scan_imagefolder(Path(location) / split)[1])
    from classzoo.data.tfrecord_dataset import TFRecordImageDataset, find_shards

    return len(TFRecordImageDataset(find_shards(location, split)))


def _link_log(cmd: Command) -> None:
    """``--log_name``: the reference's log file, as a link to the run folder's train.log."""
    name = cmd.log_name
    if name is None or name == "train.log":
        return
    folder = cmd.run_dir()
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / name
    if link.is_symlink() and os.readlink(link) == "train.log":
        return
    if link.exists() or link.is_symlink():
        raise UserError(f"--log_name {name}: {link} exists and is not a link to train.log")
    link.symlink_to("train.log")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        cmd = translate(argv[0], argv[1:])
        if rank0:
            _link_log(cmd)
    except UserError as exc:
        print(f"classzoo.reference_flags: error: {exc}", file=sys.stderr)
        return UserError.exit_code
    if rank0:
        print(f"classzoo.reference_flags: classzoo {shlex.join(cmd.argv())}", file=sys.stderr)
    from classzoo import cli

    code = cli.main(cmd.argv())
    if code == 0 and rank0 and argv[0] == "gluon_resnet50_v1b":
        print(seed_table(cmd.run_dir() / "summary.json", int(os.environ.get("WORLD_SIZE", "1"))))
    return code


def seed_table(summary_path: Path, world_size: int) -> str:
    """The Gluon reference's result table (``Name | Acc@1 | FPS | Epochs | AMP_Type``) for one run."""
    import json

    s = json.loads(Path(summary_path).read_text())
    top1 = "-" if s.get("top1") is None else f"{s['top1']:.2f}"
    fps = "-" if s.get("images_per_sec") is None else f"{s['images_per_sec']:.2f}"
    return "\n".join(
        [
            "| Name | Acc@1 | FPS | Epochs | AMP_Type |",
            "| ------ | :---: | -------- | :----: | :------: |",
            f"| {world_size}p | {top1} | {fps} | {s.get('epochs', 0):g} | {s.get('amp')} |",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
