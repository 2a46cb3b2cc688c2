"""Helpers every verb module shares: the help formatter, the ``--set`` flag and JSON output."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every optional flag's help.

    Help text that already names its default (``default: the recipe's``) is left as written, and
    required flags have none to show.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or getattr(action, "required", False):
            return text
        if action.default is None and action.option_strings:
            return f"{text} (default: not set)"
        return super()._get_help_string(action)


def only_on_rank_zero(verb: str) -> bool:
    """Whether this process skips ``verb`` (predict, export): under torchrun every rank would
    print the same results or build the same file, so rank 0 alone runs it and says so."""
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    except ValueError:  # not torchrun's: one process, as engine/launch.world_size takes it
        return False
    if world > 1 and rank == 0:
        print(
            f"classzoo {verb}: runs on rank 0 only ({world} processes under torchrun)",
            file=sys.stderr,
        )
    return world > 1 and rank != 0


def add_verb(subparsers, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose help lists every flag with its default."""
    return subparsers.add_parser(
        name, help=help, description=help, formatter_class=HelpFormatter, **kwargs
    )


def add_set_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. optim.lr=0.1 (repeatable)",
    )


def _finite(value: Any) -> Any:
    """NaN and +-inf are not JSON (RFC 8259 section 6): they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(value: Any, **kwargs) -> str:
    """Strict JSON text: non-finite floats as null, other odd objects (paths) as strings."""
    return json.dumps(_finite(value), allow_nan=False, default=str, **kwargs)


def print_json(value: Any) -> None:
    """The one way every ``--json`` / ``--format json`` prints."""
    sys.stdout.write(to_json(value) + "\n")
