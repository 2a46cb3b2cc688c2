"""The three reference programs' own flags, translated into one classzoo command.

    python -m classzoo.references {resnet152,inception_v4,gluon_resnet50_v1b} [flags...]

Each seed was launched with its own flags (docs/references.md). This package accepts exactly
those flags, with the reference program's defaults for the ones left out, maps each to the recipe
key it sets, prints the equivalent ``classzoo train`` (or ``classzoo eval``) command and runs it
in-process. Two classzoo flags are accepted too: ``--set KEY=VALUE`` (any recipe key, applied
last) and ``--variant NAME`` (a recipe variant, e.g. ``performance``). A flag classzoo does not
know, or a value it cannot honour, is a UserError that names the flag and says why (exit code 2),
never silently dropped. Flags that only describe the launch (``--rank_size``, ``--local_rank``)
are checked against torchrun's environment. Under torchrun every rank parses the same flags and
so runs the same command.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from classzoo.errors import UserError
from classzoo.references import gluon_resnet50_v1b, inception_v4, resnet152
from classzoo.references.common import PROG, Command, check, link_log, unlink_log

__all__ = ["REFERENCES", "Command", "main", "translate"]

_TRANSLATORS: dict[str, Callable[[list[str], Mapping[str, str]], Command]] = {
    "resnet152": resnet152.translate,
    "inception_v4": inception_v4.translate,
    "gluon_resnet50_v1b": gluon_resnet50_v1b.translate,
}
REFERENCES = tuple(_TRANSLATORS)


def translate(reference: str, argv: list[str], environ: Mapping[str, str] | None = None) -> Command:
    """The classzoo command for one reference's flags, checked against the recipe it runs."""
    environ = os.environ if environ is None else environ
    if reference not in _TRANSLATORS:
        raise UserError(f"unknown reference '{reference}' (one of: {', '.join(REFERENCES)})")
    cmd = _TRANSLATORS[reference](list(argv), environ)
    check(cmd)
    return cmd


def main(argv: list[str] | None = None) -> int:
    """``python -m classzoo.references REFERENCE [flags...]``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    rank0 = int(os.environ.get("RANK", "0")) == 0
    try:
        cmd = translate(argv[0], argv[1:])
        link = link_log(cmd) if rank0 else None
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return UserError.exit_code
    if rank0:
        for note in cmd.notes:
            print(f"{PROG}: note: {note}", file=sys.stderr)
        print(f"{PROG}: classzoo {shlex.join(cmd.argv())}", file=sys.stderr)
    from classzoo import cli

    code = cli.main(cmd.argv())
    if code != 0 and link is not None:
        unlink_log(link)
    if code == 0 and rank0 and argv[0] == "gluon_resnet50_v1b":
        summary = json.loads((Path(cmd.output_dir) / "summary.json").read_text())
        world = int(os.environ.get("WORLD_SIZE", "1"))
        print(gluon_resnet50_v1b.seed_table(summary, world))
    return code
