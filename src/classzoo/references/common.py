"""What the three reference translators share: the command they build, flag parsing, checks.

A translator turns one reference program's flags into one classzoo command (:class:`Command`):
``classzoo train ...`` or, for an evaluation, ``classzoo eval ...``. It calls classzoo only
through the CLI (``classzoo.cli.main``) and sets recipe keys only with ``--set KEY=VALUE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from classzoo.errors import UserError

PROG = "classzoo.references"


class Parser(argparse.ArgumentParser):
    """argparse that raises UserError (one line naming the flag) instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


@dataclass
class Command:
    """A ``classzoo train`` (or ``classzoo eval``) invocation built from reference flags."""

    recipe: str
    data_dir: str | None = None
    output_dir: str | None = None
    sets: list[str] = field(default_factory=list)  # "key=value", in order (later wins)
    verb: str = "train"  # "train", or "eval" (one checkpoint, nothing written)
    checkpoint: str | None = None  # eval: the checkpoint evaluated
    log_name: str | None = None  # a link to train.log under this name (InceptionV4 --log_name)
    image_num: int | None = None  # ResNet-152 --image_num: checked against the record count
    notes: list[str] = field(default_factory=list)  # printed before the run (flags without effect)

    def set(self, key: str, value) -> None:
        self.sets.append(f"{key}={yaml_text(value)}")

    def argv(self) -> list[str]:
        if self.verb == "eval":
            out = ["eval", "--checkpoint", str(self.checkpoint), "--recipe", self.recipe]
            out += ["--data-dir", str(self.data_dir)]
        else:
            out = ["train", "--recipe", self.recipe]
            if self.data_dir is not None:
                out += ["--data-dir", self.data_dir]
            if self.output_dir is not None:
                out += ["--output-dir", self.output_dir]
        for item in self.sets:
            out += ["--set", item]
        return out

    def overrides(self) -> list[str]:
        """The recipe overrides this command amounts to (for checking it before it runs)."""
        values = [f"data.dir={yaml_text(self.data_dir)}"] if self.data_dir is not None else []
        if self.verb == "eval":
            values.append(f"model.checkpoint={yaml_text(self.checkpoint)}")
        return values + self.sets


def yaml_text(value) -> str:
    """``value`` as ``--set`` reads it back (YAML): strings quoted only when YAML would not
    return them unchanged (``null``, ``1e-4``-like numbers, ``#`` comments, ...)."""
    from classzoo.config import parse_yaml

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    text = str(value)
    try:
        same = parse_yaml(text) == text
    except Exception:  # yaml.YAMLError: not a plain scalar
        same = False
    return text if same else json.dumps(text)


def parse_bool(text: str) -> bool:
    """TF flags / ``ast.literal_eval`` booleans: True/False, also true/false/1/0."""
    low = str(text).strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def optional_path(text: str) -> str | None:
    """TF string flags default to None; the reference scripts pass 'None' for 'no checkpoint'."""
    return None if text in ("", "None", "none", "null") else text


def new_parser(reference: str) -> Parser:
    """A parser with the two classzoo flags every translator accepts."""
    p = Parser(prog=f"{PROG} {reference}", allow_abbrev=False, add_help=True)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--variant", default=None, help="recipe variant (classzoo), e.g. performance")
    return p


def parse(
    p: Parser, argv: list[str], reference: str, unsupported: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """Parse ``argv``; an unknown flag is an error naming it (with why, when classzoo knows)."""
    args, unknown = p.parse_known_args(argv)
    for item in unknown:
        flag = item.split("=", 1)[0]
        why = (unsupported or {}).get(flag)
        if why:
            raise UserError(f"{flag} is not supported: {why}")
        if flag.startswith("-"):
            raise UserError(
                f"{flag} is not a flag of the {reference} reference that classzoo supports "
                f"(see python -m {PROG} {reference} --help)"
            )
        raise UserError(f"unexpected argument {item!r} for the {reference} reference")
    return args


def world(environ: Mapping[str, str]) -> tuple[int, int]:
    """(WORLD_SIZE, LOCAL_RANK) as torchrun set them; (1, 0) for a single process."""
    return int(environ.get("WORLD_SIZE", "1")), int(environ.get("LOCAL_RANK", "0"))


def recipe_name(name: str, variant: str | None) -> str:
    return f"{name}:{variant}" if variant else name


def positive(value, flag: str):
    if value <= 0:
        raise UserError(f"{flag} {value} must be positive")
    return value


def check(cmd: Command) -> None:
    """Values only the resolved recipe can judge: Nesterov with RMSProp, --image_num; also every
    ``--set`` key, so a typo stops the launch before anything runs."""
    from classzoo.config import load_recipe

    cfg = load_recipe(cmd.recipe, cmd.overrides())
    if cfg.optim.nesterov and cfg.optim.name in ("rmsproptf", "rmsprop"):
        raise UserError(
            f"--use_nesterov true: {cfg.optim.name} has no Nesterov form (TF's RMSPropOptimizer "
            "has no such option either); pass --use_nesterov False"
        )
    if cmd.verb == "train":  # count_records below loads torch: libgomp reads its policy then
        from classzoo.engine.threads import choose_wait_policy, loader_threads

        choose_wait_policy(loader_threads(cfg.data.loader, cfg.data.num_workers))
    if cmd.image_num is not None:
        evaluating = cmd.verb == "eval" or cfg.train.mode == "evaluate"
        split = cfg.data.val_split if evaluating else cfg.data.train_split
        found = count_records(cfg.data, split)
        if found != cmd.image_num:
            raise UserError(
                f"--image_num {cmd.image_num} but the '{split}' data at {cfg.data.dir} holds "
                f"{found} records"
            )


def count_records(data, split: str) -> int:
    """Exact number of images of one split (``data``: the recipe's data section), as the run
    will read them: the data layer's own dataset, so the same files, shard patterns and feature
    keys; TFRecords are counted from their record index, no image is decoded."""
    from classzoo.data.datasets import build_dataset

    if data.source != "synthetic" and data.dir is None:
        raise UserError("no data directory to count --image_num against")
    return len(build_dataset(data, split, transform=None, num_classes=0, label_offset=0))


def link_log(cmd: Command) -> Path | None:
    """``--log_name``: the reference's log file, as a link to the run folder's train.log (its
    eval.log in evaluate mode, where train.log stays empty); the link made, else None."""
    name = cmd.log_name
    target = "eval.log" if "train.mode=evaluate" in cmd.sets else "train.log"
    if name is None or name == target or cmd.output_dir is None:
        return None
    folder = Path(cmd.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / name
    if link.is_symlink() and os.readlink(link) == target:
        return None
    if link.exists() or link.is_symlink():
        raise UserError(f"--log_name {name}: {link} exists and is not a link to {target}")
    link.symlink_to(target)
    return link


def unlink_log(link: Path) -> None:
    """A refused run leaves no link behind, nor the folder made for it (when nothing else is
    in it)."""
    link.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        link.parent.rmdir()
